//! The cluster-wide rules of the API, as narrow handles a subsystem takes
//! only when it needs them: who leads (`Leadership`), where a write goes
//! (`Writer`: the leader's proposer, forwarded over server RPC when this
//! server is not the leader) and when a local read is linearizable
//! (`Reads`: the leader's read index, applied here first).

use std::sync::Arc;
use std::time::Duration;

use tonic::Status;

use crate::catalog::command::{Command, Outcome};
use crate::raft::proposer::{ProposeError, Proposer};
use crate::raft::state_machine::Shared;
use crate::raft::{NodeId, Raft, ServerNode};
use crate::rpc::peers::PeerClients;

/// gRPC metadata asking for a read of this server's own state.
pub(crate) const CONSISTENCY_HEADER: &str = "x-tribune-consistency";
/// gRPC metadata naming a write, so a retried write applies once.
pub(crate) const REQUEST_ID_HEADER: &str = "x-tribune-request-id";

const LEADER_WAIT: Duration = Duration::from_secs(5);
const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether the request asked for a stale read.
pub(crate) fn wants_stale<T>(req: &tonic::Request<T>) -> bool {
    req.metadata()
        .get(CONSISTENCY_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("stale"))
}

/// The request's ID, when the client named it.
pub(crate) fn request_id<T>(req: &tonic::Request<T>) -> Option<String> {
    req.metadata()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map(String::from)
}

/// Who leads, as this server's Raft sees it.
#[derive(Clone)]
pub(crate) struct Leadership {
    raft: Raft,
    node_id: NodeId,
}

impl Leadership {
    pub(crate) fn new(raft: Raft, node_id: NodeId) -> Self {
        Leadership { raft, node_id }
    }

    pub(crate) fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// The Raft node, for what only it can answer (membership, metrics).
    pub(crate) fn raft(&self) -> &Raft {
        &self.raft
    }

    /// The current leader, waiting up to `limit` for one to be elected.
    pub(crate) async fn wait_leader(&self, limit: Duration) -> Option<(NodeId, ServerNode)> {
        let mut m = self.raft.metrics();
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let found = {
                let b = m.borrow();
                b.current_leader.and_then(|id| {
                    b.membership_config
                        .membership()
                        .get_node(&id)
                        .cloned()
                        .map(|n| (id, n))
                })
            };
            if found.is_some() {
                return found;
            }
            if tokio::time::timeout_at(deadline, m.changed()).await.is_err() {
                return None;
            }
        }
    }

    /// The current leader, now.
    pub(crate) fn leader(&self) -> Option<ServerNode> {
        let m = self.raft.metrics();
        let m = m.borrow();
        let id = m.current_leader?;
        m.membership_config.membership().get_node(&id).cloned()
    }

    /// This server leads and has applied its whole log: what a leader duty
    /// waits for, since a leader that restarted sees the state of its last
    /// snapshot until it has re-applied the entries after it.
    pub(crate) fn leads_caught_up(&self) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow();
        m.current_leader == Some(self.node_id) && m.last_applied.map(|l| l.index) >= m.last_log_index
    }
}

/// Where writes go: the leader's proposer, wherever the leader is.
#[derive(Clone)]
pub(crate) struct Writer {
    leadership: Leadership,
    proposer: Proposer,
    peers: Arc<PeerClients>,
}

impl Writer {
    pub(crate) fn new(leadership: Leadership, proposer: Proposer, peers: Arc<PeerClients>) -> Self {
        Writer {
            leadership,
            proposer,
            peers,
        }
    }

    /// Commits `cmd` through the leader, wherever it is. Tagged with
    /// `request_id`, a retried write is applied once.
    pub(crate) async fn propose_once(
        &self,
        request_id: Option<String>,
        cmd: Command,
    ) -> Result<(u64, Outcome), ProposeError> {
        let cmd = match request_id {
            Some(id) => Command::Once {
                request_id: id,
                cmd: Box::new(cmd),
            },
            None => cmd,
        };
        self.propose(cmd).await
    }

    pub(crate) async fn propose(&self, cmd: Command) -> Result<(u64, Outcome), ProposeError> {
        let mut last = ProposeError::NotLeader { leader: None };
        for attempt in 0..4 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
            }
            let Some((id, node)) = self.leadership.wait_leader(LEADER_WAIT).await else {
                return Err(ProposeError::NotLeader { leader: None });
            };
            let res = if id == self.leadership.node_id {
                self.proposer.propose(cmd.clone()).await
            } else {
                self.peers
                    .propose(&node.raft_addr, &cmd, FORWARD_TIMEOUT)
                    .await
                    .unwrap_or_else(|e| Err(ProposeError::Unreachable(e.to_string())))
            };
            match res {
                // Leadership moved, or the leader could not be reached: ask again.
                Err(e @ (ProposeError::NotLeader { .. } | ProposeError::Unreachable(_))) => last = e,
                other => return other,
            }
        }
        Err(last)
    }
}

/// Linearizable reads of the local state.
#[derive(Clone)]
pub(crate) struct Reads {
    leadership: Leadership,
    peers: Arc<PeerClients>,
    state: Arc<Shared>,
}

impl Reads {
    pub(crate) fn new(leadership: Leadership, peers: Arc<PeerClients>, state: Arc<Shared>) -> Self {
        Reads {
            leadership,
            peers,
            state,
        }
    }

    /// Makes the next local read linearizable: confirmed by the leader's
    /// quorum, and this server has applied everything the leader had
    /// committed. A stale read skips it.
    pub(crate) async fn barrier(&self, stale: bool) -> Result<(), Status> {
        if stale {
            return Ok(());
        }
        let Some((id, node)) = self.leadership.wait_leader(LEADER_WAIT).await else {
            return Err(Status::unavailable(
                "no leader is elected: retry, or read with consistency=stale",
            ));
        };
        let index = if id == self.leadership.node_id {
            crate::raft::read_index(&self.leadership.raft)
                .await
                .map_err(Status::unavailable)?
        } else {
            self.peers
                .read_index(&node.raft_addr, LEADER_WAIT)
                .await
                .map_err(|e| Status::unavailable(e.to_string()))?
                .map_err(Status::unavailable)?
        };
        let mut applied = self.state.applied();
        let wait = applied.wait_for(|a| *a >= index);
        match tokio::time::timeout(LEADER_WAIT, wait).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(Status::unavailable(format!(
                "this server has not applied index {index} yet: retry, or read with consistency=stale"
            ))),
        }
    }
}
