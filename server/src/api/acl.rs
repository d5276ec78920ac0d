//! `tribune.v1.ACL`: bootstrap, policies and tokens. What each method needs
//! is in `acl/table.rs`; IDs and secrets are made here, before proposing.

use std::path::PathBuf;
use std::sync::Arc;

use tonic::{Request, Response, Status};
use tribune_proto::v1 as pb;
use tribune_proto::v1::acl_client::AclClient;
use tribune_proto::v1::acl_server::Acl as AclService;

use super::{ApiCore, outcome_error, propose_error};
use crate::acl::{Caller, secret_sha256};
use crate::catalog::acl::{AclCommand, Policy, Role, Token};
use crate::catalog::command::{Command, Outcome};
use crate::catalog::validate;
use crate::consensus::wants_stale;

/// Where an operator writes the index of the bootstrap to redo it.
pub(crate) const RESET_FILE: &str = "acl-bootstrap-reset";

/// ACLs are the primary datacenter's: a write sent to a secondary is
/// answered by the primary (metadata and token unchanged).
macro_rules! at_primary {
    ($self:ident, $req:ident, $method:ident) => {
        if $self.ctx.primary.is_elsewhere() {
            return $self
                .ctx
                .primary
                .forward($req, |ch, r| async move { AclClient::new(ch).$method(r).await })
                .await;
        }
    };
}

pub(crate) struct AclCtx {
    pub(crate) core: ApiCore,
    pub(crate) data_dir: PathBuf,
    /// ACLs are the primary datacenter's: writes sent here go there.
    pub(crate) primary: Arc<crate::federation::primary::Primary>,
}

pub(crate) struct AclApi {
    ctx: Arc<AclCtx>,
}

impl AclApi {
    pub(crate) fn new(ctx: Arc<AclCtx>) -> Self {
        AclApi { ctx }
    }

    async fn write(&self, cmd: AclCommand) -> Result<u64, Status> {
        match self
            .ctx
            .core
            .writer
            .propose(Command::Acl(cmd))
            .await
            .map_err(propose_error)?
        {
            (index, Outcome::AclUpdated) => Ok(index),
            (_, o) => Err(outcome_error(o)),
        }
    }

    fn policy_by(&self, id_or_name: &str) -> Result<Policy, Status> {
        let d = self.ctx.core.state.read();
        let acl = d.catalog.acl();
        acl.policies
            .get(id_or_name)
            .or_else(|| acl.policy_by_name(id_or_name))
            .cloned()
            .ok_or_else(|| Status::not_found(format!("no policy {id_or_name:?}")))
    }

    fn token_to_pb(&self, t: &Token) -> pb::AclToken {
        let d = self.ctx.core.state.read();
        let acl = d.catalog.acl();
        pb::AclToken {
            accessor_id: t.accessor_id.clone(),
            secret_id: String::new(),
            description: t.description.clone(),
            policies: t
                .policy_ids
                .iter()
                .map(|id| {
                    acl.policies
                        .get(id)
                        .map_or_else(|| id.clone(), |p| p.name.clone())
                })
                .collect(),
            service_identities: t.service_identities.clone(),
            node_identities: t.node_identities.clone(),
            management: t.management,
            expires_unix: t.expires_unix.unwrap_or(0),
            create_index: t.create_index,
            modify_index: t.modify_index,
            roles: t
                .role_ids
                .iter()
                .map(|id| acl.roles.get(id).map_or_else(|| id.clone(), |r| r.name.clone()))
                .collect(),
        }
    }

    fn role_by(&self, id_or_name: &str) -> Result<Role, Status> {
        let d = self.ctx.core.state.read();
        let acl = d.catalog.acl();
        acl.roles
            .get(id_or_name)
            .or_else(|| acl.role_by_name(id_or_name))
            .cloned()
            .ok_or_else(|| Status::not_found(format!("no role {id_or_name:?}")))
    }

