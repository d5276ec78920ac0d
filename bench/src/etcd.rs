//! The etcd side: starting a single-member etcd (fsync left on, as by
//! default) and making `KV/Put`s over gRPC, one connection per client.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tonic::transport::{Channel, Endpoint};

use crate::load::Writer;
use crate::servers::{Server, free_ports};

/// The generated gRPC client for the subset of etcd's API in `proto/etcd.proto`.
#[allow(missing_docs, clippy::all)]
pub mod pb {
    tonic::include_proto!("etcdserverpb");
}

use pb::PutRequest;
use pb::kv_client::KvClient;

/// A running etcd and its client address.
pub struct Etcd {
    /// The process (killed on drop).
    pub server: Server,
    /// Client (gRPC) address.
    pub client_addr: String,
}

/// Starts `bin` as a one-member cluster on free ports with a fresh data
/// directory and waits until it accepts a put. `log_dir`: see [`Server::spawn`].
pub async fn start(bin: &Path, log_dir: Option<&Path>) -> Result<Etcd> {
    let ports = free_ports(2)?;
    let client_url = format!("http://127.0.0.1:{}", ports[0]);
    let peer_url = format!("http://127.0.0.1:{}", ports[1]);
    let args = |dir: &Path| {
        [
            "--name",
            "bench",
            "--data-dir",
            &dir.display().to_string(),
            "--listen-client-urls",
            &client_url,
            "--advertise-client-urls",
            &client_url,
            "--listen-peer-urls",
            &peer_url,
            "--initial-advertise-peer-urls",
            &peer_url,
            "--initial-cluster",
            &format!("bench={peer_url}"),
            "--logger=zap",
            "--log-level=error",
        ]
        .map(String::from)
        .to_vec()
    };
    let mut server = Server::spawn("etcd", bin, args, None, log_dir)?;
    let client_addr = format!("127.0.0.1:{}", ports[0]);
    let addr = client_addr.clone();
    server
        .wait_ready(|_| {
            let addr = addr.clone();
            async move {
                tokio::time::timeout(Duration::from_secs(2), probe(&addr))
                    .await
                    .is_ok_and(|r| r.is_ok())
            }
        })
        .await?;
    Ok(Etcd { server, client_addr })
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
        let kv = KvClient::new(channel(addr).await.with_context(|| format!("client {client}"))?);
        Ok(Putter {
            kv,
            key_prefix: format!("bench/{round}/{client}/"),
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
