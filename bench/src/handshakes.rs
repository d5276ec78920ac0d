//! `tribune-bench tls-handshakes`: full TLS handshakes per second on a
//! server's gRPC TLS port (8503). Each connection is new and shares no
//! session cache with any other, so every handshake is a full one (an
//! ECDHE exchange and an ECDSA P-256 signature on the server); each client
//! dials, completes the handshake and hangs up, in a closed loop.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tribune_client::Client;
use tribune_client::tls::{ServerCheck, TlsConnector, Trust, certs_from_pem, client_config};

use crate::tribune::start_with;

#[derive(clap::Args)]
pub struct HandshakeArgs {
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/release/tribune"))]
    tribune_bin: PathBuf,
    #[arg(long, value_delimiter = ',', default_value = "1,4,16")]
    clients: Vec<usize>,
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    duration: Duration,
}

pub async fn run(args: HandshakeArgs) -> Result<()> {
    let port = crate::servers::free_ports(1)?[0];
    let addr = format!("127.0.0.1:{port}");
    let server = start_with(&args.tribune_bin, &["--grpc-tls-addr", &addr]).await?;
    let roots = Client::connect(&server.grpc_addr).await?.ca_roots().await?;
    let mut ders = Vec::new();
    for r in &roots.roots {
        ders.extend(certs_from_pem(&r.cert_pem, "CA root")?);
    }
    let trust = Trust::new(ders);
    let fresh = || TlsConnector::new(client_config(trust.clone(), ServerCheck::Dialled, None), None);
    // The server signs its certificate a moment after it leads.
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Err(e) = fresh().handshake(&addr).await {
        if Instant::now() > deadline {
            return Err(e).context("no TLS handshake completed");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("| clients | full handshakes/s | p50 | p99 |");
    println!("|--:|--:|--:|--:|");
    for &n in &args.clients {
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for _ in 0..n {
            let (stop, addr, trust) = (stop.clone(), addr.clone(), trust.clone());
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let c = TlsConnector::new(client_config(trust.clone(), ServerCheck::Dialled, None), None);
                    let t = Instant::now();
                    c.handshake(&addr).await?;
                    lat.push(t.elapsed());
                }
                anyhow::Ok(lat)
            }));
        }
        let started = Instant::now();
        tokio::time::sleep(args.duration).await;
        stop.store(true, Ordering::Relaxed);
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await??);
        }
        let secs = started.elapsed().as_secs_f64();
        all.sort();
        let pct = |p: f64| {
            all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
                .map_or("-".into(), |d| format!("{:.2} ms", d.as_secs_f64() * 1e3))
        };
        println!(
            "| {n} | {:.0} | {} | {} |",
            all.len() as f64 / secs,
            pct(0.5),
            pct(0.99)
        );
    }
    server.server.stop().await?;
    Ok(())
}
