//! `tribune-bench acl-cost`: what enforcement costs. Three fresh single
//! servers in one run: ACLs and TLS off; `--acl-enabled --default-policy
//! deny`, whose clients send a token of a policy with prefix rules (so
//! every write resolves the token and evaluates rules); and the same with
//! TLS, clients writing to 8503 and the server port on mutual TLS. The same
//! registrations at each concurrency, in turn.

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

/// A CA's two files in `dir`, as `tribune tls ca create` writes them.
pub(crate) fn write_ca(dir: &std::path::Path) -> Result<(PathBuf, PathBuf)> {
    let td = tribune_certs::trust_domain("0b3d5c1a-6f1e-4c3b-9a8e-2d7c6b5a4f30");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs() as i64;
    let root = tribune_certs::new_root(&td, "Tribune CA 1", 86_400, now)?;
    let (cert, key) = (dir.join("ca.pem"), dir.join("ca-key.pem"));
    std::fs::write(&cert, &root.cert_pem)?;
    std::fs::write(&key, &root.key_pem)?;
    Ok((cert, key))
}

/// A connector that trusts `ca` and checks the dialled name.
pub(crate) fn tls_to(ca: &std::path::Path) -> Result<tribune_client::tls::TlsConnector> {
    use tribune_client::tls::{ServerCheck, TlsConnector, Trust, client_config};
    let trust = Trust::from_file(&ca.display().to_string())?;
    Ok(TlsConnector::new(
        client_config(trust, ServerCheck::Dialled, None),
        None,
    ))
}

pub async fn run_cost(args: AclCostArgs) -> Result<()> {
    let acl = [
        "--acl-enabled",
        "--default-policy",
        "deny",
        "--initial-management-token",
        ROOT,
    ];
    let off = start_with(&args.tribune_bin, &[]).await?;
    let on = start_with(&args.tribune_bin, &acl).await?;
    let dir = tempfile::tempdir()?;
    let (ca, ca_key) = write_ca(dir.path())?;
    let tls_port = crate::servers::free_ports(1)?[0];
    let tls_addr = format!("127.0.0.1:{tls_port}");
    let (ca_s, key_s) = (ca.display().to_string(), ca_key.display().to_string());
    let mut secure_args = acl.to_vec();
    secure_args.extend([
        "--tls-ca-file",
        &ca_s,
        "--tls-ca-key-file",
        &key_s,
        "--grpc-tls-addr",
        &tls_addr,
    ]);
    let secure = start_with(&args.tribune_bin, &secure_args).await?;
    let token = writer_token(&on.grpc_addr).await?;
    let secure_token = writer_token(&secure.grpc_addr).await?;
    let tls = tls_to(&ca)?;
    // The server signs its certificate a moment after it leads.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while Client::connect_any_with(std::slice::from_ref(&tls_addr), Some(&tls))
        .await
        .is_err()
    {
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("{tls_addr} never completed a TLS handshake");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let window = Window {
        warmup: args.warmup,
        measure: args.duration,
    };
    let meta = Arc::new("x".repeat(crate::PAYLOAD_BYTES));
    println!(
        "| clients | off writes/s | p50 | ACLs writes/s | p50 | ACLs+TLS writes/s | p50 | ACLs/off | ACLs+TLS/off |"
    );
    println!("|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
    for &n in &args.clients {
        let mut results = Vec::new();
        for (addr, tok, tls, tag) in [
            (&off.grpc_addr, None, None, "off"),
            (&on.grpc_addr, Some(token.as_str()), None, "on"),
            (&tls_addr, Some(secure_token.as_str()), Some(&tls), "tls"),
        ] {
            let mut writers = Vec::with_capacity(n);
            for i in 0..n {
                writers
                    .push(Registrar::with_tls(addr, format!("{tag}{n}-{i}-"), meta.clone(), tok, tls).await?);
            }
            let s = run(writers, window).await?;
            if s.errors > 0 {
                anyhow::bail!("{} writes failed with ACLs {tag}", s.errors);
            }
            results.push(s);
        }
        let ms = |d: Option<Duration>| d.map_or("-".into(), |d| format!("{:.2} ms", d.as_secs_f64() * 1e3));
        println!(
            "| {n} | {:.0} | {} | {:.0} | {} | {:.0} | {} | {:.2}x | {:.2}x |",
            results[0].throughput(),
            ms(results[0].percentile(50.0)),
            results[1].throughput(),
            ms(results[1].percentile(50.0)),
            results[2].throughput(),
            ms(results[2].percentile(50.0)),
            results[1].throughput() / results[0].throughput(),
            results[2].throughput() / results[0].throughput()
        );
    }
    off.server.stop().await?;
    on.server.stop().await?;
    secure.server.stop().await?;
    Ok(())
}