    fn role_to_pb(&self, r: &Role) -> pb::AclRole {
        let d = self.ctx.core.state.read();
        let acl = d.catalog.acl();
        pb::AclRole {
            id: r.id.clone(),
            name: r.name.clone(),
            description: r.description.clone(),
            policies: r
                .policy_ids
                .iter()
                .map(|id| {
                    acl.policies
                        .get(id)
                        .map_or_else(|| id.clone(), |p| p.name.clone())
                })
                .collect(),
            service_identities: r.service_identities.clone(),
            node_identities: r.node_identities.clone(),
            create_index: r.create_index,
            modify_index: r.modify_index,
        }
    }

    /// Policy and role names to IDs (NOT_FOUND naming an unknown one), and
    /// the identities checked.
    fn links(
        &self,
        policies: &[String],
        roles: &[String],
        services: &[String],
        nodes: &[String],
    ) -> Result<(Vec<String>, Vec<String>), Status> {
        let policy_ids = policies
            .iter()
            .map(|n| self.policy_by(n).map(|p| p.id))
            .collect::<Result<Vec<_>, _>>()?;
        let role_ids = roles
            .iter()
            .map(|n| self.role_by(n).map(|r| r.id))
            .collect::<Result<Vec<_>, _>>()?;
        for s in services {
            validate::service_name("service_identities", s).map_err(super::invalid)?;
        }
        for n in nodes {
            let node = n.split_once(':').map_or(n.as_str(), |(node, _)| node);
            validate::node_name("node_identities", node).map_err(super::invalid)?;
        }
        Ok((policy_ids, role_ids))
    }
}

fn policy_to_pb(p: &Policy) -> pb::AclPolicy {
    pb::AclPolicy {
        id: p.id.clone(),
        name: p.name.clone(),
        description: p.description.clone(),
        rules: p.rules.clone(),
        create_index: p.create_index,
        modify_index: p.modify_index,
    }
}

fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

#[tonic::async_trait]
impl AclService for AclApi {
    async fn bootstrap(
        &self,
        req: Request<pb::AclBootstrapRequest>,
    ) -> Result<Response<pb::AclBootstrapResponse>, Status> {
        self.ctx
            .core
            .metrics
            .observe("AclBootstrap", async {
                at_primary!(self, req, bootstrap);
                let reset_file = self.ctx.data_dir.join(RESET_FILE);
                let reset_index = std::fs::read_to_string(&reset_file)
                    .ok()
                    .and_then(|s| s.trim().parse::<u64>().ok());
                let secret = new_id();
                let token = Token {
                    accessor_id: new_id(),
                    secret_sha256: secret_sha256(&secret),
                    description: "Bootstrap Token (Global Management)".into(),
                    policy_ids: vec![],
                    service_identities: vec![],
                    node_identities: vec![],
                    management: true,
                    expires_unix: None,
                    create_index: 0,
                    modify_index: 0,
                    role_ids: vec![],
                };
                let index = match self.write(AclCommand::Bootstrap { token: token.clone(), reset_index }).await {
                    Ok(i) => i,
                    Err(s) if s.code() == tonic::Code::InvalidArgument => {
                        let done = self.ctx.core.state.read().catalog.acl().bootstrapped_at.unwrap_or(0);
                        return Err(Status::failed_precondition(format!(
                            "ACLs are already bootstrapped (at index {done}). To bootstrap again, write {done} \
                             into {} on this server and call bootstrap again",
                            reset_file.display()
                        )));
                    }
                    Err(s) => return Err(s),
                };
                let _ = std::fs::remove_file(&reset_file);
                let mut t = self.token_to_pb(&Token {
                    create_index: index,
                    modify_index: index,
                    ..token
                });
                t.secret_id = secret;
                Ok(Response::new(pb::AclBootstrapResponse { token: Some(t) }))
            })
            .await
    }

