//! The mesh with real Envoy: mTLS through two sidecars, intentions,
//! endpoints leaving and coming back, a root rotation under load, and a
//! rejected configuration, in delta and in state-of-the-world mode.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tribune_tests::mesh::{Backend, Envoy, eventually, get};
use tribune_tests::{Agent, free_port};

struct Mesh {
    agent: Agent,
    web: Envoy,
    api: Envoy,
    api_backend: Backend,
    _web_backend: Backend,
    upstream_port: u16,
    api_sidecar_port: u16,
}

fn register_api(agent: &Agent, backend_port: u16, sidecar_port: u16) {
    agent.cli_ok(&[
        "services",
        "register",
        "--name",
        "api",
        "--id",
        "api-1",
        "--address",
        "127.0.0.1",
        "--port",
        &backend_port.to_string(),
        "--check-ttl",
        "10m",
        "--sidecar-port",
        &sidecar_port.to_string(),
    ]);
    agent.cli_ok(&["check", "pass", "service:api-1"]);
}

fn setup(mode: &str) -> Mesh {
    let agent = Agent::start(&[]);
    let web_backend = Backend::start("hello from web");
    let api_backend = Backend::start("hello from api");
    let upstream_port = free_port();
    let api_sidecar_port = free_port();
    agent.cli_ok(&[
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
        &free_port().to_string(),
        "--upstream",
        &format!("api:{upstream_port}"),
    ]);
    register_api(&agent, api_backend.port, api_sidecar_port);
    let web = Envoy::start(&agent, "web-1", mode);
    let api = Envoy::start(&agent, "api-1", mode);
    Mesh {
        agent,
        web,
        api,
        api_backend,
        _web_backend: web_backend,
        upstream_port,
        api_sidecar_port,
    }
}

