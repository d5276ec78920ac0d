//! The xDS snapshot builder. It follows the change feed and keeps, for every
//! proxy with an open ADS stream, the Envoy resources that proxy should
//! hold. A change is routed through a dependency index (service name ->
//! proxies whose upstreams include it), so only the proxies whose
//! resources it changes are rebuilt; bursts of changes coalesce within a
//! short bounded window. Translation itself is `tribune_xds::sidecar::build`.
//!
//! The hub holds the state machine's read lock only to copy out what a
//! proxy's resources are computed from; leaves are signed and resources
//! built after it is released, so applying entries never waits on ECDSA.
//! Streams of the same proxy ID (two Envoys with one node ID, as in a hot
//! restart) share one slot and are all served.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{broadcast, watch};
use tribune_xds::{
    Gateway, GatewayMode, Intention, MeshEndpoint, MeshSnapshot, ProxyResources, RemoteDatacenter,
    SharedResources, Sidecar, Upstream,
};

use super::leaves::LeafCache;
use super::now_unix;
use crate::catalog::feed::ChangeSet;
use crate::catalog::mesh::{CaState, RemoteEndpoint};
use crate::catalog::model::{self, ServiceKind, Status};
use crate::raft::state_machine::{Shared, SmData};

/// How long a burst of changes may gather before proxies are rebuilt.
const COALESCE: Duration = Duration::from_millis(10);
/// Proxies whose inputs are copied under one acquisition of the state lock.
const INPUTS_PER_LOCK: usize = 256;
/// The dependency of a proxy that every service's changes reach (a mesh
/// gateway routes to all of them).
const EVERY_SERVICE: &str = "*";

#[derive(Debug, thiserror::Error)]
pub(crate) enum SubscribeError {
    #[error(
        "no proxy is registered with ID {0:?}: register the service with --sidecar-port, \
         and point Envoy's node.id at \"<service id>-sidecar-proxy\""
    )]
    UnknownProxy(String),
    #[error("{0:?} is neither a sidecar proxy nor a mesh gateway")]
    NotAProxy(String),
}

struct Slot {
    tx: watch::Sender<SharedResources>,
    /// Services whose changes can change this proxy's resources.
    deps: BTreeSet<String>,
}

/// What one proxy is, as the translation takes it.
enum Proxy {
    Sidecar(Sidecar),
    Gateway(Gateway),
}

/// What one proxy's resources are computed from, copied out of the state.
struct ProxyInput {
    proxy_id: String,
    index: u64,
    /// `None`: no longer a registered proxy (its resources are empty).
    proxy: Option<(Proxy, MeshSnapshot)>,
    deps: BTreeSet<String>,
}

/// What the hub applies to every proxy of this datacenter.
#[derive(Clone, Debug)]
pub(crate) struct HubSettings {
    pub(crate) datacenter: String,
    pub(crate) default_allow: bool,
    /// For cross-datacenter upstreams whose proxy sets no mode.
    pub(crate) gateway_mode: GatewayMode,
}

pub(crate) struct XdsHub {
    state: Arc<Shared>,
    leaves: Arc<LeafCache>,
    settings: HubSettings,
    slots: Mutex<HashMap<String, Slot>>,
    /// The change feed, subscribed to when the hub is made so that `run`
    /// misses nothing applied after that.
    feed: Mutex<Option<broadcast::Receiver<Arc<ChangeSet>>>>,
    /// Service name -> proxies that depend on it.
    deps: Mutex<HashMap<String, HashSet<String>>>,
}

