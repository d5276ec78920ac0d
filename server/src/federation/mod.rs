//! Several datacenters as one federation: the WAN gossip pool of servers
//! (`wan.rs`: who is in which datacenter, nearest first) and requests for
//! another datacenter, forwarded to a server there (`forward.rs`).
//!
//! Each datacenter keeps its own catalog and Raft; nothing here writes to
//! the local state. A request names its datacenter in gRPC metadata, and
//! the forwarding layer decides before any service sees it, so every
//! service, stream and future method is forwarded the same way.

pub(crate) mod forward;
pub(crate) mod primary;
pub(crate) mod replication;
pub(crate) mod wan;
