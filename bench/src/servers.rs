//! Spawning and killing the servers under test.
//!
//! A [`Server`] is a child process with its own temporary data directory. Its
//! stdout and stderr are drained continuously (so it never blocks on a full
//! pipe) and the last lines are kept for error messages. Dropping a `Server`
//! kills the process, so an error or Ctrl-C anywhere in the benchmark leaves
//! no server behind.

use std::collections::VecDeque;
use std::future::Future;
use std::io::Write;
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::time::Instant;

/// Output lines kept for error messages.
const TAIL_LINES: usize = 40;

/// How long a server may take to become ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// `n` distinct free TCP ports on 127.0.0.1. They are released before this
/// returns, so another process could in principle take one first.
pub fn free_ports(n: usize) -> Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0 to find a free port"))
        .collect::<Result<Vec<_>>>()?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr().context("reading a bound port")?.port()))
        .collect()
}

/// A file all of a server's output is copied to.
type LogFile = Arc<Mutex<std::fs::File>>;

/// `n` distinct ports on 127.0.0.1 free for both UDP and TCP (gossip uses
/// both on one port number), released like [`free_ports`]'s.
pub fn free_udp_ports(n: usize) -> Result<Vec<u16>> {
    let mut held = Vec::new();
    while held.len() < n {
        let udp = UdpSocket::bind("127.0.0.1:0").context("binding UDP 127.0.0.1:0 to find a free port")?;
        let port = udp.local_addr().context("reading a bound UDP port")?.port();
        // Keep it only when TCP is free on the same port too.
        if let Ok(tcp) = TcpListener::bind(("127.0.0.1", port)) {
            held.push((port, udp, tcp));
        }
    }
    Ok(held.into_iter().map(|(p, _, _)| p).collect())
}

/// A running server process; killed when dropped.
pub struct Server {
    name: String,
    child: Child,
    tail: Arc<Mutex<VecDeque<String>>>,
    marker_seen: watch::Receiver<bool>,
    data_dir: TempDir,
    /// How it was started, to start it again ([`Server::respawn`]).
    program: PathBuf,
    args: Vec<String>,
    ready_marker: Option<&'static str>,
    log: Option<LogFile>,
}

/// A started child process and the state its output drainers update.
struct Launched {
    child: Child,
    tail: Arc<Mutex<VecDeque<String>>>,
    marker_seen: watch::Receiver<bool>,
}

/// Starts `program args...` with piped output drained into a fresh tail.
fn launch(
    name: &str,
    program: &Path,
    args: &[String],
    ready_marker: Option<&'static str>,
    log: Option<&LogFile>,
) -> Result<Launched> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        // Its own process group: a Ctrl-C at the terminal reaches only the
        // benchmark, which then kills the server itself.
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {name}: {} {}", program.display(), args.join(" ")))?;
    let tail = Arc::new(Mutex::new(VecDeque::new()));
    let (seen_tx, marker_seen) = watch::channel(false);
    let seen_tx = Arc::new(seen_tx);
    if let Some(out) = child.stdout.take() {
        tokio::spawn(drain(
            out,
            tail.clone(),
            log.cloned(),
            ready_marker,
            seen_tx.clone(),
        ));
    }
    if let Some(err) = child.stderr.take() {
        tokio::spawn(drain(err, tail.clone(), log.cloned(), ready_marker, seen_tx));
    }
    Ok(Launched {
        child,
        tail,
        marker_seen,
    })
}

impl Server {
    /// Starts `program args...` with a fresh data directory made beforehand
    /// (`args` gets its path). `ready_marker`: an output line prefix that
    /// signals readiness, watched by [`Server::marker_seen`]. With `log_dir`,
    /// all output also goes to `log_dir/NAME.log`.
    pub fn spawn(
        name: impl Into<String>,
        program: &Path,
        args: impl FnOnce(&Path) -> Vec<String>,
        ready_marker: Option<&'static str>,
        log_dir: Option<&Path>,
    ) -> Result<Server> {
        let name = name.into();
        let log = match log_dir {
            Some(dir) => {
                let path = dir.join(format!("{name}.log"));
                let f =
                    std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
                Some(Arc::new(Mutex::new(f)))
            }
            None => None,
        };
        let data_dir = tempfile::Builder::new()
            .prefix(&format!("tribune-bench-{name}-"))
            .tempdir()
            .context("creating a temporary data directory")?;
        let args = args(data_dir.path());
        let l = launch(&name, program, &args, ready_marker, log.as_ref())?;
        Ok(Server {
            name,
            child: l.child,
            tail: l.tail,
            marker_seen: l.marker_seen,
            data_dir,
            program: program.to_path_buf(),
            args,
            ready_marker,
            log,
        })
    }