    async fn policy_create(
        &self,
        req: Request<pb::AclPolicyCreateRequest>,
    ) -> Result<Response<pb::AclPolicyResponse>, Status> {
        self.ctx
            .core
            .metrics
            .observe("AclPolicyCreate", async {
                at_primary!(self, req, policy_create);
                let r = req.into_inner();
                validate::service_name("name", &r.name).map_err(super::invalid)?;
                tribune_acl::Rules::parse(&r.rules)
                    .map_err(|e| Status::invalid_argument(format!("rules: {e}")))?;
                let p = Policy {
                    id: new_id(),
                    name: r.name,
                    description: r.description,
                    rules: r.rules,
                    create_index: 0,
                    modify_index: 0,
                };
                let index = self.write(AclCommand::PolicyUpsert(p.clone())).await?;
                Ok(Response::new(pb::AclPolicyResponse {
                    policy: Some(policy_to_pb(&Policy {
                        create_index: index,
                        modify_index: index,
                        ..p
                    })),
                }))
            })
            .await
    }

    async fn policy_list(
        &self,
        req: Request<pb::AclPolicyListRequest>,
    ) -> Result<Response<pb::AclPolicyListResponse>, Status> {
        self.ctx
            .core
            .metrics
            .observe("AclPolicyList", async {
                self.ctx.core.reads.barrier(wants_stale(&req)).await?;
                let d = self.ctx.core.state.read();
                Ok(Response::new(pb::AclPolicyListResponse {
                    policies: d.catalog.acl().policies.values().map(policy_to_pb).collect(),
                }))
            })
            .await
    }

    async fn policy_read(
        &self,
        req: Request<pb::AclPolicyReadRequest>,
    ) -> Result<Response<pb::AclPolicyResponse>, Status> {
        self.ctx
            .core
            .metrics
            .observe("AclPolicyRead", async {
                self.ctx.core.reads.barrier(wants_stale(&req)).await?;
                let p = self.policy_by(&req.get_ref().id_or_name)?;
                Ok(Response::new(pb::AclPolicyResponse {
                    policy: Some(policy_to_pb(&p)),
                }))
            })
            .await
    }

    async fn policy_delete(
        &self,
        req: Request<pb::AclPolicyDeleteRequest>,
    ) -> Result<Response<pb::AclDeleteResponse>, Status> {
        self.ctx
            .core
            .metrics
            .observe("AclPolicyDelete", async {
                at_primary!(self, req, policy_delete);
                let p = self.policy_by(&req.get_ref().id_or_name)?;
                let index = self.write(AclCommand::PolicyDelete { id: p.id }).await?;
                Ok(Response::new(pb::AclDeleteResponse { index }))
            })
            .await
    }

    async fn token_create(
        &self,
        req: Request<pb::AclTokenCreateRequest>,
    ) -> Result<Response<pb::AclTokenResponse>, Status> {
        self.ctx
            .core
            .metrics
            .observe("AclTokenCreate", async {
                at_primary!(self, req, token_create);
                let r = req.into_inner();
                let (policy_ids, role_ids) =
                    self.links(&r.policies, &r.roles, &r.service_identities, &r.node_identities)?;
                if r.ttl_secs < 0 {
                    return Err(Status::invalid_argument("ttl_secs: must not be negative"));
                }
                let secret = new_id();
                let token = Token {
                    accessor_id: new_id(),
                    secret_sha256: secret_sha256(&secret),
                    description: r.description,
                    policy_ids,
                    service_identities: r.service_identities,
                    node_identities: r.node_identities,
                    management: false,
                    expires_unix: (r.ttl_secs > 0).then(|| crate::mesh::now_unix() + r.ttl_secs),
                    create_index: 0,
                    modify_index: 0,
                    role_ids,
                };
                let index = self.write(AclCommand::TokenUpsert(token.clone())).await?;
                let mut t = self.token_to_pb(&Token {
                    create_index: index,
                    modify_index: index,
                    ..token
                });
                t.secret_id = secret;
                Ok(Response::new(pb::AclTokenResponse { token: Some(t) }))
            })
            .await
    }

