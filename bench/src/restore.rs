//! `tribune-bench restore`: a large backup restored into three servers,
//! and what the state costs in memory and start-up time afterwards.
//!
//! A single server is filled with instances carrying large metadata (by
//! default about 74 MB of state), `snapshot save`d, and the file restored
//! into a fresh 3-server cluster. It prints the backup's size, the time to
//! the restore's acknowledgement and until every server serves the restored
//! catalog, each server's RSS, and for one follower restarted with that
//! state (once its snapshot holds the restore): the time from its start to
//! serving it, and its RSS then, as a multiple of the backup's size.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tribune_client::{Client, api};

use crate::servers::find_binary;
use crate::tribune;

#[derive(clap::Args)]
pub struct RestoreArgs {
    /// The `tribune` binary (`cargo build --release -p tribune-server --bin tribune`).
    #[arg(long, default_value = "target/release/tribune")]
    tribune_bin: PathBuf,
    /// Instances in the backup.
    #[arg(long, default_value_t = 2_200)]
    instances: usize,
    /// Metadata pairs per instance, 512 bytes each (64 is the most allowed).
    #[arg(long, default_value_t = 64)]
    meta_pairs: usize,
}

const SERVICE: &str = "restored";
const WAIT_LIMIT: Duration = Duration::from_secs(300);

pub async fn run(args: RestoreArgs) -> Result<()> {
    let bin = find_binary(
        Some(&args.tribune_bin),
        &[],
        "build it with `cargo build --release -p tribune-server --bin tribune` or pass --tribune-bin",
    )?;
    let backup = fill_and_save(&bin, &args).await?;
    let size = backup.len();
    println!(
        "backup: {} instances, {:.1} MB",
        args.instances,
        size as f64 / 1e6
    );

    let mut cluster = tribune::start_cluster(&bin, None, None).await?;
    cluster.wait_healthy().await?;
    let leader = cluster.leader().await?;
    let client = Client::connect_any(&cluster.grpc_addrs()).await?;
    let started = Instant::now();
    let resp = client.snapshot_restore(backup).await.context("restore")?;
    let acked = started.elapsed();
    println!(
        "restore acknowledged after {:.2} s (applied at index {})",
        acked.as_secs_f64(),
        resp.index
    );
    for m in &cluster.members {
        let at = serves(&m.grpc_addr, args.instances, started).await?;
        println!(
            "  {}: serves the restored catalog {:.2} s after the restore began; RSS {:.0} MB ({:.1}x the backup)",
            m.server.name(),
            at.as_secs_f64(),
            rss(m.server.pid())? as f64 / 1e6,
            rss(m.server.pid())? as f64 / size as f64
        );
    }

    // A restart "with that state" is one after the restore was compacted
    // into the server's snapshot (each server takes one right after it).
    let follower = (leader + 1) % cluster.members.len();
    let m = &mut cluster.members[follower];
    let snap = m.server.data_dir().join("snapshots/current.snap");
    let deadline = Instant::now() + WAIT_LIMIT;
    while std::fs::metadata(&snap)
        .map(|md| (md.len() as usize) < size * 9 / 10)
        .unwrap_or(true)
    {
        if Instant::now() >= deadline {
            bail!("{} took no snapshot of the restored catalog", m.server.name());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    m.server.kill9().await?;
    let restarted = Instant::now();
    m.server.respawn().await?;
    let at = serves(&m.grpc_addr, args.instances, restarted).await?;
    let rss_after = rss(m.server.pid())?;
    println!(
        "restarted {}: serves the catalog {:.2} s after its start; RSS {:.0} MB ({:.1}x the backup)",
        m.server.name(),
        at.as_secs_f64(),
        rss_after as f64 / 1e6,
        rss_after as f64 / size as f64
    );
    Ok(())
}

/// A single server filled with fat instances; its `snapshot save` bytes.
async fn fill_and_save(bin: &std::path::Path, args: &RestoreArgs) -> Result<Vec<u8>> {
    let source = tribune::start(bin, None, None).await?;
    let client = Client::connect(&source.grpc_addr).await?;
    let value = Arc::new("x".repeat(512));
    let writers: Vec<_> = (0..16)
        .map(|w| {
            let (client, value) = (client.clone(), value.clone());
            let (n, pairs) = (args.instances, args.meta_pairs);
            tokio::spawn(async move {
                for i in (w..n).step_by(16) {
                    let meta: HashMap<String, String> =
                        (0..pairs).map(|k| (format!("k{k}"), value.to_string())).collect();
                    let req = api::RegisterRequest {
                        service: Some(api::ServiceSpec {
                            id: format!("r-{i}"),
                            name: SERVICE.into(),
                            address: "127.0.0.1".into(),
                            port: 8080,
                            meta,
                            ..Default::default()
                        }),
                        ..Default::default()
                    };
                    client.register(req).await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for w in writers {
        w.await??;
    }
    let mut bytes = Vec::new();
    client.snapshot_save(&mut bytes).await.context("snapshot save")?;
    source.server.stop().await?;
    Ok(bytes)
}

/// Waits until the server at `addr` serves `n` restored instances (a stale
/// read: what this server itself holds); the time since `since`.
async fn serves(addr: &str, n: usize, since: Instant) -> Result<Duration> {
    while since.elapsed() < WAIT_LIMIT {
        if let Ok(c) = Client::connect(addr).await
            && let Ok(l) = c.stale(true).list_services().await
            && l.services
                .iter()
                .any(|s| s.name == SERVICE && s.instances as usize == n)
        {
            return Ok(since.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bail!("{addr} did not serve the restored catalog within {WAIT_LIMIT:?}")
}

/// Resident memory of a process, in bytes.
fn rss(pid: Option<u32>) -> Result<u64> {
    let pid = pid.context("the server is not running")?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS")?;
    Ok(kb * 1024)
}
