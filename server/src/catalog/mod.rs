//! The catalog: nodes, service instances and checks, held in memory with the
//! lookup indexes readers need (by service name, by node, by check status).
//! It is the state machine's data: changed only by [`Catalog::apply`], in
//! log order, and rebuilt from a snapshot plus the log tail after a restart.

pub(crate) mod acl;
pub(crate) mod command;
pub(crate) mod feed;
pub(crate) mod mesh;
pub(crate) mod model;
pub(crate) mod peering;
pub(crate) mod v2;
pub(crate) mod validate;

use std::collections::{BTreeMap, BTreeSet};

use command::{Command, Outcome, Registration};
use mesh::MeshState;
use model::{CatalogData, Check, InstanceHealth, Node, Service, ServiceKind, Status};

/// What one log entry changed, gathered while applying it, so that watchers
/// get one event per index.
#[derive(Debug, Default)]
pub(crate) struct Touched {
    pub instances: BTreeSet<String>,
    /// Removed instances with their service names (for per-service watches).
    pub removed: BTreeMap<String, String>,
    pub nodes: BTreeSet<String>,
    pub removed_nodes: BTreeSet<String>,
    /// The whole catalog was replaced: watchers need a fresh snapshot.
    pub reset: bool,
    /// The CA or intentions changed: every proxy's configuration may.
    pub mesh: bool,
    /// Services whose mesh endpoints a removed proxy fronted.
    pub removed_destinations: BTreeSet<String>,
}

#[derive(Clone, Debug, Default)]
pub(crate) struct Catalog {
    nodes: BTreeMap<String, Node>,
    services: BTreeMap<String, Service>,
    checks: BTreeMap<String, Check>,
    by_name: BTreeMap<String, BTreeSet<String>>,
    by_node: BTreeMap<String, BTreeSet<String>>,
    checks_by_service: BTreeMap<String, BTreeSet<String>>,
    node_checks: BTreeMap<String, BTreeSet<String>>,
    /// Every check on a node, its instances' included: what that node's
    /// agent runs.
    checks_by_node: BTreeMap<String, BTreeSet<String>>,
    checks_by_status: BTreeMap<Status, BTreeSet<String>>,
    /// Proxies by the service name they front: a service's mesh endpoints.
    proxies_by_destination: BTreeMap<String, BTreeSet<String>>,
    /// Mesh gateways' instance IDs: every proxy's inputs read them.
    gateways: BTreeSet<String>,
    mesh: MeshState,
    acl: acl::AclState,
    peering: peering::PeeringStore,
    /// Outcomes of recently applied named writes, for retries.
    recent: std::collections::HashMap<String, Outcome>,
    recent_order: std::collections::VecDeque<String>,
    staged_restore: Option<model::StagedRestore>,
}

/// How many named writes are remembered for deduplication.
pub(crate) const RECENT_REQUESTS: usize = 65_536;

impl Catalog {
    pub(crate) fn from_data(data: CatalogData) -> Self {
        let mut c = Catalog::default();
        for n in data.nodes {
            c.nodes.insert(n.name.clone(), n);
        }
        for s in data.services {
            c.insert_service(s);
        }
        for ch in data.checks {
            c.insert_check(ch);
        }
        for (id, o) in data.recent_requests {
            c.remember(id, o);
        }
        c.staged_restore = data.staged_restore;
        c.mesh.ca = data.ca;
        c.mesh.remote = data
            .remote
            .into_iter()
            .map(|m| (m.datacenter.clone(), m))
            .collect();
        c.acl = acl::AclState::from_data(data.acl);
        c.peering = peering::PeeringStore::from_data(data.peering);
        c.mesh.intentions = data
            .intentions
            .into_iter()
            .map(|i| ((i.source.clone(), i.destination.clone()), i))
            .collect();
        c
    }

