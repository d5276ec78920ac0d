//! The `tribune` command line: `agent` runs an agent; every other command
//! talks to an agent's gRPC port through `tribune-client`.

mod acl;
mod bootstrap;
mod commands;
mod connect;
mod output;
mod peering;
mod register;
mod tls;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::AgentConfig;

#[derive(Parser)]
#[command(
    name = "tribune",
    version,
    about = "Tribune: a service-mesh control plane",
    propagate_version = true
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run an agent: `--dev`, or `--server --node N --data-dir D --bootstrap-expect 1`.
    Agent(Box<AgentConfig>),
    /// Register and deregister service instances.
    Services(ServicesCmd),
    /// Read the catalog.
    Catalog(CatalogCmd),
    /// Stream changes until interrupted.
    Watch(WatchCmd),
    /// Update a TTL check: pass, warn or fail.
    Check(CheckCmd),
    /// Cluster operations.
    Operator(OperatorCmd),
    /// Save or restore the whole state.
    Snapshot(SnapshotCmd),
    /// The service mesh: the CA and Envoy.
    Connect(ConnectCmd),
    /// Service-to-service authorization.
    Intention(IntentionCmd),
    /// Gossip members and their state: the LAN pool, or with --wan the
    /// servers of every datacenter.
    Members(MembersCmd),
    /// Print a new gossip encryption key (base64 of 32 random bytes) for --encrypt.
    Keygen,
    /// Gossip encryption keys on every member: --list, --install, --use, --remove.
    Keyring(KeyringCmd),
    /// Access control: bootstrap, policies, tokens.
    Acl(AclCmd),
    /// Cluster peering: tokens, establishment, status.
    Peering(PeeringCmd),
    /// TLS between agents: create the cluster's CA.
    Tls {
        #[command(subcommand)]
        cmd: tls::TlsSub,
    },
}

#[derive(Args)]
struct AclCmd {
    #[command(flatten)]
    client: ClientArgs,
    #[command(subcommand)]
    cmd: acl::AclSub,
}

#[derive(Args)]
#[command(group(clap::ArgGroup::new("op").required(true).args(["list", "install", "use_key", "remove"])))]
struct KeyringCmd {
    #[command(flatten)]
    client: ClientArgs,
    /// Each key and how many members hold it (and as primary).
    #[arg(long)]
    list: bool,
    /// Add KEY to every member's keyring (they decrypt with it from now on).
    #[arg(long, value_name = "KEY")]
    install: Option<String>,
    /// Make KEY (installed) the one every member encrypts with.
    #[arg(long = "use", value_name = "KEY")]
    use_key: Option<String>,
    /// Remove KEY (not the one in use) from every member.
    #[arg(long, value_name = "KEY")]
    remove: Option<String>,
}

#[derive(Args)]
struct MembersCmd {
    #[command(flatten)]
    client: ClientArgs,
    /// The WAN pool: the servers of every datacenter (`node.dc`).
    #[arg(long)]
    wan: bool,
}

#[derive(Args)]
struct ConnectCmd {
    #[command(flatten)]
    client: ClientArgs,
    #[command(subcommand)]
    cmd: connect::ConnectSub,
}

#[derive(Args)]
struct IntentionCmd {
    #[command(flatten)]
    client: ClientArgs,
    #[command(subcommand)]
    cmd: connect::IntentionSub,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    Table,
    Json,
}

/// How every command reaches an agent.
#[derive(Args, Clone)]
pub(crate) struct ClientArgs {
    /// The agent's gRPC address; several, comma-separated, to fail over.
    #[arg(
        long,
        env = "TRIBUNE_GRPC_ADDR",
        default_value = "127.0.0.1:8502",
        global = true
    )]
    pub grpc_addr: String,
    /// ACL token.
    #[arg(long, env = "TRIBUNE_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
    /// CA certificate (PEM) the agent's TLS port is verified with: turns
    /// TLS on (give --grpc-addr the TLS port, 8503); "" turns it off.
    #[arg(long, env = "TRIBUNE_CACERT", global = true)]
    pub ca_file: Option<String>,
    /// The name the agent's certificate must carry (default: the host of
    /// --grpc-addr; servers carry server.<dc>.tribune).
    #[arg(long, env = "TRIBUNE_TLS_SERVER_NAME", global = true)]
    pub tls_server_name: Option<String>,
    /// The datacenter that serves the request (default: the agent's own);
    /// the agent's servers forward it there.
    #[arg(long, env = "TRIBUNE_DATACENTER", global = true)]
    pub datacenter: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table, global = true)]
    pub format: Format,
    /// Read the serving agent's own state instead of a linearizable read
    /// through the leader (faster; may lag).
    #[arg(long, global = true)]
    pub stale: bool,
}

