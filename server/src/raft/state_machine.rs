//! The catalog as openraft's state machine. The catalog lives in memory
//! (`SmData`, shared with readers behind one lock); what makes it durable is
//! the log plus the latest snapshot file, from which a restart rebuilds it.
//! Applying an entry publishes one change set per index to the feed.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{EntryPayload, RaftSnapshotBuilder, SnapshotMeta, StorageIOError};
use tokio::sync::watch;

use super::snapshot_file;
use super::{Entry, LogId, NodeId, ServerNode, StorageError, StoredMembership, TypeConfig};
use crate::catalog::command::Response;
use crate::catalog::feed::{ChangeSet, Feed};
use crate::catalog::{Catalog, Touched};

const SNAPSHOT_FILE: &str = "current.snap";

/// Everything the state machine holds; readers lock it briefly.
pub(crate) struct SmData {
    pub catalog: Catalog,
    pub feed: Feed,
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
}

impl SmData {
    pub(crate) fn applied_index(&self) -> u64 {
        self.last_applied.map(|l| l.index).unwrap_or(0)
    }

    /// A copy of the state to encode as a snapshot file. Copying under the
    /// read lock is quick; encoding a large catalog is not, and a reader
    /// holding the lock that long stalls every writer, and behind a waiting
    /// writer every other reader, heartbeats' tasks included: a five-server
    /// restore that snapshotted under the lock deposed its leader.
    pub(crate) fn snapshot_body(&self, snapshot_id: &str) -> snapshot_file::SnapshotBody {
        snapshot_file::SnapshotBody {
            snapshot_id: snapshot_id.to_string(),
            last_log_id: self.last_applied,
            membership: self.membership.clone(),
            catalog: self.catalog.to_data(),
        }
    }
}

/// Encodes `body` as a snapshot file off the async runtime.
pub(crate) async fn encode_off_runtime(
    body: snapshot_file::SnapshotBody,
) -> Result<Vec<u8>, snapshot_file::SnapshotFileError> {
    tokio::task::spawn_blocking(move || snapshot_file::encode(&body))
        .await
        .map_err(|e| snapshot_file::SnapshotFileError::Body(e.to_string()))?
}

/// The state shared between the state machine and the API.
pub(crate) struct Shared {
    data: RwLock<SmData>,
    applied: watch::Sender<u64>,
}

impl Shared {
    pub(crate) fn read(&self) -> RwLockReadGuard<'_, SmData> {
        // A poisoned lock means a panic mid-apply; the process is going down.
        self.data.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, SmData> {
        self.data.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Follows the applied index (for metrics and read-your-writes waits).
    pub(crate) fn applied(&self) -> watch::Receiver<u64> {
        self.applied.subscribe()
    }
}

#[derive(Clone)]
pub(crate) struct StateMachineStore {
    shared: Arc<Shared>,
    dir: PathBuf,
    snapshot_seq: Arc<std::sync::atomic::AtomicU64>,
    apply_seconds: Option<prometheus_client::metrics::histogram::Histogram>,
}

fn sm_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::<NodeId>::write_state_machine(&e).into()
}

fn snap_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::<NodeId>::read_snapshot(None, &e).into()
}

impl StateMachineStore {
    /// Opens the state machine in `dir`, loading the latest snapshot if any.
    /// `history` bounds the change feed kept for resuming watchers.
    /// Times every apply into `h`.
    pub(crate) fn with_apply_histogram(
        mut self,
        h: prometheus_client::metrics::histogram::Histogram,
    ) -> Self {
        self.apply_seconds = Some(h);
        self
    }