    /// The server's name (also its log file's name).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Kills the process with SIGKILL (`kill -9`) and waits for it to exit.
    /// Returns the moment the signal was sent.
    pub async fn kill9(&mut self) -> Result<Instant> {
        self.child
            .start_kill()
            .with_context(|| format!("killing {}", self.name))?;
        let at = Instant::now();
        self.child
            .wait()
            .await
            .with_context(|| format!("waiting for {} to exit", self.name))?;
        Ok(at)
    }

    /// Starts the server again, same program, arguments and data directory
    /// (killing it first if it still runs). Wait for it with
    /// [`Server::wait_ready`].
    pub async fn respawn(&mut self) -> Result<()> {
        if self.child.try_wait().ok().flatten().is_none() {
            self.kill9().await?;
        }
        let l = launch(
            &self.name,
            &self.program,
            &self.args,
            self.ready_marker,
            self.log.as_ref(),
        )?;
        self.child = l.child;
        self.tail = l.tail;
        self.marker_seen = l.marker_seen;
        Ok(())
    }

    /// The server's data directory.
    /// The process ID, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    pub fn data_dir(&self) -> &Path {
        self.data_dir.path()
    }

    /// Whether the ready marker line has been printed.
    pub fn marker_seen(&self) -> bool {
        *self.marker_seen.borrow()
    }

    /// Fails if the process has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        match self
            .child
            .try_wait()
            .with_context(|| format!("polling the {} process", self.name))?
        {
            None => Ok(()),
            Some(status) => bail!(
                "{} exited ({status}); its last output:\n{}",
                self.name,
                self.tail()
            ),
        }
    }

    /// The last lines the server printed.
    pub fn tail(&self) -> String {
        let lines = self
            .tail
            .lock()
            .map(|t| t.iter().cloned().collect::<Vec<_>>())
            .unwrap_or_default();
        if lines.is_empty() {
            "(nothing)".into()
        } else {
            lines.join("\n")
        }
    }

    /// Polls `probe` until it succeeds, the process dies, or `READY_TIMEOUT`
    /// passes. `probe` gets the server to look at its output.
    pub async fn wait_ready<F, Fut>(&mut self, mut probe: F) -> Result<()>
    where
        F: FnMut(&Server) -> Fut,
        Fut: Future<Output = bool>,
    {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            self.check_alive()?;
            if probe(self).await {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} was not ready after {}s; its last output:\n{}",
                    self.name,
                    READY_TIMEOUT.as_secs(),
                    self.tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Kills the process and waits for it to exit.
    pub async fn stop(mut self) -> Result<()> {
        let exited = self
            .child
            .try_wait()
            .with_context(|| format!("polling the {} process", self.name))?;
        if exited.is_none() {
            self.child
                .start_kill()
                .with_context(|| format!("killing {}", self.name))?;
            self.child
                .wait()
                .await
                .with_context(|| format!("waiting for {} to exit", self.name))?;
        }
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Also covered by kill_on_drop; explicit so the intent is plain.
        let _ = self.child.start_kill();
    }
}

/// Copies lines from a child's pipe into `tail` (and `log`), flagging `marker`.
async fn drain(
    pipe: impl AsyncRead + Unpin,
    tail: Arc<Mutex<VecDeque<String>>>,
    log: Option<LogFile>,
    marker: Option<&'static str>,
    seen: Arc<watch::Sender<bool>>,
) {
    let mut lines = BufReader::new(pipe).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if marker.is_some_and(|m| line.starts_with(m)) {
            seen.send_replace(true);
        }
        if let Some(Ok(mut f)) = log.as_ref().map(|l| l.lock()) {
            // Best effort: a full disk must not stop the benchmark.
            let _ = writeln!(f, "{line}");
        }
        if let Ok(mut t) = tail.lock() {
            if t.len() == TAIL_LINES {
                t.pop_front();
            }
            t.push_back(line);
        }
    }
}

/// Resolves a binary: `explicit` if given, else the first of `candidates`
/// (bare names are looked up on PATH) that exists.
pub fn find_binary(explicit: Option<&Path>, candidates: &[&str], hint: &str) -> Result<PathBuf> {
    if let Some(p) = explicit {
        if p.is_file() {
            // Tidier in messages than `bench/../target/...`; the path works either way.
            return Ok(std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf()));
        }
        bail!("{} does not exist; {hint}", p.display());
    }
    for c in candidates {
        let p = Path::new(c);
        if p.components().count() > 1 {
            if p.is_file() {
                return Ok(p.to_path_buf());
            }
        } else if let Some(found) = on_path(c) {
            return Ok(found);
        }
    }
    bail!("none of {} found; {hint}", candidates.join(", "))
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}
