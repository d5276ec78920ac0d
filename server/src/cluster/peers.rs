//! Calls from one server to another on the server port: forwarded writes,
//! read index, status and leadership hand-over. One lazily connected
//! channel per peer address, reused.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::transport::{Channel, Endpoint};
use tribune_proto::raft::RaftPayload;
use tribune_proto::raft::raft_client::RaftClient;

use crate::raft::network::MAX_RAFT_MESSAGE;

#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("server {addr} is unreachable: {message}")]
    Unreachable { addr: String, message: String },
    #[error("server {addr} answered something unreadable: {message}")]
    Protocol { addr: String, message: String },
}

#[derive(Default)]
pub struct PeerClients {
    channels: Mutex<HashMap<String, Channel>>,
    source: Option<std::net::IpAddr>,
}

/// A lazily connected endpoint to another server's RPC port. Connections
/// leave from `source`, the IP this server's RPC port is bound to, so that
/// a multi-homed host (or a test's fault-injecting proxy) sees which server
/// is calling.
pub fn server_endpoint(
    addr: &str,
    source: Option<std::net::IpAddr>,
    connect_timeout: Duration,
) -> Result<Channel, tonic::transport::Error> {
    Ok(Endpoint::from_shared(format!("http://{addr}"))?
        .local_address(source)
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true)
        .connect_lazy())
}

#[derive(Clone, Copy)]
pub enum Method {
    Propose,
    ReadIndex,
    Status,
    TimeoutNow,
}

impl PeerClients {
    /// Clients whose connections leave from `source` (see [`server_endpoint`]).
    pub fn from_source(source: Option<std::net::IpAddr>) -> Self {
        PeerClients {
            source,
            ..Default::default()
        }
    }

    fn channel(&self, addr: &str) -> Result<Channel, PeerError> {
        let mut m = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = m.get(addr) {
            return Ok(c.clone());
        }
        let ch = server_endpoint(addr, self.source, Duration::from_secs(1)).map_err(|e| {
            PeerError::Unreachable {
                addr: addr.into(),
                message: e.to_string(),
            }
        })?;
        m.insert(addr.to_string(), ch.clone());
        Ok(ch)
    }

    pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        addr: &str,
        method: Method,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, PeerError> {
        let proto = |message: String| PeerError::Protocol {
            addr: addr.into(),
            message,
        };
        let data = serde_json::to_vec(req).map_err(|e| proto(e.to_string()))?;
        let mut client = RaftClient::new(self.channel(addr)?)
            .max_decoding_message_size(MAX_RAFT_MESSAGE)
            .max_encoding_message_size(MAX_RAFT_MESSAGE);
        let mut r = tonic::Request::new(RaftPayload {
            data,
            chunk: Vec::new(),
        });
        r.set_timeout(timeout);
        let reply = match method {
            Method::Propose => client.propose(r).await,
            Method::ReadIndex => client.read_index(r).await,
            Method::Status => client.status(r).await,
            Method::TimeoutNow => client.timeout_now(r).await,
        }
        .map_err(|s| PeerError::Unreachable {
            addr: addr.into(),
            message: s.message().to_string(),
        })?;
        serde_json::from_slice(&reply.into_inner().data).map_err(|e| proto(e.to_string()))
    }
}
