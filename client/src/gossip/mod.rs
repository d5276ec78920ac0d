//! Gossip membership: SWIM (with suspicion) via `foca`, over UDP, with a
//! TCP side on the same port number. Every agent runs a LAN pool; servers
//! also run a WAN pool with the servers of other datacenters (the same
//! code, with WAN timings and its own keyring file).
//!
//! foca does no I/O: this module owns the sockets and the timers and feeds
//! foca what arrives. Every member carries its name, role, datacenter and
//! the addresses of its server RPC and gRPC ports, so servers can find each
//! other from a single `--retry-join` address.
//!
//! With a keyring (Consul's `encrypt`), every packet and TCP frame is
//! sealed with AES-256-GCM, and whatever does not open is dropped. Over TCP
//! the agents periodically exchange their full view (push-pull, as
//! memberlist does), so that a member that missed UDP updates converges.

mod identity;
pub mod keyring;
mod leave;
mod runtime;
mod transport;
pub mod tuning;

#[cfg(test)]
mod hostile;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

pub use identity::{Member, Role};
pub use keyring::{Keyring, KeyringError};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{mpsc, watch};

/// How a member looks to this agent.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub enum MemberState {
    /// Answering probes.
    Alive,
    /// Missed probes; others are checking before declaring it down.
    Suspect,
    /// Declared dead by the cluster.
    Down,
    /// Left gracefully.
    Left,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
/// A member and how it looks from here.
pub struct MemberStatus {
    /// Who.
    pub member: Member,
    /// In what state.
    pub state: MemberState,
}

#[derive(Debug, thiserror::Error)]
/// What can keep gossip from starting.
pub enum GossipError {
    /// The UDP port could not be bound.
    #[error("cannot bind the {pool} gossip port {addr}: {source}")]
    Bind {
        /// LAN or WAN.
        pool: &'static str,
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The TCP port (same number as the UDP one) could not be bound.
    #[error("cannot bind the {pool} gossip TCP port {addr}: {source}")]
    BindTcp {
        /// LAN or WAN.
        pool: &'static str,
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The keyring file cannot be read, or the configured key written to it.
    #[error("gossip encryption: {source}")]
    Keyring {
        /// Why.
        #[from]
        source: KeyringError,
    },
}

/// A handle on the running gossip agent.
#[derive(Clone)]
pub struct Gossip {
    shared: Arc<Shared>,
    cmds: mpsc::Sender<runtime::Command>,
    leave_wait: Duration,
}

struct Shared {
    me: Member,
    members: Mutex<BTreeMap<SocketAddr, MemberStatus>>,
    changed: watch::Sender<u64>,
    /// None: encryption is off, and stays off until a restart (turning it
    /// on live would cut this agent off its cluster).
    keyring: RwLock<Option<Keyring>>,
    keyring_file: Option<PathBuf>,
    /// Serializes keyring changes, which save the file outside the lock
    /// that every packet takes.
    keyring_ops: Mutex<()>,
    dropped: AtomicU64,
    /// Bytes handed to the network and taken from it (UDP datagrams and TCP
    /// frames as sealed, without IP, UDP or TCP headers).
    bytes_sent: AtomicU64,
    bytes_received: AtomicU64,
    /// Tests cut UDP to show what TCP alone achieves.
    udp_muted: AtomicBool,
}

/// Settings of the gossip layer.
#[derive(Clone, Debug)]
pub struct GossipConfig {
    /// The pool's name in errors and logs: LAN or WAN.
    pub pool: &'static str,
    /// Expected cluster size, which tunes SWIM's timings.
    pub cluster_size: u32,
    /// How often to retry `--retry-join` addresses until one answers; also
    /// how often suspicion is read off SWIM into [`Gossip::members`].
    pub retry_interval: Duration,
    /// Encrypt gossip with this keyring (Consul's `encrypt`).
    pub keyring: Option<Keyring>,
    /// Where the keyring lives (Consul's `serf/local.keyring`). If the file
    /// exists at start it wins over `keyring`; otherwise `keyring` is saved
    /// there. Every keyring change is saved there.
    pub keyring_file: Option<PathBuf>,
    /// How often to exchange full state with one random member over TCP.
    pub push_pull_interval: Duration,
    /// Deadline of one TCP exchange (connect, send, answer).
    pub tcp_timeout: Duration,
    /// Largest datagram sent over UDP; a larger (sealed) message goes over
    /// TCP. The default fits one Ethernet frame over IPv6 (1500 - 40 - 8).
    pub udp_max_datagram: usize,
    /// How long a leaving agent keeps gossiping after announcing its leave,
    /// so that the others record it as Left rather than Down.
    pub leave_propagate_delay: Duration,
    /// SWIM timings to use instead of `tuning::swim_config(cluster_size)`
    /// (tests shorten them).
    pub swim: Option<foca::Config>,
}

impl Default for GossipConfig {
    fn default() -> Self {
        GossipConfig {
            pool: "LAN",
            cluster_size: 16,
            retry_interval: Duration::from_secs(1),
            keyring: None,
            keyring_file: None,
            push_pull_interval: Duration::from_secs(30),
            tcp_timeout: Duration::from_secs(10),
            udp_max_datagram: 1452,
            leave_propagate_delay: Duration::from_secs(1),
            swim: None,
        }
    }
}

/// The keyring to start with: the file's if there is one (it holds the
/// rotations done since the key was configured), else the configured one,
/// which is then saved to the file.
fn initial_keyring(cfg: &GossipConfig) -> Result<Option<Keyring>, GossipError> {
    let Some(path) = &cfg.keyring_file else {
        return Ok(cfg.keyring.clone());
    };
    let exists = path.try_exists().map_err(|source| KeyringError::Io {
        op: "look for",
        path: path.clone(),
        source,
    })?;
    if exists {
        let ring = Keyring::load(path)?;
        if cfg
            .keyring
            .as_ref()
            .is_some_and(|k| k.primary() != ring.primary())
        {
            tracing::warn!(file = %path.display(), "gossip keyring file found: it overrides the configured key");
        }
        return Ok(Some(ring));
    }
    if let Some(ring) = &cfg.keyring {
        ring.save(path)?;
    }
    Ok(cfg.keyring.clone())
}

/// Binds UDP then TCP on the same port number. With port 0 the port UDP got
/// may be taken on TCP: then try another.
async fn bind(pool: &'static str, addr: SocketAddr) -> Result<(UdpSocket, TcpListener), GossipError> {
    let attempts = if addr.port() == 0 { 16 } else { 1 };
    let mut attempt = 0;
    loop {
        attempt += 1;
        let udp = UdpSocket::bind(addr)
            .await
            .map_err(|source| GossipError::Bind { pool, addr, source })?;
        let local = udp.local_addr().unwrap_or(addr);
        match TcpListener::bind(local).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) if attempt < attempts => {
                tracing::debug!(addr = %local, error = %e, "gossip TCP port taken, trying another");
            }
            Err(source) => {
                return Err(GossipError::BindTcp {
                    pool,
                    addr: local,
                    source,
                });
            }
        }
    }
}

