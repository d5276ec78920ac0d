//! The translation for a sidecar: catalog-derived snapshot in, Envoy
//! resources out. Pure: no I/O, no clock, no randomness; the same input
//! always gives the same resources and versions.

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
use envoy_types::pb::envoy::config::core::v3::{DataSource, TransportSocket, data_source, transport_socket};
use envoy_types::pb::envoy::config::endpoint::v3::{ClusterLoadAssignment, LocalityLbEndpoints};
use envoy_types::pb::envoy::config::listener::v3::{FilterChain, Listener};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, DownstreamTlsContext, SdsSecretConfig, Secret,
    SubjectAltNameMatcher, TlsCertificate, UpstreamTlsContext, common_tls_context, secret,
    subject_alt_name_matcher,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher};
use envoy_types::pb::google::protobuf::BoolValue;
use envoy_types::util::pack_any;

use crate::common::{
    ads, connect_timeout, eds_cluster, lb_endpoint, load_assignment, network_filter, socket, tcp_proxy_to,
};
use crate::model::{GatewayMode, LeafCert, MeshEndpoint, MeshSnapshot, RemoteDatacenter, Sidecar, Upstream};
use crate::names::{self, CLUSTER, ENDPOINT, LISTENER, SECRET};
use crate::rbac;
use crate::resources::{ProxyResources, Resource};

/// Something about the input that kept one resource from being built, or
/// left it empty; the rest of the proxy's configuration is still produced.
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

    let mut peers_used = std::collections::BTreeSet::new();
    for up in proxy.upstreams.iter().filter(|u| !u.peer.is_empty()) {
        peer_upstream(proxy, up, mesh, &mut out, &mut diags);
        peers_used.insert(up.peer.as_str());
    }
    for peer in peers_used {
        if let Some(pm) = mesh.peers.get(peer) {
            out.insert(
                SECRET,
                Resource::new(names::peer_roots_secret(peer), peer_roots_secret(peer, pm)),
            );
        }
    }

    for up in proxy.upstreams.iter().filter(|u| u.peer.is_empty()) {
        let dc = if up.datacenter.is_empty() {
            &mesh.datacenter
        } else {
            &up.datacenter
        };
        // Nowhere to send it yet is not a reason to drop the upstream: its
        // listener and cluster are built all the same, so that when the
        // endpoints do appear only EDS changes (no listener or cluster churn).
        let eps = upstream_endpoints(up, dc, mesh).unwrap_or_else(|why| {
            diags.push(Diagnostic {
                proxy_id: proxy.proxy_id.clone(),
                message: format!("upstream {} in datacenter {dc}: {why}", up.destination),
            });
            &[]
        });
        let sni = names::sni(&up.destination, dc, &mesh.trust_domain);
        out.insert(
            CLUSTER,
            Resource::new(sni.clone(), upstream_cluster(proxy, up, dc, &sni, mesh)),
        );
        out.insert(ENDPOINT, Resource::new(sni.clone(), load_assignment(&sni, eps)));
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

/// An upstream imported from a peer: a cluster named for the peer, whose
/// endpoints are the exporter's mesh gateways, sending the SNI they route
/// on, trusting the peer's roots only and the exporting service's identity
/// only.
fn peer_upstream(
    proxy: &Sidecar,
    up: &Upstream,
    mesh: &MeshSnapshot,
    out: &mut ProxyResources,
    diags: &mut Vec<Diagnostic>,
) {
    let imported = mesh.peers.get(&up.peer).and_then(|p| {
        p.services
            .get(&up.destination)
            .map(|s| (p.trust_domain.as_str(), s))
    });
    let Some((trust_domain, svc)) = imported else {
        diags.push(Diagnostic {
            proxy_id: proxy.proxy_id.clone(),
            message: format!(
                "upstream {} from peer {}: the peer does not export it (yet); its cluster has no endpoints until it does",
                up.destination, up.peer
            ),
        });
        // The listener stays, pointing at a cluster that is not there yet.
        let name = names::peer_cluster(&up.destination, &up.peer, "unknown");
        out.insert(
            LISTENER,
            Resource::new(
                names::upstream_listener(&up.destination),
                upstream_listener(up, &name),
            ),
        );
        return;
    };
    let name = names::peer_cluster(&up.destination, &up.peer, trust_domain);
    let san = SubjectAltNameMatcher {
        san_type: subject_alt_name_matcher::SanType::Uri as i32,
        matcher: Some(StringMatcher {
            match_pattern: Some(string_matcher::MatchPattern::Exact(svc.spiffe_id.clone())),
            ignore_case: false,
        }),
        ..Default::default()
    };
    let tls = CommonTlsContext {
        tls_certificate_sds_secret_configs: vec![sds(&names::leaf_secret(&proxy.service))],
        validation_context_type: Some(
            common_tls_context::ValidationContextType::CombinedValidationContext(
                common_tls_context::CombinedCertificateValidationContext {
                    default_validation_context: Some(CertificateValidationContext {
                        match_typed_subject_alt_names: vec![san],
                        ..Default::default()
                    }),
                    validation_context_sds_secret_config: Some(sds(&names::peer_roots_secret(&up.peer))),
                    ..Default::default()
                },
            ),
        ),
        ..Default::default()
    };
    let cluster = Cluster {
        transport_socket: Some(tls_socket(UpstreamTlsContext {
            common_tls_context: Some(tls),
            sni: svc.sni.clone(),
            ..Default::default()
        })),
        ..eds_cluster(&name)
    };
    out.insert(CLUSTER, Resource::new(name.clone(), cluster));
    out.insert(
        ENDPOINT,
        Resource::new(name.clone(), load_assignment(&name, &svc.gateways)),
    );
    out.insert(
        LISTENER,
        Resource::new(
            names::upstream_listener(&up.destination),
            upstream_listener(up, &name),
        ),
    );
}

fn peer_roots_secret(peer: &str, pm: &crate::model::PeerMesh) -> Secret {
    Secret {
        name: names::peer_roots_secret(peer),
        r#type: Some(secret::Type::ValidationContext(CertificateValidationContext {
            trusted_ca: Some(inline(&pm.roots_pem.join("\n"))),
            ..Default::default()
        })),
    }
}

