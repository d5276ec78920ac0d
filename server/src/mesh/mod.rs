//! The service mesh on a server: the CA's leader duties, leaf certificates,
//! the xDS hub that turns catalog changes into per-proxy Envoy resources,
//! and the ADS gRPC service that streams them.

pub mod ads;
pub mod ca;
pub mod hub;
pub mod leaves;
pub mod status;

/// Mesh settings of an agent.
#[derive(Clone, Debug)]
pub struct MeshSettings {
    /// What applies when no intention matches.
    pub default_allow: bool,
    /// TTL of leaf certificates, fixed into the CA at bootstrap.
    pub leaf_ttl_secs: u64,
    pub root_ttl_secs: u64,
    /// Leaf signings per second this server allows (token bucket).
    pub sign_rate: u32,
}

/// The current time, in Unix seconds.
pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
