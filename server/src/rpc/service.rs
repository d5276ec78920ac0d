//! The server side of server RPC: decodes each typed message and hands it
//! to the local Raft node or proposer. A message that does not decode is
//! refused with INVALID_ARGUMENT naming the field, before anything sees it;
//! a Raft node that has stopped answers UNAVAILABLE.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::error::{InstallSnapshotError, RaftError};
use tonic::{Request, Response, Status};
use tribune_proto::server as pb;
use tribune_proto::server::server_rpc_server::ServerRpc;

use super::peers::refusal_of;
use crate::codec;
use crate::metrics::Metrics;
use crate::raft::log_store::LogStore;
use crate::raft::proposer::Proposer;
use crate::raft::{NodeId, Raft, wire};

/// When an AppendEntries last arrived: how `cluster::elections` tells a
/// silent leader.
#[derive(Default)]
pub(crate) struct LeaderContact(Mutex<Option<Instant>>);

impl LeaderContact {
    pub(crate) fn touch(&self) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    }

    pub(crate) fn silent_for(&self) -> Option<Duration> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map(|t| t.elapsed())
    }
}

pub(crate) struct ServerRpcService {
    pub(crate) node_name: String,
    pub(crate) raft: Raft,
    pub(crate) proposer: Proposer,
    pub(crate) log: LogStore,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) leader_contact: Arc<LeaderContact>,
}

fn stopped<E>(e: RaftError<NodeId, E>) -> Status
where
    E: std::error::Error,
{
    Status::unavailable(format!("raft: {e}"))
}

#[tonic::async_trait]
impl ServerRpc for ServerRpcService {
    async fn append_entries(
        &self,
        req: Request<pb::AppendEntriesRequest>,
    ) -> Result<Response<pb::AppendEntriesResponse>, Status> {
        let started = Instant::now();
        let rpc = wire::from_append_request(req.get_ref())?;
        self.leader_contact.touch();
        let resp = self.raft.append_entries(rpc).await.map_err(stopped)?;
        self.metrics
            .append_entries_handle_seconds
            .observe(started.elapsed().as_secs_f64());
        Ok(Response::new(wire::append_response(&resp)))
    }

    async fn vote(&self, req: Request<pb::VoteRequest>) -> Result<Response<pb::VoteResponse>, Status> {
        let rpc = wire::from_vote_request(req.get_ref())?;
        // A candidate whose log is behind ours can never win. Refusing it
        // here, before openraft sees it, keeps it from resetting our
        // election timer: openraft 0.9 has no pre-vote, and a server that
        // restarts with a stale log would otherwise delay the election that
        // replaces a dead leader.
        if let Ok(Some(mine)) = self.log.last_log_id()
            && rpc.last_log_id < Some(mine)
        {
            let vote = self.raft.metrics().borrow().vote;
            let resp = openraft::raft::VoteResponse::new(vote, Some(mine), false);
            return Ok(Response::new(wire::vote_response(&resp)));
        }
        let resp = self.raft.vote(rpc).await.map_err(stopped)?;
        Ok(Response::new(wire::vote_response(&resp)))
    }

    async fn install_snapshot(
        &self,
        req: Request<pb::InstallSnapshotRequest>,
    ) -> Result<Response<pb::InstallSnapshotResponse>, Status> {
        let rpc = wire::from_snapshot_request(req.into_inner())?;
        let resp = match self.raft.install_snapshot(rpc).await {
            Ok(r) => Ok(r),
            Err(RaftError::APIError(InstallSnapshotError::SnapshotMismatch(m))) => Err(m),
            Err(e) => return Err(stopped(e)),
        };
        Ok(Response::new(wire::snapshot_response(resp)))
    }

    async fn propose(
        &self,
        req: Request<pb::ProposeRequest>,
    ) -> Result<Response<pb::ProposeResponse>, Status> {
        let cmd = codec::decode(&req.get_ref().command)
            .map_err(|e| Status::invalid_argument(format!("command: {e}")))?;
        use pb::propose_response::Result as R;
        let result = match self.proposer.propose(cmd).await {
            Ok((index, outcome)) => R::Proposed(pb::Proposed {
                index,
                outcome: codec::encode(&outcome).map_err(|e| Status::internal(e.to_string()))?,
            }),
            Err(e) => R::Refused(refusal_of(&e)),
        };
        Ok(Response::new(pb::ProposeResponse { result: Some(result) }))
    }

    async fn read_index(
        &self,
        _req: Request<pb::ReadIndexRequest>,
    ) -> Result<Response<pb::ReadIndexResponse>, Status> {
        use pb::read_index_response::Result as R;
        let result = match crate::raft::read_index(&self.raft).await {
            Ok(i) => R::Index(i),
            Err(e) => R::Error(e),
        };
        Ok(Response::new(pb::ReadIndexResponse { result: Some(result) }))
    }

    async fn status(&self, _req: Request<pb::StatusRequest>) -> Result<Response<pb::StatusResponse>, Status> {
        let initialized = self.raft.is_initialized().await.unwrap_or(false);
        let (leader, applied_index) = {
            let m = self.raft.metrics();
            let m = m.borrow();
            (m.current_leader, m.last_applied.map(|l| l.index).unwrap_or(0))
        };
        Ok(Response::new(pb::StatusResponse {
            node: self.node_name.clone(),
            initialized,
            leader,
            applied_index,
            last_log: self.log.last_log_id().ok().flatten().as_ref().map(wire::log_id),
        }))
    }

    async fn timeout_now(
        &self,
        _req: Request<pb::TimeoutNowRequest>,
    ) -> Result<Response<pb::TimeoutNowResponse>, Status> {
        tracing::info!("asked to take over leadership: campaigning");
        Ok(Response::new(pb::TimeoutNowResponse {
            campaigning: self.raft.trigger().elect().await.is_ok(),
        }))
    }
}
