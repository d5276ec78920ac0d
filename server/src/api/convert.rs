//! Between the wire (`tribune.v1` messages) and the catalog's own types.
//! Incoming messages are validated here, field by field, on their way in.

use std::collections::{BTreeMap, BTreeSet};

use tribune_proto::v1 as pb;

use crate::catalog::command::Registration;
use crate::catalog::model::{
    Check, CheckDefinition, CheckKind, GatewayMode, InstanceHealth, Node, ProxyConfig, Service, ServiceKind,
    Status, Upstream, WanAddress,
};
use crate::catalog::validate::{self as v, FieldError, err};

const DEFAULT_INTERVAL_MS: u64 = 10_000;
const DEFAULT_TIMEOUT_MS: u64 = 10_000;
use tribune_ids::SIDECAR_SUFFIX;

/// What a registration falls back on: the node of the agent serving it.
pub(crate) struct RegisterDefaults<'a> {
    pub node: &'a str,
    pub node_address: &'a str,
    pub datacenter: &'a str,
}

pub(crate) fn status_from_pb(field: &str, s: i32) -> v::Result<Status> {
    match pb::HealthStatus::try_from(s) {
        Ok(pb::HealthStatus::Passing) => Ok(Status::Passing),
        Ok(pb::HealthStatus::Warning) => Ok(Status::Warning),
        Ok(pb::HealthStatus::Critical) => Ok(Status::Critical),
        _ => err(
            field,
            format!("{s} is not a status: use PASSING, WARNING or CRITICAL"),
        ),
    }
}

pub(crate) fn status_to_pb(s: Status) -> i32 {
    match s {
        Status::Passing => pb::HealthStatus::Passing as i32,
        Status::Warning => pb::HealthStatus::Warning as i32,
        Status::Critical => pb::HealthStatus::Critical as i32,
    }
}

fn kind_from_pb(field: &str, k: i32) -> v::Result<ServiceKind> {
    match pb::ServiceKind::try_from(k) {
        Ok(pb::ServiceKind::Typical) => Ok(ServiceKind::Typical),
        Ok(pb::ServiceKind::SidecarProxy) => Ok(ServiceKind::SidecarProxy),
        Ok(pb::ServiceKind::MeshGateway) => Ok(ServiceKind::MeshGateway),
        Err(_) => err(field, format!("{k} is not a service kind")),
    }
}

fn kind_to_pb(k: ServiceKind) -> i32 {
    match k {
        ServiceKind::Typical => pb::ServiceKind::Typical as i32,
        ServiceKind::SidecarProxy => pb::ServiceKind::SidecarProxy as i32,
        ServiceKind::MeshGateway => pb::ServiceKind::MeshGateway as i32,
    }
}

fn meta_of(field: &str, m: std::collections::HashMap<String, String>) -> v::Result<BTreeMap<String, String>> {
    let m: BTreeMap<String, String> = m.into_iter().collect();
    v::meta(field, m.iter())?;
    Ok(m)
}

fn upstreams_of(field: &str, ups: Vec<pb::Upstream>) -> v::Result<Vec<Upstream>> {
    if ups.len() > v::MAX_UPSTREAMS {
        return err(
            field,
            format!(
                "has {} upstreams; at most {} are allowed",
                ups.len(),
                v::MAX_UPSTREAMS
            ),
        );
    }
    let mut ports = BTreeSet::new();
    ups.into_iter()
        .enumerate()
        .map(|(i, u)| {
            let f = |s: &str| format!("{field}[{i}].{s}");
            v::service_name(&f("destination_name"), &u.destination_name)?;
            let port = v::port(&f("local_bind_port"), u.local_bind_port)?;
            let addr = if u.local_bind_address.is_empty() {
                "127.0.0.1".to_string()
            } else {
                u.local_bind_address
            };
            v::address(&f("local_bind_address"), &addr)?;
            if !ports.insert((addr.clone(), port)) {
                return err(
                    f("local_bind_port"),
                    format!("{addr}:{port} is already bound by another upstream"),
                );
            }
            if !u.datacenter.is_empty() {
                v::node_name(&f("datacenter"), &u.datacenter)?;
            }
            let target = if u.peer.is_empty() {
                u.datacenter
            } else {
                v::node_name(&f("peer"), &u.peer)?;
                if !u.datacenter.is_empty() {
                    return err(f("peer"), "an upstream names a datacenter or a peer, not both");
                }
                Upstream::peer_target(&u.peer)
            };
            Ok(Upstream {
                destination_name: u.destination_name,
                local_bind_address: addr,
                local_bind_port: port,
                datacenter: target,
                mesh_gateway_mode: mode_from_pb(&f("mesh_gateway_mode"), u.mesh_gateway_mode)?,
            })
        })
        .collect()
}

