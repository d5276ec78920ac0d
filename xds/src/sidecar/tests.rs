use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::core::v3::{address, socket_address};
use envoy_types::pb::envoy::config::endpoint::v3::{ClusterLoadAssignment, lb_endpoint};
use envoy_types::pb::envoy::config::listener::v3::Listener;
use prost::Message;

use super::*;
use crate::model::Intention;

pub(crate) fn ep(id: &str, address: &str, port: u16, healthy: bool) -> MeshEndpoint {
    MeshEndpoint {
        instance_id: id.into(),
        address: address.into(),
        port,
        healthy,
    }
}

pub(crate) fn mesh() -> MeshSnapshot {
    MeshSnapshot {
        peers: Default::default(),
        inbound_peers: Vec::new(),
        index: 7,
        trust_domain: "1234.tribune".into(),
        datacenter: "dc1".into(),
        default_allow: true,
        intentions: vec![],
        endpoints: BTreeMap::from([(
            "api".to_string(),
            vec![
                ep("api-1", "127.0.0.1", 21001, true),
                ep("api-2", "127.0.0.1", 21002, false),
            ],
        )]),
        roots_pem: vec!["ROOT".into()],
        local_gateways: vec![],
        remote: BTreeMap::new(),
    }
}

pub(crate) fn web() -> Sidecar {
    Sidecar {
        proxy_id: "web-1-sidecar-proxy".into(),
        service: "web".into(),
        public_address: "127.0.0.1".into(),
        public_port: 21000,
        local_app_address: "127.0.0.1".into(),
        local_app_port: 8080,
        upstreams: vec![Upstream {
            peer: String::new(),
            destination: "api".into(),
            datacenter: String::new(),
            bind_address: "127.0.0.1".into(),
            bind_port: 9191,
            mode: GatewayMode::None,
        }],
    }
}

pub(crate) fn leaf() -> LeafCert {
    LeafCert {
        cert_chain_pem: "LEAF".into(),
        key_pem: "KEY".into(),
    }
}