impl Gossip {
    /// Binds `me.gossip_addr` (UDP, and TCP on the same port number) and
    /// starts gossiping; joins through `join` (retrying until one of them
    /// answers).
    pub async fn start(me: Member, join: Vec<SocketAddr>, cfg: GossipConfig) -> Result<Gossip, GossipError> {
        let keyring = initial_keyring(&cfg)?;
        let (socket, listener) = bind(cfg.pool, me.gossip_addr).await?;
        let mut me = me;
        // Port 0 asked for any free port: advertise the real one.
        if let Ok(a) = socket.local_addr() {
            me.gossip_addr = a;
        }
        let (changed, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            me: me.clone(),
            members: Mutex::new(BTreeMap::from([(
                me.gossip_addr,
                MemberStatus {
                    member: me.clone(),
                    state: MemberState::Alive,
                },
            )])),
            changed,
            keyring: RwLock::new(keyring),
            keyring_file: cfg.keyring_file.clone(),
            keyring_ops: Mutex::new(()),
            dropped: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
            bytes_received: AtomicU64::new(0),
            udp_muted: AtomicBool::new(false),
        });
        let (cmds, rx) = mpsc::channel(16);
        let leave_wait = cfg.leave_propagate_delay + Duration::from_secs(2);
        let span = tracing::info_span!("gossip", pool = cfg.pool, me = %me.name);
        tokio::spawn(tracing::Instrument::instrument(
            runtime::run(socket, listener, me, join, cfg, shared.clone(), rx),
            span,
        ));
        Ok(Gossip {
            shared,
            cmds,
            leave_wait,
        })
    }

    /// Joins through `addr` as well, as with a `--retry-join` address, but
    /// once: for members learnt another way (a server's WAN address from
    /// the LAN pool).
    pub async fn join(&self, addr: SocketAddr) {
        let _ = self.cmds.send(runtime::Command::Join(addr)).await;
    }

    /// This agent as others see it.
    pub fn me(&self) -> &Member {
        &self.shared.me
    }

    /// Every member known, this agent included.
    pub fn members(&self) -> Vec<MemberStatus> {
        self.shared
            .members
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Alive members with `role`.
    pub fn alive(&self, role: Role) -> Vec<Member> {
        self.members()
            .into_iter()
            .filter(|m| m.state == MemberState::Alive && m.member.role == role)
            .map(|m| m.member)
            .collect()
    }

    /// Ticks whenever membership changes.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.shared.changed.subscribe()
    }

    /// Tells the others this agent is leaving (they record it as Left),
    /// then stops. Takes about `leave_propagate_delay`.
    pub async fn leave(&self) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.cmds.send(runtime::Command::Leave(tx)).await.is_ok() {
            let _ = tokio::time::timeout(self.leave_wait, rx).await;
        }
    }

    /// Bytes this agent sent and received in this pool since it started
    /// (UDP datagrams and TCP frames, sealed, without protocol headers).
    pub fn bytes(&self) -> (u64, u64) {
        (
            self.shared.bytes_sent.load(Ordering::Relaxed),
            self.shared.bytes_received.load(Ordering::Relaxed),
        )
    }

    /// Packets and TCP frames dropped because they did not open with the
    /// keyring (another key, or plaintext while encryption is on).
    pub fn dropped_packets(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Whether gossip is encrypted.
    pub fn encrypted(&self) -> bool {
        self.shared.keyring_read().is_some()
    }

    /// The installed gossip keys, base64, the primary first; empty when
    /// encryption is off.
    pub fn keyring_list(&self) -> Vec<String> {
        self.shared
            .keyring_read()
            .as_ref()
            .map(Keyring::list)
            .unwrap_or_default()
    }

    /// Installs a key on this agent: it opens packets from now on.
    pub fn keyring_install(&self, key: &str) -> Result<(), KeyringError> {
        self.change_keyring("installed", |k| k.install(key))
    }

    /// Makes an installed key this agent's primary: it seals packets from
    /// now on.
    pub fn keyring_use(&self, key: &str) -> Result<(), KeyringError> {
        self.change_keyring("made primary", |k| k.use_key(key))
    }

    /// Removes a key (not the primary) from this agent.
    pub fn keyring_remove(&self, key: &str) -> Result<(), KeyringError> {
        self.change_keyring("removed", |k| k.remove(key))
    }

    /// Applies `op` to a copy, saves the copy, then swaps it in: a failed
    /// save changes nothing, and packets never wait for the disk.
    fn change_keyring(
        &self,
        what: &'static str,
        op: impl FnOnce(&mut Keyring) -> Result<(), KeyringError>,
    ) -> Result<(), KeyringError> {
        let _one_at_a_time = self.shared.keyring_ops.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = self
            .shared
            .keyring_read()
            .clone()
            .ok_or(KeyringError::NotEnabled)?;
        op(&mut next)?;
        if let Some(path) = &self.shared.keyring_file {
            next.save(path)?;
        }
        let keys = next.list().len();
        *self.shared.keyring.write().unwrap_or_else(|e| e.into_inner()) = Some(next);
        tracing::info!(keys, "gossip key {what}");
        Ok(())
    }

    /// Drops every UDP datagram in and out, leaving only TCP.
    #[cfg(test)]
    fn mute_udp(&self, muted: bool) {
        self.shared.udp_muted.store(muted, Ordering::Relaxed);
    }
}

