//! Handing leadership over on shutdown. openraft 0.9 has no leadership
//! transfer and its voters honour a leader lease, so the hand-over is: stop
//! taking writes, wait (bounded) until a voter holds every entry of the
//! log, stop, and tell that voter to campaign at once. It wins as soon as
//! the lease lapses, with nothing acknowledged missing.

use std::time::Duration;

use crate::consensus::Leadership;
use crate::rpc::peers::PeerClients;

/// Returns the voter that was told to take over, if any.
pub(crate) async fn prepare(leadership: &Leadership, limit: Duration) -> Option<String> {
    let node_id = leadership.node_id();
    let m = leadership.raft().metrics().borrow().clone();
    if m.current_leader != Some(node_id) {
        return None;
    }
    let membership = m.membership_config.membership().clone();
    let others: Vec<u64> = membership.voter_ids().filter(|id| *id != node_id).collect();
    if others.is_empty() {
        return None;
    }
    let last = m.last_log_index.unwrap_or(0);
    let deadline = tokio::time::Instant::now() + limit;
    let mut metrics = leadership.raft().metrics();
    let best = loop {
        let r = metrics.borrow().replication.clone().unwrap_or_default();
        let caught_up = others
            .iter()
            .filter_map(|id| r.get(id).map(|l| (*id, l.map(|l| l.index).unwrap_or(0))))
            .max_by_key(|(_, idx)| *idx);
        match caught_up {
            Some((id, idx)) if idx >= last => break Some(id),
            _ if tokio::time::Instant::now() >= deadline => break caught_up.map(|(id, _)| id),
            _ => {}
        }
        let _ = tokio::time::timeout_at(deadline, metrics.changed()).await;
    }?;
    let node = membership.get_node(&best)?.clone();
    tracing::info!(successor = %node.name, "handing leadership over");
    Some(node.raft_addr)
}

/// After this server stopped: nudge the successor to campaign now.
pub(crate) async fn nudge(peers: &PeerClients, successor_raft_addr: &str) {
    let r = peers
        .timeout_now(successor_raft_addr, Duration::from_secs(1))
        .await;
    if let Err(e) = r {
        tracing::debug!(error = %e, "successor did not take the nudge; it will campaign on its own");
    }
}
