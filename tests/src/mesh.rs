//! Mesh test pieces: tiny HTTP backends, real Envoy sidecars started from
//! `tribune connect envoy --bootstrap`, and a raw HTTP/1.0 client.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::{Agent, free_port, tool};

/// An HTTP server on a free loopback port that answers every request with
/// `body`. Stops when dropped.
pub struct Backend {
    pub port: u16,
    stop: Arc<AtomicBool>,
}

impl Backend {
    pub fn start(body: &str) -> Backend {
        Backend::start_on(0, body)
    }

    /// The same on a given port (0: any), e.g. to bring a stopped backend back.
    pub fn start_on(port: u16, body: &str) -> Backend {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind backend");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let body = body.to_string();
        std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut s, _)) => {
                        let body = body.clone();
                        std::thread::spawn(move || {
                            let _ = s.set_nonblocking(false);
                            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                            let mut buf = [0u8; 4096];
                            let mut req = Vec::new();
                            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                                match s.read(&mut buf) {
                                    Ok(0) | Err(_) => return,
                                    Ok(n) => req.extend_from_slice(&buf[..n]),
                                }
                            }
                            let resp = format!(
                                "HTTP/1.0 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                                body.len()
                            );
                            let _ = s.write_all(resp.as_bytes());
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Backend { port, stop }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// One HTTP/1.0 GET on a fresh connection; the body, or why it failed.
pub fn get(port: u16) -> Result<String, String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(3)))
        .map_err(|e| e.to_string())?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: test\r\n\r\n")
        .map_err(|e| format!("write: {e}"))?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&out).into_owned();
    match text.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.0 200") => Ok(body.to_string()),
        _ => Err(format!("no HTTP response: {text:?}")),
    }
}

/// GETs through `port` every 20 ms on a thread, until stopped: how many
/// requests got `body`, and what went wrong with the others.
pub struct RequestLoop {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<(u64, Vec<String>)>,
}

impl RequestLoop {
    pub fn start(port: u16, body: &str) -> RequestLoop {
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, body) = (stop.clone(), body.to_string());
        let thread = std::thread::spawn(move || {
            let (mut ok, mut errors) = (0u64, Vec::new());
            while !flag.load(Ordering::Relaxed) {
                match get(port) {
                    Ok(b) if b == body => ok += 1,
                    Ok(b) => errors.push(format!("wrong body {b:?}")),
                    Err(e) => errors.push(e),
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            (ok, errors)
        });
        RequestLoop { stop, thread }
    }

    /// Stops the loop: (requests that succeeded, errors of the others).
    pub fn finish(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

/// Polls `f` until it returns true or `limit` passes; returns the time it took.
pub fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// A real Envoy sidecar, configured only by Tribune over ADS. Killed when dropped.
pub struct Envoy {
    pub child: Child,
    pub admin_port: u16,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Envoy {
    /// `tribune connect envoy --sidecar-for ID --bootstrap`, then Envoy on it.
    pub fn start(agent: &Agent, sidecar_for: &str, mode: &str) -> Envoy {
        Envoy::start_with(agent, &["--sidecar-for", sidecar_for, "--xds-mode", mode])
    }

    /// A mesh gateway: `tribune connect envoy --gateway mesh --register
    /// --service NAME --id ID --address LAN --wan-address WAN --bootstrap`
    /// (TCP check every second), then Envoy on it.
    pub fn start_gateway(agent: &Agent, name: &str, id: &str, lan: &str, wan: &str) -> Envoy {
        Envoy::start_with(
            agent,
            &[
                "--gateway",
                "mesh",
                "--register",
                "--service",
                name,
                "--id",
                id,
                "--address",
                lan,
                "--wan-address",
                wan,
                "--check-interval",
                "1s",
            ],
        )
    }

    /// `tribune connect envoy ARGS --bootstrap`, then Envoy on it.
    pub fn start_with(agent: &Agent, args: &[&str]) -> Envoy {
        let dir = tempfile::tempdir().expect("tempdir");
        let admin_port = free_port();
        let admin = format!("127.0.0.1:{admin_port}");
        let mut cli = vec!["connect", "envoy", "--bootstrap", "--admin-bind", &admin];
        cli.extend_from_slice(args);
        let json = agent.cli_ok(&cli);
        let cfg = dir.path().join("bootstrap.json");
        std::fs::write(&cfg, json).expect("write bootstrap");
        let log = dir.path().join("envoy.log");
        let child = Command::new(tool("envoy"))
            .arg("-c")
            .arg(&cfg)
            .args(["--use-dynamic-base-id", "--concurrency", "1", "-l", "info"])
            .arg("--log-path")
            .arg(&log)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawning envoy");
        let e = Envoy {
            child,
            admin_port,
            log,
            _dir: dir,
        };
        let ready = eventually(Duration::from_secs(20), || {
            e.admin("/ready").is_some_and(|r| r.trim() == "LIVE")
        });
        assert!(
            ready.is_some(),
            "envoy {args:?} did not become ready:\n{}",
            e.log_tail()
        );
        e
    }

    /// The healthy endpoints Envoy holds for `cluster`, as "IP:PORT".
    pub fn endpoints(&self, cluster: &str) -> Vec<String> {
        let text = self.admin("/clusters").unwrap_or_default();
        let mut out: Vec<String> = text
            .lines()
            .filter_map(|l| l.strip_prefix(&format!("{cluster}::")))
            .filter_map(|rest| {
                let (addr, field) = rest.split_once("::")?;
                let healthy = field.strip_prefix("health_flags::")? == "healthy";
                healthy.then(|| addr.to_string())
            })
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// GET on the admin port.
    pub fn admin(&self, path: &str) -> Option<String> {
        let out = Command::new("curl")
            .args([
                "-s",
                "-m",
                "3",
                &format!("http://127.0.0.1:{}{path}", self.admin_port),
            ])
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub fn admin_json(&self, path: &str) -> serde_json::Value {
        let text = self.admin(path).unwrap_or_default();
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null)
    }

    /// The leaf certificate chain Envoy currently holds for `service` (PEM).
    pub fn leaf_chain_pem(&self, service: &str) -> Option<String> {
        let dump = self.admin_json("/config_dump?resource=dynamic_active_secrets");
        dump["configs"].as_array()?.iter().find_map(|c| {
            let s = &c["secret"];
            (s["name"] == format!("tribune-leaf:{service}"))
                .then(|| {
                    s["tls_certificate"]["certificate_chain"]["inline_string"]
                        .as_str()
                        .map(String::from)
                })
                .flatten()
        })
    }

    /// URI SANs of the leaves Envoy shows on /certs.
    pub fn cert_sans(&self) -> Vec<String> {
        let certs = self.admin_json("/certs");
        let mut out = Vec::new();
        for c in certs["certificates"].as_array().into_iter().flatten() {
            for cc in c["cert_chain"].as_array().into_iter().flatten() {
                for san in cc["subject_alt_names"].as_array().into_iter().flatten() {
                    if let Some(u) = san["uri"].as_str() {
                        out.push(u.to_string());
                    }
                }
            }
        }
        out
    }

    pub fn still_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
