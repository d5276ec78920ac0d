//! `tribune.v1.Peering`: tokens, establishment, status, exports and
//! imports. Writes go through Raft; what is read is this server's state.

use std::sync::Arc;
use std::time::Duration;

use tonic::{Request, Response, Status};
use tribune_proto::v1 as pb;
use tribune_proto::v1::peering_server::Peering;

use super::exports::{identity, identity_to_pb, service_to_pb};
use super::token::PeeringToken;
use super::{PeeringCtx, sha256};
use crate::acl::Caller;
use crate::catalog::command::{Command, Outcome};
use crate::catalog::peering::{self as model, PeerIdentity, PeeringCommand, PeeringRole, PeeringState};
use crate::catalog::validate;

/// How long establishing tries the peer's servers.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(5);
const RETRY_PAUSE: Duration = Duration::from_millis(250);

pub(crate) struct PeeringApi {
    pub(crate) ctx: Arc<PeeringCtx>,
}

fn invalid(e: validate::FieldError) -> Status {
    Status::invalid_argument(e.to_string())
}

impl PeeringApi {
    async fn write(&self, cmd: PeeringCommand) -> Result<u64, Status> {
        match self.ctx.writer.propose(Command::Peering(cmd)).await {
            Ok((index, Outcome::PeeringUpdated)) => Ok(index),
            Ok((_, Outcome::NotFound { what })) => Err(Status::not_found(format!("no {what}"))),
            Ok((_, Outcome::Invalid { field, message })) => {
                Err(Status::failed_precondition(format!("{field}: {message}")))
            }
            Ok((_, other)) => Err(Status::internal(format!("unexpected outcome {other:?}"))),
            Err(e) => Err(crate::api::propose_error(e)),
        }
    }

    fn info(&self, p: &model::Peering) -> pb::PeeringInfo {
        let exported = self.ctx.state.read().catalog.peering().exported_to(&p.name);
        pb::PeeringInfo {
            name: p.name.clone(),
            id: p.id.clone(),
            state: p.state.as_str().into(),
            role: match p.role {
                PeeringRole::Acceptor => "ACCEPTOR",
                PeeringRole::Dialer => "DIALER",
            }
            .into(),
            peer_trust_domain: p.peer.trust_domain.clone(),
            peer_datacenter: p.peer.datacenter.clone(),
            peer_server_addresses: p.peer.server_addresses.clone(),
            imported_services: p.imported.len() as u32,
            exported_services: exported.len() as u32,
            last_heartbeat_unix: self.ctx.links.last_seen(&p.name),
            last_error: p.last_error.clone(),
            create_index: p.create_index,
            modify_index: p.modify_index,
            exported,
        }
    }

    /// Lets `r.peer` import `r.service`, or (`export` false) no longer.
    async fn set_export(
        &self,
        r: pb::PeeringExportRequest,
        export: bool,
    ) -> Result<Response<pb::PeeringExportResponse>, Status> {
        validate::service_name("service", &r.service).map_err(invalid)?;
        validate::node_name("peer", &r.peer).map_err(invalid)?;
        let (service, peer) = (r.service, r.peer);
        let cmd = if export {
            PeeringCommand::Export { service, peer }
        } else {
            PeeringCommand::Unexport { service, peer }
        };
        let index = self.write(cmd).await?;
        Ok(Response::new(pb::PeeringExportResponse { index }))
    }

    fn get(&self, name: &str) -> Result<model::Peering, Status> {
        self.ctx
            .state
            .read()
            .catalog
            .peering()
            .peerings
            .get(name)
            .cloned()
            .ok_or_else(|| Status::not_found(format!("no peering {name}")))
    }
}

