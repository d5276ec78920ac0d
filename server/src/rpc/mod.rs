//! Server RPC on the server port (`tribune.server.v1.ServerRpc`): the
//! typed client every server uses to call another (`peers`), openraft's
//! network on top of it (`raft_network`), and the service that answers
//! (`service`). Conversions between openraft and protobuf live in
//! `raft::wire`, the record format of opaque payloads in `raft::codec`.

pub(crate) mod peers;
pub(crate) mod raft_network;
pub(crate) mod service;

/// Server RPC messages may be large (snapshot chunks, batches of entries).
pub(crate) const MAX_MESSAGE: usize = 64 * 1024 * 1024;