    /// The catalog as owned data, for a snapshot encoded outside the lock.
    pub(crate) fn to_data(&self) -> CatalogData {
        CatalogData {
            nodes: self.nodes.values().cloned().collect(),
            services: self.services.values().cloned().collect(),
            checks: self.checks.values().cloned().collect(),
            ca: self.mesh.ca.clone(),
            intentions: self.mesh.intentions.values().cloned().collect(),
            recent_requests: self
                .recent_order
                .iter()
                .filter_map(|id| self.recent.get(id).map(|o| (id.clone(), o.clone())))
                .collect(),
            staged_restore: self.staged_restore.clone(),
            remote: self.mesh.remote.values().cloned().collect(),
            acl: self.acl.to_data(),
            peering: self.peering.to_data(),
        }
    }

    fn stage_restore(&mut self, restore_id: &str, offset: u64, data: &[u8]) -> Outcome {
        if offset == 0 {
            self.staged_restore = Some(model::StagedRestore {
                restore_id: restore_id.to_string(),
                data: Vec::new(),
            });
        }
        match self.staged_restore.as_mut() {
            Some(s) if s.restore_id == restore_id && s.data.len() as u64 == offset => {
                s.data.extend_from_slice(data);
                Outcome::RestoreStaged {
                    staged: s.data.len() as u64,
                }
            }
            _ => Outcome::Invalid {
                field: "restore".into(),
                message: format!(
                    "restore {restore_id}: a chunk at offset {offset} does not continue what is staged \
                     (another restore started since?)"
                ),
            },
        }
    }

    fn commit_restore(&mut self, restore_id: &str, len: u64, touched: &mut Touched) -> Outcome {
        let staged = match self.staged_restore.take() {
            Some(s) if s.restore_id == restore_id && s.data.len() as u64 == len => s,
            other => {
                let message = match &other {
                    Some(s) if s.restore_id == restore_id => {
                        format!("restore {restore_id}: {} of {len} bytes staged", s.data.len())
                    }
                    _ => format!("restore {restore_id} is not staged (another restore started since?)"),
                };
                self.staged_restore = other;
                return Outcome::Invalid {
                    field: "restore".into(),
                    message,
                };
            }
        };
        // The leader decoded these bytes before it staged them; a failure
        // here is the same on every replica, so state stays identical.
        match crate::codec::decode::<CatalogData>(&staged.data) {
            Ok(mut data) => {
                data.staged_restore = None;
                *self = Catalog::from_data(data);
                touched.reset = true;
                Outcome::Restored
            }
            Err(e) => Outcome::Invalid {
                field: "restore".into(),
                message: format!("restore {restore_id}: {e}"),
            },
        }
    }

    fn remember(&mut self, id: String, o: Outcome) {
        if self.recent.insert(id.clone(), o).is_none() {
            self.recent_order.push_back(id);
        }
        while self.recent_order.len() > RECENT_REQUESTS {
            if let Some(old) = self.recent_order.pop_front() {
                self.recent.remove(&old);
            }
        }
    }

    pub(crate) fn mesh(&self) -> &MeshState {
        &self.mesh
    }

    pub(crate) fn acl(&self) -> &acl::AclState {
        &self.acl
    }

    pub(crate) fn peering(&self) -> &peering::PeeringStore {
        &self.peering
    }

