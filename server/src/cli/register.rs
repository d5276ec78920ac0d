//! `tribune services register`: from flags or from a TOML file, both turned
//! into the same `ServiceFile` and then into one `RegisterRequest`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{ArgGroup, Args};
use serde::Deserialize;
use tribune_client::api;

#[derive(Args)]
#[command(group(ArgGroup::new("check").args(["check_http", "check_tcp", "check_grpc", "check_ttl", "check_alias"])))]
pub(super) struct RegisterArgs {
    /// A TOML service definition instead of flags (see README).
    #[arg(conflicts_with_all = ["name", "id"])]
    pub file: Option<PathBuf>,
    /// Service name (an RFC 1123 DNS label).
    #[arg(long, required_unless_present = "file")]
    pub name: Option<String>,
    /// Instance ID (default: the name).
    #[arg(long)]
    pub id: Option<String>,
    /// Instance address (default: the agent's address).
    #[arg(long)]
    pub address: Option<String>,
    #[arg(long, required_unless_present = "file")]
    pub port: Option<u32>,
    /// Repeatable.
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    /// K=V, repeatable.
    #[arg(long = "meta")]
    pub meta: Vec<String>,
    /// Node to register on (default: the agent's).
    #[arg(long)]
    pub node: Option<String>,
    /// HTTP check URL.
    #[arg(long)]
    pub check_http: Option<String>,
    /// TCP check HOST:PORT.
    #[arg(long)]
    pub check_tcp: Option<String>,
    /// gRPC health check HOST:PORT[/service].
    #[arg(long)]
    pub check_grpc: Option<String>,
    /// TTL check, e.g. 30s.
    #[arg(long)]
    pub check_ttl: Option<String>,
    /// Alias check: mirror the health of this service instance ID.
    #[arg(long)]
    pub check_alias: Option<String>,
    /// Consecutive successes before the check turns passing.
    #[arg(long)]
    pub success_before_passing: Option<u32>,
    /// Consecutive failures before the check turns critical.
    #[arg(long)]
    pub failures_before_critical: Option<u32>,
    /// Check interval, e.g. 10s.
    #[arg(long)]
    pub interval: Option<String>,
    /// Check timeout, e.g. 2s.
    #[arg(long)]
    pub timeout: Option<String>,
    /// Register a sidecar proxy listening on this port.
    #[arg(long)]
    pub sidecar_port: Option<u32>,
    /// NAME:LOCAL_PORT, or NAME:LOCAL_PORT@DC for another datacenter;
    /// repeatable (with --sidecar-port).
    #[arg(long = "upstream", requires = "sidecar_port")]
    pub upstreams: Vec<String>,
    /// How the sidecar reaches upstreams in other datacenters: none
    /// (straight to their sidecars), local (through this datacenter's mesh
    /// gateways) or remote (through theirs); default: the datacenter's.
    #[arg(long, requires = "sidecar_port", value_parser = ["none", "local", "remote"])]
    pub mesh_gateway_mode: Option<String>,
    /// Where other datacenters reach this instance, IP:PORT.
    #[arg(long)]
    pub wan_address: Option<String>,
    /// Where other datacenters reach the node, IP (kept when not given).
    #[arg(long)]
    pub node_wan_address: Option<String>,
}

