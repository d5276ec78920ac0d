//! `tribune.v1.ConnectCA` and `tribune.v1.Intentions`.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use tribune_proto::v1 as pb;
use tribune_proto::v1::connect_ca_client::ConnectCaClient;
use tribune_proto::v1::connect_ca_server::ConnectCa;
use tribune_proto::v1::intentions_client::IntentionsClient;
use tribune_proto::v1::intentions_server::Intentions;

use super::{invalid, outcome_error, propose_error};
use crate::acl::{self, Caller};
use crate::catalog::command::{Command, Outcome};
use crate::catalog::mesh::{Intention, MeshCommand};
use crate::catalog::validate;
use crate::consensus::{request_id, wants_stale};
use crate::mesh::ca::{self, CaError};
use crate::mesh::leaves::LeafError;
use crate::mesh::now_unix;
use tribune_acl::Access;

/// What the CA and intentions APIs take: the API's core handles, the CA's
/// duties (rotation), the leaf cache (signing) and this datacenter.
pub(crate) struct ConnectCtx {
    pub(crate) core: super::ApiCore,
    pub(crate) ca: Arc<ca::CaDuties>,
    pub(crate) leaves: Arc<crate::mesh::leaves::LeafCache>,
    pub(crate) datacenter: String,
    /// Where intention writes go when this is a secondary datacenter.
    pub(crate) primary: Arc<crate::federation::primary::Primary>,
    /// Lifetime of client agents' certificates (auto-encrypt).
    pub(crate) agent_cert_ttl_secs: i64,
}

impl std::ops::Deref for ConnectCtx {
    type Target = super::ApiCore;
    fn deref(&self) -> &super::ApiCore {
        &self.core
    }
}

pub(crate) struct ConnectApi {
    ctx: Arc<ConnectCtx>,
}

impl ConnectApi {
    pub(crate) fn new(ctx: Arc<ConnectCtx>) -> Self {
        ConnectApi { ctx }
    }
}

fn ca_error(e: CaError) -> Status {
    match e {
        CaError::Propose(p) => propose_error(p),
        CaError::NotInitialized => Status::unavailable("the CA is not initialized yet; retry in a moment"),
        CaError::Cert(c) => Status::internal(format!("certificate authority: {c}")),
        CaError::Refused(o) => outcome_error(o),
    }
}

#[tonic::async_trait]
impl ConnectCa for ConnectApi {
    async fn roots(&self, req: Request<pb::CaRootsRequest>) -> Result<Response<pb::CaRootsResponse>, Status> {
        self.ctx
            .metrics
            .observe("CaRoots", async {
                self.ctx.reads.barrier(wants_stale(&req)).await?;
                let d = self.ctx.state.read();
                let ca =
                    d.catalog.mesh().ca.as_ref().ok_or_else(|| {
                        Status::unavailable("the CA is not initialized yet; retry in a moment")
                    })?;
                let active = ca.active().map(|r| r.root.id.clone()).unwrap_or_default();
                Ok(Response::new(pb::CaRootsResponse {
                    cluster_id: ca.cluster_id.clone(),
                    intermediate_pem: ca
                        .signing
                        .as_ref()
                        .map(|s| s.ca.cert_pem.clone())
                        .unwrap_or_default(),
                    index: d.applied_index(),
                    trust_domain: ca.trust_domain.clone(),
                    active_root_id: active.clone(),
                    leaf_ttl_secs: ca.leaf_ttl_secs,
                    roots: ca
                        .roots
                        .iter()
                        .map(|r| pb::CaRoot {
                            id: r.root.id.clone(),
                            serial_hex: r.root.serial_hex.clone(),
                            cert_pem: r.root.cert_pem.clone(),
                            cross_signed_pem: r.cross_signed_pem.clone().unwrap_or_default(),
                            active: r.root.id == active,
                            not_before_unix: r.root.not_before_unix,
                            not_after_unix: r.root.not_after_unix,
                            rotated_out_unix: r.rotated_out_unix.unwrap_or(0),
                        })
                        .collect(),
                }))
            })
            .await
    }

    async fn rotate(
        &self,
        req: Request<pb::CaRotateRequest>,
    ) -> Result<Response<pb::CaRotateResponse>, Status> {
        self.ctx
            .metrics
            .observe("CaRotate", async {
                // The primary owns the root; a secondary follows it.
                if self.ctx.primary.is_elsewhere() {
                    return self
                        .ctx
                        .primary
                        .forward(
                            req,
                            |ch, r| async move { ConnectCaClient::new(ch).rotate(r).await },
                        )
                        .await;
                }
                let (index, new_root_id) = ca::rotate(&self.ctx.ca).await.map_err(ca_error)?;
                Ok(Response::new(pb::CaRotateResponse { index, new_root_id }))
            })
            .await
    }

