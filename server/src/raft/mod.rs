//! Raft, on openraft 0.9 (the stable `storage-v2` trait set): the type
//! configuration, the log store (raft-log's WAL), the catalog state machine, the gRPC
//! transport between servers, and the proposer that batches client writes.

// openraft's StorageError (224 bytes) is what its storage traits return;
// boxing it in our helpers would only move the copy.
#![allow(clippy::result_large_err)]

mod legacy_redb;
pub(crate) mod log_store;
pub(crate) mod proposer;
mod records;
pub(crate) mod snapshot_file;
pub(crate) mod state_machine;
pub(crate) mod wire;

use std::fmt;
use std::io::Cursor;

use serde::{Deserialize, Serialize};

use crate::catalog::command::{Request, Response};

/// A server as Raft knows it: its name and where to reach it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ServerNode {
    pub name: String,
    /// Server RPC address (Raft), `IP:PORT`.
    pub raft_addr: String,
    /// gRPC API address, `IP:PORT`.
    pub grpc_addr: String,
}

impl fmt::Display for ServerNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.raft_addr)
    }
}

openraft::declare_raft_types!(
    /// Tribune's Raft: catalog command batches in, per-command outcomes out.
    pub(crate) TypeConfig:
        D = Request,
        R = Response,
        NodeId = u64,
        Node = ServerNode,
        SnapshotData = Cursor<Vec<u8>>,
);

pub(crate) type NodeId = u64;
pub(crate) type Raft = openraft::Raft<TypeConfig>;
pub(crate) type LogId = openraft::LogId<NodeId>;
pub(crate) type StorageError = openraft::StorageError<NodeId>;
pub(crate) type StoredMembership = openraft::StoredMembership<NodeId, ServerNode>;
pub(crate) type Entry = openraft::Entry<TypeConfig>;

/// The index a linearizable read must wait for: the leader confirms its
/// leadership with a quorum, and the read waits for everything the leader
/// holds, not only what openraft counts as committed. A leader restored from
/// its vote after a restart does not know its commit index yet, and openraft
/// 0.9's read index would then point at an old entry.
pub(crate) async fn read_index(raft: &Raft) -> Result<u64, String> {
    let confirmed = raft
        .ensure_linearizable()
        .await
        .map_err(|e| format!("leadership could not be confirmed: {e}"))?
        .map(|l| l.index)
        .unwrap_or(0);
    let last = raft.metrics().borrow().last_log_index.unwrap_or(0);
    Ok(confirmed.max(last))
}

/// A stable numeric Raft ID for a node name (FNV-1a), so every server derives
/// the same ID for a peer from its name alone.
pub(crate) fn node_id_for(name: &str) -> NodeId {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // Raft IDs are shown to operators; keep them positive in signed views too.
    h >> 1
}

/// After a restore, takes a snapshot at once and purges the log up to it:
/// the restore's chunks then leave the log (and memory) instead of waiting
/// for the next scheduled snapshot, and a restart loads the restored catalog
/// from one file instead of replaying the chunks. A reset that came with an
/// installed snapshot is already one.
pub(crate) async fn compact_after_restore(raft: Raft, state: std::sync::Arc<state_machine::Shared>) {
    let mut feed = state.read().feed.subscribe();
    loop {
        match feed.recv().await {
            Ok(cs) if cs.reset => {
                let snapshot = raft.metrics().borrow().snapshot.map(|l| l.index);
                if snapshot < Some(cs.index) {
                    tracing::info!(index = cs.index, "catalog restored: taking a snapshot");
                    if let Err(e) = raft.trigger().snapshot().await {
                        tracing::warn!(error = %e, "could not take a snapshot after the restore");
                        continue;
                    }
                }
                purge_when_snapshotted(&raft, cs.index).await;
            }
            Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Purges the log up to `index` once a snapshot covers it (a follower that
/// still needs those entries gets the snapshot instead).
async fn purge_when_snapshotted(raft: &Raft, index: u64) {
    let mut metrics = raft.metrics();
    let covered = tokio::time::timeout(std::time::Duration::from_secs(60), async {
        metrics
            .wait_for(|m| m.snapshot.is_some_and(|l| l.index >= index))
            .await
            .is_ok()
    })
    .await;
    if covered != Ok(true) {
        tracing::warn!(
            index,
            "no snapshot covers the restore yet: its entries stay in the log"
        );
        return;
    }
    if let Err(e) = raft.trigger().purge_log(index).await {
        tracing::warn!(error = %e, "could not purge the restore's entries from the log");
    }
}

#[cfg(test)]
mod storage_suite {
    //! openraft's own storage conformance suite, run against our WAL log
    //! store and catalog state machine.

    use openraft::testing::{StoreBuilder, Suite};

    use super::log_store::LogStore;
    use super::state_machine::StateMachineStore;
    use super::{StorageError, TypeConfig};

    struct Builder;

    impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, tempfile::TempDir> for Builder {
        async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachineStore), StorageError> {
            let dir = tempfile::tempdir().map_err(|e| openraft::StorageIOError::write(&e))?;
            let log = LogStore::open(dir.path())?;
            let sm = StateMachineStore::open(&dir.path().join("snapshots"), 1024)?;
            Ok((dir, log, sm))
        }
    }

    #[test]
    fn openraft_storage_suite() -> Result<(), StorageError> {
        Suite::test_all(Builder)
    }
}
