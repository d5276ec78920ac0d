//! The Raft log and vote on redb. Appends and votes commit with
//! `Durability::Immediate` (fsync) before openraft hears they are done, so a
//! write is acknowledged only once it is on disk. Records are in the
//! versioned binary format of `codec`.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{RaftLogReader, StorageIOError, Vote};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Entry, LogId, NodeId, StorageError, TypeConfig};

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");

const KEY_VOTE: &str = "vote";
const KEY_PURGED: &str = "last_purged";
const KEY_COMMITTED: &str = "committed";

/// Entries kept in memory after they are written: the state machine
/// applies them right after the append, and followers are sent recent ones,
/// so neither reads them back from disk or decodes them again. Bounded by
/// count and by encoded size (a restore's chunks are large).
const CACHE_ENTRIES: usize = 256;
const CACHE_BYTES: usize = 16 * 1024 * 1024;
/// redb's own page cache: reads are mostly served from the entry cache.
const REDB_CACHE_BYTES: usize = 32 * 1024 * 1024;

/// The newest entries, contiguous up to the last one written.
#[derive(Default)]
struct Recent {
    entries: std::collections::BTreeMap<u64, (Entry, usize)>,
    bytes: usize,
}

impl Recent {
    fn insert(&mut self, e: Entry, size: usize) {
        if let Some((_, old)) = self.entries.insert(e.log_id.index, (e, size)) {
            self.bytes -= old;
        }
        self.bytes += size;
        while self.entries.len() > CACHE_ENTRIES || (self.bytes > CACHE_BYTES && self.entries.len() > 1) {
            if let Some((_, (_, s))) = self.entries.pop_first() {
                self.bytes -= s;
            }
        }
    }

    fn retain(&mut self, keep: impl Fn(u64) -> bool) {
        let bytes = &mut self.bytes;
        self.entries.retain(|k, (_, s)| {
            let k = keep(*k);
            if !k {
                *bytes -= *s;
            }
            k
        });
    }
}

#[derive(Clone)]
pub(crate) struct LogStore {
    db: Arc<Database>,
    recent: Arc<std::sync::Mutex<Recent>>,
    /// The committed log id openraft last reported, written with the next
    /// append: a restarted server then re-applies its log up to there
    /// before it serves, instead of waiting for a new leader's commit.
    committed: Arc<std::sync::Mutex<Option<LogId>>>,
    append_seconds: Option<prometheus_client::metrics::histogram::Histogram>,
}

fn io_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::<NodeId>::write_logs(&e).into()
}

fn read_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::<NodeId>::read_logs(&e).into()
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, StorageError> {
    crate::codec::encode(v).map_err(io_err)
}

fn decode<T: DeserializeOwned>(b: &[u8]) -> Result<T, StorageError> {
    crate::codec::decode(b).map_err(read_err)
}

impl LogStore {
    /// Opens (or creates) `raft.redb` in `dir`.
    pub(crate) fn open(dir: &Path) -> Result<Self, StorageError> {
        let db = redb::Builder::new()
            .set_cache_size(REDB_CACHE_BYTES)
            .create(dir.join("raft.redb"))
            .map_err(io_err)?;
        let tx = db.begin_write().map_err(io_err)?;
        {
            tx.open_table(LOG).map_err(io_err)?;
            tx.open_table(META).map_err(io_err)?;
        }
        tx.commit().map_err(io_err)?;
        Ok(LogStore {
            db: Arc::new(db),
            recent: Arc::default(),
            committed: Arc::default(),
            append_seconds: None,
        })
    }

    /// Times every append (fsync included) into `h`.
    pub(crate) fn with_append_histogram(
        mut self,
        h: prometheus_client::metrics::histogram::Histogram,
    ) -> Self {
        self.append_seconds = Some(h);
        self
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, Recent> {
        self.recent.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn meta<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StorageError> {
        let tx = self.db.begin_read().map_err(read_err)?;
        let t = tx.open_table(META).map_err(read_err)?;
        match t.get(key).map_err(read_err)? {
            Some(v) => Ok(Some(decode(v.value())?)),
            None => Ok(None),
        }
    }

    /// Runs a write transaction off the async runtime; `durable` = fsync.
    async fn write<F>(&self, durable: bool, f: F) -> Result<(), StorageError>
    where
        F: FnOnce(&redb::WriteTransaction) -> Result<(), StorageError> + Send + 'static,
    {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let mut tx = db.begin_write().map_err(io_err)?;
            tx.set_durability(if durable {
                Durability::Immediate
            } else {
                Durability::None
            })
            .map_err(io_err)?;
            f(&tx)?;
            tx.commit().map_err(io_err)
        })
        .await
        .map_err(io_err)?
    }

