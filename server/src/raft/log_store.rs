//! The Raft log, vote and committed marker in `raft-log`, a segmented
//! write-ahead log built for Raft (`<data-dir>/raft-log/`). An append
//! returns once its records are buffered and readable; openraft hears that
//! they are durable only from the flush callback, after the fsync, so a
//! write is acknowledged only once it is on disk (openraft 0.9 waits for
//! that callback before it replicates or answers a leader). Votes and
//! truncations wait for their fsync before they return. Entries are
//! records of `codec` inside the WAL's checksummed frames.
//!
//! A data directory of an older build keeps its log in `raft.redb`; it is
//! imported once when the server opens it (`legacy_redb`).

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{CommittedLeaderId, RaftLogReader, StorageIOError, Vote};
use prometheus_client::metrics::histogram::Histogram;
use raft_log::api::raft_log_writer::RaftLogWriter;
use raft_log::codeq::{Decode, Encode};
use raft_log::{RaftLog, Types};

use super::{Entry, LogId, NodeId, StorageError, TypeConfig};

/// The WAL's directory inside the data directory.
pub(crate) const WAL_DIR: &str = "raft-log";

/// A chunk file closes at this size. Entries of the open chunk stay in
/// memory (raft-log evicts only what a closed chunk holds), so this bounds
/// that part of the cache.
const CHUNK_BYTES: usize = 4 * 1024 * 1024;
/// Entries kept in memory beyond the open chunk: the state machine
/// applies right after the append and followers are sent recent entries,
/// so neither reads them back from disk or decodes them again. Bounded in
/// bytes too: a server restarted with a restore's 1 MiB chunks still in
/// its log replays them into this cache, and holds what it keeps.
const CACHE_ENTRIES: usize = 4096;
const CACHE_BYTES: usize = 8 * 1024 * 1024;

/// `raft-log`'s type parameters for Tribune's log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Wal;

impl Types for Wal {
    type LogId = WalLogId;
    type LogPayload = Stored;
    type Vote = WalVote;
    type UserData = ();
    type Callback = Flushed;

    fn log_index(log_id: &WalLogId) -> u64 {
        log_id.0.index
    }

    fn payload_size(payload: &Stored) -> u64 {
        payload.approx_bytes
    }
}

/// openraft's log ID, ordered by index first: the WAL compares only IDs of
/// one log, where index order is log order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WalLogId(LogId);

impl From<LogId> for WalLogId {
    fn from(l: LogId) -> Self {
        WalLogId(l)
    }
}

impl Ord for WalLogId {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        let key = |l: &LogId| (l.index, l.leader_id.term, l.leader_id.node_id);
        key(&self.0).cmp(&key(&other.0))
    }
}

impl PartialOrd for WalLogId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Encode for WalLogId {
    fn encode<W: io::Write>(&self, mut w: W) -> io::Result<usize> {
        let l = &self.0;
        Ok(
            l.leader_id.term.encode(&mut w)?
                + l.leader_id.node_id.encode(&mut w)?
                + l.index.encode(&mut w)?,
        )
    }
}

impl Decode for WalLogId {
    fn decode<R: io::Read>(mut r: R) -> io::Result<Self> {
        let term = u64::decode(&mut r)?;
        let node = u64::decode(&mut r)?;
        let index = u64::decode(&mut r)?;
        Ok(WalLogId(LogId::new(CommittedLeaderId::new(term, node), index)))
    }
}

/// openraft's vote, in openraft's own (partial) order: the WAL refuses a
/// vote that goes back, as openraft never saves one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd)]
pub(crate) struct WalVote(Vote<NodeId>);

impl From<Vote<NodeId>> for WalVote {
    fn from(v: Vote<NodeId>) -> Self {
        WalVote(v)
    }
}

impl Encode for WalVote {
    fn encode<W: io::Write>(&self, mut w: W) -> io::Result<usize> {
        let v = &self.0;
        Ok(v.leader_id.term.encode(&mut w)?
            + v.leader_id.node_id.encode(&mut w)?
            + u8::from(v.committed).encode(&mut w)?)
    }
}

