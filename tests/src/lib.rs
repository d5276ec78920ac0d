//! The harness for Tribune's end-to-end tests: it runs the real `tribune`
//! binary (built once by `cargo build`, never rebuilt here) on free loopback
//! ports, and finds the external tools that `scripts/setup.sh` installs.
//! Missing binaries fail the test loudly; nothing is skipped.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub mod cluster;
pub mod faults;
pub mod linearizability;
pub mod mesh;

pub use tribune_client::{Client, api};

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the workspace")
        .to_path_buf()
}

/// The `tribune` binary: `$TRIBUNE_BIN`, or the one `cargo build` put next
/// to this test executable's profile directory.
pub fn tribune_bin() -> PathBuf {
    if let Ok(p) = std::env::var("TRIBUNE_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test> -> target/<profile>/tribune
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("tribune"))
        .expect("test executable lives in target/<profile>/deps");
    assert!(
        bin.exists(),
        "{} does not exist: run `cargo build --workspace` (or scripts/test.sh) before the tests",
        bin.display()
    );
    bin
}

/// What a finished command printed on stderr.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The command succeeded: its stdout.
#[track_caller]
pub fn ok(o: Output) -> String {
    assert!(o.status.success(), "failed: {}", stderr(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The command failed, and what it printed says `needle`.
#[track_caller]
pub fn refused(o: Output, needle: &str) {
    assert!(
        !o.status.success(),
        "succeeded: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    let e = format!("{}{}", stderr(&o), String::from_utf8_lossy(&o.stdout));
    assert!(e.contains(needle), "expected {needle:?} in: {e}");
}

/// A tool installed by `scripts/setup.sh` into `.tools/bin`.
pub fn tool(name: &str) -> PathBuf {
    let p = workspace().join(".tools/bin").join(name);
    assert!(
        p.exists(),
        "{} is missing: run `bash scripts/setup.sh` first",
        p.display()
    );
    p
}

/// A loopback port free for both TCP and UDP right now, below the kernel's
/// ephemeral range (32768 and up on Linux), so an outgoing connection
/// cannot take it between this call and the agent binding it. Ports are
/// handed out in turn from a start that depends on the process ID, so two
/// test threads never get the same one.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    let start = std::process::id().wrapping_mul(7919) % SPAN;
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (LOW + (start + n) % SPAN) as u16;
        let tcp = TcpListener::bind(("127.0.0.1", port));
        let udp = std::net::UdpSocket::bind(("127.0.0.1", port));
        if tcp.is_ok() && udp.is_ok() {
            return port;
        }
    }
    panic!("no free loopback port between {LOW} and {}", LOW + SPAN)
}

#[derive(Clone, Debug)]
pub struct Ports {
    pub grpc: u16,
    pub http: u16,
    pub server: u16,
    pub serf: u16,
    /// WAN gossip (servers).
    pub wan: u16,
    /// gRPC over TLS (servers).
    pub grpc_tls: u16,
}

impl Ports {
    pub fn free() -> Ports {
        Ports {
            grpc: free_port(),
            http: free_port(),
            server: free_port(),
            serf: free_port(), // gossip: UDP and TCP on one port
            wan: free_port(),
            grpc_tls: free_port(),
        }
    }

    pub fn serf_addr(&self) -> String {
        format!("127.0.0.1:{}", self.serf)
    }
}

/// A running server agent. Killed (SIGKILL) when dropped.
pub struct Agent {
    child: Option<Child>,
    pub ports: Ports,
    pub data_dir: PathBuf,
    pub node: String,
    /// A server agent; false for a client agent.
    pub server: bool,
    extra: Vec<String>,
    log: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    ready: Option<mpsc::Receiver<()>>,
}

impl Agent {
    /// A single-server datacenter in a fresh temporary data dir.
    pub fn start(extra: &[&str]) -> Agent {
        let tmp = tempfile::tempdir().expect("tempdir");
        let data_dir = tmp.path().join("data");
        let mut a = Agent::start_in(&data_dir, Ports::free(), extra);
        a._tmp = Some(tmp);
        a
    }

    /// A single server on `data_dir` and `ports`, with extra agent flags.
    pub fn start_in(data_dir: &Path, ports: Ports, extra: &[&str]) -> Agent {
        let mut args = vec!["--bootstrap-expect", "1"];
        args.extend_from_slice(extra);
        Agent::spawn(data_dir, ports, "node-1", &args, true)
    }

    /// One server of a cluster: `extra` carries --bootstrap-expect and
    /// --retry-join. With `wait`, returns once it knows a leader.
    pub fn spawn(data_dir: &Path, ports: Ports, node: &str, extra: &[&str], wait: bool) -> Agent {
        let log = data_dir.with_extension("log");
        let mut a = Agent {
            child: None,
            ports,
            data_dir: data_dir.to_path_buf(),
            node: node.into(),
            server: true,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            log,
            _tmp: None,
            ready: None,
        };
        a.launch();
        if wait {
            a.wait_ready();
        }
        a
    }

    /// A client agent (no `--server`): `extra` carries --retry-join. With
    /// `wait`, returns once it is in sync with the servers.
    pub fn spawn_client(data_dir: &Path, ports: Ports, node: &str, extra: &[&str], wait: bool) -> Agent {
        let mut a = Agent {
            child: None,
            ports,
            data_dir: data_dir.to_path_buf(),
            node: node.into(),
            server: false,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            log: data_dir.with_extension("log"),
            _tmp: None,
            ready: None,
        };
        a.launch();
        if wait {
            a.wait_ready();
        }
        a
    }

    /// Waits for the agent's "==> Ready" line (a server: a leader is
    /// known; a client agent: in sync with the servers).
    pub fn wait_ready(&mut self) {
        let Some(rx) = self.ready.take() else { return };
        if rx.recv_timeout(Duration::from_secs(30)).is_err() {
            panic!(
                "tribune {} did not become ready within 30s; its log:\n{}",
                self.node,
                self.log_tail()
            );
        }
    }

    fn launch(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("agent log file");
        let mut cmd = Command::new(tribune_bin());
        cmd.args(["agent", "--node", &self.node]);
        if self.server {
            cmd.arg("--server");
            // A test may bind the server port elsewhere (see `faults`).
            if !self.extra.iter().any(|a| a == "--server-addr") {
                cmd.args(["--server-addr", &format!("127.0.0.1:{}", self.ports.server)]);
            }
            // A test of several datacenters puts each one's WAN side on
            // its own loopback address.
            if !self.extra.iter().any(|a| a == "--serf-wan-addr") {
                cmd.args(["--serf-wan-addr", &format!("127.0.0.1:{}", self.ports.wan)]);
            }
            if !self.extra.iter().any(|a| a == "--grpc-tls-addr") {
                cmd.args(["--grpc-tls-addr", &format!("127.0.0.1:{}", self.ports.grpc_tls)]);
            }
        }
        if !self.extra.iter().any(|a| a == "--grpc-addr") {
            cmd.args(["--grpc-addr", &format!("127.0.0.1:{}", self.ports.grpc)]);
        }
        let mut child = cmd
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--http-addr", &format!("127.0.0.1:{}", self.ports.http)])
            .args(["--serf-lan-addr", &self.ports.serf_addr()])
            .args(&self.extra)
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawning tribune");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with("==> Ready") {
                    let _ = tx.send(());
                }
            }
        });
        self.child = Some(child);
        self.ready = Some(rx);
    }

    pub fn grpc_addr(&self) -> String {
        format!("127.0.0.1:{}", self.ports.grpc)
    }

    /// The gRPC TLS port (servers).
    pub fn grpc_tls_addr(&self) -> String {
        format!("127.0.0.1:{}", self.ports.grpc_tls)
    }

    pub fn http_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.ports.http)
    }

    /// The value of the metric line `series` (name and labels, as
    /// `/metrics` prints them) on this agent; 0 when absent.
    pub fn metric(&self, series: &str) -> f64 {
        let out = Command::new("curl")
            .args(["-s", &self.http_url("/metrics")])
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or(0.0)
    }

    pub async fn client(&self) -> Client {
        Client::connect(&self.grpc_addr())
            .await
            .expect("connecting to the agent")
    }

    /// Runs a `tribune` command against this agent.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(tribune_bin())
            .args(args)
            .env("TRIBUNE_GRPC_ADDR", self.grpc_addr())
            .output()
            .expect("running the tribune CLI")
    }

    /// Runs a command that must succeed; returns its stdout.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "`tribune {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Like `cli_ok` with `--format json`, parsed.
    pub fn cli_json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.extend(["--format", "json"]);
        let out = self.cli_ok(&a);
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("`tribune {}` printed no JSON ({e}): {out}", a.join(" ")))
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, and waits for a clean exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("agent is running");
        let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
        c.wait().expect("waiting for tribune")
    }

    /// Starts the agent again on the same data dir and ports, and waits
    /// until it knows a leader.
    pub fn restart(&mut self) {
        self.kill9();
        self.launch();
        self.wait_ready();
    }

    /// Starts a stopped agent again without waiting.
    pub fn relaunch(&mut self) {
        self.kill9();
        self.launch();
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The agent's whole log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill9();
        // A failed test leaves its agents' logs behind for a reader: the
        // tail on stderr, and the whole log under TRIBUNE_TEST_LOGS if set.
        if std::thread::panicking() {
            eprintln!("--- log of {} (last lines) ---\n{}", self.node, self.log_tail());
        }
        if let Some(dir) = std::env::var_os("TRIBUNE_TEST_LOGS") {
            let dir = PathBuf::from(dir);
            let _ = std::fs::create_dir_all(&dir);
            let name = format!("{}-{}.log", self.node, self.ports.grpc);
            let _ = std::fs::copy(&self.log, dir.join(name));
        }
    }
}

