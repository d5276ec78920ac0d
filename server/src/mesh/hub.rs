//! The xDS snapshot builder. It follows the change feed and keeps, for every
//! proxy with an open ADS stream, the Envoy resources that proxy should
//! hold. A change is routed through a dependency index (service name ->
//! proxies whose upstreams include it), so only the proxies whose
//! resources it changes are rebuilt; bursts of changes coalesce within a
//! short bounded window. Translation itself is `tribune_xds::sidecar::build`.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{broadcast, watch};
use tribune_xds::{
    Intention, MeshEndpoint, MeshSnapshot, ProxyResources, SharedResources, Sidecar, Upstream,
};

use super::now_unix;
use crate::catalog::feed::ChangeSet;
use crate::catalog::model::{ServiceKind, Status};
use crate::context::ServerContext;
use crate::raft::state_machine::SmData;

/// How long a burst of changes may gather before proxies are rebuilt.
const COALESCE: Duration = Duration::from_millis(10);

#[derive(Debug, thiserror::Error)]
pub(crate) enum SubscribeError {
    #[error(
        "no proxy is registered with ID {0:?}: register the service with --sidecar-port, \
         and point Envoy's node.id at \"<service id>-sidecar-proxy\""
    )]
    UnknownProxy(String),
    #[error("{0:?} is not a sidecar proxy")]
    NotAProxy(String),
}

struct Slot {
    tx: watch::Sender<SharedResources>,
    /// Services whose changes can change this proxy's resources.
    deps: BTreeSet<String>,
}

pub(crate) struct XdsHub {
    ctx: Arc<ServerContext>,
    slots: Mutex<HashMap<String, Slot>>,
    /// Service name -> proxies that depend on it.
    deps: Mutex<HashMap<String, HashSet<String>>>,
}