fn proxy_of(field: &str, p: pb::ProxyConfig) -> v::Result<ProxyConfig> {
    v::service_name(
        &format!("{field}.destination_service_name"),
        &p.destination_service_name,
    )?;
    if !p.destination_service_id.is_empty() {
        v::id(
            &format!("{field}.destination_service_id"),
            &p.destination_service_id,
        )?;
    }
    let local_service_address = if p.local_service_address.is_empty() {
        "127.0.0.1".to_string()
    } else {
        v::address(
            &format!("{field}.local_service_address"),
            &p.local_service_address,
        )?;
        p.local_service_address
    };
    let local_service_port = if p.local_service_port == 0 {
        0
    } else {
        v::port(&format!("{field}.local_service_port"), p.local_service_port)?
    };
    Ok(ProxyConfig {
        destination_service_name: p.destination_service_name,
        destination_service_id: p.destination_service_id,
        local_service_address,
        local_service_port,
        upstreams: upstreams_of(&format!("{field}.upstreams"), p.upstreams)?,
        mesh_gateway_mode: mode_from_pb(&format!("{field}.mesh_gateway_mode"), p.mesh_gateway_mode)?,
    })
}

fn mode_from_pb(field: &str, m: i32) -> v::Result<Option<GatewayMode>> {
    match pb::MeshGatewayMode::try_from(m) {
        Ok(pb::MeshGatewayMode::Default) => Ok(None),
        Ok(pb::MeshGatewayMode::None) => Ok(Some(GatewayMode::None)),
        Ok(pb::MeshGatewayMode::Local) => Ok(Some(GatewayMode::Local)),
        Ok(pb::MeshGatewayMode::Remote) => Ok(Some(GatewayMode::Remote)),
        Err(_) => err(
            field,
            format!("{m} is not a mesh gateway mode: use NONE, LOCAL or REMOTE"),
        ),
    }
}

fn mode_to_pb(m: Option<GatewayMode>) -> i32 {
    match m {
        None => pb::MeshGatewayMode::Default as i32,
        Some(GatewayMode::None) => pb::MeshGatewayMode::None as i32,
        Some(GatewayMode::Local) => pb::MeshGatewayMode::Local as i32,
        Some(GatewayMode::Remote) => pb::MeshGatewayMode::Remote as i32,
    }
}

fn wan_of(field: &str, v: &str) -> v::Result<Option<WanAddress>> {
    if v.is_empty() {
        return Ok(None);
    }
    let (address, port) = v::split_host_port(field, v)?;
    Ok(Some(WanAddress { address, port }))
}

