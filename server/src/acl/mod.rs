//! Access control on a server, decided in one place. A layer in front of
//! every public service resolves the request's token (`x-tribune-token`)
//! into a [`Caller`] and checks what the method needs by the table in
//! `table.rs`; a method whose permission names something in its request
//! (the service being registered) is marked there as checked by its
//! handler, which asks the same `Caller`. The decision itself is
//! `tribune_acl::Authorizer`'s. A method the table does not know is refused.

pub(crate) mod table;
pub(crate) mod transport;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use tonic::Status;
use tribune_acl::{Access, Authorizer, Permission, Resource, Rules};

use crate::catalog::acl::Token;
use crate::raft::state_machine::Shared;

/// gRPC metadata carrying a token's secret ID.
pub(crate) const TOKEN_HEADER: &str = "x-tribune-token";

/// ACL settings of a server.
#[derive(Clone, Debug)]
pub(crate) struct AclSettings {
    pub(crate) enabled: bool,
    /// What applies where no rule matches, and to requests without a token.
    pub(crate) default_allow: bool,
    /// A management token's secret fixed in configuration, created once.
    pub(crate) initial_management_token: Option<String>,
    /// A client agent's token for its own node, checks and syncs.
    pub(crate) agent_token: Option<String>,
    /// What a secondary decides once its copy of the primary's ACLs is
    /// older than `token_ttl`.
    pub(crate) down_policy: DownPolicy,
    pub(crate) token_ttl: std::time::Duration,
}

/// What a secondary datacenter decides while the primary cannot be reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DownPolicy {
    /// Decide with the last copy of the primary's policies and tokens.
    ExtendCache,
    /// Allow every call.
    Allow,
    /// Refuse every call.
    Deny,
}

impl DownPolicy {
    pub(crate) fn parse(v: &str) -> Option<DownPolicy> {
        match v {
            "extend-cache" => Some(DownPolicy::ExtendCache),
            "allow" => Some(DownPolicy::Allow),
            "deny" => Some(DownPolicy::Deny),
            _ => None,
        }
    }
}

/// Who a request acts as.
#[derive(Clone)]
pub(crate) struct Caller {
    /// `None`: no token was sent (the anonymous token).
    pub(crate) accessor_id: Option<String>,
    authz: Arc<Authorizer>,
    /// Decided by the down policy `deny`: the primary's ACLs have not been
    /// reached for this many seconds.
    down_for_secs: Option<u64>,
}

impl Caller {
    /// Everything allowed: ACLs off, or the server's own calls.
    pub(crate) fn management() -> Caller {
        Caller {
            accessor_id: None,
            authz: Arc::new(Authorizer::management()),
            down_for_secs: None,
        }
    }

    #[cfg(test)]
    pub(crate) fn for_tests(accessor_id: Option<&str>, authz: Authorizer) -> Caller {
        Caller {
            accessor_id: accessor_id.map(str::to_string),
            authz: Arc::new(authz),
            down_for_secs: None,
        }
    }

    pub(crate) fn allows(&self, p: &Permission) -> bool {
        self.authz.allows(p)
    }

    /// PERMISSION_DENIED naming the permission; UNAUTHENTICATED when no
    /// token was sent.
    pub(crate) fn require(&self, p: &Permission) -> Result<(), Status> {
        if self.allows(p) {
            return Ok(());
        }
        if let Some(secs) = self.down_for_secs {
            return Err(Status::permission_denied(format!(
                "{p} is refused: this datacenter has not reached the primary's ACLs for {secs}s \
                 and its down policy is deny"
            )));
        }
        Err(match &self.accessor_id {
            None => Status::unauthenticated(format!(
                "this call needs a token with {p} (send its secret as {TOKEN_HEADER}, or --token)"
            )),
            Some(a) => Status::permission_denied(format!("token {a} lacks {p}")),
        })
    }

