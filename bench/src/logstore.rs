//! `tribune-bench log-store`: what one durable append costs in the two log
//! stores a server could use, measured in one run: redb as servers used it
//! before the WAL (one write transaction with `Durability::Immediate` per
//! append), and `raft-log`, the segmented write-ahead log that servers now
//! use, as Databend's meta-service does on openraft (append, then
//! `flush(sync)` and wait for its callback). One appender, entries of the
//! sizes a server writes: a single registration (one client) and a batch
//! of them (group commit under load).
//!
//! This measures the stores alone, not the write path; `writes` and
//! `cluster` with `--tribune-bin` compare whole servers.

use std::io;
use std::sync::Arc;
use std::sync::mpsc::{SyncSender, sync_channel};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use raft_log::api::raft_log_writer::RaftLogWriter;
use raft_log::api::types::Types;
use redb::{Database, Durability, TableDefinition};

use crate::load::percentile;

#[derive(clap::Args)]
pub struct LogStoreArgs {
    /// Appends per store and entry size.
    #[arg(long, default_value_t = 2_000)]
    appends: usize,
    /// Entry sizes in bytes: one registration's entry, a batch's.
    #[arg(long, value_delimiter = ',', default_value = "300,80000")]
    entry_bytes: Vec<usize>,
}

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");

#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Wal;

impl Types for Wal {
    type LogId = (u64, u64);
    type LogPayload = String;
    type Vote = (u64, u64);
    type UserData = String;
    type Callback = SyncSender<io::Result<()>>;

    fn log_index(log_id: &Self::LogId) -> u64 {
        log_id.1
    }

    fn payload_size(payload: &Self::LogPayload) -> u64 {
        payload.len() as u64
    }
}

pub fn run(args: LogStoreArgs) -> Result<()> {
    println!("| store | entry bytes | appends/s | p50 | p99 |");
    println!("|---|--:|--:|--:|--:|");
    for &size in &args.entry_bytes {
        let payload = "x".repeat(size);
        let redb = redb_appends(args.appends, payload.as_bytes())?;
        print_row("redb", size, &redb);
        // raft-log's flush worker waits up to 1 ms (its default) to batch
        // flushes; with one appender that wait is all latency.
        let wal = wal_appends(args.appends, &payload, None)?;
        print_row("raft-log, flush wait 1 ms (default)", size, &wal);
        let wal = wal_appends(args.appends, &payload, Some(Duration::ZERO))?;
        print_row("raft-log, flush wait 0", size, &wal);
        let (n, took) = wal_pipelined(args.appends, &payload)?;
        println!(
            "| raft-log, pipelined (every append flushed, callbacks awaited at the end) | {size} | {:.0} | - | - |",
            n as f64 / took.as_secs_f64()
        );
    }
    Ok(())
}

fn print_row(store: &str, size: usize, times: &[Duration]) {
    let total: Duration = times.iter().sum();
    let mut sorted = times.to_vec();
    sorted.sort();
    let ms = |d: Option<Duration>| d.unwrap_or_default().as_secs_f64() * 1e3;
    println!(
        "| {store} | {size} | {:.0} | {:.3} ms | {:.3} ms |",
        times.len() as f64 / total.as_secs_f64(),
        ms(percentile(&sorted, 50.0)),
        ms(percentile(&sorted, 99.0)),
    );
}

fn redb_appends(n: usize, payload: &[u8]) -> Result<Vec<Duration>> {
    let dir = tempfile::tempdir()?;
    let db = Database::create(dir.path().join("raft.redb"))?;
    let mut times = Vec::with_capacity(n);
    for i in 0..n as u64 {
        let started = Instant::now();
        let mut tx = db.begin_write()?;
        tx.set_durability(Durability::Immediate)?;
        {
            let mut t = tx.open_table(LOG)?;
            t.insert(i, payload)?;
        }
        tx.commit()?;
        times.push(started.elapsed());
    }
    Ok(times)
}

fn wal_appends(n: usize, payload: &str, flush_wait: Option<Duration>) -> Result<Vec<Duration>> {
    let dir = tempfile::tempdir()?;
    let mut config = raft_log::Config::new(dir.path().display());
    config.wal.flush_batch_wait = flush_wait;
    let config = Arc::new(config);
    let mut log = raft_log::RaftLog::<Wal>::open(config).context("opening raft-log")?;
    let mut times = Vec::with_capacity(n);
    for i in 0..n as u64 {
        let started = Instant::now();
        log.append([((1, i), payload.to_string())])?;
        let (tx, rx) = sync_channel(1);
        log.flush(true, Some(tx))?;
        rx.recv().context("raft-log's flush callback")??;
        times.push(started.elapsed());
    }
    Ok(times)
}

/// Appends as openraft issues them: each one flushed, none waited for
/// before the next; then all callbacks. Returns the count and the time.
fn wal_pipelined(n: usize, payload: &str) -> Result<(usize, Duration)> {
    let dir = tempfile::tempdir()?;
    let config = Arc::new(raft_log::Config::new(dir.path().display()));
    let mut log = raft_log::RaftLog::<Wal>::open(config).context("opening raft-log")?;
    let started = Instant::now();
    let mut pending = Vec::with_capacity(n);
    for i in 0..n as u64 {
        log.append([((1, i), payload.to_string())])?;
        let (tx, rx) = sync_channel(1);
        log.flush(true, Some(tx))?;
        pending.push(rx);
    }
    for rx in pending {
        rx.recv().context("raft-log's flush callback")??;
    }
    Ok((n, started.elapsed()))
}
