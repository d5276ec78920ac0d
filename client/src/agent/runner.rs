//! The client agent as a check host: its checks' state lives in the agent
//! (`LocalAgent::checks`), aliases read the servers, results go to the
//! servers with `Health/ReportCheck`. The runner itself is
//! `crate::checks::run`, shared with servers.

use std::time::Duration;

use super::{LocalAgent, lock};
use crate::api::{self, HealthStatus, check_definition::Kind};
use crate::checks::{CheckHost, CheckResult, CheckSpec, Held, Probe};

/// What the runner runs for a definition; `None` for a check no agent
/// runs (serf health is the servers' own).
pub(super) fn spec(def: &api::CheckDefinition) -> Option<CheckSpec> {
    let probe = match def.kind.as_ref()? {
        Kind::Http(url) => Probe::Http(url.clone()),
        Kind::Tcp(addr) => Probe::Tcp(addr.clone()),
        Kind::Grpc(target) => Probe::Grpc(target.clone()),
        Kind::AliasService(of) => Probe::Alias(of.clone()),
        Kind::TtlMs(ttl) => Probe::Ttl(Duration::from_millis(*ttl)),
        Kind::SerfHealth(_) => return None,
    };
    Some(CheckSpec::from_millis(
        probe,
        def.interval_ms,
        def.timeout_ms,
        def.success_before_passing,
        def.failures_before_critical,
    ))
}

impl CheckHost for LocalAgent {
    fn held(&self, id: &str) -> Option<Held> {
        lock(&self.checks).get(id).map(|st| Held {
            status: st.status,
            output: st.output.clone(),
            ttl_mark: st.ttl_renewals,
            reported: st.reported,
        })
    }

    /// The aggregate health of another instance, as the servers hold it.
    async fn alias(&self, of: &str) -> CheckResult {
        let res = match self.client().await {
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

    /// Keeps the result, then sends it; anti-entropy sends it again if
    /// this fails.
    async fn report(&self, id: &str, status: HealthStatus, output: String) {
        let service_id = {
            let mut states = lock(&self.checks);
            let Some(st) = states.get_mut(id) else { return };
            if st.status != status || st.output != output {
                st.status = status;
                st.output = output.clone();
                st.reported = false;
            }
            st.service_id.clone()
        };
        let sent = match self.client_for(&service_id).await {
            Ok(c) => c.report_check(id, status, &output).await,
            Err(e) => Err(e),
        };
        match sent {
            Ok(_) => {
                if let Some(st) = lock(&self.checks).get_mut(id)
                    && st.status == status
                    && st.output == output
                {
                    st.reported = true;
                }
            }
            Err(e) => tracing::warn!(check = %id, error = %e, "could not report a check result"),
        }
    }
}
