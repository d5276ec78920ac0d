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
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>> {
        let started = std::time::Instant::now();
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
        wire::from_append_response(&reply.into_inner()).map_err(unreadable)
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
