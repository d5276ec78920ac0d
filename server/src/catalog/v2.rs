//! The logged and snapshotted catalog types as record format 2 wrote them,
//! before WAN addresses, gateway modes, intermediate CAs and remote
//! datacenters: read only, each converted into today's type with the new
//! fields empty. Nothing here is ever written.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::command::{Command, Outcome, Registration, Request};
use super::mesh::{CaRoot, CaState, Intention, MeshCommand};
use super::model::{CatalogData, Check, Node, ProxyConfig, Service, ServiceKind, StagedRestore, Upstream};
use crate::codec::Record;

#[derive(Serialize, Deserialize)]
pub(crate) struct UpstreamV2 {
    destination_name: String,
    local_bind_address: String,
    local_bind_port: u16,
    datacenter: String,
}

#[derive(Serialize, Deserialize)]
pub(crate) struct ProxyConfigV2 {
    destination_service_name: String,
    destination_service_id: String,
    local_service_address: String,
    local_service_port: u16,
    upstreams: Vec<UpstreamV2>,
}

#[derive(Serialize, Deserialize)]
pub(crate) struct NodeV2 {
    name: String,
    address: String,
    datacenter: String,
    meta: BTreeMap<String, String>,
    create_index: u64,
    modify_index: u64,
}

#[derive(Serialize, Deserialize)]
pub(crate) struct ServiceV2 {
    id: String,
    name: String,
    node: String,
    address: String,
    port: u16,
    tags: Vec<String>,
    meta: BTreeMap<String, String>,
    kind: ServiceKind,
    proxy: Option<ProxyConfigV2>,
    create_index: u64,
    modify_index: u64,
}

#[derive(Serialize, Deserialize)]
pub(crate) struct RegistrationV2 {
    node: NodeV2,
    services: Vec<ServiceV2>,
    checks: Vec<Check>,
    remove: Vec<String>,
}

#[derive(Serialize, Deserialize)]
pub(crate) struct CaStateV2 {
    cluster_id: String,
    trust_domain: String,
    leaf_ttl_secs: u64,
    roots: Vec<CaRoot>,
    create_index: u64,
    modify_index: u64,
}

#[derive(Serialize, Deserialize)]
pub(crate) struct CatalogDataV2 {
    nodes: Vec<NodeV2>,
    services: Vec<ServiceV2>,
    checks: Vec<Check>,
    ca: Option<CaStateV2>,
    intentions: Vec<Intention>,
    recent_requests: Vec<(String, Outcome)>,
    staged_restore: Option<StagedRestore>,
}

