//! Anti-entropy: the servers' copy of this node converges to the agent's.
//! Runs on every local change and every `anti_entropy_interval`: registers
//! what the servers lack or hold differently, deregisters what the agent
//! does not own, and re-sends check results the servers do not hold.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use super::{CheckState, LocalAgent, LocalServices, lock, runner};
use crate::api::{self, HealthStatus};
use crate::checks::Runners;
use crate::{Client, Error};

pub(super) async fn run(agent: Arc<LocalAgent>) {
    let mut runners = Runners::default();
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
fn follow(agent: &Arc<LocalAgent>, runners: &mut Runners, checks: Vec<api::Check>) {
    let ids: BTreeSet<&str> = checks.iter().map(|c| c.id.as_str()).collect();
    lock(&agent.checks).retain(|id, _| ids.contains(id.as_str()));
    let specs = checks
        .iter()
        .filter_map(|c| runner::spec(&c.definition.clone().unwrap_or_default()).map(|s| (c.id.clone(), s)));
    runners.follow(agent, specs);
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
/// Fields the servers fill in with defaults (the address, a sidecar's
/// local service) are compared only when the registration sets them.
fn differs(req: &api::RegisterRequest, held: &BTreeMap<String, api::InstanceHealth>) -> bool {
    let Some(spec) = &req.service else { return false };
    let Some(h) = held.get(&spec.id) else { return true };
    let Some(s) = &h.service else { return true };
    instance_differs(spec, s) || checks_differ(req, spec, h) || sidecar_differs(req, spec, held)
}

fn instance_differs(spec: &api::ServiceSpec, s: &api::ServiceInstance) -> bool {
    s.name != spec.name
        || s.port != spec.port
        || (!spec.address.is_empty() && s.address != spec.address)
        || s.tags != spec.tags
        || s.meta != spec.meta
        || s.kind != spec.kind
        || spec.proxy.as_ref().is_some_and(|p| {
            s.proxy.as_ref().is_none_or(|q| {
                q.destination_service_name != p.destination_service_name
                    || upstreams_differ(&p.upstreams, &q.upstreams)
            })
        })
}

/// The check IDs the servers give a registration's checks: its own, or
/// `service:<id>` and `service:<id>:<n>` by position.
fn check_ids(req: &api::RegisterRequest, service_id: &str) -> Vec<String> {
    req.checks
        .iter()
        .enumerate()
        .map(|(i, c)| {
            if c.id.is_empty() {
                tribune_ids::default_check_id(service_id, i)
            } else {
                c.id.clone()
            }
        })
        .collect()
}

/// A check missing, extra, or probing something else than registered.
fn checks_differ(req: &api::RegisterRequest, spec: &api::ServiceSpec, h: &api::InstanceHealth) -> bool {
    let held: BTreeMap<&str, Option<&api::check_definition::Kind>> = h
        .checks
        .iter()
        .filter(|c| c.service_id == spec.id)
        .map(|c| (c.id.as_str(), c.definition.as_ref().and_then(|d| d.kind.as_ref())))
        .collect();
    let ids = check_ids(req, &spec.id);
    held.len() != ids.len()
        || ids
            .iter()
            .zip(&req.checks)
            .any(|(id, c)| held.get(id.as_str()) != Some(&c.kind.as_ref()))
}

fn sidecar_differs(
    req: &api::RegisterRequest,
    spec: &api::ServiceSpec,
    held: &BTreeMap<String, api::InstanceHealth>,
) -> bool {
    let Some(sc) = &req.sidecar else { return false };
    let Some(s) = held
        .get(&tribune_ids::sidecar_id(&spec.id))
        .and_then(|h| h.service.as_ref())
    else {
        return true;
    };
    s.port != sc.port
        || (!sc.address.is_empty() && s.address != sc.address)
        || s.proxy
            .as_ref()
            .is_none_or(|p| upstreams_differ(&sc.upstreams, &p.upstreams))
}

/// Upstreams by destination and local port; the bind address and the
/// datacenter count only when the registration names them.
fn upstreams_differ(want: &[api::Upstream], have: &[api::Upstream]) -> bool {
    want.len() != have.len()
        || want.iter().zip(have).any(|(w, h)| {
            w.destination_name != h.destination_name
                || w.local_bind_port != h.local_bind_port
                || (!w.local_bind_address.is_empty() && w.local_bind_address != h.local_bind_address)
                || (!w.datacenter.is_empty() && w.datacenter != h.datacenter)
        })
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
            agent.client_for(id).await?.register(req.clone()).await?;
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
    push_results(agent, &checks).await?;
    Ok(checks)
}

/// Adopts the servers' status for checks first seen; re-sends results the
/// servers do not hold.
async fn push_results(agent: &LocalAgent, checks: &[api::Check]) -> Result<(), Error> {
    let mut to_send = Vec::new();
    {
        let mut states = lock(&agent.checks);
        for c in checks {
            let held = HealthStatus::try_from(c.status).unwrap_or(HealthStatus::Critical);
            let st = states.entry(c.id.clone()).or_insert_with(|| CheckState {
                service_id: c.service_id.clone(),
                status: held,
                output: c.output.clone(),
                reported: true,
                ttl_renewals: 0,
            });
            if st.status != held {
                st.reported = false;
            }
            if !st.reported {
                to_send.push((c.id.clone(), c.service_id.clone(), st.status, st.output.clone()));
            }
        }
    }
    for (id, service_id, status, output) in to_send {
        agent
            .client_for(&service_id)
            .await?
            .report_check(&id, status, &output)
            .await?;
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

    fn ttl_check(id: &str) -> api::CheckDefinition {
        api::CheckDefinition {
            id: id.into(),
            kind: Some(api::check_definition::Kind::TtlMs(10_000)),
            ..Default::default()
        }
    }

    fn held_check(id: &str, kind: api::check_definition::Kind) -> api::Check {
        api::Check {
            id: id.into(),
            service_id: "web-1".into(),
            definition: Some(api::CheckDefinition {
                id: id.into(),
                kind: Some(kind),
                interval_ms: 10_000,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_check_changed_behind_the_agents_back_is_registered_again() {
        use api::check_definition::Kind;
        let mut r = req("web-1", 80);
        r.checks = vec![ttl_check(""), ttl_check("custom")];
        let mut h = held("web-1", 80);
        let inst = h.get_mut("web-1").expect("held");
        // As the servers store them: default ID by position, defaults filled in.
        inst.checks = vec![
            held_check("service:web-1", Kind::TtlMs(10_000)),
            held_check("custom", Kind::TtlMs(10_000)),
        ];
        assert!(!differs(&r, &h));

        let inst = h.get_mut("web-1").expect("held");
        inst.checks[1] = held_check("custom", Kind::Http("http://10.0.0.1/".into()));
        assert!(differs(&r, &h), "same IDs, another probe");

        let inst = h.get_mut("web-1").expect("held");
        inst.checks[1] = held_check("other", Kind::TtlMs(10_000));
        assert!(differs(&r, &h), "same count, another ID");
    }

    #[test]
    fn a_changed_sidecar_or_kind_is_registered_again() {
        let mut r = req("web-1", 80);
        r.sidecar = Some(api::SidecarSpec {
            port: 21000,
            upstreams: vec![api::Upstream {
                destination_name: "api".into(),
                local_bind_port: 9191,
                ..Default::default()
            }],
            ..Default::default()
        });
        let sidecar = |port: u32, bind: u32| api::InstanceHealth {
            service: Some(api::ServiceInstance {
                id: "web-1-sidecar-proxy".into(),
                port,
                proxy: Some(api::ProxyConfig {
                    destination_service_name: "web".into(),
                    upstreams: vec![api::Upstream {
                        destination_name: "api".into(),
                        local_bind_address: "127.0.0.1".into(),
                        local_bind_port: bind,
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut h = held("web-1", 80);
        h.insert("web-1-sidecar-proxy".into(), sidecar(21000, 9191));
        assert!(!differs(&r, &h));
        h.insert("web-1-sidecar-proxy".into(), sidecar(21001, 9191));
        assert!(differs(&r, &h), "sidecar port");
        h.insert("web-1-sidecar-proxy".into(), sidecar(21000, 9192));
        assert!(differs(&r, &h), "upstream's local port");

        h.insert("web-1-sidecar-proxy".into(), sidecar(21000, 9191));
        let inst = h.get_mut("web-1").and_then(|i| i.service.as_mut()).expect("held");
        inst.kind = api::ServiceKind::MeshGateway as i32;
        assert!(differs(&r, &h), "kind");
    }
}
