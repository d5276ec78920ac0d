//! `tribune-bench`: durable write throughput and commit latency of Tribune
//! against a single-member etcd, measured with the same closed-loop harness
//! in the same run.
//!
//! `tribune-bench writes` starts a fresh Tribune server and a fresh etcd,
//! then for each concurrency N runs N clients (one connection each) against
//! Tribune and then against etcd, and prints a table (or JSON).
#![forbid(unsafe_code)]

mod aclcost;
mod cluster;
mod etcd;
mod federation;
mod handshakes;
mod load;
mod logstore;
mod mesh;
mod restore;
mod servers;
mod tribune;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use serde_json::json;

use crate::load::{Summary, Window, Writer};
use crate::servers::find_binary;

/// Bytes of payload per write: etcd's value, and Tribune's one meta value.
const PAYLOAD_BYTES: usize = 256;

#[derive(Parser)]
#[command(name = "tribune-bench", about = "Benchmarks for Tribune")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Durable writes/s and p50/p99 commit latency: Tribune registrations
    /// against etcd puts, at each concurrency, servers started fresh.
    Writes(WritesArgs),
    /// Leaf certificates signed per second on one core.
    Sign(mesh::SignArgs),
    /// xDS fan-out: N ADS streams, one catalog write, time until every stream has it.
    XdsFanout(mesh::FanoutArgs),
    /// Durable writes on 3 servers against a 3-member etcd, and the time
    /// for writes to resume after kill -9 of the leader.
    Cluster(cluster::ClusterArgs),
    /// A large backup restored into 3 servers: time until every server
    /// serves it, memory, and a restarted server's time to serving it.
    Restore(restore::RestoreArgs),
    /// What one durable append costs in redb and in raft-log, the stores
    /// alone.
    LogStore(logstore::LogStoreArgs),
    /// A read served by another datacenter through a local server, against
    /// the same read made there directly.
    Forwarding(federation::ForwardingArgs),
    /// Writes/s with ACLs on (a token with prefix rules), and with ACLs and
    /// TLS on, against both off, in one run.
    AclCost(aclcost::AclCostArgs),
    /// Full TLS handshakes per second on the gRPC TLS port.
    TlsHandshakes(handshakes::HandshakeArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Store {
    Tribune,
    Etcd,
}

#[derive(clap::Args)]
struct WritesArgs {
    /// The `tribune` binary (`cargo build --release -p tribune-server --bin tribune`).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/release/tribune"))]
    tribune_bin: PathBuf,
    /// The `etcd` binary (default: `etcd` on PATH, then .tools/bin/etcd, then /usr/bin/etcd).
    #[arg(long)]
    etcd_bin: Option<PathBuf>,
    /// Concurrent clients, one connection each; one round per value.
    #[arg(long, value_delimiter = ',', default_value = "1,16,256")]
    clients: Vec<usize>,
    /// Measurement time per store and round.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    duration: Duration,
    /// Unmeasured writing before each measurement.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "2s")]
    warmup: Duration,
    /// Which stores to run (both by default; one alone is for investigating).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "tribune,etcd")]
    stores: Vec<Store>,
    /// Pass `--log-level` to the Tribune agent (default: its own default, info).
    #[arg(long)]
    tribune_log_level: Option<String>,
    /// Also write each server's output to DIR/tribune.log and DIR/etcd.log.
    #[arg(long, value_name = "DIR")]
    server_logs: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// One round's results.
struct Round {
    clients: usize,
    tribune: Option<TribuneResult>,
    etcd: Option<Summary>,
}

/// Tribune's results, with how many Raft entries carried the writes.
struct TribuneResult {
    summary: Summary,
    raft_entries: u64,
}

impl TribuneResult {
    /// Acknowledged writes per Raft log entry (one fsync each), warm-up included.
    fn writes_per_entry(&self) -> f64 {
        self.summary.acked as f64 / self.raft_entries.max(1) as f64
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    // Dropping the run on Ctrl-C drops the servers, which kills them.
    let run = async {
        match Cli::parse().cmd {
            Cmd::Writes(args) => writes(args).await,
            Cmd::Sign(args) => mesh::sign(args),
            Cmd::XdsFanout(args) => mesh::fanout(args).await,
            Cmd::Cluster(args) => cluster::run(args).await,
            Cmd::Restore(args) => restore::run(args).await,
            Cmd::LogStore(args) => logstore::run(args),
            Cmd::Forwarding(args) => federation::run(args).await,
            Cmd::AclCost(args) => aclcost::run_cost(args).await,
            Cmd::TlsHandshakes(args) => handshakes::run(args).await,
        }
    };
    tokio::select! {
        res = run => res,
        _ = tokio::signal::ctrl_c() => bail!("interrupted"),
    }
}

async fn writes(args: WritesArgs) -> Result<()> {
    if args.clients.is_empty() || args.clients.contains(&0) {
        bail!("--clients needs positive numbers, e.g. 1,16,256");
    }
    if args.duration.is_zero() {
        bail!("--duration must be positive");
    }
    if let Some(dir) = &args.server_logs {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let log_dir = args.server_logs.as_deref();

    let mut tribune_node = None;
    if args.stores.contains(&Store::Tribune) {
        let bin = find_binary(
            Some(&args.tribune_bin),
            &[],
            "build it with `cargo build --release -p tribune-server --bin tribune` or pass --tribune-bin",
        )?;
        let node = tribune::start(&bin, args.tribune_log_level.as_deref(), log_dir).await?;
        eprintln!(
            "tribune: {} (gRPC {}, metrics http://{}/metrics, data {})",
            bin.display(),
            node.grpc_addr,
            node.http_addr,
            node.server.data_dir().display()
        );
        tribune_node = Some(node);
    }
    let mut etcd_node = None;
    if args.stores.contains(&Store::Etcd) {
        let bin = crate::etcd::binary(args.etcd_bin.as_deref())?;
        let node = etcd::start(&bin, log_dir).await?;
        eprintln!(
            "etcd:    {} (client {}, data {})",
            bin.display(),
            node.client_addr,
            node.server.data_dir().display()
        );
        etcd_node = Some(node);
    }

    let window = Window {
        warmup: args.warmup,
        measure: args.duration,
    };
    let meta_value = Arc::new("x".repeat(PAYLOAD_BYTES));
    let etcd_value = Arc::new(vec![b'x'; PAYLOAD_BYTES]);
    let mut rounds = Vec::new();
    for &n in &args.clients {
        let mut round = Round {
            clients: n,
            tribune: None,
            etcd: None,
        };
        if let Some(node) = &mut tribune_node {
            let mut writers = Vec::with_capacity(n);
            for i in 0..n {
                writers.push(tribune::Registrar::connect(&node.grpc_addr, n, i, meta_value.clone()).await?);
            }
            let before = node.applied_index().await?;
            let summary = phase("tribune", writers, window).await?;
            node.server.check_alive()?;
            let raft_entries = node.applied_index().await?.saturating_sub(before);
            let r = TribuneResult {
                summary,
                raft_entries,
            };
            eprintln!(
                "         {} raft entries for {} writes: {:.1} writes per entry (fsync)",
                r.raft_entries,
                r.summary.acked,
                r.writes_per_entry()
            );
            round.tribune = Some(r);
        }
        if let Some(node) = &mut etcd_node {
            let mut writers = Vec::with_capacity(n);
            for i in 0..n {
                writers.push(etcd::Putter::connect(&node.client_addr, n, i, etcd_value.clone()).await?);
            }
            round.etcd = Some(phase("etcd", writers, window).await?);
            node.server.check_alive()?;
        }
        rounds.push(round);
    }
    if let Some(node) = tribune_node {
        node.server.stop().await?;
    }
    if let Some(node) = etcd_node {
        node.server.stop().await?;
    }

    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&to_json(&rounds, window)).context("encoding JSON")?
        );
    } else {
        print_table(&rounds);
    }
    let errors: u64 = rounds
        .iter()
        .map(|r| r.tribune.as_ref().map_or(0, |t| t.summary.errors) + r.etcd.as_ref().map_or(0, |e| e.errors))
        .sum();
    if errors > 0 {
        bail!("{errors} writes failed (see the first errors above)");
    }
    Ok(())
}

/// Runs one store at one concurrency and reports progress on stderr.
async fn phase<W: Writer>(store: &str, writers: Vec<W>, window: Window) -> Result<Summary> {
    let n = writers.len();
    eprint!("{store:>7}: {n:>3} clients ... ");
    let s = load::run(writers, window).await?;
    eprintln!(
        "{:.0} writes/s, p50 {}, p99 {}, {} errors{}",
        s.throughput(),
        fmt_ms(s.percentile(50.0)),
        fmt_ms(s.percentile(99.0)),
        s.errors,
        s.first_error
            .as_deref()
            .map(|e| format!(" (first: {e})"))
            .unwrap_or_default()
    );
    Ok(s)
}

fn fmt_ms(d: Option<Duration>) -> String {
    match d {
        Some(d) => format!("{:.2} ms", d.as_secs_f64() * 1e3),
        None => "-".into(),
    }
}

/// Tribune's throughput over etcd's, when both ran.
fn ratio(r: &Round) -> Option<f64> {
    Some(r.tribune.as_ref()?.summary.throughput() / r.etcd.as_ref()?.throughput())
}

fn print_table(rounds: &[Round]) {
    println!(
        "| clients | tribune writes/s | tribune p50 | tribune p99 | etcd puts/s | etcd p50 | etcd p99 | ratio |"
    );
    println!(
        "|--------:|-----------------:|------------:|------------:|------------:|---------:|---------:|------:|"
    );
    let cells = |s: Option<&Summary>| match s {
        Some(s) => format!(
            "{:.0} | {} | {}",
            s.throughput(),
            fmt_ms(s.percentile(50.0)),
            fmt_ms(s.percentile(99.0))
        ),
        None => "- | - | -".into(),
    };
    for r in rounds {
        println!(
            "| {} | {} | {} | {} |",
            r.clients,
            cells(r.tribune.as_ref().map(|t| &t.summary)),
            cells(r.etcd.as_ref()),
            ratio(r).map_or("-".into(), |x| format!("{x:.2}x")),
        );
    }
}

fn summary_json(s: &Summary) -> serde_json::Value {
    let ms = |d: Option<Duration>| d.map(|d| d.as_secs_f64() * 1e3);
    json!({
        "writes": s.ok,
        "writes_per_sec": s.throughput(),
        "p50_ms": ms(s.percentile(50.0)),
        "p99_ms": ms(s.percentile(99.0)),
        "mean_ms": ms(s.mean()),
        "max_ms": ms(s.latencies.last().copied()),
        "errors": s.errors,
        "first_error": s.first_error,
    })
}

fn to_json(rounds: &[Round], window: Window) -> serde_json::Value {
    json!({
        "payload_bytes": PAYLOAD_BYTES,
        "warmup_secs": window.warmup.as_secs_f64(),
        "duration_secs": window.measure.as_secs_f64(),
        "rounds": rounds.iter().map(|r| json!({
            "clients": r.clients,
            "tribune": r.tribune.as_ref().map(|t| {
                let mut v = summary_json(&t.summary);
                v["raft_entries"] = json!(t.raft_entries);
                v["writes_per_raft_entry"] = json!(t.writes_per_entry());
                v
            }),
            "etcd": r.etcd.as_ref().map(summary_json),
            "ratio": ratio(r),
        })).collect::<Vec<_>>(),
    })
}
