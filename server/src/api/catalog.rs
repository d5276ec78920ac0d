//! `tribune.v1.Catalog`: register, deregister, list, get and watch.

use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tribune_proto::v1 as pb;
use tribune_proto::v1::catalog_server::Catalog;

use super::convert::{self, RegisterDefaults};
use super::watch::{Filter, spawn_watch};
use super::{invalid, outcome_error, propose_error};
use crate::acl::{self, Caller};
use crate::catalog::command::{Command, Outcome};
use crate::catalog::model::Status as Health;
use crate::catalog::validate;
use crate::consensus::{request_id, wants_stale};
use tribune_acl::Access;

/// What the catalog API takes: the API's core handles, and the node a
/// registration falls back on (the agent's own).
pub(crate) struct CatalogCtx {
    pub(crate) core: super::ApiCore,
    pub(crate) node_name: String,
    pub(crate) advertise_ip: String,
    pub(crate) datacenter: String,
    /// The WAN pool: which datacenters exist.
    pub(crate) wan: std::sync::Arc<crate::federation::wan::Wan>,
}

impl std::ops::Deref for CatalogCtx {
    type Target = super::ApiCore;
    fn deref(&self) -> &super::ApiCore {
        &self.core
    }
}

pub(crate) struct CatalogApi {
    ctx: CatalogCtx,
}

impl CatalogApi {
    pub(crate) fn new(ctx: CatalogCtx) -> Self {
        CatalogApi { ctx }
    }
}

type WatchStream = ReceiverStream<Result<pb::WatchEvent, Status>>;

/// A service name to read or watch: a DNS label, or a sidecar's derived
/// name ("<name>-sidecar-proxy"), which may run past 63 characters.
fn queried_name(name: &str) -> Result<(), Status> {
    validate::service_name("name", name)
        .or_else(|e| {
            if name.ends_with(tribune_ids::SIDECAR_SUFFIX) {
                validate::id("name", name)
            } else {
                Err(e)
            }
        })
        .map_err(invalid)
}

#[tonic::async_trait]
impl Catalog for CatalogApi {
    async fn register(
        &self,
        req: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        let ctx = &self.ctx;
        ctx.metrics
            .observe("Register", async {
                let defaults = RegisterDefaults {
                    node: &ctx.node_name,
                    node_address: &ctx.advertise_ip,
                    datacenter: &ctx.datacenter,
                };
                let rid = request_id(&req);
                let caller = Caller::of(&req)?;
                let reg = convert::registration(req.into_inner(), &defaults).map_err(invalid)?;
                caller.require(&acl::service(&reg.services[0].name, Access::Write))?;
                // A new node, or one whose addresses change, is the node's
                // owner's to write.
                let node_changes = {
                    let d = ctx.state.read();
                    d.catalog.node(&reg.node.name).is_none_or(|n| {
                        n.address != reg.node.address
                            || (!reg.node.wan_address.is_empty() && n.wan_address != reg.node.wan_address)
                    })
                };
                if node_changes {
                    caller.require(&acl::node(&reg.node.name, Access::Write))?;
                }
                let service_id = reg.services[0].id.clone();
                let sidecar_id = reg.services.get(1).map(|s| s.id.clone()).unwrap_or_default();
                tracing::debug!(%service_id, "register");
                match ctx
                    .writer
                    .propose_once(rid, Command::Register(reg))
                    .await
                    .map_err(propose_error)?
                {
                    (index, Outcome::Registered { check_ids }) => Ok(Response::new(pb::RegisterResponse {
                        index,
                        service_id,
                        sidecar_id,
                        check_ids,
                    })),
                    (_, other) => Err(outcome_error(other)),
                }
            })
            .await
    }

