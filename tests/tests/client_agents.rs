//! Client agents beside three servers: services registered through a
//! client agent, checks run by it, anti-entropy, and node health from
//! gossip: a dead or frozen client agent's instances leave a real Envoy's
//! endpoints within seconds and come back when it does.
//!
//! Each test starts its own datacenter; they run one at a time (six agents
//! and an Envoy are enough for two cores).

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tribune_tests::cluster::Cluster;
use tribune_tests::mesh::{Backend, Envoy, eventually};
use tribune_tests::{Agent, Ports};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Short timings so that failures show within a test's patience.
const CLIENT_FLAGS: &[&str] = &["--anti-entropy-interval", "2s"];

struct Dc {
    cluster: Cluster,
    clients: Vec<Agent>,
}

fn datacenter(server_flags: &[&str]) -> Dc {
    datacenter_with(server_flags, &[])
}

fn datacenter_with(server_flags: &[&str], client_flags: &[&str]) -> Dc {
    let cluster = Cluster::start(3, server_flags);
    let mut flags = CLIENT_FLAGS.to_vec();
    flags.extend_from_slice(client_flags);
    let clients = (0..3)
        .map(|i| cluster.start_client(&format!("c{i}"), &flags))
        .collect();
    Dc { cluster, clients }
}

/// Instance `id` with its checks and status, as the first server sees it
/// (null when absent).
fn instance(server: &Agent, service: &str, id: &str) -> serde_json::Value {
    let v = server.cli_json(&["catalog", "service", service]);
    v["instances"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|i| i["service"]["id"] == id)
        .cloned()
        .unwrap_or_default()
}

/// Whether `node` is in the catalog, as `server` sees it.
fn node_registered(server: &Agent, node: &str) -> bool {
    server
        .cli_json(&["catalog", "nodes"])
        .to_string()
        .contains(&format!("\"{node}\""))
}

/// The aggregate status of instance `id`, as the first server sees it.
fn instance_status(server: &Agent, service: &str, id: &str) -> String {
    instance(server, service, id)["status"]
        .as_str()
        .unwrap_or("absent")
        .to_string()
}

/// `node`'s state in LAN gossip, as `server` sees it.
fn member_state(server: &Agent, node: &str) -> String {
    let v = server.cli_json(&["members"]);
    v["members"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["name"] == node)
        .filter_map(|m| m["state"].as_str())
        // A restarted agent leaves its old identity behind: alive wins.
        .min_by_key(|s| *s != "alive")
        .unwrap_or("absent")
        .to_string()
}

fn signal(agent: &Agent, sig: &str) {
    let pid = agent.pid().expect("agent is running").to_string();
    let ok = Command::new("kill").args([sig, &pid]).status().expect("kill");
    assert!(ok.success(), "kill {sig} {pid}");
}

fn register(agent: &Agent, args: &[&str]) {
    let mut a = vec!["services", "register"];
    a.extend_from_slice(args);
    agent.cli_ok(&a);
}

