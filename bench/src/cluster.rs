//! `tribune-bench cluster`: durable writes on three servers, Tribune against
//! a three-member etcd, both on loopback with fsync on, in the same run.
//!
//! Two measurements:
//!
//! - **Throughput and latency.** For each concurrency N, N closed-loop
//!   clients (one connection each, [`load::run`]) write to Tribune and then
//!   to etcd. With `--placement spread` client i talks to server i mod 3
//!   (as clients talk to their local server; followers forward to the
//!   leader); with `--placement leader` every client talks to the leader.
//! - **Failover.** A few closed-loop writers that know every member write
//!   while the leader is killed with SIGKILL. The figure is the time from
//!   the kill to the first write acknowledged that was *started* after the
//!   kill. The killed member is then restarted and the cluster left to
//!   agree on a leader and catch up before the next round.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::json;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::etcd::{EtcdCluster, FailoverPutter, Putter};
use crate::load::{Window, Writer};
use crate::servers::{Server, find_binary};
use crate::tribune::{Registrar, TribuneCluster};
use crate::{PAYLOAD_BYTES, Round, Store, TribuneResult, fmt_ms, phase, print_table, to_json};

/// Writing before the leader is killed, so every writer is in its loop.
const SETTLE: Duration = Duration::from_secs(1);

/// Longest wait for writes to resume after a kill.
const RESUME_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(clap::Args)]
pub struct ClusterArgs {
    /// The `tribune` binary (`cargo build --release -p tribune-server --bin tribune`).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/release/tribune"))]
    tribune_bin: PathBuf,
    /// The `etcd` binary (default: `etcd` on PATH, then .tools/bin/etcd, then /usr/bin/etcd).
    #[arg(long)]
    etcd_bin: Option<PathBuf>,
    /// Concurrent clients, one connection each; one round per value.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64,256")]
    clients: Vec<usize>,
    /// Measurement time per store and round.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    duration: Duration,
    /// Unmeasured writing before each measurement.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "2s")]
    warmup: Duration,
    /// Which servers the throughput clients talk to: `spread` (client i to
    /// server i mod 3) and/or `leader` (all to the leader); one table each.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "spread")]
    placement: Vec<Placement>,
    /// Leader kills per store (0: no failover measurement).
    #[arg(long, default_value_t = 5)]
    failover_rounds: usize,
    /// Closed-loop writers during a failover round, each knowing every member.
    #[arg(long, default_value_t = 4)]
    failover_writers: usize,
    /// Limit on one write attempt during failover; a write that hits it is
    /// tried again (etcd: on the next member). The same for both stores.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "250ms")]
    attempt_timeout: Duration,
    /// Which stores to run (both by default).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "tribune,etcd")]
    stores: Vec<Store>,
    /// Pass `--log-level` to the Tribune agents.
    #[arg(long)]
    tribune_log_level: Option<String>,
    /// Also write each server's output to DIR/NAME.log.
    #[arg(long, value_name = "DIR")]
    server_logs: Option<PathBuf>,
    /// Print JSON instead of tables.
    #[arg(long)]
    json: bool,
}

/// Where the throughput clients connect.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Placement {
    /// Client i to server i mod 3.
    Spread,
    /// Every client to the current leader.
    Leader,
}

/// The failover measurement of one store.
struct Failover {
    store: &'static str,
    /// Kill-to-resume time of each round; `None`: writes did not resume
    /// within [`RESUME_TIMEOUT`].
    resumes: Vec<Option<Duration>>,
    /// Writes that failed for good (after their client's retries).
    errors: u64,
    first_error: Option<String>,
    /// Why the rounds stopped early, if they did.
    aborted: Option<String>,
}

impl Failover {
    /// Resume times, ascending; a round that never resumed counts as
    /// `Duration::MAX`.
    fn sorted(&self) -> Vec<Duration> {
        let mut v: Vec<Duration> = self.resumes.iter().map(|r| r.unwrap_or(Duration::MAX)).collect();
        v.sort_unstable();
        v
    }

    fn median(&self) -> Option<Duration> {
        crate::load::percentile(&self.sorted(), 50.0)
    }

    fn max(&self) -> Option<Duration> {
        self.sorted().last().copied()
    }

    fn stalled(&self) -> usize {
        self.resumes.iter().filter(|r| r.is_none()).count()
    }
}

