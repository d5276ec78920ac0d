//! What the Raft log carries: batches of catalog commands, and what applying
//! each one produced. Validation of user input happens before a command is
//! proposed (`validate`); what depends on the state (an unknown ID) is decided
//! at apply time, the same way on every replica.

use serde::{Deserialize, Serialize};

use super::mesh::MeshCommand;
use super::model::{CatalogData, Check, Node, Service, Status};

/// One Raft log entry's payload. Several client writes share one entry, and
/// so one fsync (group commit, see `raft::proposer`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Request {
    pub commands: Vec<Command>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Command {
    /// Upserts a node, service instances on it and their checks. The
    /// instances' checks are replaced by `checks`.
    Register(Registration),
    /// Removes an instance, its checks and its sidecar.
    Deregister {
        service_id: String,
    },
    /// Removes a node with every instance and check on it.
    DeregisterNode {
        node: String,
    },
    /// Sets a TTL check's status.
    UpdateTtl {
        check_id: String,
        status: Status,
        output: String,
    },
    /// A check's result, as the agent that runs it saw it (any kind of
    /// check; only changes are sent).
    CheckResult {
        check_id: String,
        status: Status,
        output: String,
    },
    /// CA and intentions.
    Mesh(MeshCommand),
    /// A write the client named: applied once, however often it is retried
    /// (the outcome of the first time is returned again).
    Once {
        request_id: String,
        cmd: Box<Command>,
    },
    /// Replaces the whole catalog (snapshot restore). Entities keep the
    /// indexes they had in the snapshot. Written by older builds only: a
    /// restore now travels as `RestoreChunk`s and a `RestoreCommit`, since
    /// one entry the size of the catalog does not fit a Raft message.
    Restore {
        data: Box<CatalogData>,
        snapshot_index: u64,
    },
    /// One piece of a restore's catalog (a `codec` record of
    /// [`CatalogData`]), staged until its commit. Offset 0 starts a new
    /// restore and drops any unfinished one.
    RestoreChunk {
        restore_id: String,
        offset: u64,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// Replaces the catalog with the staged restore `restore_id`, which
    /// must hold exactly `len` bytes.
    RestoreCommit {
        restore_id: String,
        len: u64,
        snapshot_index: u64,
    },
    /// Tokens and policies. (Variants are only ever added at the end:
    /// older records name the others by position.)
    Acl(super::acl::AclCommand),
    Peering(super::peering::PeeringCommand),
}

impl Request {
    /// Roughly what the request occupies, for caches bounded in bytes: a
    /// restore chunk is its data, anything else a few hundred bytes.
    pub(crate) fn approx_bytes(&self) -> usize {
        fn one(c: &Command) -> usize {
            match c {
                Command::RestoreChunk { data, .. } => data.len() + 64,
                Command::Once { cmd, .. } => one(cmd) + 48,
                _ => 256,
            }
        }
        self.commands.iter().map(one).sum::<usize>().max(64)
    }
}

/// Entities carry index 0 here; apply stamps them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Registration {
    pub node: Node,
    /// The main instance first, then its sidecar when there is one.
    pub services: Vec<Service>,
    pub checks: Vec<Check>,
    /// IDs of instances this registration replaces entirely (a sidecar that
    /// is no longer asked for).
    pub remove: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Response {
    /// One per command, in order.
    pub outcomes: Vec<Outcome>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Outcome {
    Registered {
        check_ids: Vec<String>,
    },
    Deregistered {
        removed_ids: Vec<String>,
    },
    TtlUpdated,
    Restored,
    MeshUpdated,
    NotFound {
        what: String,
    },
    Invalid {
        field: String,
        message: String,
    },
    /// A restore chunk was staged; the restore holds `staged` bytes so far.
    RestoreStaged {
        staged: u64,
    },
    AclUpdated,
    PeeringUpdated,
}
