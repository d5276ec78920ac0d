//! `tribune.v1.Operator`: Raft peers, and whole-state snapshot save/restore.

use std::sync::Arc;

use futures::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tribune_proto::v1 as pb;
use tribune_proto::v1::operator_server::Operator;

use super::{outcome_error, propose_error};
use crate::catalog::command::{Command, Outcome};
use crate::consensus::Leadership;
use crate::raft::{NodeId, Raft};

/// What the operator API takes: the API's core handles, Raft and who leads
/// (peers, removal), gossip (members) and autopilot, and this server's
/// identity for a gossip-less answer.
pub(crate) struct OperatorCtx {
    pub(crate) core: super::ApiCore,
    pub(crate) leadership: Leadership,
    pub(crate) raft: Raft,
    pub(crate) node_id: NodeId,
    pub(crate) node_name: String,
    pub(crate) datacenter: String,
    pub(crate) raft_addr: String,
    pub(crate) grpc_addr: String,
    pub(crate) gossip: Option<tribune_client::gossip::Gossip>,
    /// The WAN pool of servers of every datacenter.
    pub(crate) wan: tribune_client::gossip::Gossip,
    pub(crate) primary: Arc<crate::federation::primary::Primary>,
    pub(crate) replication: Arc<crate::federation::replication::ReplicationStatus>,
    pub(crate) autopilot: Arc<crate::cluster::autopilot::Autopilot>,
    /// Clients of other servers' server port (the leader's API).
    pub(crate) peers: Arc<crate::rpc::peers::PeerClients>,
}

impl std::ops::Deref for OperatorCtx {
    type Target = super::ApiCore;
    fn deref(&self) -> &super::ApiCore {
        &self.core
    }
}
use crate::raft::snapshot_file;

/// Chunk size of a streamed snapshot.
const CHUNK: usize = 64 * 1024;
/// Largest snapshot a restore accepts.
pub(crate) const MAX_RESTORE_BYTES: usize = 512 * 1024 * 1024;
/// A restore enters the log in pieces of this size: with at most 8 entries
/// per AppendEntries, a message stays far below the server RPC limit and a
/// follower's fsync of one stays short, so heartbeats keep flowing.
const RESTORE_CHUNK_BYTES: usize = 1024 * 1024;

pub(crate) struct OperatorApi {
    ctx: Arc<OperatorCtx>,
}

impl OperatorApi {
    pub(crate) fn new(ctx: Arc<OperatorCtx>) -> Self {
        OperatorApi { ctx }
    }
}

/// `req` for the leader, with the caller's token: the leader checks it again.
fn with_token<T>(req: Request<T>) -> Request<T> {
    let token = req.metadata().get(crate::acl::TOKEN_HEADER).cloned();
    let mut out = Request::new(req.into_inner());
    if let Some(t) = token {
        out.metadata_mut().insert(crate::acl::TOKEN_HEADER, t);
    }
    out
}

/// The leader's Operator API, when this server is not the leader.
async fn leader_operator(
    ctx: &OperatorCtx,
) -> Result<Option<tribune_proto::v1::operator_client::OperatorClient<tonic::transport::Channel>>, Status> {
    let (id, node) = ctx
        .leadership
        .wait_leader(std::time::Duration::from_secs(5))
        .await
        .ok_or_else(|| Status::unavailable("no leader is elected"))?;
    if id == ctx.node_id {
        return Ok(None);
    }
    // The server port serves the public API too, and is the one port every
    // server has (the plaintext gRPC port may be off).
    let ch = ctx
        .peers
        .channel(&node.raft_addr)
        .map_err(|e| Status::unavailable(format!("the leader {} is unreachable: {e}", node.name)))?;
    Ok(Some(tribune_proto::v1::operator_client::OperatorClient::new(ch)))
}

