//! Agent settings: flags, a TOML file with a key for every flag, and the
//! defaults from the contract. Flags win over the file.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use anyhow::{Context, bail};
use serde::Deserialize;

pub(crate) const DEFAULT_SERVER_PORT: u16 = 8300;
pub(crate) const DEFAULT_SERF_LAN_PORT: u16 = 8301;
pub(crate) const DEFAULT_SERF_WAN_PORT: u16 = 8302;
pub(crate) const DEFAULT_HTTP_PORT: u16 = 8500;
pub(crate) const DEFAULT_GRPC_PORT: u16 = 8502;
pub(crate) const DEFAULT_GRPC_TLS_PORT: u16 = 8503;

/// Everything an agent can be told, as the TOML config file spells it.
#[derive(Debug, Clone, Default, Deserialize, clap::Args)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct AgentConfig {
    /// One server on 127.0.0.1, data in a temporary directory, bootstrapped at once.
    #[arg(long)]
    pub dev: bool,
    /// Run as a server (Raft voter).
    #[arg(long)]
    pub server: bool,
    /// Node name (default: the host name; "dev" with --dev).
    #[arg(long)]
    pub node: Option<String>,
    /// Where the agent keeps its state; survives restarts.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Datacenter name (default dc1).
    #[arg(long)]
    pub datacenter: Option<String>,
    /// Bootstrap the Raft cluster once this many servers are known.
    #[arg(long)]
    pub bootstrap_expect: Option<u32>,
    /// LAN gossip address of another agent (HOST[:PORT], port 8301 by default); repeatable.
    #[arg(long)]
    #[serde(default)]
    pub retry_join: Vec<String>,
    /// WAN gossip address of a server in another datacenter (HOST[:PORT], port 8302 by default); repeatable; servers only.
    #[arg(long)]
    #[serde(default)]
    pub retry_join_wan: Vec<String>,
    /// The datacenter that owns the mesh's trust and authorization (default: this server's own).
    #[arg(long)]
    pub primary_datacenter: Option<String>,
    /// IP to bind every port to (default 127.0.0.1).
    #[arg(long)]
    pub bind: Option<IpAddr>,
    /// gRPC API and xDS listen address, plaintext (default BIND:8502; "" turns it off).
    #[arg(long)]
    pub grpc_addr: Option<String>,
    /// The same over TLS, with a server certificate from the built-in CA
    /// (default BIND:8503 on servers; "" turns it off).
    #[arg(long)]
    pub grpc_tls_addr: Option<String>,
    /// PEM file of the CA that agents' TLS certificates chain to (from
    /// `tribune tls ca create`). On servers it turns on mutual TLS on the
    /// server port; on a client agent, auto-encrypt.
    #[arg(long)]
    pub tls_ca_file: Option<PathBuf>,
    /// The CA's private key (servers only): a server signs its own first
    /// certificate with it, and a new cluster's built-in CA adopts it.
    #[arg(long)]
    pub tls_ca_key_file: Option<PathBuf>,
    /// Lifetime of the agents' own TLS certificates (default 72h); they
    /// are renewed after two thirds of it.
    #[arg(long)]
    pub tls_cert_ttl: Option<String>,
    /// HTTP listen address (default BIND:8500).
    #[arg(long)]
    pub http_addr: Option<SocketAddr>,
    /// Server RPC / Raft listen address (default BIND:8300).
    #[arg(long)]
    pub server_addr: Option<SocketAddr>,
    /// Gossip encryption key (base64 of 32 bytes, from `tribune keygen`); every member needs it.
    #[arg(long, value_name = "KEY")]
    pub encrypt: Option<String>,
    /// The server RPC address other servers dial, when not --server-addr (a NAT, a proxy).
    #[arg(long)]
    pub advertise_server_addr: Option<SocketAddr>,
    /// LAN gossip address (default BIND:8301).
    #[arg(long)]
    pub serf_lan_addr: Option<SocketAddr>,
    /// WAN gossip address (default BIND:8302).
    #[arg(long)]
    pub serf_wan_addr: Option<SocketAddr>,
    /// TOML file with any of these settings (flags win).
    #[arg(long)]
    #[serde(skip)]
    pub config_file: Option<PathBuf>,
    /// trace, debug, info, warn or error (default info); or a tracing filter.
    #[arg(long)]
    pub log_level: Option<String>,
    /// Log as JSON lines.
    #[arg(long)]
    pub log_json: bool,
    /// Take a Raft snapshot (and compact the log) every this many entries (default 8192).
    #[arg(long)]
    pub snapshot_threshold: Option<u64>,
    /// Log entries kept behind a snapshot, for followers that lag a little (default 1024).
    #[arg(long)]
    pub snapshot_keep_logs: Option<u64>,
    /// Catalog entities kept in the change history for resuming watches (default 65536).
    #[arg(long)]
    pub watch_history: Option<usize>,
    /// allow or deny: what applies to connections no intention matches (default allow).
    #[arg(long)]
    pub default_intention: Option<String>,
    /// TTL of leaf certificates, e.g. 72h or 10m (default 72h); fixed when the CA is created.
    #[arg(long)]
    pub leaf_cert_ttl: Option<String>,
    /// TTL of CA roots (default 87600h, ten years).
    #[arg(long)]
    pub ca_root_ttl: Option<String>,
    /// Leaf certificates this server signs per second at most (default 50000).
    #[arg(long)]
    pub ca_sign_rate: Option<u32>,
    /// Turn access control on: every call is checked against its token.
    #[arg(long)]
    pub acl_enabled: bool,
    /// allow or deny: what ACLs allow where no rule matches, and to calls
    /// without a token (default allow; deny is recommended).
    #[arg(long)]
    pub default_policy: Option<String>,
    /// What a secondary datacenter decides once it has not reached the
    /// primary's ACLs for --acl-token-ttl: extend-cache (the default: its
    /// last copy), allow or deny.
    #[arg(long)]
    pub down_policy: Option<String>,
    /// How old a secondary's copy of the primary's ACLs may grow before the
    /// down policy applies (default 30s).
    #[arg(long)]
    pub acl_token_ttl: Option<String>,
    /// A management token's secret ID, created once by the leader.
    #[arg(long)]
    pub initial_management_token: Option<String>,
    /// A client agent's token (ACLs): for its own node, its checks and the
    /// services registered through it without a token of their own.
    #[arg(long)]
    pub agent_token: Option<String>,
    /// How sidecars reach upstreams in other datacenters when neither the
    /// upstream nor its service says: none (straight to the remote
    /// sidecars), local (through this datacenter's mesh gateways) or remote
    /// (through the target's); default none, as in Consul.
    #[arg(long)]
    pub mesh_gateway_mode: Option<String>,
    /// Remove servers gossip has seen dead for this long from Raft (e.g. 10m; default off).
    #[arg(long)]
    pub dead_server_cleanup_after: Option<String>,
    /// Deregister a node gossip has seen dead for this long (default 72h; servers).
    #[arg(long)]
    pub reconnect_timeout: Option<String>,
    /// How often a client agent compares the servers' copy of its node with its own (default 60s).
    #[arg(long)]
    pub anti_entropy_interval: Option<String>,
}