#[test]
fn a_client_agent_runs_its_services_http_check() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dc = datacenter(&[]);
    let (client, server) = (&dc.clients[0], &dc.cluster.servers[0]);
    let backend = Backend::start("ok");
    let port = backend.port;
    let url = format!("http://127.0.0.1:{port}/health");
    register(
        client,
        &[
            "--name",
            "web",
            "--id",
            "web-1",
            "--port",
            &port.to_string(),
            "--check-http",
            &url,
            "--interval",
            "2s",
        ],
    );
    // Registered on the client agent's node, visible on every server.
    let v = server.cli_json(&["catalog", "service", "web"]);
    assert_eq!(v["instances"][0]["service"]["node"], "c0", "{v}");
    assert!(
        eventually(Duration::from_secs(5), || instance_status(server, "web", "web-1")
            == "passing")
        .is_some(),
        "the check never passed"
    );

    // The backend stops: critical within the 2 s interval (plus up to 1 s
    // for the write and for this poll to see it).
    drop(backend);
    let t = eventually(Duration::from_secs(3), || {
        instance_status(server, "web", "web-1") == "critical"
    });
    assert!(
        t.is_some(),
        "the check did not turn critical within its interval; agent log:\n{}",
        client.log_tail()
    );
    eprintln!("critical {:?} after the backend stopped", t.unwrap_or_default());
    let v = server.cli_json(&["catalog", "service", "web"]);
    let output = v["instances"][0]["checks"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["id"] == "service:web-1")
        .and_then(|c| c["output"].as_str())
        .unwrap_or_default()
        .to_string();
    assert!(
        output.contains(&url),
        "the check's output says what failed: {output:?}"
    );

    // Back on the same port: passing again within the interval.
    let _backend = Backend::start_on(port, "ok");
    assert!(
        eventually(Duration::from_secs(3), || instance_status(server, "web", "web-1")
            == "passing")
        .is_some(),
        "the check did not pass again"
    );
}

#[test]
fn anti_entropy_restores_what_the_servers_lost_and_removes_what_the_agent_does_not_own() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut dc = datacenter(&[]);
    let server = &dc.cluster.servers[0];
    register(
        &dc.clients[1],
        &[
            "--name",
            "api",
            "--id",
            "api-1",
            "--port",
            "9001",
            "--check-ttl",
            "30s",
        ],
    );
    dc.clients[1].cli_ok(&["check", "pass", "service:api-1"]);
    assert_eq!(instance_status(server, "api", "api-1"), "passing");

    // Deregistered behind the agent's back: the agent puts it back.
    server.cli_ok(&["services", "deregister", "api-1"]);
    assert!(
        eventually(Duration::from_secs(8), || instance_status(server, "api", "api-1")
            != "absent")
        .is_some(),
        "anti-entropy did not restore api-1; agent log:\n{}",
        dc.clients[1].log_tail()
    );
    // ... with the status the agent knows, not a fresh critical.
    assert!(
        eventually(Duration::from_secs(8), || instance_status(server, "api", "api-1")
            == "passing")
        .is_some(),
        "anti-entropy did not restore api-1's check result"
    );

    // Nothing changed: rounds (every 2 s here) write nothing.
    let modified = || instance(server, "api", "api-1")["service"]["modify_index"].clone();
    let before = modified();
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        modified(),
        before,
        "anti-entropy rewrote an instance that had not changed"
    );

    // Changed behind the agent's back (same ID, port and check count, but
    // the check probes something else): the agent's copy wins again.
    server.cli_ok(&[
        "services",
        "register",
        "--name",
        "api",
        "--id",
        "api-1",
        "--port",
        "9001",
        "--node",
        "c1",
        "--check-http",
        "http://127.0.0.1:1/",
    ]);
    assert!(
        eventually(Duration::from_secs(8), || {
            let i = instance(server, "api", "api-1");
            i["checks"][0]["definition"]["kind"]["TtlMs"] == 30_000 && i["status"] == "passing"
        })
        .is_some(),
        "anti-entropy kept a check the agent did not register: {}",
        instance(server, "api", "api-1")
    );

    // Registered on c1's node through a server, not through c1: removed.
    assert!(node_registered(server, "c1"));
    server.cli_ok(&[
        "services", "register", "--name", "stray", "--id", "stray-1", "--port", "1", "--node", "c1",
    ]);
    assert!(
        eventually(Duration::from_secs(8), || instance_status(
            server, "stray", "stray-1"
        ) == "absent")
        .is_some(),
        "anti-entropy left an instance c1 does not own"
    );

    // The agent restarts: it still owns api-1 (kept on its disk).
    dc.clients[1].restart();
    server.cli_ok(&["services", "deregister", "api-1"]);
    assert!(
        eventually(Duration::from_secs(8), || instance_status(server, "api", "api-1")
            != "absent")
        .is_some(),
        "a restarted agent forgot its services"
    );

    // A client agent refuses to register on another node.
    let out = dc.clients[1].cli(&[
        "services", "register", "--name", "x", "--port", "1", "--node", "c2",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("node"), "{out:?}");

    // Leaving gracefully deregisters the node and everything on it.
    let status = dc.clients[1].terminate();
    assert!(status.success());
    assert!(
        eventually(Duration::from_secs(5), || !node_registered(server, "c1")).is_some(),
        "a node that left is still registered"
    );
    assert_eq!(instance_status(server, "api", "api-1"), "absent");
}

