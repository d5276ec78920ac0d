//! `tribune-bench acl-cost`: what enforcement costs. Two fresh single
//! servers in one run, one with ACLs off and one with `--acl-enabled
//! --default-policy deny`, whose clients send a token of a policy with
//! prefix rules (so every write resolves the token and evaluates rules);
//! the same registrations at each concurrency, alternating.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tribune_client::Client;

use crate::load::{Window, run};
use crate::tribune::{Registrar, start_with};

#[derive(clap::Args)]
pub struct AclCostArgs {
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/release/tribune"))]
    tribune_bin: PathBuf,
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    clients: Vec<usize>,
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    duration: Duration,
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1s")]
    warmup: Duration,
}

const ROOT: &str = "7d3f1b2c-9a4e-4f0a-8c1d-2e3f4a5b6c7d";

/// A token that may write `bench` instances through prefix rules.
async fn writer_token(addr: &str) -> Result<String> {
    let root = Client::connect(addr).await?.with_token(ROOT)?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match root.acl_whoami().await {
            Ok(_) => break,
            Err(e) if tokio::time::Instant::now() > deadline => {
                return Err(e).context("the initial management token never appeared");
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let rules = "service_prefix \"\" { policy = \"read\" }\nservice_prefix \"ben\" { policy = \"write\" }\nnode_prefix \"\" { policy = \"write\" }\n";
    root.acl_policy_create("bench-writer", "", rules).await?;
    let t = root
        .acl_token_create(tribune_client::api::AclTokenCreateRequest {
            policies: vec!["bench-writer".into()],
            ..Default::default()
        })
        .await?;
    Ok(t.secret_id)
}

pub async fn run_cost(args: AclCostArgs) -> Result<()> {
    let off = start_with(&args.tribune_bin, &[]).await?;
    let on = start_with(
        &args.tribune_bin,
        &[
            "--acl-enabled",
            "--default-policy",
            "deny",
            "--initial-management-token",
            ROOT,
        ],
    )
    .await?;
    let token = writer_token(&on.grpc_addr).await?;
    let window = Window {
        warmup: args.warmup,
        measure: args.duration,
    };
    let meta = Arc::new("x".repeat(crate::PAYLOAD_BYTES));
    println!("| clients | ACLs off writes/s | p50 | ACLs on writes/s | p50 | on/off |");
    println!("|--:|--:|--:|--:|--:|--:|");
    for &n in &args.clients {
        let mut results = Vec::new();
        for (addr, tok, tag) in [
            (&off.grpc_addr, None, "off"),
            (&on.grpc_addr, Some(token.as_str()), "on"),
        ] {
            let mut writers = Vec::with_capacity(n);
            for i in 0..n {
                writers.push(Registrar::with_token(addr, format!("{tag}{n}-{i}-"), meta.clone(), tok).await?);
            }
            let s = run(writers, window).await?;
            if s.errors > 0 {
                anyhow::bail!("{} writes failed with ACLs {tag}", s.errors);
            }
            results.push(s);
        }
        let ms = |d: Option<Duration>| d.map_or("-".into(), |d| format!("{:.2} ms", d.as_secs_f64() * 1e3));
        println!(
            "| {n} | {:.0} | {} | {:.0} | {} | {:.2}x |",
            results[0].throughput(),
            ms(results[0].percentile(50.0)),
            results[1].throughput(),
            ms(results[1].percentile(50.0)),
            results[1].throughput() / results[0].throughput()
        );
    }
    off.server.stop().await?;
    on.server.stop().await?;
    Ok(())
}