pub(crate) fn names_of(r: &ProxyResources, t: &str) -> Vec<String> {
    r.of_type(t)
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

#[test]
fn a_sidecar_gets_clusters_endpoints_listeners_and_secrets() {
    let (r, diags) = build(&web(), &mesh(), Some(&leaf()));
    assert!(diags.is_empty());
    let sni = "api.default.dc1.internal.1234.tribune";
    assert_eq!(names_of(&r, CLUSTER), [sni, "local_app"]);
    assert_eq!(names_of(&r, ENDPOINT), [sni]);
    assert_eq!(names_of(&r, LISTENER), ["public_listener", "upstream:api"]);
    assert_eq!(names_of(&r, SECRET), ["tribune-leaf:web", "tribune-roots"]);

    let c: Cluster = Cluster::decode(&*r.of_type(CLUSTER).unwrap()[sni].body.value).unwrap();
    let ts = c.transport_socket.unwrap();
    let Some(transport_socket::ConfigType::TypedConfig(any)) = ts.config_type else {
        panic!()
    };
    let tls = UpstreamTlsContext::decode(&*any.value).unwrap();
    assert_eq!(tls.sni, sni);
    let common = tls.common_tls_context.unwrap();
    assert_eq!(
        common.tls_certificate_sds_secret_configs[0].name,
        "tribune-leaf:web"
    );
    let Some(common_tls_context::ValidationContextType::CombinedValidationContext(v)) =
        common.validation_context_type
    else {
        panic!("validation context")
    };
    let san = &v
        .default_validation_context
        .unwrap()
        .match_typed_subject_alt_names[0];
    assert_eq!(san.san_type, subject_alt_name_matcher::SanType::Uri as i32);
    let m = san.matcher.clone().unwrap().match_pattern.unwrap();
    assert_eq!(
        m,
        string_matcher::MatchPattern::Exact("spiffe://1234.tribune/ns/default/dc/dc1/svc/api".into())
    );
}

#[test]
fn critical_endpoints_leave_eds() {
    let (r, _) = build(&web(), &mesh(), Some(&leaf()));
    let sni = "api.default.dc1.internal.1234.tribune";
    let cla = ClusterLoadAssignment::decode(&*r.of_type(ENDPOINT).unwrap()[sni].body.value).unwrap();
    let eps = &cla.endpoints[0].lb_endpoints;
    assert_eq!(eps.len(), 1, "the unhealthy instance is left out");
}

#[test]
fn versions_are_stable_and_change_only_with_content() {
    let (a, _) = build(&web(), &mesh(), Some(&leaf()));
    let (b, _) = build(&web(), &mesh(), Some(&leaf()));
    assert_eq!(a, b, "same input, same output");

    let mut m = mesh();
    m.endpoints.get_mut("api").unwrap()[1].healthy = true;
    let (c, _) = build(&web(), &m, Some(&leaf()));
    let sni = "api.default.dc1.internal.1234.tribune";
    assert_ne!(
        a.of_type(ENDPOINT).unwrap()[sni].version,
        c.of_type(ENDPOINT).unwrap()[sni].version
    );
    assert_eq!(
        a.of_type(CLUSTER),
        c.of_type(CLUSTER),
        "clusters do not change with endpoints"
    );
    assert_eq!(a.of_type(LISTENER), c.of_type(LISTENER));
}

#[test]
fn intentions_change_only_the_public_listener() {
    let (a, _) = build(&web(), &mesh(), Some(&leaf()));
    let mut m = mesh();
    m.intentions.push(Intention {
        source: "billing".into(),
        destination: "web".into(),
        allow: false,
    });
    let (b, _) = build(&web(), &m, Some(&leaf()));
    let la = &a.of_type(LISTENER).unwrap()["public_listener"];
    let lb = &b.of_type(LISTENER).unwrap()["public_listener"];
    assert_ne!(la.version, lb.version);
    assert_eq!(
        a.of_type(LISTENER).unwrap()["upstream:api"],
        b.of_type(LISTENER).unwrap()["upstream:api"]
    );
    let l = Listener::decode(&*lb.body.value).unwrap();
    assert_eq!(l.filter_chains[0].filters[0].name, "envoy.filters.network.rbac");
}

#[test]
fn without_a_leaf_the_rest_is_still_built() {
    let (r, diags) = build(&web(), &mesh(), None);
    assert_eq!(diags.len(), 1);
    assert_eq!(names_of(&r, SECRET), ["tribune-roots"]);
    assert_eq!(names_of(&r, LISTENER).len(), 2);
}

/// `mesh()` federated with dc2, where db runs; each list has one critical
/// member, which must never show up in EDS.
fn federated() -> MeshSnapshot {
    let mut m = mesh();
    m.local_gateways = vec![
        ep("gw-1", "10.0.0.1", 8443, true),
        ep("gw-2", "10.0.0.2", 8443, false),
    ];
    m.remote.insert(
        "dc2".into(),
        RemoteDatacenter {
            gateways: vec![
                ep("dc2-gw-1", "198.51.100.1", 443, true),
                ep("dc2-gw-2", "198.51.100.2", 443, false),
            ],
            endpoints: BTreeMap::from([(
                "db".to_string(),
                vec![
                    ep("db-1", "203.0.113.1", 21000, true),
                    ep("db-2", "203.0.113.2", 21000, false),
                ],
            )]),
        },
    );
    m
}

const DB_DC2: &str = "db.default.dc2.internal.1234.tribune";

/// `web()` with one more upstream: db in `dc`, reached per `mode`.
fn web_with_db(dc: &str, mode: GatewayMode) -> Sidecar {
    let mut p = web();
    p.upstreams.push(Upstream {
        peer: String::new(),
        destination: "db".into(),
        datacenter: dc.into(),
        bind_address: "127.0.0.1".into(),
        bind_port: 9292,
        mode,
    });
    p
}

/// The addresses in the load assignment named `cluster`.
pub(crate) fn eds_addresses(r: &ProxyResources, cluster: &str) -> Vec<(String, u32)> {
    let cla = ClusterLoadAssignment::decode(&*r.of_type(ENDPOINT).unwrap()[cluster].body.value).unwrap();
    assert_eq!(cla.cluster_name, cluster);
    cla.endpoints
        .iter()
        .flat_map(|l| &l.lb_endpoints)
        .map(|e| {
            let Some(lb_endpoint::HostIdentifier::Endpoint(endpoint)) = &e.host_identifier else {
                panic!("endpoint")
            };
            let Some(address::Address::SocketAddress(sa)) = &endpoint.address.as_ref().unwrap().address
            else {
                panic!("socket address")
            };
            let Some(socket_address::PortSpecifier::PortValue(port)) = sa.port_specifier else {
                panic!("port")
            };
            (sa.address.clone(), port)
        })
        .collect()
}

/// The SNI and the SAN matcher of an upstream cluster's TLS context.
fn sni_and_san(r: &ProxyResources, cluster: &str) -> (String, string_matcher::MatchPattern) {
    let c = Cluster::decode(&*r.of_type(CLUSTER).unwrap()[cluster].body.value).unwrap();
    let Some(transport_socket::ConfigType::TypedConfig(any)) = c.transport_socket.unwrap().config_type else {
        panic!("tls transport socket")
    };
    let tls = UpstreamTlsContext::decode(&*any.value).unwrap();
    let Some(common_tls_context::ValidationContextType::CombinedValidationContext(v)) =
        tls.common_tls_context.unwrap().validation_context_type
    else {
        panic!("validation context")
    };
    let san = &v
        .default_validation_context
        .unwrap()
        .match_typed_subject_alt_names[0];
    (tls.sni, san.matcher.clone().unwrap().match_pattern.unwrap())
}

#[test]
fn every_gateway_mode_keeps_the_cluster_and_changes_only_the_endpoints() {
    let m = federated();
    let (none, d1) = build(&web_with_db("dc2", GatewayMode::None), &m, Some(&leaf()));
    let (local, d2) = build(&web_with_db("dc2", GatewayMode::Local), &m, Some(&leaf()));
    let (remote, d3) = build(&web_with_db("dc2", GatewayMode::Remote), &m, Some(&leaf()));
    assert!(d1.is_empty() && d2.is_empty() && d3.is_empty());

    // The target's SNI and identity check, whichever way the bytes go:
    // gateways forward the TLS stream to db's own sidecar.
    let (sni, san) = sni_and_san(&none, DB_DC2);
    assert_eq!(sni, DB_DC2);
    assert_eq!(
        san,
        string_matcher::MatchPattern::Exact("spiffe://1234.tribune/ns/default/dc/dc2/svc/db".into())
    );
    assert_eq!(none.of_type(CLUSTER), local.of_type(CLUSTER));
    assert_eq!(none.of_type(CLUSTER), remote.of_type(CLUSTER));
    assert_eq!(none.of_type(LISTENER), remote.of_type(LISTENER));

    assert_eq!(eds_addresses(&none, DB_DC2), [("203.0.113.1".into(), 21000)]);
    assert_eq!(eds_addresses(&local, DB_DC2), [("10.0.0.1".into(), 8443)]);
    assert_eq!(eds_addresses(&remote, DB_DC2), [("198.51.100.1".into(), 443)]);
}

#[test]
fn the_gateway_mode_is_ignored_in_the_local_datacenter() {
    let m = federated();
    let mut p = web();
    p.upstreams[0].mode = GatewayMode::Remote;
    let (r, diags) = build(&p, &m, Some(&leaf()));
    assert!(diags.is_empty());
    assert_eq!(build(&web(), &m, Some(&leaf())).0, r);
    let sni = "api.default.dc1.internal.1234.tribune";
    assert_eq!(eds_addresses(&r, sni), [("127.0.0.1".into(), 21001)]);
}

#[test]
fn an_unknown_datacenter_is_diagnosed_and_its_cluster_left_empty() {
    let m = federated();
    let (alone, _) = build(&web(), &m, Some(&leaf()));
    for mode in [GatewayMode::None, GatewayMode::Remote] {
        let (r, diags) = build(&web_with_db("dc9", mode), &m, Some(&leaf()));
        assert_eq!(diags.len(), 1, "{mode:?}");
        assert!(
            diags[0].message.contains("upstream db in datacenter dc9"),
            "{diags:?}"
        );
        assert!(diags[0].message.contains("no such datacenter"), "{diags:?}");

        let db = "db.default.dc9.internal.1234.tribune";
        assert_eq!(sni_and_san(&r, db).0, db);
        assert!(eds_addresses(&r, db).is_empty());
        assert_eq!(
            names_of(&r, LISTENER),
            ["public_listener", "upstream:api", "upstream:db"]
        );

        // The other upstream is untouched.
        let sni = "api.default.dc1.internal.1234.tribune";
        for t in [CLUSTER, ENDPOINT] {
            assert_eq!(r.of_type(t).unwrap()[sni], alone.of_type(t).unwrap()[sni]);
        }
        assert_eq!(
            r.of_type(LISTENER).unwrap()["upstream:api"],
            alone.of_type(LISTENER).unwrap()["upstream:api"]
        );
    }
}

#[test]
fn local_mode_without_a_local_gateway_is_diagnosed() {
    let mut m = federated();
    m.local_gateways.clear();
    let (r, diags) = build(&web_with_db("dc2", GatewayMode::Local), &m, Some(&leaf()));
    assert_eq!(diags.len(), 1);
    assert!(
        diags[0].message.contains("upstream db in datacenter dc2"),
        "{diags:?}"
    );
    assert!(
        diags[0].message.contains("no mesh gateway is registered"),
        "{diags:?}"
    );
    assert!(eds_addresses(&r, DB_DC2).is_empty());
    assert_eq!(
        names_of(&r, CLUSTER),
        ["api.default.dc1.internal.1234.tribune", DB_DC2, "local_app"]
    );
}

fn with_peer() -> MeshSnapshot {
    let mut m = mesh();
    m.peers.insert(
        "cluster-b".into(),
        crate::model::PeerMesh {
            trust_domain: "b.tribune".into(),
            roots_pem: vec!["PEER ROOT".into()],
            services: BTreeMap::from([(
                "db".to_string(),
                crate::model::PeerService {
                    sni: "db.default.dc1.internal.b.tribune".into(),
                    spiffe_id: "spiffe://b.tribune/ns/default/dc/dc1/svc/db".into(),
                    gateways: vec![ep("gw-b", "127.0.0.6", 8443, true)],
                },
            )]),
        },
    );
    m
}

fn web_with_peer_db() -> Sidecar {
    let mut p = web();
    p.upstreams.push(Upstream {
        peer: "cluster-b".into(),
        destination: "db".into(),
        datacenter: String::new(),
        bind_address: "127.0.0.1".into(),
        bind_port: 5002,
        mode: GatewayMode::None,
    });
    p
}

#[test]
fn a_peer_upstream_goes_to_the_exporters_gateways_trusting_only_the_peer() {
    let (r, diags) = build(&web_with_peer_db(), &with_peer(), Some(&leaf()));
    assert!(diags.is_empty(), "{diags:?}");
    let name = "db.default.cluster-b.external.b.tribune";
    assert!(names_of(&r, CLUSTER).contains(&name.to_string()));
    let (sni, san) = sni_and_san(&r, name);
    assert_eq!(sni, "db.default.dc1.internal.b.tribune");
    assert_eq!(
        san,
        string_matcher::MatchPattern::Exact("spiffe://b.tribune/ns/default/dc/dc1/svc/db".into())
    );
    assert!(names_of(&r, SECRET).contains(&"tribune-peer-roots:cluster-b".to_string()));
    let cla =
        ClusterLoadAssignment::decode(r.of_type(ENDPOINT).unwrap()[name].body.value.as_slice()).unwrap();
    assert_eq!(cla.endpoints[0].lb_endpoints.len(), 1);

    // Not exported (yet): diagnosed; the listener is there, the cluster not.
    let (r, diags) = build(&web_with_peer_db(), &mesh(), Some(&leaf()));
    assert_eq!(diags.len(), 1, "{diags:?}");
    assert!(names_of(&r, LISTENER).iter().any(|l| l.contains("db")));
}

#[test]
fn a_service_exported_to_a_peer_accepts_its_identities_by_their_own_roots() {
    let mut m = mesh();
    m.inbound_peers.push(crate::model::PeerTrust {
        trust_domain: "a.tribune".into(),
        roots_pem: vec!["A ROOT".into()],
    });
    let (r, _) = build(&web(), &m, Some(&leaf()));
    // The validator and both trust domains are in the listener's (nested,
    // encoded) TLS context.
    let has = |r: &ProxyResources, needle: &str| {
        let bytes = &r.of_type(LISTENER).unwrap()[names::PUBLIC_LISTENER].body.value;
        bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
    };
    assert!(has(&r, "envoy.tls.cert_validator.spiffe"));
    assert!(has(&r, "a.tribune") && has(&r, "A ROOT"));
    // Without peers: the roots over SDS, so a rotation changes no listener.
    let (r, _) = build(&web(), &mesh(), Some(&leaf()));
    assert!(!has(&r, "cert_validator.spiffe"));
}
