//! TLS with real processes: a cluster whose servers authenticate each other
//! with certificates from the operator's CA (adopted as the built-in CA),
//! with the plaintext gRPC port off; clients that verify the servers; a
//! process with the wrong certificate (or none) that cannot reach Raft; a
//! client agent that gets its certificate with its agent token, and one
//! without a token that cannot; a real Envoy fed over TLS; and a server
//! certificate renewed before it expires.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use tribune_tests::cluster::Cluster;
use tribune_tests::mesh::{Envoy, eventually};
use tribune_tests::{Agent, ok, refused, stderr, tool, tribune_bin};

/// `tribune ARGS` against `addr`, trusting `ca` when given.
fn cli(addr: &str, ca: Option<&Path>, token: Option<&str>, args: &[&str]) -> Output {
    let mut c = Command::new(tribune_bin());
    c.args(args).args(["--grpc-addr", addr]);
    if let Some(ca) = ca {
        c.arg("--ca-file").arg(ca);
    }
    if let Some(t) = token {
        c.args(["--token", t]);
    }
    c.env_remove("TRIBUNE_GRPC_ADDR").output().expect("tribune CLI")
}

/// grpcurl against a server port, with the server proto files.
fn grpcurl(addr: &str, tls: &[&str], token: Option<&str>, method: &str, body: &str) -> Output {
    let proto = tribune_tests::workspace().join("proto");
    let mut c = Command::new(tool("grpcurl"));
    c.arg("-import-path").arg(&proto);
    c.args([
        "-proto",
        "tribune/server/v1/server.proto",
        "-proto",
        "tribune/v1/connect.proto",
    ]);
    c.args(tls);
    if let Some(t) = token {
        c.args(["-H", &format!("x-tribune-token: {t}")]);
    }
    c.args(["-max-time", "10", "-d", body, addr, method]);
    c.output().expect("grpcurl")
}

fn openssl(args: &[&str]) -> Output {
    let o = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl (install it: apt-get install openssl)");
    assert!(o.status.success(), "openssl {args:?}: {}", stderr(&o));
    o
}

/// The serial of the certificate `addr` presents.
fn presented_serial(addr: &str) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl s_client -connect {addr} -servername localhost </dev/null 2>/dev/null | openssl x509 -noout -serial"
        ))
        .output()
        .expect("openssl");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn wait_log(agent: &Agent, needle: &str, within: Duration) -> bool {
    eventually(within, || agent.log_text().contains(needle)).is_some()
}

