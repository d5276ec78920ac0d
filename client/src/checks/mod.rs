//! What a health check does, wherever it runs (a server for its own node, a
//! client agent for its node): the probes, and the thresholds that turn a
//! run of results into a status change.

mod probe;
mod threshold;

pub use probe::{grpc, http, tcp};
pub use threshold::Threshold;

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
