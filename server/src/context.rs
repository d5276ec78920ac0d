//! What every request handler of a server agent shares: its identity, Raft,
//! the proposer, the state machine's data and the metrics.

use std::sync::Arc;

use crate::catalog::command::{Command, Outcome};
use crate::mesh::MeshSettings;
use crate::mesh::leaves::LeafCache;
use crate::metrics::Metrics;
use crate::raft::proposer::{ProposeError, Proposer};
use crate::raft::state_machine::Shared;
use crate::raft::{NodeId, Raft};

pub struct ServerContext {
    pub node_name: String,
    pub node_id: NodeId,
    pub datacenter: String,
    /// The address this agent's node is registered with.
    pub advertise_ip: String,
    pub grpc_addr: String,
    pub http_addr: String,
    pub raft_addr: String,
    pub data_dir: String,
    pub raft: Raft,
    pub proposer: Proposer,
    pub state: Arc<Shared>,
    pub metrics: Arc<Metrics>,
    pub mesh: MeshSettings,
    pub leaves: LeafCache,
    /// Open ADS streams and their ACK/NACK state.
    pub xds_streams: Arc<crate::mesh::status::StreamRegistry>,
}

impl ServerContext {
    pub async fn propose(&self, cmd: Command) -> Result<(u64, Outcome), ProposeError> {
        self.proposer.propose(cmd).await
    }

    /// The current leader as openraft sees it.
    pub fn leader(&self) -> Option<crate::raft::ServerNode> {
        let m = self.raft.metrics().borrow().clone();
        let id = m.current_leader?;
        m.membership_config.membership().get_node(&id).cloned()
    }
}