fn check_of(
    i: usize,
    c: pb::CheckDefinition,
    node: &str,
    svc: &Service,
    taken: &mut BTreeSet<String>,
) -> v::Result<Check> {
    let f = |s: &str| format!("checks[{i}].{s}");
    let id = if c.id.is_empty() {
        tribune_ids::default_check_id(&svc.id, i)
    } else {
        c.id
    };
    v::id(&f("id"), &id)?;
    if !taken.insert(id.clone()) {
        return err(
            f("id"),
            format!("{id:?} is used by two checks of this registration"),
        );
    }
    let kind = match c.kind {
        Some(pb::check_definition::Kind::Http(url)) => {
            v::http_url(&f("http"), &url)?;
            CheckKind::Http { url }
        }
        Some(pb::check_definition::Kind::Tcp(address)) => {
            v::host_port(&f("tcp"), &address)?;
            CheckKind::Tcp { address }
        }
        Some(pb::check_definition::Kind::Grpc(target)) => {
            let hp = target.split('/').next().unwrap_or_default();
            v::host_port(&f("grpc"), hp)?;
            CheckKind::Grpc { target }
        }
        Some(pb::check_definition::Kind::TtlMs(ms)) => CheckKind::Ttl {
            ttl_ms: v::ttl_ms(&f("ttl_ms"), ms)?,
        },
        Some(pb::check_definition::Kind::AliasService(service_id)) => {
            v::id(&f("alias_service"), &service_id)?;
            if service_id == svc.id {
                return err(f("alias_service"), "a check cannot mirror its own instance");
            }
            CheckKind::Alias { service_id }
        }
        Some(pb::check_definition::Kind::SerfHealth(_)) => {
            return err(
                f("serf_health"),
                "is kept by the servers from LAN gossip and cannot be registered",
            );
        }
        None => {
            return err(
                f("kind"),
                "is required: one of http, tcp, grpc, ttl_ms or alias_service",
            );
        }
    };
    let is_ttl = matches!(kind, CheckKind::Ttl { .. });
    let interval_ms = match (c.interval_ms, is_ttl) {
        (0, _) => DEFAULT_INTERVAL_MS,
        (ms, _) => v::interval_ms(&f("interval_ms"), ms)?,
    };
    let timeout_ms = match c.timeout_ms {
        0 => DEFAULT_TIMEOUT_MS.min(interval_ms),
        ms if ms <= interval_ms => ms,
        ms => {
            return err(
                f("timeout_ms"),
                format!("{ms} ms is longer than the interval ({interval_ms} ms)"),
            );
        }
    };
    for (name, n) in [
        ("success_before_passing", c.success_before_passing),
        ("failures_before_critical", c.failures_before_critical),
    ] {
        if n > v::MAX_CHECK_THRESHOLD {
            return err(
                f(name),
                format!("{n} is too many: at most {}", v::MAX_CHECK_THRESHOLD),
            );
        }
    }
    let status = match c.initial_status {
        0 => Status::Critical,
        s => status_from_pb(&f("initial_status"), s)?,
    };
    let name = if c.name.is_empty() {
        format!("Service '{}' check", svc.name)
    } else if c.name.len() > v::MAX_TAG_LEN {
        return err(f("name"), format!("is longer than {} characters", v::MAX_TAG_LEN));
    } else {
        c.name
    };
    Ok(Check {
        id,
        name,
        node: node.to_string(),
        service_id: Some(svc.id.clone()),
        service_name: svc.name.clone(),
        definition: CheckDefinition {
            kind,
            interval_ms,
            timeout_ms,
            success_before_passing: c.success_before_passing,
            failures_before_critical: c.failures_before_critical,
        },
        status,
        output: String::new(),
        create_index: 0,
        modify_index: 0,
    })
}

/// Turns a register request into the command that carries it, or names the
/// first field that is wrong.
pub(crate) fn registration(
    req: pb::RegisterRequest,
    d: &RegisterDefaults<'_>,
) -> Result<Registration, FieldError> {
    let Some(spec) = req.service else {
        return err("service", "is required");
    };
    v::service_name("service.name", &spec.name)?;
    let id = if spec.id.is_empty() {
        spec.name.clone()
    } else {
        spec.id
    };
    v::id("service.id", &id)?;
    let port = v::port("service.port", spec.port)?;
    v::tags("service.tags", &spec.tags)?;
    let meta = meta_of("service.meta", spec.meta)?;
    let kind = kind_from_pb("service.kind", spec.kind)?;

    let node = if req.node.is_empty() {
        d.node.to_string()
    } else {
        req.node
    };
    v::node_name("node", &node)?;
    let address = if spec.address.is_empty() {
        d.node_address.to_string()
    } else {
        v::address("service.address", &spec.address)?;
        spec.address
    };
    let node_address = if !req.node_address.is_empty() {
        v::address("node_address", &req.node_address)?;
        req.node_address
    } else if node == d.node {
        d.node_address.to_string()
    } else {
        address.clone()
    };

    let proxy = match (kind, spec.proxy) {
        (ServiceKind::SidecarProxy, None) => {
            return err(
                "service.proxy",
                "is required for a sidecar-proxy (its destination service)",
            );
        }
        (_, Some(p)) => Some(proxy_of("service.proxy", p)?),
        (_, None) => None,
    };

    let wan = wan_of("service.wan_address", &spec.wan_address)?;
    if kind == ServiceKind::MeshGateway && wan.is_none() {
        return err(
            "service.wan_address",
            "is required for a mesh-gateway: where other datacenters reach it (IP:PORT)",
        );
    }
    let node_wan_address = if req.node_wan_address.is_empty() {
        String::new()
    } else {
        v::address("node_wan_address", &req.node_wan_address)?;
        req.node_wan_address
    };
    let service = Service {
        id: id.clone(),
        name: spec.name.clone(),
        node: node.clone(),
        address: address.clone(),
        port,
        wan,
        tags: spec.tags,
        meta,
        kind,
        proxy,
        create_index: 0,
        modify_index: 0,
    };

    if req.checks.len() > v::MAX_CHECKS {
        return err(
            "checks",
            format!(
                "has {} checks; at most {} are allowed",
                req.checks.len(),
                v::MAX_CHECKS
            ),
        );
    }
    let mut taken = BTreeSet::new();
    let checks = req
        .checks
        .into_iter()
        .enumerate()
        .map(|(i, c)| check_of(i, c, &node, &service, &mut taken))
        .collect::<v::Result<Vec<_>>>()?;

    let sidecar_id = tribune_ids::sidecar_id(&id);
    let mut services = vec![service];
    let mut remove = Vec::new();
    match req.sidecar {
        Some(sc) => {
            if kind != ServiceKind::Typical {
                return err("sidecar", "only a typical service can have a sidecar");
            }
            v::id("service.id", &sidecar_id).map_err(|_| FieldError {
                field: "service.id".into(),
                message: format!(
                    "is too long to name its sidecar: \"<id>{SIDECAR_SUFFIX}\" must fit in {} characters",
                    v::MAX_ID_LEN
                ),
            })?;
            let sc_port = v::port("sidecar.port", sc.port)?;
            let sc_address = if sc.address.is_empty() {
                address.clone()
            } else {
                v::address("sidecar.address", &sc.address)?;
                sc.address
            };
            services.push(Service {
                id: sidecar_id,
                name: tribune_ids::sidecar_name(&spec.name),
                node: node.clone(),
                address: sc_address,
                port: sc_port,
                wan: None,
                tags: Vec::new(),
                meta: BTreeMap::new(),
                kind: ServiceKind::SidecarProxy,
                proxy: Some(ProxyConfig {
                    destination_service_name: spec.name,
                    destination_service_id: id,
                    local_service_address: "127.0.0.1".into(),
                    local_service_port: port,
                    upstreams: upstreams_of("sidecar.upstreams", sc.upstreams)?,
                    mesh_gateway_mode: mode_from_pb("sidecar.mesh_gateway_mode", sc.mesh_gateway_mode)?,
                }),
                create_index: 0,
                modify_index: 0,
            });
        }
        None if kind == ServiceKind::Typical => remove.push(sidecar_id),
        None => {}
    }

    Ok(Registration {
        node: Node {
            name: node,
            address: node_address,
            wan_address: node_wan_address,
            datacenter: d.datacenter.to_string(),
            meta: BTreeMap::new(),
            create_index: 0,
            modify_index: 0,
        },
        services,
        checks,
        remove,
    })
}