    async fn sign(&self, req: Request<pb::CaSignRequest>) -> Result<Response<pb::CaSignResponse>, Status> {
        self.ctx
            .metrics
            .observe("CaSign", async {
                let caller = Caller::of(&req)?;
                let service = req.into_inner().service;
                validate::service_name("service", &service).map_err(invalid)?;
                caller.require(&acl::service(&service, Access::Write))?;
                let ca =
                    self.ctx.state.read().catalog.mesh().ca.clone().ok_or_else(|| {
                        Status::unavailable("the CA is not initialized yet; retry in a moment")
                    })?;
                let issued = self
                    .ctx
                    .leaves
                    .sign(&ca, &self.ctx.datacenter, &service, now_unix())
                    .map_err(|e| match e {
                        LeafError::RateLimited(_) => Status::resource_exhausted(e.to_string()),
                        LeafError::NoCa => Status::unavailable(e.to_string()),
                        LeafError::Sign(_) => Status::internal(e.to_string()),
                    })?;
                let l = &issued.leaf;
                Ok(Response::new(pb::CaSignResponse {
                    spiffe_id: l.spiffe_id.clone(),
                    cert_pem: l.cert_pem.clone(),
                    key_pem: l.key_pem.clone(),
                    chain_pem: issued.chain_pem[l.cert_pem.len()..].to_string(),
                    root_id: l.root_id.clone(),
                    serial_hex: l.serial_hex.clone(),
                    not_after_unix: l.not_after_unix,
                }))
            })
            .await
    }

    async fn sign_agent(
        &self,
        req: Request<pb::CaSignAgentRequest>,
    ) -> Result<Response<pb::CaSignAgentResponse>, Status> {
        self.ctx
            .metrics
            .observe("CaSignAgent", async {
                let caller = Caller::of(&req)?;
                let req = req.into_inner();
                validate::node_name("node", &req.node).map_err(invalid)?;
                caller.require(&acl::node(&req.node, Access::Write))?;
                if req.csr_pem.trim().is_empty() {
                    return Err(Status::invalid_argument(
                        "csr_pem: required (a PKCS#10 request, PEM)",
                    ));
                }
                let ca =
                    self.ctx.state.read().catalog.mesh().ca.clone().ok_or_else(|| {
                        Status::unavailable("the CA is not initialized yet; retry in a moment")
                    })?;
                let signer = ca.signer().filter(|s| !s.key_pem.is_empty()).ok_or_else(|| {
                    Status::unavailable("this datacenter has no signing CA yet; retry in a moment")
                })?;
                let cert = tribune_certs::sign_agent_csr(
                    signer,
                    &tribune_certs::AgentCertRequest {
                        role: tribune_certs::AgentRole::Client,
                        datacenter: &self.ctx.datacenter,
                        node: &req.node,
                        ips: &[],
                        ttl_secs: self.ctx.agent_cert_ttl_secs,
                        now_unix: now_unix(),
                    },
                    &req.csr_pem,
                )
                .map_err(|e| Status::invalid_argument(format!("csr_pem: {e}")))?;
                Ok(Response::new(pb::CaSignAgentResponse {
                    cert_pem: format!("{}{}", cert.cert_pem, ca.chain_after_leaf()),
                    roots_pem: ca.roots.iter().map(|r| r.root.cert_pem.clone()).collect(),
                    not_after_unix: cert.not_after_unix,
                    roots_index: ca.modify_index,
                }))
            })
            .await
    }

    async fn sign_intermediate(
        &self,
        req: Request<pb::CaSignIntermediateRequest>,
    ) -> Result<Response<pb::CaSignIntermediateResponse>, Status> {
        self.ctx
            .metrics
            .observe("CaSignIntermediate", async {
                if self.ctx.primary.is_elsewhere() {
                    return self
                        .ctx
                        .primary
                        .forward(req, |ch, r| async move {
                            ConnectCaClient::new(ch).sign_intermediate(r).await
                        })
                        .await;
                }
                let r = req.into_inner();
                let (cert_pem, root_id) =
                    ca::sign_intermediate(&self.ctx.ca, &r.csr_pem).map_err(|e| match e {
                        CaError::Cert(c) => Status::invalid_argument(format!("csr_pem: {c}")),
                        other => ca_error(other),
                    })?;
                tracing::info!(datacenter = %r.datacenter, root = %root_id, "signed an intermediate CA");
                Ok(Response::new(pb::CaSignIntermediateResponse {
                    cert_pem,
                    root_id,
                }))
            })
            .await
    }
}

pub(crate) struct IntentionsApi {
    ctx: Arc<ConnectCtx>,
}

impl IntentionsApi {
    pub(crate) fn new(ctx: Arc<ConnectCtx>) -> Self {
        IntentionsApi { ctx }
    }
}

/// A service name or `*`.
fn endpoint(field: &str, v: &str) -> Result<(), Status> {
    if v == "*" {
        return Ok(());
    }
    validate::service_name(field, v).map_err(invalid)
}

fn to_pb(i: &Intention) -> pb::Intention {
    let (source_peer, source) = match i.source_peer() {
        Some((p, s)) => (p.to_string(), s.to_string()),
        None => (String::new(), i.source.clone()),
    };
    pb::Intention {
        source,
        destination: i.destination.clone(),
        allow: i.allow,
        create_index: i.create_index,
        modify_index: i.modify_index,
        source_peer,
    }
}

