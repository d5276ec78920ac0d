//! Mesh traffic between datacenters with real Envoy: dc1 (the primary, on
//! 127.0.0.1) and dc2 (a secondary, everything of it on 127.0.0.2), a mesh
//! gateway in dc1 and two in dc2. `web` in dc1 reaches `api` in dc2 in each
//! gateway mode; the endpoints Envoy holds prove which addresses were used.

use std::path::Path;
use std::time::{Duration, Instant};

use tribune_tests::mesh::{Backend, Envoy, RequestLoop, eventually, get};
use tribune_tests::{Agent, DC2_IP, Ports, free_port, start_dc2};

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Registers web-1 in dc1 with one upstream, api in dc2, in `mode`
/// (the TOML form, with the mode on the upstream).
fn register_web(dc1: &Agent, dir: &Path, backend: u16, sidecar: u16, upstream: u16, mode: &str) {
    let file = dir.join(format!("web-{mode}.toml"));
    std::fs::write(
        &file,
        format!(
            r#"[service]
name = "web"
id = "web-1"
address = "127.0.0.1"
port = {backend}

[service.sidecar]
port = {sidecar}

[[service.sidecar.upstreams]]
destination_name = "api"
local_bind_port = {upstream}
datacenter = "dc2"
mesh_gateway_mode = "{mode}"
"#
        ),
    )
    .unwrap();
    dc1.cli_ok(&["services", "register", file.to_str().unwrap()]);
}

/// The same with flags: the mode for the whole sidecar.
fn register_web_flags(dc1: &Agent, backend: u16, sidecar: u16, upstreams: &[&str], mode: &str) {
    let (backend, sidecar) = (backend.to_string(), sidecar.to_string());
    let mut args = vec![
        "services",
        "register",
        "--name",
        "web",
        "--id",
        "web-1",
        "--address",
        "127.0.0.1",
        "--port",
        &backend,
        "--sidecar-port",
        &sidecar,
        "--mesh-gateway-mode",
        mode,
    ];
    for u in upstreams {
        args.extend(["--upstream", u]);
    }
    dc1.cli_ok(&args);
}

