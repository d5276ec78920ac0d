//! The I/O around foca: one UDP socket and a TCP listener on the same port
//! number, timers on tokio, notifications into the shared member table.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use foca::{AccumulatingRuntime, Foca, OwnedNotification, PostcardCodec, Timer};
use rand::rngs::StdRng;
use rand::seq::IteratorRandom;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::Instrument;

use super::leave::{self, LeaveBroadcasts, LeftSet};
use super::transport::{self, SyncState, Wire};
use super::{GossipConfig, Member, MemberState, Shared};

pub enum Command {
    Leave(oneshot::Sender<()>),
    /// Join through this address too (a member learnt elsewhere).
    Join(SocketAddr),
}

/// What the TCP side hands the runtime, which alone owns foca.
pub(super) enum Inbound {
    /// A foca message that came over TCP.
    Packet { from: SocketAddr, data: Vec<u8> },
    /// A peer's full state, to merge and answer with ours.
    PushPull {
        from: SocketAddr,
        state: SyncState,
        reply: oneshot::Sender<SyncState>,
    },
    /// The end of a push-pull we started: the peer's state, if it answered.
    Synced {
        peer: SocketAddr,
        state: Option<SyncState>,
    },
    /// A peer says it is leaving.
    Leaving { from: SocketAddr, member: Member },
}

type Swim = Foca<Member, PostcardCodec, StdRng, LeaveBroadcasts>;

/// Members told over TCP of a leave, besides the piggybacked broadcast.
const LEAVE_NOTICES: usize = 3;
/// Outbound TCP exchanges at once; past that, oversize packets are dropped
/// as UDP would drop them.
const MAX_OUTBOUND: usize = 64;

fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(1)
}

/// Stops the TCP listener with the runtime.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct Agent {
    foca: Swim,
    rt: AccumulatingRuntime<Member>,
    socket: UdpSocket,
    shared: Arc<Shared>,
    cfg: GossipConfig,
    rng: StdRng,
    timers: mpsc::UnboundedSender<Timer<Member>>,
    inbound: mpsc::Sender<Inbound>,
    left: LeftSet,
    /// Peers we have a push-pull running with.
    syncing: HashSet<SocketAddr>,
    outbound: Arc<Semaphore>,
}

pub(super) async fn run(
    socket: UdpSocket,
    listener: TcpListener,
    mut me: Member,
    join: Vec<SocketAddr>,
    cfg: GossipConfig,
    shared: Arc<Shared>,
    mut cmds: mpsc::Receiver<Command>,
) {
    // A restarted agent must win over its own earlier identity.
    me.incarnation = now_millis();
    let config = cfg
        .swim
        .clone()
        .unwrap_or_else(|| super::tuning::swim_config(cfg.cluster_size));
    let left = LeftSet::default();
    let foca: Swim = Foca::with_custom_broadcast(
        me.clone(),
        config,
        rand::make_rng(),
        PostcardCodec,
        LeaveBroadcasts::new(left.clone()),
    );
    let (timer_tx, mut timer_rx) = mpsc::unbounded_channel::<Timer<Member>>();
    let (inbound_tx, mut inbound_rx) = mpsc::channel::<Inbound>(256);
    let _listener = AbortOnDrop(tokio::spawn(
        transport::serve(listener, shared.clone(), inbound_tx.clone(), cfg.tcp_timeout).in_current_span(),
    ));
    let mut agent = Agent {
        foca,
        rt: AccumulatingRuntime::new(),
        socket,
        shared,
        rng: rand::make_rng(),
        timers: timer_tx,
        inbound: inbound_tx,
        left,
        syncing: HashSet::new(),
        outbound: Arc::new(Semaphore::new(MAX_OUTBOUND)),
        cfg,
    };
    let mut buf = vec![0u8; 65_536];
    let mut joined = join.is_empty();
    let mut retry = tokio::time::interval(agent.cfg.retry_interval);
    let period = agent.cfg.push_pull_interval;
    let mut push_pull = tokio::time::interval_at(Instant::now() + period, period);
    push_pull.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Set once a leave is under way: when to actually leave, and whom to tell.
    let mut leaving: Option<(Instant, oneshot::Sender<()>)> = None;
    let far_future = Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600);

    loop {
        let leave_at = leaving.as_ref().map_or(far_future, |(at, _)| *at);
        tokio::select! {
            r = agent.socket.recv_from(&mut buf) => match r {
                Ok((n, from)) => agent.on_datagram(&buf[..n], from),
                Err(e) => tracing::debug!(error = %e, "gossip socket error"),
            },
            Some(t) = timer_rx.recv() => {
                if let Err(e) = agent.foca.handle_timer(t, &mut agent.rt) {
                    tracing::debug!(error = %e, "gossip timer");
                }
            }
            Some(msg) = inbound_rx.recv() => agent.on_inbound(msg),
            _ = retry.tick() => {
                if !joined {
                    for addr in &join {
                        if *addr != agent.shared.me.gossip_addr {
                            let _ = agent.foca.announce(Member::placeholder(*addr), &mut agent.rt);
                            // Alongside the announce: a full sync over TCP
                            // joins even where UDP is lossy or filtered.
                            agent.start_push_pull(*addr);
                        }
                    }
                }
                agent.read_off_states();
            }
            _ = push_pull.tick() => {
                let peer = agent
                    .foca
                    .iter_members()
                    .map(|m| m.id().gossip_addr)
                    .filter(|a| !agent.syncing.contains(a))
                    .choose(&mut agent.rng);
                if let Some(peer) = peer {
                    agent.start_push_pull(peer);
                }
            }
            _ = tokio::time::sleep_until(leave_at), if leaving.is_some() => {
                if let Err(e) = agent.foca.leave_cluster(&mut agent.rt) {
                    tracing::debug!(error = %e, "leaving the gossip cluster");
                }
                agent.flush().await;
                if let Some((_, done)) = leaving.take() {
                    let _ = done.send(());
                }
                return;
            }
            c = cmds.recv() => match c {
                Some(Command::Leave(done)) => {
                    if leaving.is_none() {
                        let delay = agent.announce_leave();
                        leaving = Some((Instant::now() + delay, done));
                    }
                }
                Some(Command::Join(addr)) => {
                    if addr != agent.shared.me.gossip_addr {
                        let _ = agent.foca.announce(Member::placeholder(addr), &mut agent.rt);
                        agent.start_push_pull(addr);
                    }
                }
                None => return,
            },
        }
        if agent.flush().await {
            joined = true;
        }
    }
}

