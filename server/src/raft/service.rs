//! The server side of Raft between servers (`tribune.raft.v1.Raft` on the
//! server port): decodes openraft messages and hands them to the local node.
//! Only servers of the datacenter should reach this port.

use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::{Request, Response, Status};
use tribune_proto::raft::RaftPayload;
use tribune_proto::raft::raft_server;

use std::sync::Arc;

use super::Raft;
use super::log_store::LogStore;
use crate::catalog::command::{Command, Outcome};
use crate::cluster::RaftStatus;
use crate::context::ServerContext;
use crate::raft::proposer::ProposeError;

pub struct RaftService {
    raft: Raft,
    ctx: Arc<ServerContext>,
    log: LogStore,
}

impl RaftService {
    pub fn new(ctx: Arc<ServerContext>, log: LogStore) -> Self {
        RaftService {
            raft: ctx.raft.clone(),
            ctx,
            log,
        }
    }
}

fn decode<T: DeserializeOwned>(req: Request<RaftPayload>) -> Result<T, Status> {
    decode_data(&req.into_inner().data)
}

fn decode_data<T: DeserializeOwned>(data: &[u8]) -> Result<T, Status> {
    serde_json::from_slice(data)
        .map_err(|e| Status::invalid_argument(format!("data: not a raft message: {e}")))
}

fn encode<T: Serialize>(v: &T) -> Result<Response<RaftPayload>, Status> {
    serde_json::to_vec(v)
        .map(|data| {
            Response::new(RaftPayload {
                data,
                chunk: Vec::new(),
            })
        })
        .map_err(|e| Status::internal(format!("encoding raft reply: {e}")))
}

#[tonic::async_trait]
impl raft_server::Raft for RaftService {
    async fn append_entries(&self, req: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let started = std::time::Instant::now();
        self.ctx.leader_contact.touch();
        let rpc = decode(req)?;
        let reply = encode(&self.raft.append_entries(rpc).await);
        self.ctx
            .metrics
            .append_entries_handle_seconds
            .observe(started.elapsed().as_secs_f64());
        reply
    }

    async fn vote(&self, req: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let rpc: openraft::raft::VoteRequest<u64> = decode(req)?;
        // A candidate whose log is behind ours can never win. Refusing it
        // here, before openraft sees it, keeps it from resetting our
        // election timer: openraft 0.9 has no pre-vote, and a server that
        // restarts with a stale log would otherwise delay the election that
        // replaces a dead leader.
        if let Ok(Some(mine)) = self.log.last_log_id()
            && rpc.last_log_id < Some(mine)
        {
            let vote = self.raft.metrics().borrow().vote;
            let resp: Result<openraft::raft::VoteResponse<u64>, openraft::error::RaftError<u64>> =
                Ok(openraft::raft::VoteResponse::new(vote, Some(mine), false));
            return encode(&resp);
        }
        encode(&self.raft.vote(rpc).await)
    }

    async fn install_snapshot(&self, req: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let payload = req.into_inner();
        let mut rpc: openraft::raft::InstallSnapshotRequest<super::TypeConfig> = decode_data(&payload.data)?;
        // The chunk travels raw beside the request (see `network.rs`).
        if !payload.chunk.is_empty() {
            rpc.data = payload.chunk;
        }
        encode(&self.raft.install_snapshot(rpc).await)
    }

    /// Only the leader's own proposer: a forwarded write is never forwarded again.
    async fn propose(&self, req: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let cmd: Command = decode(req)?;
        let res: Result<(u64, Outcome), ProposeError> = self.ctx.proposer.propose(cmd).await;
        encode(&res)
    }

    async fn read_index(&self, _req: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        encode(&super::read_index(&self.raft).await)
    }

    async fn status(&self, _req: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let initialized = self.raft.is_initialized().await.unwrap_or(false);
        let m = self.raft.metrics().borrow().clone();
        encode(&RaftStatus {
            node: self.ctx.node_name.clone(),
            initialized,
            leader: m.current_leader,
            applied_index: m.last_applied.map(|l| l.index).unwrap_or(0),
            last_log: self.log.last_log_id().ok().flatten(),
        })
    }

    async fn timeout_now(&self, _req: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        tracing::info!("asked to take over leadership: campaigning");
        encode(&self.raft.trigger().elect().await.is_ok())
    }
}