/// The stored source: a service or `*`, or a peer's service.
fn source_of(source: &str, source_peer: &str) -> Result<String, Status> {
    if source_peer.is_empty() {
        endpoint("source", source)?;
        return Ok(source.to_string());
    }
    validate::node_name("source_peer", source_peer).map_err(invalid)?;
    validate::service_name("source", source).map_err(invalid)?;
    Ok(crate::catalog::mesh::peer_source(source_peer, source))
}

#[tonic::async_trait]
impl Intentions for IntentionsApi {
    async fn upsert(
        &self,
        req: Request<pb::IntentionUpsertRequest>,
    ) -> Result<Response<pb::IntentionUpsertResponse>, Status> {
        self.ctx
            .metrics
            .observe("IntentionUpsert", async {
                Caller::of(&req)?.require(&acl::intention(&req.get_ref().destination, Access::Write))?;
                if self.ctx.primary.is_elsewhere() {
                    return self
                        .ctx
                        .primary
                        .forward(
                            req,
                            |ch, r| async move { IntentionsClient::new(ch).upsert(r).await },
                        )
                        .await;
                }
                let rid = request_id(&req);
                let r = req.into_inner();
                let source = source_of(&r.source, &r.source_peer)?;
                endpoint("destination", &r.destination)?;
                let cmd = Command::Mesh(MeshCommand::IntentionUpsert {
                    source,
                    destination: r.destination,
                    allow: r.allow,
                });
                match self
                    .ctx
                    .writer
                    .propose_once(rid, cmd)
                    .await
                    .map_err(propose_error)?
                {
                    (index, Outcome::MeshUpdated) => Ok(Response::new(pb::IntentionUpsertResponse { index })),
                    (_, o) => Err(outcome_error(o)),
                }
            })
            .await
    }

    async fn list(
        &self,
        req: Request<pb::IntentionListRequest>,
    ) -> Result<Response<pb::IntentionListResponse>, Status> {
        self.ctx
            .metrics
            .observe("IntentionList", async {
                self.ctx.reads.barrier(wants_stale(&req)).await?;
                let caller = Caller::of(&req)?;
                let d = self.ctx.state.read();
                Ok(Response::new(pb::IntentionListResponse {
                    index: d.applied_index(),
                    intentions: d
                        .catalog
                        .mesh()
                        .intentions
                        .values()
                        .filter(|i| caller.allows(&acl::intention(&i.destination, Access::Read)))
                        .map(to_pb)
                        .collect(),
                    default_allow: self.ctx.ca.mesh.default_allow,
                }))
            })
            .await
    }

    async fn delete(
        &self,
        req: Request<pb::IntentionDeleteRequest>,
    ) -> Result<Response<pb::IntentionDeleteResponse>, Status> {
        self.ctx
            .metrics
            .observe("IntentionDelete", async {
                Caller::of(&req)?.require(&acl::intention(&req.get_ref().destination, Access::Write))?;
                if self.ctx.primary.is_elsewhere() {
                    return self
                        .ctx
                        .primary
                        .forward(
                            req,
                            |ch, r| async move { IntentionsClient::new(ch).delete(r).await },
                        )
                        .await;
                }
                let rid = request_id(&req);
                let r = req.into_inner();
                let source = source_of(&r.source, &r.source_peer)?;
                endpoint("destination", &r.destination)?;
                let cmd = Command::Mesh(MeshCommand::IntentionDelete {
                    source,
                    destination: r.destination,
                });
                match self
                    .ctx
                    .writer
                    .propose_once(rid, cmd)
                    .await
                    .map_err(propose_error)?
                {
                    (index, Outcome::MeshUpdated) => Ok(Response::new(pb::IntentionDeleteResponse { index })),
                    (_, o) => Err(outcome_error(o)),
                }
            })
            .await
    }

    async fn check(
        &self,
        req: Request<pb::IntentionCheckRequest>,
    ) -> Result<Response<pb::IntentionCheckResponse>, Status> {
        self.ctx
            .metrics
            .observe("IntentionCheck", async {
                self.ctx.reads.barrier(wants_stale(&req)).await?;
                let caller = Caller::of(&req)?;
                let r = req.into_inner();
                validate::service_name("source", &r.source).map_err(invalid)?;
                validate::service_name("destination", &r.destination).map_err(invalid)?;
                caller.require(&acl::intention(&r.destination, Access::Read))?;
                let d = self.ctx.state.read();
                let all: Vec<&Intention> = d.catalog.mesh().intentions.values().collect();
                let rules: Vec<tribune_xds::Intention> = all
                    .iter()
                    .map(|i| tribune_xds::Intention {
                        source: i.source.clone(),
                        destination: i.destination.clone(),
                        allow: i.allow,
                    })
                    .collect();
                let best = tribune_xds::rbac::best_match(&rules, &r.source, &r.destination);
                let matched = best.and_then(|b| {
                    all.iter()
                        .find(|i| i.source == b.source && i.destination == b.destination)
                        .map(|i| to_pb(i))
                });
                Ok(Response::new(pb::IntentionCheckResponse {
                    allowed: best.map_or(self.ctx.ca.mesh.default_allow, |b| b.allow),
                    matched,
                }))
            })
            .await
    }
}