fn trust_domain(agent: &Agent) -> String {
    agent.cli_json(&["connect", "ca", "roots"])["trust_domain"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Root PEMs: (active, all).
fn roots(agent: &Agent) -> (String, Vec<String>) {
    let r = agent.cli_json(&["connect", "ca", "roots"]);
    let all: Vec<&serde_json::Value> = r["roots"].as_array().unwrap().iter().collect();
    let active = all.iter().find(|x| x["active"] == true).unwrap()["cert_pem"]
        .as_str()
        .unwrap()
        .to_string();
    (
        active,
        all.iter()
            .map(|x| x["cert_pem"].as_str().unwrap().to_string())
            .collect(),
    )
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Envoy's leaf for `service` has the right SPIFFE ID and chains to `root` alone.
fn leaf_chains_to(envoy: &Envoy, service: &str, root: &str) -> bool {
    let Some(chain) = envoy.leaf_chain_pem(service) else {
        return false;
    };
    let info = tribune_certs::inspect(&chain).unwrap();
    info.uri_sans.len() == 1
        && info.uri_sans[0].ends_with(&format!("/svc/{service}"))
        && tribune_certs::verify_chain(&chain, &[], &[root], now()).is_ok()
}

fn works(m: &Mesh) -> bool {
    get(m.upstream_port).is_ok_and(|b| b == "hello from api")
}

fn scenario(mode: &str) {
    let mut m = setup(mode);

    // mTLS through both sidecars.
    assert!(
        eventually(Duration::from_secs(15), || works(&m)).is_some(),
        "web -> api never worked; web envoy:\n{}",
        m.web.log_tail()
    );
    // The public listener takes only mesh mTLS: plain TCP gets no answer.
    assert!(get(m.api_sidecar_port).is_err());

    // Both proxies hold leaves with their SPIFFE IDs, chaining to the active root.
    let td = trust_domain(&m.agent);
    let (root1, _) = roots(&m.agent);
    for (envoy, svc) in [(&m.web, "web"), (&m.api, "api")] {
        let want = format!("spiffe://{td}/ns/default/dc/dc1/svc/{svc}");
        assert!(
            envoy.cert_sans().contains(&want),
            "{svc}: /certs shows {:?}",
            envoy.cert_sans()
        );
        assert!(
            leaf_chains_to(envoy, svc, &root1),
            "{svc}'s leaf does not chain to the root"
        );
    }

    // A deny intention: new connections fail within 2 s; allow again: they work.
    m.agent.cli_ok(&["intention", "create", "--deny", "web", "api"]);
    let t = eventually(Duration::from_secs(2), || get(m.upstream_port).is_err());
    assert!(t.is_some(), "web -> api still works 2s after a deny intention");
    m.agent.cli_ok(&["intention", "create", "--allow", "web", "api"]);
    assert!(
        eventually(Duration::from_secs(2), || works(&m)).is_some(),
        "allow did not restore traffic"
    );

    // api's check goes critical: its endpoint leaves web's EDS; passing: it is back.
    m.agent.cli_ok(&["check", "fail", "service:api-1"]);
    assert!(eventually(Duration::from_secs(5), || get(m.upstream_port).is_err()).is_some());
    m.agent.cli_ok(&["check", "pass", "service:api-1"]);
    assert!(eventually(Duration::from_secs(5), || works(&m)).is_some());

    // api deregistered: gone; registered again: back.
    m.agent.cli_ok(&["services", "deregister", "api-1"]);
    assert!(eventually(Duration::from_secs(5), || get(m.upstream_port).is_err()).is_some());
    register_api(&m.agent, m.api_backend.port, m.api_sidecar_port);
    assert!(
        eventually(Duration::from_secs(15), || works(&m)).is_some(),
        "traffic did not resume after re-registration; api envoy:\n{}",
        m.api.log_tail()
    );

    rotation_under_load(&mut m);
    rejected_config_keeps_the_stream(&m);
}

/// A root rotation under a steady request loop: no failed request, no
/// Envoy restart, and afterwards leaves of the new root.
fn rotation_under_load(m: &mut Mesh) {
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let port = m.upstream_port;
    let load = {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        std::thread::spawn(move || {
            let mut errors = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match get(port) {
                    Ok(b) if b == "hello from api" => ok.fetch_add(1, Ordering::Relaxed),
                    Ok(b) => {
                        errors.push(format!("wrong body {b:?}"));
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                    Err(e) => {
                        errors.push(e);
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
                std::thread::sleep(Duration::from_millis(20));
            }
            errors
        })
    };
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(1));
    m.agent.cli_ok(&["connect", "ca", "rotate"]);
    let (root2, all) = roots(&m.agent);
    assert_eq!(all.len(), 2, "the old root stays trusted during the rotation");
    let moved = eventually(Duration::from_secs(15), || {
        leaf_chains_to(&m.web, "web", &root2) && leaf_chains_to(&m.api, "api", &root2)
    });
    assert!(moved.is_some(), "the leaves did not move to the new root");
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    let errors = load.join().unwrap();
    let elapsed = started.elapsed().as_secs_f64();
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert_eq!(failed, 0, "requests failed during the rotation: {errors:?}");
    assert!(
        ok as f64 / elapsed >= 20.0,
        "only {ok} requests in {elapsed:.1}s: the loop must run at 20/s or more"
    );
    assert!(
        m.web.still_running() && m.api.still_running(),
        "an Envoy restarted"
    );
    // Trusted roots as Envoy shows them: old and new.
    let cas = m.web.admin_json("/certs");
    let serials: Vec<String> = cas["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| c["ca_cert"].as_array().cloned().unwrap_or_default())
        .filter_map(|c| c["serial_number"].as_str().map(String::from))
        .collect();
    let r = m.agent.cli_json(&["connect", "ca", "roots"]);
    for root in r["roots"].as_array().unwrap() {
        assert!(
            serials.contains(&root["serial_hex"].as_str().unwrap().to_string()),
            "{serials:?}"
        );
    }
}

/// A listener Envoy cannot bind is rejected (NACK); the stream goes on, the
/// server shows the rejection, and a fix is accepted.
fn rejected_config_keeps_the_stream(m: &Mesh) {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_port = taken.local_addr().unwrap().port();
    let web_sidecar =
        m.agent.cli_json(&["catalog", "service", "web-sidecar-proxy"])["instances"][0]["service"]["port"]
            .as_u64()
            .unwrap()
            .to_string();
    let register = |extra: &[String]| {
        let mut args: Vec<String> = [
            "services",
            "register",
            "--name",
            "web",
            "--id",
            "web-1",
            "--address",
            "127.0.0.1",
            "--port",
            "1",
            "--sidecar-port",
            &web_sidecar,
            "--upstream",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.push(format!("api:{}", m.upstream_port));
        args.extend(extra.iter().cloned());
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        m.agent.cli_ok(&a);
    };
    register(&["--upstream".into(), format!("db:{taken_port}")]);
    let xds = || -> serde_json::Value {
        let out = std::process::Command::new("curl")
            .args(["-s", &m.agent.http_url("/v1/agent/xds")])
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let lds_nack = || {
        xds()
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["proxy_id"] == "web-1-sidecar-proxy")
            .any(|s| {
                s["types"].as_array().unwrap().iter().any(|t| {
                    t["type"] == "lds" && t["last_nack"].as_str().is_some_and(|e| e.contains("cannot bind"))
                })
            })
    };
    assert!(
        eventually(Duration::from_secs(10), lds_nack).is_some(),
        "the rejection is not shown: {}",
        xds()
    );
    // The stream is intact: traffic still flows, and a fixed config is accepted.
    assert!(works(m));
    drop(taken);
    register(&[]);
    let acked = || {
        xds()
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["proxy_id"] == "web-1-sidecar-proxy")
            .all(|s| {
                s["types"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|t| t["acked"] == true && t["last_nack"].is_null())
            })
    };
    assert!(
        eventually(Duration::from_secs(10), acked).is_some(),
        "the fix was not accepted: {}",
        xds()
    );
    assert!(works(m));
    let metrics = std::process::Command::new("curl")
        .args(["-s", &m.agent.http_url("/metrics")])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&metrics.stdout).contains("tribune_xds_nacks_total{resource_type=\"lds\"}")
    );
}

#[test]
fn mesh_with_envoy_in_delta_mode() {
    scenario("delta");
}

#[test]
fn mesh_with_envoy_in_sotw_mode() {
    scenario("sotw");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_proxy_gets_a_clear_status() {
    use envoy_types::pb::envoy::config::core::v3::Node;
    use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
    use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;

    let agent = Agent::start(&[]);
    let mut ads = AggregatedDiscoveryServiceClient::connect(format!("http://{}", agent.grpc_addr()))
        .await
        .unwrap();
    let req = DiscoveryRequest {
        node: Some(Node {
            id: "nobody-sidecar-proxy".into(),
            ..Default::default()
        }),
        type_url: tribune_xds_cluster_type().into(),
        ..Default::default()
    };
    let mut stream = ads
        .stream_aggregated_resources(futures::stream::iter(vec![req]))
        .await
        .unwrap()
        .into_inner();
    let err = stream.message().await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    assert!(
        err.message().contains("nobody-sidecar-proxy"),
        "{}",
        err.message()
    );
}

fn tribune_xds_cluster_type() -> &'static str {
    "type.googleapis.com/envoy.config.cluster.v3.Cluster"
}