// === catalog -> wire ===

pub(crate) fn node_to_pb(n: &Node) -> pb::Node {
    pb::Node {
        name: n.name.clone(),
        address: n.address.clone(),
        datacenter: n.datacenter.clone(),
        meta: n.meta.clone().into_iter().collect(),
        create_index: n.create_index,
        modify_index: n.modify_index,
        wan_address: n.wan_address.clone(),
    }
}

fn upstream_to_pb(u: &Upstream) -> pb::Upstream {
    let (datacenter, peer) = match u.target() {
        crate::catalog::model::UpstreamTarget::Local => (String::new(), String::new()),
        crate::catalog::model::UpstreamTarget::Datacenter(dc) => (dc.to_string(), String::new()),
        crate::catalog::model::UpstreamTarget::Peer(p) => (String::new(), p.to_string()),
    };
    pb::Upstream {
        destination_name: u.destination_name.clone(),
        local_bind_address: u.local_bind_address.clone(),
        local_bind_port: u32::from(u.local_bind_port),
        datacenter,
        mesh_gateway_mode: mode_to_pb(u.mesh_gateway_mode),
        peer,
    }
}

pub(crate) fn service_to_pb(s: &Service) -> pb::ServiceInstance {
    pb::ServiceInstance {
        id: s.id.clone(),
        name: s.name.clone(),
        node: s.node.clone(),
        address: s.address.clone(),
        port: u32::from(s.port),
        tags: s.tags.clone(),
        meta: s.meta.clone().into_iter().collect(),
        kind: kind_to_pb(s.kind),
        proxy: s.proxy.as_ref().map(|p| pb::ProxyConfig {
            destination_service_name: p.destination_service_name.clone(),
            destination_service_id: p.destination_service_id.clone(),
            local_service_address: p.local_service_address.clone(),
            local_service_port: u32::from(p.local_service_port),
            upstreams: p.upstreams.iter().map(upstream_to_pb).collect(),
            mesh_gateway_mode: mode_to_pb(p.mesh_gateway_mode),
        }),
        create_index: s.create_index,
        modify_index: s.modify_index,
        wan_address: s
            .wan
            .as_ref()
            .map(|w| format!("{}:{}", w.address, w.port))
            .unwrap_or_default(),
    }
}