impl Decode for WalVote {
    fn decode<R: io::Read>(mut r: R) -> io::Result<Self> {
        let term = u64::decode(&mut r)?;
        let node = u64::decode(&mut r)?;
        let committed = u8::decode(&mut r)? != 0;
        let mut vote = Vote::new(term, node);
        vote.committed = committed;
        Ok(WalVote(vote))
    }
}

/// An entry as the WAL keeps it: decoded once, shared by the cache and its
/// readers; on disk a `codec` record.
#[derive(Debug, Clone)]
pub(crate) struct Stored {
    entry: Arc<Entry>,
    /// What the entry costs the cache, without encoding it twice.
    approx_bytes: u64,
}

impl From<Entry> for Stored {
    fn from(entry: Entry) -> Self {
        let approx_bytes = match &entry.payload {
            openraft::EntryPayload::Normal(req) => req.approx_bytes() as u64,
            _ => 256,
        };
        Stored {
            entry: Arc::new(entry),
            approx_bytes,
        }
    }
}

impl Encode for Stored {
    fn encode<W: io::Write>(&self, w: W) -> io::Result<usize> {
        crate::codec::encode(&*self.entry)
            .map_err(io::Error::other)?
            .encode(w)
    }
}

impl Decode for Stored {
    fn decode<R: io::Read>(r: R) -> io::Result<Self> {
        let bytes = Vec::<u8>::decode(r)?;
        let entry: Entry =
            crate::codec::decode(&bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        let mut s = Stored::from(entry);
        s.approx_bytes = bytes.len() as u64;
        Ok(s)
    }
}

/// What the WAL's flush worker calls once a flush is on disk.
pub(crate) enum Flushed {
    /// An append: tell openraft, and time it.
    Append {
        done: LogFlushed<TypeConfig>,
        started: Instant,
        seconds: Option<Histogram>,
    },
    /// A caller that waits (votes, truncation, the import).
    Wait(std::sync::mpsc::SyncSender<io::Result<()>>),
}

impl raft_log::Callback for Flushed {
    fn send(self, res: io::Result<()>) {
        match self {
            Flushed::Append {
                done,
                started,
                seconds,
            } => {
                if let Some(h) = seconds {
                    h.observe(started.elapsed().as_secs_f64());
                }
                done.log_io_completed(res);
            }
            Flushed::Wait(tx) => {
                // A waiter that gave up is not an error of the flush.
                let _ = std::sync::mpsc::SyncSender::send(&tx, res);
            }
        }
    }
}

#[derive(Clone)]
pub(crate) struct LogStore {
    wal: Arc<Mutex<RaftLog<Wal>>>,
    append_seconds: Option<Histogram>,
}

fn write_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::<NodeId>::write_logs(&e).into()
}

fn read_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::<NodeId>::read_logs(&e).into()
}

/// Opens the WAL in `dir` with Tribune's settings.
pub(crate) fn open_wal(dir: &Path) -> io::Result<RaftLog<Wal>> {
    let mut config = raft_log::Config::new(dir.display());
    config.wal.chunk_max_size = Some(CHUNK_BYTES);
    // raft-log's flush worker would wait up to 1 ms to gather more flushes
    // into one fsync; appends already come in batches (group commit), so
    // that wait is only latency.
    config.wal.flush_batch_wait = Some(Duration::ZERO);
    config.log_cache_max_items = Some(CACHE_ENTRIES);
    config.log_cache_capacity = Some(CACHE_BYTES);
    RaftLog::open(Arc::new(config))
}

/// The log holds the CA's keys: its directory is the owner's alone.
pub(crate) fn create_private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// Flushes with fsync and waits for it.
pub(crate) fn flush_and_wait(wal: &mut RaftLog<Wal>) -> io::Result<()> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    wal.flush(true, Some(Flushed::Wait(tx)))?;
    rx.recv()
        .map_err(|_| io::Error::other("the WAL's flush worker stopped"))?
}

impl LogStore {
    /// Opens (or creates) the log in `data_dir`, importing an older
    /// build's `raft.redb` the first time.
    pub(crate) fn open(data_dir: &Path) -> Result<Self, StorageError> {
        let dir = data_dir.join(WAL_DIR);
        if !dir.exists() {
            super::legacy_redb::import_if_present(data_dir, &dir).map_err(write_err)?;
        }
        create_private_dir(&dir).map_err(write_err)?;
        let wal = open_wal(&dir).map_err(read_err)?;
        Ok(LogStore {
            wal: Arc::new(Mutex::new(wal)),
            append_seconds: None,
        })
    }