/// The `api` cluster's endpoints in `envoy`'s EDS.
fn api_endpoints(envoy: &Envoy) -> usize {
    let v = envoy.admin_json("/clusters?format=json");
    v["cluster_statuses"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["name"].as_str().is_some_and(|n| n.starts_with("api.")))
        .map(|c| c["host_statuses"].as_array().map_or(0, |h| h.len()))
        .sum()
}

#[test]
fn a_dead_client_agents_instances_leave_envoy_and_a_frozen_one_comes_back() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut dc = datacenter(&["--reconnect-timeout", "30s"]);
    let web_backend = Backend::start("web");
    // web on c0 with an upstream to api; api on c1 and on c2, each with a sidecar.
    register(
        &dc.clients[0],
        &[
            "--name",
            "web",
            "--id",
            "web-1",
            "--port",
            &web_backend.port.to_string(),
            "--sidecar-port",
            &tribune_tests::free_port().to_string(),
            "--upstream",
            &format!("api:{}", tribune_tests::free_port()),
        ],
    );
    for (i, c) in [(1, &dc.clients[1]), (2, &dc.clients[2])] {
        let backend_port = tribune_tests::free_port().to_string();
        let sidecar_port = tribune_tests::free_port().to_string();
        register(
            c,
            &[
                "--name",
                "api",
                "--id",
                &format!("api-{i}"),
                "--port",
                &backend_port,
                "--sidecar-port",
                &sidecar_port,
            ],
        );
    }
    let server = &dc.cluster.servers[0];
    for id in ["api-1", "api-2"] {
        assert!(
            eventually(Duration::from_secs(5), || instance_status(server, "api", id)
                == "passing")
            .is_some()
        );
    }
    // web's Envoy talks xDS through its own client agent.
    let envoy = Envoy::start(&dc.clients[0], "web-1", "delta");
    assert!(
        eventually(Duration::from_secs(10), || api_endpoints(&envoy) == 2).is_some(),
        "envoy never had both api endpoints"
    );

    // kill -9 of c2: its instance leaves Envoy's EDS within 10 s.
    let killed = Instant::now();
    dc.clients[2].kill9();
    let t = eventually(Duration::from_secs(10), || api_endpoints(&envoy) == 1);
    assert!(
        t.is_some(),
        "api-2 still in envoy's EDS 10 s after its agent died; members: {}",
        server.cli_ok(&["members"])
    );
    eprintln!("a dead agent's endpoint left Envoy after {:?}", killed.elapsed());
    assert_eq!(instance_status(server, "api", "api-2"), "critical");
    // The leader declared it down; this server's own gossip view may trail
    // it by a suspicion timeout.
    assert!(
        eventually(Duration::from_secs(5), || member_state(server, "c2") == "down").is_some(),
        "c2 is {} on {}",
        member_state(server, "c2"),
        server.node
    );

    // SIGSTOP c1: suspect, then down (critical, out of EDS); SIGCONT: alive, passing, back.
    signal(&dc.clients[1], "-STOP");
    let mut seen = Vec::new();
    let frozen = Instant::now();
    while frozen.elapsed() < Duration::from_secs(20) {
        let s = member_state(server, "c1");
        if seen.last() != Some(&s) {
            seen.push(s.clone());
        }
        if s == "down" {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        seen.contains(&"suspect".to_string()),
        "c1 was never suspect: {seen:?}"
    );
    assert_eq!(
        seen.last().map(String::as_str),
        Some("down"),
        "c1 never went down: {seen:?}"
    );
    assert!(eventually(Duration::from_secs(5), || api_endpoints(&envoy) == 0).is_some());
    assert_eq!(instance_status(server, "api", "api-1"), "critical");
    signal(&dc.clients[1], "-CONT");
    assert!(
        eventually(Duration::from_secs(15), || member_state(server, "c1") == "alive").is_some(),
        "c1 did not come back alive; its log:\n{}",
        dc.clients[1].log_tail()
    );
    assert!(
        eventually(Duration::from_secs(10), || instance_status(
            server, "api", "api-1"
        ) == "passing")
        .is_some()
    );
    assert!(
        eventually(Duration::from_secs(10), || api_endpoints(&envoy) == 1).is_some(),
        "api-1 did not come back to envoy"
    );

    // A dead node is deregistered after the reconnect timeout (30 s here).
    assert!(
        eventually(Duration::from_secs(40), || !node_registered(server, "c2")).is_some(),
        "c2 was not deregistered after the reconnect timeout"
    );
}

