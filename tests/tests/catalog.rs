//! Register, list, get and deregister through the CLI and the Rust client.

use tribune_tests::{Agent, api, instance};

#[tokio::test(flavor = "multi_thread")]
async fn register_list_get_deregister_through_the_cli() {
    let agent = Agent::start(&[]);
    let out = agent.cli_ok(&[
        "services",
        "register",
        "--name",
        "web",
        "--id",
        "web-1",
        "--address",
        "127.0.0.1",
        "--port",
        "8080",
        "--tag",
        "v1",
        "--meta",
        "version=1",
        "--check-ttl",
        "30s",
        "--sidecar-port",
        "21000",
        "--upstream",
        "api:9191",
    ]);
    assert!(
        out.contains("Registered web-1 with sidecar web-1-sidecar-proxy"),
        "{out}"
    );
    agent.cli_ok(&[
        "services", "register", "--name", "web", "--id", "web-2", "--port", "8081",
    ]);

    let services = agent.cli_json(&["catalog", "services"]);
    let names: Vec<&str> = services["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["web", "web-sidecar-proxy"]);
    assert_eq!(services["services"][0]["instances"], 2);

    let nodes = agent.cli_json(&["catalog", "nodes"]);
    assert_eq!(nodes["nodes"][0]["name"], "node-1");

    // A TTL check starts critical, as in Consul; --passing leaves it out.
    let web = agent.cli_json(&["catalog", "service", "web"]);
    assert_eq!(web["instances"].as_array().unwrap().len(), 2);
    let passing = agent.cli_json(&["catalog", "service", "web", "--passing"]);
    let ids: Vec<&str> = passing["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["service"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["web-2"]);

    let out = agent.cli_ok(&["check", "pass", "service:web-1", "--note", "all good"]);
    assert!(out.contains("passing"), "{out}");
    let passing = agent.cli_json(&["catalog", "service", "web", "--passing"]);
    assert_eq!(passing["instances"].as_array().unwrap().len(), 2);
    let w1 = &passing["instances"][0];
    assert_eq!(w1["checks"][0]["output"], "all good");
    assert_eq!(w1["status"], "passing");

    // The sidecar carries its proxy configuration.
    let sc = agent.cli_json(&["catalog", "service", "web-sidecar-proxy"]);
    let proxy = &sc["instances"][0]["service"]["proxy"];
    assert_eq!(proxy["destination_service_id"], "web-1");
    assert_eq!(proxy["upstreams"][0]["destination_name"], "api");
    assert_eq!(proxy["upstreams"][0]["local_bind_port"], 9191);

    // The table form is for people, but it must show the instances.
    let table = agent.cli_ok(&["catalog", "service", "web"]);
    assert!(
        table.contains("web-1") && table.contains("127.0.0.1:8080"),
        "{table}"
    );

    let out = agent.cli_ok(&["services", "deregister", "web-1"]);
    assert!(out.contains("web-1, web-1-sidecar-proxy"), "{out}");
    let services = agent.cli_json(&["catalog", "services"]);
    assert_eq!(services["services"].as_array().unwrap().len(), 1);

    let out = agent.cli(&["services", "deregister", "web-1"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));
}

#[tokio::test(flavor = "multi_thread")]
async fn register_from_a_toml_file() {
    let agent = Agent::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("api.toml");
    std::fs::write(
        &file,
        r#"
[service]
name = "api"
id = "api-1"
port = 9090
tags = ["blue"]
meta = { team = "core" }

[[service.checks]]
ttl = "1m"

[service.sidecar]
port = 21001
upstreams = [{ destination_name = "db", local_bind_port = 5432 }]
"#,
    )
    .unwrap();
    agent.cli_ok(&["services", "register", file.to_str().unwrap()]);
    let api = agent.cli_json(&["catalog", "service", "api"]);
    let inst = &api["instances"][0];
    assert_eq!(inst["service"]["meta"]["team"], "core");
    assert_eq!(inst["checks"][0]["definition"]["kind"]["TtlMs"], 60000);
    let sc = agent.cli_json(&["catalog", "service", "api-sidecar-proxy"]);
    assert_eq!(sc["instances"][0]["service"]["port"], 21001);

    std::fs::write(&file, "[service]\nname = \"api\"\nprot = 1\n").unwrap();
    let out = agent.cli(&["services", "register", file.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("prot"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_rust_client_round_trip() {
    let agent = Agent::start(&[]);
    let c = agent.client().await;
    let r1 = c.register(instance("db", "db-1", 5432)).await.unwrap();
    let r2 = c.register(instance("db", "db-2", 5433)).await.unwrap();
    assert!(r2.index > r1.index);

    // Re-registering an ID updates it in place.
    let mut upd = instance("db", "db-1", 6432);
    upd.service.as_mut().unwrap().tags = vec!["primary".into()];
    c.register(upd).await.unwrap();
    let got = c.get_service("db", false).await.unwrap();
    assert_eq!(got.instances.len(), 2);
    let db1 = got
        .instances
        .iter()
        .map(|i| i.service.clone().unwrap())
        .find(|s| s.id == "db-1")
        .unwrap();
    assert_eq!(
        (db1.port, db1.tags.clone(), db1.create_index),
        (6432, vec!["primary".to_string()], r1.index)
    );
    assert!(db1.modify_index > r2.index);

    let d = c.deregister("db-2").await.unwrap();
    assert_eq!(d.removed_ids, ["db-2"]);
    let err = c.deregister("db-2").await.unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::NotFound));
    assert_eq!(c.get_service("db", false).await.unwrap().instances.len(), 1);

    let err = c
        .update_ttl("no-such-check", api::HealthStatus::Passing, "")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::NotFound));

    let peers = c.raft_peers().await.unwrap();
    assert_eq!(peers.peers.len(), 1);
    assert!(peers.peers[0].leader && peers.peers[0].voter);
}

#[tokio::test(flavor = "multi_thread")]
async fn http_status_endpoints() {
    let agent = Agent::start(&[]);
    let get = |path: &str| {
        let out = std::process::Command::new("curl")
            .args(["-s", "-w", "\n%{http_code}", &agent.http_url(path)])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let leader = get("/v1/status/leader");
    assert!(
        leader.starts_with(&format!("\"127.0.0.1:{}\"", agent.ports.server)),
        "{leader}"
    );
    assert!(get("/healthz").ends_with("200"));
    let me = get("/v1/agent/self");
    assert!(me.contains("\"NodeName\":\"node-1\""), "{me}");
    agent.cli_ok(&["services", "register", "--name", "web", "--port", "80"]);
    let metrics = get("/metrics");
    for m in [
        "tribune_raft_commit_seconds",
        "tribune_raft_applied_index",
        "tribune_grpc_requests_total",
        "tribune_watches_open",
    ] {
        assert!(metrics.contains(m), "{m} missing from /metrics");
    }
    assert!(metrics.contains("method=\"Register\",code=\"OK\""), "{metrics}");
}
