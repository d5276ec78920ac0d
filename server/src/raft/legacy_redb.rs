//! The log of builds that kept it in redb (`raft.redb`), imported once into
//! the WAL. The import is written into a directory of its own, fsynced and
//! only then renamed into place, so a crash during it leaves the old file
//! as the log and the import starts again on the next start. The old file
//! is removed once the WAL holds its contents.

use std::io;
use std::path::Path;

use raft_log::api::raft_log_writer::RaftLogWriter;
use redb::{ReadableDatabase, ReadableTable, TableDefinition};

use super::log_store::{WalLogId, WalVote, flush_and_wait, open_wal};
use super::{Entry, LogId, NodeId};

const FILE: &str = "raft.redb";
const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");
const KEY_VOTE: &str = "vote";
const KEY_PURGED: &str = "last_purged";
const KEY_COMMITTED: &str = "committed";

fn invalid(what: &str, e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("{FILE}: {what}: {e}"))
}

/// Imports `<data_dir>/raft.redb` into a new WAL at `wal_dir`, when there is
/// one; does nothing otherwise.
pub(crate) fn import_if_present(data_dir: &Path, wal_dir: &Path) -> io::Result<()> {
    let file = data_dir.join(FILE);
    if !file.exists() {
        return Ok(());
    }
    let staging = data_dir.join(format!("{}.importing", super::log_store::WAL_DIR));
    if staging.exists() {
        std::fs::remove_dir_all(&staging)?;
    }
    super::log_store::create_private_dir(&staging)?;
    let imported = import(&file, &staging)?;
    std::fs::rename(&staging, wal_dir)?;
    std::fs::File::open(data_dir)?.sync_all()?;
    std::fs::remove_file(&file)?;
    tracing::info!(
        entries = imported,
        "imported the Raft log of an older build from {FILE}"
    );
    Ok(())
}

fn import(file: &Path, staging: &Path) -> io::Result<usize> {
    let db = redb::Database::open(file).map_err(|e| invalid("open", e))?;
    let tx = db.begin_read().map_err(|e| invalid("read", e))?;
    let meta_table = tx.open_table(META).map_err(|e| invalid("meta table", e))?;
    let meta = |key: &str| -> io::Result<Option<Vec<u8>>> {
        Ok(meta_table
            .get(key)
            .map_err(|e| invalid(key, e))?
            .map(|v| v.value().to_vec()))
    };
    fn decoded<T: crate::codec::Record>(key: &str, b: Option<Vec<u8>>) -> io::Result<Option<T>> {
        b.map(|b| crate::codec::decode(&b).map_err(|e| invalid(key, e)))
            .transpose()
    }
    let vote: Option<openraft::Vote<NodeId>> = decoded(KEY_VOTE, meta(KEY_VOTE)?)?;
    let purged: Option<LogId> = decoded(KEY_PURGED, meta(KEY_PURGED)?)?;
    let committed: Option<LogId> = decoded(KEY_COMMITTED, meta(KEY_COMMITTED)?)?;

    let mut wal = open_wal(staging)?;
    if let Some(v) = vote {
        wal.save_vote(WalVote::from(v))?;
    }
    if let Some(p) = purged {
        wal.purge(WalLogId::from(p))?;
    }
    let log = tx.open_table(LOG).map_err(|e| invalid("log table", e))?;
    let mut count = 0;
    let mut last = purged;
    for item in log.iter().map_err(|e| invalid("log", e))? {
        let (_, v) = item.map_err(|e| invalid("log", e))?;
        let entry: Entry = crate::codec::decode(v.value()).map_err(|e| invalid("log entry", e))?;
        last = Some(entry.log_id);
        wal.append([(
            WalLogId::from(entry.log_id),
            super::log_store::Stored::from(entry),
        )])?;
        count += 1;
    }
    if let Some(c) = committed.filter(|c| Some(c.index) <= last.map(|l| l.index)) {
        wal.commit(WalLogId::from(c))?;
    }
    flush_and_wait(&mut wal)?;
    drop(wal);
    Ok(count)
}

