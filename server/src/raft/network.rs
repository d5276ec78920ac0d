//! The client side of Raft between servers: one lazily connected gRPC
//! channel per peer, openraft messages carried serde-encoded.

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::transport::Channel;
use tribune_proto::raft::RaftPayload;
use tribune_proto::raft::raft_client::RaftClient;

use super::{NodeId, ServerNode, TypeConfig};

/// Raft messages between servers may be large (snapshot chunks, batches).
pub const MAX_RAFT_MESSAGE: usize = 64 * 1024 * 1024;
/// A snapshot travels in chunks of this many bytes, one call each.
pub const SNAPSHOT_CHUNK_BYTES: u64 = 1024 * 1024;

#[derive(Clone, Default)]
pub struct Network {
    /// The IP connections to peers leave from (see `cluster::peers::server_endpoint`).
    pub source: Option<std::net::IpAddr>,
    /// Times AppendEntries round trips.
    pub rpc_seconds: Option<prometheus_client::metrics::histogram::Histogram>,
}

pub struct PeerClient {
    target: NodeId,
    addr: String,
    client: Option<RaftClient<Channel>>,
    rpc_seconds: Option<prometheus_client::metrics::histogram::Histogram>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &ServerNode) -> PeerClient {
        let client = crate::cluster::peers::server_endpoint(
            &node.raft_addr,
            self.source,
            std::time::Duration::from_secs(2),
        )
        .ok()
        .map(|ch| {
            RaftClient::new(ch)
                .max_decoding_message_size(MAX_RAFT_MESSAGE)
                .max_encoding_message_size(MAX_RAFT_MESSAGE)
        });
        PeerClient {
            target,
            addr: node.raft_addr.clone(),
            client,
            rpc_seconds: self.rpc_seconds.clone(),
        }
    }
}

type RpcResult<T, E = openraft::error::Infallible> =
    Result<T, RPCError<NodeId, ServerNode, RaftError<NodeId, E>>>;

impl PeerClient {
    async fn call<Req, Resp, E>(
        &mut self,
        method: &'static str,
        req: &Req,
        chunk: Vec<u8>,
        option: &RPCOption,
    ) -> RpcResult<Resp, E>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let Some(client) = self.client.as_mut() else {
            return Err(RPCError::Unreachable(Unreachable::new(&std::io::Error::other(
                format!("peer {} has an invalid address {:?}", self.target, self.addr),
            ))));
        };
        let data = serde_json::to_vec(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let mut request = tonic::Request::new(RaftPayload { data, chunk });
        request.set_timeout(option.hard_ttl());
        let reply = match method {
            "append_entries" => client.append_entries(request).await,
            "vote" => client.vote(request).await,
            _ => client.install_snapshot(request).await,
        };
        let reply = reply.map_err(|s| match s.code() {
            tonic::Code::Unavailable => RPCError::Unreachable(Unreachable::new(&s)),
            _ => RPCError::Network(NetworkError::new(&s)),
        })?;
        let res: Result<Resp, RaftError<NodeId, E>> = serde_json::from_slice(&reply.into_inner().data)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        res.map_err(|e| RPCError::RemoteError(openraft::error::RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>> {
        let started = std::time::Instant::now();
        let res = self.call("append_entries", &rpc, Vec::new(), &option).await;
        if let Some(h) = &self.rpc_seconds {
            h.observe(started.elapsed().as_secs_f64());
        }
        res
    }

    async fn install_snapshot(
        &mut self,
        mut rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        let chunk = std::mem::take(&mut rpc.data);
        self.call("install_snapshot", &rpc, chunk, &option).await
    }

    async fn vote(&mut self, rpc: VoteRequest<NodeId>, option: RPCOption) -> RpcResult<VoteResponse<NodeId>> {
        self.call("vote", &rpc, Vec::new(), &option).await
    }
}
