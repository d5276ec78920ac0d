//! ACLs are authoritative in the primary datacenter. Its servers serve
//! their ACL state (`Replication/AclState` on the server port; secrets only
//! as their SHA-256); every server of a secondary reads it each round, and
//! the leader, once caught up, writes the copy when it differs. Tokens are
//! always resolved from the local copy, so a secondary goes on deciding
//! with the last copy while the primary is unreachable (Consul's
//! `extend-cache` down policy). ACL writes sent to a secondary are
//! forwarded to the primary (`api/acl.rs`).

use std::sync::Arc;
use std::time::Duration;

use tonic::{Request, Response, Status};
use tribune_proto::server as pb;
use tribune_proto::server::replication_client::ReplicationClient;
use tribune_proto::server::replication_server::Replication;

use super::primary::Primary;
use super::replication::{Kind, ReplicationStatus};
use crate::catalog::acl::{AclCommand, Policy, Role, Token};
use crate::catalog::command::Command;
use crate::consensus::{Leadership, Writer};
use crate::raft::state_machine::Shared;

/// Time between two rounds.
const ROUND: Duration = Duration::from_secs(1);
/// Deadline of one read of the primary's state.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// The server side: this datacenter's ACL state.
pub(crate) struct AclStateService {
    pub(crate) state: Arc<Shared>,
}

#[tonic::async_trait]
impl Replication for AclStateService {
    async fn acl_state(
        &self,
        _req: Request<pb::AclStateRequest>,
    ) -> Result<Response<pb::AclStateResponse>, Status> {
        let d = self.state.read();
        let acl = d.catalog.acl();
        Ok(Response::new(pb::AclStateResponse {
            index: d.applied_index(),
            policies: acl
                .policies
                .values()
                .map(|p| pb::AclPolicyRecord {
                    id: p.id.clone(),
                    name: p.name.clone(),
                    description: p.description.clone(),
                    rules: p.rules.clone(),
                })
                .collect(),
            tokens: acl
                .tokens
                .values()
                .map(|t| pb::AclTokenRecord {
                    accessor_id: t.accessor_id.clone(),
                    secret_sha256: t.secret_sha256.clone(),
                    description: t.description.clone(),
                    policy_ids: t.policy_ids.clone(),
                    service_identities: t.service_identities.clone(),
                    node_identities: t.node_identities.clone(),
                    management: t.management,
                    expires_unix: t.expires_unix.unwrap_or(0),
                    role_ids: t.role_ids.clone(),
                })
                .collect(),
            bootstrapped_at: acl.bootstrapped_at.unwrap_or(0),
            roles: acl
                .roles
                .values()
                .map(|r| pb::AclRoleRecord {
                    id: r.id.clone(),
                    name: r.name.clone(),
                    description: r.description.clone(),
                    policy_ids: r.policy_ids.clone(),
                    service_identities: r.service_identities.clone(),
                    node_identities: r.node_identities.clone(),
                })
                .collect(),
        }))
    }
}

pub(crate) struct AclReplication {
    pub(crate) primary: Arc<Primary>,
    pub(crate) state: Arc<Shared>,
    pub(crate) leadership: Leadership,
    pub(crate) writer: Writer,
    pub(crate) status: Arc<ReplicationStatus>,
}

/// Copies the primary's ACLs, forever; does nothing in the primary.
pub(crate) async fn run(ctx: Arc<AclReplication>) {
    if !ctx.primary.is_elsewhere() {
        return;
    }
    loop {
        if let Err(e) = round(&ctx).await {
            tracing::debug!(error = %e, "ACL replication round failed");
            ctx.status.failed(Kind::Acl, e);
        }
        tokio::time::sleep(ROUND).await;
    }
}

/// What a copy is compared on: everything but the local indexes.
type Copy = (Vec<Policy>, Vec<Token>, Option<u64>, Vec<Role>);

fn unindexed(mut c: Copy) -> Copy {
    for r in &mut c.3 {
        (r.create_index, r.modify_index) = (0, 0);
    }
    c.3.sort_by(|a, b| a.id.cmp(&b.id));
    for p in &mut c.0 {
        (p.create_index, p.modify_index) = (0, 0);
    }
    for t in &mut c.1 {
        (t.create_index, t.modify_index) = (0, 0);
    }
    c.0.sort_by(|a, b| a.id.cmp(&b.id));
    c.1.sort_by(|a, b| a.accessor_id.cmp(&b.accessor_id));
    c
}

fn wanted(r: pb::AclStateResponse) -> Copy {
    let policies = r
        .policies
        .into_iter()
        .map(|p| Policy {
            id: p.id,
            name: p.name,
            description: p.description,
            rules: p.rules,
            create_index: 0,
            modify_index: 0,
        })
        .collect();
    let tokens = r
        .tokens
        .into_iter()
        .map(|t| Token {
            accessor_id: t.accessor_id,
            secret_sha256: t.secret_sha256,
            description: t.description,
            policy_ids: t.policy_ids,
            service_identities: t.service_identities,
            node_identities: t.node_identities,
            management: t.management,
            expires_unix: Some(t.expires_unix).filter(|e| *e != 0),
            create_index: 0,
            modify_index: 0,
            role_ids: t.role_ids,
        })
        .collect();
    let roles = r
        .roles
        .into_iter()
        .map(|x| Role {
            id: x.id,
            name: x.name,
            description: x.description,
            policy_ids: x.policy_ids,
            service_identities: x.service_identities,
            node_identities: x.node_identities,
            create_index: 0,
            modify_index: 0,
        })
        .collect();
    unindexed((
        policies,
        tokens,
        Some(r.bootstrapped_at).filter(|b| *b != 0),
        roles,
    ))
}

async fn round(ctx: &AclReplication) -> Result<(), String> {
    let remote = ctx
        .primary
        .call(|ch| async move {
            let mut req = tonic::Request::new(pb::AclStateRequest {});
            req.set_timeout(READ_TIMEOUT);
            ReplicationClient::new(ch)
                .acl_state(req)
                .await
                .map(|r| r.into_inner())
        })
        .await
        .map_err(|s| s.message().to_string())?;
    let index = remote.index;
    let wanted = wanted(remote);
    let held = {
        let d = ctx.state.read();
        let acl = d.catalog.acl().to_data();
        unindexed((acl.policies, acl.tokens, acl.bootstrapped_at, acl.roles))
    };
    if held != wanted {
        if !ctx.leadership.leads_caught_up() {
            return Ok(());
        }
        let (policies, tokens, bootstrapped_at, roles) = wanted;
        let cmd = Command::Acl(AclCommand::Replace {
            policies,
            tokens,
            bootstrapped_at,
            roles,
        });
        ctx.writer.propose(cmd).await.map_err(|e| e.to_string())?;
        tracing::info!(primary_index = index, "ACLs copied from the primary datacenter");
    }
    ctx.status.succeeded(Kind::Acl, index);
    Ok(())
}