/// Trades the token's secret at the first of its servers that answers.
async fn exchange(token: &PeeringToken, me: &PeerIdentity) -> Result<String, Status> {
    let peer = PeerIdentity {
        trust_domain: token.trust_domain.clone(),
        datacenter: token.datacenter.clone(),
        roots_pem: token.ca_pem.clone(),
        server_addresses: token.server_addresses.clone(),
        server_name: token.server_name.clone(),
    };
    // A server that has just started may not have its certificate yet:
    // transport errors are retried until the deadline.
    let deadline = tokio::time::Instant::now() + EXCHANGE_TIMEOUT;
    let mut errors = Vec::new();
    loop {
        errors.clear();
        for addr in &token.server_addresses {
            let ch = match super::dialer::channel(&peer, addr) {
                Ok(ch) => ch,
                Err(e) => {
                    errors.push(format!("{addr}: {e}"));
                    continue;
                }
            };
            let req = pb::ExchangeSecretRequest {
                peer_id: token.peer_id.clone(),
                establishment_secret: token.establishment_secret.clone(),
                dialer: Some(identity_to_pb(me)),
            };
            let mut client = tribune_proto::v1::peer_stream_client::PeerStreamClient::new(ch);
            match tokio::time::timeout_at(deadline, client.exchange_secret(req)).await {
                Ok(Ok(r)) => return Ok(r.into_inner().stream_secret),
                // The acceptor answered: its word is final.
                Ok(Err(s)) if s.code() != tonic::Code::Unavailable && s.code() != tonic::Code::Unknown => {
                    return Err(Status::new(
                        s.code(),
                        format!("the peer refused the token: {}", s.message()),
                    ));
                }
                Ok(Err(s)) => errors.push(format!("{addr}: {}", s.message())),
                Err(_) => errors.push(format!(
                    "{addr}: no answer within {}s",
                    EXCHANGE_TIMEOUT.as_secs()
                )),
            }
        }
        if tokio::time::Instant::now() + RETRY_PAUSE >= deadline {
            break;
        }
        tokio::time::sleep(RETRY_PAUSE).await;
    }
    // Not UNAVAILABLE: this cluster is fine, and a client should not retry.
    Err(Status::failed_precondition(format!(
        "could not reach the peer's servers named in the token: {}",
        errors.join("; ")
    )))
}

#[tonic::async_trait]
impl Peering for PeeringApi {
    async fn generate_token(
        &self,
        req: Request<pb::PeeringGenerateTokenRequest>,
    ) -> Result<Response<pb::PeeringGenerateTokenResponse>, Status> {
        let name = req.into_inner().name;
        validate::node_name("name", &name).map_err(invalid)?;
        let (me, existing) = {
            let d = self.ctx.state.read();
            (
                identity(&d.catalog, &self.ctx.datacenter),
                d.catalog.peering().peerings.get(&name).cloned(),
            )
        };
        let mut me =
            me.ok_or_else(|| Status::unavailable("the CA is not initialized yet; retry in a moment"))?;
        if me.server_addresses.is_empty()
            && let Some(own) = &self.ctx.tls_addr
        {
            me.server_addresses.push(own.clone());
        }
        if me.server_addresses.is_empty() {
            return Err(Status::failed_precondition(
                "no server has a gRPC TLS port (--grpc-tls-addr): peers reach this cluster there",
            ));
        }
        if let Some(p) = &existing
            && p.role == PeeringRole::Dialer
            && p.state != PeeringState::Terminated
        {
            return Err(Status::already_exists(format!(
                "peering {name} was established from here with another cluster's token: delete it first"
            )));
        }
        let secret = uuid::Uuid::new_v4().to_string();
        let peering = model::Peering {
            name: name.clone(),
            id: uuid::Uuid::new_v4().to_string(),
            role: PeeringRole::Acceptor,
            state: PeeringState::Pending,
            establishment_sha256: Some(sha256(&secret)),
            stream_secret_sha256: None,
            stream_secret: None,
            peer: PeerIdentity::default(),
            imported: Vec::new(),
            last_error: String::new(),
            down_since_unix: None,
            create_index: 0,
            modify_index: 0,
        };
        let token = PeeringToken {
            peer_id: peering.id.clone(),
            establishment_secret: secret,
            ca_pem: me.roots_pem.clone(),
            server_addresses: me.server_addresses.clone(),
            server_name: me.server_name.clone(),
            trust_domain: me.trust_domain.clone(),
            datacenter: me.datacenter.clone(),
        };
        let peer_id = peering.id.clone();
        let index = self.write(PeeringCommand::Upsert(Box::new(peering))).await?;
        Ok(Response::new(pb::PeeringGenerateTokenResponse {
            token: token.encode(),
            peer_id,
            index,
        }))
    }