#[test]
fn a_killed_server_rejoins_gossip_and_raft() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut dc = datacenter(&[]);
    dc.cluster.servers[2].kill9();
    assert!(
        eventually(Duration::from_secs(15), || member_state(
            &dc.cluster.servers[0],
            "s2"
        ) == "down")
        .is_some()
    );
    dc.cluster.servers[2].restart();
    let s0 = &dc.cluster.servers[0];
    assert!(
        eventually(Duration::from_secs(15), || member_state(s0, "s2") == "alive").is_some(),
        "s2 is not alive in gossip after its restart"
    );
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(dc.cluster.healthy(Duration::from_secs(20)));
    // And the client agents still reach the servers through it.
    let v = dc.clients[0].cli_json(&["operator", "raft", "list-peers"]);
    assert_eq!(v["peers"].as_array().map(Vec::len), Some(3), "{v}");

    // A service registered through a server's own API lives on that
    // server's node: a graceful restart of the server (it leaves gossip)
    // must not deregister it.
    register(
        &dc.cluster.servers[1],
        &[
            "--name",
            "db",
            "--id",
            "db-1",
            "--port",
            "5432",
            "--check-ttl",
            "1h",
        ],
    );
    dc.cluster.servers[1].cli_ok(&["check", "pass", "service:db-1"]);
    let status = dc.cluster.servers[1].terminate();
    assert!(status.success());
    assert!(
        eventually(Duration::from_secs(10), || member_state(
            &dc.cluster.servers[0],
            "s1"
        ) == "left")
        .is_some(),
        "s1 did not leave gracefully"
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_ne!(
        instance_status(&dc.cluster.servers[0], "db", "db-1"),
        "absent",
        "a server that left lost its node's services"
    );
    dc.cluster.servers[1].relaunch();
    dc.cluster.servers[1].wait_ready();
    assert!(
        eventually(Duration::from_secs(15), || instance_status(
            &dc.cluster.servers[0],
            "db",
            "db-1"
        ) == "passing")
        .is_some(),
        "db-1 did not pass again once its server was back"
    );
}

fn keygen(agent: &Agent) -> String {
    agent.cli_ok(&["keygen"]).trim().to_string()
}

/// States of `names` in `server`'s view, as a list of (name, state).
fn states(server: &Agent, names: &[String]) -> Vec<(String, String)> {
    names
        .iter()
        .map(|n| (n.clone(), member_state(server, n)))
        .collect()
}

