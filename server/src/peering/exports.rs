//! What this cluster sends a peer, from the catalog: who it is (trust
//! bundle, servers) and the services it exports to that peer, each with
//! its instances' flattened health and the mesh gateways that reach it.
//! Pure functions of the catalog; conversions to and from the wire.

use tribune_proto::v1 as pb;

use crate::catalog::Catalog;
use crate::catalog::model::Status;
use crate::catalog::peering::{ImportedInstance, ImportedService, PeerIdentity};

/// This cluster as a peer sees it; `None` until its CA exists.
pub(crate) fn identity(c: &Catalog, datacenter: &str) -> Option<PeerIdentity> {
    let ca = c.mesh().ca.as_ref()?;
    let mut server_addresses: Vec<String> = c
        .nodes()
        .filter_map(|n| n.meta.get(super::TLS_ADDR_META).cloned())
        .collect();
    server_addresses.sort();
    Some(PeerIdentity {
        trust_domain: ca.trust_domain.clone(),
        datacenter: datacenter.to_string(),
        roots_pem: ca.roots.iter().map(|r| r.root.cert_pem.clone()).collect(),
        server_addresses,
        server_name: tribune_ids::server_tls_name(datacenter),
    })
}

/// The services exported to `peer`, with at least one instance.
pub(crate) fn exported(c: &Catalog, peer: &str, datacenter: &str) -> Vec<ImportedService> {
    let Some(td) = c.mesh().ca.as_ref().map(|ca| ca.trust_domain.clone()) else {
        return Vec::new();
    };
    let mut gateways: Vec<String> = c
        .mesh_gateways()
        .filter(|g| c.status_of(g) != Status::Critical)
        .map(|g| {
            let (a, p) = crate::federation::remote_mesh::reached_at(c, g);
            format!("{a}:{p}")
        })
        .collect();
    gateways.sort();
    c.peering()
        .exported_to(peer)
        .into_iter()
        .filter_map(|name| {
            let mut instances: Vec<ImportedInstance> = c
                .instances_of(&name)
                .filter(|s| s.proxy.is_none())
                .map(|s| ImportedInstance {
                    id: s.id.clone(),
                    node: s.node.clone(),
                    address: s.address.clone(),
                    port: u32::from(s.port),
                    health: c.status_of(s).as_str().to_string(),
                })
                .collect();
            if instances.is_empty() {
                return None;
            }
            instances.sort_by(|a, b| a.id.cmp(&b.id));
            Some(ImportedService {
                sni: tribune_ids::sni(&name, datacenter, &td),
                spiffe_id: tribune_ids::service_spiffe_id(&td, datacenter, &name),
                name,
                instances,
                gateways: gateways.clone(),
            })
        })
        .collect()
}

pub(crate) fn identity_to_pb(i: &PeerIdentity) -> pb::PeerIdentity {
    pb::PeerIdentity {
        trust_domain: i.trust_domain.clone(),
        datacenter: i.datacenter.clone(),
        roots_pem: i.roots_pem.clone(),
        server_addresses: i.server_addresses.clone(),
    }
}

/// A peer's identity as received; its servers present `server.<dc>.tribune`.
pub(crate) fn identity_from_pb(i: &pb::PeerIdentity) -> PeerIdentity {
    PeerIdentity {
        trust_domain: i.trust_domain.clone(),
        datacenter: i.datacenter.clone(),
        roots_pem: i.roots_pem.clone(),
        server_addresses: i.server_addresses.clone(),
        server_name: if i.datacenter.is_empty() {
            String::new()
        } else {
            tribune_ids::server_tls_name(&i.datacenter)
        },
    }
}

pub(crate) fn service_to_pb(s: &ImportedService) -> pb::ImportedService {
    pb::ImportedService {
        name: s.name.clone(),
        sni: s.sni.clone(),
        spiffe_id: s.spiffe_id.clone(),
        instances: s
            .instances
            .iter()
            .map(|i| pb::ImportedInstance {
                id: i.id.clone(),
                node: i.node.clone(),
                address: i.address.clone(),
                port: i.port,
                health: i.health.clone(),
            })
            .collect(),
        gateways: s.gateways.clone(),
    }
}

/// A received service, checked: a peer's names must be names, its health
/// one of three words. Returns the first field that is not.
pub(crate) fn service_from_pb(s: &pb::ImportedService) -> Result<ImportedService, String> {
    crate::catalog::validate::service_name("services.name", &s.name).map_err(|e| e.to_string())?;
    let mut instances = Vec::with_capacity(s.instances.len());
    for i in &s.instances {
        if !matches!(i.health.as_str(), "passing" | "warning" | "critical") {
            return Err(format!(
                "services.instances.health: {:?} is not passing, warning or critical",
                i.health
            ));
        }
        if i.port > u32::from(u16::MAX) {
            return Err(format!("services.instances.port: {} is not a port", i.port));
        }
        instances.push(ImportedInstance {
            id: i.id.clone(),
            node: i.node.clone(),
            address: i.address.clone(),
            port: i.port,
            health: i.health.clone(),
        });
    }
    Ok(ImportedService {
        name: s.name.clone(),
        sni: s.sni.clone(),
        spiffe_id: s.spiffe_id.clone(),
        instances,
        gateways: s.gateways.clone(),
    })
}
