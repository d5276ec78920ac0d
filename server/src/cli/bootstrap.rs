//! The Envoy bootstrap for a sidecar: who it is (node id and cluster), its
//! admin address, and ADS over gRPC to the agent. Everything else arrives
//! over xDS, so the bootstrap never changes while the proxy runs.

use std::net::IpAddr;

use serde_json::{Value, json};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(super) enum XdsMode {
    /// Incremental xDS (DeltaAggregatedResources).
    Delta,
    /// State of the world (StreamAggregatedResources).
    Sotw,
}

pub(super) struct BootstrapParams<'a> {
    pub proxy_id: &'a str,
    pub cluster: &'a str,
    pub admin_host: &'a str,
    pub admin_port: u16,
    pub xds_host: &'a str,
    pub xds_port: u16,
    pub mode: XdsMode,
    /// The proxy's ACL token, sent with every ADS request.
    pub token: Option<&'a str>,
    /// TLS to the agent's TLS port: the CA file (an absolute path) and the
    /// name the agent's certificate must carry.
    pub tls: Option<XdsTls<'a>>,
}

pub(super) struct XdsTls<'a> {
    pub ca_file: &'a str,
    pub server_name: &'a str,
}

/// Envoy verifies the agent as the CLI does: chain to the CA file, and the
/// name (an IP SAN for an IP, else a DNS SAN, sent as SNI too).
fn xds_transport_socket(t: &XdsTls<'_>) -> Value {
    let is_ip = t.server_name.parse::<IpAddr>().is_ok();
    let mut ctx = json!({
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
        "common_tls_context": {
            "alpn_protocols": ["h2"],
            "validation_context": {
                "trusted_ca": { "filename": t.ca_file },
                "match_typed_subject_alt_names": [{
                    "san_type": if is_ip { "IP_ADDRESS" } else { "DNS" },
                    "matcher": { "exact": t.server_name },
                }],
            },
        },
    });
    if !is_ip {
        ctx["sni"] = json!(t.server_name);
    }
    json!({ "name": "envoy.transport_sockets.tls", "typed_config": ctx })
}

fn socket(host: &str, port: u16) -> Value {
    json!({ "socket_address": { "address": host, "port_value": port } })
}

/// ADS to the agent, with the token as gRPC metadata when there is one.
fn grpc_service(token: Option<&str>) -> Value {
    let mut g = json!({ "envoy_grpc": { "cluster_name": "tribune_xds" } });
    if let Some(t) = token {
        g["initial_metadata"] = json!([{ "key": "x-tribune-token", "value": t }]);
    }
    g
}

pub(super) fn bootstrap(p: &BootstrapParams<'_>) -> Value {
    let api_type = match p.mode {
        XdsMode::Delta => "DELTA_GRPC",
        XdsMode::Sotw => "GRPC",
    };
    // An IP needs no resolution; a host name is resolved by Envoy.
    let discovery = if p.xds_host.parse::<IpAddr>().is_ok() {
        "STATIC"
    } else {
        "STRICT_DNS"
    };
    let mut b = json!({
        "node": { "id": p.proxy_id, "cluster": p.cluster },
        "admin": { "address": socket(p.admin_host, p.admin_port) },
        "dynamic_resources": {
            "ads_config": {
                "api_type": api_type,
                "transport_api_version": "V3",
                "grpc_services": [grpc_service(p.token)],
            },
            "cds_config": { "ads": {}, "resource_api_version": "V3" },
            "lds_config": { "ads": {}, "resource_api_version": "V3" },
        },
        "static_resources": {
            "clusters": [{
                "name": "tribune_xds",
                "type": discovery,
                "connect_timeout": "1s",
                "typed_extension_protocol_options": {
                    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                        "explicit_http_config": { "http2_protocol_options": {} },
                    },
                },
                "load_assignment": {
                    "cluster_name": "tribune_xds",
                    "endpoints": [{ "lb_endpoints": [{ "endpoint": { "address": socket(p.xds_host, p.xds_port) } }] }],
                },
            }],
        },
    });
    if let Some(t) = &p.tls {
        b["static_resources"]["clusters"][0]["transport_socket"] = xds_transport_socket(t);
    }
    b
}

/// Splits `HOST:PORT` (IPv6 in brackets).
pub(super) fn host_port(v: &str) -> anyhow::Result<(String, u16)> {
    let (h, p) = v
        .rsplit_once(':')
        .ok_or_else(|| anyhow::anyhow!("{v:?} is not HOST:PORT"))?;
    let port = p
        .parse()
        .map_err(|_| anyhow::anyhow!("{v:?}: {p:?} is not a port"))?;
    Ok((h.trim_start_matches('[').trim_end_matches(']').to_string(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delta_by_default_shape() {
        let b = bootstrap(&BootstrapParams {
            proxy_id: "web-1-sidecar-proxy",
            cluster: "web",
            admin_host: "127.0.0.1",
            admin_port: 19000,
            xds_host: "127.0.0.1",
            xds_port: 8502,
            mode: XdsMode::Delta,
            token: Some("s3cret"),
            tls: None,
        });
        assert_eq!(b["node"]["id"], "web-1-sidecar-proxy");
        assert!(
            b["static_resources"]["clusters"][0]
                .get("transport_socket")
                .is_none()
        );
        let md = &b["dynamic_resources"]["ads_config"]["grpc_services"][0]["initial_metadata"][0];
        assert_eq!(
            (md["key"].as_str(), md["value"].as_str()),
            (Some("x-tribune-token"), Some("s3cret"))
        );
        assert_eq!(b["dynamic_resources"]["ads_config"]["api_type"], "DELTA_GRPC");
        assert_eq!(b["static_resources"]["clusters"][0]["type"], "STATIC");
        assert_eq!(host_port("[::1]:8502").unwrap(), ("::1".to_string(), 8502));
        assert!(host_port("nope").is_err());
    }

    #[test]
    fn with_a_ca_file_envoy_verifies_the_agent() {
        let b = bootstrap(&BootstrapParams {
            proxy_id: "web-1-sidecar-proxy",
            cluster: "web",
            admin_host: "127.0.0.1",
            admin_port: 19000,
            xds_host: "127.0.0.1",
            xds_port: 8503,
            mode: XdsMode::Delta,
            token: None,
            tls: Some(XdsTls {
                ca_file: "/etc/tribune/ca.pem",
                server_name: "server.dc1.tribune",
            }),
        });
        let ts = &b["static_resources"]["clusters"][0]["transport_socket"]["typed_config"];
        assert_eq!(ts["sni"], "server.dc1.tribune");
        let v = &ts["common_tls_context"]["validation_context"];
        assert_eq!(v["trusted_ca"]["filename"], "/etc/tribune/ca.pem");
        assert_eq!(v["match_typed_subject_alt_names"][0]["san_type"], "DNS");
    }
}
