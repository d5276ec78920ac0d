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
    Delete {
        id_or_name: String,
    },
}

#[derive(Subcommand)]
pub(super) enum TokenSub {
    Create {
        #[arg(long, default_value = "")]
        description: String,
        /// Repeatable.
        #[arg(long = "policy-name")]
        policies: Vec<String>,
        /// Write on the service and its sidecar, read on the rest; repeatable.
        #[arg(long = "service-identity")]
        service_identities: Vec<String>,
        /// NODE:DATACENTER; write on the node; repeatable.
        #[arg(long = "node-identity")]
        node_identities: Vec<String>,
        /// The token expires after this long (e.g. 1h); default never.
        #[arg(long)]
        expires_ttl: Option<String>,
    },
    List,
    Read {
        accessor_id: String,
    },
    Delete {
        accessor_id: String,
    },
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
                let rules = match rules.strip_prefix('@') {
                    Some(path) => std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?,
                    None => rules,
                };
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
                policies,
                service_identities,
                node_identities,
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
                        policies,
                        service_identities,
                        node_identities,
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
            TokenSub::Delete { accessor_id } => {
                let index = client.acl_token_delete(&accessor_id).await?;
                emit(c.format, &serde_json::json!({ "index": index }), || {
                    println!("Deleted token {accessor_id} at index {index}")
                })
            }
        },
    }
}
