//! The translation for a sidecar: catalog-derived snapshot in, Envoy
//! resources out. Pure: no I/O, no clock, no randomness; the same input
//! always gives the same resources and versions.

use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
use envoy_types::pb::envoy::config::core::v3::{Address, HealthStatus};
use envoy_types::pb::envoy::config::core::v3::{
    AggregatedConfigSource, ApiVersion, ConfigSource, DataSource, SocketAddress, TransportSocket, address,
    config_source, data_source, socket_address, transport_socket,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
};
use envoy_types::pb::envoy::config::listener::v3::{Filter, FilterChain, Listener, filter};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{TcpProxy, tcp_proxy};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, DownstreamTlsContext, SdsSecretConfig, Secret,
    SubjectAltNameMatcher, TlsCertificate, UpstreamTlsContext, common_tls_context, secret,
    subject_alt_name_matcher,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher};
use envoy_types::pb::google::protobuf::{BoolValue, Duration};
use envoy_types::util::pack_any;

use crate::model::{LeafCert, MeshSnapshot, Sidecar, Upstream};
use crate::names::{self, CLUSTER, ENDPOINT, LISTENER, SECRET};
use crate::rbac;
use crate::resources::{ProxyResources, Resource};

const CONNECT_TIMEOUT_SECS: i64 = 5;

/// Something about the input that kept one resource from being built; the
/// rest of the proxy's configuration is still produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub proxy_id: String,
    pub message: String,
}

/// Every resource of one sidecar: clusters (local app + one per upstream),
/// endpoints of the upstreams, the public and upstream listeners, and the
/// leaf and trust-bundle secrets.
pub fn build(
    proxy: &Sidecar,
    mesh: &MeshSnapshot,
    leaf: Option<&LeafCert>,
) -> (ProxyResources, Vec<Diagnostic>) {
    let mut out = ProxyResources {
        index: mesh.index,
        ..Default::default()
    };
    let mut diags = Vec::new();

    out.insert(CLUSTER, Resource::new(names::LOCAL_APP, local_app_cluster(proxy)));
    out.insert(
        LISTENER,
        Resource::new(names::PUBLIC_LISTENER, public_listener(proxy, mesh)),
    );

    for up in &proxy.upstreams {
        let dc = if up.datacenter.is_empty() {
            &mesh.datacenter
        } else {
            &up.datacenter
        };
        if dc != &mesh.datacenter {
            diags.push(Diagnostic {
                proxy_id: proxy.proxy_id.clone(),
                message: format!(
                    "upstream {} in datacenter {dc}: cross-datacenter upstreams need mesh gateways, not built yet",
                    up.destination
                ),
            });
            continue;
        }
        let sni = names::sni(&up.destination, dc, &mesh.trust_domain);
        out.insert(
            CLUSTER,
            Resource::new(sni.clone(), upstream_cluster(proxy, up, dc, &sni, mesh)),
        );
        out.insert(
            ENDPOINT,
            Resource::new(sni.clone(), endpoints(&sni, mesh, &up.destination)),
        );
        out.insert(
            LISTENER,
            Resource::new(
                names::upstream_listener(&up.destination),
                upstream_listener(up, &sni),
            ),
        );
    }

    out.insert(SECRET, Resource::new(names::ROOTS_SECRET, roots_secret(mesh)));
    match leaf {
        Some(l) => out.insert(
            SECRET,
            Resource::new(names::leaf_secret(&proxy.service), leaf_secret(proxy, l)),
        ),
        None => diags.push(Diagnostic {
            proxy_id: proxy.proxy_id.clone(),
            message: "no leaf certificate yet: the CA is not initialized".into(),
        }),
    }
    (out, diags)
}

fn ads() -> ConfigSource {
    ConfigSource {
        resource_api_version: ApiVersion::V3 as i32,
        config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(
            AggregatedConfigSource {},
        )),
        ..Default::default()
    }
}

fn sds(name: &str) -> SdsSecretConfig {
    SdsSecretConfig {
        name: name.to_string(),
        sds_config: Some(ads()),
    }
}

fn socket(address: &str, port: u16) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: address.to_string(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(u32::from(port))),
            ..Default::default()
        })),
    }
}

fn tls_socket<T: prost::Name + prost::Message>(ctx: T) -> TransportSocket {
    TransportSocket {
        name: "envoy.transport_sockets.tls".into(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(pack_any(ctx))),
    }
}

fn timeout() -> Duration {
    Duration {
        seconds: CONNECT_TIMEOUT_SECS,
        nanos: 0,
    }
}

fn inline(pem: &str) -> DataSource {
    DataSource {
        specifier: Some(data_source::Specifier::InlineString(pem.to_string())),
        ..Default::default()
    }
}

fn lb_endpoint(address: &str, port: u16) -> LbEndpoint {
    LbEndpoint {
        host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
            address: Some(socket(address, port)),
            ..Default::default()
        })),
        health_status: HealthStatus::Healthy as i32,
        ..Default::default()
    }
}