impl ClientArgs {
    /// The CA file, unless TLS is off (none given, or "").
    pub(crate) fn ca_file(&self) -> Option<&std::path::Path> {
        self.ca_file
            .as_deref()
            .filter(|p| !p.is_empty())
            .map(std::path::Path::new)
    }
}

#[derive(Args)]
struct PeeringCmd {
    #[command(flatten)]
    client: ClientArgs,
    #[command(subcommand)]
    cmd: peering::PeeringSub,
}

#[derive(Args)]
struct ServicesCmd {
    #[command(flatten)]
    client: ClientArgs,
    #[command(subcommand)]
    cmd: ServicesSub,
}

#[derive(Subcommand)]
enum ServicesSub {
    /// Register (or update, by ID) an instance, from flags or a TOML file.
    Register(Box<register::RegisterArgs>),
    /// Remove an instance and its sidecar.
    Deregister {
        /// The instance's ID.
        id: String,
    },
    /// Let a peer import a service.
    Export {
        name: String,
        #[arg(long)]
        to_peer: String,
    },
    /// Stop exporting a service to a peer.
    Unexport {
        name: String,
        #[arg(long)]
        to_peer: String,
    },
    /// What is exported to which peer.
    Exports,
}

#[derive(Args)]
struct CatalogCmd {
    #[command(flatten)]
    client: ClientArgs,
    #[command(subcommand)]
    cmd: CatalogSub,
}

#[derive(Subcommand)]
enum CatalogSub {
    /// Every service with its instance counts (with --peer: imported from that peer).
    Services {
        #[arg(long)]
        peer: Option<String>,
    },
    /// Every node.
    Nodes,
    /// The datacenters of the federation, nearest first.
    Datacenters,
    /// A service's instances with their aggregated health.
    Service {
        name: String,
        /// Only instances whose checks all pass.
        #[arg(long)]
        passing: bool,
        /// An imported service of this peer.
        #[arg(long)]
        peer: Option<String>,
    },
}

#[derive(Args)]
struct WatchCmd {
    #[command(flatten)]
    client: ClientArgs,
    #[command(subcommand)]
    cmd: WatchSub,
}

#[derive(Subcommand)]
enum WatchSub {
    /// A service's instances: a snapshot, then every change.
    Service {
        name: String,
        /// Resume after this index instead of starting from a snapshot.
        #[arg(long, default_value_t = 0)]
        index: u64,
    },
}

#[derive(Args)]
struct CheckCmd {
    #[command(flatten)]
    client: ClientArgs,
    #[command(subcommand)]
    cmd: CheckSub,
}

#[derive(Subcommand)]
enum CheckSub {
    /// Mark a TTL check passing.
    Pass(CheckArgs),
    /// Mark a TTL check warning.
    Warn(CheckArgs),
    /// Mark a TTL check critical.
    Fail(CheckArgs),
}

#[derive(Args)]
struct CheckArgs {
    check_id: String,
    /// Kept as the check's output.
    #[arg(long, default_value = "")]
    note: String,
}

#[derive(Args)]
struct OperatorCmd {
    #[command(flatten)]
    client: ClientArgs,
    #[command(subcommand)]
    cmd: OperatorSub,
}

#[derive(Subcommand)]
enum OperatorSub {
    /// Raft operations.
    Raft {
        #[command(subcommand)]
        cmd: RaftSub,
    },
    /// Autopilot: server health and failure tolerance.
    Autopilot {
        #[command(subcommand)]
        cmd: AutopilotSub,
    },
    /// What a secondary datacenter copies from the primary.
    Replication {
        #[command(subcommand)]
        cmd: ReplicationSub,
    },
}

#[derive(Subcommand)]
enum ReplicationSub {
    /// Per replicated kind: the primary's index last copied and the time
    /// since the last successful round.
    Status,
}

#[derive(Subcommand)]
enum RaftSub {
    /// The Raft configuration and its leader.
    ListPeers,
    /// Remove a server from the Raft configuration.
    RemovePeer {
        /// The server's node name.
        node: String,
    },
}

#[derive(Subcommand)]
enum AutopilotSub {
    /// Each server's health and the cluster's failure tolerance.
    State,
}

#[derive(Args)]
struct SnapshotCmd {
    #[command(flatten)]
    client: ClientArgs,
    #[command(subcommand)]
    cmd: SnapshotSub,
}

