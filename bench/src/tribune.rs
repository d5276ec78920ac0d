//! The Tribune side: starting a single-server agent or a three-server
//! cluster and registering unique service instances through
//! `tribune-client`, one connection per client.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tribune_client::{Client, api};

use crate::load::Writer;
use crate::servers::{READY_TIMEOUT, Server, free_ports, free_udp_ports};

/// The line a Tribune agent prints once it has a leader.
const READY_MARKER: &str = "==> Ready";

/// A running Tribune server and where to reach it.
pub struct Tribune {
    /// The process (killed on drop).
    pub server: Server,
    /// gRPC API address.
    pub grpc_addr: String,
    /// HTTP address (health and `/metrics`).
    pub http_addr: String,
    /// Server RPC (Raft) address, as `/v1/status/leader` names the leader.
    pub server_addr: String,
}

/// How to start one agent: its name and addresses.
struct AgentSpec {
    node: String,
    grpc_addr: String,
    http_addr: String,
    server_addr: String,
    /// `--bootstrap-expect`.
    expect: usize,
    /// Gossip: this agent's LAN address and the one to join, in a cluster.
    gossip: Option<(String, String)>,
    /// Another datacenter than dc1, with its WAN address and the WAN
    /// address of a server to join.
    federated: Option<Federated>,
    /// Further agent flags.
    extra: Vec<String>,
}

/// A server's place in a federation.
pub struct Federated {
    pub datacenter: String,
    pub wan_addr: String,
    pub join_wan: Option<String>,
    /// The datacenter that owns trust and authorization.
    pub primary: String,
}

impl AgentSpec {
    /// An agent on three free TCP ports.
    fn on_free_ports(node: &str, expect: usize) -> Result<AgentSpec> {
        Ok(Self::on_ports(node, expect, &free_ports(3)?))
    }

    /// An agent on `ports`: gRPC, HTTP and server RPC.
    fn on_ports(node: &str, expect: usize, ports: &[u16]) -> AgentSpec {
        AgentSpec {
            node: node.into(),
            grpc_addr: format!("127.0.0.1:{}", ports[0]),
            http_addr: format!("127.0.0.1:{}", ports[1]),
            server_addr: format!("127.0.0.1:{}", ports[2]),
            expect,
            gossip: None,
            federated: None,
            extra: Vec::new(),
        }
    }

    /// `tribune agent --server ...` arguments for data directory `dir`.
    fn args(&self, dir: &Path, log_level: Option<&str>) -> Vec<String> {
        let mut a: Vec<String> = [
            "agent",
            "--server",
            "--node",
            &self.node,
            "--data-dir",
            &dir.display().to_string(),
            "--bootstrap-expect",
            &self.expect.to_string(),
            "--grpc-addr",
            &self.grpc_addr,
            "--http-addr",
            &self.http_addr,
            "--server-addr",
            &self.server_addr,
        ]
        .map(String::from)
        .to_vec();
        if let Some((lan, join)) = &self.gossip {
            a.extend([
                "--serf-lan-addr".into(),
                lan.clone(),
                "--retry-join".into(),
                join.clone(),
            ]);
        } else {
            // Any free UDP port: a lone server must not collide on 8301.
            a.extend(["--serf-lan-addr".into(), "127.0.0.1:0".into()]);
        }
        match &self.federated {
            Some(f) => {
                a.extend([
                    "--datacenter".into(),
                    f.datacenter.clone(),
                    "--serf-wan-addr".into(),
                    f.wan_addr.clone(),
                    "--primary-datacenter".into(),
                    f.primary.clone(),
                ]);
                if let Some(j) = &f.join_wan {
                    a.extend(["--retry-join-wan".into(), j.clone()]);
                }
            }
            // Any free port: servers side by side must not collide on 8302.
            None => a.extend(["--serf-wan-addr".into(), "127.0.0.1:0".into()]),
        }
        if let Some(l) = log_level {
            a.extend(["--log-level".into(), l.into()]);
        }
        if !self.extra.iter().any(|e| e == "--grpc-tls-addr") {
            // Any free port: servers on one host must not collide on 8503.
            a.extend(["--grpc-tls-addr".into(), "127.0.0.1:0".into()]);
        }
        a.extend(self.extra.iter().cloned());
        a
    }

