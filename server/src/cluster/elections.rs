//! When a server may campaign, beyond openraft 0.9's own timers. Two rules,
//! both only about timing: campaigning is always safe in Raft.
//!
//! **Hold back what cannot win.** A voter whose log is behind a majority of
//! the voters can never be elected, yet each of its campaigns raises the
//! term, and a leader that sees the higher term steps down. A follower
//! restarted with an old log while the leader streams it a large snapshot
//! times out again and again: with 100,000 instances on a slow build the
//! leader was deposed every 3 s and the snapshot never arrived. So every
//! 250 ms a follower asks the other voters for their last log ID over
//! `Raft/Status` and turns its own elections off while a majority is
//! ahead of it. A voter that does not answer counts as one that would
//! vote for it, so an unreachable or dead peer never holds anyone back.
//!
//! **Campaign at once when the leader is dead.** openraft 0.9 lets a
//! follower campaign only after the leader lease (the maximum election
//! timeout) plus its own election timeout, 750 ms to 1 s of silence here;
//! and a follower that once lost an election to a longer log keeps an
//! extra backoff of twice the maximum until its next campaign (fixed
//! upstream in openraft PR #2087, not in 0.9). Failover after a crash took
//! 1 to 2 s. A crashed leader is different from a slow or partitioned one:
//! its Raft port refuses connections. So when the leader has been silent
//! for a few heartbeats, a follower tries a TCP connection to it. Only a
//! refusal counts; a timeout or an accepted connection leaves the decision
//! to the timers. Then the follower asks the other voters for their last
//! log ID, and only the most up-to-date one (ties go to the higher node ID,
//! as in openraft's vote order) campaigns, once the voters' leader lease
//! has passed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::ServerState;

use crate::raft::log_store::LogStore;
use crate::raft::{LogId, NodeId, Raft};
use crate::rpc::peers::PeerClients;
use crate::rpc::service::LeaderContact;

/// What the election helper takes: Raft, this server's ID, the other
/// voters' RPC, and when the leader was last heard.
pub(crate) struct Elections {
    pub(crate) raft: Raft,
    pub(crate) node_id: NodeId,
    pub(crate) peers: Arc<PeerClients>,
    pub(crate) leader_contact: Arc<LeaderContact>,
}

/// How often a follower looks at the leader's silence.
const TICK: Duration = Duration::from_millis(50);
/// Silence before the leader is probed: a few missed heartbeats.
const SILENT_BEFORE_PROBE: Duration = Duration::from_millis(250);
/// Probes and status questions are on loopback or a LAN.
const ASK_TIMEOUT: Duration = Duration::from_millis(150);
/// After the voters' lease, so they grant the vote at the first try.
const LEASE_MARGIN: Duration = Duration::from_millis(30);
/// At most one early campaign per this period.
const COOL_DOWN: Duration = Duration::from_secs(2);
/// How often a follower checks whether it could win an election.
const CHECK_CHANCES_EVERY: Duration = Duration::from_millis(250);

pub(crate) async fn run(ctx: Arc<Elections>, log: LogStore) {
    let lease = Duration::from_millis(ctx.raft.config().election_timeout_max) + LEASE_MARGIN;
    let mut last_campaign: Option<Instant> = None;
    let mut last_check: Option<Instant> = None;
    let mut may_campaign = true;
    loop {
        if last_check.is_none_or(|t| t.elapsed() >= CHECK_CHANCES_EVERY) {
            last_check = Some(Instant::now());
            let could_win = could_win(&ctx, &log).await;
            if could_win != may_campaign {
                may_campaign = could_win;
                if could_win {
                    tracing::info!("elections on again: no majority of voters is ahead of this server's log");
                } else {
                    tracing::info!("holding back elections: a majority of voters have a longer log");
                }
                ctx.raft.runtime_config().elect(could_win);
            }
        }
        tokio::time::sleep(TICK).await;
        if last_campaign.is_some_and(|t| t.elapsed() < COOL_DOWN) {
            continue;
        }
        let Some(dead) = dead_leader(&ctx).await else {
            continue;
        };
        if !most_up_to_date(&ctx, &log, dead).await {
            continue;
        }
        // The other voters refuse a vote until their lease on the old
        // leader runs out; their last heartbeat came about when ours did.
        while let Some(silent) = ctx.leader_contact.silent_for()
            && silent < lease
        {
            tokio::time::sleep(lease - silent).await;
        }
        if !still_following(&ctx, dead) {
            continue;
        }
        tracing::info!(
            leader = dead,
            "the leader's Raft port refuses connections: campaigning now"
        );
        last_campaign = Some(Instant::now());
        if let Err(e) = ctx.raft.trigger().elect().await {
            tracing::warn!(error = %e, "could not start an election");
        }
    }
}

/// Whether this server could gather a majority of votes: voters whose log
/// is not longer than its own, counting those that do not answer. The
/// leader itself always may.
async fn could_win(ctx: &Elections, log: &LogStore) -> bool {
    let m = ctx.raft.metrics().borrow().clone();
    if m.state == ServerState::Leader {
        return true;
    }
    let Ok(mine) = log.last_log_id() else { return true };
    let membership = m.membership_config.membership().clone();
    let voters: Vec<u64> = membership.voter_ids().collect();
    let answers = last_logs(
        ctx,
        &membership,
        voters.iter().copied().filter(|v| *v != ctx.node_id),
    )
    .await;
    would_grant(mine, voters.len(), &answers)
}