#[derive(Subcommand)]
enum SnapshotSub {
    /// Write the whole state to FILE.
    Save { file: PathBuf },
    /// Replace the whole catalog with FILE's.
    Restore { file: PathBuf },
}

/// Parses the command line and runs it; errors go to stderr.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("Error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let msg = format!("{e:#}");
            eprintln!("Error: {msg}");
            // A plaintext client on a TLS port sees only this (the
            // connection is cut in one of several ways).
            let plaintext_on_tls = ["transport error", "h2 protocol error", "operation was canceled"]
                .iter()
                .any(|m| msg.contains(m));
            if plaintext_on_tls && !msg.contains("certificate") {
                eprintln!("  (is --grpc-addr a TLS port, such as 8503? then give --ca-file)");
            }
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    use commands as c;
    match cli.cmd {
        Cmd::Agent(flags) => c::agent(*flags).await,
        Cmd::Services(s) => match s.cmd {
            ServicesSub::Register(args) => c::register(&s.client, *args).await,
            ServicesSub::Deregister { id } => c::deregister(&s.client, &id).await,
            ServicesSub::Export { name, to_peer } => peering::export(&s.client, &name, &to_peer, true).await,
            ServicesSub::Unexport { name, to_peer } => {
                peering::export(&s.client, &name, &to_peer, false).await
            }
            ServicesSub::Exports => peering::exports(&s.client).await,
        },
        Cmd::Catalog(s) => match s.cmd {
            CatalogSub::Services { peer: Some(p) } => peering::imported(&s.client, &p, None).await,
            CatalogSub::Services { peer: None } => c::catalog_services(&s.client).await,
            CatalogSub::Nodes => c::catalog_nodes(&s.client).await,
            CatalogSub::Datacenters => c::catalog_datacenters(&s.client).await,
            CatalogSub::Service {
                name, peer: Some(p), ..
            } => peering::imported(&s.client, &p, Some(&name)).await,
            CatalogSub::Service { name, passing, .. } => c::catalog_service(&s.client, &name, passing).await,
        },
        Cmd::Watch(s) => match s.cmd {
            WatchSub::Service { name, index } => c::watch_service(&s.client, &name, index).await,
        },
        Cmd::Check(s) => {
            use tribune_client::api::HealthStatus as H;
            let (status, args) = match s.cmd {
                CheckSub::Pass(a) => (H::Passing, a),
                CheckSub::Warn(a) => (H::Warning, a),
                CheckSub::Fail(a) => (H::Critical, a),
            };
            c::check(&s.client, &args.check_id, status, &args.note).await
        }
        Cmd::Operator(s) => match s.cmd {
            OperatorSub::Raft {
                cmd: RaftSub::ListPeers,
            } => c::raft_list_peers(&s.client).await,
            OperatorSub::Raft {
                cmd: RaftSub::RemovePeer { node },
            } => c::raft_remove_peer(&s.client, &node).await,
            OperatorSub::Autopilot {
                cmd: AutopilotSub::State,
            } => c::autopilot_state(&s.client).await,
            OperatorSub::Replication {
                cmd: ReplicationSub::Status,
            } => c::replication_status(&s.client).await,
        },
        Cmd::Connect(s) => connect::run_connect(&s.client, s.cmd).await,
        Cmd::Intention(s) => connect::run_intention(&s.client, s.cmd).await,
        Cmd::Acl(s) => acl::run(&s.client, s.cmd).await,
        Cmd::Tls { cmd } => tls::run(cmd),
        Cmd::Peering(s) => peering::run(&s.client, s.cmd).await,
        Cmd::Members(s) => c::members(&s.client, s.wan).await,
        Cmd::Keygen => {
            println!("{}", tribune_client::gossip::Keyring::generate_key());
            Ok(())
        }
        Cmd::Keyring(s) => {
            use tribune_client::api::KeyringOp as Op;
            let (op, key) = if let Some(k) = s.install {
                (Op::Install, k)
            } else if let Some(k) = s.use_key {
                (Op::Use, k)
            } else if let Some(k) = s.remove {
                (Op::Remove, k)
            } else {
                (Op::List, String::new())
            };
            c::keyring(&s.client, op, &key).await
        }
        Cmd::Snapshot(s) => match s.cmd {
            SnapshotSub::Save { file } => c::snapshot_save(&s.client, &file).await,
            SnapshotSub::Restore { file } => c::snapshot_restore(&s.client, &file).await,
        },
    }
}
