//! Apply semantics of the catalog: indexes, in-place updates, cascades and
//! health aggregation.

use std::collections::BTreeMap;

use super::command::{Command, Outcome, Registration};
use super::model::*;
use super::{Catalog, Touched};

fn node(name: &str) -> Node {
    Node {
        name: name.into(),
        address: "10.0.0.1".into(),
        wan_address: String::new(),
        datacenter: "dc1".into(),
        meta: BTreeMap::new(),
        create_index: 0,
        modify_index: 0,
    }
}

fn svc(id: &str, name: &str, port: u16) -> Service {
    Service {
        id: id.into(),
        name: name.into(),
        node: "n1".into(),
        address: "10.0.0.1".into(),
        port,
        wan: None,
        tags: vec![],
        meta: BTreeMap::new(),
        kind: ServiceKind::Typical,
        proxy: None,
        create_index: 0,
        modify_index: 0,
    }
}

fn ttl_check(id: &str, service_id: Option<&str>, status: Status) -> Check {
    Check {
        id: id.into(),
        name: id.into(),
        node: "n1".into(),
        service_id: service_id.map(Into::into),
        service_name: "web".into(),
        definition: CheckDefinition {
            kind: CheckKind::Ttl { ttl_ms: 30_000 },
            interval_ms: 10_000,
            timeout_ms: 10_000,
            success_before_passing: 0,
            failures_before_critical: 0,
        },
        status,
        output: String::new(),
        create_index: 0,
        modify_index: 0,
    }
}

fn register(services: Vec<Service>, checks: Vec<Check>) -> Command {
    Command::Register(Registration {
        node: node("n1"),
        services,
        checks,
        remove: vec![],
    })
}

fn apply(c: &mut Catalog, index: u64, cmd: Command) -> (Outcome, Touched) {
    let mut t = Touched::default();
    let o = c.apply(index, &cmd, &mut t);
    (o, t)
}

#[test]
fn register_stamps_indexes_and_reregistering_updates_in_place() {
    let mut c = Catalog::default();
    apply(&mut c, 5, register(vec![svc("web-1", "web", 80)], vec![]));
    let s = c.service("web-1").unwrap();
    assert_eq!((s.create_index, s.modify_index), (5, 5));
    assert_eq!(c.node("n1").unwrap().create_index, 5);

    // Same definition: nothing changes, not even the modify index.
    apply(&mut c, 6, register(vec![svc("web-1", "web", 80)], vec![]));
    assert_eq!(c.service("web-1").unwrap().modify_index, 5);

    // New port: updated in place, created where it was.
    let (_, t) = apply(&mut c, 7, register(vec![svc("web-1", "web", 81)], vec![]));
    let s = c.service("web-1").unwrap();
    assert_eq!((s.port, s.create_index, s.modify_index), (81, 5, 7));
    assert!(t.instances.contains("web-1"));
    assert_eq!(c.instances_of("web").count(), 1);
}

#[test]
fn renaming_an_instance_moves_it_between_names() {
    let mut c = Catalog::default();
    apply(&mut c, 1, register(vec![svc("x-1", "old", 80)], vec![]));
    apply(&mut c, 2, register(vec![svc("x-1", "new", 80)], vec![]));
    assert_eq!(c.instances_of("old").count(), 0);
    assert_eq!(c.instances_of("new").count(), 1);
    assert!(c.service_names().all(|(n, _)| n != "old"));
}