    async fn establish(
        &self,
        req: Request<pb::PeeringEstablishRequest>,
    ) -> Result<Response<pb::PeeringEstablishResponse>, Status> {
        let r = req.into_inner();
        validate::node_name("name", &r.name).map_err(invalid)?;
        let token = PeeringToken::decode(&r.token).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let (me, existing) = {
            let d = self.ctx.state.read();
            (
                identity(&d.catalog, &self.ctx.datacenter),
                d.catalog.peering().peerings.get(&r.name).cloned(),
            )
        };
        let me = me.ok_or_else(|| Status::unavailable("the CA is not initialized yet; retry in a moment"))?;
        if me.trust_domain == token.trust_domain {
            return Err(Status::invalid_argument(
                "token: it was made by this cluster; present it to another one",
            ));
        }
        if let Some(p) = existing.filter(|p| p.state != PeeringState::Terminated) {
            return Err(Status::already_exists(format!(
                "peering {} exists ({}): delete it first",
                p.name,
                p.state.as_str()
            )));
        }
        let stream_secret = exchange(&token, &me).await?;
        let peering = model::Peering {
            name: r.name.clone(),
            id: token.peer_id.clone(),
            role: PeeringRole::Dialer,
            state: PeeringState::Establishing,
            establishment_sha256: None,
            stream_secret_sha256: None,
            stream_secret: Some(stream_secret),
            peer: PeerIdentity {
                trust_domain: token.trust_domain.clone(),
                datacenter: token.datacenter.clone(),
                roots_pem: token.ca_pem.clone(),
                server_addresses: token.server_addresses.clone(),
                server_name: token.server_name.clone(),
            },
            imported: Vec::new(),
            last_error: String::new(),
            down_since_unix: None,
            create_index: 0,
            modify_index: 0,
        };
        let index = self.write(PeeringCommand::Upsert(Box::new(peering))).await?;
        tracing::info!(peer = %r.name, "peering established; the leader opens its stream");
        Ok(Response::new(pb::PeeringEstablishResponse {
            peer_id: token.peer_id,
            index,
        }))
    }

    async fn list(
        &self,
        _req: Request<pb::PeeringListRequest>,
    ) -> Result<Response<pb::PeeringListResponse>, Status> {
        let all: Vec<model::Peering> = self
            .ctx
            .state
            .read()
            .catalog
            .peering()
            .peerings
            .values()
            .cloned()
            .collect();
        Ok(Response::new(pb::PeeringListResponse {
            peerings: all.iter().map(|p| self.info(p)).collect(),
        }))
    }

    async fn read(
        &self,
        req: Request<pb::PeeringReadRequest>,
    ) -> Result<Response<pb::PeeringReadResponse>, Status> {
        let p = self.get(&req.into_inner().name)?;
        Ok(Response::new(pb::PeeringReadResponse {
            peering: Some(self.info(&p)),
        }))
    }

    async fn delete(
        &self,
        req: Request<pb::PeeringDeleteRequest>,
    ) -> Result<Response<pb::PeeringDeleteResponse>, Status> {
        let name = req.into_inner().name;
        let p = self.get(&name)?;
        // Deleting a terminated peering removes its record.
        let cmd = if p.state == PeeringState::Terminated {
            PeeringCommand::Remove { name }
        } else {
            PeeringCommand::Terminate { name }
        };
        let index = self.write(cmd).await?;
        Ok(Response::new(pb::PeeringDeleteResponse { index }))
    }

    async fn export(
        &self,
        req: Request<pb::PeeringExportRequest>,
    ) -> Result<Response<pb::PeeringExportResponse>, Status> {
        self.set_export(req.into_inner(), true).await
    }

    async fn unexport(
        &self,
        req: Request<pb::PeeringExportRequest>,
    ) -> Result<Response<pb::PeeringExportResponse>, Status> {
        self.set_export(req.into_inner(), false).await
    }

    async fn imported_services(
        &self,
        req: Request<pb::PeeringImportedServicesRequest>,
    ) -> Result<Response<pb::PeeringImportedServicesResponse>, Status> {
        let caller = Caller::of(&req)?;
        let r = req.into_inner();
        let p = self.get(&r.peer)?;
        let services: Vec<pb::ImportedService> = p
            .imported
            .iter()
            .filter(|s| r.service.is_empty() || s.name == r.service)
            .filter(|s| caller.sees_service(&s.name))
            .map(service_to_pb)
            .collect();
        if !r.service.is_empty() && services.is_empty() {
            return Err(Status::not_found(format!(
                "peer {} exports no service {} to this cluster",
                r.peer, r.service
            )));
        }
        Ok(Response::new(pb::PeeringImportedServicesResponse { services }))
    }
}