#[tonic::async_trait]
impl Operator for OperatorApi {
    async fn raft_remove_peer(
        &self,
        req: Request<pb::RaftRemovePeerRequest>,
    ) -> Result<Response<pb::RaftRemovePeerResponse>, Status> {
        self.ctx
            .metrics
            .observe("RaftRemovePeer", async {
                crate::catalog::validate::node_name("node", &req.get_ref().node).map_err(super::invalid)?;
                if let Some(mut leader) = leader_operator(&self.ctx).await? {
                    return leader.raft_remove_peer(with_token(req)).await;
                }
                let r = req.into_inner();
                let membership = self
                    .ctx
                    .raft
                    .metrics()
                    .borrow()
                    .membership_config
                    .membership()
                    .clone();
                let id = membership
                    .nodes()
                    .find(|(_, n)| n.name == r.node)
                    .map(|(id, _)| *id)
                    .ok_or_else(|| {
                        Status::not_found(format!("{:?} is not in the Raft configuration", r.node))
                    })?;
                let voters: std::collections::BTreeSet<u64> = membership.voter_ids().collect();
                let change = if voters.contains(&id) {
                    openraft::ChangeMembers::RemoveVoters(std::collections::BTreeSet::from([id]))
                } else {
                    openraft::ChangeMembers::RemoveNodes(std::collections::BTreeSet::from([id]))
                };
                let resp = self
                    .ctx
                    .raft
                    .change_membership(change, false)
                    .await
                    .map_err(|e| Status::failed_precondition(format!("removing {}: {e}", r.node)))?;
                tracing::info!(node = %r.node, "removed from the Raft configuration");
                Ok(Response::new(pb::RaftRemovePeerResponse {
                    index: resp.log_id.index,
                }))
            })
            .await
    }

    async fn autopilot_state(
        &self,
        req: Request<pb::AutopilotStateRequest>,
    ) -> Result<Response<pb::AutopilotStateResponse>, Status> {
        self.ctx
            .metrics
            .observe("AutopilotState", async {
                if let Some(mut leader) = leader_operator(&self.ctx).await? {
                    return leader.autopilot_state(with_token(req)).await;
                }
                Ok(Response::new(crate::cluster::autopilot::state(
                    &self.ctx.autopilot,
                    self.ctx.gossip.as_ref(),
                )))
            })
            .await
    }

    async fn members(
        &self,
        req: Request<pb::MembersRequest>,
    ) -> Result<Response<pb::MembersResponse>, Status> {
        self.ctx
            .metrics
            .observe("Members", async {
                let pool = if req.get_ref().wan {
                    Some(&self.ctx.wan)
                } else {
                    self.ctx.gossip.as_ref()
                };
                let members = match pool {
                    Some(g) => g
                        .members()
                        .into_iter()
                        .filter(|m| !m.member.is_placeholder())
                        .map(|m| pb::GossipMember {
                            name: m.member.name,
                            address: m.member.gossip_addr.to_string(),
                            role: format!("{:?}", m.member.role).to_lowercase(),
                            datacenter: m.member.datacenter,
                            state: format!("{:?}", m.state).to_lowercase(),
                            server_addr: m.member.server_addr,
                            grpc_addr: m.member.grpc_addr,
                            version: m.member.version,
                        })
                        .collect(),
                    None => vec![pb::GossipMember {
                        name: self.ctx.node_name.clone(),
                        address: String::new(),
                        role: "server".into(),
                        datacenter: self.ctx.datacenter.clone(),
                        state: "alive".into(),
                        server_addr: self.ctx.raft_addr.clone(),
                        grpc_addr: self.ctx.grpc_addr.clone(),
                        version: env!("CARGO_PKG_VERSION").into(),
                    }],
                };
                Ok(Response::new(pb::MembersResponse { members }))
            })
            .await
    }

    async fn replication_status(
        &self,
        _req: Request<pb::ReplicationStatusRequest>,
    ) -> Result<Response<pb::ReplicationStatusResponse>, Status> {
        self.ctx
            .metrics
            .observe("ReplicationStatus", async {
                let kinds = crate::federation::replication::Kind::ALL
                    .iter()
                    .map(|&k| {
                        let s = self.ctx.replication.of(k);
                        pb::ReplicatedKind {
                            kind: k.name().into(),
                            enabled: self.ctx.primary.is_elsewhere(),
                            source_datacenter: self.ctx.primary.name().to_string(),
                            index: s.index,
                            seconds_since_success: s.last_success.map(|t| t.elapsed().as_secs_f64()),
                            last_error: s.last_error.unwrap_or_default(),
                        }
                    })
                    .collect();
                Ok(Response::new(pb::ReplicationStatusResponse {
                    datacenter: self.ctx.datacenter.clone(),
                    primary_datacenter: self.ctx.primary.name().to_string(),
                    kinds,
                }))
            })
            .await
    }