fn local_app_cluster(p: &Sidecar) -> Cluster {
    Cluster {
        name: names::LOCAL_APP.into(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Static as i32,
        )),
        connect_timeout: Some(timeout()),
        load_assignment: Some(ClusterLoadAssignment {
            cluster_name: names::LOCAL_APP.into(),
            endpoints: vec![LocalityLbEndpoints {
                lb_endpoints: vec![lb_endpoint(&p.local_app_address, p.local_app_port)],
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn common_tls(service: &str, validation: CertificateValidationContext) -> CommonTlsContext {
    CommonTlsContext {
        tls_certificate_sds_secret_configs: vec![sds(&names::leaf_secret(service))],
        validation_context_type: Some(
            common_tls_context::ValidationContextType::CombinedValidationContext(
                common_tls_context::CombinedCertificateValidationContext {
                    default_validation_context: Some(validation),
                    validation_context_sds_secret_config: Some(sds(names::ROOTS_SECRET)),
                    ..Default::default()
                },
            ),
        ),
        ..Default::default()
    }
}

fn upstream_cluster(p: &Sidecar, up: &Upstream, dc: &str, sni: &str, mesh: &MeshSnapshot) -> Cluster {
    // Only the destination's own identity may answer.
    let san = SubjectAltNameMatcher {
        san_type: subject_alt_name_matcher::SanType::Uri as i32,
        matcher: Some(StringMatcher {
            match_pattern: Some(string_matcher::MatchPattern::Exact(names::spiffe_id(
                &mesh.trust_domain,
                dc,
                &up.destination,
            ))),
            ignore_case: false,
        }),
        ..Default::default()
    };
    let validation = CertificateValidationContext {
        match_typed_subject_alt_names: vec![san],
        ..Default::default()
    };
    Cluster {
        name: sni.to_string(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Eds as i32,
        )),
        eds_cluster_config: Some(cluster::EdsClusterConfig {
            eds_config: Some(ads()),
            service_name: String::new(),
        }),
        connect_timeout: Some(timeout()),
        transport_socket: Some(tls_socket(UpstreamTlsContext {
            common_tls_context: Some(common_tls(&p.service, validation)),
            sni: sni.to_string(),
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// The healthy (passing or warning) sidecars of `service`; critical ones leave.
fn endpoints(cluster: &str, mesh: &MeshSnapshot, service: &str) -> ClusterLoadAssignment {
    let lb_endpoints = mesh
        .endpoints
        .get(service)
        .into_iter()
        .flatten()
        .filter(|e| e.healthy)
        .map(|e| lb_endpoint(&e.address, e.port))
        .collect();
    ClusterLoadAssignment {
        cluster_name: cluster.to_string(),
        endpoints: vec![LocalityLbEndpoints {
            lb_endpoints,
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn network_filter<T: prost::Name + prost::Message>(name: &str, cfg: T) -> Filter {
    Filter {
        name: name.into(),
        config_type: Some(filter::ConfigType::TypedConfig(pack_any(cfg))),
    }
}

fn tcp_proxy_to(cluster: &str, stat_prefix: &str) -> Filter {
    network_filter(
        "envoy.filters.network.tcp_proxy",
        TcpProxy {
            stat_prefix: stat_prefix.to_string(),
            cluster_specifier: Some(tcp_proxy::ClusterSpecifier::Cluster(cluster.to_string())),
            ..Default::default()
        },
    )
}

/// mTLS in (client certificate required, validated against the trust
/// bundle), intentions as RBAC, then on to the local app.
fn public_listener(p: &Sidecar, mesh: &MeshSnapshot) -> Listener {
    let authz = rbac::filter_for(
        &mesh.intentions,
        mesh.default_allow,
        &p.service,
        &mesh.trust_domain,
    );
    let tls = DownstreamTlsContext {
        common_tls_context: Some(CommonTlsContext {
            tls_certificate_sds_secret_configs: vec![sds(&names::leaf_secret(&p.service))],
            validation_context_type: Some(
                common_tls_context::ValidationContextType::ValidationContextSdsSecretConfig(sds(
                    names::ROOTS_SECRET,
                )),
            ),
            ..Default::default()
        }),
        require_client_certificate: Some(BoolValue { value: true }),
        ..Default::default()
    };
    Listener {
        name: names::PUBLIC_LISTENER.into(),
        address: Some(socket(&p.public_address, p.public_port)),
        filter_chains: vec![FilterChain {
            filters: vec![
                network_filter("envoy.filters.network.rbac", authz),
                tcp_proxy_to(names::LOCAL_APP, "public_listener"),
            ],
            transport_socket: Some(tls_socket(tls)),
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn upstream_listener(up: &Upstream, sni: &str) -> Listener {
    Listener {
        name: names::upstream_listener(&up.destination),
        address: Some(socket(&up.bind_address, up.bind_port)),
        filter_chains: vec![FilterChain {
            filters: vec![tcp_proxy_to(sni, &format!("upstream.{}", up.destination))],
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn roots_secret(mesh: &MeshSnapshot) -> Secret {
    Secret {
        name: names::ROOTS_SECRET.into(),
        r#type: Some(secret::Type::ValidationContext(CertificateValidationContext {
            trusted_ca: Some(inline(&mesh.roots_pem.join("\n"))),
            ..Default::default()
        })),
    }
}

fn leaf_secret(p: &Sidecar, leaf: &LeafCert) -> Secret {
    Secret {
        name: names::leaf_secret(&p.service),
        r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
            certificate_chain: Some(inline(&leaf.cert_chain_pem)),
            private_key: Some(inline(&leaf.key_pem)),
            ..Default::default()
        })),
    }
}

#[cfg(test)]
pub(crate) mod tests;