    async fn deregister(
        &self,
        req: Request<pb::DeregisterRequest>,
    ) -> Result<Response<pb::DeregisterResponse>, Status> {
        let ctx = &self.ctx;
        ctx.metrics
            .observe("Deregister", async {
                let rid = request_id(&req);
                let caller = Caller::of(&req)?;
                let service_id = req.into_inner().service_id;
                validate::id("service_id", &service_id).map_err(invalid)?;
                let name = ctx
                    .state
                    .read()
                    .catalog
                    .service(&service_id)
                    .map(|s| s.name.clone());
                if let Some(name) = name {
                    caller.require(&acl::service(&name, Access::Write))?;
                }
                match ctx
                    .writer
                    .propose_once(rid, Command::Deregister { service_id })
                    .await
                    .map_err(propose_error)?
                {
                    (index, Outcome::Deregistered { removed_ids }) => {
                        Ok(Response::new(pb::DeregisterResponse { index, removed_ids }))
                    }
                    (_, other) => Err(outcome_error(other)),
                }
            })
            .await
    }

    async fn list_services(
        &self,
        req: Request<pb::ListServicesRequest>,
    ) -> Result<Response<pb::ListServicesResponse>, Status> {
        self.ctx
            .metrics
            .observe("ListServices", async {
                self.ctx.reads.barrier(wants_stale(&req)).await?;
                let caller = Caller::of(&req)?;
                let d = self.ctx.state.read();
                let services = d
                    .catalog
                    .service_names()
                    .filter(|(name, _)| caller.sees_service(name))
                    .map(|(name, _)| {
                        let mut tags = std::collections::BTreeSet::new();
                        let mut s = pb::ServiceSummary {
                            name: name.clone(),
                            ..Default::default()
                        };
                        for inst in d.catalog.instances_of(name) {
                            s.instances += 1;
                            if d.catalog.health_of(inst).status == Health::Passing {
                                s.passing += 1;
                            }
                            s.kind = convert::service_to_pb(inst).kind;
                            tags.extend(inst.tags.iter().cloned());
                        }
                        s.tags = tags.into_iter().collect();
                        s
                    })
                    .collect();
                Ok(Response::new(pb::ListServicesResponse {
                    index: d.applied_index(),
                    services,
                }))
            })
            .await
    }

    async fn list_nodes(
        &self,
        req: Request<pb::ListNodesRequest>,
    ) -> Result<Response<pb::ListNodesResponse>, Status> {
        self.ctx
            .metrics
            .observe("ListNodes", async {
                self.ctx.reads.barrier(wants_stale(&req)).await?;
                let caller = Caller::of(&req)?;
                let d = self.ctx.state.read();
                Ok(Response::new(pb::ListNodesResponse {
                    index: d.applied_index(),
                    nodes: d
                        .catalog
                        .nodes()
                        .filter(|n| caller.sees_node(&n.name))
                        .map(convert::node_to_pb)
                        .collect(),
                }))
            })
            .await
    }

    async fn list_datacenters(
        &self,
        _req: Request<pb::ListDatacentersRequest>,
    ) -> Result<Response<pb::ListDatacentersResponse>, Status> {
        self.ctx
            .metrics
            .observe("ListDatacenters", async {
                Ok(Response::new(pb::ListDatacentersResponse {
                    datacenters: self.ctx.wan.datacenters(),
                }))
            })
            .await
    }

    async fn get_service(
        &self,
        req: Request<pb::GetServiceRequest>,
    ) -> Result<Response<pb::GetServiceResponse>, Status> {
        self.ctx
            .metrics
            .observe("GetService", async {
                self.ctx.reads.barrier(wants_stale(&req)).await?;
                let caller = Caller::of(&req)?;
                let req = req.into_inner();
                queried_name(&req.name)?;
                let d = self.ctx.state.read();
                let instances = d
                    .catalog
                    .instances_of(&req.name)
                    .filter(|s| caller.sees_service(&s.name))
                    .map(|s| d.catalog.health_of(s))
                    .filter(|h| !req.passing_only || h.status == Health::Passing)
                    .map(|h| convert::health_to_pb(&h))
                    .collect();
                Ok(Response::new(pb::GetServiceResponse {
                    index: d.applied_index(),
                    instances,
                }))
            })
            .await
    }

