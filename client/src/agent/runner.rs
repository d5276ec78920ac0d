//! One task per check of the agent's node: probe on the interval, apply
//! the thresholds, and tell the servers when the status changes (with the
//! output that came with it).

use std::sync::Arc;
use std::time::Duration;

use super::{LocalAgent, lock};
use crate::api::{self, HealthStatus, check_definition::Kind};
use crate::checks::{self, CheckResult, Threshold, cap_output};

pub(super) async fn run(agent: Arc<LocalAgent>, id: String, def: api::CheckDefinition) {
    let interval = Duration::from_millis(def.interval_ms.max(1000));
    let timeout = Duration::from_millis(def.timeout_ms.max(100));
    let mut threshold = Threshold::new(def.success_before_passing, def.failures_before_critical);
    let span = tracing::info_span!("check", check = %id);
    loop {
        let result = match &def.kind {
            Some(Kind::Http(url)) => Some(checks::http(url, timeout).await),
            Some(Kind::Tcp(addr)) => Some(checks::tcp(addr, timeout).await),
            Some(Kind::Grpc(target)) => Some(checks::grpc(target, timeout).await),
            Some(Kind::AliasService(of)) => Some(alias(&agent, of).await),
            Some(Kind::TtlMs(ttl)) => ttl_expired(&agent, &id, Duration::from_millis(*ttl)),
            Some(Kind::SerfHealth(_)) | None => return,
        };
        if let Some((result, output)) = result {
            record(&agent, &id, &mut threshold, result, &output, &span).await;
        }
        let wait = match def.kind {
            Some(Kind::TtlMs(_)) | Some(Kind::AliasService(_)) => Duration::from_secs(1),
            _ => interval,
        };
        tokio::time::sleep(wait).await;
    }
}

fn ttl_expired(agent: &LocalAgent, id: &str, ttl: Duration) -> Option<CheckResult> {
    let states = lock(&agent.checks);
    let st = states.get(id)?;
    (st.ttl_since.elapsed() >= ttl && st.status != HealthStatus::Critical)
        .then(|| (HealthStatus::Critical, "TTL expired".to_string()))
}

/// The aggregate health of another instance, as the servers hold it.
async fn alias(agent: &LocalAgent, of: &str) -> CheckResult {
    let res = match agent.client().await {
        Ok(c) => c.stale(true).get_instance(of).await,
        Err(e) => Err(e),
    };
    match res {
        Ok(r) => {
            let s = r
                .instance
                .map(|h| HealthStatus::try_from(h.status).unwrap_or(HealthStatus::Critical))
                .unwrap_or(HealthStatus::Critical);
            (s, format!("alias of {of}: {}", s.as_str_name()))
        }
        Err(e) if e.code() == Some(tonic::Code::NotFound) => {
            (HealthStatus::Critical, format!("alias of {of}: no such instance"))
        }
        Err(e) => (HealthStatus::Critical, format!("alias of {of}: {e}")),
    }
}

/// Keeps the result; sends it to the servers when it is news.
async fn record(
    agent: &LocalAgent,
    id: &str,
    threshold: &mut Threshold,
    result: HealthStatus,
    output: &str,
    span: &tracing::Span,
) {
    let output = cap_output(output);
    let send = {
        let mut states = lock(&agent.checks);
        let Some(st) = states.get_mut(id) else { return };
        let status = threshold.observe(st.status, result);
        if checks::is_news(st.status, &st.output, status, &output) {
            if status != st.status {
                span.in_scope(|| tracing::info!(from = ?st.status, to = ?status, "check changed"));
            }
            st.status = status;
            st.output = output.clone();
            st.reported = false;
        }
        (!st.reported).then_some(status)
    };
    let Some(status) = send else { return };
    let sent = match agent.client().await {
        Ok(c) => c.report_check(id, status, &output).await,
        Err(e) => Err(e),
    };
    match sent {
        Ok(_) => {
            if let Some(st) = lock(&agent.checks).get_mut(id)
                && st.status == status
                && st.output == output
            {
                st.reported = true;
            }
        }
        // Anti-entropy sends it again.
        Err(e) => span.in_scope(|| tracing::warn!(error = %e, "could not report a check result")),
    }
}