impl XdsHub {
    pub(crate) fn new(state: Arc<Shared>, leaves: Arc<LeafCache>, settings: HubSettings) -> Arc<Self> {
        let feed = state.read().feed.subscribe();
        Arc::new(XdsHub {
            feed: Mutex::new(Some(feed)),
            state,
            leaves,
            settings,
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
    /// registered sidecar or mesh gateway.
    pub(crate) fn subscribe(
        &self,
        proxy_id: &str,
    ) -> Result<watch::Receiver<SharedResources>, SubscribeError> {
        if let Some(slot) = self.slots().get(proxy_id) {
            return Ok(slot.tx.subscribe());
        }
        let (input, ca) = {
            let d = self.state.read();
            match d.catalog.service(proxy_id) {
                None => return Err(SubscribeError::UnknownProxy(proxy_id.into())),
                Some(s) if s.kind == ServiceKind::Typical => {
                    return Err(SubscribeError::NotAProxy(proxy_id.into()));
                }
                Some(_) => (self.input(&d, proxy_id), d.catalog.mesh().ca.clone()),
            }
        };
        let deps = input.deps.clone();
        let built_at = input.index;
        let res = self.translate(input, ca.as_ref());
        // Another stream of the same proxy may have subscribed meanwhile:
        // join its slot rather than replace it (which would end its stream).
        let mut slots = self.slots();
        if let Some(slot) = slots.get(proxy_id) {
            return Ok(slot.tx.subscribe());
        }
        let (tx, rx) = watch::channel(Arc::new(res));
        slots.insert(
            proxy_id.to_string(),
            Slot {
                tx,
                deps: deps.clone(),
            },
        );
        drop(slots);
        self.set_deps(proxy_id, &BTreeSet::new(), &deps);
        // A change applied while the slot did not exist yet was not routed
        // to it: catch up once.
        if self.state.read().applied_index() > built_at {
            self.rebuild([proxy_id.to_string()]);
        }
        Ok(rx)
    }

    /// The service whose identity a proxy carries: a sidecar's destination,
    /// a gateway's own name.
    pub(crate) fn identity_of(&self, proxy_id: &str) -> Option<String> {
        let d = self.state.read();
        let s = d.catalog.service(proxy_id)?;
        match (s.kind, &s.proxy) {
            (ServiceKind::SidecarProxy, Some(p)) => Some(p.destination_service_name.clone()),
            (ServiceKind::MeshGateway, _) => Some(s.name.clone()),
            _ => None,
        }
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

    /// What one proxy's resources are computed from (cheap copies, under
    /// the state lock), and the services they depend on.
    fn input(&self, d: &SmData, proxy_id: &str) -> ProxyInput {
        let mut input = ProxyInput {
            proxy_id: proxy_id.to_string(),
            index: d.applied_index(),
            proxy: None,
            deps: BTreeSet::new(),
        };
        let Some(svc) = d.catalog.service(proxy_id) else {
            return input;
        };
        let proxy = match (svc.kind, &svc.proxy) {
            (ServiceKind::SidecarProxy, Some(p)) => Proxy::Sidecar(self.sidecar(proxy_id, svc, p)),
            (ServiceKind::MeshGateway, _) => Proxy::Gateway(Gateway {
                proxy_id: proxy_id.to_string(),
                service: svc.name.clone(),
                lan_address: svc.address.clone(),
                lan_port: svc.port,
                wan: svc.wan.as_ref().map(|w| (w.address.clone(), w.port)),
            }),
            _ => return input,
        };
        let mesh = match &proxy {
            Proxy::Sidecar(sc) => {
                input.deps = sc.upstreams.iter().map(|u| u.destination.clone()).collect();
                let mut mesh = self.mesh_snapshot(d, &input.deps);
                mesh.peers = peer_meshes(d, sc);
                mesh.inbound_peers = inbound_peers(d, &sc.service);
                mesh
            }
            Proxy::Gateway(_) => {
                input.deps = BTreeSet::from([EVERY_SERVICE.to_string()]);
                let every: BTreeSet<String> = d.catalog.mesh_destinations().cloned().collect();
                self.mesh_snapshot(d, &every)
            }
        };
        input.proxy = Some((proxy, mesh));
        input
    }

    /// A sidecar as the translation takes it: each upstream's gateway mode
    /// resolved (the upstream's, else the proxy's, else the datacenter's).
    fn sidecar(&self, proxy_id: &str, svc: &model::Service, p: &model::ProxyConfig) -> Sidecar {
        let mode = |m: Option<model::GatewayMode>| match m.or(p.mesh_gateway_mode) {
            Some(model::GatewayMode::None) => GatewayMode::None,
            Some(model::GatewayMode::Local) => GatewayMode::Local,
            Some(model::GatewayMode::Remote) => GatewayMode::Remote,
            None => self.settings.gateway_mode,
        };
        Sidecar {
            proxy_id: proxy_id.to_string(),
            service: p.destination_service_name.clone(),
            public_address: svc.address.clone(),
            public_port: svc.port,
            local_app_address: p.local_service_address.clone(),
            local_app_port: p.local_service_port,
            upstreams: p
                .upstreams
                .iter()
                .map(|u| {
                    let (datacenter, peer) = match u.target() {
                        model::UpstreamTarget::Local => (String::new(), String::new()),
                        model::UpstreamTarget::Datacenter(dc) => (dc.to_string(), String::new()),
                        model::UpstreamTarget::Peer(p) => (String::new(), p.to_string()),
                    };
                    Upstream {
                        destination: u.destination_name.clone(),
                        datacenter,
                        bind_address: u.local_bind_address.clone(),
                        bind_port: u.local_bind_port,
                        mode: mode(u.mesh_gateway_mode),
                        peer,
                    }
                })
                .collect(),
        }
    }

    /// The resources of one proxy, outside the state lock: its leaf (signed
    /// here when due) and the translation.
    fn translate(&self, input: ProxyInput, ca: Option<&CaState>) -> ProxyResources {
        let (sidecar, mesh) = match input.proxy {
            Some((Proxy::Sidecar(sc), mesh)) => (sc, mesh),
            Some((Proxy::Gateway(gw), mesh)) => {
                // A gateway never terminates TLS: it needs no certificate.
                let (res, diags) = tribune_xds::gateway::build(&gw, &mesh);
                for diag in diags {
                    tracing::warn!(proxy = %diag.proxy_id, "{}", diag.message);
                }
                return res;
            }
            None => {
                return ProxyResources {
                    index: input.index,
                    ..Default::default()
                };
            }
        };
        let leaf = ca.and_then(|ca| {
            self.leaves
                .get(ca, &self.settings.datacenter, &sidecar.service, now_unix())
                .map_err(|e| tracing::warn!(proxy = %input.proxy_id, error = %e, "no leaf certificate"))
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
        res
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
                    .map(|sc| MeshEndpoint {
                        instance_id: sc.id.clone(),
                        address: sc.address.clone(),
                        port: sc.port,
                        healthy: c.proxy_healthy(sc),
                    })
                    .collect();
                (name.clone(), eps)
            })
            .collect();
        let remote_ep = |e: &RemoteEndpoint| MeshEndpoint {
            instance_id: e.id.clone(),
            address: e.address.clone(),
            port: e.port,
            healthy: e.healthy,
        };
        let remote = m
            .remote
            .iter()
            .filter(|(dc, _)| **dc != self.settings.datacenter)
            .map(|(dc, r)| {
                let endpoints = r
                    .services
                    .iter()
                    .filter(|(name, _)| services.contains(*name))
                    .map(|(name, eps)| (name.clone(), eps.iter().map(remote_ep).collect()))
                    .collect();
                let gateways = r.gateways.iter().map(remote_ep).collect();
                (dc.clone(), RemoteDatacenter { gateways, endpoints })
            })
            .collect();
        let local_gateways = c
            .mesh_gateways()
            .map(|s| MeshEndpoint {
                instance_id: s.id.clone(),
                address: s.address.clone(),
                port: s.port,
                healthy: c.status_of(s) != Status::Critical,
            })
            .collect();
        MeshSnapshot {
            local_gateways,
            remote,
            index: d.applied_index(),
            trust_domain: m
                .ca
                .as_ref()
                .map(|ca| ca.trust_domain.clone())
                .unwrap_or_default(),
            datacenter: self.settings.datacenter.clone(),
            default_allow: self.settings.default_allow,
            // A peer's service is known to the translation by its trust
            // domain; intentions naming a peer not (yet) known are left out.
            intentions: m
                .intentions
                .values()
                .filter_map(|i| {
                    let source = match i.source_peer() {
                        None => i.source.clone(),
                        Some((peer, svc)) => {
                            let td = &c.peering().peerings.get(peer)?.peer.trust_domain;
                            if td.is_empty() {
                                return None;
                            }
                            format!("{td}/{svc}")
                        }
                    };
                    Some(Intention {
                        source,
                        destination: i.destination.clone(),
                        allow: i.allow,
                    })
                })
                .collect(),
            endpoints,
            roots_pem: m.ca.as_ref().map(|ca| ca.trust_bundle()).unwrap_or_default(),
            peers: Default::default(),
            inbound_peers: Vec::new(),
        }
    }

    /// Rebuilds `proxies` and sends each one whose resources changed.
    fn rebuild(&self, proxies: impl IntoIterator<Item = String>) -> usize {
        let proxies: Vec<String> = proxies.into_iter().collect();
        let mut sent = 0;
        for batch in proxies.chunks(INPUTS_PER_LOCK) {
            let (inputs, ca) = {
                let d = self.state.read();
                let inputs: Vec<ProxyInput> = batch.iter().map(|id| self.input(&d, id)).collect();
                (inputs, d.catalog.mesh().ca.clone())
            };
            for input in inputs {
                sent += self.publish(input, ca.as_ref());
            }
        }
        sent
    }

    /// Builds one proxy's resources and sends them if they changed; 1 if sent.
    fn publish(&self, input: ProxyInput, ca: Option<&CaState>) -> usize {
        let mut sent = 0;
        let id = input.proxy_id.clone();
        let deps = input.deps.clone();
        let res = self.translate(input, ca);
        {
            let old_deps = {
                let mut slots = self.slots();
                let Some(slot) = slots.get_mut(&id) else { return 0 };
                if slot.tx.receiver_count() == 0 {
                    let old = std::mem::take(&mut slot.deps);
                    slots.remove(&id);
                    drop(slots);
                    self.set_deps(&id, &old, &BTreeSet::new());
                    return 0;
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
            let any_service = !cs.services.is_empty() || !cs.upserts.is_empty() || !cs.removed.is_empty();
            if any_service && let Some(p) = idx.get(EVERY_SERVICE) {
                out.extend(p.iter().cloned());
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
        let taken = self.feed.lock().unwrap_or_else(|e| e.into_inner()).take();
        let mut feed = taken.unwrap_or_else(|| self.state.read().feed.subscribe());
        loop {
            let renew_in = self
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

/// What the peers named by `sc`'s upstreams export here: their trust,
/// and each exported service's names and the exporter's gateways.
fn peer_meshes(d: &SmData, sc: &Sidecar) -> std::collections::BTreeMap<String, tribune_xds::PeerMesh> {
    let peerings = &d.catalog.peering().peerings;
    sc.upstreams
        .iter()
        .filter(|u| !u.peer.is_empty())
        .filter_map(|u| {
            let p = peerings
                .get(&u.peer)
                .filter(|p| p.state != crate::catalog::peering::PeeringState::Terminated)?;
            let services = p
                .imported
                .iter()
                .map(|s| {
                    let gateways = s
                        .gateways
                        .iter()
                        .filter_map(|g| {
                            let (a, port) = g.rsplit_once(':')?;
                            Some(MeshEndpoint {
                                instance_id: g.clone(),
                                address: a.to_string(),
                                port: port.parse().ok()?,
                                healthy: true,
                            })
                        })
                        .collect();
                    (
                        s.name.clone(),
                        tribune_xds::PeerService {
                            sni: s.sni.clone(),
                            spiffe_id: s.spiffe_id.clone(),
                            gateways,
                        },
                    )
                })
                .collect();
            Some((
                u.peer.clone(),
                tribune_xds::PeerMesh {
                    trust_domain: p.peer.trust_domain.clone(),
                    roots_pem: p.peer.roots_pem.clone(),
                    services,
                },
            ))
        })
        .collect()
}

/// The peers `service` is exported to, whose identities its sidecars accept.
fn inbound_peers(d: &SmData, service: &str) -> Vec<tribune_xds::PeerTrust> {
    let store = d.catalog.peering();
    let Some(peers) = store.exports.get(service) else {
        return Vec::new();
    };
    peers
        .iter()
        .filter_map(|name| store.peerings.get(name))
        .filter(|p| p.state != crate::catalog::peering::PeeringState::Terminated)
        .filter(|p| !p.peer.trust_domain.is_empty() && !p.peer.roots_pem.is_empty())
        .map(|p| tribune_xds::PeerTrust {
            trust_domain: p.peer.trust_domain.clone(),
            roots_pem: p.peer.roots_pem.clone(),
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod fixture {
    //! A hub on a real state machine, without Raft or a network: entries
    //! are applied to the state machine directly. Shared with the ADS tests.

    use std::collections::BTreeMap;

    use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
    use openraft::storage::RaftStateMachine;
    use openraft::{CommittedLeaderId, EntryPayload};
    use prost::Message;
    use tribune_xds::names;

    use super::*;
    use crate::catalog::command::{Command, Registration, Request};
    use crate::catalog::mesh::MeshCommand;
    use crate::catalog::model::{Node, ProxyConfig, Service, Upstream as CatalogUpstream};
    use crate::raft::state_machine::StateMachineStore;
    use crate::raft::{Entry, LogId};

    pub(crate) struct Fixture {
        _dir: tempfile::TempDir,
        sm: StateMachineStore,
        index: u64,
    }

    impl Fixture {
        fn new() -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            let sm = StateMachineStore::open(dir.path(), 1024).unwrap();
            Fixture {
                _dir: dir,
                sm,
                index: 0,
            }
        }

        pub(crate) async fn apply(&mut self, cmd: Command) {
            self.index += 1;
            let entry = Entry {
                log_id: LogId::new(CommittedLeaderId::new(1, 1), self.index),
                payload: EntryPayload::Normal(Request { commands: vec![cmd] }),
            };
            self.sm.apply([entry]).await.unwrap();
        }
    }

    pub(crate) fn with_sidecar(id: &str, name: &str, port: u16, upstreams: &[&str]) -> Command {
        let service = |id: String, name: String, port: u16, proxy: Option<ProxyConfig>| Service {
            id,
            name,
            node: "n1".into(),
            address: "127.0.0.1".into(),
            port,
            wan: None,
            tags: vec![],
            meta: BTreeMap::new(),
            kind: if proxy.is_some() {
                ServiceKind::SidecarProxy
            } else {
                ServiceKind::Typical
            },
            proxy,
            create_index: 0,
            modify_index: 0,
        };
        let proxy = ProxyConfig {
            destination_service_name: name.into(),
            destination_service_id: id.into(),
            local_service_address: "127.0.0.1".into(),
            local_service_port: port,
            upstreams: upstreams
                .iter()
                .enumerate()
                .map(|(i, u)| CatalogUpstream {
                    destination_name: (*u).into(),
                    local_bind_address: "127.0.0.1".into(),
                    local_bind_port: 9000 + i as u16,
                    datacenter: String::new(),
                    mesh_gateway_mode: None,
                })
                .collect(),
            mesh_gateway_mode: None,
        };
        Command::Register(Registration {
            node: Node {
                name: "n1".into(),
                address: "127.0.0.1".into(),
                wan_address: String::new(),
                datacenter: "dc1".into(),
                meta: BTreeMap::new(),
                create_index: 0,
                modify_index: 0,
            },
            services: vec![
                service(id.into(), name.into(), port, None),
                service(
                    tribune_ids::sidecar_id(id),
                    tribune_ids::sidecar_name(name),
                    port + 10_000,
                    Some(proxy),
                ),
            ],
            checks: vec![],
            remove: vec![],
        })
    }

    /// A CA, `web` (upstream `api`) and `api`, each with a sidecar, and a
    /// running hub.
    pub(crate) async fn mesh() -> (Fixture, Arc<XdsHub>) {
        let mut f = Fixture::new();
        let td = tribune_certs::trust_domain("c1");
        let root = tribune_certs::new_root(&td, "Tribune CA 1", 86_400, now_unix()).unwrap();
        f.apply(Command::Mesh(MeshCommand::CaInit {
            cluster_id: "c1".into(),
            root: Box::new(root),
            leaf_ttl_secs: 3_600,
        }))
        .await;
        f.apply(with_sidecar("web-1", "web", 8080, &["api"])).await;
        f.apply(with_sidecar("api-1", "api", 8081, &[])).await;
        let settings = HubSettings {
            datacenter: "dc1".into(),
            default_allow: false,
            gateway_mode: GatewayMode::None,
        };
        let hub = XdsHub::new(f.sm.shared(), Arc::new(LeafCache::new(100)), settings);
        tokio::spawn(hub.clone().run());
        (f, hub)
    }

    pub(crate) fn api_endpoints(r: &ProxyResources) -> usize {
        let cla = r
            .of_type(names::ENDPOINT)
            .and_then(|t| t.values().find(|x| x.name.starts_with("api.")))
            .map(|x| ClusterLoadAssignment::decode(&*x.body.value).unwrap())
            .expect("an endpoint resource for api");
        cla.endpoints.iter().map(|e| e.lb_endpoints.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::SubscribeError;
    use super::fixture::{api_endpoints, mesh, with_sidecar};
    use tribune_xds::names;

    #[tokio::test]
    async fn two_streams_of_one_proxy_are_both_served() {
        let (mut f, hub) = mesh().await;
        let mut a = hub.subscribe("web-1-sidecar-proxy").unwrap();
        let mut b = hub.subscribe("web-1-sidecar-proxy").unwrap();
        for rx in [&a, &b] {
            let r = rx.borrow();
            assert_eq!(api_endpoints(&r), 1);
            let secrets: Vec<&String> = r
                .of_type(names::SECRET)
                .map(|s| s.keys().collect())
                .unwrap_or_default();
            assert!(
                secrets.len() == 2 && secrets.iter().any(|n| *n == names::ROOTS_SECRET),
                "the leaf and the roots: {secrets:?}"
            );
        }
        f.apply(with_sidecar("api-2", "api", 8082, &[])).await;
        for rx in [&mut a, &mut b] {
            tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|r| api_endpoints(r) == 2))
                .await
                .expect("both streams see the new api endpoint")
                .unwrap();
        }
    }

    #[tokio::test]
    async fn subscribing_at_once_never_drops_the_other_stream() {
        let (mut f, hub) = mesh().await;
        let subs: Vec<_> = (0..8)
            .map(|_| {
                let hub = hub.clone();
                tokio::task::spawn_blocking(move || hub.subscribe("web-1-sidecar-proxy").unwrap())
            })
            .collect();
        let mut rxs = Vec::new();
        for s in subs {
            rxs.push(s.await.unwrap());
        }
        f.apply(with_sidecar("api-2", "api", 8082, &[])).await;
        for rx in &mut rxs {
            tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|r| api_endpoints(r) == 2))
                .await
                .expect("every stream is still served")
                .unwrap();
        }
    }

    #[tokio::test]
    async fn only_registered_sidecars_subscribe() {
        let (_f, hub) = mesh().await;
        assert!(matches!(
            hub.subscribe("nope"),
            Err(SubscribeError::UnknownProxy(_))
        ));
        assert!(matches!(
            hub.subscribe("web-1"),
            Err(SubscribeError::NotAProxy(_))
        ));
    }
}
