//! ACL state in the catalog: policies and tokens. A token's secret is kept
//! only as its SHA-256: a snapshot file or a stolen log hands out no usable
//! secret (secrets are random UUIDs, so the hash cannot be searched back).
//! Like the rest of the catalog it changes only through the Raft log;
//! IDs and secrets are made before proposing.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::command::Outcome;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Policy {
    pub id: String,
    pub name: String,
    pub description: String,
    /// As written (HCL or JSON); checked before proposing.
    pub rules: String,
    pub create_index: u64,
    pub modify_index: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Token {
    pub accessor_id: String,
    /// Lower-case hex SHA-256 of the secret ID.
    pub secret_sha256: String,
    pub description: String,
    pub policy_ids: Vec<String>,
    pub service_identities: Vec<String>,
    /// "NODE:DATACENTER".
    pub node_identities: Vec<String>,
    pub management: bool,
    /// Unix seconds.
    pub expires_unix: Option<i64>,
    pub create_index: u64,
    pub modify_index: u64,
    pub role_ids: Vec<String>,
}

/// A named set of policies and identities tokens link to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Role {
    pub id: String,
    pub name: String,
    pub description: String,
    pub policy_ids: Vec<String>,
    pub service_identities: Vec<String>,
    pub node_identities: Vec<String>,
    pub create_index: u64,
    pub modify_index: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct AclData {
    pub policies: Vec<Policy>,
    pub tokens: Vec<Token>,
    /// The index of the bootstrap, once done.
    pub bootstrapped_at: Option<u64>,
    #[serde(default)]
    pub roles: Vec<Role>,
}

/// ACL commands, carried inside `Command`. Variants only ever added at the
/// end.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum AclCommand {
    /// The first management token; refused once done (unless `reset_index`
    /// names the bootstrap to redo, from the reset file).
    Bootstrap {
        token: Token,
        reset_index: Option<u64>,
    },
    PolicyUpsert(Policy),
    PolicyDelete {
        id: String,
    },
    TokenUpsert(Token),
    TokenDelete {
        accessor_id: String,
    },
    /// A secondary datacenter's copy of the primary's policies and tokens:
    /// they become exactly these (unchanged ones keep their indexes).
    Replace {
        policies: Vec<Policy>,
        tokens: Vec<Token>,
        bootstrapped_at: Option<u64>,
        roles: Vec<Role>,
    },
    RoleUpsert(Role),
    RoleDelete {
        id: String,
    },
}

#[derive(Clone, Debug, Default)]
pub(crate) struct AclState {
    pub policies: BTreeMap<String, Policy>,
    pub roles: BTreeMap<String, Role>,
    pub tokens: BTreeMap<String, Token>,
    /// Secret hash -> accessor ID.
    by_secret: BTreeMap<String, String>,
    pub bootstrapped_at: Option<u64>,
}

impl AclState {
    pub(crate) fn from_data(d: AclData) -> AclState {
        let mut s = AclState {
            bootstrapped_at: d.bootstrapped_at,
            ..Default::default()
        };
        for p in d.policies {
            s.policies.insert(p.id.clone(), p);
        }
        for r in d.roles {
            s.roles.insert(r.id.clone(), r);
        }
        for t in d.tokens {
            s.insert_token(t);
        }
        s
    }

    pub(crate) fn to_data(&self) -> AclData {
        AclData {
            policies: self.policies.values().cloned().collect(),
            tokens: self.tokens.values().cloned().collect(),
            bootstrapped_at: self.bootstrapped_at,
            roles: self.roles.values().cloned().collect(),
        }
    }

    pub(crate) fn token_by_secret_sha256(&self, hash: &str) -> Option<&Token> {
        self.by_secret.get(hash).and_then(|a| self.tokens.get(a))
    }

    pub(crate) fn policy_by_name(&self, name: &str) -> Option<&Policy> {
        self.policies.values().find(|p| p.name == name)
    }

    pub(crate) fn role_by_name(&self, name: &str) -> Option<&Role> {
        self.roles.values().find(|r| r.name == name)
    }

    fn insert_token(&mut self, t: Token) {
        if let Some(old) = self.tokens.get(&t.accessor_id) {
            self.by_secret.remove(&old.secret_sha256);
        }
        self.by_secret
            .insert(t.secret_sha256.clone(), t.accessor_id.clone());
        self.tokens.insert(t.accessor_id.clone(), t);
    }