macro_rules! merge {
    ($dst:ident, $src:ident; $($opt:ident),*; $($flag:ident),*) => {
        $( if $src.$opt.is_some() { $dst.$opt = $src.$opt.clone(); } )*
        $( $dst.$flag |= $src.$flag; )*
    };
}

impl AgentConfig {
    /// Reads `--config-file` (if given) and lays the flags over it.
    pub(crate) fn load(flags: AgentConfig) -> anyhow::Result<AgentConfig> {
        let mut cfg = match &flags.config_file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading config file {}", path.display()))?;
                toml::from_str::<AgentConfig>(&text)
                    .with_context(|| format!("config file {}", path.display()))?
            }
            None => AgentConfig::default(),
        };
        merge!(cfg, flags;
            node, data_dir, datacenter, bootstrap_expect, bind, grpc_addr, http_addr, server_addr,
            serf_lan_addr, serf_wan_addr, advertise_server_addr, grpc_tls_addr, tls_ca_file, tls_ca_key_file, tls_cert_ttl, encrypt, log_level, primary_datacenter, snapshot_threshold, snapshot_keep_logs, watch_history,
            default_intention, leaf_cert_ttl, ca_root_ttl, ca_sign_rate, mesh_gateway_mode, default_policy, down_policy, acl_token_ttl, initial_management_token, agent_token, dead_server_cleanup_after,
            reconnect_timeout, anti_entropy_interval;
            dev, server, log_json, acl_enabled);
        if !flags.retry_join.is_empty() {
            cfg.retry_join = flags.retry_join;
        }
        if !flags.retry_join_wan.is_empty() {
            cfg.retry_join_wan = flags.retry_join_wan;
        }
        Ok(cfg)
    }
}

