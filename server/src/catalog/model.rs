//! The catalog's entities as the state machine stores them. Every entity
//! carries the Raft index that created it and the one that last changed it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Health of a check, ordered from best to worst so that `max` aggregates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub(crate) enum Status {
    Passing,
    Warning,
    Critical,
}

impl Status {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Status::Passing => "passing",
            Status::Warning => "warning",
            Status::Critical => "critical",
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum ServiceKind {
    #[default]
    Typical,
    SidecarProxy,
    MeshGateway,
}

/// How a sidecar reaches an upstream in another datacenter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum GatewayMode {
    /// Straight to the remote sidecars at their WAN addresses.
    None,
    /// Through this datacenter's mesh gateways.
    Local,
    /// Straight to the target datacenter's mesh gateways.
    Remote,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Upstream {
    pub destination_name: String,
    pub local_bind_address: String,
    pub local_bind_port: u16,
    /// Where the destination is: empty (this datacenter), a datacenter, or
    /// `peer:NAME` for a cluster peer (a datacenter's name never holds a
    /// `:`), so that records of earlier builds read as they are. Read it
    /// through [`Upstream::target`].
    pub datacenter: String,
    /// `None`: the proxy's mode, then the datacenter's.
    pub mesh_gateway_mode: Option<GatewayMode>,
}

/// Where an upstream's destination is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum UpstreamTarget<'a> {
    Local,
    Datacenter(&'a str),
    Peer(&'a str),
}

const PEER_PREFIX: &str = "peer:";

impl Upstream {
    pub(crate) fn target(&self) -> UpstreamTarget<'_> {
        match self.datacenter.strip_prefix(PEER_PREFIX) {
            Some(peer) => UpstreamTarget::Peer(peer),
            None if self.datacenter.is_empty() => UpstreamTarget::Local,
            None => UpstreamTarget::Datacenter(&self.datacenter),
        }
    }

    /// How a peer target is kept in `datacenter`.
    pub(crate) fn peer_target(peer: &str) -> String {
        format!("{PEER_PREFIX}{peer}")
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ProxyConfig {
    pub destination_service_name: String,
    pub destination_service_id: String,
    pub local_service_address: String,
    pub local_service_port: u16,
    pub upstreams: Vec<Upstream>,
    /// For upstreams that set no mode; `None`: the datacenter's.
    pub mesh_gateway_mode: Option<GatewayMode>,
}

/// Where other datacenters reach something.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct WanAddress {
    pub address: String,
    pub port: u16,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Node {
    pub name: String,
    pub address: String,
    /// Where other datacenters reach the node; empty: `address`.
    #[serde(default)]
    pub wan_address: String,
    pub datacenter: String,
    pub meta: BTreeMap<String, String>,
    pub create_index: u64,
    pub modify_index: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Service {
    pub id: String,
    pub name: String,
    pub node: String,
    pub address: String,
    pub port: u16,
    /// Its own address for other datacenters (a mesh gateway's WAN side).
    pub wan: Option<WanAddress>,
    pub tags: Vec<String>,
    pub meta: BTreeMap<String, String>,
    pub kind: ServiceKind,
    pub proxy: Option<ProxyConfig>,
    pub create_index: u64,
    pub modify_index: u64,
}

impl Service {
    /// Equal in everything a user registered, indexes aside.
    pub(crate) fn same_definition(&self, other: &Service) -> bool {
        self.name == other.name
            && self.node == other.node
            && self.address == other.address
            && self.port == other.port
            && self.wan == other.wan
            && self.tags == other.tags
            && self.meta == other.meta
            && self.kind == other.kind
            && self.proxy == other.proxy
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum CheckKind {
    Http {
        url: String,
    },
    Tcp {
        address: String,
    },
    Grpc {
        target: String,
    },
    Ttl {
        ttl_ms: u64,
    },
    /// Mirrors the health of another service instance.
    Alias {
        service_id: String,
    },
    /// A node's liveness as LAN gossip sees it, set by the leader.
    Serf,
}

impl CheckKind {
    pub(crate) fn type_name(&self) -> &'static str {
        match self {
            CheckKind::Http { .. } => "http",
            CheckKind::Tcp { .. } => "tcp",
            CheckKind::Grpc { .. } => "grpc",
            CheckKind::Ttl { .. } => "ttl",
            CheckKind::Alias { .. } => "alias",
            CheckKind::Serf => "serf",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct CheckDefinition {
    pub kind: CheckKind,
    pub interval_ms: u64,
    pub timeout_ms: u64,
    /// Consecutive successes before a check turns passing (0 and 1: at once).
    #[serde(default)]
    pub success_before_passing: u32,
    /// Consecutive failures before a check turns critical (0 and 1: at once).
    #[serde(default)]
    pub failures_before_critical: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Check {
    pub id: String,
    pub name: String,
    pub node: String,
    /// `None` for a node-level check, which affects every instance on the node.
    pub service_id: Option<String>,
    pub service_name: String,
    pub definition: CheckDefinition,
    pub status: Status,
    pub output: String,
    pub create_index: u64,
    pub modify_index: u64,
}

/// An instance as readers see it: with its node, its checks and their aggregate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct InstanceHealth {
    pub service: Service,
    pub node: Option<Node>,
    pub checks: Vec<Check>,
    pub status: Status,
}

/// The whole catalog in a plain, serializable form: what snapshots hold.
/// The lookup indexes are derived from it on load.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct CatalogData {
    pub nodes: Vec<Node>,
    pub services: Vec<Service>,
    pub checks: Vec<Check>,
    #[serde(default)]
    pub ca: Option<super::mesh::CaState>,
    #[serde(default)]
    pub intentions: Vec<super::mesh::Intention>,
    /// Recently applied named writes, oldest first, with their outcomes.
    #[serde(default)]
    pub recent_requests: Vec<(String, super::command::Outcome)>,
    /// A restore whose chunks are arriving (see `Command::RestoreChunk`):
    /// part of the replicated state, so a snapshot taken meanwhile carries it.
    #[serde(default)]
    pub staged_restore: Option<StagedRestore>,
    /// Other datacenters' meshes, as last copied.
    #[serde(default)]
    pub remote: Vec<super::mesh::RemoteMesh>,
    #[serde(default)]
    pub acl: super::acl::AclData,
    #[serde(default)]
    pub peering: super::peering::PeeringData,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StagedRestore {
    pub restore_id: String,
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}
