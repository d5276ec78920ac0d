//! Node health from LAN gossip, on the leader (Consul's `serfHealth`): every
//! member of this datacenter gets a node-level `serf-health` check, passing
//! while gossip sees it alive and critical once gossip declares it dead, so
//! the node's instances leave every proxy's endpoints. A client agent that
//! left gracefully is deregistered at once; a dead one after the reconnect
//! timeout (it registers its services again when it comes back). A server's
//! node is never deregistered this way: services registered through a
//! server's own API live on its node, and nothing would bring them back
//! after a rolling restart; a server that left is only critical.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tribune_client::gossip::{Gossip, MemberState, MemberStatus, Role};

use crate::catalog::command::{Command, Registration};
use crate::catalog::model::{Check, CheckDefinition, CheckKind, Node, Status};
use crate::consensus::{Leadership, Writer};
use crate::raft::state_machine::Shared;

/// What node health takes: who leads, the state, where writes go, and
/// which datacenter's members count.
pub(crate) struct NodeHealth {
    pub(crate) leadership: Leadership,
    pub(crate) state: Arc<Shared>,
    pub(crate) writer: Writer,
    pub(crate) datacenter: String,
}

/// The check's name on every node.
pub(crate) const SERF_HEALTH: &str = "serf-health";

const ALIVE: &str = "Agent alive and reachable";
const DEAD: &str = "Agent not live or unreachable";

/// The ID of `node`'s serf-health check (check IDs are global).
pub(crate) fn check_id(node: &str) -> String {
    format!("{SERF_HEALTH}:{node}")
}

pub(crate) async fn run(ctx: Arc<NodeHealth>, gossip: Gossip, reconnect_timeout: Duration) {
    let mut changes = gossip.changes();
    let mut down_since: HashMap<String, Instant> = HashMap::new();
    loop {
        // Only on a caught-up leader: before, the state may lack what its
        // log is about to re-apply.
        let leads = ctx.leadership.leads_caught_up();
        if leads {
            reconcile(&ctx, &gossip, &mut down_since, reconnect_timeout).await;
        } else {
            // A new leader counts dead time afresh: it cannot know how long
            // the node was dead before.
            down_since.clear();
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), changes.changed()).await;
    }
}

/// One view per node name: an agent restarted on another address leaves
/// its old identity behind, and the newest incarnation is the one that counts.
fn by_name(members: Vec<MemberStatus>, datacenter: &str) -> BTreeMap<String, MemberStatus> {
    let mut out: BTreeMap<String, MemberStatus> = BTreeMap::new();
    for m in members
        .into_iter()
        .filter(|m| !m.member.is_placeholder() && m.member.datacenter == datacenter)
    {
        match out.get(&m.member.name) {
            Some(old) if old.member.incarnation >= m.member.incarnation => {}
            _ => {
                out.insert(m.member.name.clone(), m);
            }
        }
    }
    out
}

async fn reconcile(
    ctx: &NodeHealth,
    gossip: &Gossip,
    down_since: &mut HashMap<String, Instant>,
    reconnect_timeout: Duration,
) {
    for (name, m) in by_name(gossip.members(), &ctx.datacenter) {
        let (node, check) = {
            let d = ctx.state.read();
            (
                d.catalog.node(&name).cloned(),
                d.catalog.check(&check_id(&name)).map(|c| c.status),
            )
        };
        let server = m.member.role == Role::Server;
        let state = match m.state.clone() {
            MemberState::Left if server => MemberState::Down,
            other => other,
        };
        let cmd = match state {
            MemberState::Alive => {
                down_since.remove(&name);
                match (node, check) {
                    (Some(_), Some(Status::Passing)) => None,
                    (Some(_), Some(_)) => {
                        tracing::info!(node = %name, "gossip sees the node alive again: serf-health passing");
                        Some(result(&name, Status::Passing, ALIVE))
                    }
                    (node, _) => Some(register(ctx, &m, node)),
                }
            }
            MemberState::Suspect => None,
            MemberState::Down => {
                let since = *down_since.entry(name.clone()).or_insert_with(Instant::now);
                if node.is_some() && !server && since.elapsed() >= reconnect_timeout {
                    tracing::info!(node = %name, "dead for longer than the reconnect timeout: deregistering");
                    Some(Command::DeregisterNode { node: name.clone() })
                } else if check.is_some_and(|s| s != Status::Critical) {
                    tracing::info!(node = %name, "gossip declared the node dead: serf-health critical");
                    Some(result(&name, Status::Critical, DEAD))
                } else {
                    None
                }
            }
            MemberState::Left => node.map(|_| {
                tracing::info!(node = %name, "the node left: deregistering");
                Command::DeregisterNode { node: name.clone() }
            }),
        };
        if let Some(cmd) = cmd
            && let Err(e) = ctx.writer.propose(cmd).await
        {
            tracing::warn!(node = %name, error = %e, "could not record the node's health");
            return;
        }
    }
}

fn result(node: &str, status: Status, output: &str) -> Command {
    Command::CheckResult {
        check_id: check_id(node),
        status,
        output: output.into(),
    }
}

/// The node (as it is, or from gossip when unknown) with a passing serf-health check.
fn register(ctx: &NodeHealth, m: &MemberStatus, node: Option<Node>) -> Command {
    let node = node.unwrap_or_else(|| Node {
        name: m.member.name.clone(),
        address: m.member.gossip_addr.ip().to_string(),
        wan_address: String::new(),
        datacenter: ctx.datacenter.clone(),
        meta: BTreeMap::new(),
        create_index: 0,
        modify_index: 0,
    });
    let name = node.name.clone();
    Command::Register(Registration {
        checks: vec![Check {
            id: check_id(&name),
            name: SERF_HEALTH.into(),
            node: name,
            service_id: None,
            service_name: String::new(),
            definition: CheckDefinition {
                kind: CheckKind::Serf,
                interval_ms: 0,
                timeout_ms: 0,
                success_before_passing: 0,
                failures_before_critical: 0,
            },
            status: Status::Passing,
            output: ALIVE.into(),
            create_index: 0,
            modify_index: 0,
        }],
        node,
        services: Vec::new(),
        remove: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tribune_client::gossip::{Member, Role};

    fn status(name: &str, port: u16, incarnation: u64, state: MemberState) -> MemberStatus {
        let mut member = Member::placeholder(([127, 0, 0, 1], port).into());
        member.name = name.into();
        member.datacenter = "dc1".into();
        member.role = Role::Client;
        member.incarnation = incarnation;
        MemberStatus { member, state }
    }

    #[test]
    fn the_newest_incarnation_of_a_name_counts() {
        let view = by_name(
            vec![
                status("a", 1, 5, MemberState::Down),
                status("a", 2, 9, MemberState::Alive),
                status("b", 3, 1, MemberState::Down),
            ],
            "dc1",
        );
        assert_eq!(view["a"].state, MemberState::Alive);
        assert_eq!(view["b"].state, MemberState::Down);
        assert_eq!(view.len(), 2);
    }
}
