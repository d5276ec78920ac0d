//! Replays of request / ACK / NACK / stale-nonce sequences.

use std::sync::Arc;

use envoy_types::pb::google::rpc::Status;

use super::*;
use crate::names::{CLUSTER, ENDPOINT, LISTENER, SECRET};
use crate::sidecar::build;
use crate::sidecar::tests::{leaf, mesh, web};

fn resources() -> SharedResources {
    Arc::new(build(&web(), &mesh(), Some(&leaf())).0)
}

fn req(type_url: &str, names: &[&str], version: &str, nonce: &str) -> DiscoveryRequest {
    DiscoveryRequest {
        type_url: type_url.into(),
        resource_names: names.iter().map(|s| s.to_string()).collect(),
        version_info: version.into(),
        response_nonce: nonce.into(),
        ..Default::default()
    }
}

const SNI: &str = "api.default.dc1.internal.1234.tribune";

#[test]
fn wildcard_cds_then_ack() {
    let mut s = SotwStream::new(resources());
    let (k, r) = s.on_request(&req(CLUSTER, &[], "", ""));
    assert_eq!(k, RequestKind::Initial);
    let r = r.expect("initial wildcard request is answered");
    assert_eq!(r.resources.len(), 2);
    let (k, again) = s.on_request(&req(CLUSTER, &[], &r.version_info, &r.nonce));
    assert_eq!(k, RequestKind::Ack);
    assert!(again.is_none(), "an ACK of the current version needs no response");
    assert!(s.status()[0].acked);
}

#[test]
fn named_eds_waits_for_names_that_do_not_exist_yet() {
    let mut s = SotwStream::new(resources());
    let (_, r) = s.on_request(&req(
        ENDPOINT,
        &["later.default.dc1.internal.1234.tribune"],
        "",
        "",
    ));
    assert!(r.is_none(), "nothing to send for a name that does not exist");

    // The resource appears: it is sent without another request.
    let mut m = mesh();
    m.endpoints.insert("later".into(), vec![]);
    let mut p = web();
    p.upstreams[0].destination = "later".into();
    let out = s.on_update(Arc::new(build(&p, &m, Some(&leaf())).0));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].type_url, ENDPOINT);
}

#[test]
fn a_nack_keeps_the_stream_and_is_reported() {
    let mut s = SotwStream::new(resources());
    let (_, r) = s.on_request(&req(LISTENER, &[], "", ""));
    let r = r.unwrap();
    let mut nack = req(LISTENER, &[], "", &r.nonce);
    nack.error_detail = Some(Status {
        code: 3,
        message: "cannot bind".into(),
        details: vec![],
    });
    let (k, resp) = s.on_request(&nack);
    assert_eq!(k, RequestKind::Nack("cannot bind".into()));
    assert!(resp.is_none(), "the same config is not pushed again");
    let st = &s.status()[0];
    assert_eq!((st.nacks, st.acked), (1, false));
    assert_eq!(st.last_nack.as_ref().unwrap().message, "cannot bind");

    // A later, different config is sent and, once ACKed, clears the NACK.
    let mut m = mesh();
    m.default_allow = false;
    let out = s.on_update(Arc::new(build(&web(), &m, Some(&leaf())).0));
    assert_eq!(out.len(), 1);
    let (k, _) = s.on_request(&req(LISTENER, &[], &out[0].version_info, &out[0].nonce));
    assert_eq!(k, RequestKind::Ack);
    assert!(s.status()[0].last_nack.is_none());
}

#[test]
fn stale_nonces_are_ignored() {
    let mut s = SotwStream::new(resources());
    let (_, first) = s.on_request(&req(CLUSTER, &[], "", ""));
    let first = first.unwrap();
    let mut m = mesh();
    m.endpoints.insert("db".into(), vec![]);
    let mut p = web();
    p.upstreams[0].destination = "db".into();
    let out = s.on_update(Arc::new(build(&p, &m, Some(&leaf())).0));
    assert_eq!(out.len(), 1);
    // An ACK of the first response arrives after the second was sent.
    let (k, r) = s.on_request(&req(CLUSTER, &[], &first.version_info, &first.nonce));
    assert_eq!(k, RequestKind::Stale);
    assert!(r.is_none());
    assert!(!s.status()[0].acked);
}

#[test]
fn updates_go_out_make_before_break() {
    let mut s = SotwStream::new(resources());
    for t in [CLUSTER, LISTENER] {
        s.on_request(&req(t, &[], "", ""));
    }
    s.on_request(&req(ENDPOINT, &[SNI], "", ""));
    s.on_request(&req(SECRET, &["tribune-leaf:web", "tribune-roots"], "", ""));

    // A new upstream: its cluster goes out before the listener that uses it.
    let mut p = web();
    p.upstreams.push(crate::Upstream {
        peer: String::new(),
        destination: "db".into(),
        datacenter: String::new(),
        bind_address: "127.0.0.1".into(),
        bind_port: 9292,
        mode: crate::GatewayMode::None,
    });
    let out = s.on_update(Arc::new(build(&p, &mesh(), Some(&leaf())).0));
    let order: Vec<&str> = out.iter().map(|r| r.type_url.as_str()).collect();
    assert_eq!(order, [CLUSTER, LISTENER]);

    // The upstream goes away: the listener is removed before the cluster.
    let out = s.on_update(Arc::new(build(&web(), &mesh(), Some(&leaf())).0));
    let order: Vec<&str> = out.iter().map(|r| r.type_url.as_str()).collect();
    assert_eq!(order, [LISTENER, CLUSTER]);
}
