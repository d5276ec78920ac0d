//! The etcd side: starting a single-member etcd or a three-member cluster
//! (fsync left on, as by default) and making `KV/Put`s over gRPC, one
//! connection per client.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};

use crate::load::Writer;
use crate::servers::{READY_TIMEOUT, Server, free_ports};

/// The generated gRPC client for the subset of etcd's API in `proto/etcd.proto`.
#[allow(missing_docs, clippy::all)]
pub mod pb {
    tonic::include_proto!("etcdserverpb");
}

use pb::kv_client::KvClient;
use pb::maintenance_client::MaintenanceClient;
use pb::{PutRequest, StatusRequest, StatusResponse};

/// A running etcd and its client address.
pub struct Etcd {
    /// The process (killed on drop).
    pub server: Server,
    /// Client (gRPC) address.
    pub client_addr: String,
}

/// One member's name and URLs.
struct MemberSpec {
    name: String,
    client_url: String,
    peer_url: String,
}

impl MemberSpec {
    /// A member on `ports`: client and peer.
    fn on_ports(name: &str, ports: &[u16]) -> MemberSpec {
        MemberSpec {
            name: name.into(),
            client_url: format!("http://127.0.0.1:{}", ports[0]),
            peer_url: format!("http://127.0.0.1:{}", ports[1]),
        }
    }

    /// `NAME=PEER_URL`, for `--initial-cluster`.
    fn peer(&self) -> String {
        format!("{}={}", self.name, self.peer_url)
    }

    /// etcd's arguments for data directory `dir` in a cluster of `initial_cluster`.
    fn args(&self, dir: &Path, initial_cluster: &str) -> Vec<String> {
        [
            "--name",
            &self.name,
            "--data-dir",
            &dir.display().to_string(),
            "--listen-client-urls",
            &self.client_url,
            "--advertise-client-urls",
            &self.client_url,
            "--listen-peer-urls",
            &self.peer_url,
            "--initial-advertise-peer-urls",
            &self.peer_url,
            "--initial-cluster",
            initial_cluster,
            "--initial-cluster-state",
            "new",
            "--initial-cluster-token",
            "bench",
            "--logger=zap",
            "--log-level=error",
        ]
        .map(String::from)
        .to_vec()
    }

    /// Spawns the member; does not wait for it.
    fn spawn(
        &self,
        server_name: String,
        bin: &Path,
        initial_cluster: &str,
        log_dir: Option<&Path>,
    ) -> Result<Etcd> {
        let server = Server::spawn(
            server_name,
            bin,
            |dir| self.args(dir, initial_cluster),
            None,
            log_dir,
        )?;
        let client_addr = self.client_url.trim_start_matches("http://").to_string();
        Ok(Etcd { server, client_addr })
    }
}

/// Starts `bin` as a one-member cluster on free ports with a fresh data
/// directory and waits until it accepts a put. `log_dir`: see [`Server::spawn`].
pub async fn start(bin: &Path, log_dir: Option<&Path>) -> Result<Etcd> {
    let spec = MemberSpec::on_ports("bench", &free_ports(2)?);
    let mut node = spec.spawn("etcd".into(), bin, &spec.peer(), log_dir)?;
    node.wait_ready().await?;
    Ok(node)
}

impl Etcd {
    /// Waits until the member accepts a put (so the cluster has a leader).
    pub async fn wait_ready(&mut self) -> Result<()> {
        let addr = self.client_addr.clone();
        self.server
            .wait_ready(|_| {
                let addr = addr.clone();
                async move {
                    tokio::time::timeout(Duration::from_secs(2), probe(&addr))
                        .await
                        .is_ok_and(|r| r.is_ok())
                }
            })
            .await
    }

    /// `Maintenance/Status` of this member, on a fresh connection.
    pub async fn status(&self) -> Result<StatusResponse> {
        let ask = async {
            let mut m = MaintenanceClient::new(channel(&self.client_addr).await?);
            let s = m.status(StatusRequest {}).await.context("etcd status")?;
            anyhow::Ok(s.into_inner())
        };
        tokio::time::timeout(Duration::from_secs(2), ask)
            .await
            .with_context(|| format!("etcd status at {}: timed out", self.client_addr))?
    }
}

/// Three etcd members on loopback forming one cluster.
pub struct EtcdCluster {
    /// The members e1, e2, e3.
    pub members: Vec<Etcd>,
    /// Each member's ID, as `StatusResponse.leader` names the leader.
    ids: Vec<u64>,
}

/// Starts a three-member cluster on free ports and waits until every member
/// accepts a put.
pub async fn start_cluster(bin: &Path, log_dir: Option<&Path>) -> Result<EtcdCluster> {
    // All at once, so no two members get the same port.
    let ports = free_ports(6)?;
    let specs: Vec<MemberSpec> = ports
        .chunks(2)
        .enumerate()
        .map(|(i, p)| MemberSpec::on_ports(&format!("e{}", i + 1), p))
        .collect();
    let initial = specs.iter().map(MemberSpec::peer).collect::<Vec<_>>().join(",");
    let mut members = specs
        .iter()
        .map(|s| s.spawn(format!("etcd-{}", s.name), bin, &initial, log_dir))
        .collect::<Result<Vec<_>>>()?;
    let mut ids = Vec::new();
    for m in &mut members {
        m.wait_ready().await?;
        let st = m.status().await?;
        ids.push(st.header.map_or(0, |h| h.member_id));
    }
    Ok(EtcdCluster { members, ids })
}

