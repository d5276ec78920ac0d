//! `tribune connect ...` and `tribune intention ...`: the mesh commands.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};

use super::bootstrap::{BootstrapParams, XdsMode, bootstrap, host_port};
use super::commands::connect;
use super::output::{emit, table};
use super::{ClientArgs, Format};

#[derive(Subcommand)]
pub(super) enum ConnectSub {
    /// The built-in certificate authority.
    Ca {
        #[command(subcommand)]
        cmd: CaSub,
    },
    /// Envoy for a sidecar or a mesh gateway: print its bootstrap, or run it.
    Envoy(EnvoyArgs),
}

#[derive(Subcommand)]
pub(super) enum CaSub {
    /// The trust domain and roots (the active one first).
    Roots,
    /// A new root, cross-signed by the current one; proxies move over without a restart.
    Rotate,
    /// Sign a leaf certificate for a service and print it (PEM).
    Sign {
        #[arg(long)]
        service: String,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(super) enum GatewayKind {
    /// Routes mTLS between datacenters on SNI, without decrypting.
    Mesh,
}

#[derive(Args)]
#[command(group(clap::ArgGroup::new("proxy").args(["sidecar_for", "gateway"]).required(true)))]
pub(super) struct EnvoyArgs {
    /// The service ID whose sidecar this Envoy is (its proxy ID is "<ID>-sidecar-proxy").
    #[arg(long)]
    sidecar_for: Option<String>,
    /// This Envoy is a gateway of this kind (with --service).
    #[arg(long, value_enum, requires = "service")]
    gateway: Option<GatewayKind>,
    /// Register the gateway first (with --address and --wan-address).
    #[arg(long, requires = "gateway")]
    register: bool,
    /// The gateway's service name.
    #[arg(long, requires = "gateway")]
    service: Option<String>,
    /// The gateway's instance ID, which is its proxy ID (default: the name).
    #[arg(long, requires = "gateway")]
    id: Option<String>,
    /// Where the gateway listens in this datacenter, IP:PORT.
    #[arg(long, requires = "register")]
    address: Option<String>,
    /// Where other datacenters reach the gateway, IP:PORT (default: --address).
    #[arg(long, requires = "register")]
    wan_address: Option<String>,
    /// How often the registered gateway's TCP check runs (e.g. 10s).
    #[arg(long, requires = "register", default_value = "10s")]
    check_interval: String,
    /// Envoy's admin address.
    #[arg(long, default_value = "127.0.0.1:19000")]
    admin_bind: String,
    /// Print the bootstrap JSON instead of running Envoy.
    #[arg(long)]
    bootstrap: bool,
    /// The Envoy binary (default: `envoy` on PATH).
    #[arg(long)]
    envoy_binary: Option<PathBuf>,
    /// xDS flavour: delta (incremental) or sotw (state of the world).
    #[arg(long, value_enum, default_value_t = XdsMode::Delta)]
    xds_mode: XdsMode,
    /// Extra arguments passed to Envoy (after --).
    #[arg(last = true)]
    envoy_args: Vec<String>,
}

#[derive(Subcommand)]
pub(super) enum IntentionSub {
    /// Allow or deny SOURCE -> DESTINATION (either may be *).
    Create {
        #[arg(long, conflicts_with = "deny", required_unless_present = "deny")]
        allow: bool,
        #[arg(long)]
        deny: bool,
        /// SOURCE is a service of this cluster peer.
        #[arg(long)]
        source_peer: Option<String>,
        source: String,
        destination: String,
    },
    /// Every intention and the default.
    List,
    /// Remove SOURCE -> DESTINATION.
    Delete {
        /// SOURCE is a service of this cluster peer.
        #[arg(long)]
        source_peer: Option<String>,
        source: String,
        destination: String,
    },
    /// Would SOURCE be allowed to reach DESTINATION? (exit 0 allowed, 2 denied)
    Check { source: String, destination: String },
}

pub(super) async fn run_connect(c: &ClientArgs, cmd: ConnectSub) -> anyhow::Result<()> {
    match cmd {
        ConnectSub::Ca { cmd } => ca(c, cmd).await,
        ConnectSub::Envoy(args) => envoy(c, args).await,
    }
}

async fn ca(c: &ClientArgs, cmd: CaSub) -> anyhow::Result<()> {
    let client = connect(c).await?;
    match cmd {
        CaSub::Roots => {
            let r = client.ca_roots().await?;
            emit(c.format, &r, || {
                println!("Trust domain: {}", r.trust_domain);
                let rows: Vec<Vec<String>> = r
                    .roots
                    .iter()
                    .rev()
                    .map(|x| {
                        vec![
                            x.id[..16.min(x.id.len())].to_string(),
                            x.serial_hex.clone(),
                            if x.active { "active" } else { "retired" }.into(),
                            x.not_after_unix.to_string(),
                        ]
                    })
                    .collect();
                table(&["ROOT ID", "SERIAL", "STATE", "NOT AFTER (UNIX)"], &rows);
                if let Ok(i) = tribune_certs::inspect(&r.intermediate_pem) {
                    println!(
                        "Intermediate (signs this datacenter's leaves): serial {}, not after {}",
                        i.serial_hex, i.not_after_unix
                    );
                }
            })
        }
        CaSub::Rotate => {
            let r = client.ca_rotate().await?;
            emit(c.format, &r, || {
                println!("Rotated: new root {} at index {}", r.new_root_id, r.index)
            })
        }
        CaSub::Sign { service } => {
            let r = client.ca_sign(&service).await?;
            emit(c.format, &r, || {
                print!("{}{}", r.cert_pem, r.chain_pem);
                eprintln!("{} (serial {}, root {})", r.spiffe_id, r.serial_hex, r.root_id);
            })
        }
    }
}

/// Registers the mesh gateway `a` describes: a TCP check on its LAN
/// address takes a dead gateway out of every proxy's endpoints.
async fn register_gateway(
    client: &tribune_client::Client,
    a: &EnvoyArgs,
    name: &str,
    id: &str,
) -> anyhow::Result<()> {
    let address = a
        .address
        .as_deref()
        .context("--register needs --address IP:PORT")?;
    let (host, port) = host_port(address).context("--address")?;
    let wan = a.wan_address.clone().unwrap_or_else(|| address.to_string());
    let interval = humantime::parse_duration(&a.check_interval).with_context(|| {
        format!(
            "--check-interval {:?} is not a duration like 10s",
            a.check_interval
        )
    })?;
    let req = tribune_client::api::RegisterRequest {
        service: Some(tribune_client::api::ServiceSpec {
            id: id.to_string(),
            name: name.to_string(),
            address: host.clone(),
            port: u32::from(port),
            kind: tribune_client::api::ServiceKind::MeshGateway as i32,
            wan_address: wan,
            ..Default::default()
        }),
        checks: vec![tribune_client::api::CheckDefinition {
            kind: Some(tribune_client::api::check_definition::Kind::Tcp(format!(
                "{host}:{port}"
            ))),
            interval_ms: interval.as_millis() as u64,
            ..Default::default()
        }],
        ..Default::default()
    };
    client.register(req).await?;
    eprintln!("Registered mesh gateway {id} ({name}) at {address}");
    Ok(())
}

async fn envoy(c: &ClientArgs, a: EnvoyArgs) -> anyhow::Result<()> {
    let client = connect(c).await?;
    let (proxy_id, cluster) = match (&a.sidecar_for, &a.service) {
        (Some(sidecar_for), _) => {
            let proxy_id = tribune_ids::sidecar_id(sidecar_for);
            let inst = client.get_instance(&proxy_id).await.with_context(|| {
                format!(
                    "{sidecar_for:?} has no sidecar: register it with `tribune services register ... --sidecar-port`"
                )
            })?;
            let svc = inst
                .instance
                .and_then(|i| i.service)
                .context("the agent returned no instance")?;
            let cluster = svc
                .proxy
                .map(|p| p.destination_service_name)
                .filter(|n| !n.is_empty())
                .unwrap_or(svc.name);
            (proxy_id, cluster)
        }
        (None, Some(name)) => {
            let id = a.id.clone().unwrap_or_else(|| name.clone());
            if a.register {
                register_gateway(&client, &a, name, &id).await?;
            } else {
                client.get_instance(&id).await.with_context(|| {
                    format!("no gateway {id:?} is registered: add --register --address IP:PORT --wan-address IP:PORT")
                })?;
            }
            (id, name.clone())
        }
        (None, None) => bail!("give --sidecar-for SERVICE_ID or --gateway mesh --service NAME"),
    };
    let (admin_host, admin_port) = host_port(&a.admin_bind).context("--admin-bind")?;
    let first_addr = c.grpc_addr.split(',').next().unwrap_or_default().trim();
    let (xds_host, xds_port) = host_port(first_addr).context("--grpc-addr")?;
    let ca_file = match c.ca_file() {
        Some(p) => Some(
            std::fs::canonicalize(p)
                .with_context(|| format!("--ca-file {}", p.display()))?
                .display()
                .to_string(),
        ),
        None => None,
    };
    let server_name = c.tls_server_name.clone().unwrap_or_else(|| xds_host.clone());
    let json = bootstrap(&BootstrapParams {
        proxy_id: &proxy_id,
        cluster: &cluster,
        admin_host: &admin_host,
        admin_port,
        xds_host: &xds_host,
        xds_port,
        mode: a.xds_mode,
        token: c.token.as_deref().filter(|t| !t.is_empty()),
        tls: ca_file.as_deref().map(|ca_file| super::bootstrap::XdsTls {
            ca_file,
            server_name: &server_name,
        }),
    });
    let text = serde_json::to_string_pretty(&json)?;
    if a.bootstrap {
        println!("{text}");
        return Ok(());
    }
    let file = tempfile::Builder::new()
        .prefix(&format!("tribune-envoy-{proxy_id}-"))
        .suffix(".json")
        .tempfile()?;
    std::fs::write(file.path(), &text)?;
    let (_, path) = file.keep().context("keeping the bootstrap file")?;
    let bin = a.envoy_binary.unwrap_or_else(|| PathBuf::from("envoy"));
    let mut cmd = std::process::Command::new(&bin);
    cmd.arg("-c")
        .arg(&path)
        .arg("--use-dynamic-base-id")
        .args(&a.envoy_args);
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        let err = cmd.exec();
        bail!("cannot run {}: {err}", bin.display())
    }
    #[cfg(not(unix))]
    {
        let status = cmd
            .status()
            .with_context(|| format!("cannot run {}", bin.display()))?;
        if !status.success() {
            bail!("envoy exited with {status}");
        }
        Ok(())
    }
}

pub(super) async fn run_intention(c: &ClientArgs, cmd: IntentionSub) -> anyhow::Result<()> {
    let client = connect(c).await?;
    match cmd {
        IntentionSub::Create {
            allow,
            deny: _,
            source_peer,
            source,
            destination,
        } => {
            let r = client
                .intention_upsert_from(source_peer.as_deref(), &source, &destination, allow)
                .await?;
            let verb = if allow { "allow" } else { "deny" };
            let from = source_peer.map(|p| format!(" (peer {p})")).unwrap_or_default();
            emit(c.format, &r, || {
                println!(
                    "Created: {source}{from} => {destination} ({verb}) at index {}",
                    r.index
                )
            })
        }
        IntentionSub::List => {
            let r = client.intention_list().await?;
            emit(c.format, &r, || {
                let rows: Vec<Vec<String>> = r
                    .intentions
                    .iter()
                    .map(|i| {
                        vec![
                            if i.source_peer.is_empty() {
                                i.source.clone()
                            } else {
                                format!("{} (peer {})", i.source, i.source_peer)
                            },
                            i.destination.clone(),
                            if i.allow { "allow" } else { "deny" }.into(),
                            i.modify_index.to_string(),
                        ]
                    })
                    .collect();
                table(&["SOURCE", "DESTINATION", "ACTION", "INDEX"], &rows);
                println!("default: {}", if r.default_allow { "allow" } else { "deny" });
            })
        }
        IntentionSub::Delete {
            source_peer,
            source,
            destination,
        } => {
            let r = client
                .intention_delete_from(source_peer.as_deref(), &source, &destination)
                .await?;
            emit(c.format, &r, || {
                println!("Deleted: {source} => {destination} at index {}", r.index)
            })
        }
        IntentionSub::Check { source, destination } => {
            let r = client.intention_check(&source, &destination).await?;
            let why = match &r.matched {
                Some(m) => format!("intention {} => {}", m.source, m.destination),
                None => "the default".to_string(),
            };
            if c.format == Format::Json {
                super::output::json(&r)?;
            } else {
                println!("{} (by {why})", if r.allowed { "Allowed" } else { "Denied" });
            }
            if !r.allowed {
                std::process::exit(2);
            }
            Ok(())
        }
    }
}
