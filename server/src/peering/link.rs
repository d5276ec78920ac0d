//! One open peering stream, run the same way by both sides: this side's
//! resources (identity and exports to the peer) go out whenever they
//! change, each with a new nonce, and the peer acknowledges them; the
//! peer's are written into Raft (`ImportsReplace`) when they differ from
//! what is held, then acknowledged. Heartbeats keep a quiet link alive;
//! silence for `IDLE_LIMIT` ends it.

use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tribune_proto::v1 as pb;
use tribune_proto::v1::peer_message::Msg;

use super::PeeringCtx;
use super::exports::{exported, identity, identity_from_pb, identity_to_pb, service_from_pb, service_to_pb};
use crate::catalog::command::Command;
use crate::catalog::peering::{PeeringCommand, PeeringState};
use crate::mesh::now_unix;

/// How often this side looks for changes to send.
const TICK: Duration = Duration::from_millis(200);
/// A heartbeat when nothing else was sent for this long.
pub(crate) const HEARTBEAT: Duration = Duration::from_secs(5);
/// How long a side that terminated waits for the peer to hang up.
const GOODBYE: Duration = Duration::from_secs(3);
/// A link that heard nothing for this long is dead.
pub(crate) const IDLE_LIMIT: Duration = Duration::from_secs(15);

/// How a link ended.
#[derive(Debug)]
pub(crate) enum LinkEnd {
    /// Either side deleted the peering.
    Terminated,
    Failed(String),
}

fn msg(m: Msg) -> pb::PeerMessage {
    pb::PeerMessage { msg: Some(m) }
}

/// Sends `m`, counting its bytes.
async fn send(
    ctx: &PeeringCtx,
    out: &mpsc::Sender<pb::PeerMessage>,
    m: pb::PeerMessage,
) -> Result<(), mpsc::error::SendError<pb::PeerMessage>> {
    ctx.count("sent", prost::Message::encoded_len(&m));
    out.send(m).await
}

/// Runs the link for peering `name` until it ends.
pub(crate) async fn run(
    ctx: &PeeringCtx,
    name: &str,
    mut inbound: tonic::Streaming<pb::PeerMessage>,
    out: mpsc::Sender<pb::PeerMessage>,
) -> LinkEnd {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_sent: Option<pb::PeerResources> = None;
    let mut nonce = 0u64;
    let mut sent_at = Instant::now();
    let mut heard_at = Instant::now();
    let mut active = false;
    let applied = ctx.state.applied();
    let mut looked_at: Option<u64> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                // What this side has for the peer now: looked at again only
                // once the state has moved.
                let index = *applied.borrow();
                let now_res = if looked_at == Some(index) {
                    Ok(None)
                } else {
                    looked_at = Some(index);
                    let d = ctx.state.read();
                    let c = &d.catalog;
                    match c.peering().peerings.get(name) {
                        None => Err(false),
                        Some(p) if p.state == PeeringState::Terminated => Err(true),
                        Some(_) => Ok(identity(c, &ctx.datacenter).map(|id| pb::PeerResources {
                            nonce: String::new(),
                            identity: Some(identity_to_pb(&id)),
                            services: exported(c, name, &ctx.datacenter).iter().map(service_to_pb).collect(),
                        })),
                    }
                };
                let now_res = match now_res {
                    Ok(r) => r,
                    Err(tell) => {
                        if tell {
                            let _ = send(ctx, &out, msg(Msg::Terminated(pb::PeerTerminated {}))).await;
                            // Until the peer hangs up: dropping the stream at
                            // once could reset it before the message leaves.
                            let _ = tokio::time::timeout(GOODBYE, async {
                                while let Ok(Some(_)) = inbound.message().await {}
                            })
                            .await;
                        }
                        return LinkEnd::Terminated;
                    }
                };
                if let Some(res) = now_res
                    && last_sent.as_ref() != Some(&res)
                {
                    nonce += 1;
                    let mut with_nonce = res.clone();
                    with_nonce.nonce = nonce.to_string();
                    if send(ctx, &out, msg(Msg::Resources(with_nonce))).await.is_err() {
                        return LinkEnd::Failed("the stream to the peer closed".into());
                    }
                    last_sent = Some(res);
                    sent_at = Instant::now();
                } else if sent_at.elapsed() >= HEARTBEAT {
                    if send(ctx, &out, msg(Msg::Heartbeat(pb::PeerHeartbeat {}))).await.is_err() {
                        return LinkEnd::Failed("the stream to the peer closed".into());
                    }
                    sent_at = Instant::now();
                }
                if heard_at.elapsed() > IDLE_LIMIT {
                    return LinkEnd::Failed(format!("nothing from the peer for {}s", IDLE_LIMIT.as_secs()));
                }
            }
            m = inbound.message() => {
                let m = match m {
                    Ok(Some(m)) => m,
                    Ok(None) => return LinkEnd::Failed("the peer closed the stream".into()),
                    Err(s) => return LinkEnd::Failed(format!("the stream failed: {}", s.message())),
                };
                heard_at = Instant::now();
                ctx.count("received", prost::Message::encoded_len(&m));
                ctx.links.seen(name, now_unix());
                if !active {
                    active = true;
                    set_status(ctx, name, PeeringState::Active, "").await;
                }
                match m.msg {
                    Some(Msg::Resources(r)) => {
                        let error = match receive(ctx, name, &r).await {
                            Ok(()) => String::new(),
                            Err(e) => {
                                tracing::warn!(peer = %name, error = %e, "refused the peer's resources");
                                e
                            }
                        };
                        let ack = msg(Msg::Ack(pb::PeerAck { nonce: r.nonce, error }));
                        if send(ctx, &out, ack).await.is_err() {
                            return LinkEnd::Failed("the stream to the peer closed".into());
                        }
                    }
                    Some(Msg::Ack(a)) if !a.error.is_empty() => {
                        tracing::warn!(peer = %name, nonce = %a.nonce, error = %a.error, "the peer refused our resources");
                    }
                    Some(Msg::Terminated(_)) => {
                        tracing::info!(peer = %name, "the peer deleted the peering");
                        propose(ctx, PeeringCommand::Terminate { name: name.to_string() }).await;
                        return LinkEnd::Terminated;
                    }
                    _ => {}
                }
            }
        }
    }
}

