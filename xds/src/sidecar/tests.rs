use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use prost::Message;

use super::*;
use crate::model::{Intention, MeshEndpoint};

pub(crate) fn mesh() -> MeshSnapshot {
    let ep = |id: &str, port, healthy| MeshEndpoint {
        instance_id: id.into(),
        address: "127.0.0.1".into(),
        port,
        healthy,
    };
    MeshSnapshot {
        index: 7,
        trust_domain: "1234.tribune".into(),
        datacenter: "dc1".into(),
        default_allow: true,
        intentions: vec![],
        endpoints: BTreeMap::from([(
            "api".to_string(),
            vec![ep("api-1", 21001, true), ep("api-2", 21002, false)],
        )]),
        roots_pem: vec!["ROOT".into()],
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
            destination: "api".into(),
            datacenter: String::new(),
            bind_address: "127.0.0.1".into(),
            bind_port: 9191,
        }],
    }
}

pub(crate) fn leaf() -> LeafCert {
    LeafCert {
        cert_chain_pem: "LEAF".into(),
        key_pem: "KEY".into(),
    }
}

fn names_of(r: &ProxyResources, t: &str) -> Vec<String> {
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

#[test]
fn cross_datacenter_upstreams_are_diagnosed_not_fatal() {
    let mut p = web();
    p.upstreams.push(Upstream {
        destination: "db".into(),
        datacenter: "dc2".into(),
        bind_address: "127.0.0.1".into(),
        bind_port: 9292,
    });
    let (r, diags) = build(&p, &mesh(), Some(&leaf()));
    assert_eq!(diags.len(), 1);
    assert_eq!(names_of(&r, LISTENER), ["public_listener", "upstream:api"]);
}
