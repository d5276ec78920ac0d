//! Hostile ADS request sequences: random type URLs, nonces, versions,
//! resource names and NACKs, interleaved with configuration updates, never
//! panic the state-of-the-world or delta stream machinery.
//! `PROPTEST_CASES=100000 cargo test -p tribune-xds --test hostile` runs a
//! longer search.

use std::collections::BTreeMap;
use std::sync::Arc;

use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use proptest::prelude::*;
use tribune_xds::{
    DeltaStream, GatewayMode, LeafCert, MeshEndpoint, MeshSnapshot, SharedResources, Sidecar, SotwStream,
    Upstream, names,
};

fn resources(endpoints: usize) -> SharedResources {
    let mesh = MeshSnapshot {
        index: endpoints as u64,
        trust_domain: "1234.tribune".into(),
        datacenter: "dc1".into(),
        default_allow: true,
        endpoints: BTreeMap::from([(
            "api".to_string(),
            (0..endpoints)
                .map(|i| MeshEndpoint {
                    instance_id: format!("api-{i}"),
                    address: "127.0.0.1".into(),
                    port: 21000 + i as u16,
                    healthy: true,
                })
                .collect(),
        )]),
        roots_pem: vec!["ROOT".into()],
        ..Default::default()
    };
    let web = Sidecar {
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
    };
    let leaf = LeafCert {
        cert_chain_pem: "LEAF".into(),
        key_pem: "KEY".into(),
    };
    Arc::new(tribune_xds::sidecar::build(&web, &mesh, Some(&leaf)).0)
}

/// One step a hostile proxy (or the server) takes.
#[derive(Clone, Debug)]
enum Step {
    Request {
        type_url: usize,
        nonce: Option<String>,
        version: String,
        names: Vec<String>,
        nack: bool,
    },
    Update(usize),
}

fn type_url(i: usize) -> String {
    const TYPES: [&str; 6] = [
        names::CLUSTER,
        names::LISTENER,
        names::ENDPOINT,
        names::SECRET,
        names::ROUTE,
        "type.googleapis.com/something.Else",
    ];
    TYPES
        .get(i)
        .map_or_else(|| format!("garbage-{i}"), |t| t.to_string())
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (
            0usize..8,
            proptest::option::of("[0-9a-f]{0,6}"),
            "\\PC{0,8}",
            proptest::collection::vec("\\PC{0,12}", 0..4),
            any::<bool>()
        )
            .prop_map(|(type_url, nonce, version, names, nack)| Step::Request {
                type_url,
                nonce,
                version,
                names,
                nack,
            }),
        1 => (0usize..4).prop_map(Step::Update),
    ]
}

fn nack(on: bool) -> Option<RpcStatus> {
    on.then(|| RpcStatus {
        code: 3,
        message: "rejected".into(),
        ..Default::default()
    })
}

proptest! {
    // 256 cases in the suite (proptest's default); PROPTEST_CASES sets more.
    #[test]
    fn sotw_survives_any_sequence(steps in proptest::collection::vec(step(), 1..40)) {
        let mut s = SotwStream::new(resources(1));
        let mut nonces: Vec<String> = Vec::new();
        for st in steps {
            match st {
                Step::Request { type_url: t, nonce, version, names, nack: n } => {
                    // Half the time, answer a nonce the server really sent.
                    let nonce = nonce.or_else(|| nonces.last().cloned()).unwrap_or_default();
                    let (_, resp) = s.on_request(&DiscoveryRequest {
                        type_url: type_url(t),
                        response_nonce: nonce,
                        version_info: version,
                        resource_names: names,
                        error_detail: nack(n),
                        ..Default::default()
                    });
                    nonces.extend(resp.map(|r| r.nonce));
                }
                Step::Update(n) => nonces.extend(s.on_update(resources(n)).into_iter().map(|r| r.nonce)),
            }
            let _ = s.status();
        }
    }

    #[test]
    fn delta_survives_any_sequence(steps in proptest::collection::vec(step(), 1..40)) {
        let mut s = DeltaStream::new(resources(1));
        let mut nonces: Vec<String> = Vec::new();
        for st in steps {
            match st {
                Step::Request { type_url: t, nonce, version, names, nack: n } => {
                    let nonce = nonce.or_else(|| nonces.last().cloned()).unwrap_or_default();
                    let (_, resp) = s.on_request(&DeltaDiscoveryRequest {
                        type_url: type_url(t),
                        response_nonce: nonce,
                        resource_names_subscribe: names.clone(),
                        resource_names_unsubscribe: names.into_iter().take(1).collect(),
                        initial_resource_versions: [("x".to_string(), version)].into(),
                        error_detail: nack(n),
                        ..Default::default()
                    });
                    nonces.extend(resp.into_iter().map(|r| r.nonce));
                }
                Step::Update(n) => nonces.extend(s.on_update(resources(n)).into_iter().map(|r| r.nonce)),
            }
            let _ = s.status();
        }
    }
}