#[test]
fn health_is_the_worst_of_instance_and_node_checks() {
    let mut c = Catalog::default();
    apply(
        &mut c,
        1,
        register(
            vec![svc("web-1", "web", 80), svc("web-2", "web", 81)],
            vec![ttl_check("c1", Some("web-1"), Status::Passing)],
        ),
    );
    let h = c.instance_health("web-1").unwrap();
    assert_eq!(h.status, Status::Passing);
    // No checks at all counts as passing.
    assert_eq!(c.instance_health("web-2").unwrap().status, Status::Passing);

    // A node-level check that fails takes every instance on the node down.
    let (_, t) = apply(
        &mut c,
        2,
        register(vec![], vec![ttl_check("node-c", None, Status::Critical)]),
    );
    assert!(t.instances.contains("web-1") && t.instances.contains("web-2"));
    assert_eq!(c.instance_health("web-1").unwrap().status, Status::Critical);
    assert_eq!(c.checks_in(Some(Status::Critical), None).len(), 1);
}

#[test]
fn ttl_updates_and_their_refusals() {
    let mut c = Catalog::default();
    apply(
        &mut c,
        1,
        register(
            vec![svc("web-1", "web", 80)],
            vec![ttl_check("c1", Some("web-1"), Status::Critical)],
        ),
    );
    let (o, _) = apply(
        &mut c,
        2,
        Command::UpdateTtl {
            check_id: "c1".into(),
            status: Status::Warning,
            output: "slow".into(),
        },
    );
    assert_eq!(o, Outcome::TtlUpdated);
    let ch = c.check("c1").unwrap();
    assert_eq!(
        (ch.status, ch.output.as_str(), ch.modify_index),
        (Status::Warning, "slow", 2)
    );
    assert_eq!(c.checks_in(Some(Status::Warning), Some("web")).len(), 1);
    assert!(c.checks_in(Some(Status::Critical), None).is_empty());

    let (o, _) = apply(
        &mut c,
        3,
        Command::UpdateTtl {
            check_id: "nope".into(),
            status: Status::Passing,
            output: String::new(),
        },
    );
    assert!(matches!(o, Outcome::NotFound { .. }));

    // Re-registering keeps a check's status when its definition is unchanged.
    apply(
        &mut c,
        4,
        register(
            vec![svc("web-1", "web", 80)],
            vec![ttl_check("c1", Some("web-1"), Status::Critical)],
        ),
    );
    assert_eq!(c.check("c1").unwrap().status, Status::Warning);
}

#[test]
fn updating_a_non_ttl_check_is_refused() {
    let mut c = Catalog::default();
    let mut http = ttl_check("h1", Some("web-1"), Status::Critical);
    http.definition.kind = CheckKind::Http {
        url: "http://127.0.0.1/".into(),
    };
    apply(&mut c, 1, register(vec![svc("web-1", "web", 80)], vec![http]));
    let (o, _) = apply(
        &mut c,
        2,
        Command::UpdateTtl {
            check_id: "h1".into(),
            status: Status::Passing,
            output: String::new(),
        },
    );
    assert!(matches!(o, Outcome::Invalid { field, .. } if field == "check_id"));
}

#[test]
fn deregister_cascades_to_sidecar_and_checks() {
    let mut c = Catalog::default();
    let mut sidecar = svc("web-1-sidecar-proxy", "web-sidecar-proxy", 21000);
    sidecar.kind = ServiceKind::SidecarProxy;
    sidecar.proxy = Some(ProxyConfig {
        destination_service_name: "web".into(),
        destination_service_id: "web-1".into(),
        ..Default::default()
    });
    apply(
        &mut c,
        1,
        register(
            vec![svc("web-1", "web", 80), sidecar],
            vec![ttl_check("c1", Some("web-1"), Status::Passing)],
        ),
    );
    let (o, t) = apply(
        &mut c,
        2,
        Command::Deregister {
            service_id: "web-1".into(),
        },
    );
    assert_eq!(
        o,
        Outcome::Deregistered {
            removed_ids: vec!["web-1".into(), "web-1-sidecar-proxy".into()]
        }
    );
    assert_eq!(t.removed.get("web-1").map(String::as_str), Some("web"));
    assert!(c.instance_health("web-1").is_none());
    assert!(c.instance_health("web-1-sidecar-proxy").is_none());
    assert!(c.check("c1").is_none());
    assert!(c.checks_in(None, None).is_empty());

    let (o, _) = apply(
        &mut c,
        3,
        Command::Deregister {
            service_id: "web-1".into(),
        },
    );
    assert!(matches!(o, Outcome::NotFound { .. }));
}