/// The settings an agent runs with, every default filled in.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub dev: bool,
    /// A server (Raft voter); false for a client agent.
    pub server: bool,
    pub reconnect_timeout: std::time::Duration,
    pub anti_entropy_interval: std::time::Duration,
    pub node: String,
    pub datacenter: String,
    /// `None` with --dev: a temporary directory.
    pub data_dir: Option<PathBuf>,
    pub bootstrap_expect: u32,
    pub retry_join: Vec<SocketAddr>,
    pub serf_lan_addr: SocketAddr,
    /// WAN gossip (servers only).
    pub serf_wan_addr: SocketAddr,
    pub retry_join_wan: Vec<SocketAddr>,
    pub primary_datacenter: String,
    pub dead_server_cleanup_after: Option<std::time::Duration>,
    pub bind: IpAddr,
    /// `None` when turned off (`--grpc-addr ""`).
    pub grpc_addr: Option<SocketAddr>,
    pub grpc_tls_addr: Option<SocketAddr>,
    pub tls: crate::tls::TlsSettings,
    pub http_addr: SocketAddr,
    pub server_addr: SocketAddr,
    pub advertise_server_addr: Option<SocketAddr>,
    pub encrypt: Option<String>,
    pub snapshot_threshold: u64,
    pub snapshot_keep_logs: u64,
    pub watch_history: usize,
    pub mesh: crate::mesh::MeshSettings,
    pub acl: crate::acl::AclSettings,
}

/// `HOST[:PORT]` of another agent's gossip port (`default_port` when left out).
fn join_addr(flag: &str, v: &str, default_port: u16) -> anyhow::Result<SocketAddr> {
    use std::net::ToSocketAddrs;
    let with_port = if v.parse::<SocketAddr>().is_ok()
        || v.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        v.to_string()
    } else {
        format!("{v}:{default_port}")
    };
    with_port
        .to_socket_addrs()
        .map_err(|e| anyhow::anyhow!("{flag} {v:?}: {e}"))?
        .next()
        .ok_or_else(|| anyhow::anyhow!("{flag} {v:?}: no address"))
}

fn secs(flag: &str, v: Option<&str>, default: u64, min: u64) -> anyhow::Result<u64> {
    let Some(v) = v else { return Ok(default) };
    let d = humantime::parse_duration(v).map_err(|e| anyhow::anyhow!("{flag} {v:?}: {e}"))?;
    let s = d.as_secs();
    if s < min {
        bail!("{flag} {v:?}: must be at least {min}s");
    }
    Ok(s)
}

/// A listen address flag where "" means off.
fn optional_addr(flag: &str, v: Option<&str>, default: SocketAddr) -> anyhow::Result<Option<SocketAddr>> {
    match v.map(str::trim) {
        None => Ok(Some(default)),
        Some("") => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|e| anyhow::anyhow!("{flag} {v:?}: {e} (IP:PORT, or \"\" to turn it off)")),
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "tribune".into())
}

