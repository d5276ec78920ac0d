//! The Tribune side: starting a single-server agent and registering unique
//! service instances through `tribune-client`, one connection per client.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tribune_client::{Client, api};

use crate::load::Writer;
use crate::servers::{Server, free_ports};

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
}

/// Starts `bin agent --server` on free ports with a fresh data directory and
/// waits until it has elected itself leader. `log_dir`: see [`Server::spawn`].
pub async fn start(bin: &Path, log_level: Option<&str>, log_dir: Option<&Path>) -> Result<Tribune> {
    let ports = free_ports(3)?;
    let grpc_addr = format!("127.0.0.1:{}", ports[0]);
    let http_addr = format!("127.0.0.1:{}", ports[1]);
    let server_addr = format!("127.0.0.1:{}", ports[2]);
    let args = |dir: &Path| {
        let mut a: Vec<String> = vec![
            "agent".into(),
            "--server".into(),
            "--node".into(),
            "bench".into(),
            "--data-dir".into(),
            dir.display().to_string(),
            "--bootstrap-expect".into(),
            "1".into(),
            "--grpc-addr".into(),
            grpc_addr.clone(),
            "--http-addr".into(),
            http_addr.clone(),
            "--server-addr".into(),
            server_addr.clone(),
        ];
        if let Some(l) = log_level {
            a.extend(["--log-level".into(), l.into()]);
        }
        a
    };
    let mut server = Server::spawn("tribune", bin, args, Some(READY_MARKER), log_dir)?;
    let http = http_addr.clone();
    server
        .wait_ready(|s| {
            let seen = s.marker_seen();
            let http = http.clone();
            async move {
                seen || http_get(&http, "/healthz")
                    .await
                    .is_ok_and(|(code, _)| code == 200)
            }
        })
        .await?;
    Ok(Tribune {
        server,
        grpc_addr,
        http_addr,
    })
}

impl Tribune {
    /// The Raft index the server has applied (from `/healthz`).
    pub async fn applied_index(&self) -> Result<u64> {
        let (code, body) = http_get(&self.http_addr, "/healthz").await?;
        let v: serde_json::Value = serde_json::from_str(&body)
            .with_context(|| format!("GET /healthz answered {code} with {body:?}"))?;
        v["applied_index"]
            .as_u64()
            .with_context(|| format!("GET /healthz answered {code} without applied_index: {body}"))
    }
}

/// `GET http://ADDR/PATH` as a bare HTTP/1.0 request (to need no HTTP
/// client): the status code and the body.
async fn http_get(addr: &str, path: &str) -> Result<(u16, String)> {
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
        let c = Client::connect(addr)
            .await
            .with_context(|| format!("connecting client {client} to Tribune at {addr}"))?;
        Ok(Registrar {
            client: c,
            id_prefix: format!("b{round}-{client}-"),
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