#[test]
fn data_round_trip_rebuilds_the_same_indexes() {
    let mut c = Catalog::default();
    apply(
        &mut c,
        1,
        register(
            vec![svc("web-1", "web", 80), svc("api-1", "api", 90)],
            vec![
                ttl_check("c1", Some("web-1"), Status::Warning),
                ttl_check("n", None, Status::Passing),
            ],
        ),
    );
    let back = Catalog::from_data(c.to_data());
    assert_eq!(back.to_data(), c.to_data());
    assert_eq!(back.instance_health("web-1"), c.instance_health("web-1"));
    assert_eq!(
        back.checks_in(Some(Status::Warning), None),
        c.checks_in(Some(Status::Warning), None)
    );
    assert_eq!(back.instances_of("api").count(), 1);
}

#[test]
fn restore_replaces_everything_and_resets_watchers() {
    let mut c = Catalog::default();
    apply(&mut c, 1, register(vec![svc("web-1", "web", 80)], vec![]));
    let saved = c.to_data();
    apply(&mut c, 2, register(vec![svc("api-1", "api", 90)], vec![]));
    let (o, t) = apply(
        &mut c,
        3,
        Command::Restore {
            data: Box::new(saved.clone()),
            snapshot_index: 1,
        },
    );
    assert_eq!(o, Outcome::Restored);
    assert!(t.reset);
    assert_eq!(c.to_data(), saved);
}

#[test]
fn a_restore_in_chunks_applies_at_its_commit_and_survives_a_snapshot_meanwhile() {
    let mut c = Catalog::default();
    apply(&mut c, 1, register(vec![svc("web-1", "web", 80)], vec![]));
    let saved = c.to_data();
    let bytes = crate::codec::encode(&saved).unwrap();
    apply(&mut c, 2, register(vec![svc("api-1", "api", 90)], vec![]));
    let (half, rest) = bytes.split_at(bytes.len() / 2);
    let chunk = |offset: usize, data: &[u8]| Command::RestoreChunk {
        restore_id: "r1".into(),
        offset: offset as u64,
        data: data.to_vec(),
    };
    let (o, _) = apply(&mut c, 3, chunk(0, half));
    assert_eq!(
        o,
        Outcome::RestoreStaged {
            staged: half.len() as u64
        }
    );
    // A chunk out of order is refused and changes nothing.
    let (o, _) = apply(&mut c, 4, chunk(1, rest));
    assert!(matches!(o, Outcome::Invalid { .. }), "{o:?}");
    // A snapshot taken mid-restore carries what is staged.
    let mut c = Catalog::from_data(c.to_data());
    assert_eq!(
        c.instances_of("api").count(),
        1,
        "nothing applied before the commit"
    );
    apply(&mut c, 5, chunk(half.len(), rest));
    let commit = |len: usize| Command::RestoreCommit {
        restore_id: "r1".into(),
        len: len as u64,
        snapshot_index: 1,
    };
    let (o, _) = apply(&mut c, 6, commit(bytes.len() + 1));
    assert!(
        matches!(o, Outcome::Invalid { .. }),
        "a wrong length is refused: {o:?}"
    );
    let (o, t) = apply(&mut c, 7, commit(bytes.len()));
    assert_eq!(o, Outcome::Restored);
    assert!(t.reset);
    assert_eq!(c.to_data(), saved);
    let (o, _) = apply(&mut c, 8, commit(bytes.len()));
    assert!(
        matches!(o, Outcome::Invalid { .. }),
        "a commit applies once: {o:?}"
    );
}

