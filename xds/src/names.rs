//! Names that show up in Envoy: SNI-based cluster names, listener and
//! secret names, SPIFFE IDs, and the xDS type URLs.

pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
pub const ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
pub const ENDPOINT: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
pub const SECRET: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";

/// Every type this server serves, in make-before-break order: what is
/// referenced comes before what references it.
pub const ORDER: [&str; 5] = [CLUSTER, ENDPOINT, SECRET, LISTENER, ROUTE];

/// Types Envoy subscribes to as a wildcard (all of them).
pub fn is_wildcard_type(type_url: &str) -> bool {
    type_url == LISTENER || type_url == CLUSTER
}

/// Short name for logs and metrics: "cds", "eds"...
pub fn short(type_url: &str) -> &'static str {
    match type_url {
        LISTENER => "lds",
        ROUTE => "rds",
        CLUSTER => "cds",
        ENDPOINT => "eds",
        SECRET => "sds",
        _ => "unknown",
    }
}

pub const LOCAL_APP: &str = "local_app";
pub const PUBLIC_LISTENER: &str = "public_listener";
pub const ROOTS_SECRET: &str = "tribune-roots";

pub use tribune_ids::{service_spiffe_id as spiffe_id, sni};

/// The roots a peer's services' certificates chain to.
pub fn peer_roots_secret(peer: &str) -> String {
    format!("tribune-peer-roots:{peer}")
}

/// The cluster of a service imported from a peer.
pub fn peer_cluster(service: &str, peer: &str, trust_domain: &str) -> String {
    format!("{service}.default.{peer}.external.{trust_domain}")
}

pub fn leaf_secret(service: &str) -> String {
    format!("tribune-leaf:{service}")
}

pub fn upstream_listener(destination: &str) -> String {
    format!("upstream:{destination}")
}

/// Everything of one datacenter behind its mesh gateways: the suffix every
/// SNI of that datacenter ends with (see [`sni`]), and the name of the
/// gateway cluster that leads there.
pub fn datacenter_cluster(datacenter: &str, trust_domain: &str) -> String {
    format!("{datacenter}.internal.{trust_domain}")
}

/// The filter-chain server name matching every SNI of one datacenter
/// (Envoy matches a leading `*.` against any number of labels).
pub fn datacenter_server_name(datacenter: &str, trust_domain: &str) -> String {
    format!("*.{}", datacenter_cluster(datacenter, trust_domain))
}

/// A mesh gateway's listener on its LAN address.
pub fn gateway_lan_listener(address: &str, port: u16) -> String {
    format!("default:{address}:{port}")
}

/// A mesh gateway's listener on its WAN address.
pub fn gateway_wan_listener(address: &str, port: u16) -> String {
    format!("wan:{address}:{port}")
}
