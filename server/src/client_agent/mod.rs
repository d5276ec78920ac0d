//! The composition root of a client agent (`tribune agent` without
//! `--server`): LAN gossip as a client member, the owned services and their
//! checks (`tribune_client::agent`), the gRPC port for the apps on this
//! node, and a small HTTP port. Registration, deregistration and TTL
//! updates are handled here; every other call, xDS included, is forwarded
//! to a server as it is (`forward`).

mod api;
mod forward;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Json;
use axum::extract::State;
use axum::routing::get;
use tribune_client::agent::{AgentSettings, LocalAgent};
use tribune_client::gossip::{Gossip, Role};

use crate::agent::{bind, prepare_data_dir};
use crate::config::Settings;

/// Runs a client agent until `shutdown` resolves.
pub(crate) async fn run(settings: Settings, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let data_dir = settings
        .data_dir
        .clone()
        .context("a client agent needs --data-dir")?;
    prepare_data_dir(&data_dir)?;
    let grpc_listener = bind(
        "gRPC",
        settings.grpc_addr.context(
            "--grpc-addr \"\": a client agent serves the apps on its node there and cannot turn it off",
        )?,
    )
    .await?;
    let http_listener = bind("HTTP", settings.http_addr).await?;
    let grpc_addr = grpc_listener.local_addr()?;
    let http_addr = http_listener.local_addr()?;
    let gossip = Gossip::start(
        crate::agent::gossip_member(&settings, Role::Client, String::new(), Some(grpc_addr), None),
        settings.retry_join.clone(),
        crate::agent::gossip_config(&settings, &data_dir)?,
    )
    .await?;
    // With a CA file the agent calls the servers' server port with mutual
    // TLS, presenting the certificate auto-encrypt gets it.
    let agent_tls = crate::tls::AgentTls::new(&settings.tls)?;
    let agent = LocalAgent::start(
        AgentSettings {
            node: settings.node.clone(),
            datacenter: settings.datacenter.clone(),
            address: settings.bind.to_string(),
            data_dir: data_dir.clone(),
            anti_entropy_interval: settings.anti_entropy_interval,
            token: settings.acl.agent_token.clone(),
            server_tls: agent_tls.server_port_connector(None),
        },
        gossip.clone(),
    )
    .context("loading the services this agent owns")?;
    if agent_tls.mutual {
        let agent = agent.clone();
        tokio::spawn(crate::tls::auto_encrypt::run(
            Arc::new(crate::tls::auto_encrypt::AutoEncrypt {
                tls: agent_tls.clone(),
                node: settings.node.clone(),
                token: settings.acl.agent_token.clone(),
            }),
            move || agent.servers().server_addrs(),
        ));
    }

    let (stop_tx, stopped) = crate::agent::stop_signal();
    let api_server = tonic::transport::Server::builder()
        .trace_fn(|req| tracing::info_span!("grpc_request", path = %req.uri().path()))
        .add_routes(api::routes(
            agent.clone(),
            gossip.clone(),
            settings.datacenter.clone(),
        )?)
        .serve_with_incoming_shutdown(crate::agent::grpc_incoming(grpc_listener), stopped());
    let http_server = axum::serve(http_listener, http_router(agent.clone(), gossip.clone()))
        .with_graceful_shutdown(stopped());
    let servers = tokio::spawn(async move {
        let (a, b) = tokio::join!(api_server, http_server);
        a.context("gRPC listener")?;
        b.context("HTTP listener")?;
        anyhow::Ok(())
    });

    println!("==> Tribune agent running!");
    println!("         Version: {}", env!("CARGO_PKG_VERSION"));
    println!("            Node: {}", settings.node);
    println!("      Datacenter: {}", settings.datacenter);
    println!("          Server: false (client agent)");
    println!("        Data dir: {}", data_dir.display());
    println!("      gRPC / xDS: {grpc_addr}");
    println!("            HTTP: {http_addr}");
    println!("      LAN gossip: {}", gossip.me().gossip_addr);

    {
        let agent = agent.clone();
        tokio::spawn(async move {
            agent.wait_synced().await;
            println!("==> Ready: in sync with the servers");
        });
    }

    shutdown.await;
    tracing::info!("leaving");
    // Gossip first: while the node is still alive in gossip the leader
    // would register it again.
    gossip.leave().await;
    agent.leave().await;
    let _ = stop_tx.send(true);
    match tokio::time::timeout(Duration::from_secs(5), servers).await {
        Ok(Ok(res)) => res?,
        Ok(Err(e)) => tracing::warn!(error = %e, "listener task failed"),
        Err(_) => tracing::warn!("listeners did not drain within 5s"),
    }
    Ok(())
}

#[derive(Clone)]
struct HttpState {
    agent: Arc<LocalAgent>,
    gossip: Gossip,
}

fn http_router(agent: Arc<LocalAgent>, gossip: Gossip) -> axum::Router {
    axum::Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/v1/agent/self", get(agent_self))
        .with_state(HttpState { agent, gossip })
}

async fn agent_self(State(s): State<HttpState>) -> Json<serde_json::Value> {
    let me = s.gossip.me();
    let servers: Vec<String> = s
        .gossip
        .alive(Role::Server)
        .into_iter()
        .map(|m| m.grpc_addr)
        .collect();
    Json(serde_json::json!({
        "node": me.name,
        "datacenter": me.datacenter,
        "server": false,
        "grpc_addr": me.grpc_addr,
        "gossip_addr": me.gossip_addr.to_string(),
        "servers": servers,
        "services": s.agent.service_count(),
        "gossip_encrypted": s.gossip.encrypted(),
        "gossip_dropped_packets": s.gossip.dropped_packets(),
    }))
}
