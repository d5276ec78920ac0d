//! An acknowledged write survives `kill -9`: from the log alone, and from a
//! snapshot plus the compacted log's tail.

use std::collections::BTreeSet;
use std::sync::Arc;

use tribune_tests::{Agent, Client, instance};

const WRITES: usize = 1000;
const WRITERS: usize = 16;

/// Registers WRITES instances from WRITERS concurrent clients; returns the
/// IDs the server acknowledged.
async fn write_all(c: &Client) -> BTreeSet<String> {
    let c = Arc::new(c.clone());
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in (w..WRITES).step_by(WRITERS) {
                let id = format!("svc-{i:04}");
                c.register(instance("durable", &id, 10_000 + i as u32))
                    .await
                    .expect("register");
                acked.push(id);
            }
            acked
        }));
    }
    let mut all = BTreeSet::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all
}

async fn present(c: &Client) -> BTreeSet<String> {
    c.get_service("durable", false)
        .await
        .expect("get service")
        .instances
        .into_iter()
        .map(|i| i.service.unwrap().id)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn acknowledged_writes_survive_kill_9() {
    let mut agent = Agent::start(&[]);
    let acked = write_all(&agent.client().await).await;
    assert_eq!(acked.len(), WRITES);
    agent.kill9();
    agent.restart();
    assert_eq!(present(&agent.client().await).await, acked);
}

#[tokio::test(flavor = "multi_thread")]
async fn acknowledged_writes_survive_kill_9_after_snapshot_and_compaction() {
    let mut agent = Agent::start(&["--snapshot-threshold", "100", "--snapshot-keep-logs", "10"]);
    let acked = write_all(&agent.client().await).await;
    assert!(
        agent.data_dir.join("snapshots/current.snap").exists(),
        "a Raft snapshot should have been taken"
    );
    agent.kill9();
    agent.restart();
    let c = agent.client().await;
    assert_eq!(present(&c).await, acked);

    // The restarted server keeps accepting and keeping writes.
    c.register(instance("durable", "after-restart", 9)).await.unwrap();
    agent.restart();
    assert_eq!(present(&agent.client().await).await.len(), WRITES + 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_stops_the_agent_cleanly_and_keeps_its_state() {
    let mut agent = Agent::start(&[]);
    agent
        .client()
        .await
        .register(instance("web", "web-1", 80))
        .await
        .unwrap();
    let status = agent.terminate();
    assert!(
        status.success(),
        "SIGTERM should end the agent with exit 0, got {status}"
    );
    agent.restart();
    assert_eq!(present_named(&agent.client().await, "web").await, ["web-1"]);
}

async fn present_named(c: &Client, name: &str) -> Vec<String> {
    c.get_service(name, false)
        .await
        .unwrap()
        .instances
        .into_iter()
        .map(|i| i.service.unwrap().id)
        .collect()
}