impl Settings {
    pub(crate) fn resolve(cfg: &AgentConfig) -> anyhow::Result<Settings> {
        let server = cfg.dev || cfg.server;
        if !server {
            if let Some(n) = cfg.bootstrap_expect {
                bail!(
                    "--bootstrap-expect {n} is for servers: add --server, or leave it out for a client agent"
                );
            }
            if cfg.retry_join.is_empty() {
                bail!(
                    "a client agent needs --retry-join with the LAN gossip address of a server or another agent"
                );
            }
        }
        let bootstrap_expect = match (cfg.dev, cfg.bootstrap_expect) {
            (false, None) if !server => 0,
            (true, None | Some(1)) => 1,
            (true, Some(n)) => bail!("--dev runs a single server; --bootstrap-expect {n} does not apply"),
            (false, Some(0) | None) => {
                bail!(
                    "a server needs --bootstrap-expect (1 for a single-server datacenter, 3 or 5 for a cluster)"
                )
            }
            (false, Some(n)) => n,
        };
        if bootstrap_expect > 1 && cfg.retry_join.is_empty() {
            bail!(
                "--bootstrap-expect {bootstrap_expect} needs --retry-join with another server's LAN gossip address"
            );
        }
        let retry_join = cfg
            .retry_join
            .iter()
            .map(|j| join_addr("--retry-join", j, DEFAULT_SERF_LAN_PORT))
            .collect::<anyhow::Result<Vec<_>>>()?;
        if !server && !cfg.retry_join_wan.is_empty() {
            bail!("--retry-join-wan is for servers: client agents gossip on the LAN only");
        }
        let retry_join_wan = cfg
            .retry_join_wan
            .iter()
            .map(|j| join_addr("--retry-join-wan", j, DEFAULT_SERF_WAN_PORT))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let data_dir = match (&cfg.data_dir, cfg.dev) {
            (Some(d), _) => Some(d.clone()),
            (None, true) => None,
            (None, false) => bail!("an agent needs --data-dir (where it keeps its state across restarts)"),
        };
        let node = match &cfg.node {
            Some(n) => n.clone(),
            None if cfg.dev => "dev".into(),
            None => host_name(),
        };
        crate::catalog::validate::node_name("--node", &node).map_err(|e| anyhow::anyhow!("{e}"))?;
        let datacenter = cfg.datacenter.clone().unwrap_or_else(|| "dc1".into());
        crate::catalog::validate::node_name("--datacenter", &datacenter)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let primary_datacenter = cfg
            .primary_datacenter
            .clone()
            .unwrap_or_else(|| datacenter.clone());
        crate::catalog::validate::node_name("--primary-datacenter", &primary_datacenter)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let bind = cfg.bind.unwrap_or(IpAddr::from([127, 0, 0, 1]));
        let at = |p| SocketAddr::new(bind, p);
        let snapshot_threshold = cfg.snapshot_threshold.unwrap_or(8192);
        if snapshot_threshold == 0 {
            bail!("--snapshot-threshold must be at least 1");
        }
        Ok(Settings {
            dev: cfg.dev,
            server,
            reconnect_timeout: std::time::Duration::from_secs(secs(
                "--reconnect-timeout",
                cfg.reconnect_timeout.as_deref(),
                72 * 3600,
                1,
            )?),
            anti_entropy_interval: std::time::Duration::from_secs(secs(
                "--anti-entropy-interval",
                cfg.anti_entropy_interval.as_deref(),
                60,
                1,
            )?),
            node,
            datacenter,
            data_dir,
            bootstrap_expect,
            bind,
            retry_join,
            serf_lan_addr: cfg.serf_lan_addr.unwrap_or(at(DEFAULT_SERF_LAN_PORT)),
            serf_wan_addr: cfg.serf_wan_addr.unwrap_or(at(DEFAULT_SERF_WAN_PORT)),
            retry_join_wan,
            primary_datacenter,
            dead_server_cleanup_after: match cfg.dead_server_cleanup_after.as_deref() {
                None => None,
                Some(v) => Some(std::time::Duration::from_secs(secs(
                    "--dead-server-cleanup-after",
                    Some(v),
                    0,
                    10,
                )?)),
            },
            grpc_addr: optional_addr("--grpc-addr", cfg.grpc_addr.as_deref(), at(DEFAULT_GRPC_PORT))?,
            grpc_tls_addr: if server {
                optional_addr(
                    "--grpc-tls-addr",
                    cfg.grpc_tls_addr.as_deref(),
                    at(DEFAULT_GRPC_TLS_PORT),
                )?
            } else {
                if cfg.grpc_tls_addr.as_deref().is_some_and(|v| !v.trim().is_empty()) {
                    bail!(
                        "--grpc-tls-addr is for servers: a client agent serves its local apps on --grpc-addr"
                    );
                }
                None
            },
            tls: crate::tls::TlsSettings::resolve(cfg, server)?,
            http_addr: cfg.http_addr.unwrap_or(at(DEFAULT_HTTP_PORT)),
            server_addr: cfg.server_addr.unwrap_or(at(DEFAULT_SERVER_PORT)),
            advertise_server_addr: cfg.advertise_server_addr,
            encrypt: cfg.encrypt.clone(),
            snapshot_threshold,
            snapshot_keep_logs: cfg.snapshot_keep_logs.unwrap_or(1024),
            watch_history: cfg.watch_history.unwrap_or(65_536),
            acl: crate::acl::AclSettings {
                enabled: cfg.acl_enabled,
                default_allow: match cfg.default_policy.as_deref() {
                    None | Some("allow") => true,
                    Some("deny") => false,
                    Some(other) => bail!("--default-policy {other:?}: use allow or deny"),
                },
                initial_management_token: cfg.initial_management_token.clone().filter(|t| !t.is_empty()),
                agent_token: cfg.agent_token.clone().filter(|t| !t.is_empty()),
                down_policy: match cfg.down_policy.as_deref() {
                    None => crate::acl::DownPolicy::ExtendCache,
                    Some(v) => crate::acl::DownPolicy::parse(v).ok_or_else(|| {
                        anyhow::anyhow!("--down-policy {v:?}: use extend-cache, allow or deny")
                    })?,
                },
                token_ttl: std::time::Duration::from_secs(secs(
                    "--acl-token-ttl",
                    cfg.acl_token_ttl.as_deref(),
                    30,
                    1,
                )?),
            },
            mesh: crate::mesh::MeshSettings {
                default_allow: match cfg.default_intention.as_deref() {
                    None | Some("allow") => true,
                    Some("deny") => false,
                    Some(other) => bail!("--default-intention {other:?}: use allow or deny"),
                },
                leaf_ttl_secs: secs("--leaf-cert-ttl", cfg.leaf_cert_ttl.as_deref(), 72 * 3600, 120)?,
                root_ttl_secs: secs("--ca-root-ttl", cfg.ca_root_ttl.as_deref(), 87_600 * 3600, 3600)?,
                sign_rate: match cfg.ca_sign_rate {
                    Some(0) => bail!("--ca-sign-rate must be at least 1"),
                    Some(n) => n,
                    None => 50_000,
                },
                gateway_mode: match cfg.mesh_gateway_mode.as_deref() {
                    None | Some("none") => tribune_xds::GatewayMode::None,
                    Some("local") => tribune_xds::GatewayMode::Local,
                    Some("remote") => tribune_xds::GatewayMode::Remote,
                    Some(other) => bail!("--mesh-gateway-mode {other:?}: use none, local or remote"),
                },
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.toml");
        std::fs::write(&path, "server = true\nnode = \"from-file\"\ndatacenter = \"east\"\nbootstrap_expect = 1\ndata_dir = \"/x\"\n")
            .unwrap();
        let flags = AgentConfig {
            config_file: Some(path),
            node: Some("from-flag".into()),
            ..Default::default()
        };
        let cfg = AgentConfig::load(flags).unwrap();
        let s = Settings::resolve(&cfg).unwrap();
        assert_eq!(s.node, "from-flag");
        assert_eq!(s.datacenter, "east");
        assert_eq!(s.grpc_addr.map(|a| a.port()), Some(DEFAULT_GRPC_PORT));
        assert_eq!(s.grpc_tls_addr.map(|a| a.port()), Some(DEFAULT_GRPC_TLS_PORT));
    }

    #[test]
    fn unknown_keys_in_the_file_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.toml");
        std::fs::write(&path, "sevrer = true\n").unwrap();
        let e = AgentConfig::load(AgentConfig {
            config_file: Some(path),
            ..Default::default()
        })
        .unwrap_err();
        assert!(format!("{e:#}").contains("sevrer"), "{e:#}");
    }
}
