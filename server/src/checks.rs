//! Health checks, run by the agent that owns them: here, a server's checks
//! of its own node (client agents run theirs in `tribune_client::agent`).
//! The probes and thresholds are shared (`tribune_client::checks`); TTL
//! expiry and alias checks read this server's catalog. Each check runs on
//! its interval with its timeout; only a change of status goes through Raft
//! (with the output that came with it).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tribune_client::api::HealthStatus;
use tribune_client::checks::{self as probe, Threshold};

use crate::catalog::command::Command;
use crate::catalog::model::{Check, CheckDefinition, CheckKind, Status};
use crate::catalog::validate::cap_output;
use crate::context::ServerContext;

/// Keeps one runner per check of this node, following the catalog.
pub(crate) async fn run(ctx: Arc<ServerContext>) {
    let mut runners: HashMap<String, (CheckDefinition, JoinHandle<()>)> = HashMap::new();
    let mut applied = ctx.state.applied();
    loop {
        let mine: Vec<Check> = {
            let d = ctx.state.read();
            d.catalog
                .checks_in(None, None)
                .into_iter()
                .filter(|c| c.node == ctx.node_name && c.definition.kind != CheckKind::Serf)
                .collect()
        };
        let ids: std::collections::HashSet<&str> = mine.iter().map(|c| c.id.as_str()).collect();
        runners.retain(|id, (_, h)| {
            let keep = ids.contains(id.as_str());
            if !keep {
                h.abort();
            }
            keep
        });
        for c in mine {
            let current = runners.get(&c.id).map(|(d, _)| d);
            if current != Some(&c.definition) {
                if let Some((_, h)) = runners.remove(&c.id) {
                    h.abort();
                }
                let h = tokio::spawn(run_one(ctx.clone(), c.id.clone(), c.definition.clone()));
                runners.insert(c.id, (c.definition, h));
            }
        }
        if applied.changed().await.is_err() {
            return;
        }
    }
}

async fn run_one(ctx: Arc<ServerContext>, id: String, def: CheckDefinition) {
    let interval = Duration::from_millis(def.interval_ms.max(1000));
    let timeout = Duration::from_millis(def.timeout_ms.max(100));
    let mut threshold = Threshold::new(def.success_before_passing, def.failures_before_critical);
    // TTL: when the check last changed, as this agent saw it.
    let mut last_seen: Option<(u64, tokio::time::Instant)> = None;
    loop {
        let current = ctx.state.read().catalog.check(&id).cloned();
        let Some(current) = current else { return };
        let result = match &def.kind {
            CheckKind::Http { url } => Some(probe::http(url, timeout).await),
            CheckKind::Tcp { address } => Some(probe::tcp(address, timeout).await),
            CheckKind::Grpc { target } => Some(probe::grpc(target, timeout).await),
            CheckKind::Alias { service_id } => Some(alias(&ctx, service_id)),
            CheckKind::Ttl { ttl_ms } => {
                let now = tokio::time::Instant::now();
                let since = match last_seen {
                    Some((idx, t)) if idx == current.modify_index => t,
                    _ => {
                        last_seen = Some((current.modify_index, now));
                        now
                    }
                };
                (now.duration_since(since) >= Duration::from_millis(*ttl_ms)
                    && current.status != Status::Critical)
                    .then(|| (HealthStatus::Critical, "TTL expired".to_string()))
            }
            CheckKind::Serf => None,
        };
        if let Some((result, output)) = result {
            let held = to_pb(current.status);
            let status = threshold.observe(held, result);
            let output = cap_output(&output);
            if probe::is_news(held, &current.output, status, &output) {
                let status = from_pb(status);
                let cmd = Command::CheckResult {
                    check_id: id.clone(),
                    status,
                    output,
                };
                if let Err(e) = ctx.propose(cmd).await {
                    tracing::warn!(check = %id, error = %e, "could not record a check result");
                }
            }
        }
        let wait = match def.kind {
            CheckKind::Ttl { .. } | CheckKind::Alias { .. } => Duration::from_secs(1),
            _ => interval,
        };
        tokio::time::sleep(wait).await;
    }
}

/// The aggregate health of another instance, from this server's catalog.
fn alias(ctx: &ServerContext, service_id: &str) -> probe::CheckResult {
    match ctx.state.read().catalog.instance_health(service_id) {
        Some(h) => (
            to_pb(h.status),
            format!("alias of {service_id}: {}", h.status.as_str()),
        ),
        None => (
            HealthStatus::Critical,
            format!("alias of {service_id}: no such instance"),
        ),
    }
}

fn to_pb(s: Status) -> HealthStatus {
    match s {
        Status::Passing => HealthStatus::Passing,
        Status::Warning => HealthStatus::Warning,
        Status::Critical => HealthStatus::Critical,
    }
}

fn from_pb(s: HealthStatus) -> Status {
    match s {
        HealthStatus::Passing => Status::Passing,
        HealthStatus::Warning => Status::Warning,
        _ => Status::Critical,
    }
}
