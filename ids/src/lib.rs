//! Tribune's naming rules, each written once: every crate that needs one
//! (the CA, the xDS translation, the client agent, the server) calls it
//! here. Formatting only: syntax checks belong to the crates that accept
//! the names (`tribune-certs` validates SPIFFE IDs, the server validates
//! registrations).
#![forbid(unsafe_code)]

/// What a sidecar's ID and service name add to its service's.
pub const SIDECAR_SUFFIX: &str = "-sidecar-proxy";

/// The ID of the sidecar of instance `service_id` (`web-1` ->
/// `web-1-sidecar-proxy`), which is also the Envoy `node.id` of its proxy.
pub fn sidecar_id(service_id: &str) -> String {
    format!("{service_id}{SIDECAR_SUFFIX}")
}

/// The service name of a sidecar of service `service_name`.
pub fn sidecar_name(service_name: &str) -> String {
    format!("{service_name}{SIDECAR_SUFFIX}")
}

/// The ID a registration's check gets when it names none: `service:<id>`
/// for the first, `service:<id>:<n>` for the n-th (1-based) after it.
pub fn default_check_id(service_id: &str, position: usize) -> String {
    match position {
        0 => format!("service:{service_id}"),
        i => format!("service:{service_id}:{}", i + 1),
    }
}

/// The trust domain of a cluster: `<cluster-id>.tribune`, lower-cased
/// (SPIFFE trust domains are lower-case).
pub fn trust_domain(cluster_id: &str) -> String {
    format!("{}.tribune", cluster_id.to_ascii_lowercase())
}

/// A service's identity:
/// `spiffe://<trust_domain>/ns/default/dc/<datacenter>/svc/<service>`.
pub fn service_spiffe_id(trust_domain: &str, datacenter: &str, service: &str) -> String {
    format!("spiffe://{trust_domain}/ns/default/dc/{datacenter}/svc/{service}")
}

/// Which agent a certificate belongs to: a server, or a client agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AgentRole {
    /// A server agent: may take part in Raft and server-to-server calls.
    Server,
    /// A client agent: may call the servers' public API on their behalf.
    Client,
}

impl AgentRole {
    /// The role as it appears in names: `server` or `client`.
    pub fn as_str(self) -> &'static str {
        match self {
            AgentRole::Server => "server",
            AgentRole::Client => "client",
        }
    }
}

/// An agent's identity:
/// `spiffe://<trust_domain>/agent/<server|client>/dc/<datacenter>/id/<node>`
/// (Consul's form for client agents, extended to servers).
pub fn agent_spiffe_id(trust_domain: &str, role: AgentRole, datacenter: &str, node: &str) -> String {
    format!(
        "spiffe://{trust_domain}/agent/{}/dc/{datacenter}/id/{node}",
        role.as_str()
    )
}

/// The DNS name every server of `datacenter` presents on its TLS ports:
/// `server.<datacenter>.tribune`, what clients verify.
pub fn server_tls_name(datacenter: &str) -> String {
    format!("server.{datacenter}.tribune")
}

/// The name of an upstream cluster, which is also the SNI a sidecar sends
/// and mesh gateways route on.
pub fn sni(service: &str, datacenter: &str, trust_domain: &str) -> String {
    format!("{service}.default.{datacenter}.internal.{trust_domain}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_names_users_see() {
        assert_eq!(sidecar_id("web-1"), "web-1-sidecar-proxy");
        assert_eq!(sidecar_name("web"), "web-sidecar-proxy");
        assert_eq!(default_check_id("web-1", 0), "service:web-1");
        assert_eq!(default_check_id("web-1", 1), "service:web-1:2");
        assert_eq!(trust_domain("ABC"), "abc.tribune");
        assert_eq!(
            agent_spiffe_id("abc.tribune", AgentRole::Client, "dc1", "n1"),
            "spiffe://abc.tribune/agent/client/dc/dc1/id/n1"
        );
        assert_eq!(server_tls_name("dc2"), "server.dc2.tribune");
        assert_eq!(
            service_spiffe_id("abc.tribune", "dc1", "web"),
            "spiffe://abc.tribune/ns/default/dc/dc1/svc/web"
        );
        assert_eq!(
            sni("api", "dc2", "abc.tribune"),
            "api.default.dc2.internal.abc.tribune"
        );
    }
}
