//! A server as a check host for its own node's checks (client agents run
//! theirs in `tribune_client::agent`): the runner is
//! `tribune_client::checks::run`, shared with client agents. The state is
//! this server's catalog, an alias reads it too, and a result is a
//! `Command::CheckResult` through Raft (only news: a status change, or the
//! first output).

use std::sync::Arc;
use std::time::Duration;

use tribune_client::api::HealthStatus;
use tribune_client::checks::{CheckHost, CheckResult, CheckSpec, Held, Probe, Runners};

use crate::catalog::command::Command;
use crate::catalog::model::{CheckDefinition, CheckKind, Status};
use crate::consensus::Writer;
use crate::raft::state_machine::Shared;

/// The check host of a server: its state view and where writes go.
struct ServerChecks {
    state: Arc<Shared>,
    writer: Writer,
}

/// Keeps one runner per check of node `node_name`, following the catalog.
pub(crate) async fn run(node_name: String, state: Arc<Shared>, writer: Writer) {
    let mut applied = state.applied();
    let host = Arc::new(ServerChecks { state, writer });
    let mut runners = Runners::default();
    loop {
        let mine: Vec<(String, CheckSpec)> = {
            let d = host.state.read();
            d.catalog
                .checks_on(&node_name)
                .filter_map(|c| spec(&c.definition).map(|s| (c.id.clone(), s)))
                .collect()
        };
        runners.follow(&host, mine);
        if applied.changed().await.is_err() {
            return;
        }
    }
}

/// What the runner runs; `None` for serf health, which the leader sets.
fn spec(def: &CheckDefinition) -> Option<CheckSpec> {
    let probe = match &def.kind {
        CheckKind::Http { url } => Probe::Http(url.clone()),
        CheckKind::Tcp { address } => Probe::Tcp(address.clone()),
        CheckKind::Grpc { target } => Probe::Grpc(target.clone()),
        CheckKind::Alias { service_id } => Probe::Alias(service_id.clone()),
        CheckKind::Ttl { ttl_ms } => Probe::Ttl(Duration::from_millis(*ttl_ms)),
        CheckKind::Serf => return None,
    };
    Some(CheckSpec::from_millis(
        probe,
        def.interval_ms,
        def.timeout_ms,
        def.success_before_passing,
        def.failures_before_critical,
    ))
}

impl CheckHost for ServerChecks {
    /// An explicit TTL update always records a new modify index: that is
    /// the TTL mark.
    fn held(&self, id: &str) -> Option<Held> {
        let d = self.state.read();
        d.catalog.check(id).map(|c| Held {
            status: to_pb(c.status),
            output: c.output.clone(),
            ttl_mark: c.modify_index,
            reported: true,
        })
    }

    /// The aggregate health of another instance, from this server's catalog.
    async fn alias(&self, service_id: &str) -> CheckResult {
        match self.state.read().catalog.instance_health(service_id) {
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

    async fn report(&self, id: &str, status: HealthStatus, output: String) {
        let cmd = Command::CheckResult {
            check_id: id.to_string(),
            status: from_pb(status),
            output,
        };
        if let Err(e) = self.writer.propose(cmd).await {
            tracing::warn!(check = %id, error = %e, "could not record a check result");
        }
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