impl Shared {
    fn keyring_read(&self) -> std::sync::RwLockReadGuard<'_, Option<Keyring>> {
        self.keyring.read().unwrap_or_else(|e| e.into_inner())
    }

    /// `data` as it goes on the wire: sealed when encryption is on.
    fn seal(&self, data: &[u8]) -> Vec<u8> {
        match &*self.keyring_read() {
            Some(k) => k.seal(data),
            None => data.to_vec(),
        }
    }

    /// What came off the wire, opened when encryption is on. A failure
    /// counts as a dropped packet.
    fn open<'a>(&self, data: &'a [u8]) -> Result<Cow<'a, [u8]>, KeyringError> {
        match &*self.keyring_read() {
            Some(k) => k.open(data).map(Cow::Owned).inspect_err(|_| {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }),
            None => Ok(Cow::Borrowed(data)),
        }
    }

    fn count_sent(&self, n: usize) {
        self.bytes_sent.fetch_add(n as u64, Ordering::Relaxed);
    }

    fn count_received(&self, n: usize) {
        self.bytes_received.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// A member that was recorded Down and turns out to have left.
    fn mark_left(&self, member: &Member) {
        let mut m = self.members.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = m.get_mut(&member.gossip_addr)
            && s.member == *member
            && s.state == MemberState::Down
        {
            s.state = MemberState::Left;
            drop(m);
            self.changed.send_modify(|v| *v += 1);
        }
    }

    fn set(&self, member: Member, state: MemberState) {
        let mut m = self.members.lock().unwrap_or_else(|e| e.into_inner());
        let addr = member.gossip_addr;
        let changed = m
            .get(&addr)
            .is_none_or(|old| old.member != member || old.state != state);
        if changed {
            m.insert(addr, MemberStatus { member, state });
            drop(m);
            self.changed.send_modify(|v| *v += 1);
        }
    }
}