impl XdsHub {
    pub(crate) fn new(ctx: Arc<ServerContext>) -> Arc<Self> {
        Arc::new(XdsHub {
            ctx,
            slots: Mutex::default(),
            deps: Mutex::default(),
        })
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn dep_index(&self) -> std::sync::MutexGuard<'_, HashMap<String, HashSet<String>>> {
        self.deps.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Follows `proxy_id`'s resources. Refused for an ID that is not a
    /// registered sidecar.
    pub(crate) fn subscribe(
        &self,
        proxy_id: &str,
    ) -> Result<watch::Receiver<SharedResources>, SubscribeError> {
        if let Some(slot) = self.slots().get(proxy_id) {
            return Ok(slot.tx.subscribe());
        }
        let (res, deps) = {
            let d = self.ctx.state.read();
            match d.catalog.service(proxy_id) {
                None => return Err(SubscribeError::UnknownProxy(proxy_id.into())),
                Some(s) if s.kind != ServiceKind::SidecarProxy => {
                    return Err(SubscribeError::NotAProxy(proxy_id.into()));
                }
                Some(_) => self.build(&d, proxy_id),
            }
        };
        let (tx, rx) = watch::channel(Arc::new(res));
        self.set_deps(proxy_id, &BTreeSet::new(), &deps);
        self.slots().insert(proxy_id.to_string(), Slot { tx, deps });
        Ok(rx)
    }

    fn set_deps(&self, proxy_id: &str, old: &BTreeSet<String>, new: &BTreeSet<String>) {
        let mut idx = self.dep_index();
        for s in old.difference(new) {
            if let Some(set) = idx.get_mut(s) {
                set.remove(proxy_id);
                if set.is_empty() {
                    idx.remove(s);
                }
            }
        }
        for s in new.difference(old) {
            idx.entry(s.clone()).or_default().insert(proxy_id.to_string());
        }
    }

    /// The resources of one proxy from the state machine's data, and the
    /// services they depend on.
    fn build(&self, d: &SmData, proxy_id: &str) -> (ProxyResources, BTreeSet<String>) {
        let empty = ProxyResources {
            index: d.applied_index(),
            ..Default::default()
        };
        let Some(svc) = d
            .catalog
            .service(proxy_id)
            .filter(|s| s.kind == ServiceKind::SidecarProxy)
        else {
            return (empty, BTreeSet::new());
        };
        let Some(p) = &svc.proxy else {
            return (empty, BTreeSet::new());
        };
        let sidecar = Sidecar {
            proxy_id: proxy_id.to_string(),
            service: p.destination_service_name.clone(),
            public_address: svc.address.clone(),
            public_port: svc.port,
            local_app_address: p.local_service_address.clone(),
            local_app_port: p.local_service_port,
            upstreams: p
                .upstreams
                .iter()
                .map(|u| Upstream {
                    destination: u.destination_name.clone(),
                    datacenter: u.datacenter.clone(),
                    bind_address: u.local_bind_address.clone(),
                    bind_port: u.local_bind_port,
                })
                .collect(),
        };
        let deps: BTreeSet<String> = sidecar.upstreams.iter().map(|u| u.destination.clone()).collect();
        let mesh = self.mesh_snapshot(d, &deps);
        let ca = d.catalog.mesh().ca.as_ref();
        let leaf = ca.and_then(|ca| {
            self.ctx
                .leaves
                .get(ca, &self.ctx.datacenter, &sidecar.service, now_unix())
                .map_err(|e| tracing::warn!(proxy = proxy_id, error = %e, "no leaf certificate"))
                .ok()
        });
        let leaf = leaf.map(|l| tribune_xds::LeafCert {
            cert_chain_pem: l.chain_pem.clone(),
            key_pem: l.leaf.key_pem.clone(),
        });
        let (res, diags) = tribune_xds::sidecar::build(&sidecar, &mesh, leaf.as_ref());
        for diag in diags {
            tracing::warn!(proxy = %diag.proxy_id, "{}", diag.message);
        }
        (res, deps)
    }

    /// What the translation needs, restricted to `services`' endpoints.
    fn mesh_snapshot(&self, d: &SmData, services: &BTreeSet<String>) -> MeshSnapshot {
        let c = &d.catalog;
        let m = c.mesh();
        let endpoints = services
            .iter()
            .map(|name| {
                let eps = c
                    .proxies_for(name)
                    .map(|sc| {
                        let own = c.health_of(sc).status != Status::Critical;
                        let dest = sc
                            .proxy
                            .as_ref()
                            .map(|p| p.destination_service_id.as_str())
                            .unwrap_or("");
                        let backend = dest.is_empty()
                            || c.instance_health(dest)
                                .is_some_and(|h| h.status != Status::Critical);
                        MeshEndpoint {
                            instance_id: sc.id.clone(),
                            address: sc.address.clone(),
                            port: sc.port,
                            healthy: own && backend,
                        }
                    })
                    .collect();
                (name.clone(), eps)
            })
            .collect();
        MeshSnapshot {
            index: d.applied_index(),
            trust_domain: m
                .ca
                .as_ref()
                .map(|ca| ca.trust_domain.clone())
                .unwrap_or_default(),
            datacenter: self.ctx.datacenter.clone(),
            default_allow: self.ctx.mesh.default_allow,
            intentions: m
                .intentions
                .values()
                .map(|i| Intention {
                    source: i.source.clone(),
                    destination: i.destination.clone(),
                    allow: i.allow,
                })
                .collect(),
            endpoints,
            roots_pem: m.ca.as_ref().map(|ca| ca.trust_bundle()).unwrap_or_default(),
        }
    }

    /// Rebuilds `proxies` and sends each one whose resources changed.
    fn rebuild(&self, proxies: impl IntoIterator<Item = String>) -> usize {
        let mut sent = 0;
        for id in proxies {
            let (res, deps) = {
                let d = self.ctx.state.read();
                self.build(&d, &id)
            };
            let old_deps = {
                let mut slots = self.slots();
                let Some(slot) = slots.get_mut(&id) else { continue };
                if slot.tx.receiver_count() == 0 {
                    let old = std::mem::take(&mut slot.deps);
                    slots.remove(&id);
                    drop(slots);
                    self.set_deps(&id, &old, &BTreeSet::new());
                    continue;
                }
                let changed = slot.tx.borrow().by_type != res.by_type;
                if changed {
                    slot.tx.send_replace(Arc::new(res));
                    sent += 1;
                }
                std::mem::replace(&mut slot.deps, deps.clone())
            };
            if old_deps != deps {
                self.set_deps(&id, &old_deps, &deps);
            }
        }
        sent
    }

    /// Proxies a burst of change sets can affect; `None` = all of them.
    fn affected(&self, sets: &[Arc<ChangeSet>]) -> Option<BTreeSet<String>> {
        let mut out = BTreeSet::new();
        let idx = self.dep_index();
        let slots = self.slots();
        for cs in sets {
            if cs.reset || cs.mesh {
                return None;
            }
            for s in &cs.services {
                if let Some(p) = idx.get(s) {
                    out.extend(p.iter().cloned());
                }
            }
            let own = cs
                .upserts
                .iter()
                .map(|h| &h.service.id)
                .chain(cs.removed.iter().map(|(id, _)| id));
            out.extend(own.filter(|id| slots.contains_key(*id)).cloned());
        }
        Some(out)
    }

    fn all(&self) -> BTreeSet<String> {
        self.slots().keys().cloned().collect()
    }

    /// The builder loop: runs for the life of the agent.
    pub(crate) async fn run(self: Arc<Self>) {
        let mut feed = self.ctx.state.read().feed.subscribe();
        loop {
            let renew_in = self
                .ctx
                .leaves
                .next_renewal()
                .map(|t| Duration::from_secs((t - now_unix()).clamp(1, 3600) as u64))
                .unwrap_or(Duration::from_secs(3600));
            let mut sets = Vec::new();
            let mut everything = false;
            tokio::select! {
                m = feed.recv() => match m {
                    Ok(cs) => sets.push(cs),
                    Err(broadcast::error::RecvError::Lagged(_)) => everything = true,
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = tokio::time::sleep(renew_in) => everything = true,
            }
            // Coalesce a burst, for a bounded time.
            let deadline = tokio::time::Instant::now() + COALESCE;
            while let Ok(m) = tokio::time::timeout_at(deadline, feed.recv()).await {
                match m {
                    Ok(cs) => sets.push(cs),
                    Err(broadcast::error::RecvError::Lagged(_)) => everything = true,
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
            let targets = if everything { None } else { self.affected(&sets) }.unwrap_or_else(|| self.all());
            if targets.is_empty() {
                continue;
            }
            let n = targets.len();
            let sent = self.rebuild(targets);
            tracing::debug!(rebuilt = n, sent, changes = sets.len(), "xds snapshots updated");
        }
    }
}
