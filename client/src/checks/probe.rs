//! The probes: HTTP (2xx passing, 429 warning, anything else critical), TCP
//! connect, and gRPC (`grpc.health.v1`), each bounded by a timeout.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::CheckResult;
use crate::api::HealthStatus;

/// A TCP connect to HOST:PORT.
pub async fn tcp(address: &str, timeout: Duration) -> CheckResult {
    match tokio::time::timeout(timeout, TcpStream::connect(address)).await {
        Ok(Ok(_)) => (HealthStatus::Passing, format!("TCP connect {address}: success")),
        Ok(Err(e)) => (HealthStatus::Critical, format!("TCP connect {address}: {e}")),
        Err(_) => (
            HealthStatus::Critical,
            format!("TCP connect {address}: timed out after {timeout:?}"),
        ),
    }
}

/// A plain HTTP/1.1 GET; the status code decides.
pub async fn http(url: &str, timeout: Duration) -> CheckResult {
    let Some(rest) = url.strip_prefix("http://") else {
        return (
            HealthStatus::Critical,
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
                200..=299 => HealthStatus::Passing,
                429 => HealthStatus::Warning,
                _ => HealthStatus::Critical,
            };
            (status, format!("HTTP GET {url}: {line}"))
        }
        Ok(Err(e)) => (HealthStatus::Critical, format!("HTTP GET {url}: {e}")),
        Err(_) => (
            HealthStatus::Critical,
            format!("HTTP GET {url}: timed out after {timeout:?}"),
        ),
    }
}

/// `grpc.health.v1.Health/Check` on HOST:PORT[/service].
pub async fn grpc(target: &str, timeout: Duration) -> CheckResult {
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
            (HealthStatus::Passing, format!("gRPC health {target}: SERVING"))
        }
        Ok(Ok(s)) => (
            HealthStatus::Critical,
            format!("gRPC health {target}: status {s}"),
        ),
        Ok(Err(e)) => (HealthStatus::Critical, format!("gRPC health {target}: {e}")),
        Err(_) => (
            HealthStatus::Critical,
            format!("gRPC health {target}: timed out after {timeout:?}"),
        ),
    }
}
