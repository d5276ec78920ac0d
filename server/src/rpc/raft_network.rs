//! openraft's network over the typed server RPC: one `PeerClient` per
//! target, each calling through the shared [`PeerClients`] channel of its
//! address.

use std::sync::Arc;

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};

use super::peers::{PeerClients, request};
use crate::raft::{NodeId, ServerNode, TypeConfig, wire};

/// A snapshot travels in chunks of this many bytes, one call each.
pub(crate) const SNAPSHOT_CHUNK_BYTES: u64 = 1024 * 1024;

/// An AppendEntries carries entries up to about this many bytes (always at
/// least one). openraft 0.9 bounds a message only by its entry count and
/// gives it one heartbeat interval: eight 1 MiB restore chunks in one call
/// missed that deadline under load, were sent again and again, and a
/// follower that heard nothing for long enough deposed the leader.
const APPEND_BUDGET_BYTES: usize = 1024 * 1024;

/// How many of `entries` fit the budget (at least one, when there are any).
fn within_budget(entries: &[crate::raft::Entry]) -> usize {
    let mut bytes = 0;
    for (i, e) in entries.iter().enumerate() {
        bytes += match &e.payload {
            openraft::EntryPayload::Normal(r) => r.approx_bytes(),
            _ => 256,
        };
        if bytes > APPEND_BUDGET_BYTES && i > 0 {
            return i;
        }
    }
    entries.len()
}

#[derive(Clone)]
pub(crate) struct Network {
    pub(crate) peers: Arc<PeerClients>,
    /// Times AppendEntries round trips.
    pub(crate) rpc_seconds: Option<prometheus_client::metrics::histogram::Histogram>,
}

pub(crate) struct PeerClient {
    target: NodeId,
    addr: String,
    peers: Arc<PeerClients>,
    rpc_seconds: Option<prometheus_client::metrics::histogram::Histogram>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &ServerNode) -> PeerClient {
        PeerClient {
            target,
            addr: node.raft_addr.clone(),
            peers: self.peers.clone(),
            rpc_seconds: self.rpc_seconds.clone(),
        }
    }
}

type RpcResult<T, E = openraft::error::Infallible> =
    Result<T, RPCError<NodeId, ServerNode, RaftError<NodeId, E>>>;

fn transport<E: std::error::Error>(s: tonic::Status) -> RPCError<NodeId, ServerNode, RaftError<NodeId, E>> {
    match s.code() {
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => {
            RPCError::Unreachable(Unreachable::new(&s))
        }
        _ => RPCError::Network(NetworkError::new(&s)),
    }
}

fn unreadable<E: std::error::Error>(
    e: impl std::error::Error + 'static,
) -> RPCError<NodeId, ServerNode, RaftError<NodeId, E>> {
    RPCError::Network(NetworkError::new(&e))
}

impl PeerClient {
    fn client(
        &self,
    ) -> Result<
        tribune_proto::server::server_rpc_client::ServerRpcClient<tonic::transport::Channel>,
        Unreachable,
    > {
        self.peers.client(&self.addr).map_err(|e| Unreachable::new(&e))
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    /// Sends what fits the byte budget; when that is not everything, a
    /// success is reported as a partial one up to the last entry sent, and
    /// openraft sends the rest next.
    async fn append_entries(
        &mut self,
        mut rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>> {
        let started = std::time::Instant::now();
        let fits = within_budget(&rpc.entries);
        let cut = (fits < rpc.entries.len()).then(|| {
            rpc.entries.truncate(fits);
            rpc.entries.last().map(|e| e.log_id)
        });
        let msg = wire::append_request(&rpc).map_err(unreadable)?;
        let reply = self
            .client()
            .map_err(RPCError::Unreachable)?
            .append_entries(request(msg, option.hard_ttl()))
            .await
            .map_err(transport)?;
        if let Some(h) = &self.rpc_seconds {
            h.observe(started.elapsed().as_secs_f64());
        }
        match (
            wire::from_append_response(&reply.into_inner()).map_err(unreadable)?,
            cut,
        ) {
            (AppendEntriesResponse::Success, Some(last_sent)) => {
                Ok(AppendEntriesResponse::PartialSuccess(last_sent))
            }
            (other, _) => Ok(other),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        let reply = self
            .client()
            .map_err(RPCError::Unreachable)?
            .install_snapshot(request(wire::snapshot_request(rpc), option.hard_ttl()))
            .await
            .map_err(transport)?;
        wire::from_snapshot_response(&reply.into_inner())
            .map_err(unreadable)?
            .map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, RaftError::APIError(e))))
    }

    async fn vote(&mut self, rpc: VoteRequest<NodeId>, option: RPCOption) -> RpcResult<VoteResponse<NodeId>> {
        let reply = self
            .client()
            .map_err(RPCError::Unreachable)?
            .vote(request(wire::vote_request(&rpc), option.hard_ttl()))
            .await
            .map_err(transport)?;
        wire::from_vote_response(&reply.into_inner()).map_err(unreadable)
    }
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, EntryPayload};

    use super::*;
    use crate::catalog::command::{Command, Request};
    use crate::raft::{Entry, LogId};

    fn chunk(index: u64, bytes: usize) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(Request {
                commands: vec![Command::RestoreChunk {
                    restore_id: "r".into(),
                    offset: 0,
                    data: vec![0; bytes],
                }],
            }),
        }
    }

    #[test]
    fn large_entries_go_one_message_at_a_time_and_small_ones_together() {
        let mib = 1024 * 1024;
        let big: Vec<Entry> = (1..=8).map(|i| chunk(i, mib)).collect();
        assert_eq!(within_budget(&big), 1, "one 1 MiB chunk per message");
        let small: Vec<Entry> = (1..=8).map(|i| chunk(i, 100)).collect();
        assert_eq!(within_budget(&small), 8);
        let mixed = vec![chunk(1, 100), chunk(2, mib), chunk(3, 100)];
        assert_eq!(
            within_budget(&mixed),
            1,
            "the small one goes first, the chunk next"
        );
        assert_eq!(within_budget(&[]), 0);
    }
}