#[test]
fn web_in_dc1_reaches_api_in_dc2_through_mesh_gateways_in_every_mode() {
    let dir = tempfile::tempdir().unwrap();
    let dc1 = Agent::start(&["--datacenter", "dc1"]);
    let p2 = Ports::free();
    let dc2 = start_dc2(
        &dir.path().join("dc2"),
        &p2,
        &format!("127.0.0.1:{}", dc1.ports.wan),
    );

    // dc2's CA follows dc1's: same trust domain, an intermediate signed by
    // dc1's root.
    let roots1 = dc1.cli_json(&["connect", "ca", "roots"]);
    let td = roots1["trust_domain"].as_str().unwrap().to_string();
    let root1 = roots1["roots"][0]["cert_pem"].as_str().unwrap().to_string();
    let intermediate = eventually(Duration::from_secs(20), || {
        let r = dc2.cli_json(&["connect", "ca", "roots"]);
        r["trust_domain"] == td.as_str() && r["intermediate_pem"].as_str().is_some_and(|p| !p.is_empty())
    });
    assert!(
        intermediate.is_some(),
        "dc2 never got an intermediate CA from dc1"
    );
    let status = dc2.cli_json(&["operator", "replication", "status"]);
    let ca_kind = status["kinds"]
        .as_array()
        .and_then(|ks| ks.iter().find(|k| k["kind"] == "ca"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(ca_kind["source_datacenter"], "dc1", "{status}");

    // api in dc2, everything on 127.0.0.2.
    let api_backend = Backend::start("hello from api in dc2");
    let api_sidecar = free_port();
    dc2.cli_ok(&[
        "services",
        "register",
        "--name",
        "api",
        "--id",
        "api-1",
        "--address",
        DC2_IP,
        "--port",
        &api_backend.port.to_string(),
        "--sidecar-port",
        &api_sidecar.to_string(),
    ]);
    let api = Envoy::start(&dc2, "api-1", "delta");

    // Gateways: one in dc1 (LAN and WAN ports apart), two in dc2.
    let (g1_lan, g1_wan) = (free_port(), free_port());
    let gw1 = Envoy::start_gateway(
        &dc1,
        "gateway",
        "gw-1",
        &format!("127.0.0.1:{g1_lan}"),
        &format!("127.0.0.1:{g1_wan}"),
    );
    let (ga_lan, ga_wan, gb_lan, gb_wan) = (free_port(), free_port(), free_port(), free_port());
    let mut gw_a = Envoy::start_gateway(
        &dc2,
        "gateway",
        "gw-a",
        &format!("{DC2_IP}:{ga_lan}"),
        &format!("{DC2_IP}:{ga_wan}"),
    );
    let _gw_b = Envoy::start_gateway(
        &dc2,
        "gateway",
        "gw-b",
        &format!("{DC2_IP}:{gb_lan}"),
        &format!("{DC2_IP}:{gb_wan}"),
    );

    // web in dc1.
    let web_backend = Backend::start("hello from web");
    let (web_sidecar, upstream) = (free_port(), free_port());
    register_web(&dc1, dir.path(), web_backend.port, web_sidecar, upstream, "local");
    let web = Envoy::start(&dc1, "web-1", "delta");
    let cluster = format!("api.default.dc2.internal.{td}");
    let works = || get(upstream).is_ok_and(|b| b == "hello from api in dc2");

    // local: through dc1's gateway (its LAN address), then dc2's.
    let local = vec![format!("127.0.0.1:{g1_lan}")];
    assert!(
        eventually(Duration::from_secs(30), || web.endpoints(&cluster) == local).is_some(),
        "local mode: web's endpoints {:?}, expected dc1's gateway {local:?}",
        web.endpoints(&cluster)
    );
    assert!(
        eventually(Duration::from_secs(15), works).is_some(),
        "local mode: web -> gw-1 -> dc2 gateway -> api never worked\nweb:\n{}\ngw-1:\n{}",
        web.log_tail(),
        gw1.log_tail()
    );

    // remote: straight to dc2's gateways at their WAN addresses.
    register_web_flags(
        &dc1,
        web_backend.port,
        web_sidecar,
        &[&format!("api:{upstream}@dc2")],
        "remote",
    );
    let remote = vec![format!("{DC2_IP}:{ga_wan}"), format!("{DC2_IP}:{gb_wan}")];
    assert!(
        eventually(Duration::from_secs(20), || web.endpoints(&cluster) == remote).is_some(),
        "remote mode: web's endpoints {:?}, expected dc2's gateways' WAN sides {remote:?}",
        web.endpoints(&cluster)
    );
    assert!(
        eventually(Duration::from_secs(15), works).is_some(),
        "remote mode never worked"
    );

    // The gateways route on SNI and never terminate TLS.
    let dump = gw_a
        .admin("/config_dump?resource=dynamic_listeners")
        .unwrap_or_default();
    assert!(
        dump.contains(&format!("*.dc1.internal.{td}")),
        "gw-a has no dc1 chain"
    );
    assert!(
        dump.contains(&format!("*.dc2.internal.{td}")),
        "gw-a has no local chain"
    );
    assert!(
        dump.contains("envoy.filters.network.sni_cluster"),
        "gw-a has no sni_cluster"
    );
    assert!(dump.contains("envoy.filters.listener.tls_inspector"));
    let clusters = gw_a
        .admin("/config_dump?resource=dynamic_active_clusters")
        .unwrap_or_default();
    assert!(
        clusters.contains(&format!("dc1.internal.{td}")),
        "gw-a has no cluster of dc1's gateways"
    );
    for (gw, what, text) in [
        ("gw-a", "listeners", dump),
        ("gw-a", "clusters", clusters),
        (
            "gw-1",
            "listeners",
            gw1.admin("/config_dump?resource=dynamic_listeners")
                .unwrap_or_default(),
        ),
    ] {
        assert!(
            !text.contains("transport_socket"),
            "{gw}'s {what} terminate or originate TLS:\n{text}"
        );
    }

    // The leaf api presents chains to dc1's root through dc2's intermediate,
    // and names api in dc2.
    let chain = api.leaf_chain_pem("api").expect("api's leaf");
    tribune_certs::verify_chain(&chain, &[], &[&root1], now()).expect("api's leaf chains to dc1's root");
    let leaf_only = chain
        .split_inclusive("-----END CERTIFICATE-----\n")
        .next()
        .unwrap_or_default();
    assert!(
        tribune_certs::verify_chain(leaf_only, &[], &[&root1], now()).is_err(),
        "dc2's leaf is signed by its intermediate, not by dc1's root"
    );
    assert_eq!(
        tribune_certs::inspect(&chain).unwrap().uri_sans,
        [format!("spiffe://{td}/ns/default/dc/dc2/svc/api")]
    );

    // A deny written through dc2 lands in dc1 and comes back; api's sidecar
    // enforces it on web's identity, which it saw through two gateways.
    dc2.cli_ok(&["intention", "create", "--deny", "web", "api"]);
    assert!(
        eventually(Duration::from_secs(15), || get(upstream).is_err()).is_some(),
        "the deny never stopped web -> api"
    );
    dc2.cli_ok(&["intention", "create", "--allow", "web", "api"]);
    assert!(
        eventually(Duration::from_secs(15), works).is_some(),
        "allow never restored it"
    );

    // A dead gateway leaves EDS and traffic moves to the other one.
    gw_a.child.kill().unwrap();
    let _ = gw_a.child.wait();
    let only_b = vec![format!("{DC2_IP}:{gb_wan}")];
    assert!(
        eventually(Duration::from_secs(20), || web.endpoints(&cluster) == only_b).is_some(),
        "gw-a never left web's endpoints: {:?}",
        web.endpoints(&cluster)
    );
    let started = Instant::now();
    let ok = (0..20).filter(|_| works()).count();
    assert_eq!(
        ok,
        20,
        "after gw-a left, {ok}/20 requests worked in {:?}",
        started.elapsed()
    );

    // none: straight to api's sidecar in dc2.
    register_web_flags(
        &dc1,
        web_backend.port,
        web_sidecar,
        &[&format!("api:{upstream}@dc2")],
        "none",
    );
    let direct = vec![format!("{DC2_IP}:{api_sidecar}")];
    assert!(
        eventually(Duration::from_secs(20), || web.endpoints(&cluster) == direct).is_some(),
        "none mode: web's endpoints {:?}, expected api's sidecar {direct:?}",
        web.endpoints(&cluster)
    );
    assert!(
        eventually(Duration::from_secs(15), works).is_some(),
        "none mode never worked"
    );

    // An upstream in an unknown datacenter gets an empty cluster, and the
    // other upstreams keep working.
    let stray = free_port();
    register_web_flags(
        &dc1,
        web_backend.port,
        web_sidecar,
        &[&format!("api:{upstream}@dc2"), &format!("db:{stray}@dc9")],
        "none",
    );
    assert!(
        eventually(Duration::from_secs(15), || web
            .admin("/clusters")
            .unwrap_or_default()
            .contains(&format!("db.default.dc9.internal.{td}")))
        .is_some(),
        "the dc9 upstream never got its cluster"
    );
    assert!(web.endpoints(&format!("db.default.dc9.internal.{td}")).is_empty());
    assert!(get(stray).is_err(), "nothing answers for dc9");
    assert!(works(), "api in dc2 still works beside the dc9 upstream");

    // A root rotation in dc1 under a request loop across the datacenters:
    // dc2 follows with a new intermediate, and no request fails.
    let load = RequestLoop::start(upstream, "hello from api in dc2");
    std::thread::sleep(Duration::from_secs(1));
    dc1.cli_ok(&["connect", "ca", "rotate"]);
    let r = dc1.cli_json(&["connect", "ca", "roots"]);
    let root2 = r["roots"]
        .as_array()
        .and_then(|rs| rs.iter().find(|x| x["active"] == true))
        .and_then(|x| x["cert_pem"].as_str())
        .unwrap()
        .to_string();
    let chains_to_new = |e: &Envoy, service: &str| {
        e.leaf_chain_pem(service)
            .is_some_and(|c| tribune_certs::verify_chain(&c, &[], &[&root2], now()).is_ok())
    };
    let moved = eventually(Duration::from_secs(30), || {
        chains_to_new(&web, "web") && chains_to_new(&api, "api")
    });
    std::thread::sleep(Duration::from_secs(2));
    let (ok, errors) = load.finish();
    assert!(
        moved.is_some(),
        "the leaves of both datacenters did not move to the new root"
    );
    assert!(
        errors.is_empty(),
        "{} of {} requests failed during the rotation: {errors:?}",
        errors.len(),
        ok + errors.len() as u64
    );
    assert!(ok > 50, "only {ok} requests went through during the rotation");

    // dc2's server dies: calls for dc2 fail with a clear error, dc1 goes
    // on, and web keeps its last configuration (api's sidecar is alive).
    let mut dc2 = dc2;
    dc2.kill9();
    let failed = eventually(Duration::from_secs(20), || {
        let out = dc1.cli(&["catalog", "services", "--datacenter", "dc2"]);
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("dc2")
    });
    assert!(
        failed.is_some(),
        "calls for dc2 never failed with an error naming it"
    );
    dc1.cli_ok(&["catalog", "services"]);
    assert!(works(), "web -> api stopped when dc2's server died");
    dc2.restart();
    let api2_backend = Backend::start("hello from api in dc2");
    let api2_sidecar = free_port();
    assert!(
        eventually(Duration::from_secs(20), || dc2
            .cli(&[
                "services",
                "register",
                "--name",
                "api",
                "--id",
                "api-2",
                "--address",
                DC2_IP,
                "--port",
                &api2_backend.port.to_string(),
                "--sidecar-port",
                &api2_sidecar.to_string(),
            ])
            .status
            .success())
        .is_some(),
        "dc2 never came back"
    );
    // api-2 has no Envoy yet, but is healthy in the catalog: web sees it.
    let both = {
        let mut v = vec![
            format!("{DC2_IP}:{api_sidecar}"),
            format!("{DC2_IP}:{api2_sidecar}"),
        ];
        v.sort();
        v
    };
    assert!(
        eventually(Duration::from_secs(30), || web.endpoints(&cluster) == both).is_some(),
        "after dc2 came back, web's endpoints are {:?}, expected {both:?}",
        web.endpoints(&cluster)
    );
}
