//! Autopilot, on the leader: servers that gossip but are not in the Raft
//! configuration join as learners and become voters once caught up;
//! optionally, voters that gossip has seen dead for longer than a threshold
//! are removed (never below a quorum of live voters). Also reports each
//! server's health and the failure tolerance.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::ChangeMembers;
use tribune_client::gossip::{Gossip, MemberState, Role};
use tribune_proto::v1 as pb;

use crate::raft::{NodeId, Raft, ServerNode, node_id_for};

/// What autopilot takes: Raft (membership changes), this server's ID and
/// which datacenter's servers count.
pub(crate) struct Autopilot {
    pub(crate) raft: Raft,
    pub(crate) node_id: NodeId,
    pub(crate) datacenter: String,
}

pub(crate) async fn run(ctx: Arc<Autopilot>, gossip: Gossip, cleanup_dead_after: Option<Duration>) {
    let mut changes = gossip.changes();
    let mut dead_since: BTreeMap<u64, Instant> = BTreeMap::new();
    loop {
        let leads = ctx.raft.metrics().borrow().current_leader == Some(ctx.node_id);
        if leads {
            add_new_servers(&ctx, &gossip).await;
            if let Some(after) = cleanup_dead_after {
                remove_dead_servers(&ctx, &gossip, after, &mut dead_since).await;
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), changes.changed()).await;
    }
}

async fn add_new_servers(ctx: &Autopilot, gossip: &Gossip) {
    let membership = ctx.raft.metrics().borrow().membership_config.membership().clone();
    let voters: BTreeSet<u64> = membership.voter_ids().collect();
    for m in gossip
        .alive(Role::Server)
        .into_iter()
        .filter(|m| m.datacenter == ctx.datacenter)
    {
        let id = node_id_for(&m.name);
        if voters.contains(&id) {
            continue;
        }
        let node = ServerNode {
            name: m.name.clone(),
            raft_addr: m.server_addr.clone(),
            grpc_addr: m.grpc_addr.clone(),
        };
        tracing::info!(server = %m.name, "adding a server: learner first");
        // Blocking: returns once the learner has caught up with the log.
        if let Err(e) = ctx.raft.add_learner(id, node, true).await {
            tracing::warn!(server = %m.name, error = %e, "could not add learner");
            continue;
        }
        match ctx
            .raft
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
            .await
        {
            Ok(_) => tracing::info!(server = %m.name, "server is now a voter"),
            Err(e) => tracing::warn!(server = %m.name, error = %e, "could not promote learner"),
        }
    }
}

async fn remove_dead_servers(
    ctx: &Autopilot,
    gossip: &Gossip,
    after: Duration,
    dead_since: &mut BTreeMap<u64, Instant>,
) {
    let membership = ctx.raft.metrics().borrow().membership_config.membership().clone();
    let voters: BTreeSet<u64> = membership.voter_ids().collect();
    let down: BTreeSet<u64> = gossip
        .members()
        .into_iter()
        .filter(|m| m.member.role == Role::Server && matches!(m.state, MemberState::Down | MemberState::Left))
        .map(|m| node_id_for(&m.member.name))
        .filter(|id| voters.contains(id) && *id != ctx.node_id)
        .collect();
    dead_since.retain(|id, _| down.contains(id));
    let now = Instant::now();
    for id in &down {
        dead_since.entry(*id).or_insert(now);
    }
    let expired: BTreeSet<u64> = dead_since
        .iter()
        .filter(|(_, t)| now.duration_since(**t) >= after)
        .map(|(id, _)| *id)
        .collect();
    let live = voters.len() - down.len();
    // Only when the live voters would still be a majority of what is left.
    if !expired.is_empty() && live > (voters.len() - expired.len()) / 2 {
        tracing::info!(servers = ?expired, "removing dead servers");
        if let Err(e) = ctx
            .raft
            .change_membership(ChangeMembers::RemoveVoters(expired), false)
            .await
        {
            tracing::warn!(error = %e, "could not remove dead servers");
        }
    }
}

/// The autopilot view from the leader's replication metrics and gossip.
pub(crate) fn state(ctx: &Autopilot, gossip: Option<&Gossip>) -> pb::AutopilotStateResponse {
    let m = ctx.raft.metrics().borrow().clone();
    let membership = m.membership_config.membership().clone();
    let voters: BTreeSet<u64> = membership.voter_ids().collect();
    let replication = m.replication.clone().unwrap_or_default();
    let last = m.last_log_index.unwrap_or(0);
    let gossip_state: BTreeMap<String, MemberState> = gossip
        .map(|g| {
            g.members()
                .into_iter()
                .map(|s| (s.member.name.clone(), s.state))
                .collect()
        })
        .unwrap_or_default();
    let servers: Vec<pb::AutopilotServer> = membership
        .nodes()
        .map(|(id, n)| {
            let leader = m.current_leader == Some(*id);
            let matched = if leader {
                last
            } else {
                replication
                    .get(id)
                    .copied()
                    .flatten()
                    .map(|l| l.index)
                    .unwrap_or(0)
            };
            let g = gossip_state.get(&n.name).cloned();
            let alive = g.as_ref().is_none_or(|s| *s == MemberState::Alive);
            // Within a few heartbeats' worth of entries of the leader.
            let replicating = leader || last.saturating_sub(matched) < 1024;
            pb::AutopilotServer {
                node: n.name.clone(),
                id: *id,
                address: n.raft_addr.clone(),
                leader,
                voter: voters.contains(id),
                healthy: alive && replicating,
                last_contact_ms: 0,
                matched_index: matched,
                gossip: format!("{:?}", g.unwrap_or(MemberState::Alive)).to_lowercase(),
            }
        })
        .collect();
    let healthy_voters = servers.iter().filter(|s| s.voter && s.healthy).count();
    let quorum = voters.len() / 2 + 1;
    pb::AutopilotStateResponse {
        healthy: healthy_voters == voters.len(),
        failure_tolerance: healthy_voters.saturating_sub(quorum) as u32,
        leader_last_index: last,
        servers,
    }
}
