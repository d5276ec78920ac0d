//! Watches: a snapshot first, then each change in order with rising
//! indexes; resuming from an index; resuming after the history is gone.

use std::time::Duration;

use tribune_client::WatchState;
use tribune_tests::{Agent, api, instance};

async fn next(s: &mut tonic::Streaming<api::WatchEvent>) -> api::WatchEvent {
    tokio::time::timeout(Duration::from_secs(10), s.message())
        .await
        .expect("a watch event within 10s")
        .expect("stream ok")
        .expect("stream open")
}

#[tokio::test(flavor = "multi_thread")]
async fn snapshot_then_changes_in_order() {
    let agent = Agent::start(&[]);
    let c = agent.client().await;
    c.register(instance("web", "web-1", 80)).await.unwrap();

    let mut w = c.watch_service("web", 0).await.unwrap();
    let snap = next(&mut w).await;
    assert!(snap.snapshot);
    assert_eq!(snap.upserts.len(), 1);
    let mut state = WatchState::default();
    state.apply(&snap);

    // Changes to other services are not this watcher's business.
    c.register(instance("api", "api-1", 90)).await.unwrap();
    let r2 = c.register(instance("web", "web-2", 81)).await.unwrap();
    let mut ttl = instance("web", "web-1", 80);
    ttl.checks = vec![api::CheckDefinition {
        kind: Some(api::check_definition::Kind::TtlMs(60_000)),
        ..Default::default()
    }];
    let r3 = c.register(ttl).await.unwrap();
    let r4 = c
        .update_ttl("service:web-1", api::HealthStatus::Passing, "ok")
        .await
        .unwrap();
    let r5 = c.deregister("web-2").await.unwrap();

    let mut indexes = vec![snap.index];
    for expected in [r2.index, r3.index, r4.index, r5.index] {
        let ev = next(&mut w).await;
        assert!(!ev.snapshot);
        assert_eq!(ev.index, expected, "one event per change, at the change's index");
        state.apply(&ev);
        indexes.push(ev.index);
    }
    assert!(indexes.windows(2).all(|p| p[0] < p[1]), "{indexes:?}");
    // Folding the events gives what a fresh read gives.
    let fresh = c.get_service("web", false).await.unwrap();
    assert_eq!(
        state.instances.values().cloned().collect::<Vec<_>>(),
        fresh.instances
    );
    assert_eq!(state.instances["web-1"].status, api::HealthStatus::Passing as i32);
}

#[tokio::test(flavor = "multi_thread")]
async fn resume_from_an_index_gets_only_what_changed() {
    let agent = Agent::start(&[]);
    let c = agent.client().await;
    let r1 = c.register(instance("web", "web-1", 80)).await.unwrap();
    let r2 = c.register(instance("web", "web-2", 81)).await.unwrap();
    let r3 = c.register(instance("web", "web-3", 82)).await.unwrap();

    let mut w = c.watch_service("web", r1.index).await.unwrap();
    let a = next(&mut w).await;
    let b = next(&mut w).await;
    assert!(!a.snapshot && !b.snapshot);
    assert_eq!((a.index, b.index), (r2.index, r3.index));
    assert_eq!(a.upserts[0].service.as_ref().unwrap().id, "web-2");

    // Nothing missed, nothing repeated: the next event is the next change.
    let r4 = c.deregister("web-1").await.unwrap();
    let ev = next(&mut w).await;
    assert_eq!(
        (ev.index, ev.removed_ids.clone()),
        (r4.index, vec!["web-1".to_string()])
    );

    // The CLI follows too.
    let mut child = std::process::Command::new(tribune_tests::tribune_bin())
        .args([
            "watch",
            "service",
            "web",
            "--format",
            "json",
            "--grpc-addr",
            &agent.grpc_addr(),
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let first = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).unwrap();
        line
    })
    .await
    .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let ev: serde_json::Value = serde_json::from_str(&first).unwrap();
    assert_eq!(ev["snapshot"], true);
    assert_eq!(ev["upserts"].as_array().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn resume_after_compaction_gets_a_fresh_snapshot() {
    // A tiny history and frequent Raft snapshots: old indexes are gone from both.
    let mut agent = Agent::start(&[
        "--watch-history",
        "8",
        "--snapshot-threshold",
        "10",
        "--snapshot-keep-logs",
        "2",
    ]);
    let c = agent.client().await;
    let first = c.register(instance("web", "web-0", 80)).await.unwrap();
    for i in 1..40 {
        c.register(instance("web", &format!("web-{i}"), 80 + i))
            .await
            .unwrap();
    }
    let mut w = c.watch_service("web", first.index).await.unwrap();
    let ev = next(&mut w).await;
    assert!(
        ev.snapshot,
        "history is compacted: the watcher must get a snapshot"
    );
    assert_eq!(ev.upserts.len(), 40);

    // Across a restart too: the new process has no history older than its snapshot.
    let before = c.get_service("web", false).await.unwrap().index;
    drop(w);
    agent.restart();
    let c = agent.client().await;
    let mut w = c.watch_service("web", first.index).await.unwrap();
    let ev = next(&mut w).await;
    assert!(ev.snapshot);
    assert_eq!(ev.upserts.len(), 40);
    assert!(ev.index >= before);
}