    /// Spawns the agent; does not wait for it.
    fn spawn(
        self,
        name: String,
        bin: &Path,
        log_level: Option<&str>,
        log_dir: Option<&Path>,
    ) -> Result<Tribune> {
        let server = Server::spawn(
            name,
            bin,
            |dir| self.args(dir, log_level),
            Some(READY_MARKER),
            log_dir,
        )?;
        Ok(Tribune {
            server,
            grpc_addr: self.grpc_addr,
            http_addr: self.http_addr,
            server_addr: self.server_addr,
        })
    }
}

/// Starts `bin agent --server` on free ports with a fresh data directory and
/// waits until it has elected itself leader. `log_dir`: see [`Server::spawn`].
pub async fn start(bin: &Path, log_level: Option<&str>, log_dir: Option<&Path>) -> Result<Tribune> {
    let spec = AgentSpec::on_free_ports("bench", 1)?;
    let mut node = spec.spawn("tribune".into(), bin, log_level, log_dir)?;
    node.wait_ready().await?;
    Ok(node)
}

/// [`start`] with further agent flags.
pub async fn start_with(bin: &Path, extra: &[&str]) -> Result<Tribune> {
    let mut spec = AgentSpec::on_free_ports("bench", 1)?;
    spec.extra = extra.iter().map(|s| s.to_string()).collect();
    let mut node = spec.spawn("tribune".into(), bin, None, None)?;
    node.wait_ready().await?;
    Ok(node)
}

/// Starts a single-server datacenter whose gRPC, HTTP and server ports are
/// on `ip` (free ports of 127.0.0.1, which are free there too on loopback),
/// and waits until it has elected itself leader.
pub async fn start_federated(bin: &Path, ip: &str, federated: Federated) -> Result<Tribune> {
    let ports = free_ports(3)?;
    let mut spec = AgentSpec::on_ports(&federated.datacenter, 1, &ports);
    spec.grpc_addr = format!("{ip}:{}", ports[0]);
    spec.http_addr = format!("{ip}:{}", ports[1]);
    spec.server_addr = format!("{ip}:{}", ports[2]);
    spec.federated = Some(federated);
    let mut node = spec.spawn(format!("tribune-{ip}"), bin, None, None)?;
    node.wait_ready().await?;
    Ok(node)
}

impl Tribune {
    /// Waits until the agent prints its ready line or `/healthz` answers 200
    /// (it knows a leader).
    pub async fn wait_ready(&mut self) -> Result<()> {
        let http = self.http_addr.clone();
        self.server
            .wait_ready(|s| {
                let seen = s.marker_seen();
                let http = http.clone();
                async move {
                    seen || http_get(&http, "/healthz")
                        .await
                        .is_ok_and(|(code, _)| code == 200)
                }
            })
            .await
    }

    /// `/healthz`: the leader's node name (if known) and the applied index.
    pub async fn health(&self) -> Result<(Option<String>, u64)> {
        let (code, body) = http_get(&self.http_addr, "/healthz").await?;
        let v: serde_json::Value = serde_json::from_str(&body)
            .with_context(|| format!("GET /healthz answered {code} with {body:?}"))?;
        let leader = v["leader"].as_str().map(String::from);
        let applied = v["applied_index"]
            .as_u64()
            .with_context(|| format!("GET /healthz answered {code} without applied_index: {body}"))?;
        Ok((leader, applied))
    }

    /// The leader's server RPC address by `/v1/status/leader` ("" if none).
    pub async fn leader_addr(&self) -> Result<String> {
        let (code, body) = http_get(&self.http_addr, "/v1/status/leader").await?;
        serde_json::from_str(&body)
            .with_context(|| format!("GET /v1/status/leader answered {code} with {body:?}"))
    }

