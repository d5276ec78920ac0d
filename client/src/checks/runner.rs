//! The one check runner, for servers (their own node's checks) and client
//! agents alike: one task per check probes on its interval, applies the
//! thresholds, expires TTLs and reports what is news. Where the check's
//! state is held, how an alias reads another instance and where a result
//! goes is the host's business ([`CheckHost`]).

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use super::{CheckResult, Threshold, cap_output, grpc, http, is_news, tcp};
use crate::api::HealthStatus;

/// What a check does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    /// An HTTP GET of this URL: 2xx passing, 429 warning, else critical.
    Http(String),
    /// A TCP connect to this `HOST:PORT`.
    Tcp(String),
    /// `grpc.health.v1` at this `HOST:PORT`.
    Grpc(String),
    /// Critical once this long passes without a TTL update.
    Ttl(Duration),
    /// The aggregate health of another instance, by ID.
    Alias(String),
}

/// A check as the runner needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckSpec {
    /// What the check does.
    pub probe: Probe,
    /// How often a probe runs.
    pub interval: Duration,
    /// How long one probe may take.
    pub timeout: Duration,
    /// Passing results in a row before the status turns passing.
    pub success_before_passing: u32,
    /// Failing results in a row before the status turns critical.
    pub failures_before_critical: u32,
}

impl CheckSpec {
    /// A spec from a definition's fields as both APIs store them
    /// (milliseconds; thresholds as counts).
    pub fn from_millis(
        probe: Probe,
        interval_ms: u64,
        timeout_ms: u64,
        success_before_passing: u32,
        failures_before_critical: u32,
    ) -> Self {
        CheckSpec {
            probe,
            interval: Duration::from_millis(interval_ms),
            timeout: Duration::from_millis(timeout_ms),
            success_before_passing,
            failures_before_critical,
        }
    }

    /// TTL and alias checks look every second; probes on their interval
    /// (at least a second), each with its timeout (at least 100 ms).
    fn wait(&self) -> Duration {
        match self.probe {
            Probe::Ttl(_) | Probe::Alias(_) => Duration::from_secs(1),
            _ => self.interval.max(Duration::from_secs(1)),
        }
    }
}

/// A check's state as its host holds it.
#[derive(Clone, Debug)]
pub struct Held {
    /// The status it holds.
    pub status: HealthStatus,
    /// The output that came with it.
    pub output: String,
    /// Moves whenever the TTL is renewed (TTL checks).
    pub ttl_mark: u64,
    /// The servers hold this status; when not, it is reported again.
    pub reported: bool,
}

/// Where a check runs.
pub trait CheckHost: Send + Sync + 'static {
    /// The check's state; `None` once it is gone (the runner stops).
    fn held(&self, id: &str) -> Option<Held>;
    /// The aggregate health of another instance.
    fn alias(&self, of: &str) -> impl Future<Output = CheckResult> + Send;
    /// A result that is news (or not yet reported): record it.
    fn report(&self, id: &str, status: HealthStatus, output: String) -> impl Future<Output = ()> + Send;
}

/// Runs check `id` until its host no longer holds it.
pub async fn run<H: CheckHost>(host: Arc<H>, id: String, spec: CheckSpec) {
    let timeout = spec.timeout.max(Duration::from_millis(100));
    let mut threshold = Threshold::new(spec.success_before_passing, spec.failures_before_critical);
    // TTL: since when the current mark has stood, as this runner saw it.
    let mut ttl_since: Option<(u64, tokio::time::Instant)> = None;
    loop {
        let Some(held) = host.held(&id) else { return };
        let result = match &spec.probe {
            Probe::Http(url) => Some(http(url, timeout).await),
            Probe::Tcp(addr) => Some(tcp(addr, timeout).await),
            Probe::Grpc(target) => Some(grpc(target, timeout).await),
            Probe::Alias(of) => Some(host.alias(of).await),
            Probe::Ttl(ttl) => {
                let now = tokio::time::Instant::now();
                let since = match ttl_since {
                    Some((mark, t)) if mark == held.ttl_mark => t,
                    _ => {
                        ttl_since = Some((held.ttl_mark, now));
                        now
                    }
                };
                (now.duration_since(since) >= *ttl && held.status != HealthStatus::Critical)
                    .then(|| (HealthStatus::Critical, "TTL expired".to_string()))
            }
        };
        if let Some((result, output)) = result {
            let status = threshold.observe(held.status, result);
            let output = cap_output(&output);
            if is_news(held.status, &held.output, status, &output) || !held.reported {
                if status != held.status {
                    tracing::info!(check = %id, from = ?held.status, to = ?status, "check changed");
                }
                host.report(&id, status, output).await;
            }
        }
        tokio::time::sleep(spec.wait()).await;
    }
}

