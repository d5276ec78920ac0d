//! Access control with real processes: a server with ACLs on and default
//! deny, bootstrapped once; a service-identity token may register its
//! service and nothing else; reads are filtered; missing and unknown tokens
//! are told apart from missing permissions, and the messages name them.

use std::os::unix::fs::PermissionsExt;
use std::process::Output;

use tribune_tests::{Agent, ok, refused, stderr};

fn with_token(agent: &Agent, token: &str, args: &[&str]) -> Output {
    let mut a = args.to_vec();
    a.extend(["--token", token]);
    agent.cli(&a)
}

fn json(o: Output) -> serde_json::Value {
    serde_json::from_str(&ok(o)).expect("JSON")
}

fn register<'a>(name: &'a str, id: &'a str) -> Vec<&'a str> {
    vec![
        "services", "register", "--name", name, "--id", id, "--port", "8080",
    ]
}

#[test]
fn tokens_and_policies_decide_every_call() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(&["--acl-enabled", "--default-policy", "deny"]);

    // Bootstrap once; the second time says how to reset.
    let boot = agent.cli_json(&["acl", "bootstrap"]);
    let root = boot["secret_id"].as_str().unwrap().to_string();
    assert!(!boot["accessor_id"].as_str().unwrap().is_empty());
    refused(agent.cli(&["acl", "bootstrap"]), "acl-bootstrap-reset");

    // No token: UNAUTHENTICATED, naming what the call needs.
    refused(
        agent.cli(&register("web", "web-1")),
        "needs a token with service:write on web",
    );
    refused(agent.cli(&["connect", "ca", "rotate"]), "operator:write");
    // An unknown token is not a missing permission.
    refused(
        with_token(&agent, "not-a-token", &["catalog", "services"]),
        "not known",
    );

    // A rule that does not parse is refused with its line and column.
    refused(
        with_token(
            &agent,
            &root,
            &[
                "acl",
                "policy",
                "create",
                "--name",
                "bad",
                "--rules",
                "service \"web\" {\n  policy = \n}",
            ],
        ),
        "line 2",
    );
    let rules = dir.path().join("web-read.hcl");
    std::fs::write(&rules, "service \"web\" { policy = \"read\" }\n").unwrap();
    let rules_arg = format!("@{}", rules.display());
    ok(with_token(
        &agent,
        &root,
        &[
            "acl", "policy", "create", "--name", "web-read", "--rules", &rules_arg,
        ],
    ));

    let web = json(with_token(
        &agent,
        &root,
        &[
            "acl",
            "token",
            "create",
            "--service-identity",
            "web",
            "--format",
            "json",
        ],
    ));
    let (web_secret, web_accessor) = (
        web["secret_id"].as_str().unwrap().to_string(),
        web["accessor_id"].as_str().unwrap().to_string(),
    );
    let reader = json(with_token(
        &agent,
        &root,
        &[
            "acl",
            "token",
            "create",
            "--policy-name",
            "web-read",
            "--format",
            "json",
        ],
    ))["secret_id"]
        .as_str()
        .unwrap()
        .to_string();
    // Secrets are shown once: never in a read or a list.
    let read = json(with_token(
        &agent,
        &root,
        &["acl", "token", "read", &web_accessor, "--format", "json"],
    ));
    assert_eq!(read["secret_id"].as_str().unwrap_or(""), "");
    assert!(!ok(with_token(&agent, &root, &["acl", "token", "list"])).contains(&web_secret));
    assert_eq!(
        json(with_token(
            &agent,
            &web_secret,
            &["acl", "whoami", "--format", "json"]
        ))["accessor_id"],
        web_accessor.as_str()
    );

    // The service identity writes web (and its sidecar), nothing else.
    let mut web_with_sidecar = register("web", "web-1");
    web_with_sidecar.extend(["--sidecar-port", "21000"]);
    ok(with_token(&agent, &web_secret, &web_with_sidecar));
    refused(
        with_token(&agent, &web_secret, &register("api", "api-1")),
        &format!("token {web_accessor} lacks service:write on api"),
    );
    refused(
        with_token(
            &agent,
            &web_secret,
            &["connect", "ca", "sign", "--service", "payments"],
        ),
        "service:write on payments",
    );
    ok(with_token(
        &agent,
        &web_secret,
        &["connect", "ca", "sign", "--service", "web"],
    ));
    refused(
        with_token(
            &agent,
            &web_secret,
            &["intention", "create", "--deny", "api", "web"],
        ),
        "intention:write on web",
    );
    ok(with_token(&agent, &root, &register("api", "api-1")));
    refused(
        with_token(&agent, &web_secret, &["services", "deregister", "api-1"]),
        "service:write on api",
    );

    // Reads are filtered, not refused: the reader sees web, never api.
    let names = |secret: &str| -> Vec<String> {
        json(with_token(
            &agent,
            secret,
            &["catalog", "services", "--format", "json"],
        ))["services"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(names(&reader), ["web"]);
    assert!(names(&root).contains(&"api".to_string()));
    assert!(
        json(agent.cli(&["catalog", "services", "--format", "json"]))["services"]
            .as_array()
            .is_none_or(|a| a.is_empty()),
        "the anonymous token reads nothing under default deny"
    );
    refused(
        with_token(&agent, &reader, &["watch", "service", "api"]),
        "service:read on api",
    );

    // Backups carry secrets and CA keys: acl:write, and a 0600 file.
    let file = dir.path().join("backup.snap");
    let file_arg = file.to_str().unwrap();
    refused(
        with_token(&agent, &web_secret, &["snapshot", "save", file_arg]),
        "acl:write",
    );
    ok(with_token(&agent, &root, &["snapshot", "save", file_arg]));
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the backup is readable by others: {mode:o}");

    // A deleted token is unknown from then on.
    ok(with_token(
        &agent,
        &root,
        &["acl", "token", "delete", &web_accessor],
    ));
    refused(
        with_token(&agent, &web_secret, &register("web", "web-2")),
        "not known",
    );
}

/// A live sidecar whose token is deleted: its ADS stream ends (at the
/// proxy's next request, here made by pushing it a change, and at the
/// latest within a minute), and its traffic keeps flowing on the last
/// configuration.
#[test]
fn a_sidecar_whose_token_is_deleted_keeps_its_last_configuration() {
    use tribune_tests::free_port;
    use tribune_tests::mesh::{Backend, Envoy, eventually, get};

    let agent = Agent::start(&["--acl-enabled", "--default-policy", "deny"]);
    let root = agent.cli_json(&["acl", "bootstrap"])["secret_id"]
        .as_str()
        .unwrap()
        .to_string();
    let token_for = |service: &str| {
        json(with_token(
            &agent,
            &root,
            &[
                "acl",
                "token",
                "create",
                "--service-identity",
                service,
                "--format",
                "json",
            ],
        ))
    };
    let (web, api) = (token_for("web"), token_for("api"));
    let secret = |t: &serde_json::Value| t["secret_id"].as_str().unwrap().to_string();

    let api_backend = Backend::start("hello from api");
    let upstream = free_port();
    let (web_port, api_port) = (free_port().to_string(), free_port().to_string());
    ok(with_token(
        &agent,
        &secret(&web),
        &[
            "services",
            "register",
            "--name",
            "web",
            "--id",
            "web-1",
            "--address",
            "127.0.0.1",
            "--port",
            "18080",
            "--sidecar-port",
            &web_port,
            "--upstream",
            &format!("api:{upstream}"),
        ],
    ));
    let api_backend_port = api_backend.port.to_string();
    ok(with_token(
        &agent,
        &secret(&api),
        &[
            "services",
            "register",
            "--name",
            "api",
            "--id",
            "api-1",
            "--address",
            "127.0.0.1",
            "--port",
            &api_backend_port,
            "--sidecar-port",
            &api_port,
        ],
    ));
    // An Envoy without a token is refused its configuration.
    let web_secret = secret(&web);
    let web_envoy = Envoy::start_with(&agent, &["--sidecar-for", "web-1", "--token", &web_secret]);
    let api_secret = secret(&api);
    let _api_envoy = Envoy::start_with(&agent, &["--sidecar-for", "api-1", "--token", &api_secret]);
    let works = || get(upstream).is_ok_and(|b| b == "hello from api");
    assert!(
        eventually(std::time::Duration::from_secs(15), works).is_some(),
        "web -> api never worked with ACLs on:\n{}",
        web_envoy.log_tail()
    );

    let connected = || {
        web_envoy
            .admin("/stats?filter=control_plane.connected_state")
            .is_some_and(|s| s.contains("control_plane.connected_state: 1"))
    };
    assert!(connected(), "web's Envoy is not connected");
    ok(with_token(
        &agent,
        &root,
        &["acl", "token", "delete", web["accessor_id"].as_str().unwrap()],
    ));
    // A change for web's upstream: the server pushes, Envoy answers, and
    // its stream is checked again.
    let api2 = Backend::start("hello from api");
    let api2_port = api2.port.to_string();
    let api2_sidecar = free_port().to_string();
    ok(with_token(
        &agent,
        &root,
        &[
            "services",
            "register",
            "--name",
            "api",
            "--id",
            "api-2",
            "--address",
            "127.0.0.1",
            "--port",
            &api2_port,
            "--sidecar-port",
            &api2_sidecar,
        ],
    ));
    let _api2_envoy = Envoy::start_with(&agent, &["--sidecar-for", "api-2", "--token", &api_secret]);
    assert!(
        eventually(std::time::Duration::from_secs(70), || !connected()).is_some(),
        "web's stream outlived its deleted token"
    );
    // Its last configuration has both api instances, and keeps working.
    let ok_count = (0..10).filter(|_| works()).count();
    assert_eq!(
        ok_count,
        10,
        "web's Envoy lost its last configuration:\n{}",
        web_envoy.log_tail()
    );
}

/// ACLs belong to the primary: a token made in dc1 works in dc2 once
/// copied, one made through dc2 is made in dc1, and dc2 goes on deciding
/// with its copy while dc1 is down.
#[test]
fn a_secondary_copies_the_primarys_acls_and_keeps_them_while_it_is_down() {
    use std::time::Duration;
    use tribune_tests::mesh::eventually;
    use tribune_tests::{Ports, start_dc2_with};

    const ROOT: &str = "4c2a3a8e-6a70-4a0e-9b4b-6d4f1f1f9a01";
    let acl = [
        "--acl-enabled",
        "--default-policy",
        "deny",
        "--initial-management-token",
        ROOT,
    ];
    let mut dc1 = Agent::start(&[&["--datacenter", "dc1"][..], &acl[..]].concat());
    let dir = tempfile::tempdir().unwrap();
    let dc2 = start_dc2_with(
        &dir.path().join("dc2"),
        &Ports::free(),
        &format!("127.0.0.1:{}", dc1.ports.wan),
        &acl,
    );
    // dc3 refuses everything once it has not reached dc1 for 2 s.
    let dc3_ports = Ports::free();
    let (s3, w3) = (
        format!("127.0.0.3:{}", dc3_ports.server),
        format!("127.0.0.3:{}", dc3_ports.wan),
    );
    let join = format!("127.0.0.1:{}", dc1.ports.wan);
    let dc3 = Agent::start_in(
        &dir.path().join("dc3"),
        dc3_ports,
        &[
            &[
                "--datacenter",
                "dc3",
                "--primary-datacenter",
                "dc1",
                "--server-addr",
                &s3,
                "--serf-wan-addr",
                &w3,
                "--retry-join-wan",
                &join,
                "--down-policy",
                "deny",
                "--acl-token-ttl",
                "2s",
            ][..],
            &acl[..],
        ]
        .concat(),
    );
    // The leader creates the configured management token shortly after it
    // is elected.
    let known = eventually(Duration::from_secs(10), || {
        with_token(&dc1, ROOT, &["acl", "whoami"]).status.success()
    });
    assert!(known.is_some(), "the initial management token was never created");
    let web = json(with_token(
        &dc1,
        ROOT,
        &[
            "acl",
            "token",
            "create",
            "--service-identity",
            "web",
            "--format",
            "json",
        ],
    ));
    let web_secret = web["secret_id"].as_str().unwrap().to_string();
    let copied = eventually(Duration::from_secs(20), || {
        with_token(&dc2, &web_secret, &register("web", "web-1"))
            .status
            .success()
    });
    assert!(copied.is_some(), "dc1's token never worked in dc2");
    let copied = eventually(Duration::from_secs(20), || {
        with_token(&dc3, &web_secret, &register("web", "web-3"))
            .status
            .success()
    });
    assert!(copied.is_some(), "dc1's token never worked in dc3");
    refused(
        with_token(&dc2, &web_secret, &register("api", "api-1")),
        "lacks service:write on api",
    );

    // Made through dc2, made in dc1.
    let api = json(with_token(
        &dc2,
        ROOT,
        &[
            "acl",
            "token",
            "create",
            "--service-identity",
            "api",
            "--format",
            "json",
        ],
    ));
    let listed = ok(with_token(&dc1, ROOT, &["acl", "token", "list"]));
    assert!(listed.contains(api["accessor_id"].as_str().unwrap()), "{listed}");
    let status = json(with_token(
        &dc2,
        ROOT,
        &["operator", "replication", "status", "--format", "json"],
    ));
    assert!(
        status["kinds"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["kind"] == "acl"),
        "{status}"
    );

    // dc1 down: dc2 decides with its copy (extend-cache, the default);
    // dc3, whose down policy is deny, refuses once its copy is 2 s old.
    dc1.kill9();
    ok(with_token(&dc2, &web_secret, &register("web", "web-2")));
    refused(
        with_token(&dc2, &web_secret, &register("api", "api-1")),
        "lacks service:write on api",
    );
    let denied = eventually(Duration::from_secs(15), || {
        let o = with_token(&dc3, &web_secret, &register("web", "web-4"));
        !o.status.success() && stderr(&o).contains("its down policy is deny")
    });
    assert!(
        denied.is_some(),
        "dc3 kept allowing with dc1 down:\n{}",
        dc3.log_tail()
    );
    // By now dc2's copy is as old, and it still decides with it.
    ok(with_token(&dc2, &web_secret, &register("web", "web-5")));
}

/// The README's table, method by method, for every method whose permission
/// does not depend on what its request names: without a token, with an
/// unknown one, with one that lacks the permission and with one that has
/// it. The calls are made with grpcurl over reflection, with an empty
/// request: the permission is decided before the request is read.
#[test]
fn the_permission_table_method_by_method() {
    use std::process::Command;

    let agent = Agent::start(&["--acl-enabled", "--default-policy", "deny"]);
    let root = agent.cli_json(&["acl", "bootstrap"])["secret_id"]
        .as_str()
        .unwrap()
        .to_string();
    let token_with = |name: &str, rules: &str| -> String {
        ok(with_token(
            &agent,
            &root,
            &["acl", "policy", "create", "--name", name, "--rules", rules],
        ));
        json(with_token(
            &agent,
            &root,
            &[
                "acl",
                "token",
                "create",
                "--policy-name",
                name,
                "--format",
                "json",
            ],
        ))["secret_id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    // A token that may do nothing the table asks for.
    let nothing = token_with("nothing", r#"service "unrelated" { policy = "read" }"#);
    let call = |method: &str, token: Option<&str>| -> (bool, String) {
        let mut cmd = Command::new(tribune_tests::tool("grpcurl"));
        cmd.args(["-plaintext", "-max-time", "10", "-d", "{}"]);
        if let Some(t) = token {
            cmd.args(["-H", &format!("x-tribune-token: {t}")]);
        }
        let out = cmd
            .arg(agent.grpc_addr())
            .arg(method)
            .output()
            .expect("running grpcurl");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    };
    let table = [
        (
            "tribune.v1.ConnectCA/Rotate",
            "operator:write",
            r#"operator = "write""#,
        ),
        (
            "tribune.v1.Operator/RaftRemovePeer",
            "operator:write",
            r#"operator = "write""#,
        ),
        (
            "tribune.v1.Operator/RaftListPeers",
            "operator:read",
            r#"operator = "read""#,
        ),
        (
            "tribune.v1.Operator/AutopilotState",
            "operator:read",
            r#"operator = "read""#,
        ),
        (
            "tribune.v1.Operator/Members",
            "operator:read",
            r#"operator = "read""#,
        ),
        (
            "tribune.v1.Operator/ReplicationStatus",
            "operator:read",
            r#"operator = "read""#,
        ),
        (
            "tribune.v1.Operator/SnapshotSave",
            "acl:write",
            r#"acl = "write""#,
        ),
        ("tribune.v1.Keyring/Local", "keyring:read", r#"keyring = "read""#),
        (
            "tribune.v1.Keyring/Apply",
            "keyring:write",
            r#"keyring = "write""#,
        ),
        ("tribune.v1.ACL/PolicyList", "acl:read", r#"acl = "read""#),
        ("tribune.v1.ACL/TokenList", "acl:read", r#"acl = "read""#),
        ("tribune.v1.ACL/PolicyCreate", "acl:write", r#"acl = "write""#),
        ("tribune.v1.ACL/TokenDelete", "acl:write", r#"acl = "write""#),
        ("tribune.v1.Peering/List", "peering:read", r#"peering = "read""#),
        ("tribune.v1.Peering/Read", "peering:read", r#"peering = "read""#),
        (
            "tribune.v1.Peering/GenerateToken",
            "peering:write",
            r#"peering = "write""#,
        ),
        (
            "tribune.v1.Peering/Establish",
            "peering:write",
            r#"peering = "write""#,
        ),
        (
            "tribune.v1.Peering/Delete",
            "peering:write",
            r#"peering = "write""#,
        ),
        (
            "tribune.v1.Peering/Export",
            "peering:write",
            r#"peering = "write""#,
        ),
    ];
    for (i, (method, permission, rules)) in table.iter().enumerate() {
        let (ok_, text) = call(method, None);
        assert!(
            !ok_ && text.contains("Unauthenticated") && text.contains(permission),
            "{method} without a token: {text}"
        );
        let (ok_, text) = call(method, Some("00000000-0000-0000-0000-000000000000"));
        assert!(
            !ok_ && text.contains("Unauthenticated") && text.contains("not known"),
            "{method} with an unknown token: {text}"
        );
        let (ok_, text) = call(method, Some(&nothing));
        assert!(
            !ok_ && text.contains("PermissionDenied") && text.contains(permission),
            "{method} without {permission}: {text}"
        );
        let with = token_with(&format!("p{i}"), rules);
        let (_, text) = call(method, Some(&with));
        assert!(
            !text.contains("Unauthenticated") && !text.contains("PermissionDenied"),
            "{method} with {permission}: {text}"
        );
    }
    // What needs nothing answers without a token.
    for method in [
        "tribune.v1.ConnectCA/Roots",
        "tribune.v1.Catalog/ListDatacenters",
        "grpc.health.v1.Health/Check",
    ] {
        let (ok_, text) = call(method, None);
        assert!(ok_, "{method} without a token: {text}");
    }
}

/// A client agent with ACLs on: its agent token (a node identity) covers
/// its node; an app's registration through it is checked with the app's
/// token, which the agent keeps for later syncs (a registration removed
/// behind its back comes back, with that token) and for the check results
/// it reports.
#[test]
fn a_client_agent_acts_with_the_agent_token_and_each_apps_own() {
    use std::time::Duration;
    use tribune_tests::cluster::Cluster;
    use tribune_tests::mesh::eventually;

    const ROOT: &str = "0d6e2b7a-3c1f-4e5d-9a8b-7c6d5e4f3a2b";
    let cluster = Cluster::start(
        1,
        &[
            "--acl-enabled",
            "--default-policy",
            "deny",
            "--initial-management-token",
            ROOT,
        ],
    );
    let server = &cluster.servers[0];
    assert!(
        eventually(Duration::from_secs(10), || with_token(
            server,
            ROOT,
            &["acl", "whoami"]
        )
        .status
        .success())
        .is_some()
    );
    let secret_of = |args: &[&str]| -> String {
        let mut a = vec!["acl", "token", "create"];
        a.extend_from_slice(args);
        a.extend(["--format", "json"]);
        json(with_token(server, ROOT, &a))["secret_id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let agent_token = secret_of(&["--node-identity", "c1:dc1"]);
    let web_token = secret_of(&["--service-identity", "web"]);
    let client = cluster.start_client(
        "c1",
        &["--anti-entropy-interval", "1s", "--agent-token", &agent_token],
    );

    // Through the agent: the app's token decides.
    let mut web = register("web", "web-1");
    web.extend(["--check-ttl", "10m"]);
    ok(with_token(&client, &web_token, &web));
    refused(
        with_token(&client, &web_token, &register("api", "api-1")),
        "service:write on api",
    );
    refused(client.cli(&register("db", "db-1")), "service:write on db");
    ok(with_token(
        &client,
        &web_token,
        &["check", "pass", "service:web-1"],
    ));
    let passing = |s: &Agent| {
        json(with_token(
            s,
            ROOT,
            &["catalog", "service", "web", "--format", "json"],
        ))["instances"]
            .as_array()
            .is_some_and(|i| i.len() == 1 && i[0]["status"] == "passing")
    };
    assert!(
        eventually(Duration::from_secs(10), || passing(server)).is_some(),
        "web-1 is not passing on the servers: {}",
        ok(with_token(
            server,
            ROOT,
            &["catalog", "service", "web", "--format", "json"]
        ))
    );

    // Removed behind the agent's back: anti-entropy puts it back with
    // web's token.
    ok(with_token(server, ROOT, &["services", "deregister", "web-1"]));
    assert!(
        eventually(Duration::from_secs(15), || passing(server)).is_some(),
        "the agent did not register web-1 again"
    );
}

/// Roles group policies and identities; a token's links and a policy's
/// rules can be changed in place, and take effect at the next call.
#[test]
fn roles_and_updates_take_effect_at_once() {
    let agent = Agent::start(&["--acl-enabled", "--default-policy", "deny"]);
    let root = agent.cli_json(&["acl", "bootstrap"])["secret_id"]
        .as_str()
        .unwrap()
        .to_string();
    let as_root = |args: &[&str]| ok(with_token(&agent, &root, args));
    as_root(&[
        "acl",
        "policy",
        "create",
        "--name",
        "reads",
        "--rules",
        r#"service "web" { policy = "read" }"#,
    ]);
    as_root(&[
        "acl",
        "role",
        "create",
        "--name",
        "web-readers",
        "--policy-name",
        "reads",
    ]);
    let t = json(with_token(
        &agent,
        &root,
        &[
            "acl",
            "token",
            "create",
            "--role-name",
            "web-readers",
            "--format",
            "json",
        ],
    ));
    let (secret, accessor) = (
        t["secret_id"].as_str().unwrap().to_string(),
        t["accessor_id"].as_str().unwrap().to_string(),
    );
    assert_eq!(t["roles"][0], "web-readers");
    as_root(&register("web", "web-1"));
    let seen = json(with_token(
        &agent,
        &secret,
        &["catalog", "service", "web", "--format", "json"],
    ));
    assert_eq!(
        seen["instances"].as_array().map(Vec::len),
        Some(1),
        "the role's policy reads web: {seen}"
    );
    refused(
        with_token(&agent, &secret, &register("web", "web-2")),
        "service:write on web",
    );

    // The policy now grants write: the same token may register.
    as_root(&[
        "acl",
        "policy",
        "update",
        "reads",
        "--rules",
        r#"service "web" { policy = "write" }"#,
    ]);
    ok(with_token(&agent, &secret, &register("web", "web-2")));
    // The token loses its role and gains a service identity for api.
    as_root(&["acl", "token", "update", &accessor, "--service-identity", "api"]);
    refused(
        with_token(&agent, &secret, &register("web", "web-3")),
        "service:write on web",
    );
    ok(with_token(&agent, &secret, &register("api", "api-1")));
    assert!(ok(with_token(&agent, &root, &["acl", "role", "list"])).contains("web-readers"));
    as_root(&["acl", "role", "delete", "web-readers"]);
    refused(
        with_token(&agent, &root, &["acl", "role", "read", "web-readers"]),
        "no role",
    );
}