    async fn raft_list_peers(
        &self,
        _req: Request<pb::RaftListPeersRequest>,
    ) -> Result<Response<pb::RaftListPeersResponse>, Status> {
        self.ctx
            .metrics
            .observe("RaftListPeers", async {
                let m = self.ctx.raft.metrics().borrow().clone();
                let membership = m.membership_config.membership();
                let voters: std::collections::BTreeSet<u64> = membership.voter_ids().collect();
                let peers = membership
                    .nodes()
                    .map(|(id, n)| pb::RaftPeer {
                        id: *id,
                        node: n.name.clone(),
                        address: n.raft_addr.clone(),
                        leader: m.current_leader == Some(*id),
                        voter: voters.contains(id),
                    })
                    .collect();
                Ok(Response::new(pb::RaftListPeersResponse {
                    peers,
                    term: m.current_term,
                    last_log_index: m.last_log_index.unwrap_or(0),
                    applied_index: m.last_applied.map(|l| l.index).unwrap_or(0),
                }))
            })
            .await
    }

    type SnapshotSaveStream = ReceiverStream<Result<pb::SnapshotChunk, Status>>;

    async fn snapshot_save(
        &self,
        _req: Request<pb::SnapshotSaveRequest>,
    ) -> Result<Response<Self::SnapshotSaveStream>, Status> {
        self.ctx
            .metrics
            .observe("SnapshotSave", async {
                let body = {
                    let d = self.ctx.state.read();
                    d.snapshot_body(&format!("save-{}", d.applied_index()))
                };
                let bytes = crate::raft::state_machine::encode_off_runtime(body)
                    .await
                    .map_err(|e| Status::internal(format!("encoding snapshot: {e}")))?;
                tracing::info!(bytes = bytes.len(), "snapshot save");
                let (tx, rx) = tokio::sync::mpsc::channel(4);
                tokio::spawn(async move {
                    for c in bytes.chunks(CHUNK) {
                        if tx.send(Ok(pb::SnapshotChunk { data: c.to_vec() })).await.is_err() {
                            return;
                        }
                    }
                });
                Ok(Response::new(ReceiverStream::new(rx)))
            })
            .await
    }

    async fn snapshot_restore(
        &self,
        req: Request<Streaming<pb::SnapshotChunk>>,
    ) -> Result<Response<pb::SnapshotRestoreResponse>, Status> {
        self.ctx
            .metrics
            .observe("SnapshotRestore", async {
                let mut stream = req.into_inner();
                let mut bytes = Vec::new();
                while let Some(chunk) = stream.next().await {
                    let chunk = chunk?;
                    if bytes.len() + chunk.data.len() > MAX_RESTORE_BYTES {
                        return Err(Status::resource_exhausted(format!(
                            "snapshot is larger than the {MAX_RESTORE_BYTES} bytes a restore accepts"
                        )));
                    }
                    bytes.extend_from_slice(&chunk.data);
                }
                let body = snapshot_file::decode(&bytes)
                    .map_err(|e| Status::invalid_argument(format!("snapshot: {e}")))?;
                drop(bytes);
                let snapshot_index = body.last_log_id.map(|l| l.index).unwrap_or(0);
                let mut catalog = body.catalog;
                catalog.staged_restore = None;
                let staged = crate::codec::encode(&catalog)
                    .map_err(|e| Status::internal(format!("encoding the restore: {e}")))?;
                drop(catalog);
                let restore_id = uuid::Uuid::new_v4().to_string();
                tracing::info!(bytes = staged.len(), snapshot_index, %restore_id, "snapshot restore");
                // One chunk in flight at a time, so that no two share a log
                // entry; each named, so a retried one is staged once.
                for (n, piece) in staged.chunks(RESTORE_CHUNK_BYTES).enumerate() {
                    let cmd = Command::RestoreChunk {
                        restore_id: restore_id.clone(),
                        offset: (n * RESTORE_CHUNK_BYTES) as u64,
                        data: piece.to_vec(),
                    };
                    let name = Some(format!("{restore_id}/{n}"));
                    match self
                        .ctx
                        .writer
                        .propose_once(name, cmd)
                        .await
                        .map_err(propose_error)?
                    {
                        (_, Outcome::RestoreStaged { .. }) => {}
                        (_, other) => return Err(outcome_error(other)),
                    }
                }
                let name = Some(format!("{restore_id}/commit"));
                let commit = Command::RestoreCommit {
                    restore_id,
                    len: staged.len() as u64,
                    snapshot_index,
                };
                match self
                    .ctx
                    .writer
                    .propose_once(name, commit)
                    .await
                    .map_err(propose_error)?
                {
                    (index, Outcome::Restored) => Ok(Response::new(pb::SnapshotRestoreResponse {
                        index,
                        snapshot_index,
                    })),
                    (_, other) => Err(outcome_error(other)),
                }
            })
            .await
    }
}