    /// Sidecars (and gateways) that front instances of `service`.
    pub(crate) fn proxies_for<'a>(&'a self, service: &str) -> impl Iterator<Item = &'a Service> + 'a {
        self.proxies_by_destination
            .get(service)
            .into_iter()
            .flatten()
            .filter_map(|id| self.services.get(id))
    }

    // === queries ===

    /// Services that have sidecars in front of them.
    pub(crate) fn mesh_destinations(&self) -> impl Iterator<Item = &String> {
        self.proxies_by_destination.keys()
    }

    /// An instance's aggregate status (the worst of its own and its node's
    /// checks), without copying them as `health_of` does.
    pub(crate) fn status_of(&self, service: &Service) -> Status {
        let own = self.checks_by_service.get(&service.id).into_iter().flatten();
        let node = self.node_checks.get(&service.node).into_iter().flatten();
        own.chain(node)
            .filter_map(|id| self.checks.get(id))
            .map(|c| c.status)
            .max()
            .unwrap_or(Status::Passing)
    }

    /// Whether a proxy may be sent traffic: neither it nor the instance it
    /// fronts is critical.
    pub(crate) fn proxy_healthy(&self, proxy: &Service) -> bool {
        let dest = proxy
            .proxy
            .as_ref()
            .map(|p| p.destination_service_id.as_str())
            .unwrap_or("");
        self.status_of(proxy) != Status::Critical
            && (dest.is_empty()
                || self
                    .service(dest)
                    .is_some_and(|d| self.status_of(d) != Status::Critical))
    }

    /// This datacenter's mesh gateways.
    pub(crate) fn mesh_gateways(&self) -> impl Iterator<Item = &Service> {
        self.gateways.iter().filter_map(|id| self.services.get(id))
    }

    pub(crate) fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.nodes.values()
    }

    pub(crate) fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.get(name)
    }

    pub(crate) fn service(&self, id: &str) -> Option<&Service> {
        self.services.get(id)
    }

    pub(crate) fn check(&self, id: &str) -> Option<&Check> {
        self.checks.get(id)
    }

    /// The instances on `node`.
    pub(crate) fn services_on<'a>(&'a self, node: &str) -> impl Iterator<Item = &'a Service> + 'a {
        self.by_node
            .get(node)
            .into_iter()
            .flatten()
            .filter_map(|id| self.services.get(id))
    }

    /// The node-level checks of `node` (such as serf-health).
    pub(crate) fn node_checks<'a>(&'a self, node: &str) -> impl Iterator<Item = &'a Check> + 'a {
        self.node_checks
            .get(node)
            .into_iter()
            .flatten()
            .filter_map(|id| self.checks.get(id))
    }

    /// Every check on `node`: its node-level checks and its instances'.
    pub(crate) fn checks_on<'a>(&'a self, node: &str) -> impl Iterator<Item = &'a Check> + 'a {
        self.checks_by_node
            .get(node)
            .into_iter()
            .flatten()
            .filter_map(|id| self.checks.get(id))
    }

    /// Service names with their instance IDs, sorted by name.
    pub(crate) fn service_names(&self) -> impl Iterator<Item = (&String, &BTreeSet<String>)> {
        self.by_name.iter()
    }

    pub(crate) fn instances_of<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a Service> + 'a {
        self.by_name
            .get(name)
            .into_iter()
            .flatten()
            .filter_map(|id| self.services.get(id))
    }

    /// The instance's own checks and its node's checks, with their aggregate.
    pub(crate) fn health_of(&self, service: &Service) -> InstanceHealth {
        let own = self.checks_by_service.get(&service.id).into_iter().flatten();
        let node = self.node_checks.get(&service.node).into_iter().flatten();
        // The instance's own checks first: they are what its owner registered.
        let checks: Vec<Check> = own
            .chain(node)
            .filter_map(|id| self.checks.get(id))
            .cloned()
            .collect();
        let status = checks.iter().map(|c| c.status).max().unwrap_or(Status::Passing);
        InstanceHealth {
            service: service.clone(),
            node: self.nodes.get(&service.node).cloned(),
            checks,
            status,
        }
    }

    pub(crate) fn instance_health(&self, id: &str) -> Option<InstanceHealth> {
        self.services.get(id).map(|s| self.health_of(s))
    }

    /// Checks by status (from the health index), optionally of one service name.
    pub(crate) fn checks_in(&self, status: Option<Status>, service: Option<&str>) -> Vec<Check> {
        let matches = |c: &&Check| service.is_none_or(|s| c.service_name == s);
        match status {
            Some(st) => self
                .checks_by_status
                .get(&st)
                .into_iter()
                .flatten()
                .filter_map(|id| self.checks.get(id))
                .filter(matches)
                .cloned()
                .collect(),
            None => self.checks.values().filter(matches).cloned().collect(),
        }
    }

    // === apply ===

    /// Applies one command at `index`. Deterministic: every replica that
    /// applies the same log gets the same catalog and the same outcomes.
    pub(crate) fn apply(&mut self, index: u64, cmd: &Command, touched: &mut Touched) -> Outcome {
        match cmd {
            Command::Register(reg) => self.register(index, reg, touched),
            Command::Deregister { service_id } => self.deregister(service_id, touched),
            Command::DeregisterNode { node } => self.deregister_node(node, touched),
            Command::UpdateTtl {
                check_id,
                status,
                output,
            } => self.update_ttl(index, check_id, *status, output, touched),
            Command::CheckResult {
                check_id,
                status,
                output,
            } => {
                if !self.checks.contains_key(check_id) {
                    return Outcome::NotFound {
                        what: format!("check {check_id:?}"),
                    };
                }
                self.set_check_status(index, check_id, *status, output, false, touched);
                Outcome::TtlUpdated
            }
            Command::Once { request_id, cmd } => {
                if let Some(o) = self.recent.get(request_id) {
                    return o.clone();
                }
                let o = self.apply(index, cmd, touched);
                self.remember(request_id.clone(), o.clone());
                o
            }
            Command::Mesh(m) => {
                touched.mesh = true;
                self.mesh.apply(index, m)
            }
            Command::Acl(a) => self.acl.apply(index, a),
            Command::Peering(p) => {
                // Imports, exports and peers' trust reach proxies; a link's
                // state and a removed record do not.
                use peering::PeeringCommand as P;
                touched.mesh |= !matches!(p, P::Status { .. } | P::Remove { .. });
                self.peering.apply(index, p)
            }
            Command::Restore { data, .. } => {
                *self = Catalog::from_data((**data).clone());
                touched.reset = true;
                Outcome::Restored
            }
            Command::RestoreChunk {
                restore_id,
                offset,
                data,
            } => self.stage_restore(restore_id, *offset, data),
            Command::RestoreCommit { restore_id, len, .. } => self.commit_restore(restore_id, *len, touched),
        }
    }

    fn register(&mut self, index: u64, reg: &Registration, touched: &mut Touched) -> Outcome {
        // Node: created on first use; updated when its definition changes.
        let mut node = reg.node.clone();
        match self.nodes.get(&node.name) {
            // A registration that names no WAN address keeps the node's.
            Some(old) if node.wan_address.is_empty() && !old.wan_address.is_empty() => {
                node.wan_address = old.wan_address.clone();
            }
            _ => {}
        }
        match self.nodes.get(&node.name) {
            Some(old)
                if old.address == node.address
                    && old.wan_address == node.wan_address
                    && old.datacenter == node.datacenter => {}
            Some(old) => {
                node.meta = old.meta.clone();
                node.create_index = old.create_index;
                node.modify_index = index;
                self.nodes.insert(node.name.clone(), node.clone());
                touched.nodes.insert(node.name.clone());
                self.touch_node_instances(&node.name, touched);
            }
            None => {
                node.create_index = index;
                node.modify_index = index;
                self.nodes.insert(node.name.clone(), node.clone());
                touched.nodes.insert(node.name.clone());
            }
        }

        for id in &reg.remove {
            if self.services.contains_key(id) {
                self.remove_service(id, touched);
            }
        }

        let mut registered_ids = BTreeSet::new();
        for svc in &reg.services {
            let mut svc = svc.clone();
            registered_ids.insert(svc.id.clone());
            match self.services.get(&svc.id) {
                Some(old) if old.same_definition(&svc) => {
                    svc.create_index = old.create_index;
                    svc.modify_index = old.modify_index;
                }
                Some(old) => {
                    svc.create_index = old.create_index;
                    svc.modify_index = index;
                }
                None => {
                    svc.create_index = index;
                    svc.modify_index = index;
                }
            }
            if let Some(old) = self.services.get(&svc.id).cloned() {
                self.unindex_service(&old);
            }
            touched.instances.insert(svc.id.clone());
            touched.removed.remove(&svc.id);
            self.insert_service(svc);
        }

        // The registration's checks replace the registered instances' checks;
        // a check that keeps its ID and definition keeps its status.
        let mut check_ids = Vec::new();
        let keep: BTreeSet<&str> = reg.checks.iter().map(|c| c.id.as_str()).collect();
        for sid in &registered_ids {
            let stale: Vec<String> = self
                .checks_by_service
                .get(sid)
                .into_iter()
                .flatten()
                .filter(|id| !keep.contains(id.as_str()))
                .cloned()
                .collect();
            for id in stale {
                self.remove_check(&id);
            }
        }
        for chk in &reg.checks {
            let mut chk = chk.clone();
            match self.checks.get(&chk.id) {
                Some(old) if old.definition == chk.definition && old.node == chk.node => {
                    chk.status = old.status;
                    chk.output = old.output.clone();
                    chk.create_index = old.create_index;
                    chk.modify_index = if old.name == chk.name && old.service_id == chk.service_id {
                        old.modify_index
                    } else {
                        index
                    };
                }
                Some(old) => {
                    chk.create_index = old.create_index;
                    chk.modify_index = index;
                }
                None => {
                    chk.create_index = index;
                    chk.modify_index = index;
                }
            }
            if self.checks.contains_key(&chk.id) {
                self.remove_check(&chk.id.clone());
            }
            check_ids.push(chk.id.clone());
            if let Some(sid) = &chk.service_id {
                touched.instances.insert(sid.clone());
            } else {
                self.touch_node_instances(&chk.node, touched);
            }
            self.insert_check(chk);
        }
        Outcome::Registered { check_ids }
    }

    fn deregister(&mut self, id: &str, touched: &mut Touched) -> Outcome {
        if !self.services.contains_key(id) {
            return Outcome::NotFound {
                what: format!("service instance {id:?}"),
            };
        }
        let mut removed_ids = vec![id.to_string()];
        let sidecar = tribune_ids::sidecar_id(id);
        if self
            .services
            .get(&sidecar)
            .and_then(|s| s.proxy.as_ref())
            .is_some_and(|p| p.destination_service_id == id)
        {
            self.remove_service(&sidecar, touched);
            removed_ids.push(sidecar);
        }
        self.remove_service(id, touched);
        Outcome::Deregistered { removed_ids }
    }

    fn deregister_node(&mut self, node: &str, touched: &mut Touched) -> Outcome {
        if !self.nodes.contains_key(node) {
            return Outcome::NotFound {
                what: format!("node {node:?}"),
            };
        }
        let removed_ids: Vec<String> = self.by_node.get(node).into_iter().flatten().cloned().collect();
        for id in &removed_ids {
            self.remove_service(id, touched);
        }
        let node_checks: Vec<String> = self
            .node_checks
            .get(node)
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        for id in node_checks {
            self.remove_check(&id);
        }
        self.nodes.remove(node);
        touched.nodes.remove(node);
        touched.removed_nodes.insert(node.to_string());
        Outcome::Deregistered { removed_ids }
    }

    fn update_ttl(
        &mut self,
        index: u64,
        check_id: &str,
        status: Status,
        output: &str,
        touched: &mut Touched,
    ) -> Outcome {
        let Some(chk) = self.checks.get(check_id) else {
            return Outcome::NotFound {
                what: format!("check {check_id:?}"),
            };
        };
        if !matches!(chk.definition.kind, model::CheckKind::Ttl { .. }) {
            return Outcome::Invalid {
                field: "check_id".into(),
                message: format!(
                    "check {check_id:?} is a {} check; only TTL checks are updated by hand",
                    chk.definition.kind.type_name()
                ),
            };
        }
        // Every TTL update counts, unchanged or not: it is what keeps the
        // TTL from expiring (the agent's runner follows the modify index).
        self.set_check_status(index, check_id, status, output, true, touched);
        Outcome::TtlUpdated
    }

    /// Sets a check's status and output; the instances it covers are
    /// touched. Unless `always`, an unchanged result changes nothing.
    fn set_check_status(
        &mut self,
        index: u64,
        check_id: &str,
        status: Status,
        output: &str,
        always: bool,
        touched: &mut Touched,
    ) {
        let Some(chk) = self.checks.get(check_id) else {
            return;
        };
        if !always && chk.status == status && chk.output == output {
            return;
        }
        let mut chk = chk.clone();
        self.remove_check(check_id);
        chk.status = status;
        chk.output = output.to_string();
        chk.modify_index = index;
        match &chk.service_id {
            Some(sid) => {
                touched.instances.insert(sid.clone());
            }
            None => self.touch_node_instances(&chk.node.clone(), touched),
        }
        self.insert_check(chk);
    }

    // === index maintenance ===

    fn touch_node_instances(&self, node: &str, touched: &mut Touched) {
        touched
            .instances
            .extend(self.by_node.get(node).into_iter().flatten().cloned());
    }

    fn insert_service(&mut self, s: Service) {
        if s.kind == ServiceKind::MeshGateway {
            self.gateways.insert(s.id.clone());
        }
        if let Some(p) = s.proxy.as_ref().filter(|_| s.kind == ServiceKind::SidecarProxy) {
            self.proxies_by_destination
                .entry(p.destination_service_name.clone())
                .or_default()
                .insert(s.id.clone());
        }
        self.by_name
            .entry(s.name.clone())
            .or_default()
            .insert(s.id.clone());
        self.by_node
            .entry(s.node.clone())
            .or_default()
            .insert(s.id.clone());
        self.services.insert(s.id.clone(), s);
    }

    fn unindex_service(&mut self, s: &Service) {
        self.gateways.remove(&s.id);
        if let Some(p) = &s.proxy {
            remove_from(
                &mut self.proxies_by_destination,
                &p.destination_service_name,
                &s.id,
            );
        }
        remove_from(&mut self.by_name, &s.name, &s.id);
        remove_from(&mut self.by_node, &s.node, &s.id);
    }

    fn remove_service(&mut self, id: &str, touched: &mut Touched) {
        let Some(s) = self.services.remove(id) else {
            return;
        };
        self.unindex_service(&s);
        let checks: Vec<String> = self
            .checks_by_service
            .get(id)
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        for c in checks {
            self.remove_check(&c);
        }
        touched.instances.remove(id);
        if let Some(p) = &s.proxy {
            touched
                .removed_destinations
                .insert(p.destination_service_name.clone());
        }
        touched.removed.insert(s.id, s.name);
    }

    fn insert_check(&mut self, c: Check) {
        match &c.service_id {
            Some(sid) => self
                .checks_by_service
                .entry(sid.clone())
                .or_default()
                .insert(c.id.clone()),
            None => self
                .node_checks
                .entry(c.node.clone())
                .or_default()
                .insert(c.id.clone()),
        };
        self.checks_by_status
            .entry(c.status)
            .or_default()
            .insert(c.id.clone());
        self.checks_by_node
            .entry(c.node.clone())
            .or_default()
            .insert(c.id.clone());
        self.checks.insert(c.id.clone(), c);
    }

    fn remove_check(&mut self, id: &str) {
        let Some(c) = self.checks.remove(id) else {
            return;
        };
        match &c.service_id {
            Some(sid) => remove_from(&mut self.checks_by_service, sid, id),
            None => remove_from(&mut self.node_checks, &c.node, id),
        }
        remove_from(&mut self.checks_by_status, &c.status, id);
        remove_from(&mut self.checks_by_node, &c.node, id);
    }
}

fn remove_from<K: Ord + Clone>(map: &mut BTreeMap<K, BTreeSet<String>>, key: &K, id: &str) {
    if let Some(set) = map.get_mut(key) {
        set.remove(id);
        if set.is_empty() {
            map.remove(key);
        }
    }
}

#[cfg(test)]
mod tests;
