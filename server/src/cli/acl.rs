//! `tribune acl ...`: bootstrap, policies, tokens, whoami. A token's secret
//! ID is printed once, when it is created.

use anyhow::Context;
use clap::Subcommand;
use tribune_client::api;

use super::ClientArgs;
use super::commands::connect;
use super::output::{emit, table};

#[derive(Subcommand)]
pub(super) enum AclSub {
    /// Create the first management token (once; see README to reset).
    Bootstrap,
    /// ACL policies.
    Policy {
        #[command(subcommand)]
        cmd: PolicySub,
    },
    /// ACL tokens.
    Token {
        #[command(subcommand)]
        cmd: TokenSub,
    },
    /// ACL roles: named sets of policies and identities.
    Role {
        #[command(subcommand)]
        cmd: RoleSub,
    },
    /// The token this command sends.
    Whoami,
}

#[derive(Subcommand)]
pub(super) enum PolicySub {
    /// A new policy: --rules RULES, or --rules @FILE.
    Create {
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "")]
        description: String,
        #[arg(long)]
        rules: String,
    },
    List,
    /// By ID or name.
    Read {
        id_or_name: String,
    },
    /// New rules (--rules RULES or @FILE) for a policy, by ID or name.
    Update {
        id_or_name: String,
        #[arg(long)]
        rules: String,
        #[arg(long, default_value = "")]
        description: String,
    },
    Delete {
        id_or_name: String,
    },
}

#[derive(Subcommand)]
pub(super) enum RoleSub {
    Create {
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "")]
        description: String,
        #[arg(long = "policy-name")]
        policies: Vec<String>,
        #[arg(long = "service-identity")]
        service_identities: Vec<String>,
        #[arg(long = "node-identity")]
        node_identities: Vec<String>,
    },
    List,
    /// By ID or name.
    Read {
        id_or_name: String,
    },
    Delete {
        id_or_name: String,
    },
}

#[derive(Subcommand)]
pub(super) enum TokenSub {
    Create {
        #[arg(long, default_value = "")]
        description: String,
        #[command(flatten)]
        links: TokenLinks,
        /// The token expires after this long (e.g. 1h); default never.
        #[arg(long)]
        expires_ttl: Option<String>,
    },
    List,
    Read {
        accessor_id: String,
    },
    /// Replace a token's links (and description); its secret stays.
    Update {
        accessor_id: String,
        #[arg(long, default_value = "")]
        description: String,
        #[command(flatten)]
        links: TokenLinks,
    },
    Delete {
        accessor_id: String,
    },
}

/// What a token grants, as `token create` and `token update` take it.
#[derive(clap::Args)]
pub(super) struct TokenLinks {
    /// Repeatable.
    #[arg(long = "policy-name")]
    policies: Vec<String>,
    /// Repeatable.
    #[arg(long = "role-name")]
    roles: Vec<String>,
    /// Write on the service and its sidecar, read on the rest; repeatable.
    #[arg(long = "service-identity")]
    service_identities: Vec<String>,
    /// NODE:DATACENTER; write on the node; repeatable.
    #[arg(long = "node-identity")]
    node_identities: Vec<String>,
}

fn print_role(r: &api::AclRole) {
    println!("ID:           {}", r.id);
    println!("Name:         {}", r.name);
    println!("Description:  {}", r.description);
    if !r.policies.is_empty() {
        println!("Policies:     {}", r.policies.join(", "));
    }
    if !r.service_identities.is_empty() {
        println!("Services:     {}", r.service_identities.join(", "));
    }
    if !r.node_identities.is_empty() {
        println!("Nodes:        {}", r.node_identities.join(", "));
    }
}

fn rules_arg(rules: String) -> anyhow::Result<String> {
    match rules.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path).with_context(|| format!("reading {path}")),
        None => Ok(rules),
    }
}

fn print_token(t: &api::AclToken) {
    println!("AccessorID:   {}", t.accessor_id);
    if !t.secret_id.is_empty() {
        println!("SecretID:     {}", t.secret_id);
    }
    println!("Description:  {}", t.description);
    if t.management {
        println!("Management:   yes");
    }
    if !t.policies.is_empty() {
        println!("Policies:     {}", t.policies.join(", "));
    }
    if !t.roles.is_empty() {
        println!("Roles:        {}", t.roles.join(", "));
    }
    if !t.service_identities.is_empty() {
        println!("Services:     {}", t.service_identities.join(", "));
    }
    if !t.node_identities.is_empty() {
        println!("Nodes:        {}", t.node_identities.join(", "));
    }
    if t.expires_unix != 0 {
        println!("Expires:      {} (Unix seconds)", t.expires_unix);
    }
}

fn print_policy(p: &api::AclPolicy) {
    println!("ID:           {}", p.id);
    println!("Name:         {}", p.name);
    println!("Description:  {}", p.description);
    println!("Rules:\n{}", p.rules);
}

