//! Health checks, run by the agent that owns them: the checks of this
//! agent's own node. HTTP (2xx passing, 429 warning, anything else
//! critical), TCP connect, gRPC (`grpc.health.v1`) and TTL expiry. Each check
//! runs on its interval with its timeout; only a change of status or output
//! goes through Raft.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use crate::catalog::command::Command;
use crate::catalog::model::{Check, CheckDefinition, CheckKind, Status};
use crate::catalog::validate::cap_output;
use crate::context::ServerContext;

/// Keeps one runner per check of this node, following the catalog.
pub async fn run(ctx: Arc<ServerContext>) {
    let mut runners: HashMap<String, (CheckDefinition, JoinHandle<()>)> = HashMap::new();
    let mut applied = ctx.state.applied();
    loop {
        let mine: Vec<Check> = {
            let d = ctx.state.read();
            d.catalog
                .checks_in(None, None)
                .into_iter()
                .filter(|c| c.node == ctx.node_name)
                .collect()
        };
        let ids: std::collections::HashSet<&str> = mine.iter().map(|c| c.id.as_str()).collect();
        runners.retain(|id, (_, h)| {
            let keep = ids.contains(id.as_str());
            if !keep {
                h.abort();
            }
            keep
        });
        for c in mine {
            let current = runners.get(&c.id).map(|(d, _)| d);
            if current != Some(&c.definition) {
                if let Some((_, h)) = runners.remove(&c.id) {
                    h.abort();
                }
                let h = tokio::spawn(run_one(ctx.clone(), c.id.clone(), c.definition.clone()));
                runners.insert(c.id, (c.definition, h));
            }
        }
        if applied.changed().await.is_err() {
            return;
        }
    }
}

async fn run_one(ctx: Arc<ServerContext>, id: String, def: CheckDefinition) {
    let interval = Duration::from_millis(def.interval_ms.max(1000));
    let timeout = Duration::from_millis(def.timeout_ms.max(100));
    // TTL: when the check last changed, as this agent saw it.
    let mut last_seen: Option<(u64, tokio::time::Instant)> = None;
    loop {
        let current = ctx.state.read().catalog.check(&id).cloned();
        let Some(current) = current else { return };
        let result = match &def.kind {
            CheckKind::Http { url } => Some(http(url, timeout).await),
            CheckKind::Tcp { address } => Some(tcp(address, timeout).await),
            CheckKind::Grpc { target } => Some(grpc(target, timeout).await),
            CheckKind::Ttl { ttl_ms } => {
                let now = tokio::time::Instant::now();
                let since = match last_seen {
                    Some((idx, t)) if idx == current.modify_index => t,
                    _ => {
                        last_seen = Some((current.modify_index, now));
                        now
                    }
                };
                (now.duration_since(since) >= Duration::from_millis(*ttl_ms)
                    && current.status != Status::Critical)
                    .then(|| (Status::Critical, "TTL expired".to_string()))
            }
        };
        if let Some((status, output)) = result {
            let output = cap_output(&output);
            if status != current.status || output != current.output {
                let cmd = Command::CheckResult {
                    check_id: id.clone(),
                    status,
                    output,
                };
                if let Err(e) = ctx.propose(cmd).await {
                    tracing::warn!(check = %id, error = %e, "could not record a check result");
                }
            }
        }
        let wait = match def.kind {
            CheckKind::Ttl { .. } => Duration::from_secs(1),
            _ => interval,
        };
        tokio::time::sleep(wait).await;
    }
}

async fn tcp(address: &str, timeout: Duration) -> (Status, String) {
    match tokio::time::timeout(timeout, TcpStream::connect(address)).await {
        Ok(Ok(_)) => (Status::Passing, format!("TCP connect {address}: success")),
        Ok(Err(e)) => (Status::Critical, format!("TCP connect {address}: {e}")),
        Err(_) => (
            Status::Critical,
            format!("TCP connect {address}: timed out after {timeout:?}"),
        ),
    }
}

/// A plain HTTP/1.1 GET; the status code decides.
async fn http(url: &str, timeout: Duration) -> (Status, String) {
    let Some(rest) = url.strip_prefix("http://") else {
        return (
            Status::Critical,
            format!("{url}: only http:// checks are supported by this build"),
        );
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let probe = async {
        let mut s = TcpStream::connect(&addr).await?;
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: tribune-health-check\r\nConnection: close\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await?;
        let mut buf = vec![0u8; 4096];
        let mut got = 0;
        while got < buf.len() {
            let n = s.read(&mut buf[got..]).await?;
            if n == 0 || buf[..got + n].windows(2).any(|w| w == b"\r\n") {
                got += n;
                break;
            }
            got += n;
        }
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&buf[..got]).into_owned())
    };
    match tokio::time::timeout(timeout, probe).await {
        Ok(Ok(head)) => {
            let line = head.lines().next().unwrap_or_default().to_string();
            let code: u16 = line
                .split_whitespace()
                .nth(1)
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            let status = match code {
                200..=299 => Status::Passing,
                429 => Status::Warning,
                _ => Status::Critical,
            };
            (status, format!("HTTP GET {url}: {line}"))
        }
        Ok(Err(e)) => (Status::Critical, format!("HTTP GET {url}: {e}")),
        Err(_) => (
            Status::Critical,
            format!("HTTP GET {url}: timed out after {timeout:?}"),
        ),
    }
}

/// `grpc.health.v1.Health/Check` on HOST:PORT[/service].
async fn grpc(target: &str, timeout: Duration) -> (Status, String) {
    let (addr, service) = match target.split_once('/') {
        Some((a, s)) => (a, s),
        None => (target, ""),
    };
    let probe = async {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| e.to_string())?
            .connect()
            .await
            .map_err(|e| e.to_string())?;
        let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
        let resp = client
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .map_err(|s| s.message().to_string())?;
        Ok::<_, String>(resp.into_inner().status)
    };
    match tokio::time::timeout(timeout, probe).await {
        Ok(Ok(s)) if s == tonic_health::pb::health_check_response::ServingStatus::Serving as i32 => {
            (Status::Passing, format!("gRPC health {target}: SERVING"))
        }
        Ok(Ok(s)) => (Status::Critical, format!("gRPC health {target}: status {s}")),
        Ok(Err(e)) => (Status::Critical, format!("gRPC health {target}: {e}")),
        Err(_) => (
            Status::Critical,
            format!("gRPC health {target}: timed out after {timeout:?}"),
        ),
    }
}