/// What a public listener checks a client's certificate against. Its own
/// trust domain only: the roots over SDS (a rotation changes no listener).
/// With peers that may connect: Envoy's SPIFFE validator, each trust domain
/// with its own roots, so that a peer's CA vouches for its own identities
/// and never for this cluster's.
fn inbound_validation(mesh: &MeshSnapshot) -> common_tls_context::ValidationContextType {
    if mesh.inbound_peers.is_empty() {
        return common_tls_context::ValidationContextType::ValidationContextSdsSecretConfig(sds(
            names::ROOTS_SECRET,
        ));
    }
    use envoy_types::pb::envoy::config::core::v3::TypedExtensionConfig;
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
        SpiffeCertValidatorConfig, spiffe_cert_validator_config,
    };
    let mut trust_domains = vec![spiffe_cert_validator_config::TrustDomain {
        name: mesh.trust_domain.clone(),
        trust_bundle: Some(inline(&mesh.roots_pem.join("\n"))),
        ..Default::default()
    }];
    trust_domains.extend(
        mesh.inbound_peers
            .iter()
            .map(|p| spiffe_cert_validator_config::TrustDomain {
                name: p.trust_domain.clone(),
                trust_bundle: Some(inline(&p.roots_pem.join("\n"))),
                ..Default::default()
            }),
    );
    common_tls_context::ValidationContextType::ValidationContext(CertificateValidationContext {
        custom_validator_config: Some(TypedExtensionConfig {
            name: "envoy.tls.cert_validator.spiffe".into(),
            typed_config: Some(pack_any(SpiffeCertValidatorConfig {
                trust_domains,
                ..Default::default()
            })),
        }),
        ..Default::default()
    })
}

fn sds(name: &str) -> SdsSecretConfig {
    SdsSecretConfig {
        name: name.to_string(),
        sds_config: Some(ads()),
    }
}

fn tls_socket<T: prost::Name + prost::Message>(ctx: T) -> TransportSocket {
    TransportSocket {
        name: "envoy.transport_sockets.tls".into(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(pack_any(ctx))),
    }
}

fn inline(pem: &str) -> DataSource {
    DataSource {
        specifier: Some(data_source::Specifier::InlineString(pem.to_string())),
        ..Default::default()
    }
}

fn local_app_cluster(p: &Sidecar) -> Cluster {
    Cluster {
        name: names::LOCAL_APP.into(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Static as i32,
        )),
        connect_timeout: Some(connect_timeout()),
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
        transport_socket: Some(tls_socket(UpstreamTlsContext {
            common_tls_context: Some(common_tls(&p.service, validation)),
            sni: sni.to_string(),
            ..Default::default()
        })),
        ..eds_cluster(sni)
    }
}

/// Where an upstream's connections go, chosen here and nowhere else. In
/// this datacenter: the destination's sidecars. In another: by gateway
/// mode, the remote sidecars, this datacenter's gateways or the remote
/// datacenter's gateways; the cluster (SNI, SAN check) is the same in every
/// case, since a gateway forwards the TLS stream untouched. `Err` says why
/// there is nothing to choose from. Unhealthy ones are filtered later, by
/// [`load_assignment`].
fn upstream_endpoints<'m>(
    up: &Upstream,
    dc: &str,
    mesh: &'m MeshSnapshot,
) -> Result<&'m [MeshEndpoint], String> {
    if dc == mesh.datacenter {
        return Ok(service_endpoints(&mesh.endpoints, &up.destination));
    }
    match up.mode {
        GatewayMode::None => {
            remote_datacenter(mesh, dc).map(|r| service_endpoints(&r.endpoints, &up.destination))
        }
        GatewayMode::Local if mesh.local_gateways.is_empty() => Err(
            "gateway mode is local but no mesh gateway is registered in this datacenter; \
             its cluster has no endpoints until one is"
                .into(),
        ),
        GatewayMode::Local => Ok(&mesh.local_gateways),
        GatewayMode::Remote => remote_datacenter(mesh, dc).map(|r| r.gateways.as_slice()),
    }
}

/// A datacenter not (yet) copied into the snapshot: federation is
/// eventually consistent, so this is expected for a while after a join.
fn remote_datacenter<'m>(mesh: &'m MeshSnapshot, dc: &str) -> Result<&'m RemoteDatacenter, String> {
    mesh.remote.get(dc).ok_or_else(|| {
        "no such datacenter is known (yet); its cluster has no endpoints until it joins".into()
    })
}

/// A service nobody registered yet has no endpoints; that is not an error.
fn service_endpoints<'m>(
    by_service: &'m BTreeMap<String, Vec<MeshEndpoint>>,
    service: &str,
) -> &'m [MeshEndpoint] {
    by_service.get(service).map_or(&[], Vec::as_slice)
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
            validation_context_type: Some(inbound_validation(mesh)),
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