    async fn token_list(
        &self,
        req: Request<pb::AclTokenListRequest>,
    ) -> Result<Response<pb::AclTokenListResponse>, Status> {
        self.ctx
            .core
            .metrics
            .observe("AclTokenList", async {
                self.ctx.core.reads.barrier(wants_stale(&req)).await?;
                let tokens: Vec<Token> = self
                    .ctx
                    .core
                    .state
                    .read()
                    .catalog
                    .acl()
                    .tokens
                    .values()
                    .cloned()
                    .collect();
                Ok(Response::new(pb::AclTokenListResponse {
                    tokens: tokens.iter().map(|t| self.token_to_pb(t)).collect(),
                }))
            })
            .await
    }

    async fn token_read(
        &self,
        req: Request<pb::AclTokenReadRequest>,
    ) -> Result<Response<pb::AclTokenResponse>, Status> {
        self.ctx
            .core
            .metrics
            .observe("AclTokenRead", async {
                self.ctx.core.reads.barrier(wants_stale(&req)).await?;
                let id = &req.get_ref().accessor_id;
                let t = self.ctx.core.state.read().catalog.acl().tokens.get(id).cloned();
                let t = t.ok_or_else(|| Status::not_found(format!("no token {id}")))?;
                Ok(Response::new(pb::AclTokenResponse {
                    token: Some(self.token_to_pb(&t)),
                }))
            })
            .await
    }

    async fn token_delete(
        &self,
        req: Request<pb::AclTokenDeleteRequest>,
    ) -> Result<Response<pb::AclDeleteResponse>, Status> {
        self.ctx
            .core
            .metrics
            .observe("AclTokenDelete", async {
                at_primary!(self, req, token_delete);
                let accessor_id = req.into_inner().accessor_id;
                let index = self.write(AclCommand::TokenDelete { accessor_id }).await?;
                Ok(Response::new(pb::AclDeleteResponse { index }))
            })
            .await
    }

    async fn who_am_i(
        &self,
        req: Request<pb::AclWhoAmIRequest>,
    ) -> Result<Response<pb::AclTokenResponse>, Status> {
        self.ctx
            .core
            .metrics
            .observe("AclWhoAmI", async {
                let caller = Caller::of(&req)?;
                let Some(id) = caller.accessor_id else {
                    return Err(Status::unauthenticated(
                        "no token: send one as x-tribune-token (or --token)",
                    ));
                };
                let t = self.ctx.core.state.read().catalog.acl().tokens.get(&id).cloned();
                let t = t.ok_or_else(|| Status::not_found(format!("no token {id}")))?;
                Ok(Response::new(pb::AclTokenResponse {
                    token: Some(self.token_to_pb(&t)),
                }))
            })
            .await
    }

    async fn token_update(
        &self,
        req: Request<pb::AclTokenUpdateRequest>,
    ) -> Result<Response<pb::AclTokenResponse>, Status> {
        self.ctx
            .core
            .metrics
            .observe("AclTokenUpdate", async {
                at_primary!(self, req, token_update);
                let r = req.into_inner();
                let old = self
                    .ctx
                    .core
                    .state
                    .read()
                    .catalog
                    .acl()
                    .tokens
                    .get(&r.accessor_id)
                    .cloned();
                let old = old.ok_or_else(|| Status::not_found(format!("no token {}", r.accessor_id)))?;
                let (policy_ids, role_ids) =
                    self.links(&r.policies, &r.roles, &r.service_identities, &r.node_identities)?;
                let token = Token {
                    description: if r.description.is_empty() {
                        old.description.clone()
                    } else {
                        r.description
                    },
                    policy_ids,
                    role_ids,
                    service_identities: r.service_identities,
                    node_identities: r.node_identities,
                    ..old
                };
                let index = self.write(AclCommand::TokenUpsert(token.clone())).await?;
                Ok(Response::new(pb::AclTokenResponse {
                    token: Some(self.token_to_pb(&Token {
                        modify_index: index,
                        ..token
                    })),
                }))
            })
            .await
    }