pub(crate) fn check_to_pb(c: &Check) -> pb::Check {
    let kind = match &c.definition.kind {
        CheckKind::Http { url } => pb::check_definition::Kind::Http(url.clone()),
        CheckKind::Tcp { address } => pb::check_definition::Kind::Tcp(address.clone()),
        CheckKind::Grpc { target } => pb::check_definition::Kind::Grpc(target.clone()),
        CheckKind::Ttl { ttl_ms } => pb::check_definition::Kind::TtlMs(*ttl_ms),
        CheckKind::Alias { service_id } => pb::check_definition::Kind::AliasService(service_id.clone()),
        CheckKind::Serf => pb::check_definition::Kind::SerfHealth(true),
    };
    pb::Check {
        id: c.id.clone(),
        name: c.name.clone(),
        node: c.node.clone(),
        service_id: c.service_id.clone().unwrap_or_default(),
        service_name: c.service_name.clone(),
        definition: Some(pb::CheckDefinition {
            id: c.id.clone(),
            name: c.name.clone(),
            kind: Some(kind),
            interval_ms: c.definition.interval_ms,
            timeout_ms: c.definition.timeout_ms,
            initial_status: 0,
            success_before_passing: c.definition.success_before_passing,
            failures_before_critical: c.definition.failures_before_critical,
        }),
        status: status_to_pb(c.status),
        output: c.output.clone(),
        create_index: c.create_index,
        modify_index: c.modify_index,
    }
}

pub(crate) fn health_to_pb(h: &InstanceHealth) -> pb::InstanceHealth {
    pb::InstanceHealth {
        service: Some(service_to_pb(&h.service)),
        node: h.node.as_ref().map(node_to_pb),
        checks: h.checks.iter().map(check_to_pb).collect(),
        status: status_to_pb(h.status),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: RegisterDefaults<'static> = RegisterDefaults {
        node: "dev",
        node_address: "127.0.0.1",
        datacenter: "dc1",
    };

    fn req() -> pb::RegisterRequest {
        pb::RegisterRequest {
            service: Some(pb::ServiceSpec {
                id: "web-1".into(),
                name: "web".into(),
                address: "127.0.0.1".into(),
                port: 8080,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_sidecar_is_derived_from_its_service() {
        let mut r = req();
        r.sidecar = Some(pb::SidecarSpec {
            port: 21000,
            upstreams: vec![pb::Upstream {
                destination_name: "api".into(),
                local_bind_port: 9191,
                ..Default::default()
            }],
            ..Default::default()
        });
        let reg = registration(r, &D).unwrap();
        assert_eq!(reg.services.len(), 2);
        let sc = &reg.services[1];
        assert_eq!(sc.id, "web-1-sidecar-proxy");
        assert_eq!(sc.name, "web-sidecar-proxy");
        let p = sc.proxy.as_ref().unwrap();
        assert_eq!(
            (p.destination_service_id.as_str(), p.local_service_port),
            ("web-1", 8080)
        );
        assert_eq!(p.upstreams[0].local_bind_address, "127.0.0.1");
    }

    type Mutation = Box<dyn Fn(&mut pb::RegisterRequest)>;

    #[test]
    fn errors_name_the_field() {
        let cases: Vec<(Mutation, &str)> = vec![
            (
                Box::new(|r| r.service.as_mut().unwrap().name = "Bad_Name".into()),
                "service.name",
            ),
            (
                Box::new(|r| r.service.as_mut().unwrap().port = 70000),
                "service.port",
            ),
            (
                Box::new(|r| r.service.as_mut().unwrap().id = "x".repeat(129)),
                "service.id",
            ),
            (
                Box::new(|r| r.service.as_mut().unwrap().address = "not an address".into()),
                "service.address",
            ),
            (Box::new(|r| r.service = None), "service"),
            (
                Box::new(|r| {
                    r.checks = vec![pb::CheckDefinition {
                        kind: Some(pb::check_definition::Kind::Tcp("nope".into())),
                        ..Default::default()
                    }]
                }),
                "checks[0].tcp",
            ),
            (
                Box::new(|r| r.checks = vec![pb::CheckDefinition::default()]),
                "checks[0].kind",
            ),
            (
                Box::new(|r| {
                    r.sidecar = Some(pb::SidecarSpec {
                        port: 0,
                        ..Default::default()
                    })
                }),
                "sidecar.port",
            ),
        ];
        for (mutate, field) in cases {
            let mut r = req();
            mutate(&mut r);
            assert_eq!(registration(r, &D).unwrap_err().field, field);
        }
    }
}