    /// Times every append, from the call to its fsync, into `h`.
    pub(crate) fn with_append_histogram(mut self, h: Histogram) -> Self {
        self.append_seconds = Some(h);
        self
    }

    fn wal(&self) -> MutexGuard<'_, RaftLog<Wal>> {
        self.wal.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The last log id this server holds (the newest entry, or what was
    /// purged into a snapshot).
    pub(crate) fn last_log_id(&self) -> Result<Option<LogId>, StorageError> {
        Ok(self.wal().log_state().last().map(|l| l.0))
    }

    /// Runs `f` on the WAL, then fsyncs and waits, off the async runtime.
    async fn durably<F>(&self, f: F) -> Result<(), StorageError>
    where
        F: FnOnce(&mut RaftLog<Wal>) -> io::Result<()> + Send + 'static,
    {
        let wal = self.wal.clone();
        tokio::task::spawn_blocking(move || {
            let mut wal = wal.lock().unwrap_or_else(|e| e.into_inner());
            f(&mut wal)?;
            flush_and_wait(&mut wal)
        })
        .await
        .map_err(write_err)?
        .map_err(write_err)
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
        let end = match range.end_bound() {
            Bound::Included(&e) => e.saturating_add(1),
            Bound::Excluded(&e) => e,
            Bound::Unbounded => u64::MAX,
        };
        let wal = self.wal();
        wal.read(start, end)
            .map(|r| r.map(|(_, s)| Entry::clone(&s.entry)).map_err(read_err))
            .collect()
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let wal = self.wal();
        let state = wal.log_state();
        Ok(LogState {
            last_purged_log_id: state.purged().map(|l| l.0),
            last_log_id: state.last().map(|l| l.0),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    /// Written without an fsync of its own: the next append's carries it.
    /// A restarted server re-applies its log up to here before it serves,
    /// instead of waiting for a new leader's commit.
    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        let Some(c) = committed.map(WalLogId) else {
            return Ok(());
        };
        let mut wal = self.wal();
        let state = wal.log_state();
        // The marker is an optimisation; one the WAL would refuse (behind
        // what it holds, or past its last entry while a snapshot is being
        // installed) is skipped, never an error that stops Raft.
        let refused = Some(&c) < state.committed() || Some(&c) > state.last();
        if refused {
            return Ok(());
        }
        wal.commit(c).map_err(write_err)?;
        wal.flush(false, None).map_err(write_err)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.wal().log_state().committed().map(|l| l.0))
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        let vote = WalVote(*vote);
        self.durably(move |wal| wal.save_vote(vote).map(drop)).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        Ok(self.wal().log_state().vote().map(|v| v.0))
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let started = Instant::now();
        let mut wal = self.wal();
        // openraft appends right after the last entry. An append that
        // reaches back replaces what it overlaps, as a keyed store would;
        // entries at or below the purge point are already in a snapshot.
        let state = wal.log_state();
        let next_unpurged = Wal::next_log_index(state.purged());
        let last = state.last().map(|l| l.0.index);
        let mut entries = entries
            .into_iter()
            .filter(|e| e.log_id.index >= next_unpurged)
            .peekable();
        if let Some(first) = entries.peek()
            && Some(first.log_id.index) <= last
        {
            wal.truncate(first.log_id.index).map_err(write_err)?;
        }
        wal.append(entries.map(|e| (WalLogId(e.log_id), Stored::from(e))))
            .map_err(write_err)?;
        let flushed = Flushed::Append {
            done: callback,
            started,
            seconds: self.append_seconds.clone(),
        };
        wal.flush(true, Some(flushed)).map_err(write_err)
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.durably(move |wal| wal.truncate(log_id.index).map(drop))
            .await
    }

    /// Purged entries are already in a snapshot: losing the purge in a crash
    /// only brings them back, so nothing waits for it. It is synced all the
    /// same, because raft-log deletes the chunk files a purge emptied only
    /// behind a synced flush, and a restart replays every chunk it finds.
    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut wal = self.wal();
        wal.purge(WalLogId(log_id)).map_err(write_err)?;
        wal.flush(true, None).map_err(write_err)
    }
}
