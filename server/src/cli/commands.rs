//! One function per command; each prints its result and returns errors for
//! `main` to report on stderr.

use std::path::Path;

use anyhow::Context;
use tribune_client::{Client, WatchState, api};

use super::output::{emit, json_line, table};
use super::register::RegisterArgs;
use super::{ClientArgs, Format};
use crate::config::{AgentConfig, Settings};

pub(super) async fn agent(flags: AgentConfig) -> anyhow::Result<()> {
    let cfg = AgentConfig::load(flags)?;
    crate::logging::init(cfg.log_level.as_deref(), cfg.log_json)?;
    let settings = Settings::resolve(&cfg)?;
    if settings.server {
        crate::agent::run(settings, shutdown_signal()).await
    } else {
        crate::client_agent::run(settings, shutdown_signal()).await
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

pub(super) async fn connect(c: &ClientArgs) -> anyhow::Result<Client> {
    let addrs: Vec<String> = c
        .grpc_addr
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(String::from)
        .collect();
    let tls = match c.ca_file() {
        Some(path) => {
            use tribune_client::tls::{ServerCheck, TlsConnector, Trust, client_config};
            let trust = Trust::from_file(&path.display().to_string()).context("--ca-file")?;
            let check = ServerCheck::named(c.tls_server_name.as_deref()).context("--tls-server-name")?;
            Some(TlsConnector::new(client_config(trust, check, None), None))
        }
        None => None,
    };
    let mut client = Client::connect_any_with(&addrs, tls.as_ref())
        .await?
        .stale(c.stale);
    if let Some(t) = &c.token {
        client = client.with_token(t)?;
    }
    if let Some(dc) = &c.datacenter {
        client = client.datacenter(dc)?;
    }
    Ok(client)
}

pub(super) async fn register(c: &ClientArgs, args: RegisterArgs) -> anyhow::Result<()> {
    let req = args.definition()?.to_request()?;
    let client = connect(c).await?;
    let resp = client.register(req).await?;
    emit(c.format, &resp, || {
        let sidecar = if resp.sidecar_id.is_empty() {
            String::new()
        } else {
            format!(" with sidecar {}", resp.sidecar_id)
        };
        println!("Registered {}{sidecar} at index {}", resp.service_id, resp.index);
    })
}

pub(super) async fn deregister(c: &ClientArgs, id: &str) -> anyhow::Result<()> {
    let resp = connect(c).await?.deregister(id).await?;
    emit(c.format, &resp, || {
        println!(
            "Deregistered {} at index {}",
            resp.removed_ids.join(", "),
            resp.index
        )
    })
}

fn status_name(s: i32) -> &'static str {
    match api::HealthStatus::try_from(s) {
        Ok(api::HealthStatus::Passing) => "passing",
        Ok(api::HealthStatus::Warning) => "warning",
        Ok(api::HealthStatus::Critical) => "critical",
        _ => "unknown",
    }
}

fn kind_name(k: i32) -> &'static str {
    match api::ServiceKind::try_from(k) {
        Ok(api::ServiceKind::SidecarProxy) => "sidecar-proxy",
        Ok(api::ServiceKind::MeshGateway) => "mesh-gateway",
        _ => "typical",
    }
}

pub(super) async fn catalog_services(c: &ClientArgs) -> anyhow::Result<()> {
    let resp = connect(c).await?.list_services().await?;
    emit(c.format, &resp, || {
        let rows: Vec<Vec<String>> = resp
            .services
            .iter()
            .map(|s| {
                vec![
                    s.name.clone(),
                    kind_name(s.kind).into(),
                    s.instances.to_string(),
                    s.passing.to_string(),
                    s.tags.join(","),
                ]
            })
            .collect();
        table(&["NAME", "KIND", "INSTANCES", "PASSING", "TAGS"], &rows);
    })
}

pub(super) async fn catalog_nodes(c: &ClientArgs) -> anyhow::Result<()> {
    let resp = connect(c).await?.list_nodes().await?;
    emit(c.format, &resp, || {
        let rows: Vec<Vec<String>> = resp
            .nodes
            .iter()
            .map(|n| {
                vec![
                    n.name.clone(),
                    n.address.clone(),
                    n.datacenter.clone(),
                    n.modify_index.to_string(),
                ]
            })
            .collect();
        table(&["NODE", "ADDRESS", "DATACENTER", "INDEX"], &rows);
    })
}

