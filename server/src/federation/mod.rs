//! Several datacenters as one federation: the WAN gossip pool of servers
//! (`wan.rs`: who is in which datacenter, nearest first), requests for
//! another datacenter, forwarded to a server there (`forward.rs`), what a
//! secondary copies from the primary (`primary.rs`, `replication.rs`,
//! `ca.rs`, `acl.rs`), and every datacenter's copy of the others' meshes, which their
//! gateways and sidecars route to (`remote_mesh.rs`).
//!
//! Each datacenter keeps its own catalog and Raft. A request names its
//! datacenter in gRPC metadata, and the forwarding layer decides before any
//! service sees it, so every service, stream and future method is
//! forwarded the same way. What is copied from elsewhere enters the local
//! state only as a Raft write of the local leader.

pub(crate) mod acl;
pub(crate) mod ca;
pub(crate) mod forward;
pub(crate) mod primary;
pub(crate) mod remote_mesh;
pub(crate) mod replication;
pub(crate) mod wan;