/// The last log ID of each of `voters` that answers, by node ID.
async fn last_logs(
    ctx: &Elections,
    membership: &openraft::Membership<u64, crate::raft::ServerNode>,
    voters: impl Iterator<Item = u64>,
) -> Vec<(u64, Option<Option<LogId>>)> {
    let asks = voters.map(|id| {
        let addr = membership.get_node(&id).map(|n| n.raft_addr.clone());
        async move {
            let Some(addr) = addr else { return (id, None) };
            let st = ctx.peers.status(&addr, ASK_TIMEOUT).await;
            (id, st.ok().map(|s| s.last_log))
        }
    });
    futures::future::join_all(asks).await
}

/// With `voters` voters in all, this one included: whether a majority would
/// grant its vote on log length. `None` (no answer) counts as a grant.
fn would_grant(mine: Option<LogId>, voters: usize, others: &[(u64, Option<Option<LogId>>)]) -> bool {
    let grants = 1 + others
        .iter()
        .filter(|(_, last)| last.is_none_or(|theirs| theirs <= mine))
        .count();
    grants * 2 > voters
}

/// The leader this follower follows, when it has been silent and its Raft
/// port refuses connections.
async fn dead_leader(ctx: &Elections) -> Option<u64> {
    // Every tick: read what is needed under the borrow, clone nothing else.
    let (leader, addr) = {
        let m = ctx.raft.metrics();
        let m = m.borrow();
        let leader = m.current_leader.filter(|l| *l != ctx.node_id)?;
        if m.state != ServerState::Follower {
            return None;
        }
        let addr = m
            .membership_config
            .membership()
            .get_node(&leader)?
            .raft_addr
            .clone();
        (leader, addr)
    };
    if ctx.leader_contact.silent_for()? < SILENT_BEFORE_PROBE {
        return None;
    }
    match tokio::time::timeout(ASK_TIMEOUT, tokio::net::TcpStream::connect(&addr)).await {
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => Some(leader),
        _ => None,
    }
}

fn still_following(ctx: &Elections, leader: u64) -> bool {
    let m = ctx.raft.metrics();
    let m = m.borrow();
    m.state == ServerState::Follower && m.current_leader == Some(leader)
}

/// Whether no other voter that answers has a longer log (or an equal one
/// and a higher node ID).
async fn most_up_to_date(ctx: &Elections, log: &LogStore, dead: u64) -> bool {
    let Ok(mine) = log.last_log_id() else { return false };
    let membership = ctx.raft.metrics().borrow().membership_config.membership().clone();
    let others = membership
        .voter_ids()
        .filter(|id| *id != ctx.node_id && *id != dead);
    let answers = last_logs(ctx, &membership, others).await;
    ahead_of_all(
        mine,
        ctx.node_id,
        answers.into_iter().filter_map(|(id, last)| last.map(|l| (l, id))),
    )
}

fn ahead_of_all(
    mine: Option<LogId>,
    me: u64,
    others: impl IntoIterator<Item = (Option<LogId>, u64)>,
) -> bool {
    others.into_iter().all(|other| (mine, me) > other)
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::CommittedLeaderId;

    fn log_id(term: u64, index: u64) -> Option<LogId> {
        Some(LogId::new(CommittedLeaderId::new(term, 1), index))
    }

    #[test]
    fn only_the_longest_log_campaigns_and_ties_go_to_the_higher_id() {
        assert!(ahead_of_all(log_id(3, 10), 5, [(log_id(3, 9), 9)]));
        assert!(!ahead_of_all(log_id(3, 9), 9, [(log_id(3, 10), 5)]));
        assert!(!ahead_of_all(log_id(3, 10), 5, [(log_id(3, 10), 9)]));
        assert!(ahead_of_all(log_id(3, 10), 9, [(log_id(3, 10), 5)]));
        // A later term wins over a longer log of an earlier one.
        assert!(!ahead_of_all(log_id(3, 10), 9, [(log_id(4, 2), 5)]));
        // Nobody answered: this server decides alone.
        assert!(ahead_of_all(log_id(1, 1), 1, []));
    }

    #[test]
    fn a_server_behind_a_majority_holds_back_and_silent_voters_count_as_grants() {
        // Three voters: the two others are ahead.
        assert!(!would_grant(
            log_id(1, 5),
            3,
            &[(2, Some(log_id(3, 900))), (3, Some(log_id(3, 901)))]
        ));
        // One ahead, one behind: this server and the one behind are a majority.
        assert!(would_grant(
            log_id(3, 900),
            3,
            &[(2, Some(log_id(3, 901))), (3, Some(log_id(3, 899)))]
        ));
        // The leader is dead (no answer), the other is ahead: it may still try.
        assert!(would_grant(
            log_id(3, 900),
            3,
            &[(2, None), (3, Some(log_id(3, 901)))]
        ));
        // Five voters, three ahead: held back.
        let ahead = log_id(4, 10);
        assert!(!would_grant(
            log_id(4, 9),
            5,
            &[
                (2, Some(ahead)),
                (3, Some(ahead)),
                (4, Some(ahead)),
                (5, Some(log_id(4, 9)))
            ]
        ));
        // A single server always may.
        assert!(would_grant(None, 1, &[]));
    }
}