/// Where a test puts the second datacenter: its server, gRPC and WAN
/// addresses, so a test can tell which address was used.
pub const DC2_IP: &str = "127.0.0.2";

/// dc2's single server (secondary, primary dc1), with its server and WAN
/// addresses on [`DC2_IP`], joining dc1's WAN pool through `join`.
pub fn start_dc2(dir: &Path, ports: &Ports, join: &str) -> Agent {
    start_dc2_with(dir, ports, join, &[])
}

/// The same with extra agent flags.
pub fn start_dc2_with(dir: &Path, ports: &Ports, join: &str, extra: &[&str]) -> Agent {
    let at = |port: u16| format!("{DC2_IP}:{port}");
    let (server, wan) = (at(ports.server), at(ports.wan));
    let mut args = vec![
        "--datacenter",
        "dc2",
        "--primary-datacenter",
        "dc1",
        "--bootstrap-expect",
        "1",
        "--server-addr",
        &server,
        "--serf-wan-addr",
        &wan,
        "--retry-join-wan",
        join,
    ];
    args.extend_from_slice(extra);
    Agent::spawn(dir, ports.clone(), "d2s0", &args, true)
}

/// A minimal registration.
pub fn instance(name: &str, id: &str, port: u32) -> api::RegisterRequest {
    api::RegisterRequest {
        service: Some(api::ServiceSpec {
            name: name.into(),
            id: id.into(),
            address: "127.0.0.1".into(),
            port,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Everything a user can read from the catalog, indexes included, for
/// comparing two catalogs.
pub async fn catalog_dump(c: &Client) -> serde_json::Value {
    let services = c.list_services().await.expect("list services");
    let nodes = c.list_nodes().await.expect("list nodes");
    let mut per_service = serde_json::Map::new();
    for s in &services.services {
        let r = c.get_service(&s.name, false).await.expect("get service");
        per_service.insert(s.name.clone(), serde_json::to_value(&r.instances).expect("json"));
    }
    serde_json::json!({
        "services": serde_json::to_value(&services.services).expect("json"),
        "nodes": serde_json::to_value(&nodes.nodes).expect("json"),
        "instances": per_service,
    })
}