    pub(crate) fn open(dir: &Path, history: usize) -> Result<Self, StorageError> {
        std::fs::create_dir_all(dir).map_err(sm_err)?;
        let path = dir.join(SNAPSHOT_FILE);
        let data = match std::fs::read(&path) {
            Ok(bytes) => {
                let body = snapshot_file::decode(&bytes).map_err(snap_err)?;
                let applied = body.last_log_id.map(|l| l.index).unwrap_or(0);
                SmData {
                    catalog: Catalog::from_data(body.catalog),
                    feed: Feed::new(applied, history),
                    last_applied: body.last_log_id,
                    membership: body.membership,
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => SmData {
                catalog: Catalog::default(),
                feed: Feed::new(0, history),
                last_applied: None,
                membership: StoredMembership::default(),
            },
            Err(e) => return Err(snap_err(e)),
        };
        let (applied, _) = watch::channel(data.applied_index());
        Ok(StateMachineStore {
            shared: Arc::new(Shared {
                data: RwLock::new(data),
                applied,
            }),
            dir: dir.to_path_buf(),
            snapshot_seq: Arc::default(),
            apply_seconds: None,
        })
    }

    pub(crate) fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    fn snapshot_path(&self) -> PathBuf {
        self.dir.join(SNAPSHOT_FILE)
    }

    async fn persist(&self, bytes: Vec<u8>) -> Result<Vec<u8>, StorageError> {
        let path = self.snapshot_path();
        tokio::task::spawn_blocking(move || snapshot_file::write_atomic(&path, &bytes).map(|_| bytes))
            .await
            .map_err(sm_err)?
            .map_err(|e| StorageIOError::<NodeId>::write_snapshot(None, &e).into())
    }
}

/// Resolves what an entry touched into what watchers see at `index`.
fn change_set(catalog: &Catalog, index: u64, t: Touched) -> ChangeSet {
    let upserts: Vec<_> = t
        .instances
        .iter()
        .filter_map(|id| catalog.instance_health(id))
        .collect();
    let mut services: std::collections::BTreeSet<String> = t.removed.values().cloned().collect();
    services.extend(t.removed_destinations);
    for h in &upserts {
        services.insert(h.service.name.clone());
        if let Some(p) = &h.service.proxy {
            services.insert(p.destination_service_name.clone());
        }
    }
    ChangeSet {
        index,
        reset: t.reset,
        mesh: t.mesh,
        services,
        upserts,
        removed: t.removed.into_iter().collect(),
        node_upserts: t.nodes.iter().filter_map(|n| catalog.node(n).cloned()).collect(),
        node_removals: t.removed_nodes.into_iter().collect(),
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let seq = self
            .snapshot_seq
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (body, meta) = {
            let d = self.shared.read();
            let id = match d.last_applied {
                Some(l) => format!("{}-{}-{seq}", l.leader_id.term, l.index),
                None => format!("0-0-{seq}"),
            };
            let meta = SnapshotMeta {
                last_log_id: d.last_applied,
                last_membership: d.membership.clone(),
                snapshot_id: id.clone(),
            };
            (d.snapshot_body(&id), meta)
        };
        let bytes = encode_off_runtime(body).await.map_err(sm_err)?;
        let bytes = self.persist(bytes).await?;
        tracing::info!(snapshot = %meta.snapshot_id, bytes = bytes.len(), "raft snapshot written");
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let d = self.shared.read();
        Ok((d.last_applied, d.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let started = std::time::Instant::now();
        let mut out = Vec::new();
        let last = {
            let mut d = self.shared.write();
            for entry in entries {
                let index = entry.log_id.index;
                d.last_applied = Some(entry.log_id);
                let mut touched = Touched::default();
                let resp = match entry.payload {
                    EntryPayload::Blank => Response::default(),
                    EntryPayload::Normal(req) => Response {
                        outcomes: req
                            .commands
                            .iter()
                            .map(|c| d.catalog.apply(index, c, &mut touched))
                            .collect(),
                    },
                    EntryPayload::Membership(m) => {
                        d.membership = StoredMembership::new(Some(entry.log_id), m);
                        Response::default()
                    }
                };
                let cs = change_set(&d.catalog, index, touched);
                if !cs.is_empty() {
                    d.feed.publish(cs);
                }
                out.push(resp);
            }
            d.applied_index()
        };
        if let Some(h) = &self.apply_seconds {
            h.observe(started.elapsed().as_secs_f64());
        }
        self.shared.applied.send_replace(last);
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, ServerNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let bytes = snapshot.into_inner();
        let body = snapshot_file::decode(&bytes).map_err(snap_err)?;
        let bytes = self.persist(bytes).await?;
        let index = {
            let mut d = self.shared.write();
            d.catalog = Catalog::from_data(body.catalog);
            d.last_applied = meta.last_log_id;
            d.membership = meta.last_membership.clone();
            let index = d.applied_index();
            d.feed.publish(ChangeSet {
                index,
                reset: true,
                ..Default::default()
            });
            index
        };
        self.shared.applied.send_replace(index);
        tracing::info!(snapshot = %meta.snapshot_id, bytes = bytes.len(), "raft snapshot installed");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let bytes = match tokio::fs::read(self.snapshot_path()).await {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(snap_err(e)),
        };
        // openraft wants the metadata; the catalog stays encoded.
        let head = snapshot_file::decode_head(&bytes).map_err(snap_err)?;
        Ok(Some(Snapshot {
            meta: SnapshotMeta {
                last_log_id: head.last_log_id,
                last_membership: head.membership,
                snapshot_id: head.snapshot_id,
            },
            snapshot: Box::new(Cursor::new(bytes)),
        }))
    }
}
