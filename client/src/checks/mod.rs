//! What a health check does, wherever it runs (a server for its own node, a
//! client agent for its node): the probes, and the thresholds that turn a
//! run of results into a status change.

mod probe;
mod threshold;

pub use probe::{grpc, http, tcp};
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

/// The aggregate of an instance's checks, as an alias check mirrors it:
/// the worst of them, passing when there are none.
pub fn worst(statuses: impl IntoIterator<Item = crate::api::HealthStatus>) -> crate::api::HealthStatus {
    use crate::api::HealthStatus as H;
    let rank = |s: H| match s {
        H::Passing => 0,
        H::Warning => 1,
        _ => 2,
    };
    statuses
        .into_iter()
        .fold(H::Passing, |a, b| if rank(b) > rank(a) { b } else { a })
}