impl EtcdCluster {
    /// Every member's client address.
    pub fn client_addrs(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_addr.clone()).collect()
    }

    /// The index in `members` of the current leader, as the first member
    /// that answers `Status` sees it.
    pub async fn leader(&self) -> Result<usize> {
        for m in &self.members {
            let Ok(st) = m.status().await else {
                continue;
            };
            if let Some(i) = self.ids.iter().position(|&id| id != 0 && id == st.leader) {
                return Ok(i);
            }
        }
        bail!("no etcd member names a leader")
    }

    /// Waits until all members run, name the same leader and report the
    /// same Raft index (so a restarted one has caught up).
    pub async fn wait_healthy(&mut self) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            for m in &mut self.members {
                m.server.check_alive()?;
            }
            if self.in_agreement().await {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("the etcd cluster did not agree on a leader and index within {READY_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Whether every member names the same leader, Raft index and applied index.
    async fn in_agreement(&self) -> bool {
        let mut seen = Vec::new();
        for m in &self.members {
            match m.status().await {
                Ok(st) if st.leader != 0 => seen.push((st.leader, st.raft_index, st.raft_applied_index)),
                _ => return false,
            }
        }
        seen.windows(2).all(|w| w[0] == w[1])
    }
}

/// One put, on a fresh connection.
async fn probe(addr: &str) -> Result<()> {
    let mut kv = KvClient::new(channel(addr).await?);
    kv.put(PutRequest {
        key: b"bench/ready".to_vec(),
        value: b"1".to_vec(),
        ..Default::default()
    })
    .await?;
    Ok(())
}

/// A dedicated HTTP/2 connection to `addr`, set up like `tribune-client`'s.
async fn channel(addr: &str) -> Result<Channel> {
    let ep = Endpoint::from_shared(format!("http://{addr}"))
        .with_context(|| format!("invalid etcd address {addr}"))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true);
    ep.connect()
        .await
        .with_context(|| format!("connecting to etcd at {addr}"))
}

/// One benchmark client: its own connection, putting `bench/{round}/{client}/{seq}`.
pub struct Putter {
    kv: KvClient<Channel>,
    key_prefix: String,
    value: Arc<Vec<u8>>,
}

impl Putter {
    /// Connects client number `client` of a round with `round` clients.
    /// `value` is the payload of every put.
    pub async fn connect(addr: &str, round: usize, client: usize, value: Arc<Vec<u8>>) -> Result<Self> {
        Self::with_prefix(addr, format!("bench/{round}/{client}/"), value)
            .await
            .with_context(|| format!("client {client}"))
    }

    /// Connects to `addr`, putting `{key_prefix}{seq}`.
    pub async fn with_prefix(addr: &str, key_prefix: String, value: Arc<Vec<u8>>) -> Result<Self> {
        let kv = KvClient::new(channel(addr).await?);
        Ok(Putter {
            kv,
            key_prefix,
            value,
        })
    }
}

impl Writer for Putter {
    async fn write(&mut self, seq: u64) -> Result<()> {
        let req = PutRequest {
            key: format!("{}{seq}", self.key_prefix).into_bytes(),
            value: self.value.as_ref().clone(),
            ..Default::default()
        };
        self.kv.put(req).await.context("etcd put")?;
        Ok(())
    }
}

/// A client of a whole cluster: one connection to each member, putting on
/// one member until a put fails, then moving on to the next member and
/// trying again (the same key), for up to [`FAILOVER_RETRY_FOR`] per write.
pub struct FailoverPutter {
    members: Vec<Putter>,
    current: usize,
    /// Limit on each attempt: a put forwarded to a dead leader never fails
    /// by itself (it waits for etcd's own 7 s request timeout).
    attempt_timeout: Duration,
}

/// How long one write keeps trying the members (as `tribune-client`'s `RETRY_FOR`).
pub const FAILOVER_RETRY_FOR: Duration = Duration::from_secs(20);

impl FailoverPutter {
    /// Connects to every address, starting with `addrs[first]`.
    pub async fn connect(
        addrs: &[String],
        first: usize,
        key_prefix: String,
        value: Arc<Vec<u8>>,
        attempt_timeout: Duration,
    ) -> Result<Self> {
        let mut members = Vec::new();
        for a in addrs {
            members.push(Putter::with_prefix(a, key_prefix.clone(), value.clone()).await?);
        }
        Ok(FailoverPutter {
            members,
            current: first % addrs.len().max(1),
            attempt_timeout,
        })
    }
}

impl Writer for FailoverPutter {
    async fn write(&mut self, seq: u64) -> Result<()> {
        let started = Instant::now();
        loop {
            let attempt = self.members[self.current].write(seq);
            let err = match tokio::time::timeout(self.attempt_timeout, attempt).await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(e)) => e,
                Err(_) => anyhow::anyhow!("etcd put timed out after {:?}", self.attempt_timeout),
            };
            if started.elapsed() >= FAILOVER_RETRY_FOR {
                return Err(err.context(format!("gave up after {FAILOVER_RETRY_FOR:?}")));
            }
            self.current = (self.current + 1) % self.members.len();
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// The etcd binary: `explicit`, else `etcd` on PATH, `.tools/bin/etcd`, `/usr/bin/etcd`.
pub fn binary(explicit: Option<&std::path::Path>) -> anyhow::Result<std::path::PathBuf> {
    let tools_etcd = concat!(env!("CARGO_MANIFEST_DIR"), "/../.tools/bin/etcd");
    crate::servers::find_binary(
        explicit,
        &["etcd", tools_etcd, "/usr/bin/etcd"],
        "install it with `bash scripts/setup.sh` or pass --etcd-bin",
    )
}
