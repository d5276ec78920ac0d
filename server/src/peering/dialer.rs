//! Leader duties: on the dialing side, one stream open to each peer this
//! cluster dialled, re-opened after a failure, a leader change or a
//! restart; on every side, imports dropped once a peer has been
//! unreachable for `IMPORT_RETENTION`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tribune_client::tls::{ServerCheck, TlsConnector, Trust, certs_from_pem, client_config};
use tribune_proto::v1 as pb;
use tribune_proto::v1::peer_message::Msg;
use tribune_proto::v1::peer_stream_client::PeerStreamClient;

use super::PeeringCtx;
use super::link::{self, LinkEnd};
use crate::catalog::peering::{PeerIdentity, PeeringCommand, PeeringRole, PeeringState};
use crate::mesh::now_unix;

/// How long imports outlive a peer that cannot be reached.
pub(crate) const IMPORT_RETENTION: Duration = Duration::from_secs(72 * 3600);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// A TLS channel to one of the peer's servers, trusting its roots and
/// checking the name its servers present.
pub(crate) fn channel(peer: &PeerIdentity, addr: &str) -> Result<tonic::transport::Channel, String> {
    let mut roots = Vec::new();
    for pem in &peer.roots_pem {
        roots.extend(certs_from_pem(pem, "peer CA").map_err(|e| e.to_string())?);
    }
    let check = ServerCheck::named(Some(&peer.server_name)).map_err(|e| e.to_string())?;
    let tls = TlsConnector::new(client_config(Trust::new(roots), check, None), None);
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| format!("{addr}: {e}"))?
        .connect_timeout(CONNECT_TIMEOUT)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5));
    Ok(endpoint.connect_with_connector_lazy(tls))
}

pub(crate) async fn run(ctx: Arc<PeeringCtx>) {
    let mut links: HashMap<String, JoinHandle<()>> = HashMap::new();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if !ctx.leadership.leads_caught_up() {
            for (_, h) in links.drain() {
                h.abort();
            }
            continue;
        }
        let (dialed, known, stale): (Vec<String>, Vec<String>, Vec<String>) = {
            let d = ctx.state.read();
            let peerings = &d.catalog.peering().peerings;
            let dialed = peerings
                .values()
                .filter(|p| p.role == PeeringRole::Dialer && p.state != PeeringState::Terminated)
                .map(|p| p.name.clone())
                .collect();
            let known = peerings.keys().cloned().collect();
            let now = now_unix();
            let stale = peerings
                .values()
                .filter(|p| p.state == PeeringState::Failing && !p.imported.is_empty())
                .filter(|p| {
                    p.down_since_unix
                        .is_some_and(|t| now - t > IMPORT_RETENTION.as_secs() as i64)
                })
                .map(|p| p.name.clone())
                .collect();
            (dialed, known, stale)
        };
        // A link whose peering was deleted here ends by itself once it has
        // told the peer; only a removed record stops it at once.
        links.retain(|name, h| {
            let keep = known.contains(name) && !h.is_finished();
            if !keep {
                h.abort();
            }
            keep
        });
        for name in dialed {
            links
                .entry(name.clone())
                .or_insert_with(|| tokio::spawn(keep_open(ctx.clone(), name)));
        }
        for name in stale {
            tracing::warn!(peer = %name, "dropping the imports of a peer unreachable for too long");
            let identity = ctx
                .state
                .read()
                .catalog
                .peering()
                .peerings
                .get(&name)
                .map(|p| p.peer.clone())
                .unwrap_or_default();
            link::propose(
                &ctx,
                PeeringCommand::ImportsReplace {
                    name,
                    identity,
                    services: Vec::new(),
                },
            )
            .await;
        }
    }
}

/// Keeps a stream open to peer `name` until the peering ends.
async fn keep_open(ctx: Arc<PeeringCtx>, name: String) {
    let mut backoff = Duration::from_millis(200);
    loop {
        match dial(&ctx, &name).await {
            LinkEnd::Terminated => return,
            LinkEnd::Failed(e) => {
                tracing::warn!(peer = %name, error = %e, "peering stream down; dialling again");
                link::set_status(&ctx, &name, PeeringState::Failing, &e).await;
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// One stream to the first of the peer's servers that takes it.
async fn dial(ctx: &PeeringCtx, name: &str) -> LinkEnd {
    let Some(p) = ctx.state.read().catalog.peering().peerings.get(name).cloned() else {
        return LinkEnd::Terminated;
    };
    let Some(secret) = p.stream_secret.clone() else {
        return LinkEnd::Failed("no stream secret".into());
    };
    let mut errors = Vec::new();
    for addr in &p.peer.server_addresses {
        let ch = match channel(&p.peer, addr) {
            Ok(ch) => ch,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        let (tx, rx) = mpsc::channel(16);
        let open = pb::PeerMessage {
            msg: Some(Msg::Open(pb::PeerOpen {
                peer_id: p.id.clone(),
                stream_secret: secret.clone(),
            })),
        };
        if tx.send(open).await.is_err() {
            continue;
        }
        match PeerStreamClient::new(ch).stream(ReceiverStream::new(rx)).await {
            Ok(resp) => {
                tracing::info!(peer = %name, %addr, "peering stream open");
                return link::run(ctx, name, resp.into_inner(), tx).await;
            }
            Err(s) if s.code() == tonic::Code::FailedPrecondition && s.message().contains("terminated") => {
                tracing::info!(peer = %name, "the peer deleted the peering");
                link::propose(
                    ctx,
                    PeeringCommand::Terminate {
                        name: name.to_string(),
                    },
                )
                .await;
                return LinkEnd::Terminated;
            }
            Err(s) => errors.push(format!("{addr}: {}", s.message())),
        }
    }
    LinkEnd::Failed(if errors.is_empty() {
        "the peer names no server".into()
    } else {
        errors.join("; ")
    })
}
