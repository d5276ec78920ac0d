//! Several servers as one datacenter: finding each other through gossip and
//! bootstrapping Raft exactly once, forwarding writes and read-index
//! requests to the leader, autopilot (servers join as learners, then vote;
//! dead ones can be removed), and handing leadership over on shutdown.

pub(crate) mod autopilot;
pub(crate) mod bootstrap;
pub(crate) mod elections;
pub(crate) mod node_health;
pub(crate) mod transfer;
