//! Cluster peering with real processes: two clusters bootstrapped apart
//! (their own trust domains), B's server side on its own loopback address.
//! A token made on B and presented on A; B's exports reach A with their
//! health and leave when unexported or gone; bad tokens are refused,
//! naming what is wrong, and leave nothing behind; B restarted, the stream
//! comes back by itself; a deletion reaches both sides.

use std::process::Output;
use std::time::Duration;

use tribune_tests::mesh::eventually;
use tribune_tests::{Agent, Ports, ok, refused};

/// Where cluster B's servers are reached from A.
const B_IP: &str = "127.0.0.6";

fn start_b(dir: &std::path::Path) -> Agent {
    let ports = Ports::free();
    let server = format!("{B_IP}:{}", ports.server);
    let tls = format!("{B_IP}:{}", ports.grpc_tls);
    let wan = format!("{B_IP}:{}", ports.wan);
    Agent::start_in(
        dir,
        ports,
        &[
            "--server-addr",
            &server,
            "--grpc-tls-addr",
            &tls,
            "--serf-wan-addr",
            &wan,
        ],
    )
}

fn json(o: Output) -> serde_json::Value {
    serde_json::from_str(&ok(o)).expect("JSON")
}

fn state_of(agent: &Agent, name: &str) -> String {
    let o = agent.cli(&["peering", "read", name, "--format", "json"]);
    if !o.status.success() {
        return String::new();
    }
    json(o)["state"].as_str().unwrap_or_default().to_string()
}

fn imported(agent: &Agent, peer: &str) -> serde_json::Value {
    json(agent.cli(&["catalog", "services", "--peer", peer, "--format", "json"]))
}

