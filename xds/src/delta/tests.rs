//! Replays of delta subscribe / ACK / NACK / reconnect sequences.

use std::sync::Arc;

use envoy_types::pb::google::rpc::Status;

use super::*;
use crate::names::{CLUSTER, ENDPOINT, LISTENER};
use crate::sidecar::build;
use crate::sidecar::tests::{leaf, mesh, web};

const SNI: &str = "api.default.dc1.internal.1234.tribune";

fn resources() -> SharedResources {
    Arc::new(build(&web(), &mesh(), Some(&leaf())).0)
}

fn req(type_url: &str, sub: &[&str], unsub: &[&str], nonce: &str) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        type_url: type_url.into(),
        resource_names_subscribe: sub.iter().map(|s| s.to_string()).collect(),
        resource_names_unsubscribe: unsub.iter().map(|s| s.to_string()).collect(),
        response_nonce: nonce.into(),
        ..Default::default()
    }
}

#[test]
fn wildcard_first_request_gets_everything_then_only_changes() {
    let mut s = DeltaStream::new(resources());
    let (_, r) = s.on_request(&req(CLUSTER, &[], &[], ""));
    let r = r.unwrap();
    assert_eq!(r.resources.len(), 2);
    assert!(r.removed_resources.is_empty());
    s.on_request(&req(CLUSTER, &[], &[], &r.nonce));

    // Same clusters, new endpoints: no CDS traffic at all.
    let mut m = mesh();
    m.endpoints.get_mut("api").unwrap()[1].healthy = true;
    assert!(
        s.on_update(Arc::new(build(&web(), &m, Some(&leaf())).0))
            .is_empty()
    );
}

#[test]
fn reconnect_with_initial_versions_sends_only_what_differs() {
    let res = resources();
    let clusters = res.of_type(CLUSTER).unwrap();
    let mut s = DeltaStream::new(res.clone());
    let mut r = req(CLUSTER, &[], &[], "");
    r.initial_resource_versions = clusters
        .iter()
        .map(|(n, c)| (n.clone(), c.version.clone()))
        .collect();
    r.initial_resource_versions
        .insert("gone-cluster".into(), "0".into());
    let (_, resp) = s.on_request(&r);
    let resp = resp.expect("the first wildcard request is always answered");
    assert!(resp.resources.is_empty(), "the client already has these versions");
    assert_eq!(resp.removed_resources, ["gone-cluster"]);
}

#[test]
fn named_subscriptions_and_removals() {
    let mut s = DeltaStream::new(resources());
    let (_, r) = s.on_request(&req(ENDPOINT, &[SNI, "missing"], &[], ""));
    let r = r.unwrap();
    assert_eq!(r.resources.len(), 1, "a missing name is remembered, not sent");
    s.on_request(&req(ENDPOINT, &[], &[], &r.nonce));

    // The upstream is removed: its endpoints are named in removed_resources.
    let mut p = web();
    p.upstreams.clear();
    let out = s.on_update(Arc::new(build(&p, &mesh(), Some(&leaf())).0));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].removed_resources, [SNI]);

    // Unsubscribing forgets the name: nothing to remove later.
    let (_, r) = s.on_request(&req(ENDPOINT, &[], &["missing"], &out[0].nonce));
    assert!(r.is_none());
}

#[test]
fn nack_is_recorded_and_subscriptions_on_stale_nonces_still_count() {
    let mut s = DeltaStream::new(resources());
    let (_, r) = s.on_request(&req(LISTENER, &[], &[], ""));
    let r = r.unwrap();
    let mut nack = req(LISTENER, &[], &[], &r.nonce);
    nack.error_detail = Some(Status {
        code: 3,
        message: "bad listener".into(),
        details: vec![],
    });
    let (k, resp) = s.on_request(&nack);
    assert_eq!(k, RequestKind::Nack("bad listener".into()));
    assert!(resp.is_none());
    assert_eq!(s.status()[0].nacks, 1);

    let (_, eds) = s.on_request(&req(ENDPOINT, &[SNI], &[], ""));
    assert!(eds.is_some());
    // A stale nonce that carries a new subscription: the subscription counts.
    let (k, r) = s.on_request(&req(ENDPOINT, &["later"], &[], "999"));
    assert_eq!(k, RequestKind::Stale);
    assert!(r.is_none());
    let mut m = mesh();
    m.endpoints.insert("later".into(), vec![]);
    let mut p = web();
    p.upstreams.push(crate::Upstream {
        peer: String::new(),
        destination: "later".into(),
        datacenter: String::new(),
        bind_address: "127.0.0.1".into(),
        bind_port: 9393,
        mode: crate::GatewayMode::None,
    });
    let out = s.on_update(Arc::new(build(&p, &m, Some(&leaf())).0));
    let eds_out: Vec<_> = out.iter().filter(|r| r.type_url == ENDPOINT).collect();
    assert!(
        eds_out.is_empty(),
        "'later' is not the SNI name; nothing of it exists"
    );
}

#[test]
fn upserts_come_before_removals_across_types() {
    let mut s = DeltaStream::new(resources());
    for t in [CLUSTER, LISTENER] {
        let (_, r) = s.on_request(&req(t, &[], &[], ""));
        s.on_request(&req(t, &[], &[], &r.unwrap().nonce));
    }
    // Swap upstream api for db: db's cluster and listener are added, api's removed.
    let mut m = mesh();
    m.endpoints.insert("db".into(), vec![]);
    let mut p = web();
    p.upstreams[0].destination = "db".into();
    let out = s.on_update(Arc::new(build(&p, &m, Some(&leaf())).0));
    let shape: Vec<(&str, bool)> = out
        .iter()
        .map(|r| (r.type_url.as_str(), r.removed_resources.is_empty()))
        .collect();
    assert_eq!(
        shape,
        [
            (CLUSTER, true),
            (LISTENER, true),
            (LISTENER, false),
            (CLUSTER, false)
        ]
    );
}