/// One runner per check, following the set of checks a host holds.
#[derive(Default)]
pub struct Runners {
    running: HashMap<String, (CheckSpec, JoinHandle<()>)>,
}

impl Runners {
    /// Starts a runner for each new or changed check, stops the others.
    pub fn follow<H: CheckHost>(
        &mut self,
        host: &Arc<H>,
        checks: impl IntoIterator<Item = (String, CheckSpec)>,
    ) {
        let checks: HashMap<String, CheckSpec> = checks.into_iter().collect();
        self.running.retain(|id, (spec, h)| {
            let keep = checks.get(id) == Some(spec);
            if !keep {
                h.abort();
            }
            keep
        });
        for (id, spec) in checks {
            if self.running.contains_key(&id) {
                continue;
            }
            let h = tokio::spawn(run(host.clone(), id.clone(), spec.clone()));
            self.running.insert(id, (spec, h));
        }
    }
}

impl Drop for Runners {
    fn drop(&mut self) {
        for (_, h) in self.running.values() {
            h.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[derive(Default)]
    struct Host {
        held: Mutex<HashMap<String, Held>>,
        reports: Mutex<Vec<(String, HealthStatus, String)>>,
    }

    impl CheckHost for Host {
        fn held(&self, id: &str) -> Option<Held> {
            self.held.lock().unwrap().get(id).cloned()
        }
        async fn alias(&self, of: &str) -> CheckResult {
            (HealthStatus::Warning, format!("alias of {of}"))
        }
        async fn report(&self, id: &str, status: HealthStatus, output: String) {
            if let Some(h) = self.held.lock().unwrap().get_mut(id) {
                h.status = status;
                h.output = output.clone();
                h.reported = true;
            }
            self.reports.lock().unwrap().push((id.into(), status, output));
        }
    }

    fn spec(probe: Probe) -> CheckSpec {
        CheckSpec {
            probe,
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            success_before_passing: 0,
            failures_before_critical: 0,
        }
    }

    fn held(status: HealthStatus) -> Held {
        Held {
            status,
            output: String::new(),
            ttl_mark: 0,
            reported: true,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_ttl_expires_unless_renewed_and_is_reported_once() {
        let host = Arc::new(Host::default());
        host.held
            .lock()
            .unwrap()
            .insert("t".into(), held(HealthStatus::Passing));
        let task = tokio::spawn(run(
            host.clone(),
            "t".into(),
            spec(Probe::Ttl(Duration::from_secs(5))),
        ));
        // Renewed every 2 s for 10 s: never expires.
        for mark in 1..=5 {
            tokio::time::sleep(Duration::from_secs(2)).await;
            host.held.lock().unwrap().get_mut("t").unwrap().ttl_mark = mark;
        }
        assert!(host.reports.lock().unwrap().is_empty());
        tokio::time::sleep(Duration::from_secs(8)).await;
        let reports = host.reports.lock().unwrap().clone();
        assert_eq!(
            reports,
            [("t".to_string(), HealthStatus::Critical, "TTL expired".to_string())]
        );
        // Gone: the runner stops.
        host.held.lock().unwrap().clear();
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(task.is_finished());
    }

    #[tokio::test(start_paused = true)]
    async fn a_result_the_servers_lack_is_reported_again() {
        let host = Arc::new(Host::default());
        let mut h = held(HealthStatus::Warning);
        h.output = "alias of api-1".into();
        h.reported = false;
        host.held.lock().unwrap().insert("a".into(), h);
        tokio::spawn(run(host.clone(), "a".into(), spec(Probe::Alias("api-1".into()))));
        tokio::time::sleep(Duration::from_millis(1500)).await;
        // Same status and output, but not reported: sent once, then quiet.
        assert_eq!(host.reports.lock().unwrap().len(), 1);
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(host.reports.lock().unwrap().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn runners_follow_the_set_of_checks() {
        let host = Arc::new(Host::default());
        host.held
            .lock()
            .unwrap()
            .insert("a".into(), held(HealthStatus::Critical));
        let mut r = Runners::default();
        r.follow(&host, [("a".to_string(), spec(Probe::Alias("x".into())))]);
        assert_eq!(r.running.len(), 1);
        let first = r.running["a"].1.id();
        r.follow(&host, [("a".to_string(), spec(Probe::Alias("x".into())))]);
        assert_eq!(
            r.running["a"].1.id(),
            first,
            "an unchanged check keeps its runner"
        );
        r.follow(&host, [("a".to_string(), spec(Probe::Alias("y".into())))]);
        assert_ne!(r.running["a"].1.id(), first, "a changed check gets a new runner");
        r.follow(&host, []);
        assert!(r.running.is_empty());
    }
}