/// Runs the whole benchmark and prints the results.
pub async fn run(args: ClusterArgs) -> Result<()> {
    validate(&args)?;
    if let Some(dir) = &args.server_logs {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let (mut tribune, mut etcd) = start(&args).await?;
    let window = Window {
        warmup: args.warmup,
        measure: args.duration,
    };
    let mut tables = Vec::new();
    for &p in &args.placement {
        eprintln!("placement: {p:?}");
        let mut rounds = Vec::new();
        for &n in &args.clients {
            rounds.push(throughput_round(tribune.as_mut(), etcd.as_mut(), p, n, window).await?);
        }
        tables.push((p, rounds));
    }
    let mut failovers = Vec::new();
    if args.failover_rounds > 0 {
        if let Some(c) = tribune.as_mut() {
            failovers.push(failover(c, &args).await?);
        }
        if let Some(c) = etcd.as_mut() {
            failovers.push(failover(c, &args).await?);
        }
    }
    stop(tribune, etcd).await?;
    report(&args, window, &tables, &failovers)
}

fn validate(args: &ClusterArgs) -> Result<()> {
    if args.clients.is_empty() || args.clients.contains(&0) {
        bail!("--clients needs positive numbers, e.g. 1,16,64,256");
    }
    if args.duration.is_zero() || args.attempt_timeout.is_zero() {
        bail!("--duration and --attempt-timeout must be positive");
    }
    if args.failover_rounds > 0 && args.failover_writers == 0 {
        bail!("--failover-writers must be positive");
    }
    Ok(())
}

/// Starts the clusters `--stores` asks for.
async fn start(args: &ClusterArgs) -> Result<(Option<TribuneCluster>, Option<EtcdCluster>)> {
    let log_dir = args.server_logs.as_deref();
    let mut tribune = None;
    if args.stores.contains(&Store::Tribune) {
        let bin = find_binary(
            Some(&args.tribune_bin),
            &[],
            "build it with `cargo build --release -p tribune-server --bin tribune` or pass --tribune-bin",
        )?;
        let c = crate::tribune::start_cluster(&bin, args.tribune_log_level.as_deref(), log_dir).await?;
        for m in &c.members {
            eprintln!(
                "tribune: {} gRPC {}, HTTP {}, data {}",
                m.server.name(),
                m.grpc_addr,
                m.http_addr,
                m.server.data_dir().display()
            );
        }
        tribune = Some(c);
    }
    let mut etcd = None;
    if args.stores.contains(&Store::Etcd) {
        let bin = crate::etcd::binary(args.etcd_bin.as_deref())?;
        let c = crate::etcd::start_cluster(&bin, log_dir).await?;
        for m in &c.members {
            eprintln!(
                "etcd:    {} client {}, data {}",
                m.server.name(),
                m.client_addr,
                m.server.data_dir().display()
            );
        }
        etcd = Some(c);
    }
    Ok((tribune, etcd))
}

async fn stop(tribune: Option<TribuneCluster>, etcd: Option<EtcdCluster>) -> Result<()> {
    let servers = tribune
        .into_iter()
        .flat_map(|c| c.members.into_iter().map(|m| m.server))
        .chain(
            etcd.into_iter()
                .flat_map(|c| c.members.into_iter().map(|m| m.server)),
        );
    for s in servers {
        s.stop().await?;
    }
    Ok(())
}

/// The addresses client i of a round should use: every member (spread) or
/// only the leader's.
fn targets(all: Vec<String>, placement: Placement, leader: usize) -> Vec<String> {
    match placement {
        Placement::Spread => all,
        Placement::Leader => vec![all[leader].clone()],
    }
}

/// One concurrency: Tribune, then etcd.
async fn throughput_round(
    tribune: Option<&mut TribuneCluster>,
    etcd: Option<&mut EtcdCluster>,
    placement: Placement,
    n: usize,
    window: Window,
) -> Result<Round> {
    let tag = format!("{}{n}", if placement == Placement::Spread { "s" } else { "l" });
    let mut round = Round {
        clients: n,
        tribune: None,
        etcd: None,
    };
    if let Some(c) = tribune {
        let addrs = targets(c.grpc_addrs(), placement, c.leader().await?);
        let value = Arc::new("x".repeat(PAYLOAD_BYTES));
        let mut writers = Vec::with_capacity(n);
        for i in 0..n {
            let addr = &addrs[i % addrs.len()];
            writers.push(Registrar::with_prefix(addr, format!("c{tag}-{i}-"), value.clone()).await?);
        }
        let before = c.members[0].applied_index().await?;
        let mut stages_before = Vec::new();
        for m in &c.members {
            stages_before.push(m.stages().await?);
        }
        let summary = phase("tribune", writers, window).await?;
        for m in &mut c.members {
            m.server.check_alive()?;
        }
        // Every member applies the same entries; settle so s1 has them all.
        c.wait_healthy().await?;
        let raft_entries = c.members[0].applied_index().await?.saturating_sub(before);
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
        let leader = c.leader().await?;
        for (i, (m, before)) in c.members.iter().zip(&stages_before).enumerate() {
            let role = if i == leader { "leader" } else { "follower" };
            eprintln!(
                "         s{} ({role}): {}",
                i + 1,
                m.stages().await?.since(before)
            );
        }
        round.tribune = Some(r);
    }
    if let Some(c) = etcd {
        let addrs = targets(c.client_addrs(), placement, c.leader().await?);
        let value = Arc::new(vec![b'x'; PAYLOAD_BYTES]);
        let mut writers = Vec::with_capacity(n);
        for i in 0..n {
            let addr = &addrs[i % addrs.len()];
            writers.push(Putter::with_prefix(addr, format!("cluster/{tag}/{i}/"), value.clone()).await?);
        }
        round.etcd = Some(phase("etcd", writers, window).await?);
        for m in &mut c.members {
            m.server.check_alive()?;
        }
    }
    Ok(round)
}

/// A cluster whose leader the failover measurement kills.
trait UnderTest {
    type W: Writer;
    const STORE: &'static str;
    async fn wait_healthy(&mut self) -> Result<()>;
    async fn leader(&self) -> Result<usize>;
    fn server(&mut self, i: usize) -> &mut Server;
    /// Writer `i` of a round: knows every member, starts at member i mod 3.
    async fn writer(&self, round: usize, i: usize, attempt_timeout: Duration) -> Result<Self::W>;
}

impl UnderTest for TribuneCluster {
    type W = TimedRetry<Registrar>;
    const STORE: &'static str = "tribune";

    async fn wait_healthy(&mut self) -> Result<()> {
        TribuneCluster::wait_healthy(self).await
    }

    async fn leader(&self) -> Result<usize> {
        TribuneCluster::leader(self).await
    }

    fn server(&mut self, i: usize) -> &mut Server {
        &mut self.members[i].server
    }

    async fn writer(&self, round: usize, i: usize, attempt_timeout: Duration) -> Result<Self::W> {
        let mut addrs = self.grpc_addrs();
        let len = addrs.len();
        addrs.rotate_left(i % len);
        let value = Arc::new("x".repeat(PAYLOAD_BYTES));
        let r = Registrar::with_prefix(&addrs.join(","), format!("f{round}-{i}-"), value).await?;
        Ok(TimedRetry {
            inner: r,
            attempt_timeout,
        })
    }
}

impl UnderTest for EtcdCluster {
    type W = FailoverPutter;
    const STORE: &'static str = "etcd";

    async fn wait_healthy(&mut self) -> Result<()> {
        EtcdCluster::wait_healthy(self).await
    }

    async fn leader(&self) -> Result<usize> {
        EtcdCluster::leader(self).await
    }

    fn server(&mut self, i: usize) -> &mut Server {
        &mut self.members[i].server
    }

    async fn writer(&self, round: usize, i: usize, attempt_timeout: Duration) -> Result<Self::W> {
        let value = Arc::new(vec![b'x'; PAYLOAD_BYTES]);
        FailoverPutter::connect(
            &self.client_addrs(),
            i,
            format!("failover/{round}/{i}/"),
            value,
            attempt_timeout,
        )
        .await
    }
}

/// A Tribune writer whose attempts are cut off like [`FailoverPutter`]'s:
/// an attempt that takes longer than `attempt_timeout` is abandoned and the
/// write tried again (registering by ID is idempotent). `tribune-client`
/// itself moves to the next server on errors.
struct TimedRetry<W> {
    inner: W,
    attempt_timeout: Duration,
}

impl<W: Writer> Writer for TimedRetry<W> {
    async fn write(&mut self, seq: u64) -> Result<()> {
        let started = Instant::now();
        loop {
            match tokio::time::timeout(self.attempt_timeout, self.inner.write(seq)).await {
                Ok(res) => return res,
                Err(_) if started.elapsed() < tribune_client::RETRY_FOR => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(_) => bail!("write timed out for {:?}", tribune_client::RETRY_FOR),
            }
        }
    }
}

/// `--failover-rounds` leader kills of one cluster.
async fn failover<C: UnderTest>(cluster: &mut C, args: &ClusterArgs) -> Result<Failover> {
    let mut out = Failover {
        store: C::STORE,
        resumes: Vec::new(),
        errors: 0,
        first_error: None,
        aborted: None,
    };
    for round in 0..args.failover_rounds {
        if let Err(e) = cluster.wait_healthy().await {
            eprintln!("{:>7}: failover stopped: {e:#}", C::STORE);
            out.aborted = Some(format!("{e:#}"));
            return Ok(out);
        }
        let mut writers = Vec::with_capacity(args.failover_writers);
        for i in 0..args.failover_writers {
            writers.push(cluster.writer(round, i, args.attempt_timeout).await?);
        }
        let leader = cluster.leader().await?;
        let server = cluster.server(leader);
        eprint!(
            "{:>7}: failover round {}: kill -9 {} ... ",
            C::STORE,
            round + 1,
            server.name()
        );
        let r = kill_and_measure(writers, server).await?;
        eprintln!(
            "writes resume after {} (first ack of an older write after {}), {} errors",
            r.resume
                .map_or(format!("more than {RESUME_TIMEOUT:?}"), |d| fmt_ms(Some(d))),
            fmt_ms(r.first_ack),
            r.errors
        );
        out.resumes.push(r.resume);
        out.errors += r.errors;
        if out.first_error.is_none() {
            out.first_error = r.first_error;
        }
        server.respawn().await?;
    }
    if let Err(e) = cluster.wait_healthy().await {
        out.aborted = Some(format!("{e:#}"));
    }
    Ok(out)
}

/// One failover round's result.
struct Resume {
    /// From the kill to the first acknowledgement of a write started after
    /// it; `None` if there was none within [`RESUME_TIMEOUT`].
    resume: Option<Duration>,
    /// From the kill to the first acknowledgement of any write.
    first_ack: Option<Duration>,
    errors: u64,
    first_error: Option<String>,
}

/// One acknowledged write: when it started and when it was acknowledged.
type Ack = (Instant, Instant);

/// Runs `writers` closed loop, kills `server` after [`SETTLE`], and waits
/// for the first write started after the kill to be acknowledged.
async fn kill_and_measure<W: Writer>(writers: Vec<W>, server: &mut Server) -> Result<Resume> {
    let (ack_tx, mut acks) = mpsc::unbounded_channel::<Ack>();
    let (stop_tx, stop) = watch::channel(false);
    let mut tasks = JoinSet::new();
    for w in writers {
        tasks.spawn(write_until_stopped(w, ack_tx.clone(), stop.clone()));
    }
    drop(ack_tx);
    tokio::time::sleep(SETTLE).await;
    let killed = server.kill9().await?;
    let mut first_ack = None;
    let deadline = Instant::now() + RESUME_TIMEOUT;
    let resumed = loop {
        let next = tokio::time::timeout_at(deadline, acks.recv()).await;
        let Ok(Some((began, done))) = next else {
            break None;
        };
        if done >= killed && first_ack.is_none() {
            first_ack = Some(done - killed);
        }
        if began >= killed {
            break Some(done - killed);
        }
    };
    stop_tx.send_replace(true);
    let (mut errors, mut first_error) = (0, None);
    while let Some(res) = tasks.join_next().await {
        let (e, first) = res.context("a failover writer panicked")?;
        errors += e;
        first_error = first_error.or(first);
    }
    Ok(Resume {
        resume: resumed,
        first_ack,
        errors,
        first_error,
    })
}

/// One failover writer's loop: reports every acknowledgement; returns its
/// error count and first error.
async fn write_until_stopped<W: Writer>(
    mut w: W,
    acks: mpsc::UnboundedSender<Ack>,
    stop: watch::Receiver<bool>,
) -> (u64, Option<String>) {
    let (mut errors, mut first_error) = (0, None);
    let mut seq = 0;
    while !*stop.borrow() {
        let began = Instant::now();
        let res = w.write(seq).await;
        seq += 1;
        match res {
            Ok(()) => {
                let _ = acks.send((began, Instant::now()));
            }
            Err(e) => {
                errors += 1;
                first_error.get_or_insert_with(|| format!("{e:#}"));
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    (errors, first_error)
}

fn report(
    args: &ClusterArgs,
    window: Window,
    tables: &[(Placement, Vec<Round>)],
    failovers: &[Failover],
) -> Result<()> {
    if args.json {
        let v = json!({
            "throughput": tables.iter().map(|(p, rounds)| json!({
                "placement": format!("{p:?}").to_lowercase(),
                "results": to_json(rounds, window),
            })).collect::<Vec<_>>(),
            "failover": failovers.iter().map(|f| json!({
                "store": f.store,
                "attempt_timeout_ms": args.attempt_timeout.as_secs_f64() * 1e3,
                "writers": args.failover_writers,
                "resume_ms": f.resumes.iter().map(|d| d.map(|d| d.as_secs_f64() * 1e3)).collect::<Vec<_>>(),
                "median_ms": f.median().filter(|d| *d != Duration::MAX).map(|d| d.as_secs_f64() * 1e3),
                "max_ms": f.max().filter(|d| *d != Duration::MAX).map(|d| d.as_secs_f64() * 1e3),
                "stalled_rounds": f.stalled(),
                "aborted": f.aborted,
                "errors": f.errors,
                "first_error": f.first_error,
            })).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&v).context("encoding JSON")?);
    } else {
        for (p, rounds) in tables {
            println!("\nclients placed: {}\n", placement_text(*p));
            print_table(rounds);
        }
        println!();
        for f in failovers {
            println!("{}", failover_line(f, args));
        }
    }
    let errors: u64 = tables
        .iter()
        .flat_map(|(_, rounds)| rounds)
        .map(|r| r.tribune.as_ref().map_or(0, |t| t.summary.errors) + r.etcd.as_ref().map_or(0, |e| e.errors))
        .sum();
    if errors > 0 {
        bail!("{errors} throughput writes failed (see the first errors above)");
    }
    Ok(())
}

fn placement_text(p: Placement) -> &'static str {
    match p {
        Placement::Spread => "spread (client i to server i mod 3)",
        Placement::Leader => "leader (every client to the leader)",
    }
}

/// `failover tribune: median 0.71 s, max 0.80 s over 5 kills (0.70, ...)`.
fn failover_line(f: &Failover, args: &ClusterArgs) -> String {
    let secs = |d: Option<Duration>| match d {
        None => "-".into(),
        Some(Duration::MAX) => format!("> {} s", RESUME_TIMEOUT.as_secs()),
        Some(d) => format!("{:.2} s", d.as_secs_f64()),
    };
    let all = f
        .resumes
        .iter()
        .map(|d| d.map_or("stalled".into(), |d| format!("{:.2}", d.as_secs_f64())))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "failover {:<7}: writes resume after median {}, max {} over {} kills of the leader ({all} s; {} writers, {:?} per attempt), {} failed writes{}",
        f.store,
        secs(f.median()),
        secs(f.max()),
        f.resumes.len(),
        args.failover_writers,
        args.attempt_timeout,
        f.errors,
        f.first_error
            .as_deref()
            .map(|e| format!(" (first: {e})"))
            .unwrap_or_default()
    ) + &f
        .aborted
        .as_deref()
        .map(|e| format!("; stopped early: {e}"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn failover_median_and_max() {
        let f = Failover {
            store: "x",
            resumes: [900, 300, 500, 700, 100].map(|v| Some(ms(v))).to_vec(),
            errors: 0,
            first_error: None,
            aborted: None,
        };
        assert_eq!(f.median(), Some(ms(500)));
        assert_eq!(f.max(), Some(ms(900)));
        let f = Failover {
            resumes: vec![Some(ms(300)), None, Some(ms(100))],
            ..f
        };
        assert_eq!(f.median(), Some(ms(300)));
        assert_eq!(f.max(), Some(Duration::MAX));
        assert_eq!(f.stalled(), 1);
    }

    #[test]
    fn leader_placement_targets_only_the_leader() {
        let all = vec!["a".to_string(), "b".into(), "c".into()];
        assert_eq!(targets(all.clone(), Placement::Leader, 1), vec!["b".to_string()]);
        assert_eq!(targets(all.clone(), Placement::Spread, 1), all);
    }

    /// Acknowledges after a fixed time, like a store that never fails.
    struct Fixed(Duration);

    impl Writer for Fixed {
        async fn write(&mut self, _seq: u64) -> Result<()> {
            tokio::time::sleep(self.0).await;
            Ok(())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn timed_retry_gives_up_on_a_hung_store() {
        let mut w = TimedRetry {
            inner: Fixed(Duration::from_secs(3600)),
            attempt_timeout: ms(250),
        };
        assert!(w.write(0).await.is_err());
        let mut w = TimedRetry {
            inner: Fixed(ms(10)),
            attempt_timeout: ms(250),
        };
        assert!(w.write(0).await.is_ok());
    }
}