#[cfg(test)]
mod tests {
    use openraft::storage::RaftLogStorage;
    use openraft::{CommittedLeaderId, EntryPayload, RaftLogReader, Vote};
    use redb::Durability;

    use super::*;
    use crate::catalog::command::{Command, Request};
    use crate::raft::log_store::LogStore;

    fn log_id(term: u64, index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(term, 7), index)
    }

    fn entry(term: u64, index: u64) -> Entry {
        Entry {
            log_id: log_id(term, index),
            payload: EntryPayload::Normal(Request {
                commands: vec![Command::Deregister {
                    service_id: format!("svc-{index}"),
                }],
            }),
        }
    }

    /// Writes a `raft.redb` as the builds before the WAL did.
    fn write_legacy(dir: &Path, vote: Vote<NodeId>, purged: LogId, entries: &[Entry], committed: LogId) {
        let db = redb::Database::create(dir.join(FILE)).unwrap();
        let mut tx = db.begin_write().unwrap();
        tx.set_durability(Durability::Immediate).unwrap();
        {
            let mut m = tx.open_table(META).unwrap();
            m.insert(KEY_VOTE, crate::codec::encode(&vote).unwrap().as_slice())
                .unwrap();
            m.insert(KEY_PURGED, crate::codec::encode(&purged).unwrap().as_slice())
                .unwrap();
            m.insert(
                KEY_COMMITTED,
                crate::codec::encode(&committed).unwrap().as_slice(),
            )
            .unwrap();
            let mut t = tx.open_table(LOG).unwrap();
            for e in entries {
                t.insert(e.log_id.index, crate::codec::encode(e).unwrap().as_slice())
                    .unwrap();
            }
        }
        tx.commit().unwrap();
    }

    #[tokio::test]
    async fn an_older_builds_redb_log_is_imported_once_with_its_vote_and_markers() {
        let dir = tempfile::tempdir().unwrap();
        let vote = Vote::new_committed(3, 7);
        let entries: Vec<Entry> = (11..=20).map(|i| entry(3, i)).collect();
        write_legacy(dir.path(), vote, log_id(2, 10), &entries, log_id(3, 18));

        let mut store = LogStore::open(dir.path()).unwrap();
        assert!(
            !dir.path().join(FILE).exists(),
            "the old file is removed after the import"
        );
        assert_eq!(store.read_vote().await.unwrap(), Some(vote));
        assert_eq!(store.read_committed().await.unwrap(), Some(log_id(3, 18)));
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, Some(log_id(2, 10)));
        assert_eq!(state.last_log_id, Some(log_id(3, 20)));
        assert_eq!(store.try_get_log_entries(11..=20).await.unwrap(), entries);
        drop(store);

        // A second open reads the WAL, not an import.
        let mut store = LogStore::open(dir.path()).unwrap();
        assert_eq!(store.try_get_log_entries(11..=20).await.unwrap(), entries);
        assert_eq!(store.read_vote().await.unwrap(), Some(vote));
    }

    #[tokio::test]
    async fn an_import_cut_short_starts_again_from_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let entries: Vec<Entry> = (1..=5).map(|i| entry(1, i)).collect();
        write_legacy(dir.path(), Vote::new(1, 7), log_id(0, 0), &entries, log_id(1, 5));
        // What a crash during the import leaves: a half-written staging dir.
        let staging = dir.path().join("raft-log.importing");
        std::fs::create_dir_all(&staging).unwrap();
        std::fs::write(staging.join("r-00000000000000000000.wal"), b"torn").unwrap();

        let mut store = LogStore::open(dir.path()).unwrap();
        assert_eq!(store.try_get_log_entries(1..=5).await.unwrap(), entries);
        assert!(!staging.exists());
    }
}