#[test]
fn a_named_write_applies_once_however_often_it_is_retried() {
    let mut c = Catalog::default();
    apply(&mut c, 1, register(vec![svc("web-1", "web", 80)], vec![]));
    let once = |id: &str| Command::Once {
        request_id: id.into(),
        cmd: Box::new(Command::Deregister {
            service_id: "web-1".into(),
        }),
    };
    let (first, _) = apply(&mut c, 2, once("req-1"));
    assert!(matches!(first, Outcome::Deregistered { .. }));
    // The retry of the same request gets the same answer, not NOT_FOUND.
    let (again, t) = apply(&mut c, 3, once("req-1"));
    assert_eq!(again, first);
    assert!(t.removed.is_empty(), "nothing is applied twice");
    // A different request does run.
    let (other, _) = apply(&mut c, 4, once("req-2"));
    assert!(matches!(other, Outcome::NotFound { .. }));
    // Remembered across a snapshot.
    let back = Catalog::from_data(c.to_data());
    let mut back = back;
    let (after, _) = apply(&mut back, 5, once("req-1"));
    assert_eq!(after, first);
}

#[test]
fn an_identical_ttl_update_still_counts_but_an_identical_check_result_does_not() {
    let mut c = Catalog::default();
    apply(
        &mut c,
        1,
        register(
            vec![svc("web-1", "web", 80)],
            vec![ttl_check("c1", Some("web-1"), Status::Critical)],
        ),
    );
    let ttl = |out: &str| Command::UpdateTtl {
        check_id: "c1".into(),
        status: Status::Passing,
        output: out.into(),
    };
    apply(&mut c, 2, ttl("ok"));
    // The same update again: it refreshes the TTL, so it is recorded.
    apply(&mut c, 3, ttl("ok"));
    assert_eq!(c.check("c1").unwrap().modify_index, 3);
    // An agent's unchanged check result is not.
    let result = Command::CheckResult {
        check_id: "c1".into(),
        status: Status::Passing,
        output: "ok".into(),
    };
    let (_, t) = apply(&mut c, 4, result);
    assert_eq!(c.check("c1").unwrap().modify_index, 3);
    assert!(t.instances.is_empty());
}

#[test]
fn checks_on_a_node_follow_registrations_without_scanning_its_instances() {
    let mut c = Catalog::default();
    let mut instances: Vec<Service> = (0..50).map(|i| svc(&format!("bare-{i}"), "bare", 80)).collect();
    instances.push(svc("web-1", "web", 80));
    apply(
        &mut c,
        1,
        register(instances, vec![ttl_check("c1", Some("web-1"), Status::Passing)]),
    );
    let ids = |c: &Catalog, n: &str| c.checks_on(n).map(|k| k.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&c, "n1"), ["c1"]);
    assert!(ids(&c, "n2").is_empty());
    apply(
        &mut c,
        2,
        Command::Deregister {
            service_id: "web-1".into(),
        },
    );
    assert!(
        ids(&c, "n1").is_empty(),
        "a removed instance's checks leave its node"
    );
}

#[test]
fn the_catalog_round_trips_through_its_record() {
    let mut c = Catalog::default();
    apply(
        &mut c,
        1,
        register(
            vec![svc("web-1", "web", 80), svc("api-1", "api", 90)],
            vec![ttl_check("c1", Some("web-1"), Status::Warning)],
        ),
    );
    apply(
        &mut c,
        2,
        Command::Once {
            request_id: "r1".into(),
            cmd: Box::new(Command::Deregister {
                service_id: "api-1".into(),
            }),
        },
    );
    apply(
        &mut c,
        3,
        Command::RestoreChunk {
            restore_id: "x".into(),
            offset: 0,
            data: vec![1, 2, 3],
        },
    );
    let owned = crate::codec::encode(&c.to_data()).unwrap();
    let back: CatalogData = crate::codec::decode(&owned).unwrap();
    assert_eq!(back, c.to_data());
}
