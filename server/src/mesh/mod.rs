//! The service mesh on a server: the CA's leader duties, leaf certificates,
//! the xDS hub that turns catalog changes into per-proxy Envoy resources,
//! and the ADS gRPC service that streams them.

pub(crate) mod ads;
pub(crate) mod ca;
pub(crate) mod hub;
pub(crate) mod leaves;
pub(crate) mod status;

/// Mesh settings of an agent.
#[derive(Clone, Debug)]
pub(crate) struct MeshSettings {
    /// What applies when no intention matches.
    pub default_allow: bool,
    /// TTL of leaf certificates, fixed into the CA at bootstrap.
    pub leaf_ttl_secs: u64,
    pub root_ttl_secs: u64,
    /// Leaf signings per second this server allows (token bucket).
    pub sign_rate: u32,
    /// For cross-datacenter upstreams whose proxy sets no mode.
    pub gateway_mode: tribune_xds::GatewayMode,
}

/// The current time, in Unix seconds.
pub(crate) fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