/// The TOML form: a `[service]` table.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ServiceFile {
    pub service: ServiceDef,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(super) struct ServiceDef {
    pub name: String,
    pub id: Option<String>,
    pub address: Option<String>,
    pub port: u32,
    pub tags: Vec<String>,
    pub meta: HashMap<String, String>,
    pub node: Option<String>,
    pub wan_address: Option<String>,
    pub node_wan_address: Option<String>,
    pub check: Option<CheckDef>,
    pub checks: Vec<CheckDef>,
    pub sidecar: Option<SidecarDef>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(super) struct CheckDef {
    pub id: Option<String>,
    pub name: Option<String>,
    pub http: Option<String>,
    pub tcp: Option<String>,
    pub grpc: Option<String>,
    pub ttl: Option<String>,
    pub alias_service: Option<String>,
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub success_before_passing: Option<u32>,
    pub failures_before_critical: Option<u32>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(super) struct SidecarDef {
    pub port: u32,
    pub upstreams: Vec<UpstreamDef>,
    /// none, local or remote.
    pub mesh_gateway_mode: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(super) struct UpstreamDef {
    pub destination_name: String,
    pub local_bind_port: u32,
    pub local_bind_address: Option<String>,
    pub datacenter: Option<String>,
    /// A cluster peer that exports it (instead of a datacenter).
    pub peer: Option<String>,
    /// none, local or remote.
    pub mesh_gateway_mode: Option<String>,
}

/// A mesh gateway mode as flags and files spell it.
pub(super) fn gateway_mode(v: &Option<String>) -> anyhow::Result<i32> {
    Ok(match v.as_deref() {
        None => api::MeshGatewayMode::Default,
        Some("none") => api::MeshGatewayMode::None,
        Some("local") => api::MeshGatewayMode::Local,
        Some("remote") => api::MeshGatewayMode::Remote,
        Some(other) => bail!("mesh_gateway_mode {other:?}: use none, local or remote"),
    } as i32)
}

/// `NAME:LOCAL_PORT`, `NAME:LOCAL_PORT@DC` or `NAME:LOCAL_PORT@peer:PEER`.
fn upstream_flag(u: &str) -> anyhow::Result<UpstreamDef> {
    let (target, datacenter, peer) = match u.split_once('@') {
        Some((_, "peer:")) => bail!("--upstream {u:?}: no peer name after 'peer:'"),
        Some((t, at)) if at.starts_with("peer:") => (t, None, Some(at["peer:".len()..].to_string())),
        Some((t, dc)) if !dc.is_empty() => (t, Some(dc.to_string()), None),
        Some(_) => bail!("--upstream {u:?}: nothing after '@' (expected NAME:LOCAL_PORT@DC or @peer:PEER)"),
        None => (u, None, None),
    };
    let (name, port) = target
        .rsplit_once(':')
        .with_context(|| format!("--upstream {u:?}: expected NAME:LOCAL_PORT[@DC]"))?;
    let port = port
        .parse()
        .with_context(|| format!("--upstream {u:?}: {port:?} is not a port"))?;
    Ok(UpstreamDef {
        destination_name: name.to_string(),
        local_bind_port: port,
        datacenter,
        peer,
        ..Default::default()
    })
}

fn millis(what: &str, v: &Option<String>) -> anyhow::Result<u64> {
    match v {
        None => Ok(0),
        Some(s) => {
            let d: Duration = humantime::parse_duration(s)
                .with_context(|| format!("{what}: {s:?} is not a duration like 10s or 1m"))?;
            Ok(d.as_millis() as u64)
        }
    }
}

impl CheckDef {
    fn to_pb(&self) -> anyhow::Result<api::CheckDefinition> {
        use api::check_definition::Kind;
        let kinds = [&self.http, &self.tcp, &self.grpc, &self.ttl, &self.alias_service]
            .iter()
            .filter(|k| k.is_some())
            .count();
        if kinds != 1 {
            bail!("a check needs exactly one of http, tcp, grpc, ttl or alias_service");
        }
        let kind = if let Some(u) = &self.http {
            Kind::Http(u.clone())
        } else if let Some(t) = &self.tcp {
            Kind::Tcp(t.clone())
        } else if let Some(g) = &self.grpc {
            Kind::Grpc(g.clone())
        } else if let Some(a) = &self.alias_service {
            Kind::AliasService(a.clone())
        } else {
            Kind::TtlMs(millis("ttl", &self.ttl)?)
        };
        Ok(api::CheckDefinition {
            id: self.id.clone().unwrap_or_default(),
            name: self.name.clone().unwrap_or_default(),
            kind: Some(kind),
            interval_ms: millis("interval", &self.interval)?,
            timeout_ms: millis("timeout", &self.timeout)?,
            initial_status: 0,
            success_before_passing: self.success_before_passing.unwrap_or(0),
            failures_before_critical: self.failures_before_critical.unwrap_or(0),
        })
    }
}

impl ServiceDef {
    pub(super) fn to_request(&self) -> anyhow::Result<api::RegisterRequest> {
        let mut checks = Vec::new();
        for c in self.check.iter().chain(self.checks.iter()) {
            checks.push(c.to_pb()?);
        }
        Ok(api::RegisterRequest {
            service: Some(api::ServiceSpec {
                id: self.id.clone().unwrap_or_default(),
                name: self.name.clone(),
                address: self.address.clone().unwrap_or_default(),
                port: self.port,
                tags: self.tags.clone(),
                meta: self.meta.clone(),
                kind: api::ServiceKind::Typical as i32,
                proxy: None,
                wan_address: self.wan_address.clone().unwrap_or_default(),
            }),
            checks,
            sidecar: self
                .sidecar
                .as_ref()
                .map(|s| -> anyhow::Result<_> {
                    Ok(api::SidecarSpec {
                        port: s.port,
                        upstreams: s
                            .upstreams
                            .iter()
                            .map(|u| {
                                Ok(api::Upstream {
                                    destination_name: u.destination_name.clone(),
                                    local_bind_address: u.local_bind_address.clone().unwrap_or_default(),
                                    local_bind_port: u.local_bind_port,
                                    datacenter: u.datacenter.clone().unwrap_or_default(),
                                    mesh_gateway_mode: gateway_mode(&u.mesh_gateway_mode)?,
                                    peer: u.peer.clone().unwrap_or_default(),
                                })
                            })
                            .collect::<anyhow::Result<_>>()?,
                        address: String::new(),
                        mesh_gateway_mode: gateway_mode(&s.mesh_gateway_mode)?,
                    })
                })
                .transpose()?,
            node: self.node.clone().unwrap_or_default(),
            node_address: String::new(),
            node_wan_address: self.node_wan_address.clone().unwrap_or_default(),
        })
    }
}

impl RegisterArgs {
    /// The flags as a service definition, or the file's.
    pub(super) fn definition(self) -> anyhow::Result<ServiceDef> {
        if let Some(path) = &self.file {
            let text =
                std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            let f: ServiceFile =
                toml::from_str(&text).with_context(|| format!("service file {}", path.display()))?;
            return Ok(f.service);
        }
        let meta = self
            .meta
            .iter()
            .map(|kv| match kv.split_once('=') {
                Some((k, v)) => Ok((k.to_string(), v.to_string())),
                None => bail!("--meta {kv:?}: expected KEY=VALUE"),
            })
            .collect::<anyhow::Result<HashMap<_, _>>>()?;
        let any_check = self.check_http.is_some()
            || self.check_tcp.is_some()
            || self.check_grpc.is_some()
            || self.check_ttl.is_some()
            || self.check_alias.is_some();
        if !any_check
            && (self.interval.is_some()
                || self.timeout.is_some()
                || self.success_before_passing.is_some()
                || self.failures_before_critical.is_some())
        {
            bail!(
                "--interval, --timeout, --success-before-passing and --failures-before-critical go with a --check-* flag"
            );
        }
        let check = any_check.then(|| CheckDef {
            http: self.check_http.clone(),
            tcp: self.check_tcp.clone(),
            grpc: self.check_grpc.clone(),
            ttl: self.check_ttl.clone(),
            alias_service: self.check_alias.clone(),
            interval: self.interval.clone(),
            timeout: self.timeout.clone(),
            success_before_passing: self.success_before_passing,
            failures_before_critical: self.failures_before_critical,
            ..Default::default()
        });
        let upstreams = self
            .upstreams
            .iter()
            .map(|u| upstream_flag(u))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(ServiceDef {
            name: self.name.unwrap_or_default(),
            id: self.id,
            address: self.address,
            port: self.port.unwrap_or_default(),
            tags: self.tags,
            meta,
            node: self.node,
            wan_address: self.wan_address,
            node_wan_address: self.node_wan_address,
            check,
            checks: Vec::new(),
            sidecar: self.sidecar_port.map(|port| SidecarDef {
                port,
                upstreams,
                mesh_gateway_mode: self.mesh_gateway_mode,
            }),
        })
    }
}