pub(super) async fn replication_status(c: &ClientArgs) -> anyhow::Result<()> {
    let resp = connect(c).await?.replication_status().await?;
    emit(c.format, &resp, || {
        println!(
            "Datacenter: {}  Primary: {}",
            resp.datacenter, resp.primary_datacenter
        );
        let rows: Vec<Vec<String>> = resp
            .kinds
            .iter()
            .map(|k| {
                vec![
                    k.kind.clone(),
                    if k.enabled { "yes" } else { "no (primary)" }.to_string(),
                    k.index.to_string(),
                    k.seconds_since_success
                        .map_or_else(|| "never".to_string(), |s| format!("{s:.1}s ago")),
                    k.last_error.clone(),
                ]
            })
            .collect();
        table(
            &[
                "KIND",
                "REPLICATING",
                "PRIMARY INDEX",
                "LAST SUCCESS",
                "LAST ERROR",
            ],
            &rows,
        );
    })
}

pub(super) async fn catalog_datacenters(c: &ClientArgs) -> anyhow::Result<()> {
    let dcs = connect(c).await?.list_datacenters().await?;
    emit(c.format, &dcs, || {
        for dc in &dcs {
            println!("{dc}");
        }
    })
}

fn instance_row(h: &api::InstanceHealth) -> Vec<String> {
    let s = h.service.clone().unwrap_or_default();
    vec![
        s.id,
        s.node,
        format!("{}:{}", s.address, s.port),
        kind_name(s.kind).into(),
        status_name(h.status).into(),
        s.tags.join(","),
    ]
}

const INSTANCE_HEADERS: [&str; 6] = ["ID", "NODE", "ADDRESS", "KIND", "STATUS", "TAGS"];

pub(super) async fn catalog_service(c: &ClientArgs, name: &str, passing: bool) -> anyhow::Result<()> {
    let resp = connect(c).await?.get_service(name, passing).await?;
    emit(c.format, &resp, || {
        let rows: Vec<Vec<String>> = resp.instances.iter().map(instance_row).collect();
        table(&INSTANCE_HEADERS, &rows);
    })
}

pub(super) async fn watch_service(c: &ClientArgs, name: &str, from_index: u64) -> anyhow::Result<()> {
    let mut stream = connect(c).await?.watch_service(name, from_index).await?;
    let mut state = WatchState::default();
    while let Some(ev) = stream.message().await? {
        state.apply(&ev);
        match c.format {
            Format::Json => json_line(&ev)?,
            Format::Table => {
                let what = if ev.snapshot { "snapshot" } else { "change" };
                println!(
                    "==> index {} ({what}): {} instance(s)",
                    ev.index,
                    state.instances.len()
                );
                for h in &ev.upserts {
                    let r = instance_row(h);
                    println!("  + {}  {}  {}  {}", r[0], r[2], r[3], r[4]);
                }
                for id in &ev.removed_ids {
                    println!("  - {id}");
                }
            }
        }
    }
    Ok(())
}

pub(super) async fn check(
    c: &ClientArgs,
    id: &str,
    status: api::HealthStatus,
    note: &str,
) -> anyhow::Result<()> {
    let resp = connect(c).await?.update_ttl(id, status, note).await?;
    emit(c.format, &resp, || {
        println!(
            "Check {id} is {} (index {})",
            status_name(status as i32),
            resp.index
        )
    })
}

pub(super) async fn raft_list_peers(c: &ClientArgs) -> anyhow::Result<()> {
    let resp = connect(c).await?.raft_peers().await?;
    emit(c.format, &resp, || {
        let rows: Vec<Vec<String>> = resp
            .peers
            .iter()
            .map(|p| {
                vec![
                    p.node.clone(),
                    p.id.to_string(),
                    p.address.clone(),
                    if p.leader { "leader" } else { "follower" }.into(),
                    p.voter.to_string(),
                ]
            })
            .collect();
        table(&["NODE", "ID", "ADDRESS", "STATE", "VOTER"], &rows);
        println!(
            "term {}  last log index {}  applied index {}",
            resp.term, resp.last_log_index, resp.applied_index
        );
    })
}

pub(super) async fn snapshot_save(c: &ClientArgs, file: &Path) -> anyhow::Result<()> {
    let client = connect(c).await?;
    let tmp = file.with_extension("partial");
    // A backup holds the CA's keys and the ACL state: the owner's alone.
    let mut out = tokio::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .await
        .with_context(|| format!("creating {}", tmp.display()))?;
    let n = client.snapshot_save(&mut out).await?;
    out.sync_all().await?;
    tokio::fs::rename(&tmp, file)
        .await
        .with_context(|| format!("writing {}", file.display()))?;
    let v = serde_json::json!({ "file": file.display().to_string(), "bytes": n });
    emit(c.format, &v, || {
        println!("Saved snapshot to {} ({n} bytes)", file.display())
    })
}

