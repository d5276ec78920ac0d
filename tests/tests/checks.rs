//! Health checks run by the agent that owns the service: HTTP, TCP, gRPC
//! and TTL expiry, each turning passing and critical as its target does.

use std::time::Duration;

use tribune_tests::mesh::{Backend, eventually};
use tribune_tests::{Agent, free_port};

fn status(agent: &Agent, service: &str) -> String {
    let v = agent.cli_json(&["catalog", "service", service]);
    v["instances"][0]["status"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn http_and_tcp_checks_follow_their_backend() {
    let agent = Agent::start(&[]);
    let backend = Backend::start("ok");
    let port = backend.port.to_string();
    agent.cli_ok(&[
        "services",
        "register",
        "--name",
        "web",
        "--port",
        &port,
        "--check-http",
        &format!("http://127.0.0.1:{port}/health"),
        "--interval",
        "1s",
        "--timeout",
        "1s",
    ]);
    agent.cli_ok(&[
        "services",
        "register",
        "--name",
        "db",
        "--port",
        &port,
        "--check-tcp",
        &format!("127.0.0.1:{port}"),
        "--interval",
        "1s",
        "--timeout",
        "1s",
    ]);
    // A new check starts critical and passes once its target answers.
    assert!(eventually(Duration::from_secs(5), || status(&agent, "web") == "passing").is_some());
    assert!(eventually(Duration::from_secs(5), || status(&agent, "db") == "passing").is_some());
    let out = agent.cli_json(&["catalog", "service", "web"]);
    assert!(
        out["instances"][0]["checks"][0]["output"]
            .as_str()
            .unwrap()
            .contains("200 OK")
    );

    // Stop the backend: both turn critical within their interval (and timeout).
    drop(backend);
    assert!(eventually(Duration::from_secs(5), || status(&agent, "web") == "critical").is_some());
    assert!(eventually(Duration::from_secs(5), || status(&agent, "db") == "critical").is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_checks_use_grpc_health_v1() {
    let agent = Agent::start(&[]);
    // The agent's own gRPC port serves grpc.health.v1.
    agent.cli_ok(&[
        "services",
        "register",
        "--name",
        "rpc",
        "--port",
        "1",
        "--check-grpc",
        &agent.grpc_addr(),
        "--interval",
        "1s",
    ]);
    assert!(eventually(Duration::from_secs(5), || status(&agent, "rpc") == "passing").is_some());
    let nobody = format!("127.0.0.1:{}", free_port());
    agent.cli_ok(&[
        "services",
        "register",
        "--name",
        "rpc2",
        "--port",
        "1",
        "--check-grpc",
        &nobody,
        "--interval",
        "1s",
        "--timeout",
        "1s",
    ]);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(status(&agent, "rpc2"), "critical");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_ttl_check_expires_unless_updated() {
    let agent = Agent::start(&[]);
    agent.cli_ok(&[
        "services",
        "register",
        "--name",
        "batch",
        "--port",
        "1",
        "--check-ttl",
        "2s",
    ]);
    agent.cli_ok(&["check", "pass", "service:batch", "--note", "still here"]);
    assert_eq!(status(&agent, "batch"), "passing");
    // Kept alive by updates, identical ones too, for longer than the TTL...
    for _ in 0..4 {
        std::thread::sleep(Duration::from_secs(1));
        agent.cli_ok(&["check", "pass", "service:batch", "--note", "still here"]);
    }
    assert_eq!(status(&agent, "batch"), "passing");
    // ...and critical once they stop.
    assert!(eventually(Duration::from_secs(6), || status(&agent, "batch") == "critical").is_some());
    let out = agent.cli_json(&["catalog", "service", "batch"]);
    assert_eq!(out["instances"][0]["checks"][0]["output"], "TTL expired");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_check_that_fails_from_the_start_says_why() {
    let agent = Agent::start(&[]);
    let closed = free_port();
    agent.cli_ok(&[
        "services",
        "register",
        "--name",
        "down",
        "--port",
        "1",
        "--check-tcp",
        &format!("127.0.0.1:{closed}"),
        "--interval",
        "1s",
    ]);
    // Registered critical and still critical: no status change, but the
    // first result's output is recorded.
    let output = || {
        let v = agent.cli_json(&["catalog", "service", "down"]);
        v["instances"][0]["checks"][0]["output"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    assert!(
        eventually(Duration::from_secs(5), || output().contains("TCP connect")).is_some(),
        "no output recorded: {:?}",
        output()
    );
    assert_eq!(status(&agent, "down"), "critical");
}