    async fn put_meta<T: Serialize>(
        &self,
        key: &'static str,
        v: &T,
        durable: bool,
    ) -> Result<(), StorageError> {
        let bytes = encode(v)?;
        self.write(durable, move |tx| {
            let mut t = tx.open_table(META).map_err(io_err)?;
            t.insert(key, bytes.as_slice()).map_err(io_err)?;
            Ok(())
        })
        .await
    }

    /// The last log id this server holds (the newest entry, or what was
    /// purged into a snapshot).
    pub(crate) fn last_log_id(&self) -> Result<Option<LogId>, StorageError> {
        if let Some((_, (e, _))) = self.cache().entries.last_key_value() {
            return Ok(Some(e.log_id));
        }
        let purged: Option<LogId> = self.meta(KEY_PURGED)?;
        Ok(self.last_entry_log_id()?.or(purged))
    }

    fn last_entry_log_id(&self) -> Result<Option<LogId>, StorageError> {
        let tx = self.db.begin_read().map_err(read_err)?;
        let t = tx.open_table(LOG).map_err(read_err)?;
        match t.last().map_err(read_err)? {
            Some((_, v)) => {
                let e: Entry = decode(v.value())?;
                Ok(Some(e.log_id))
            }
            None => Ok(None),
        }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(&s) => s,
            Bound::Excluded(&s) => s.saturating_add(1),
            Bound::Unbounded => 0,
        };
        {
            let cache = self.cache();
            if cache
                .entries
                .first_key_value()
                .is_some_and(|(first, _)| *first <= start)
            {
                return Ok(cache
                    .entries
                    .range(start..)
                    .take_while(|(k, _)| range.contains(*k))
                    .map(|(_, (e, _))| e.clone())
                    .collect());
            }
        }
        let tx = self.db.begin_read().map_err(read_err)?;
        let t = tx.open_table(LOG).map_err(read_err)?;
        let mut out = Vec::new();
        for item in t.range(start..).map_err(read_err)? {
            let (k, v) = item.map_err(read_err)?;
            if !range.contains(&k.value()) {
                break;
            }
            out.push(decode(v.value())?);
        }
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id: Option<LogId> = self.meta(KEY_PURGED)?;
        let last_log_id = self.last_entry_log_id()?.or(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        *self.committed.lock().unwrap_or_else(|e| e.into_inner()) = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        self.meta(KEY_COMMITTED)
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        self.put_meta(KEY_VOTE, vote, true).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        self.meta(KEY_VOTE)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let records = entries
            .iter()
            .map(|e| Ok((e.log_id.index, encode(e)?)))
            .collect::<Result<Vec<_>, StorageError>>()?;
        let sizes: Vec<usize> = records.iter().map(|(_, r)| r.len()).collect();
        // Only ever an entry that is already durable: committed entries
        // were appended (and fsynced) before.
        let committed = match *self.committed.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(c) => Some(encode(&c)?),
            None => None,
        };
        let started = std::time::Instant::now();
        let res = self
            .write(true, move |tx| {
                let mut t = tx.open_table(LOG).map_err(io_err)?;
                for (i, r) in &records {
                    t.insert(*i, r.as_slice()).map_err(io_err)?;
                }
                if let Some(c) = &committed {
                    let mut m = tx.open_table(META).map_err(io_err)?;
                    m.insert(KEY_COMMITTED, c.as_slice()).map_err(io_err)?;
                }
                Ok(())
            })
            .await;
        if let Some(h) = &self.append_seconds {
            h.observe(started.elapsed().as_secs_f64());
        }
        match res {
            Ok(()) => {
                {
                    let mut cache = self.cache();
                    for (e, size) in entries.into_iter().zip(sizes) {
                        cache.insert(e, size);
                    }
                }
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(e)
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // The cache never holds what the disk does not: drop first.
        self.cache().retain(|k| k < log_id.index);
        self.write(true, move |tx| {
            let mut t = tx.open_table(LOG).map_err(io_err)?;
            t.retain_in(log_id.index.., |_, _| false).map_err(io_err)?;
            Ok(())
        })
        .await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.cache().retain(|k| k > log_id.index);
        let purged = encode(&log_id)?;
        // Purged entries are already in a snapshot; losing this commit in a
        // crash only brings them back, together with the old purge marker.
        self.write(false, move |tx| {
            let mut m = tx.open_table(META).map_err(io_err)?;
            m.insert(KEY_PURGED, purged.as_slice()).map_err(io_err)?;
            let mut t = tx.open_table(LOG).map_err(io_err)?;
            t.retain_in(..=log_id.index, |_, _| false).map_err(io_err)?;
            Ok(())
        })
        .await
    }
}