#[test]
fn servers_authenticate_each_other_and_clients_verify_them() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(Command::new(tribune_bin())
        .args(["tls", "ca", "create", "--dir"])
        .arg(d)
        .output()
        .unwrap());
    let ca = d.join("tribune-agent-ca.pem");
    let ca_key = d.join("tribune-agent-ca-key.pem");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&ca_key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let other = d.join("other");
    ok(Command::new(tribune_bin())
        .args(["tls", "ca", "create", "--dir"])
        .arg(&other)
        .output()
        .unwrap());

    let mgmt = "6a1e3a3c-4a4e-4c55-9f55-1d1b2b0b9c01";
    let gossip_key = ok(Command::new(tribune_bin()).arg("keygen").output().unwrap())
        .trim()
        .to_string();
    let (ca_s, key_s) = (ca.display().to_string(), ca_key.display().to_string());
    let cluster_result = Cluster::start(
        3,
        &[
            "--tls-ca-file",
            &ca_s,
            "--tls-ca-key-file",
            &key_s,
            "--grpc-addr",
            "",
            "--acl-enabled",
            "--default-policy",
            "deny",
            "--initial-management-token",
            mgmt,
            "--encrypt",
            &gossip_key,
        ],
    );
    let mut cluster = cluster_result;
    // Three servers elected a leader over mutual TLS (checked below: the
    // server port takes nothing else).
    let tls_addr = cluster.servers[0].grpc_tls_addr();
    let plain_addr = cluster.servers[0].grpc_addr();

    // The plaintext port is off; the TLS port answers a client that trusts the CA.
    refused(
        cli(&plain_addr, None, Some(mgmt), &["catalog", "services"]),
        "cannot reach",
    );
    let roots = eventually(Duration::from_secs(20), || {
        cli(
            &tls_addr,
            Some(&ca),
            Some(mgmt),
            &["connect", "ca", "roots", "--format", "json"],
        )
        .status
        .success()
    });
    assert!(
        roots.is_some(),
        "no answer over TLS:\n{}",
        cluster.servers[0].log_tail()
    );
    let roots: serde_json::Value = serde_json::from_str(&ok(cli(
        &tls_addr,
        Some(&ca),
        Some(mgmt),
        &["connect", "ca", "roots", "--format", "json"],
    )))
    .unwrap();
    // The built-in CA is the operator's: one CA for agents and the mesh.
    let ca_pem = std::fs::read_to_string(&ca).unwrap();
    assert_eq!(
        roots["roots"][0]["cert_pem"].as_str().unwrap().trim(),
        ca_pem.trim()
    );

    // Plaintext to the TLS port, and a client trusting another CA: refused.
    refused(
        cli(&tls_addr, None, Some(mgmt), &["catalog", "services"]),
        "--ca-file",
    );
    refused(
        cli(
            &tls_addr,
            Some(&other.join("tribune-agent-ca.pem")),
            Some(mgmt),
            &["catalog", "services"],
        ),
        "invalid peer certificate",
    );
    // The certificate names server.dc1.tribune; another name is refused.
    ok(cli(
        &tls_addr,
        Some(&ca),
        Some(mgmt),
        &["catalog", "services", "--tls-server-name", "server.dc1.tribune"],
    ));
    refused(
        cli(
            &tls_addr,
            Some(&ca),
            Some(mgmt),
            &["catalog", "services", "--tls-server-name", "server.dc9.tribune"],
        ),
        "not valid for name",
    );

    // The server port: no certificate, a service's leaf, a client agent's:
    // none may speak Raft.
    let server_port = format!("127.0.0.1:{}", cluster.servers[0].ports.server);
    let status = "tribune.server.v1.ServerRpc/Status";
    refused(grpcurl(&server_port, &["-plaintext"], None, status, "{}"), "");
    refused(
        grpcurl(&server_port, &["-cacert", &ca_s], None, status, "{}"),
        "takes an agent's certificate",
    );
    let leaf: serde_json::Value = serde_json::from_str(&ok(cli(
        &tls_addr,
        Some(&ca),
        Some(mgmt),
        &["connect", "ca", "sign", "--service", "web", "--format", "json"],
    )))
    .unwrap();
    let (leaf_cert, leaf_key) = (d.join("web.pem"), d.join("web-key.pem"));
    std::fs::write(&leaf_cert, leaf["cert_pem"].as_str().unwrap()).unwrap();
    std::fs::write(&leaf_key, leaf["key_pem"].as_str().unwrap()).unwrap();
    let (lc, lk) = (leaf_cert.display().to_string(), leaf_key.display().to_string());
    let with_leaf = ["-cacert", &ca_s, "-cert", &lc, "-key", &lk];
    refused(
        grpcurl(&server_port, &with_leaf, None, status, "{}"),
        "takes an agent's certificate",
    );
    refused(
        grpcurl(
            &server_port,
            &with_leaf,
            None,
            "tribune.server.v1.ServerRpc/Vote",
            "{}",
        ),
        "takes an agent's certificate",
    );

    // A client agent's certificate, asked for with a CSR and a token that
    // may write the node: good for the API, not for Raft.
    let (csr, key) = (d.join("c9.csr"), d.join("c9-key.pem"));
    openssl(&[
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-subj",
        "/CN=c9",
        "-keyout",
        &key.display().to_string(),
        "-out",
        &csr.display().to_string(),
    ]);
    let body =
        serde_json::json!({ "node": "c9", "csr_pem": std::fs::read_to_string(&csr).unwrap() }).to_string();
    let tls_only = ["-cacert", ca_s.as_str()];
    // Without a token: refused, naming the permission.
    refused(
        grpcurl(
            &server_port,
            &tls_only,
            None,
            "tribune.v1.ConnectCA/SignAgent",
            &body,
        ),
        "node:write on c9",
    );
    let signed = ok(grpcurl(
        &server_port,
        &tls_only,
        Some(mgmt),
        "tribune.v1.ConnectCA/SignAgent",
        &body,
    ));
    let signed: serde_json::Value = serde_json::from_str(&signed).unwrap();
    let agent_cert = d.join("c9.pem");
    std::fs::write(&agent_cert, signed["certPem"].as_str().unwrap()).unwrap();
    let (ac, ak) = (agent_cert.display().to_string(), key.display().to_string());
    let with_agent = ["-cacert", &ca_s, "-cert", &ac, "-key", &ak];
    refused(
        grpcurl(&server_port, &with_agent, None, status, "{}"),
        "needs a server certificate; this one is a client agent's",
    );
    ok(grpcurl(
        &server_port,
        &with_agent,
        Some(mgmt),
        "tribune.v1.ConnectCA/Roots",
        "{}",
    ));

    // A client agent with an agent token gets its certificate and syncs
    // through the server port; one without a token gets none.
    let token: serde_json::Value = serde_json::from_str(&ok(cli(
        &tls_addr,
        Some(&ca),
        Some(mgmt),
        &[
            "acl",
            "token",
            "create",
            "--node-identity",
            "c1:dc1",
            "--format",
            "json",
        ],
    )))
    .unwrap();
    let c1_token = token["secret_id"].as_str().unwrap().to_string();
    let c1 = cluster.start_client(
        "c1",
        &[
            "--tls-ca-file",
            &ca_s,
            "--agent-token",
            &c1_token,
            "--encrypt",
            &gossip_key,
        ],
    );
    assert!(wait_log(
        &c1,
        "auto-encrypt: this agent has a certificate",
        Duration::from_secs(5)
    ));
    ok(Command::new(tribune_bin())
        .args([
            "services", "register", "--name", "api", "--id", "api-1", "--port", "9090",
        ])
        .args(["--grpc-addr", &c1.grpc_addr(), "--token", mgmt])
        .output()
        .unwrap());
    let seen = eventually(Duration::from_secs(10), || {
        ok(cli(&tls_addr, Some(&ca), Some(mgmt), &["catalog", "services"])).contains("api")
    });
    assert!(
        seen.is_some(),
        "api registered through c1 never reached the servers:\n{}",
        c1.log_tail()
    );

    // The keyring reaches every member with the caller's token: servers on
    // their server port (their plaintext port is off), c1 on its own.
    let ring: serde_json::Value = serde_json::from_str(&ok(cli(
        &tls_addr,
        Some(&ca),
        Some(mgmt),
        &["keyring", "--list", "--format", "json"],
    )))
    .unwrap();
    let members = ring["members"].as_array().cloned().unwrap_or_default();
    assert_eq!(members.len(), 4, "{ring}");
    for m in &members {
        assert_eq!(m["ok"], true, "{m}");
        assert_eq!(m["keys"], serde_json::json!([gossip_key]), "{m}");
    }

    let mut c2 = Agent::spawn_client(
        &cluster.data_dir().join("c2"),
        tribune_tests::Ports::free(),
        "c2",
        &[
            "--retry-join",
            &cluster.servers[0].ports.serf_addr(),
            "--tls-ca-file",
            &ca_s,
            "--encrypt",
            &gossip_key,
        ],
        false,
    );
    assert!(
        wait_log(&c2, "node:write on c2", Duration::from_secs(20)),
        "{}",
        c2.log_tail()
    );
    assert!(
        !c2.log_text()
            .contains("auto-encrypt: this agent has a certificate")
    );
    c2.kill9();

    // A server restarted keeps its place: it signs itself a certificate again.
    cluster.servers[1].restart();
    let back = eventually(Duration::from_secs(20), || {
        cli(
            &cluster.servers[1].grpc_tls_addr(),
            Some(&ca),
            Some(mgmt),
            &["operator", "raft", "list-peers"],
        )
        .status
        .success()
    });
    assert!(back.is_some(), "{}", cluster.servers[1].log_tail());
}