impl Agent {
    fn on_datagram(&mut self, data: &[u8], from: SocketAddr) {
        if self.shared.udp_muted.load(Ordering::Relaxed) {
            return;
        }
        self.shared.count_received(data.len());
        let plain = match self.shared.open(data) {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(%from, error = %e, "dropped a gossip packet");
                return;
            }
        };
        if let Err(e) = self.foca.handle_data(&plain, &mut self.rt) {
            tracing::debug!(%from, error = %e, "dropped a gossip packet");
        }
    }

    fn on_inbound(&mut self, msg: Inbound) {
        match msg {
            Inbound::Packet { from, data } => {
                if let Err(e) = self.foca.handle_data(&data, &mut self.rt) {
                    tracing::debug!(%from, error = %e, "dropped a gossip message from TCP");
                }
            }
            Inbound::PushPull { from, state, reply } => {
                tracing::debug!(%from, members = state.members.len(), "push-pull asked");
                self.merge(state);
                let _ = reply.send(self.sync_state());
            }
            Inbound::Synced { peer, state } => {
                self.syncing.remove(&peer);
                if let Some(state) = state {
                    tracing::debug!(%peer, members = state.members.len(), "push-pull done");
                    self.merge(state);
                }
            }
            Inbound::Leaving { from, member } => {
                tracing::debug!(%from, member = %member.name, "member announced its leave");
                // Spread it like one heard from gossip: the handler records it.
                if let Err(e) = self.foca.add_broadcast(&leave::intent(&member)) {
                    tracing::debug!(error = %e, "cannot spread a leave intent");
                }
            }
        }
    }

    /// Our full view: every member foca knows (down ones too, so that
    /// stale knowledge elsewhere gets corrected), ourselves, and the leave
    /// intents we remember.
    fn sync_state(&self) -> SyncState {
        let mut members: Vec<foca::Member<Member>> = self
            .foca
            .iter_membership_state()
            .filter(|m| !m.id().is_placeholder())
            .cloned()
            .collect();
        // foca's own incarnation is private; 0 is never newer than what the
        // peer knows of us, so it can only add us, not override.
        members.push(foca::Member::alive(self.foca.identity().clone()));
        SyncState {
            members,
            left: self.left.snapshot(),
        }
    }

    fn merge(&mut self, state: SyncState) {
        for (member, age_ms) in state.left {
            self.left.learn(member, Duration::from_millis(age_ms));
        }
        let updates = state.members.into_iter().filter(|m| !m.id().is_placeholder());
        // Broadcast what is news to us: the peer may be the only one that
        // knew it (a member that joined through it over TCP alone).
        if let Err(e) = self.foca.apply_many(updates, true, &mut self.rt) {
            tracing::debug!(error = %e, "cannot merge a push-pull state");
        }
    }

    fn start_push_pull(&mut self, peer: SocketAddr) {
        if !self.syncing.insert(peer) {
            return;
        }
        let msg = Wire::PushPull(self.sync_state());
        let shared = self.shared.clone();
        let inbound = self.inbound.clone();
        let timeout = self.cfg.tcp_timeout;
        tokio::spawn(
            async move {
                let state = match transport::request(&shared, peer, &msg, true, timeout).await {
                    Ok(Some(Wire::PushPull(state))) => Some(state),
                    Ok(_) => {
                        tracing::debug!(%peer, "push-pull answered with something else");
                        None
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "push-pull failed");
                        None
                    }
                };
                let _ = inbound.send(Inbound::Synced { peer, state }).await;
            }
            .in_current_span(),
        );
    }

    /// Starts a graceful leave: the intent goes out piggybacked and over
    /// TCP to a few members. Returns how long to keep gossiping before
    /// declaring ourselves down, so that the intent gets ahead of the Down.
    fn announce_leave(&mut self) -> Duration {
        let me = self.foca.identity().clone();
        let peers: Vec<SocketAddr> = self
            .foca
            .iter_members()
            .map(|m| m.id().gossip_addr)
            .sample(&mut self.rng, LEAVE_NOTICES);
        tracing::info!(notified = peers.len(), "leaving the gossip cluster");
        if peers.is_empty() {
            return Duration::ZERO;
        }
        if let Err(e) = self.foca.add_broadcast(&leave::intent(&me)) {
            tracing::debug!(error = %e, "cannot broadcast the leave intent");
        }
        // Push the intent out now rather than at the next periodic gossip.
        if let Err(e) = self.foca.gossip(&mut self.rt) {
            tracing::debug!(error = %e, "gossiping the leave intent");
        }
        let delay = self.cfg.leave_propagate_delay;
        for peer in peers {
            let shared = self.shared.clone();
            let msg = Wire::Leaving(me.clone());
            tokio::spawn(
                async move {
                    match transport::request(&shared, peer, &msg, true, delay).await {
                        Ok(Some(Wire::Ack)) => tracing::debug!(%peer, "leave notice acknowledged"),
                        Ok(_) => tracing::debug!(%peer, "leave notice answered with something else"),
                        Err(e) => tracing::debug!(error = %e, "leave notice failed"),
                    }
                }
                .in_current_span(),
            );
        }
        delay
    }

    fn state_of(&self, m: &foca::Member<Member>) -> MemberState {
        match m.state() {
            foca::State::Alive => MemberState::Alive,
            foca::State::Suspect => MemberState::Suspect,
            foca::State::Down if self.left.contains(m.id()) => MemberState::Left,
            foca::State::Down => MemberState::Down,
        }
    }

    /// Suspicion is not a notification in foca: read it off.
    fn read_off_states(&self) {
        for m in self.foca.iter_membership_state() {
            if !m.id().is_placeholder() {
                self.shared.set(m.id().clone(), self.state_of(m));
            }
        }
    }

    /// Sends a foca message: over UDP when it fits a datagram once sealed,
    /// else over TCP.
    async fn send(&self, to: SocketAddr, data: &[u8]) {
        let packet = self.shared.seal(data);
        if packet.len() <= self.cfg.udp_max_datagram {
            if self.shared.udp_muted.load(Ordering::Relaxed) {
                return;
            }
            match self.socket.send_to(&packet, to).await {
                Ok(n) => self.shared.count_sent(n),
                Err(e) => tracing::debug!(%to, error = %e, "gossip send failed"),
            }
            return;
        }
        let Ok(slot) = self.outbound.clone().try_acquire_owned() else {
            tracing::debug!(%to, len = data.len(), "too many gossip TCP sends: dropped a message");
            return;
        };
        let shared = self.shared.clone();
        let msg = Wire::Packet(data.to_vec());
        let timeout = self.cfg.tcp_timeout;
        tokio::spawn(
            async move {
                let _slot = slot;
                if let Err(e) = transport::request(&shared, to, &msg, false, timeout).await {
                    tracing::debug!(error = %e, "gossip send over TCP failed");
                }
            }
            .in_current_span(),
        );
    }

    /// Sends what foca queued, schedules its timers, applies its
    /// notifications. True when some member came up (the join worked).
    async fn flush(&mut self) -> bool {
        while let Some((to, data)) = self.rt.to_send() {
            self.send(to.gossip_addr, &data).await;
        }
        while let Some((after, t)) = self.rt.to_schedule() {
            let tx = self.timers.clone();
            tokio::spawn(async move {
                tokio::time::sleep(after).await;
                let _ = tx.send(t);
            });
        }
        let mut up = false;
        while let Some(n) = self.rt.to_notify() {
            match n {
                OwnedNotification::MemberUp(m) if !m.is_placeholder() => {
                    tracing::info!(member = %m.name, addr = %m.gossip_addr, "member up");
                    self.shared.set(m, MemberState::Alive);
                    up = true;
                }
                OwnedNotification::MemberDown(m) if !m.is_placeholder() => {
                    if self.left.contains(&m) {
                        tracing::info!(member = %m.name, addr = %m.gossip_addr, "member left");
                        self.shared.set(m, MemberState::Left);
                    } else {
                        tracing::info!(member = %m.name, addr = %m.gossip_addr, "member down");
                        self.shared.set(m, MemberState::Down);
                    }
                }
                OwnedNotification::Rename(old, new) => {
                    tracing::debug!(old = %old.name, new = %new.name, "member renamed");
                    // Both identities may be down: take foca's word for it.
                    let state = self
                        .foca
                        .iter_membership_state()
                        .find(|m| m.id() == &new)
                        .map_or(MemberState::Alive, |m| self.state_of(m));
                    self.shared.set(new, state);
                }
                _ => {}
            }
        }
        // Intents heard after the member's Down turn that Down into Left.
        for m in self.left.take_fresh() {
            self.shared.mark_left(&m);
        }
        up
    }
}
