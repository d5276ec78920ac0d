//! The typed client of the server port: one lazily connected channel per
//! peer address, shared by Raft's network and by every other server-to-server
//! call (forwarded writes, read index, status, hand-over).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};
use tribune_proto::server as pb;
use tribune_proto::server::server_rpc_client::ServerRpcClient;

use super::MAX_MESSAGE;
use crate::catalog::command::{Command, Outcome};
use crate::codec;
use crate::raft::proposer::ProposeError;
use crate::raft::{LogId, wire};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub(crate) enum PeerError {
    #[error("server {addr} is unreachable: {message}")]
    Unreachable { addr: String, message: String },
    #[error("server {addr} answered something unreadable: {message}")]
    Protocol { addr: String, message: String },
}

/// What a server answers to `Status`.
#[derive(Clone, Debug)]
pub(crate) struct RaftStatus {
    pub(crate) initialized: bool,
    /// The last entry in this server's log.
    pub(crate) last_log: Option<LogId>,
}

pub(crate) struct PeerClients {
    channels: Mutex<HashMap<String, Channel>>,
    source: Option<std::net::IpAddr>,
    /// Mutual TLS on the server port, when on.
    tls: Option<tribune_client::tls::TlsConnector>,
}

impl PeerClients {
    /// Clients whose connections leave from `source`, the IP this server's
    /// RPC port is bound to, so that a multi-homed host (or a test's
    /// fault-injecting proxy) sees which server is calling.
    pub(crate) fn from_source(source: Option<std::net::IpAddr>) -> Self {
        PeerClients {
            channels: Mutex::default(),
            source,
            tls: None,
        }
    }

    /// Dials through `tls` (mutual TLS; it binds the source itself).
    pub(crate) fn with_tls(mut self, tls: Option<tribune_client::tls::TlsConnector>) -> Self {
        self.tls = tls;
        self
    }

    /// The one channel kept for the server port at `addr`: server RPC, and
    /// the public API for requests forwarded from another datacenter.
    pub(crate) fn channel(&self, addr: &str) -> Result<Channel, PeerError> {
        let mut m = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = m.get(addr) {
            return Ok(c.clone());
        }
        let e = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| PeerError::Unreachable {
                addr: addr.into(),
                message: e.to_string(),
            })?
            .local_address(self.source)
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true);
        let ch = match &self.tls {
            Some(t) => e.connect_with_connector_lazy(t.clone()),
            None => e.connect_lazy(),
        };
        m.insert(addr.to_string(), ch.clone());
        Ok(ch)
    }

    /// The client for `addr`, on the one channel kept for it.
    pub(crate) fn client(&self, addr: &str) -> Result<ServerRpcClient<Channel>, PeerError> {
        let ch = self.channel(addr)?;
        Ok(ServerRpcClient::new(ch)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE))
    }

    /// A write for the leader at `addr`: its index and outcome, or why it
    /// was refused.
    pub(crate) async fn propose(
        &self,
        addr: &str,
        cmd: &Command,
        timeout: Duration,
    ) -> Result<Result<(u64, Outcome), ProposeError>, PeerError> {
        let command = codec::encode(cmd).map_err(|e| protocol(addr, e))?;
        let reply = self
            .client(addr)?
            .propose(request(pb::ProposeRequest { command }, timeout))
            .await
            .map_err(|s| unreachable(addr, &s))?
            .into_inner();
        use pb::propose_response::Result as R;
        match reply.result {
            Some(R::Proposed(p)) => {
                let outcome: Outcome = codec::decode(&p.outcome).map_err(|e| protocol(addr, e))?;
                Ok(Ok((p.index, outcome)))
            }
            Some(R::Refused(r)) => Ok(Err(refusal(r))),
            None => Err(protocol(addr, "a propose reply without a result")),
        }
    }

    /// The leader's read index.
    pub(crate) async fn read_index(
        &self,
        addr: &str,
        timeout: Duration,
    ) -> Result<Result<u64, String>, PeerError> {
        let reply = self
            .client(addr)?
            .read_index(request(pb::ReadIndexRequest {}, timeout))
            .await
            .map_err(|s| unreachable(addr, &s))?
            .into_inner();
        use pb::read_index_response::Result as R;
        match reply.result {
            Some(R::Index(i)) => Ok(Ok(i)),
            Some(R::Error(e)) => Ok(Err(e)),
            None => Err(protocol(addr, "a read index reply without a result")),
        }
    }

    pub(crate) async fn status(&self, addr: &str, timeout: Duration) -> Result<RaftStatus, PeerError> {
        let s = self
            .client(addr)?
            .status(request(pb::StatusRequest {}, timeout))
            .await
            .map_err(|s| unreachable(addr, &s))?
            .into_inner();
        Ok(RaftStatus {
            initialized: s.initialized,
            last_log: s.last_log.as_ref().map(wire::from_log_id),
        })
    }

    /// Asks the server at `addr` to campaign now.
    pub(crate) async fn timeout_now(&self, addr: &str, timeout: Duration) -> Result<bool, PeerError> {
        let r = self
            .client(addr)?
            .timeout_now(request(pb::TimeoutNowRequest {}, timeout))
            .await
            .map_err(|s| unreachable(addr, &s))?;
        Ok(r.into_inner().campaigning)
    }
}