    pub(crate) fn apply(&mut self, index: u64, cmd: &AclCommand) -> Outcome {
        match cmd {
            AclCommand::Bootstrap { token, reset_index } => {
                if let Some(done) = self.bootstrapped_at
                    && *reset_index != Some(done)
                {
                    return Outcome::Invalid {
                        field: "acl".into(),
                        message: format!("ACLs are already bootstrapped (reset index: {done})"),
                    };
                }
                let mut t = token.clone();
                (t.create_index, t.modify_index) = (index, index);
                self.insert_token(t);
                self.bootstrapped_at = Some(index);
                Outcome::AclUpdated
            }
            AclCommand::PolicyUpsert(p) => {
                if let Some(other) = self.policy_by_name(&p.name)
                    && other.id != p.id
                {
                    return Outcome::Invalid {
                        field: "name".into(),
                        message: format!("a policy named {:?} exists already", p.name),
                    };
                }
                let mut p = p.clone();
                p.create_index = self.policies.get(&p.id).map_or(index, |o| o.create_index);
                p.modify_index = index;
                self.policies.insert(p.id.clone(), p);
                Outcome::AclUpdated
            }
            AclCommand::PolicyDelete { id } => match self.policies.remove(id) {
                Some(_) => Outcome::AclUpdated,
                None => Outcome::NotFound {
                    what: format!("policy {id}"),
                },
            },
            AclCommand::TokenUpsert(t) => {
                let mut t = t.clone();
                t.create_index = self.tokens.get(&t.accessor_id).map_or(index, |o| o.create_index);
                t.modify_index = index;
                self.insert_token(t);
                Outcome::AclUpdated
            }
            AclCommand::RoleUpsert(r) => {
                if let Some(other) = self.role_by_name(&r.name)
                    && other.id != r.id
                {
                    return Outcome::Invalid {
                        field: "name".into(),
                        message: format!("a role named {:?} exists already", r.name),
                    };
                }
                let mut r = r.clone();
                r.create_index = self.roles.get(&r.id).map_or(index, |o| o.create_index);
                r.modify_index = index;
                self.roles.insert(r.id.clone(), r);
                Outcome::AclUpdated
            }
            AclCommand::RoleDelete { id } => match self.roles.remove(id) {
                Some(_) => Outcome::AclUpdated,
                None => Outcome::NotFound {
                    what: format!("role {id}"),
                },
            },
            AclCommand::Replace {
                policies,
                tokens,
                bootstrapped_at,
                roles,
            } => {
                let old_roles = std::mem::take(&mut self.roles);
                for r in roles {
                    let mut r = r.clone();
                    let old = old_roles.get(&r.id);
                    let same = old.is_some_and(|o| {
                        Role {
                            create_index: r.create_index,
                            modify_index: r.modify_index,
                            ..o.clone()
                        } == r
                    });
                    (r.create_index, r.modify_index) = match old {
                        Some(o) if same => (o.create_index, o.modify_index),
                        Some(o) => (o.create_index, index),
                        None => (index, index),
                    };
                    self.roles.insert(r.id.clone(), r);
                }
                let keep = |old: Option<(u64, u64)>, same: bool| match old {
                    Some((c, m)) if same => (c, m),
                    Some((c, _)) => (c, index),
                    None => (index, index),
                };
                let mut ps = BTreeMap::new();
                for p in policies {
                    let old = self.policies.get(&p.id);
                    let same = old.is_some_and(|o| {
                        o.name == p.name && o.rules == p.rules && o.description == p.description
                    });
                    let mut p = p.clone();
                    (p.create_index, p.modify_index) =
                        keep(old.map(|o| (o.create_index, o.modify_index)), same);
                    ps.insert(p.id.clone(), p);
                }
                self.policies = ps;
                let old_tokens = std::mem::take(&mut self.tokens);
                self.by_secret.clear();
                for t in tokens {
                    let old = old_tokens.get(&t.accessor_id);
                    let same = old.is_some_and(|o| {
                        Token {
                            create_index: t.create_index,
                            modify_index: t.modify_index,
                            ..o.clone()
                        } == *t
                    });
                    let mut t = t.clone();
                    (t.create_index, t.modify_index) =
                        keep(old.map(|o| (o.create_index, o.modify_index)), same);
                    self.insert_token(t);
                }
                self.bootstrapped_at = *bootstrapped_at;
                Outcome::AclUpdated
            }
            AclCommand::TokenDelete { accessor_id } => match self.tokens.remove(accessor_id) {
                Some(t) => {
                    self.by_secret.remove(&t.secret_sha256);
                    Outcome::AclUpdated
                }
                None => Outcome::NotFound {
                    what: format!("token {accessor_id}"),
                },
            },
        }
    }
}