pub(super) async fn snapshot_restore(c: &ClientArgs, file: &Path) -> anyhow::Result<()> {
    let bytes = tokio::fs::read(file)
        .await
        .with_context(|| format!("reading {}", file.display()))?;
    let resp = connect(c).await?.snapshot_restore(bytes).await?;
    emit(c.format, &resp, || {
        println!(
            "Restored snapshot taken at index {} (applied at index {})",
            resp.snapshot_index, resp.index
        )
    })
}

pub(super) async fn raft_remove_peer(c: &ClientArgs, node: &str) -> anyhow::Result<()> {
    let resp = connect(c).await?.raft_remove_peer(node).await?;
    emit(c.format, &resp, || {
        println!(
            "Removed {node} from the Raft configuration at index {}",
            resp.index
        )
    })
}

pub(super) async fn autopilot_state(c: &ClientArgs) -> anyhow::Result<()> {
    let resp = connect(c).await?.autopilot_state().await?;
    emit(c.format, &resp, || {
        println!(
            "Healthy: {}  Failure tolerance: {}  Leader last index: {}",
            resp.healthy, resp.failure_tolerance, resp.leader_last_index
        );
        let rows: Vec<Vec<String>> = resp
            .servers
            .iter()
            .map(|s| {
                vec![
                    s.node.clone(),
                    s.address.clone(),
                    if s.leader {
                        "leader"
                    } else if s.voter {
                        "voter"
                    } else {
                        "learner"
                    }
                    .into(),
                    if s.healthy { "healthy" } else { "unhealthy" }.into(),
                    s.matched_index.to_string(),
                    s.gossip.clone(),
                ]
            })
            .collect();
        table(
            &["NODE", "ADDRESS", "ROLE", "HEALTH", "MATCHED INDEX", "GOSSIP"],
            &rows,
        );
    })
}

pub(super) async fn keyring(c: &ClientArgs, op: api::KeyringOp, key: &str) -> anyhow::Result<()> {
    let resp = connect(c).await?.keyring(op, key).await?;
    emit(c.format, &resp, || {
        if op == api::KeyringOp::List {
            // Per key: on how many members, and as how many members' primary.
            let mut keys: std::collections::BTreeMap<&str, (usize, usize)> = Default::default();
            for m in resp.members.iter().filter(|m| m.ok) {
                for (i, k) in m.keys.iter().enumerate() {
                    let e = keys.entry(k.as_str()).or_default();
                    e.0 += 1;
                    e.1 += usize::from(i == 0);
                }
            }
            let total = resp.members.len();
            let rows: Vec<Vec<String>> = keys
                .iter()
                .map(|(k, (on, primary))| {
                    vec![
                        k.to_string(),
                        format!("{on}/{total}"),
                        format!("{primary}/{total}"),
                    ]
                })
                .collect();
            table(&["KEY", "MEMBERS", "PRIMARY ON"], &rows);
        } else {
            let ok = resp.members.iter().filter(|m| m.ok).count();
            println!("Done on {ok} of {} members", resp.members.len());
        }
    })?;
    let failed: Vec<String> = resp
        .members
        .iter()
        .filter(|m| !m.ok)
        .map(|m| format!("{}: {}", m.node, m.error))
        .collect();
    if !failed.is_empty() {
        anyhow::bail!(
            "the keyring operation failed on {} of {} members:\n  {}",
            failed.len(),
            resp.members.len(),
            failed.join("\n  ")
        );
    }
    Ok(())
}

pub(super) async fn members(c: &ClientArgs, wan: bool) -> anyhow::Result<()> {
    let client = connect(c).await?;
    let resp = if wan {
        client.wan_members().await?
    } else {
        client.members().await?
    };
    emit(c.format, &resp, || {
        let rows: Vec<Vec<String>> = resp
            .members
            .iter()
            .map(|m| {
                vec![
                    m.name.clone(),
                    m.address.clone(),
                    m.state.clone(),
                    m.role.clone(),
                    m.datacenter.clone(),
                    m.version.clone(),
                ]
            })
            .collect();
        table(&["NODE", "ADDRESS", "STATUS", "ROLE", "DC", "VERSION"], &rows);
    })
}