    async fn policy_update(
        &self,
        req: Request<pb::AclPolicyUpdateRequest>,
    ) -> Result<Response<pb::AclPolicyResponse>, Status> {
        self.ctx
            .core
            .metrics
            .observe("AclPolicyUpdate", async {
                at_primary!(self, req, policy_update);
                let r = req.into_inner();
                let old = self.policy_by(&r.id_or_name)?;
                tribune_acl::Rules::parse(&r.rules)
                    .map_err(|e| Status::invalid_argument(format!("rules: {e}")))?;
                let p = Policy {
                    description: if r.description.is_empty() {
                        old.description.clone()
                    } else {
                        r.description
                    },
                    rules: r.rules,
                    ..old
                };
                let index = self.write(AclCommand::PolicyUpsert(p.clone())).await?;
                Ok(Response::new(pb::AclPolicyResponse {
                    policy: Some(policy_to_pb(&Policy {
                        modify_index: index,
                        ..p
                    })),
                }))
            })
            .await
    }

    async fn role_create(
        &self,
        req: Request<pb::AclRoleCreateRequest>,
    ) -> Result<Response<pb::AclRoleResponse>, Status> {
        self.ctx
            .core
            .metrics
            .observe("AclRoleCreate", async {
                at_primary!(self, req, role_create);
                let r = req.into_inner();
                validate::service_name("name", &r.name).map_err(super::invalid)?;
                let (policy_ids, _) =
                    self.links(&r.policies, &[], &r.service_identities, &r.node_identities)?;
                let role = Role {
                    id: new_id(),
                    name: r.name,
                    description: r.description,
                    policy_ids,
                    service_identities: r.service_identities,
                    node_identities: r.node_identities,
                    create_index: 0,
                    modify_index: 0,
                };
                let index = self.write(AclCommand::RoleUpsert(role.clone())).await?;
                Ok(Response::new(pb::AclRoleResponse {
                    role: Some(self.role_to_pb(&Role {
                        create_index: index,
                        modify_index: index,
                        ..role
                    })),
                }))
            })
            .await
    }

    async fn role_list(
        &self,
        req: Request<pb::AclRoleListRequest>,
    ) -> Result<Response<pb::AclRoleListResponse>, Status> {
        self.ctx
            .core
            .metrics
            .observe("AclRoleList", async {
                self.ctx.core.reads.barrier(wants_stale(&req)).await?;
                let roles: Vec<Role> = self
                    .ctx
                    .core
                    .state
                    .read()
                    .catalog
                    .acl()
                    .roles
                    .values()
                    .cloned()
                    .collect();
                Ok(Response::new(pb::AclRoleListResponse {
                    roles: roles.iter().map(|r| self.role_to_pb(r)).collect(),
                }))
            })
            .await
    }

    async fn role_read(
        &self,
        req: Request<pb::AclRoleReadRequest>,
    ) -> Result<Response<pb::AclRoleResponse>, Status> {
        self.ctx
            .core
            .metrics
            .observe("AclRoleRead", async {
                self.ctx.core.reads.barrier(wants_stale(&req)).await?;
                let r = self.role_by(&req.get_ref().id_or_name)?;
                Ok(Response::new(pb::AclRoleResponse {
                    role: Some(self.role_to_pb(&r)),
                }))
            })
            .await
    }

    async fn role_delete(
        &self,
        req: Request<pb::AclRoleDeleteRequest>,
    ) -> Result<Response<pb::AclDeleteResponse>, Status> {
        self.ctx
            .core
            .metrics
            .observe("AclRoleDelete", async {
                at_primary!(self, req, role_delete);
                let r = self.role_by(&req.get_ref().id_or_name)?;
                let index = self.write(AclCommand::RoleDelete { id: r.id }).await?;
                Ok(Response::new(pb::AclDeleteResponse { index }))
            })
            .await
    }
}