pub(super) async fn run(c: &ClientArgs, cmd: AclSub) -> anyhow::Result<()> {
    let client = connect(c).await?;
    match cmd {
        AclSub::Bootstrap => {
            let t = client.acl_bootstrap().await?;
            emit(c.format, &t, || print_token(&t))
        }
        AclSub::Whoami => {
            let t = client.acl_whoami().await?;
            emit(c.format, &t, || print_token(&t))
        }
        AclSub::Policy { cmd } => match cmd {
            PolicySub::Create {
                name,
                description,
                rules,
            } => {
                let rules = rules_arg(rules)?;
                let p = client.acl_policy_create(&name, &description, &rules).await?;
                emit(c.format, &p, || print_policy(&p))
            }
            PolicySub::List => {
                let ps = client.acl_policy_list().await?;
                emit(c.format, &ps, || {
                    let rows: Vec<Vec<String>> = ps
                        .iter()
                        .map(|p| vec![p.name.clone(), p.id.clone(), p.description.clone()])
                        .collect();
                    table(&["NAME", "ID", "DESCRIPTION"], &rows);
                })
            }
            PolicySub::Read { id_or_name } => {
                let p = client.acl_policy_read(&id_or_name).await?;
                emit(c.format, &p, || print_policy(&p))
            }
            PolicySub::Update {
                id_or_name,
                rules,
                description,
            } => {
                let p = client
                    .acl_policy_update(&id_or_name, &description, &rules_arg(rules)?)
                    .await?;
                emit(c.format, &p, || print_policy(&p))
            }
            PolicySub::Delete { id_or_name } => {
                let index = client.acl_policy_delete(&id_or_name).await?;
                emit(c.format, &serde_json::json!({ "index": index }), || {
                    println!("Deleted policy {id_or_name} at index {index}")
                })
            }
        },
        AclSub::Token { cmd } => match cmd {
            TokenSub::Create {
                description,
                links,
                expires_ttl,
            } => {
                let ttl_secs = match expires_ttl {
                    Some(d) => humantime::parse_duration(&d)
                        .with_context(|| format!("--expires-ttl {d:?} is not a duration like 1h"))?
                        .as_secs() as i64,
                    None => 0,
                };
                let t = client
                    .acl_token_create(api::AclTokenCreateRequest {
                        description,
                        policies: links.policies,
                        roles: links.roles,
                        service_identities: links.service_identities,
                        node_identities: links.node_identities,
                        ttl_secs,
                    })
                    .await?;
                emit(c.format, &t, || print_token(&t))
            }
            TokenSub::List => {
                let ts = client.acl_token_list().await?;
                emit(c.format, &ts, || {
                    let rows: Vec<Vec<String>> = ts
                        .iter()
                        .map(|t| {
                            let what = if t.management {
                                "management".to_string()
                            } else {
                                [
                                    t.policies.clone(),
                                    t.service_identities.clone(),
                                    t.node_identities.clone(),
                                ]
                                .concat()
                                .join(", ")
                            };
                            vec![t.accessor_id.clone(), t.description.clone(), what]
                        })
                        .collect();
                    table(&["ACCESSOR ID", "DESCRIPTION", "GRANTS"], &rows);
                })
            }
            TokenSub::Read { accessor_id } => {
                let t = client.acl_token_read(&accessor_id).await?;
                emit(c.format, &t, || print_token(&t))
            }
            TokenSub::Update {
                accessor_id,
                description,
                links,
            } => {
                let t = client
                    .acl_token_update(api::AclTokenUpdateRequest {
                        accessor_id,
                        description,
                        policies: links.policies,
                        roles: links.roles,
                        service_identities: links.service_identities,
                        node_identities: links.node_identities,
                    })
                    .await?;
                emit(c.format, &t, || print_token(&t))
            }
            TokenSub::Delete { accessor_id } => {
                let index = client.acl_token_delete(&accessor_id).await?;
                emit(c.format, &serde_json::json!({ "index": index }), || {
                    println!("Deleted token {accessor_id} at index {index}")
                })
            }
        },
        AclSub::Role { cmd } => match cmd {
            RoleSub::Create {
                name,
                description,
                policies,
                service_identities,
                node_identities,
            } => {
                let r = client
                    .acl_role_create(api::AclRoleCreateRequest {
                        name,
                        description,
                        policies,
                        service_identities,
                        node_identities,
                    })
                    .await?;
                emit(c.format, &r, || print_role(&r))
            }
            RoleSub::List => {
                let rs = client.acl_role_list().await?;
                emit(c.format, &rs, || {
                    let rows: Vec<Vec<String>> = rs
                        .iter()
                        .map(|r| vec![r.name.clone(), r.id.clone(), r.policies.join(", ")])
                        .collect();
                    table(&["NAME", "ID", "POLICIES"], &rows);
                })
            }
            RoleSub::Read { id_or_name } => {
                let r = client.acl_role_read(&id_or_name).await?;
                emit(c.format, &r, || print_role(&r))
            }
            RoleSub::Delete { id_or_name } => {
                let index = client.acl_role_delete(&id_or_name).await?;
                emit(c.format, &serde_json::json!({ "index": index }), || {
                    println!("Deleted role {id_or_name} at index {index}")
                })
            }
        },
    }
}