#[test]
fn envoy_is_fed_over_tls_and_the_server_certificate_renews() {
    let agent = Agent::start(&["--tls-cert-ttl", "45s"]);
    let dir = tempfile::tempdir().unwrap();
    let roots = agent.cli_json(&["connect", "ca", "roots"]);
    let ca = dir.path().join("ca.pem");
    let pem: String = roots["roots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["cert_pem"].as_str().unwrap().to_string())
        .collect();
    std::fs::write(&ca, pem).unwrap();
    let tls_addr = agent.grpc_tls_addr();
    let first = eventually(Duration::from_secs(10), || {
        !presented_serial(&tls_addr).is_empty()
    });
    assert!(
        first.is_some(),
        "8503 presents no certificate:\n{}",
        agent.log_tail()
    );
    let serial = presented_serial(&tls_addr);

    agent.cli_ok(&[
        "services",
        "register",
        "--name",
        "web",
        "--id",
        "web-1",
        "--port",
        "8080",
        "--sidecar-port",
        &tribune_tests::free_port().to_string(),
    ]);
    let ca_s = ca.display().to_string();
    let envoy = Envoy::start_with(
        &agent,
        &[
            "--sidecar-for",
            "web-1",
            "--grpc-addr",
            &tls_addr,
            "--ca-file",
            &ca_s,
        ],
    );
    let connected = eventually(Duration::from_secs(20), || {
        envoy
            .admin("/stats?filter=control_plane.connected_state")
            .is_some_and(|s| s.contains("control_plane.connected_state: 1"))
            && envoy
                .admin("/listeners")
                .is_some_and(|l| l.contains("public_listener"))
    });
    assert!(
        connected.is_some(),
        "Envoy got no configuration over TLS:\n{}",
        envoy.log_tail()
    );

    // Renewed after two thirds of its 45 s, before it expires.
    let renewed = eventually(Duration::from_secs(60), || {
        let s = presented_serial(&tls_addr);
        !s.is_empty() && s != serial
    });
    assert!(
        renewed.is_some(),
        "the server certificate was not renewed:\n{}",
        agent.log_tail()
    );
    // Envoy's stream is unaffected; new connections verify the new one.
    ok(cli(&tls_addr, Some(&ca), None, &["catalog", "services"]));
}
