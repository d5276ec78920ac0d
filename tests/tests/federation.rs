//! Several datacenters with real processes: dc1 (3 servers, WAN side on
//! 127.0.0.1) and dc2 (1 server, its server RPC and WAN sides on
//! 127.0.0.2) federate over WAN gossip; requests for dc2 sent to dc1 are
//! forwarded to dc2's server.

use std::time::{Duration, Instant};

use tribune_tests::cluster::Cluster;
use tribune_tests::{Agent, Client, DC2_IP, Ports, instance, start_dc2};

/// Waits for `f` to hold, polling; panics with `what` after `limit`.
async fn until<F, Fut>(limit: Duration, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !f().await {
        assert!(started.elapsed() < limit, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn wan_members(agent: &Agent) -> Vec<(String, String, String)> {
    let v = agent.cli_json(&["members", "--wan"]);
    v["members"]
        .as_array()
        .map(|ms| {
            ms.iter()
                .map(|m| {
                    let s = |k: &str| m[k].as_str().unwrap_or_default().to_string();
                    (s("name"), s("address"), s("state"))
                })
                .collect()
        })
        .unwrap_or_default()
}

async fn service_ids(c: &Client, name: &str) -> Vec<String> {
    match c.get_service(name, false).await {
        Ok(r) => r
            .instances
            .into_iter()
            .filter_map(|i| i.service)
            .map(|s| s.id)
            .collect(),
        Err(_) => Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_datacenters_federate_and_forward_requests() {
    let dc1 = Cluster::start(3, &[]);
    let dir = tempfile::tempdir().unwrap();
    let dc2_ports = Ports::free();
    let join = format!("127.0.0.1:{}", dc1.servers[0].ports.wan);
    let mut dc2 = start_dc2(&dir.path().join("d2s0"), &dc2_ports, &join);

    // Every server of both datacenters in the WAN pool, named node.dc,
    // dc2's at its own loopback address.
    let s0 = &dc1.servers[0];
    until(
        Duration::from_secs(30),
        "members --wan shows all four servers alive",
        || async {
            let m = wan_members(s0);
            m.len() == 4 && m.iter().all(|(_, _, state)| state == "alive")
        },
    )
    .await;
    let names: Vec<String> = wan_members(s0).into_iter().map(|(n, _, _)| n).collect();
    for want in ["s0.dc1", "s1.dc1", "s2.dc1", "d2s0.dc2"] {
        assert!(names.contains(&want.to_string()), "{want} missing from {names:?}");
    }
    let d2 = wan_members(s0)
        .into_iter()
        .find(|(n, _, _)| n == "d2s0.dc2")
        .unwrap();
    assert_eq!(d2.1, format!("{DC2_IP}:{}", dc2_ports.wan), "dc2's WAN address");
    // The WAN pool's traffic is counted, apart from the LAN pool's.
    let wan_sent = s0.metric("tribune_gossip_bytes_total{pool=\"wan\",direction=\"sent\"}");
    assert!(wan_sent > 0.0, "no WAN gossip bytes counted");

    // Every dc1 server learns of dc2, not only the one it joined through.
    let s2 = &dc1.servers[2];
    until(
        Duration::from_secs(30),
        "the last dc1 server knows dc2",
        || async { wan_members(s2).iter().any(|(n, _, _)| n == "d2s0.dc2") },
    )
    .await;
    assert_eq!(
        s2.cli_ok(&["catalog", "datacenters"]).lines().collect::<Vec<_>>(),
        ["dc1", "dc2"]
    );
    assert_eq!(
        dc2.cli_ok(&["catalog", "datacenters"]).lines().next(),
        Some("dc2")
    );

    // A registration sent to dc1 for dc2 lands in dc2, and only there.
    let via_dc1 = dc1.client().await.datacenter("dc2").unwrap();
    via_dc1
        .register(instance("api", "api-1", 9090))
        .await
        .expect("register in dc2 through dc1");
    let dc2_local = dc2.client().await;
    assert_eq!(service_ids(&dc2_local, "api").await, ["api-1"]);
    assert!(
        service_ids(&dc1.client().await, "api").await.is_empty(),
        "api must not be in dc1"
    );
    let services = s2.cli_ok(&["catalog", "services", "--datacenter", "dc2"]);
    assert!(
        services.contains("api"),
        "catalog services --datacenter dc2 from dc1: {services}"
    );

    // A watch on dc2 streams through a dc1 server: the snapshot, then a
    // change made in dc2.
    let mut watch = via_dc1
        .watch_service("api", 0)
        .await
        .expect("watch dc2 through dc1");
    let first = tokio::time::timeout(Duration::from_secs(10), watch.message())
        .await
        .expect("the watch's snapshot")
        .expect("stream")
        .expect("an event");
    assert!(format!("{first:?}").contains("api-1"), "{first:?}");
    dc2_local.register(instance("api", "api-2", 9091)).await.unwrap();
    let mut saw_api_2 = false;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !saw_api_2 && Instant::now() < deadline {
        if let Ok(Ok(Some(ev))) = tokio::time::timeout(Duration::from_secs(10), watch.message()).await {
            saw_api_2 = format!("{ev:?}").contains("api-2");
        }
    }
    assert!(
        saw_api_2,
        "the watch through dc1 did not see api-2 registered in dc2"
    );

    // Intentions belong to the primary: one written through dc2 lands in
    // dc1 and comes back to dc2 as a copy.
    dc2.cli_ok(&["intention", "create", "--deny", "web", "api"]);
    dc2.cli_ok(&["intention", "create", "--deny", "ops", "api"]);
    assert_eq!(
        denied(s0, "web", "api"),
        Some(true),
        "the primary holds the intention"
    );
    until(
        Duration::from_secs(20),
        "dc2's copy denies web -> api",
        || async { denied(&dc2, "web", "api") == Some(true) && denied(&dc2, "ops", "api") == Some(true) },
    )
    .await;
    let status = dc2.cli_json(&["operator", "replication", "status"]);
    let kind = &status["kinds"][0];
    assert_eq!(kind["kind"], "intentions", "{status}");
    assert_eq!(kind["enabled"], true, "{status}");
    assert!(kind["index"].as_u64().unwrap_or(0) > 0, "{status}");
    assert!(kind["seconds_since_success"].as_f64().is_some(), "{status}");
    let primary_status = s0.cli_json(&["operator", "replication", "status"]);
    assert_eq!(primary_status["kinds"][0]["enabled"], false, "{primary_status}");
    dc2.cli_ok(&["intention", "create", "--allow", "web", "api"]);
    until(
        Duration::from_secs(20),
        "dc2's copy allows web -> api again",
        || async { denied(&dc2, "web", "api") == Some(false) },
    )
    .await;
    assert_eq!(denied(s0, "web", "api"), Some(false));

    // An unknown datacenter is NOT_FOUND, naming it.
    let out = s0.cli(&["catalog", "services", "--datacenter", "dc9"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no path to datacenter dc9"), "{err}");

    // dc2's server dies: calls for dc2 fail with an error naming dc2, dc1
    // goes on serving its own catalog.
    dc2.kill9();
    let err = via_dc1.list_services().await.expect_err("dc2 is down");
    let msg = err.to_string();
    assert!(msg.contains("datacenter dc2"), "{msg}");
    let dc1_client = dc1.client().await;
    dc1_client
        .register(instance("web", "web-1", 8080))
        .await
        .expect("dc1 still takes writes");
    assert_eq!(service_ids(&dc1_client, "web").await, ["web-1"]);

    // dc2 back: forwarding works again, and dc2 kept what it had.
    dc2.restart();
    until(
        Duration::from_secs(60),
        "dc2 answers through dc1 again",
        || async { service_ids(&via_dc1, "api").await.len() == 2 },
    )
    .await;

    // The primary gone altogether: dc2 keeps its last copy, and says why
    // it is not refreshed.
    let mut dc1 = dc1;
    for s in &mut dc1.servers {
        s.kill9();
    }
    until(
        Duration::from_secs(20),
        "dc2 reports the primary unreachable",
        || async {
            let status = dc2.cli_json(&["operator", "replication", "status"]);
            status["kinds"][0]["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("dc1"))
        },
    )
    .await;
    assert_eq!(denied(&dc2, "ops", "api"), Some(true), "the copy is kept");
    assert_eq!(denied(&dc2, "web", "api"), Some(false), "the copy is kept");
}

/// `intention check SRC DST` on `agent`: Some(true) when denied (exit 2),
/// Some(false) when allowed, None on any other failure.
fn denied(agent: &Agent, src: &str, dst: &str) -> Option<bool> {
    let out = agent.cli(&["intention", "check", src, dst]);
    match out.status.code() {
        Some(0) => Some(false),
        Some(2) => Some(true),
        _ => None,
    }
}
