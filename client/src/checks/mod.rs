//! What a health check does, wherever it runs (a server for its own node, a
//! client agent for its node): the probes, and the thresholds that turn a
//! run of results into a status change.

mod probe;
mod runner;
mod threshold;

pub use probe::{grpc, http, tcp};
pub use runner::{CheckHost, CheckSpec, Held, Probe, Runners, run};
pub use threshold::Threshold;

/// The most check output kept, in bytes (Consul keeps 4 KiB too).
pub const MAX_OUTPUT_LEN: usize = 4096;

/// Check output is kept, capped at [`MAX_OUTPUT_LEN`] on a character
/// boundary; servers and client agents cap it the same way.
pub fn cap_output(v: &str) -> String {
    if v.len() <= MAX_OUTPUT_LEN {
        return v.to_string();
    }
    let mut end = MAX_OUTPUT_LEN;
    while !v.is_char_boundary(end) {
        end -= 1;
    }
    v[..end].to_string()
}

/// A check result: a status and the output that explains it.
pub type CheckResult = (crate::api::HealthStatus, String);

/// Whether a result is news for the servers. Only a status change is:
/// output that varies run to run (timings, counters) would otherwise be a
/// Raft write per run. The first output is news too, so a check that keeps
/// the status it was registered with (critical) still says why.
pub fn is_news(
    held: crate::api::HealthStatus,
    held_output: &str,
    status: crate::api::HealthStatus,
    output: &str,
) -> bool {
    status != held || (held_output.is_empty() && !output.is_empty())
}