/// `Command` as version 2 wrote it: the same variants in the same order
/// (`MeshCommand` only grew variants at its end, so it reads as it is).
#[derive(Serialize, Deserialize)]
pub(crate) enum CommandV2 {
    Register(RegistrationV2),
    Deregister {
        service_id: String,
    },
    DeregisterNode {
        node: String,
    },
    UpdateTtl {
        check_id: String,
        status: super::model::Status,
        output: String,
    },
    CheckResult {
        check_id: String,
        status: super::model::Status,
        output: String,
    },
    Mesh(MeshCommand),
    Once {
        request_id: String,
        cmd: Box<CommandV2>,
    },
    Restore {
        data: Box<CatalogDataV2>,
        snapshot_index: u64,
    },
    RestoreChunk {
        restore_id: String,
        offset: u64,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    RestoreCommit {
        restore_id: String,
        len: u64,
        snapshot_index: u64,
    },
}

#[derive(Serialize, Deserialize)]
pub(crate) struct RequestV2 {
    pub(crate) commands: Vec<CommandV2>,
}

impl From<UpstreamV2> for Upstream {
    fn from(u: UpstreamV2) -> Self {
        Upstream {
            destination_name: u.destination_name,
            local_bind_address: u.local_bind_address,
            local_bind_port: u.local_bind_port,
            datacenter: u.datacenter,
            mesh_gateway_mode: None,
        }
    }
}

impl From<NodeV2> for Node {
    fn from(n: NodeV2) -> Self {
        Node {
            name: n.name,
            address: n.address,
            wan_address: String::new(),
            datacenter: n.datacenter,
            meta: n.meta,
            create_index: n.create_index,
            modify_index: n.modify_index,
        }
    }
}

impl From<ServiceV2> for Service {
    fn from(s: ServiceV2) -> Self {
        Service {
            id: s.id,
            name: s.name,
            node: s.node,
            address: s.address,
            port: s.port,
            wan: None,
            tags: s.tags,
            meta: s.meta,
            kind: s.kind,
            proxy: s.proxy.map(|p| ProxyConfig {
                destination_service_name: p.destination_service_name,
                destination_service_id: p.destination_service_id,
                local_service_address: p.local_service_address,
                local_service_port: p.local_service_port,
                upstreams: p.upstreams.into_iter().map(Upstream::from).collect(),
                mesh_gateway_mode: None,
            }),
            create_index: s.create_index,
            modify_index: s.modify_index,
        }
    }
}

impl From<CatalogDataV2> for CatalogData {
    fn from(d: CatalogDataV2) -> Self {
        CatalogData {
            nodes: d.nodes.into_iter().map(Node::from).collect(),
            services: d.services.into_iter().map(Service::from).collect(),
            checks: d.checks,
            ca: d.ca.map(|c| CaState {
                cluster_id: c.cluster_id,
                trust_domain: c.trust_domain,
                leaf_ttl_secs: c.leaf_ttl_secs,
                roots: c.roots,
                signing: None,
                create_index: c.create_index,
                modify_index: c.modify_index,
            }),
            intentions: d.intentions,
            recent_requests: d.recent_requests,
            staged_restore: d.staged_restore,
            remote: Vec::new(),
            acl: Default::default(),
            peering: Default::default(),
        }
    }
}

impl From<CommandV2> for Command {
    fn from(c: CommandV2) -> Self {
        match c {
            CommandV2::Register(r) => Command::Register(Registration {
                node: r.node.into(),
                services: r.services.into_iter().map(Service::from).collect(),
                checks: r.checks,
                remove: r.remove,
            }),
            CommandV2::Deregister { service_id } => Command::Deregister { service_id },
            CommandV2::DeregisterNode { node } => Command::DeregisterNode { node },
            CommandV2::UpdateTtl {
                check_id,
                status,
                output,
            } => Command::UpdateTtl {
                check_id,
                status,
                output,
            },
            CommandV2::CheckResult {
                check_id,
                status,
                output,
            } => Command::CheckResult {
                check_id,
                status,
                output,
            },
            CommandV2::Mesh(m) => Command::Mesh(m),
            CommandV2::Once { request_id, cmd } => Command::Once {
                request_id,
                cmd: Box::new((*cmd).into()),
            },
            CommandV2::Restore { data, snapshot_index } => Command::Restore {
                data: Box::new((*data).into()),
                snapshot_index,
            },
            CommandV2::RestoreChunk {
                restore_id,
                offset,
                data,
            } => Command::RestoreChunk {
                restore_id,
                offset,
                data,
            },
            CommandV2::RestoreCommit {
                restore_id,
                len,
                snapshot_index,
            } => Command::RestoreCommit {
                restore_id,
                len,
                snapshot_index,
            },
        }
    }
}

impl From<RequestV2> for Request {
    fn from(r: RequestV2) -> Self {
        Request {
            commands: r.commands.into_iter().map(Command::from).collect(),
        }
    }
}

impl Record for CatalogData {
    fn from_v2(body: &[u8]) -> Result<Self, postcard::Error> {
        postcard::from_bytes::<CatalogDataV2>(body).map(Into::into)
    }
}

impl Record for Command {
    fn from_v2(body: &[u8]) -> Result<Self, postcard::Error> {
        postcard::from_bytes::<CommandV2>(body).map(Into::into)
    }
}

impl Record for Request {
    fn from_v2(body: &[u8]) -> Result<Self, postcard::Error> {
        postcard::from_bytes::<RequestV2>(body).map(Into::into)
    }
}

impl Record for Outcome {}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a build before format 3 wrote: a registration of a sidecar
    /// with an upstream, as version 2 bytes.
    fn v2_request() -> Vec<u8> {
        let req = RequestV2 {
            commands: vec![CommandV2::Once {
                request_id: "r1".into(),
                cmd: Box::new(CommandV2::Register(RegistrationV2 {
                    node: NodeV2 {
                        name: "n1".into(),
                        address: "10.0.0.1".into(),
                        datacenter: "dc1".into(),
                        meta: BTreeMap::new(),
                        create_index: 0,
                        modify_index: 0,
                    },
                    services: vec![ServiceV2 {
                        id: "web-1-sidecar-proxy".into(),
                        name: "web-sidecar-proxy".into(),
                        node: "n1".into(),
                        address: "10.0.0.1".into(),
                        port: 21000,
                        tags: vec!["t".into()],
                        meta: BTreeMap::new(),
                        kind: ServiceKind::SidecarProxy,
                        proxy: Some(ProxyConfigV2 {
                            destination_service_name: "web".into(),
                            destination_service_id: "web-1".into(),
                            local_service_address: "127.0.0.1".into(),
                            local_service_port: 8080,
                            upstreams: vec![UpstreamV2 {
                                destination_name: "api".into(),
                                local_bind_address: "127.0.0.1".into(),
                                local_bind_port: 9191,
                                datacenter: "dc2".into(),
                            }],
                        }),
                        create_index: 0,
                        modify_index: 0,
                    }],
                    checks: vec![],
                    remove: vec![],
                })),
            }],
        };
        let mut bytes = vec![2];
        bytes.extend(postcard::to_stdvec(&req).unwrap());
        bytes
    }

    #[test]
    fn a_log_entry_of_an_older_build_reads_with_the_new_fields_empty() {
        let req: Request = crate::codec::decode(&v2_request()).unwrap();
        let Command::Once { cmd, .. } = &req.commands[0] else {
            panic!("{req:?}")
        };
        let Command::Register(r) = &**cmd else {
            panic!("{cmd:?}")
        };
        assert_eq!(r.node.address, "10.0.0.1");
        assert_eq!(r.node.wan_address, "");
        let s = &r.services[0];
        assert_eq!((s.port, s.wan.as_ref()), (21000, None));
        let p = s.proxy.as_ref().unwrap();
        assert_eq!(p.upstreams[0].datacenter, "dc2");
        assert_eq!(p.upstreams[0].local_bind_port, 9191);
        assert_eq!(
            (p.mesh_gateway_mode, p.upstreams[0].mesh_gateway_mode),
            (None, None)
        );
        // And it is written back as version 3, which reads as itself.
        let again: Request = crate::codec::decode(&crate::codec::encode(&req).unwrap()).unwrap();
        assert_eq!(again, req);
    }
}