    /// The Raft index the server has applied (from `/healthz`).
    pub async fn applied_index(&self) -> Result<u64> {
        Ok(self.health().await?.1)
    }

    /// The server's per-stage write histograms from `/metrics`.
    pub async fn stages(&self) -> Result<Stages> {
        let (code, body) = http_get(&self.http_addr, "/metrics").await?;
        if code != 200 {
            bail!("GET /metrics answered {code}");
        }
        Ok(Stages::parse(&body))
    }
}

/// The value of metric line `series` (name and labels as `/metrics` prints
/// them) on the agent whose HTTP port is `http`; 0 when absent.
pub async fn metric(http: &str, series: &str) -> Result<f64> {
    let (_, body) = http_get(http, "/metrics").await?;
    Ok(body
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0))
}

/// Sum and count of each `tribune_raft_<stage>_seconds` histogram.
#[derive(Debug, Default, Clone)]
pub struct Stages(HashMap<&'static str, (f64, f64)>);

impl Stages {
    pub const NAMES: [&'static str; 5] = [
        "commit",
        "log_append",
        "append_entries_rpc",
        "append_entries_handle",
        "apply",
    ];

    fn parse(text: &str) -> Stages {
        let mut out = HashMap::new();
        for stage in Self::NAMES {
            let prefix = format!("tribune_raft_{stage}_seconds");
            let value = |suffix: &str| {
                text.lines()
                    .find_map(|l| l.strip_prefix(&format!("{prefix}_{suffix} ")))
                    .and_then(|v| v.trim().parse::<f64>().ok())
            };
            if let (Some(sum), Some(count)) = (value("sum"), value("count")) {
                out.insert(stage, (sum, count));
            }
        }
        Stages(out)
    }

    /// "stage mean (n)" for each stage observed between `before` and `self`.
    pub fn since(&self, before: &Stages) -> String {
        Self::NAMES
            .iter()
            .filter_map(|s| {
                let (sum, count) = self.0.get(s)?;
                let (sum0, count0) = before.0.get(s).copied().unwrap_or_default();
                let n = count - count0;
                (n > 0.0).then(|| format!("{s} {:.2} ms (n={n})", (sum - sum0) / n * 1e3))
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Three Tribune servers on loopback that gossip and form one Raft cluster.
pub struct TribuneCluster {
    /// The servers s1, s2, s3.
    pub members: Vec<Tribune>,
}

/// Starts three `agent --server --bootstrap-expect 3` on free ports, all
/// joining s1's gossip address, and waits until each knows the leader.
pub async fn start_cluster(
    bin: &Path,
    log_level: Option<&str>,
    log_dir: Option<&Path>,
) -> Result<TribuneCluster> {
    let gossip = free_udp_ports(3)?;
    // All at once, so no two members get the same port.
    let tcp = free_ports(9)?;
    let join = format!("127.0.0.1:{}", gossip[0]);
    let mut members = Vec::new();
    for (i, (port, ports)) in gossip.iter().zip(tcp.chunks(3)).enumerate() {
        let node = format!("s{}", i + 1);
        let mut spec = AgentSpec::on_ports(&node, 3, ports);
        spec.gossip = Some((format!("127.0.0.1:{port}"), join.clone()));
        members.push(spec.spawn(format!("tribune-{node}"), bin, log_level, log_dir)?);
    }
    for m in &mut members {
        m.wait_ready().await?;
    }
    Ok(TribuneCluster { members })
}

impl TribuneCluster {
    /// Every member's gRPC address.
    pub fn grpc_addrs(&self) -> Vec<String> {
        self.members.iter().map(|m| m.grpc_addr.clone()).collect()
    }

    /// The index in `members` of the current leader, as the first member
    /// that answers `/v1/status/leader` sees it.
    pub async fn leader(&self) -> Result<usize> {
        for m in &self.members {
            let Ok(addr) = m.leader_addr().await else {
                continue;
            };
            if let Some(i) = self.members.iter().position(|x| x.server_addr == addr) {
                return Ok(i);
            }
        }
        bail!("no Tribune server names a leader")
    }

    /// Waits until all members run, name the same leader and have applied
    /// the same index (so a restarted one has caught up).
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
                bail!("the Tribune cluster did not agree on a leader and index within {READY_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Whether every member names the same leader and applied index.
    async fn in_agreement(&self) -> bool {
        let mut seen = Vec::new();
        for m in &self.members {
            match m.health().await {
                Ok((Some(leader), applied)) => seen.push((leader, applied)),
                _ => return false,
            }
        }
        seen.windows(2).all(|w| w[0] == w[1])
    }
}

/// `GET http://ADDR/PATH` as a bare HTTP/1.0 request (to need no HTTP
/// client): the status code and the body.
pub async fn http_get(addr: &str, path: &str) -> Result<(u16, String)> {
    let get = async {
        let mut s = TcpStream::connect(addr).await?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await?;
        let mut resp = String::new();
        s.read_to_string(&mut resp).await?;
        std::io::Result::Ok(resp)
    };
    let resp = tokio::time::timeout(Duration::from_secs(2), get)
        .await
        .with_context(|| format!("GET http://{addr}{path}: timed out"))?
        .with_context(|| format!("GET http://{addr}{path}"))?;
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("GET http://{addr}{path}: not an HTTP response: {head:?}"))?;
    Ok((code, body.to_string()))
}

/// One benchmark client: its own connection, registering `b{round}-{client}-{seq}`.
pub struct Registrar {
    client: Client,
    id_prefix: String,
    meta_value: Arc<String>,
}

impl Registrar {
    /// Connects client number `client` of a round with `round` clients.
    /// `meta_value` is the payload stored with each instance.
    pub async fn connect(addr: &str, round: usize, client: usize, meta_value: Arc<String>) -> Result<Self> {
        Self::with_prefix(addr, format!("b{round}-{client}-"), meta_value)
            .await
            .with_context(|| format!("client {client}"))
    }

    /// Connects to `addr` (several comma-separated for failover), registering
    /// `{id_prefix}{seq}`.
    pub async fn with_prefix(addr: &str, id_prefix: String, meta_value: Arc<String>) -> Result<Self> {
        Self::with_token(addr, id_prefix, meta_value, None).await
    }

    /// The same, sending `token` with every write.
    pub async fn with_token(
        addr: &str,
        id_prefix: String,
        meta_value: Arc<String>,
        token: Option<&str>,
    ) -> Result<Self> {
        Self::with_tls(addr, id_prefix, meta_value, token, None).await
    }

    /// The same, over TLS through `tls` when given.
    pub async fn with_tls(
        addr: &str,
        id_prefix: String,
        meta_value: Arc<String>,
        token: Option<&str>,
        tls: Option<&tribune_client::tls::TlsConnector>,
    ) -> Result<Self> {
        let mut c = Client::connect_any_with(&[addr.to_string()], tls)
            .await
            .with_context(|| format!("connecting to Tribune at {addr}"))?;
        if let Some(t) = token {
            c = c.with_token(t)?;
        }
        Ok(Registrar {
            client: c,
            id_prefix,
            meta_value,
        })
    }
}

impl Writer for Registrar {
    async fn write(&mut self, seq: u64) -> Result<()> {
        let spec = api::ServiceSpec {
            id: format!("{}{seq}", self.id_prefix),
            name: "bench".into(),
            address: "127.0.0.1".into(),
            port: 8080,
            meta: HashMap::from([("payload".to_string(), self.meta_value.as_str().to_string())]),
            ..Default::default()
        };
        let req = api::RegisterRequest {
            service: Some(spec),
            ..Default::default()
        };
        self.client.register(req).await.context("tribune register")?;
        Ok(())
    }
}
