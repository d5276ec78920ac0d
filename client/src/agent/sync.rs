//! Anti-entropy: the servers' copy of this node converges to the agent's.
//! Runs on every local change and every `anti_entropy_interval`: registers
//! what the servers lack or hold differently, deregisters what the agent
//! does not own, and re-sends check results the servers do not hold.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use super::{CheckState, LocalAgent, LocalServices, lock, runner};
use crate::api::{self, HealthStatus};
use crate::{Client, Error};

pub(super) async fn run(agent: Arc<LocalAgent>) {
    let mut runners: HashMap<String, (api::CheckDefinition, JoinHandle<()>)> = HashMap::new();
    let mut synced_once = false;
    loop {
        let round = {
            let _owning = agent.ownership.lock().await;
            sync_once(&agent).await
        };
        match round {
            Ok(checks) => {
                if !synced_once {
                    tracing::info!("in sync with the servers");
                    agent.synced.send_replace(true);
                }
                synced_once = true;
                follow(&agent, &mut runners, checks);
            }
            // Before the first sync the servers may simply not be known yet.
            Err(e) if !synced_once => tracing::debug!(error = %e, "not in sync with the servers yet"),
            Err(e) => tracing::warn!(error = %e, "anti-entropy could not sync with the servers"),
        }
        // Until the first sync, retry soon: the servers may not be known yet.
        let wait = if synced_once {
            agent.settings.anti_entropy_interval
        } else {
            Duration::from_secs(1)
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = agent.wake.notified() => {}
        }
    }
}

/// Starts a runner per check, stops those of checks that went away.
fn follow(
    agent: &Arc<LocalAgent>,
    runners: &mut HashMap<String, (api::CheckDefinition, JoinHandle<()>)>,
    checks: Vec<api::Check>,
) {
    let ids: BTreeSet<&str> = checks.iter().map(|c| c.id.as_str()).collect();
    runners.retain(|id, (_, h)| {
        let keep = ids.contains(id.as_str());
        if !keep {
            h.abort();
        }
        keep
    });
    lock(&agent.checks).retain(|id, _| ids.contains(id.as_str()));
    for c in checks {
        let def = c.definition.clone().unwrap_or_default();
        if runners.get(&c.id).is_some_and(|(d, _)| *d == def) {
            continue;
        }
        if let Some((_, h)) = runners.remove(&c.id) {
            h.abort();
        }
        let h = tokio::spawn(runner::run(agent.clone(), c.id.clone(), def.clone()));
        runners.insert(c.id, (def, h));
    }
}

async fn node_view(client: &Client, node: &str) -> Result<BTreeMap<String, api::InstanceHealth>, Error> {
    match client.get_node(node).await {
        Ok(v) => Ok(v
            .instances
            .into_iter()
            .filter_map(|h| h.service.as_ref().map(|s| s.id.clone()).map(|id| (id, h)))
            .collect()),
        Err(e) if e.code() == Some(tonic::Code::NotFound) => Ok(BTreeMap::new()),
        Err(e) => Err(e),
    }
}

/// Whether the servers' copy of an instance is not what the agent registered.
fn differs(req: &api::RegisterRequest, held: &BTreeMap<String, api::InstanceHealth>) -> bool {
    let Some(spec) = &req.service else { return false };
    let Some(h) = held.get(&spec.id) else { return true };
    let Some(s) = &h.service else { return true };
    let own_checks = h.checks.iter().filter(|c| c.service_id == spec.id).count();
    s.name != spec.name
        || s.port != spec.port
        || (!spec.address.is_empty() && s.address != spec.address)
        || s.tags != spec.tags
        || s.meta != spec.meta
        || own_checks != req.checks.len()
        || (req.sidecar.is_some() && !held.contains_key(&format!("{}-sidecar-proxy", spec.id)))
}

/// One round; returns the checks of the owned instances, for the runners.
async fn sync_once(agent: &LocalAgent) -> Result<Vec<api::Check>, Error> {
    let client = agent.client().await?;
    let me = agent.settings.node.clone();
    let held = node_view(&client, &me).await?;
    let local: Vec<api::RegisterRequest> = lock(&agent.local).all().values().cloned().collect();
    let mut changed = false;
    for req in &local {
        if differs(req, &held) {
            let id = req.service.as_ref().map(|s| s.id.as_str()).unwrap_or_default();
            tracing::info!(service = %id, "registering on the servers (missing or different there)");
            client.register(req.clone()).await?;
            changed = true;
        }
    }
    let owned: BTreeSet<String> = local.iter().flat_map(LocalServices::owned_ids).collect();
    for id in held.keys().filter(|id| !owned.contains(*id)) {
        tracing::info!(service = %id, "deregistering from the servers (not owned by this agent)");
        match client.deregister(id).await {
            Ok(_) => changed = true,
            Err(e) if e.code() == Some(tonic::Code::NotFound) => {}
            Err(e) => return Err(e),
        }
    }
    let held = if changed {
        node_view(&client, &me).await?
    } else {
        held
    };
    let checks: Vec<api::Check> = held
        .iter()
        .filter(|(id, _)| owned.contains(*id))
        .flat_map(|(id, h)| h.checks.iter().filter(move |c| &c.service_id == id).cloned())
        .collect();
    push_results(agent, &client, &checks).await?;
    Ok(checks)
}

/// Adopts the servers' status for checks first seen; re-sends results the
/// servers do not hold.
async fn push_results(agent: &LocalAgent, client: &Client, checks: &[api::Check]) -> Result<(), Error> {
    let mut to_send = Vec::new();
    {
        let mut states = lock(&agent.checks);
        for c in checks {
            let held = HealthStatus::try_from(c.status).unwrap_or(HealthStatus::Critical);
            let st = states.entry(c.id.clone()).or_insert_with(|| CheckState {
                status: held,
                output: c.output.clone(),
                reported: true,
                ttl_since: tokio::time::Instant::now(),
            });
            if st.status != held {
                st.reported = false;
            }
            if !st.reported {
                to_send.push((c.id.clone(), st.status, st.output.clone()));
            }
        }
    }
    for (id, status, output) in to_send {
        client.report_check(&id, status, &output).await?;
        if let Some(st) = lock(&agent.checks).get_mut(&id)
            && st.status == status
            && st.output == output
        {
            st.reported = true;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(id: &str, port: u32) -> api::RegisterRequest {
        api::RegisterRequest {
            service: Some(api::ServiceSpec {
                id: id.into(),
                name: "web".into(),
                port,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn held(id: &str, port: u32) -> BTreeMap<String, api::InstanceHealth> {
        BTreeMap::from([(
            id.to_string(),
            api::InstanceHealth {
                service: Some(api::ServiceInstance {
                    id: id.into(),
                    name: "web".into(),
                    port,
                    address: "10.0.0.1".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )])
    }

    #[test]
    fn a_missing_or_changed_instance_is_registered_again() {
        assert!(differs(&req("web-1", 80), &BTreeMap::new()));
        assert!(differs(&req("web-1", 80), &held("web-1", 81)));
        assert!(!differs(&req("web-1", 80), &held("web-1", 80)));
        let mut with_sidecar = req("web-1", 80);
        with_sidecar.sidecar = Some(api::SidecarSpec::default());
        assert!(differs(&with_sidecar, &held("web-1", 80)));
    }
}
