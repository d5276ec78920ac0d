//! The I/O around foca: one UDP socket, timers on tokio, notifications
//! into the shared member table.

use std::net::SocketAddr;
use std::sync::Arc;

use foca::{AccumulatingRuntime, Foca, OwnedNotification, PostcardCodec, Timer};
use rand::rngs::StdRng;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

use super::{GossipConfig, Member, MemberState, Shared};

pub enum Command {
    Leave(oneshot::Sender<()>),
}

type Swim = Foca<Member, PostcardCodec, StdRng, foca::NoCustomBroadcast>;

fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(1)
}

pub(super) async fn run(
    socket: UdpSocket,
    mut me: Member,
    join: Vec<SocketAddr>,
    cfg: GossipConfig,
    shared: Arc<Shared>,
    mut cmds: mpsc::Receiver<Command>,
) {
    // A restarted agent must win over its own earlier identity.
    me.incarnation = now_millis();
    let config = super::tuning::swim_config(cfg.cluster_size);
    let rng: StdRng = rand::make_rng();
    let mut foca: Swim = Foca::new(me.clone(), config, rng, PostcardCodec);
    let mut rt = AccumulatingRuntime::new();
    let (timer_tx, mut timer_rx) = mpsc::unbounded_channel::<Timer<Member>>();
    let mut buf = vec![0u8; 65_536];
    let mut joined = join.is_empty();
    let mut retry = tokio::time::interval(cfg.retry_interval);

    loop {
        tokio::select! {
            r = socket.recv_from(&mut buf) => match r {
                Ok((n, from)) => {
                    if let Err(e) = foca.handle_data(&buf[..n], &mut rt) {
                        tracing::debug!(%from, error = %e, "dropped a gossip packet");
                    }
                }
                Err(e) => tracing::debug!(error = %e, "gossip socket error"),
            },
            Some(t) = timer_rx.recv() => {
                if let Err(e) = foca.handle_timer(t, &mut rt) {
                    tracing::debug!(error = %e, "gossip timer");
                }
            }
            _ = retry.tick() => {
                if !joined {
                    for addr in &join {
                        if *addr != me.gossip_addr {
                            let _ = foca.announce(Member::placeholder(*addr), &mut rt);
                        }
                    }
                }
                // Suspicion is not a notification in foca: read it off.
                for m in foca.iter_membership_state() {
                    let state = match m.state() {
                        foca::State::Alive => MemberState::Alive,
                        foca::State::Suspect => MemberState::Suspect,
                        foca::State::Down => MemberState::Down,
                    };
                    if !m.id().is_placeholder() {
                        shared.set(m.id().clone(), state);
                    }
                }
            }
            c = cmds.recv() => match c {
                Some(Command::Leave(done)) => {
                    let _ = foca.leave_cluster(&mut rt);
                    flush(&socket, &mut rt, &timer_tx, &shared).await;
                    let _ = done.send(());
                    return;
                }
                None => return,
            },
        }
        if flush(&socket, &mut rt, &timer_tx, &shared).await {
            joined = true;
        }
    }
}

/// Sends what foca queued, schedules its timers, applies its
/// notifications. True when some member came up (the join worked).
async fn flush(
    socket: &UdpSocket,
    rt: &mut AccumulatingRuntime<Member>,
    timers: &mpsc::UnboundedSender<Timer<Member>>,
    shared: &Shared,
) -> bool {
    while let Some((to, data)) = rt.to_send() {
        if let Err(e) = socket.send_to(&data, to.gossip_addr).await {
            tracing::debug!(to = %to.gossip_addr, error = %e, "gossip send failed");
        }
    }
    while let Some((after, t)) = rt.to_schedule() {
        let tx = timers.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let _ = tx.send(t);
        });
    }
    let mut up = false;
    while let Some(n) = rt.to_notify() {
        match n {
            OwnedNotification::MemberUp(m) if !m.is_placeholder() => {
                tracing::info!(member = %m.name, addr = %m.gossip_addr, "member up");
                shared.set(m, MemberState::Alive);
                up = true;
            }
            OwnedNotification::MemberDown(m) if !m.is_placeholder() => {
                tracing::info!(member = %m.name, addr = %m.gossip_addr, "member down");
                shared.set(m, MemberState::Down);
            }
            OwnedNotification::Rename(old, new) => {
                tracing::debug!(old = %old.name, new = %new.name, "member renamed");
                shared.set(new, MemberState::Alive);
            }
            _ => {}
        }
    }
    up
}
