//! Cluster peering with real processes: two clusters bootstrapped apart
//! (their own trust domains), B's server side on its own loopback address.
//! A token made on B and presented on A; B's exports reach A with their
//! health and leave when unexported or gone; bad tokens are refused,
//! naming what is wrong, and leave nothing behind; B restarted, the stream
//! comes back by itself; a deletion reaches both sides.

use std::process::Output;
use std::time::Duration;

use tribune_tests::mesh::{Backend, Envoy, RequestLoop, eventually, get};
use tribune_tests::{Agent, Ports, free_port, ok, refused};

/// Where cluster B's servers are reached from A.
const B_IP: &str = "127.0.0.6";

fn start_b(dir: &std::path::Path) -> Agent {
    start_b_with(dir, &[])
}

fn start_b_with(dir: &std::path::Path, extra: &[&str]) -> Agent {
    let ports = Ports::free();
    let server = format!("{B_IP}:{}", ports.server);
    let tls = format!("{B_IP}:{}", ports.grpc_tls);
    let wan = format!("{B_IP}:{}", ports.wan);
    let mut args = vec![
        "--server-addr",
        server.as_str(),
        "--grpc-tls-addr",
        tls.as_str(),
        "--serf-wan-addr",
        wan.as_str(),
    ];
    args.extend_from_slice(extra);
    Agent::start_in(dir, ports, &args)
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

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
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
    let deleted = ok(b.cli(&["peering", "generate-token", "--name", "gone"]))
        .trim()
        .to_string();
    ok(b.cli(&["peering", "delete", "gone"]));
    refused(
        a.cli(&["peering", "establish", "--name", "gone-peer", "--token", &deleted]),
        "peering gone was deleted here",
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
    for name in ["again", "c2-peer", "junk", "far", "gone-peer"] {
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

/// web in A reaches db in B through B's mesh gateway, with mTLS end to end:
/// web trusts B's roots for db only, and db's sidecar accepts A's trust
/// domain for it, while B's default-deny lets web in only by an intention
/// naming it as cluster-a's.
#[test]
fn a_sidecar_reaches_a_peers_service_through_its_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let a = Agent::start_in(&dir.path().join("a"), Ports::free(), &[]);
    let mut b = start_b_with(&dir.path().join("b"), &["--default-intention", "deny"]);
    let token = ok(b.cli(&["peering", "generate-token", "--name", "cluster-a"]))
        .trim()
        .to_string();
    ok(a.cli(&["peering", "establish", "--name", "cluster-b", "--token", &token]));

    // db in B, its sidecar, and B's mesh gateway (its WAN side on B_IP).
    let db = Backend::start("hello from db in B");
    let db_sidecar = free_port();
    ok(b.cli(&[
        "services",
        "register",
        "--name",
        "db",
        "--id",
        "db-1",
        "--address",
        "127.0.0.1",
        "--port",
        &db.port.to_string(),
        "--sidecar-port",
        &db_sidecar.to_string(),
    ]));
    let db_proxy = Envoy::start(&b, "db-1", "delta");
    let (gw_lan, gw_wan) = (free_port(), free_port());
    let gw = Envoy::start_gateway(
        &b,
        "gateway",
        "gw-b",
        &format!("127.0.0.1:{gw_lan}"),
        &format!("{B_IP}:{gw_wan}"),
    );
    ok(b.cli(&["services", "export", "db", "--to-peer", "cluster-a"]));

    // web in A, its upstream db imported from cluster-b.
    let web_backend = Backend::start("hello from web");
    let (web_sidecar, upstream) = (free_port(), free_port());
    ok(a.cli(&[
        "services",
        "register",
        "--name",
        "web",
        "--id",
        "web-1",
        "--address",
        "127.0.0.1",
        "--port",
        &web_backend.port.to_string(),
        "--sidecar-port",
        &web_sidecar.to_string(),
        "--upstream",
        &format!("db:{upstream}@peer:cluster-b"),
    ]));
    let web = Envoy::start(&a, "web-1", "delta");
    let b_td = json(b.cli(&["connect", "ca", "roots", "--format", "json"]))["trust_domain"]
        .as_str()
        .unwrap()
        .to_string();
    let cluster = format!("db.default.cluster-b.external.{b_td}");
    let wan = vec![format!("{B_IP}:{gw_wan}")];
    wait(
        "web's db cluster holds B's gateway",
        Duration::from_secs(30),
        || web.endpoints(&cluster) == wan,
    );

    // Default deny in B: refused until an intention names cluster-a's web.
    let works = || get(upstream).is_ok_and(|b| b == "hello from db in B");
    assert!(
        eventually(Duration::from_secs(3), works).is_none(),
        "B's default deny let web in without an intention"
    );
    ok(b.cli(&[
        "intention",
        "create",
        "--allow",
        "--source-peer",
        "cluster-a",
        "web",
        "db",
    ]));
    assert!(ok(b.cli(&["intention", "list"])).contains("web (peer cluster-a)"));
    assert!(
        eventually(Duration::from_secs(20), works).is_some(),
        "web -> B's gateway -> db never worked\nweb:\n{}\ngateway:\n{}",
        web.log_tail(),
        gw.log_tail()
    );
    // A root rotation in B under a request loop from A: B's new root
    // reaches A's sidecar (its peer trust), db's leaf moves to it, and no
    // request fails.
    let load = RequestLoop::start(upstream, "hello from db in B");
    std::thread::sleep(Duration::from_secs(1));
    ok(b.cli(&["connect", "ca", "rotate"]));
    let roots = json(b.cli(&["connect", "ca", "roots", "--format", "json"]));
    let new_root = roots["roots"]
        .as_array()
        .and_then(|rs| rs.iter().find(|x| x["active"] == true))
        .and_then(|x| x["cert_pem"].as_str())
        .unwrap()
        .to_string();
    // A line of the new root's body, as Envoy's config dump shows it.
    let marker = new_root.lines().nth(2).unwrap().to_string();
    let reached = eventually(Duration::from_secs(30), || {
        web.admin("/config_dump?resource=dynamic_active_secrets")
            .is_some_and(|d| d.contains(&marker))
            && db_proxy
                .leaf_chain_pem("db")
                .is_some_and(|c| tribune_certs::verify_chain(&c, &[], &[&new_root], now()).is_ok())
    });
    std::thread::sleep(Duration::from_secs(2));
    let (served, errors) = load.finish();
    assert!(
        reached.is_some(),
        "B's new root did not reach A's web, or db's leaf did not move"
    );
    assert!(
        errors.is_empty(),
        "{} of {} requests failed during B's rotation: {errors:?}",
        errors.len(),
        served + errors.len() as u64
    );
    assert!(
        served > 50,
        "only {served} requests went through during the rotation"
    );

    // An allow for a local web does not let the peer's web in.
    ok(b.cli(&["intention", "delete", "--source-peer", "cluster-a", "web", "db"]));
    ok(b.cli(&["intention", "create", "--allow", "web", "db"]));
    assert!(
        eventually(Duration::from_secs(20), || get(upstream).is_err()).is_some(),
        "the peer's web still gets in with only a local intention"
    );

    // B's server stopped: A's sidecar and B's proxies keep their last
    // configuration, so web still reaches db; B back, ACTIVE again.
    ok(b.cli(&[
        "intention",
        "create",
        "--allow",
        "--source-peer",
        "cluster-a",
        "web",
        "db",
    ]));
    assert!(eventually(Duration::from_secs(20), works).is_some());
    b.kill9();
    wait("A sees B down", Duration::from_secs(30), || {
        state_of(&a, "cluster-b") == "FAILING"
    });
    for _ in 0..5 {
        assert_eq!(
            get(upstream).as_deref(),
            Ok("hello from db in B"),
            "traffic stops with B's server"
        );
    }
    b.relaunch();
    b.wait_ready();
    wait("ACTIVE again", Duration::from_secs(30), || {
        state_of(&a, "cluster-b") == "ACTIVE"
    });

    // Unexported: the cluster's endpoints go.
    ok(b.cli(&["services", "unexport", "db", "--to-peer", "cluster-a"]));
    wait("db leaves web's config", Duration::from_secs(20), || {
        web.endpoints(&cluster).is_empty()
    });
    // Exported again, then the peering deleted: the upstream cluster is
    // removed from web's Envoy, and B's exports to A are gone.
    ok(b.cli(&["services", "export", "db", "--to-peer", "cluster-a"]));
    let has_cluster = || {
        web.admin("/config_dump?resource=dynamic_active_clusters")
            .is_some_and(|d| d.contains(&cluster))
    };
    wait("db's cluster back", Duration::from_secs(20), has_cluster);
    ok(a.cli(&["peering", "delete", "cluster-b"]));
    wait("db's cluster removed from web", Duration::from_secs(20), || {
        !has_cluster()
    });
    wait("B's exports to A gone", Duration::from_secs(20), || {
        !ok(b.cli(&["services", "exports"])).contains("cluster-a")
    });
}

/// B as three servers: the token names all three, and when B's leader is
/// killed the peering stays (or comes back) ACTIVE by itself, imports stay,
/// and a change in B still reaches A.
#[test]
fn a_three_server_exporter_losing_its_leader_keeps_the_peering() {
    use tribune_tests::cluster::Cluster;

    let dir = tempfile::tempdir().unwrap();
    let a = Agent::start_in(&dir.path().join("a"), Ports::free(), &[]);
    let mut b = Cluster::start(3, &[]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(b.healthy(Duration::from_secs(30)));
    // Every server registers its TLS port; the token names all three.
    let token = eventually(Duration::from_secs(10), || {
        let o = b.servers[0].cli(&[
            "peering",
            "generate-token",
            "--name",
            "cluster-a",
            "--format",
            "json",
        ]);
        o.status.success() && {
            use base64::Engine;
            let t = json(o)["token"].as_str().unwrap_or_default().to_string();
            let d: serde_json::Value = base64::engine::general_purpose::STANDARD
                .decode(&t)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or_default();
            d["server_addresses"].as_array().is_some_and(|a| a.len() == 3)
        }
    });
    assert!(token.is_some(), "the token never named all three servers");
    let token = ok(b.servers[0].cli(&["peering", "generate-token", "--name", "cluster-a"]))
        .trim()
        .to_string();
    ok(a.cli(&["peering", "establish", "--name", "cluster-b", "--token", &token]));
    ok(b.servers[0].cli(&[
        "services", "register", "--name", "db", "--id", "db-1", "--port", "5432",
    ]));
    ok(b.servers[0].cli(&["services", "export", "db", "--to-peer", "cluster-a"]));
    wait("db imported", Duration::from_secs(15), || {
        health_of(&a, "cluster-b", "db").len() == 1
    });

    let leader = rt
        .block_on(b.leader(Duration::from_secs(10)))
        .expect("B has a leader");
    b.servers[leader].kill9();
    assert_eq!(health_of(&a, "cluster-b", "db").len(), 1, "imports stay");
    let survivor = (leader + 1) % 3;
    wait(
        "a change in B reaches A after B's leader died",
        Duration::from_secs(30),
        || {
            b.servers[survivor]
                .cli(&[
                    "services", "register", "--name", "db", "--id", "db-2", "--port", "5433",
                ])
                .status
                .success()
                && health_of(&a, "cluster-b", "db").len() == 2
        },
    );
    wait("ACTIVE", Duration::from_secs(20), || {
        state_of(&a, "cluster-b") == "ACTIVE"
    });
}