/// Checks the peer's resources and writes them when they differ from what
/// is held.
async fn receive(ctx: &PeeringCtx, name: &str, r: &pb::PeerResources) -> Result<(), String> {
    let identity = r
        .identity
        .as_ref()
        .map(identity_from_pb)
        .ok_or("identity: missing")?;
    if identity.roots_pem.is_empty() {
        return Err("identity.roots_pem: empty".into());
    }
    let services = r
        .services
        .iter()
        .map(service_from_pb)
        .collect::<Result<Vec<_>, _>>()?;
    let unchanged = {
        let d = ctx.state.read();
        d.catalog.peering().peerings.get(name).is_some_and(|p| {
            p.imported == services
                && p.peer.roots_pem == identity.roots_pem
                && p.peer.server_addresses == identity.server_addresses
                && p.peer.trust_domain == identity.trust_domain
        })
    };
    if !unchanged {
        propose(
            ctx,
            PeeringCommand::ImportsReplace {
                name: name.to_string(),
                identity,
                services,
            },
        )
        .await;
    }
    Ok(())
}

/// Writes the link's state when it changed.
pub(crate) async fn set_status(ctx: &PeeringCtx, name: &str, state: PeeringState, error: &str) {
    let current = ctx
        .state
        .read()
        .catalog
        .peering()
        .peerings
        .get(name)
        .map(|p| p.state);
    match current {
        None | Some(PeeringState::Terminated) => return,
        Some(s) if s == state => return,
        // A stream that never came up leaves a pending peering pending.
        Some(PeeringState::Pending) if state == PeeringState::Failing => return,
        _ => {}
    }
    propose(
        ctx,
        PeeringCommand::Status {
            name: name.to_string(),
            state,
            last_error: error.to_string(),
            at_unix: now_unix(),
        },
    )
    .await;
}

pub(crate) async fn propose(ctx: &PeeringCtx, cmd: PeeringCommand) {
    if let Err(e) = ctx.writer.propose(Command::Peering(cmd)).await {
        tracing::warn!(error = %e, "could not write a peering change");
    }
}