    /// The caller a handler is given: the layer put it in the request.
    pub(crate) fn of<T>(req: &tonic::Request<T>) -> Result<Caller, Status> {
        req.extensions()
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| Status::internal("no caller was resolved for this request"))
    }
}

pub(crate) fn service(name: &str, a: Access) -> Permission {
    Permission::new(Resource::Service(name.to_string()), a)
}

pub(crate) fn node(name: &str, a: Access) -> Permission {
    Permission::new(Resource::Node(name.to_string()), a)
}

pub(crate) fn intention(destination: &str, a: Access) -> Permission {
    Permission::new(Resource::Intention(destination.to_string()), a)
}

impl Caller {
    /// Reads are filtered: what the caller may not read is left out.
    pub(crate) fn sees_service(&self, name: &str) -> bool {
        self.allows(&service(name, Access::Read))
    }

    pub(crate) fn sees_node(&self, name: &str) -> bool {
        self.allows(&node(name, Access::Read))
    }
}

/// Lower-case hex SHA-256: how secrets are kept.
pub(crate) fn secret_sha256(secret: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, secret.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Resolves tokens against the replicated ACL state.
pub(crate) struct Acl {
    pub(crate) settings: AclSettings,
    datacenter: String,
    state: Arc<Shared>,
    /// A secondary's replication of the primary's ACLs (`None`: the primary).
    replica: Option<Arc<crate::federation::replication::ReplicationStatus>>,
    started: std::time::Instant,
    /// Parsed rules by policy ID, with the index they were parsed at.
    parsed: Mutex<HashMap<String, (u64, Arc<Rules>)>>,
}

impl Acl {
    pub(crate) fn new(
        settings: AclSettings,
        datacenter: String,
        state: Arc<Shared>,
        replica: Option<Arc<crate::federation::replication::ReplicationStatus>>,
    ) -> Arc<Acl> {
        Arc::new(Acl {
            settings,
            datacenter,
            state,
            replica,
            started: std::time::Instant::now(),
            parsed: Mutex::default(),
        })
    }

    /// How long a secondary's copy has gone without reaching the primary,
    /// once that is longer than the token TTL.
    fn primary_down_for(&self) -> Option<std::time::Duration> {
        let status = self
            .replica
            .as_ref()?
            .of(crate::federation::replication::Kind::Acl);
        let age = status.last_success.unwrap_or(self.started).elapsed();
        (age > self.settings.token_ttl).then_some(age)
    }

    fn rules_of(&self, t: &Token) -> Vec<Arc<Rules>> {
        let d = self.state.read();
        let acl = d.catalog.acl();
        let mut cache = self.parsed.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::new();
        // A token's own links, and its roles'.
        let roles: Vec<&crate::catalog::acl::Role> =
            t.role_ids.iter().filter_map(|id| acl.roles.get(id)).collect();
        let policy_ids = t
            .policy_ids
            .iter()
            .chain(roles.iter().flat_map(|r| r.policy_ids.iter()));
        let services: Vec<&String> = t
            .service_identities
            .iter()
            .chain(roles.iter().flat_map(|r| r.service_identities.iter()))
            .collect();
        let nodes: Vec<&String> = t
            .node_identities
            .iter()
            .chain(roles.iter().flat_map(|r| r.node_identities.iter()))
            .collect();
        for id in policy_ids {
            let Some(p) = acl.policies.get(id) else { continue };
            match cache.get(id) {
                Some((at, r)) if *at == p.modify_index => out.push(r.clone()),
                _ => {
                    // Checked before it was written: a failure here is an
                    // older build's rule; it grants nothing.
                    let r = Arc::new(Rules::parse(&p.rules).unwrap_or_default());
                    cache.insert(id.clone(), (p.modify_index, r.clone()));
                    out.push(r);
                }
            }
        }
        out.extend(
            services
                .iter()
                .map(|s| Arc::new(tribune_acl::service_identity(s))),
        );
        out.extend(nodes.iter().filter_map(|n| {
            let (node, dc) = n
                .split_once(':')
                .unwrap_or((n.as_str(), self.datacenter.as_str()));
            (dc == self.datacenter).then(|| Arc::new(tribune_acl::node_identity(node)))
        }));
        out
    }

    /// The caller behind `secret` (`None`: the anonymous token).
    pub(crate) fn caller(&self, secret: Option<&str>) -> Result<Caller, Status> {
        if !self.settings.enabled {
            return Ok(Caller::management());
        }
        if self.settings.down_policy != DownPolicy::ExtendCache
            && let Some(age) = self.primary_down_for()
        {
            return Ok(match self.settings.down_policy {
                DownPolicy::Allow => Caller::management(),
                _ => Caller {
                    accessor_id: None,
                    authz: Arc::new(Authorizer::new([], false)),
                    down_for_secs: Some(age.as_secs()),
                },
            });
        }
        let Some(secret) = secret.filter(|s| !s.is_empty()) else {
            return Ok(Caller {
                accessor_id: None,
                authz: Arc::new(Authorizer::new([], self.settings.default_allow)),
                down_for_secs: None,
            });
        };
        let token = self
            .state
            .read()
            .catalog
            .acl()
            .token_by_secret_sha256(&secret_sha256(secret))
            .cloned()
            .ok_or_else(|| Status::unauthenticated("the token is not known (was it deleted?)"))?;
        if let Some(t) = token.expires_unix
            && crate::mesh::now_unix() >= t
        {
            return Err(Status::unauthenticated(format!(
                "token {} expired at {t} (Unix seconds)",
                token.accessor_id
            )));
        }
        let authz = if token.management {
            Authorizer::management()
        } else {
            let rules = self.rules_of(&token);
            Authorizer::new(rules.iter().map(|r| &**r), self.settings.default_allow)
        };
        Ok(Caller {
            accessor_id: Some(token.accessor_id),
            authz: Arc::new(authz),
            down_for_secs: None,
        })
    }
}

/// The layer in front of every public service.
pub(crate) async fn layer(State(acl): State<Arc<Acl>>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    let secret = req
        .headers()
        .get(TOKEN_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let caller = match acl.caller(secret.as_deref()) {
        Ok(c) => c,
        Err(s) => return s.into_http(),
    };
    if acl.settings.enabled {
        match table::need(&path) {
            Some(table::Need::Permission(p)) => {
                if let Err(s) = caller.require(&p) {
                    return s.into_http();
                }
            }
            Some(table::Need::InHandler | table::Need::Nothing) => {}
            None => {
                return Status::permission_denied(format!("{path} is not in the ACL table: refused"))
                    .into_http();
            }
        }
    }
    req.extensions_mut().insert(caller);
    next.run(req).await
}

/// Creates the `--initial-management-token` once, on the leader, if no
/// token has that secret yet.
pub(crate) async fn initial_management_token(
    settings: AclSettings,
    leadership: crate::consensus::Leadership,
    state: Arc<Shared>,
    writer: crate::consensus::Writer,
) {
    let Some(secret) = settings.initial_management_token.filter(|_| settings.enabled) else {
        return;
    };
    let hash = secret_sha256(&secret);
    loop {
        let known = state.read().catalog.acl().token_by_secret_sha256(&hash).is_some();
        if known {
            return;
        }
        if leadership.leads_caught_up() {
            let token = Token {
                accessor_id: uuid::Uuid::new_v4().to_string(),
                secret_sha256: hash.clone(),
                description: "Initial Management Token".into(),
                policy_ids: vec![],
                service_identities: vec![],
                node_identities: vec![],
                management: true,
                expires_unix: None,
                create_index: 0,
                modify_index: 0,
                role_ids: vec![],
            };
            let cmd =
                crate::catalog::command::Command::Acl(crate::catalog::acl::AclCommand::TokenUpsert(token));
            if let Err(e) = writer.propose(cmd).await {
                tracing::warn!(error = %e, "could not create the initial management token");
            }
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}