    async fn get_instance(
        &self,
        req: Request<pb::GetInstanceRequest>,
    ) -> Result<Response<pb::GetInstanceResponse>, Status> {
        self.ctx
            .metrics
            .observe("GetInstance", async {
                self.ctx.reads.barrier(wants_stale(&req)).await?;
                let caller = Caller::of(&req)?;
                let id = req.into_inner().id;
                validate::id("id", &id).map_err(invalid)?;
                let d = self.ctx.state.read();
                let h = d
                    .catalog
                    .instance_health(&id)
                    .filter(|h| caller.sees_service(&h.service.name))
                    .ok_or_else(|| Status::not_found(format!("service instance {id:?} is not registered")))?;
                Ok(Response::new(pb::GetInstanceResponse {
                    index: d.applied_index(),
                    instance: Some(convert::health_to_pb(&h)),
                }))
            })
            .await
    }

    async fn get_node(
        &self,
        req: Request<pb::GetNodeRequest>,
    ) -> Result<Response<pb::GetNodeResponse>, Status> {
        self.ctx
            .metrics
            .observe("GetNode", async {
                self.ctx.reads.barrier(wants_stale(&req)).await?;
                let caller = Caller::of(&req)?;
                let name = req.into_inner().name;
                validate::node_name("name", &name).map_err(invalid)?;
                let d = self.ctx.state.read();
                let node = d
                    .catalog
                    .node(&name)
                    .filter(|n| caller.sees_node(&n.name))
                    .ok_or_else(|| Status::not_found(format!("node {name:?} is not registered")))?;
                Ok(Response::new(pb::GetNodeResponse {
                    index: d.applied_index(),
                    node: Some(convert::node_to_pb(node)),
                    instances: d
                        .catalog
                        .services_on(&name)
                        .filter(|s| caller.sees_service(&s.name))
                        .map(|s| convert::health_to_pb(&d.catalog.health_of(s)))
                        .collect(),
                    node_checks: d.catalog.node_checks(&name).map(convert::check_to_pb).collect(),
                }))
            })
            .await
    }

    async fn deregister_node(
        &self,
        req: Request<pb::DeregisterNodeRequest>,
    ) -> Result<Response<pb::DeregisterNodeResponse>, Status> {
        let ctx = &self.ctx;
        ctx.metrics
            .observe("DeregisterNode", async {
                let rid = request_id(&req);
                let caller = Caller::of(&req)?;
                let node = req.into_inner().name;
                validate::node_name("name", &node).map_err(invalid)?;
                caller.require(&acl::node(&node, Access::Write))?;
                match ctx
                    .writer
                    .propose_once(rid, Command::DeregisterNode { node })
                    .await
                    .map_err(propose_error)?
                {
                    (index, Outcome::Deregistered { removed_ids }) => {
                        Ok(Response::new(pb::DeregisterNodeResponse { index, removed_ids }))
                    }
                    (_, other) => Err(outcome_error(other)),
                }
            })
            .await
    }

    type WatchServiceStream = WatchStream;

    async fn watch_service(
        &self,
        req: Request<pb::WatchServiceRequest>,
    ) -> Result<Response<Self::WatchServiceStream>, Status> {
        self.ctx
            .metrics
            .observe("WatchService", async {
                let caller = Caller::of(&req)?;
                let req = req.into_inner();
                queried_name(&req.name)?;
                caller.require(&acl::service(&req.name, Access::Read))?;
                Ok(Response::new(spawn_watch(
                    self.ctx.state.clone(),
                    self.ctx.metrics.watches_open.clone(),
                    Filter::Service(req.name),
                    req.from_index,
                )))
            })
            .await
    }

    type WatchCatalogStream = WatchStream;

    async fn watch_catalog(
        &self,
        req: Request<pb::WatchCatalogRequest>,
    ) -> Result<Response<Self::WatchCatalogStream>, Status> {
        self.ctx
            .metrics
            .observe("WatchCatalog", async {
                let caller = Caller::of(&req)?;
                let req = req.into_inner();
                Ok(Response::new(spawn_watch(
                    self.ctx.state.clone(),
                    self.ctx.metrics.watches_open.clone(),
                    Filter::Catalog(caller),
                    req.from_index,
                )))
            })
            .await
    }
}
