//! `tribune.v1.Health`: TTL check updates and check listings.

use tonic::{Request, Response, Status};
use tribune_acl::Access;

use crate::acl::{self, Caller};
use tribune_proto::v1 as pb;
use tribune_proto::v1::health_server::Health;

use super::ApiCore;
use super::convert::{check_to_pb, status_from_pb};
use super::{invalid, outcome_error, propose_error};
use crate::catalog::command::{Command, Outcome};
use crate::catalog::validate;
use crate::consensus::{request_id, wants_stale};

pub(crate) struct HealthApi {
    ctx: ApiCore,
}

impl HealthApi {
    pub(crate) fn new(ctx: ApiCore) -> Self {
        HealthApi { ctx }
    }
}

impl HealthApi {
    /// A check's status is its service's to write (its node's, for a
    /// node-level check); an unknown check is left to the apply to refuse.
    fn may_write_check(&self, caller: &Caller, check_id: &str) -> Result<(), Status> {
        let need = self
            .ctx
            .state
            .read()
            .catalog
            .check(check_id)
            .map(|c| match &c.service_id {
                Some(_) => acl::service(&c.service_name, Access::Write),
                None => acl::node(&c.node, Access::Write),
            });
        need.map_or(Ok(()), |p| caller.require(&p))
    }
}

#[tonic::async_trait]
impl Health for HealthApi {
    async fn update_ttl(
        &self,
        req: Request<pb::UpdateTtlRequest>,
    ) -> Result<Response<pb::UpdateTtlResponse>, Status> {
        let ctx = &self.ctx;
        ctx.metrics
            .observe("UpdateTtl", async {
                let rid = request_id(&req);
                let caller = Caller::of(&req)?;
                let req = req.into_inner();
                validate::id("check_id", &req.check_id).map_err(invalid)?;
                self.may_write_check(&caller, &req.check_id)?;
                let status = status_from_pb("status", req.status).map_err(invalid)?;
                let cmd = Command::UpdateTtl {
                    check_id: req.check_id,
                    status,
                    output: validate::cap_output(&req.note),
                };
                match ctx.writer.propose_once(rid, cmd).await.map_err(propose_error)? {
                    (index, Outcome::TtlUpdated) => Ok(Response::new(pb::UpdateTtlResponse { index })),
                    (_, other) => Err(outcome_error(other)),
                }
            })
            .await
    }

    async fn report_check(
        &self,
        req: Request<pb::ReportCheckRequest>,
    ) -> Result<Response<pb::ReportCheckResponse>, Status> {
        let ctx = &self.ctx;
        ctx.metrics
            .observe("ReportCheck", async {
                let rid = request_id(&req);
                let caller = Caller::of(&req)?;
                let req = req.into_inner();
                validate::id("check_id", &req.check_id).map_err(invalid)?;
                self.may_write_check(&caller, &req.check_id)?;
                let status = status_from_pb("status", req.status).map_err(invalid)?;
                let cmd = Command::CheckResult {
                    check_id: req.check_id,
                    status,
                    output: validate::cap_output(&req.output),
                };
                match ctx.writer.propose_once(rid, cmd).await.map_err(propose_error)? {
                    (index, Outcome::TtlUpdated) => Ok(Response::new(pb::ReportCheckResponse { index })),
                    (_, other) => Err(outcome_error(other)),
                }
            })
            .await
    }

    async fn list_checks(
        &self,
        req: Request<pb::ListChecksRequest>,
    ) -> Result<Response<pb::ListChecksResponse>, Status> {
        self.ctx
            .metrics
            .observe("ListChecks", async {
                self.ctx.reads.barrier(wants_stale(&req)).await?;
                let caller = Caller::of(&req)?;
                let req = req.into_inner();
                let status = match req.status {
                    0 => None,
                    s => Some(status_from_pb("status", s).map_err(invalid)?),
                };
                let service = (!req.service.is_empty()).then_some(req.service.as_str());
                let d = self.ctx.state.read();
                Ok(Response::new(pb::ListChecksResponse {
                    index: d.applied_index(),
                    checks: d
                        .catalog
                        .checks_in(status, service)
                        .iter()
                        .filter(|c| {
                            caller.sees_node(&c.node)
                                && (c.service_id.is_none() || caller.sees_service(&c.service_name))
                        })
                        .map(check_to_pb)
                        .collect(),
                }))
            })
            .await
    }
}