pub(crate) fn request<T>(msg: T, timeout: Duration) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.set_timeout(timeout);
    r
}

fn unreachable(addr: &str, s: &tonic::Status) -> PeerError {
    PeerError::Unreachable {
        addr: addr.into(),
        message: s.message().to_string(),
    }
}

fn protocol(addr: &str, e: impl std::fmt::Display) -> PeerError {
    PeerError::Protocol {
        addr: addr.into(),
        message: e.to_string(),
    }
}

pub(crate) fn refusal_of(e: &ProposeError) -> pb::ProposeRefusal {
    use pb::propose_refusal::Reason;
    let (reason, leader) = match e {
        ProposeError::NotLeader { leader } => (Reason::NotLeader, leader.as_ref().map(wire::node)),
        ProposeError::Raft(_) => (Reason::Raft, None),
        ProposeError::ShuttingDown => (Reason::ShuttingDown, None),
        ProposeError::Unreachable(_) => (Reason::Unreachable, None),
    };
    let message = match e {
        ProposeError::Raft(m) | ProposeError::Unreachable(m) => m.clone(),
        _ => String::new(),
    };
    pb::ProposeRefusal {
        reason: reason as i32,
        message,
        leader,
    }
}

fn refusal(r: pb::ProposeRefusal) -> ProposeError {
    use pb::propose_refusal::Reason;
    match Reason::try_from(r.reason) {
        Ok(Reason::NotLeader) => ProposeError::NotLeader {
            leader: r.leader.as_ref().map(wire::from_node),
        },
        Ok(Reason::ShuttingDown) => ProposeError::ShuttingDown,
        Ok(Reason::Unreachable) => ProposeError::Unreachable(r.message),
        Ok(Reason::Raft) | Ok(Reason::Unspecified) | Err(_) => ProposeError::Raft(r.message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::ServerNode;

    #[test]
    fn refusals_round_trip() {
        for e in [
            ProposeError::NotLeader { leader: None },
            ProposeError::NotLeader {
                leader: Some(ServerNode {
                    name: "s2".into(),
                    raft_addr: "127.0.0.1:8300".into(),
                    grpc_addr: "127.0.0.1:8502".into(),
                }),
            },
            ProposeError::Raft("log full".into()),
            ProposeError::ShuttingDown,
            ProposeError::Unreachable("down".into()),
        ] {
            assert_eq!(refusal(refusal_of(&e)).to_string(), e.to_string());
        }
    }
}