fn health_of(agent: &Agent, peer: &str, service: &str) -> Vec<String> {
    let o = agent.cli(&["catalog", "service", service, "--peer", peer, "--format", "json"]);
    if !o.status.success() {
        return Vec::new();
    }
    json(o)
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["instances"].as_array().cloned().unwrap_or_default())
        .map(|i| i["health"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[track_caller]
fn wait(what: &str, within: Duration, f: impl FnMut() -> bool) {
    assert!(eventually(within, f).is_some(), "{what}: not within {within:?}");
}

#[test]
fn two_clusters_peer_share_exports_and_part() {
    let dir = tempfile::tempdir().unwrap();
    let a = Agent::start_in(&dir.path().join("a"), Ports::free(), &[]);
    let mut b = start_b(&dir.path().join("b"));

    // Generate on B, establish on A.
    let token = ok(b.cli(&["peering", "generate-token", "--name", "cluster-a"]))
        .trim()
        .to_string();
    let decoded: serde_json::Value = {
        use base64::Engine;
        let bytes = base64::engine::general_purpose::STANDARD.decode(&token).unwrap();
        serde_json::from_slice(&bytes).unwrap()
    };
    let addrs = decoded["server_addresses"].as_array().unwrap();
    assert!(
        addrs
            .iter()
            .all(|a| a.as_str().unwrap().starts_with(&format!("{B_IP}:"))),
        "the token names B's TLS port on {B_IP}: {decoded}"
    );
    assert!(!decoded["ca_pem"].as_array().unwrap().is_empty());
    assert_eq!(state_of(&b, "cluster-a"), "PENDING");
    ok(a.cli(&["peering", "establish", "--name", "cluster-b", "--token", &token]));
    wait("both sides ACTIVE", Duration::from_secs(10), || {
        state_of(&a, "cluster-b") == "ACTIVE" && state_of(&b, "cluster-a") == "ACTIVE"
    });
    let read = json(a.cli(&["peering", "read", "cluster-b", "--format", "json"]));
    assert_eq!(read["role"], "DIALER");
    assert_ne!(
        read["peer_trust_domain"],
        json(a.cli(&["connect", "ca", "roots", "--format", "json"]))["trust_domain"],
        "distinct trust domains"
    );

    // A token works once, and a newer one replaces it.
    refused(
        a.cli(&["peering", "establish", "--name", "again", "--token", &token]),
        "used its token already",
    );
    let old = ok(b.cli(&["peering", "generate-token", "--name", "c2"]))
        .trim()
        .to_string();
    let _new = ok(b.cli(&["peering", "generate-token", "--name", "c2"]));
    refused(
        a.cli(&["peering", "establish", "--name", "c2-peer", "--token", &old]),
        "a newer token replaced it",
    );
    refused(
        a.cli(&["peering", "establish", "--name", "junk", "--token", "not a token"]),
        "token: not base64",
    );
    let unreachable = {
        use base64::Engine;
        let mut d = decoded.clone();
        d["server_addresses"] = serde_json::json!(["127.0.0.9:1"]);
        base64::engine::general_purpose::STANDARD.encode(serde_json::to_vec(&d).unwrap())
    };
    refused(
        a.cli(&["peering", "establish", "--name", "far", "--token", &unreachable]),
        "could not reach the peer's servers named in the token: 127.0.0.9:1",
    );
    for name in ["again", "c2-peer", "junk", "far"] {
        refused(a.cli(&["peering", "read", name]), "no peering");
    }

    // db, exported from B, shows up in A with its health.
    ok(b.cli(&[
        "services",
        "register",
        "--name",
        "db",
        "--id",
        "db-1",
        "--port",
        "5432",
        "--check-ttl",
        "60s",
    ]));
    ok(b.cli(&["check", "pass", "service:db-1"]));
    ok(b.cli(&["services", "export", "db", "--to-peer", "cluster-a"]));
    wait("db imported, passing", Duration::from_secs(10), || {
        health_of(&a, "cluster-b", "db") == ["passing"]
    });
    ok(b.cli(&["check", "fail", "service:db-1"]));
    wait("db's health follows", Duration::from_secs(10), || {
        health_of(&a, "cluster-b", "db") == ["critical"]
    });
    assert!(ok(b.cli(&["services", "exports"])).contains("cluster-a"));
    ok(b.cli(&["services", "unexport", "db", "--to-peer", "cluster-a"]));
    wait("db unexported leaves A", Duration::from_secs(10), || {
        imported(&a, "cluster-b").as_array().is_some_and(|v| v.is_empty())
    });
    ok(b.cli(&["services", "export", "db", "--to-peer", "cluster-a"]));
    wait("db back", Duration::from_secs(10), || {
        health_of(&a, "cluster-b", "db").len() == 1
    });

    // B restarted: the stream comes back by itself; imports stayed.
    b.kill9();
    wait("A sees B down", Duration::from_secs(30), || {
        state_of(&a, "cluster-b") == "FAILING"
    });
    assert_eq!(
        health_of(&a, "cluster-b", "db").len(),
        1,
        "imports stay while B is down"
    );
    b.relaunch();
    b.wait_ready();
    wait("ACTIVE again", Duration::from_secs(20), || {
        state_of(&a, "cluster-b") == "ACTIVE" && state_of(&b, "cluster-a") == "ACTIVE"
    });

    // Its instances gone, db leaves A.
    ok(b.cli(&["services", "deregister", "db-1"]));
    wait("db without instances leaves A", Duration::from_secs(10), || {
        imported(&a, "cluster-b").as_array().is_some_and(|v| v.is_empty())
    });
    ok(b.cli(&[
        "services", "register", "--name", "db", "--id", "db-2", "--port", "5432",
    ]));
    wait("db-2 imported", Duration::from_secs(10), || {
        health_of(&a, "cluster-b", "db").len() == 1
    });

    // Deleted on A: both sides TERMINATED, imports and exports gone.
    ok(a.cli(&["peering", "delete", "cluster-b"]));
    let both = eventually(Duration::from_secs(10), || {
        state_of(&a, "cluster-b") == "TERMINATED" && state_of(&b, "cluster-a") == "TERMINATED"
    });
    assert!(
        both.is_some(),
        "A: {}, B: {}",
        state_of(&a, "cluster-b"),
        state_of(&b, "cluster-a")
    );
    assert!(imported(&a, "cluster-b").as_array().is_some_and(|v| v.is_empty()));
    assert!(!ok(b.cli(&["services", "exports"])).contains("cluster-a"));
    // Deleting again removes the record.
    ok(a.cli(&["peering", "delete", "cluster-b"]));
    refused(a.cli(&["peering", "read", "cluster-b"]), "no peering cluster-b");
}
