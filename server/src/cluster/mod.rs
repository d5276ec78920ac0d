//! Several servers as one datacenter: finding each other through gossip and
//! bootstrapping Raft exactly once, forwarding writes and read-index
//! requests to the leader, autopilot (servers join as learners, then vote;
//! dead ones can be removed), and handing leadership over on shutdown.

pub mod autopilot;
pub mod bootstrap;
pub mod elections;
pub mod node_health;
pub mod peers;
pub mod transfer;

use serde::{Deserialize, Serialize};

/// What `Raft/Status` answers.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RaftStatus {
    pub node: String,
    pub initialized: bool,
    pub leader: Option<u64>,
    pub applied_index: u64,
    /// The last entry in this server's log (absent from older servers).
    #[serde(default)]
    pub last_log: Option<crate::raft::LogId>,
}