#[test]
fn encrypted_gossip_keeps_keyless_agents_out_and_rotates_without_flapping() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // Any agent prints a key; `keygen` needs none running.
    let k1 = String::from_utf8(
        Command::new(tribune_tests::tribune_bin())
            .arg("keygen")
            .output()
            .expect("keygen")
            .stdout,
    )
    .expect("utf-8")
    .trim()
    .to_string();
    let dc = datacenter_with(&["--encrypt", &k1], &["--encrypt", &k1]);
    let server = &dc.cluster.servers[0];
    let names: Vec<String> = ["s0", "s1", "s2", "c0", "c1", "c2"].map(String::from).to_vec();
    assert!(states(server, &names).iter().all(|(_, s)| s == "alive"));

    // Without the key, or with another: never a member.
    let join = server.ports.serf_addr();
    let base = dc.cluster.data_dir();
    let k_other = keygen(server);
    let _keyless = Agent::spawn_client(
        &base.join("keyless"),
        Ports::free(),
        "keyless",
        &["--retry-join", &join],
        false,
    );
    let _other_key = Agent::spawn_client(
        &base.join("otherkey"),
        Ports::free(),
        "otherkey",
        &["--retry-join", &join, "--encrypt", &k_other],
        false,
    );
    std::thread::sleep(Duration::from_secs(5));
    let members = server.cli_ok(&["members"]);
    assert!(
        !members.contains("keyless") && !members.contains("otherkey"),
        "{members}"
    );
    // Their packets were dropped, and counted.
    let dropped = server.metric("tribune_gossip_dropped_packets_total");
    assert!(dropped > 0.0, "no dropped gossip packets counted");

    // Rotate through a client agent while watching every member's state.
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (stop, names) = (stop.clone(), names.clone());
        let addr = server.grpc_addr();
        std::thread::spawn(move || {
            let mut flaps = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let out = Command::new(tribune_tests::tribune_bin())
                    .args(["members", "--format", "json", "--grpc-addr", &addr])
                    .output()
                    .expect("members");
                let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
                for m in v["members"].as_array().into_iter().flatten() {
                    let name = m["name"].as_str().unwrap_or_default();
                    if names.iter().any(|n| n == name) && m["state"] != "alive" {
                        flaps.push(format!("{name}: {}", m["state"]));
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            flaps
        })
    };
    let k2 = keygen(server);
    let c0 = &dc.clients[0];
    c0.cli_ok(&["keyring", "--install", &k2]);
    std::thread::sleep(Duration::from_secs(2));
    c0.cli_ok(&["keyring", "--use", &k2]);
    std::thread::sleep(Duration::from_secs(2));
    c0.cli_ok(&["keyring", "--remove", &k1]);
    std::thread::sleep(Duration::from_secs(4));
    stop.store(true, Ordering::Relaxed);
    let flaps = watcher.join().expect("watcher");
    assert!(flaps.is_empty(), "members flapped during the rotation: {flaps:?}");

    // Every member now holds the new key only.
    let v = c0.cli_json(&["keyring", "--list"]);
    let members = v["members"].as_array().cloned().unwrap_or_default();
    assert_eq!(members.len(), 6, "{v}");
    for m in &members {
        assert_eq!(m["keys"], serde_json::json!([k2]), "{m}");
    }
    // Removing the key in use is refused, naming why.
    let out = c0.cli(&["keyring", "--remove", &k2]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("primary"),
        "{out:?}"
    );

    // A new agent with the old key stays out; with the new one it joins.
    let _old_key = Agent::spawn_client(
        &base.join("oldkey"),
        Ports::free(),
        "oldkey",
        &["--retry-join", &join, "--encrypt", &k1],
        false,
    );
    let _new_key = Agent::spawn_client(
        &base.join("newkey"),
        Ports::free(),
        "newkey",
        &["--retry-join", &join, "--encrypt", &k2],
        true,
    );
    assert_eq!(member_state(server, "newkey"), "alive");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(member_state(server, "oldkey"), "absent");
}
