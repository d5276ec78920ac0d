//! `tribune-bench forwarding`: what a request for another datacenter costs.
//! Two single-server datacenters federate over WAN gossip, dc1 on
//! 127.0.0.1 and dc2 on 127.0.0.2; the same read (`GetService` of one
//! instance in dc2, linearizable) is made straight to dc2's server and
//! through dc1's server with `--datacenter dc2`, at each concurrency, in
//! one run. Before that, an idle window measures the WAN gossip bytes each
//! server sends and receives (from `tribune_gossip_bytes_total`).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tribune_client::{Client, api};

use crate::load::{Summary, Window, Writer};
use crate::servers::{find_binary, free_udp_ports};
use crate::tribune::{Federated, start_federated};

#[derive(clap::Args)]
pub struct ForwardingArgs {
    /// The `tribune` binary (`cargo build --release -p tribune-server --bin tribune`).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/release/tribune"))]
    tribune_bin: PathBuf,
    /// Concurrent clients, one connection each; one round per value.
    #[arg(long, value_delimiter = ',', default_value = "1,64")]
    clients: Vec<usize>,
    /// Measurement time per path and round.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    duration: Duration,
    /// Unmeasured reading before each measurement.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1s")]
    warmup: Duration,
    /// Idle time over which WAN gossip traffic is measured.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    wan_window: Duration,
}

/// A server's WAN gossip bytes so far: (sent, received).
async fn wan_bytes(http_addr: &str) -> Result<(f64, f64)> {
    let (_, body) = crate::tribune::http_get(http_addr, "/metrics").await?;
    let mut out = (0.0, 0.0);
    for line in body
        .lines()
        .filter(|l| l.starts_with("tribune_gossip_bytes_total{") && l.contains("pool=\"wan\""))
    {
        let v: f64 = line.rsplit(' ').next().unwrap_or("0").parse().unwrap_or(0.0);
        if line.contains("direction=\"sent\"") {
            out.0 = v;
        } else {
            out.1 = v;
        }
    }
    Ok(out)
}

/// One client reading the `api` service of dc2.
struct Reader(Client);

impl Writer for Reader {
    async fn write(&mut self, _seq: u64) -> Result<()> {
        let r = self.0.get_service("api", false).await.context("GetService")?;
        if r.instances.is_empty() {
            bail!("dc2's api instance is missing");
        }
        Ok(())
    }
}

async fn readers(addr: &str, datacenter: Option<&str>, n: usize) -> Result<Vec<Reader>> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let mut c = Client::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        if let Some(dc) = datacenter {
            c = c.datacenter(dc)?;
        }
        out.push(Reader(c));
    }
    Ok(out)
}

pub async fn run(args: ForwardingArgs) -> Result<()> {
    let bin = find_binary(
        Some(&args.tribune_bin),
        &["tribune"],
        "build it with `cargo build --release -p tribune-server --bin tribune` or pass --tribune-bin",
    )?;
    let wan = free_udp_ports(2)?;
    let dc1_wan = format!("127.0.0.1:{}", wan[0]);
    let dc1 = start_federated(
        &bin,
        "127.0.0.1",
        Federated {
            datacenter: "dc1".into(),
            wan_addr: dc1_wan.clone(),
            join_wan: None,
            primary: "dc1".into(),
        },
    )
    .await?;
    let dc2 = start_federated(
        &bin,
        "127.0.0.2",
        Federated {
            datacenter: "dc2".into(),
            wan_addr: format!("127.0.0.2:{}", wan[1]),
            join_wan: Some(dc1_wan),
            primary: "dc1".into(),
        },
    )
    .await?;
    let local = Client::connect(&dc2.grpc_addr).await?;
    local
        .register(api::RegisterRequest {
            service: Some(api::ServiceSpec {
                id: "api-1".into(),
                name: "api".into(),
                address: "127.0.0.2".into(),
                port: 9090,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .context("registering api in dc2")?;
    let via_dc1 = Client::connect(&dc1.grpc_addr).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !via_dc1.list_datacenters().await?.iter().any(|d| d == "dc2") {
        if tokio::time::Instant::now() > deadline {
            bail!("dc1 did not learn of dc2 over WAN gossip within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    eprintln!("WAN gossip, idle, {:?} ...", args.wan_window);
    let before = [wan_bytes(&dc1.http_addr).await?, wan_bytes(&dc2.http_addr).await?];
    tokio::time::sleep(args.wan_window).await;
    let after = [wan_bytes(&dc1.http_addr).await?, wan_bytes(&dc2.http_addr).await?];
    let secs = args.wan_window.as_secs_f64();
    for (i, dc) in ["dc1", "dc2"].iter().enumerate() {
        println!(
            "WAN gossip, {dc}'s server, idle, pool of 2: {:.0} B/s sent, {:.0} B/s received",
            (after[i].0 - before[i].0) / secs,
            (after[i].1 - before[i].1) / secs
        );
    }

    let window = Window {
        warmup: args.warmup,
        measure: args.duration,
    };
    let ms = |d: Option<Duration>| d.unwrap_or_default().as_secs_f64() * 1e3;
    let row = |s: &Summary| {
        format!(
            "{:.0} | {:.2} ms | {:.2} ms | {}",
            s.throughput(),
            ms(s.percentile(50.0)),
            ms(s.percentile(99.0)),
            s.errors
        )
    };
    let mut table = Vec::new();
    for &n in &args.clients {
        eprintln!("{n} clients: straight to dc2 ...");
        let direct = crate::load::run(readers(&dc2.grpc_addr, None, n).await?, window).await?;
        eprintln!("{n} clients: through dc1 ...");
        let forwarded = crate::load::run(readers(&dc1.grpc_addr, Some("dc2"), n).await?, window).await?;
        table.push(format!(
            "| {n} | {} | {} | {:.2}x |",
            row(&direct),
            row(&forwarded),
            ms(forwarded.percentile(50.0)) / ms(direct.percentile(50.0)).max(1e-9)
        ));
    }
    println!(
        "| clients | dc2 direct reads/s | p50 | p99 | errors | through dc1 reads/s | p50 | p99 | errors | p50 ratio |"
    );
    println!("|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
    for r in table {
        println!("{r}");
    }
    Ok(())
}
