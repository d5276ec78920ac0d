//! What the translation reads: a plain description of the mesh at one Raft
//! index, with no Raft, catalog or Envoy types in it. The server fills it
//! from its state machine; tests write it by hand.

use std::collections::BTreeMap;

/// The mesh as one proxy's configuration depends on it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MeshSnapshot {
    /// The Raft index this snapshot reflects.
    pub index: u64,
    pub trust_domain: String,
    pub datacenter: String,
    /// Connections no intention matches are allowed (true) or denied.
    pub default_allow: bool,
    pub intentions: Vec<Intention>,
    /// Mesh endpoints by service name: the sidecars in front of its instances.
    pub endpoints: BTreeMap<String, Vec<MeshEndpoint>>,
    /// PEM roots every proxy trusts (active first; during a rotation, old and new).
    pub roots_pem: Vec<String>,
    /// This datacenter's mesh gateways, at their LAN addresses.
    pub local_gateways: Vec<MeshEndpoint>,
    /// The other datacenters of the federation, by name, as last copied.
    pub remote: BTreeMap<String, RemoteDatacenter>,
    /// What peers export to this cluster, by peer name (the proxy's
    /// upstreams' peers only).
    pub peers: BTreeMap<String, PeerMesh>,
    /// Peers whose services may connect to the proxy's service (it is
    /// exported to them): their trust domains and roots.
    pub inbound_peers: Vec<PeerTrust>,
}

/// A peer cluster as an importing sidecar reaches it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerMesh {
    pub trust_domain: String,
    /// The roots its services' certificates chain to.
    pub roots_pem: Vec<String>,
    /// Its exported services, by name.
    pub services: BTreeMap<String, PeerService>,
}

/// A service a peer exports: what to send and check, and its mesh
/// gateways, which forward on the SNI without decrypting.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerService {
    pub sni: String,
    pub spiffe_id: String,
    pub gateways: Vec<MeshEndpoint>,
}

/// Another trust domain whose identities a public listener accepts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerTrust {
    pub trust_domain: String,
    pub roots_pem: Vec<String>,
}

/// Another datacenter as its mesh traffic reaches it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RemoteDatacenter {
    /// Its mesh gateways, at their WAN addresses.
    pub gateways: Vec<MeshEndpoint>,
    /// Its services' sidecars, at their WAN addresses, by service name
    /// (what `GatewayMode::None` connects to).
    pub endpoints: BTreeMap<String, Vec<MeshEndpoint>>,
}

/// How a sidecar reaches an upstream in another datacenter. The cluster
/// keeps the target's SNI and SAN check in every mode; only its endpoints
/// differ.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum GatewayMode {
    /// Straight to the remote sidecars at their WAN addresses.
    #[default]
    None,
    /// Through this datacenter's mesh gateways (LAN addresses).
    Local,
    /// Straight to the target datacenter's mesh gateways (WAN addresses).
    Remote,
}

/// A mesh gateway being configured: it listens on its LAN address and, when
/// it has a different one, on its WAN address, with the same filter chains.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gateway {
    pub proxy_id: String,
    pub service: String,
    pub lan_address: String,
    pub lan_port: u16,
    /// `None`: the gateway listens on its LAN address only.
    pub wan: Option<(String, u16)>,
}

/// Service-to-service authorization. `*` matches any service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Intention {
    /// A service of this trust domain, `*`, or `<trust-domain>/<service>`
    /// for a peer's service (never a service name: those hold no `/`).
    pub source: String,
    pub destination: String,
    pub allow: bool,
}

/// One sidecar in front of one instance of a service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MeshEndpoint {
    pub instance_id: String,
    pub address: String,
    pub port: u16,
    /// Passing or warning: the instance and its sidecar both.
    pub healthy: bool,
}

/// The sidecar being configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sidecar {
    pub proxy_id: String,
    /// The service it fronts; its identity.
    pub service: String,
    pub public_address: String,
    pub public_port: u16,
    pub local_app_address: String,
    pub local_app_port: u16,
    pub upstreams: Vec<Upstream>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upstream {
    pub destination: String,
    /// Empty: the local datacenter.
    pub datacenter: String,
    pub bind_address: String,
    pub bind_port: u16,
    /// Resolved by the server (upstream, then proxy, then datacenter);
    /// ignored for an upstream in the local datacenter.
    pub mode: GatewayMode,
    /// Imported from this peer (empty: none); `datacenter` is then ignored.
    pub peer: String,
}

/// The proxy's own certificate: the leaf and whatever intermediates it
/// needs to chain to a trusted root (the cross-signed root during rotation).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeafCert {
    pub cert_chain_pem: String,
    pub key_pem: String,
}
