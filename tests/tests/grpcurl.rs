//! Stock tools work without the .proto files: grpcurl (1.8.6, reflection
//! v1alpha) lists the services and calls grpc.health.v1.Health/Check.

use std::process::Command;

use tribune_tests::{Agent, instance, tool};

fn grpcurl(args: &[&str]) -> String {
    let out = Command::new(tool("grpcurl"))
        .args(args)
        .output()
        .expect("running grpcurl");
    assert!(
        out.status.success(),
        "grpcurl {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn grpcurl_lists_services_and_checks_health() {
    let agent = Agent::start(&[]);
    let addr = agent.grpc_addr();
    let list = grpcurl(&["-plaintext", &addr, "list"]);
    for s in [
        "tribune.v1.Catalog",
        "tribune.v1.Health",
        "tribune.v1.Operator",
        "grpc.health.v1.Health",
    ] {
        assert!(list.lines().any(|l| l.trim() == s), "{s} not listed:\n{list}");
    }
    let methods = grpcurl(&["-plaintext", &addr, "describe", "tribune.v1.Catalog"]);
    assert!(methods.contains("rpc WatchService"), "{methods}");

    let health = grpcurl(&["-plaintext", "-d", "{}", &addr, "grpc.health.v1.Health/Check"]);
    assert!(health.contains("SERVING"), "{health}");
    let health = grpcurl(&[
        "-plaintext",
        "-d",
        r#"{"service":"tribune.v1.Catalog"}"#,
        &addr,
        "grpc.health.v1.Health/Check",
    ]);
    assert!(health.contains("SERVING"), "{health}");

    // And the API itself, by reflection alone.
    agent
        .client()
        .await
        .register(instance("web", "web-1", 80))
        .await
        .unwrap();
    let got = grpcurl(&[
        "-plaintext",
        "-d",
        r#"{"name":"web"}"#,
        &addr,
        "tribune.v1.Catalog/GetService",
    ]);
    assert!(got.contains("\"id\": \"web-1\""), "{got}");
}
