//! LAN gossip membership: SWIM (with suspicion) via `foca`, over UDP.
//!
//! foca does no I/O: this module owns the socket and the timers and feeds
//! foca what arrives. Every member carries its name, role, datacenter and
//! the addresses of its server RPC and gRPC ports, so servers can find each
//! other from a single `--retry-join` address.

mod identity;
pub mod keyring;
mod runtime;
pub mod tuning;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use identity::{Member, Role};
pub use keyring::{Keyring, KeyringError};
use tokio::net::UdpSocket;
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
    #[error("cannot bind the LAN gossip port {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// A handle on the running gossip agent.
#[derive(Clone)]
pub struct Gossip {
    shared: Arc<Shared>,
    cmds: mpsc::Sender<runtime::Command>,
}

struct Shared {
    me: Member,
    members: Mutex<BTreeMap<SocketAddr, MemberStatus>>,
    changed: watch::Sender<u64>,
}

/// Settings of the gossip layer.
#[derive(Clone, Debug)]
pub struct GossipConfig {
    /// Expected cluster size, which tunes SWIM's timings.
    pub cluster_size: u32,
    /// How often to retry `--retry-join` addresses until one answers.
    pub retry_interval: Duration,
}

impl Default for GossipConfig {
    fn default() -> Self {
        GossipConfig {
            cluster_size: 16,
            retry_interval: Duration::from_secs(1),
        }
    }
}

impl Gossip {
    /// Binds `me.gossip_addr` and starts gossiping; joins through `join`
    /// (retrying until one of them answers).
    pub async fn start(me: Member, join: Vec<SocketAddr>, cfg: GossipConfig) -> Result<Gossip, GossipError> {
        let socket = UdpSocket::bind(me.gossip_addr)
            .await
            .map_err(|source| GossipError::Bind {
                addr: me.gossip_addr,
                source,
            })?;
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
        });
        let (cmds, rx) = mpsc::channel(16);
        let span = tracing::info_span!("gossip", me = %me.name);
        tokio::spawn(tracing::Instrument::instrument(
            runtime::run(socket, me, join, cfg, shared.clone(), rx),
            span,
        ));
        Ok(Gossip { shared, cmds })
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

    /// Tells the others this agent is leaving, then stops.
    pub async fn leave(&self) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.cmds.send(runtime::Command::Leave(tx)).await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(2), rx).await;
        }
    }
}

impl Shared {
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
