//! `tribune.v1.PeerStream`, on the accepting cluster: a dialer trades the
//! token's one-time secret for a stream secret, then opens the stream with
//! it. Any server answers; what it learns goes through Raft.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tribune_proto::v1 as pb;
use tribune_proto::v1::peer_message::Msg;
use tribune_proto::v1::peer_stream_server::PeerStream;

use super::link::{self, LinkEnd};
use super::{PeeringCtx, sha256};
use crate::catalog::command::{Command, Outcome};
use crate::catalog::peering::{PeeringCommand, PeeringRole, PeeringState};

/// How long a dialer has to send its first message.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) struct PeerStreamApi {
    pub(crate) ctx: Arc<PeeringCtx>,
}

type PeerMessages = Pin<Box<dyn Stream<Item = Result<pb::PeerMessage, Status>> + Send>>;

#[tonic::async_trait]
impl PeerStream for PeerStreamApi {
    async fn exchange_secret(
        &self,
        req: Request<pb::ExchangeSecretRequest>,
    ) -> Result<Response<pb::ExchangeSecretResponse>, Status> {
        let r = req.into_inner();
        let (name, hash) = {
            let d = self.ctx.state.read();
            let p = d
                .catalog
                .peering()
                .by_id(&r.peer_id)
                .filter(|p| p.role == PeeringRole::Acceptor)
                .ok_or_else(|| {
                    Status::not_found(
                        "no peering has this token's ID here: it was deleted, or a newer token replaced it",
                    )
                })?;
            if p.state == PeeringState::Terminated {
                return Err(Status::failed_precondition(format!(
                    "peering {} was deleted here: generate a new token",
                    p.name
                )));
            }
            (p.name.clone(), p.establishment_sha256.clone())
        };
        let Some(hash) = hash else {
            return Err(Status::failed_precondition(format!(
                "peering {name} has used its token already: generate a new one"
            )));
        };
        if hash != sha256(&r.establishment_secret) {
            return Err(Status::unauthenticated(format!(
                "the token's secret is not peering {name}'s (a newer token replaced it?)"
            )));
        }
        let dialer = r
            .dialer
            .as_ref()
            .map(super::exports::identity_from_pb)
            .ok_or_else(|| Status::invalid_argument("dialer: required"))?;
        let secret = uuid::Uuid::new_v4().to_string();
        let cmd = Command::Peering(PeeringCommand::SecretTraded {
            id: r.peer_id.clone(),
            stream_secret_sha256: sha256(&secret),
            dialer,
        });
        match self.ctx.writer.propose(cmd).await {
            Ok((_, Outcome::PeeringUpdated)) => {}
            Ok((_, Outcome::Invalid { message, .. })) => return Err(Status::failed_precondition(message)),
            Ok((_, other)) => return Err(Status::failed_precondition(format!("{other:?}"))),
            Err(e) => return Err(Status::unavailable(e.to_string())),
        }
        tracing::info!(peer = %name, "a dialer presented the peering token");
        Ok(Response::new(pb::ExchangeSecretResponse {
            stream_secret: secret,
        }))
    }

    type StreamStream = PeerMessages;

    async fn stream(
        &self,
        req: Request<Streaming<pb::PeerMessage>>,
    ) -> Result<Response<PeerMessages>, Status> {
        let mut inbound = req.into_inner();
        let first = tokio::time::timeout(OPEN_TIMEOUT, inbound.message())
            .await
            .map_err(|_| Status::deadline_exceeded("no open message"))??;
        let Some(pb::PeerMessage {
            msg: Some(Msg::Open(open)),
        }) = first
        else {
            return Err(Status::invalid_argument("the first message must be open"));
        };
        let name = {
            let d = self.ctx.state.read();
            let p = d
                .catalog
                .peering()
                .by_id(&open.peer_id)
                .filter(|p| p.role == PeeringRole::Acceptor)
                .ok_or_else(|| Status::not_found("no peering has this ID here"))?;
            if p.state == PeeringState::Terminated {
                return Err(Status::failed_precondition(format!(
                    "peering {} was deleted here (terminated)",
                    p.name
                )));
            }
            if p.stream_secret_sha256.as_deref() != Some(sha256(&open.stream_secret).as_str()) {
                return Err(Status::unauthenticated("the stream secret is not this peering's"));
            }
            p.name.clone()
        };
        tracing::info!(peer = %name, "peering stream opened");
        let (tx, rx) = mpsc::channel(16);
        let ctx = self.ctx.clone();
        let generation = ctx.links.begin(&name);
        tokio::spawn(async move {
            match link::run(&ctx, &name, inbound, tx).await {
                LinkEnd::Terminated => tracing::info!(peer = %name, "peering terminated"),
                LinkEnd::Failed(e) => {
                    tracing::warn!(peer = %name, error = %e, "peering stream ended");
                    if ctx.links.is_latest(&name, generation) {
                        link::set_status(&ctx, &name, PeeringState::Failing, &e).await;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx).map(Ok))))
    }
}
