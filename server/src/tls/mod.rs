//! Agents' own TLS: the settings (`TlsSettings`), what a server presents
//! and trusts (`AgentTls`), the listeners that do the handshakes
//! (`listener`), the server's certificate and its renewal (`issuer`), and
//! a client agent's certificate from the servers (`auto_encrypt`).
//!
//! Certificates come from the built-in CA in the replicated state; a
//! server given the CA's files (`--tls-ca-file`, `--tls-ca-key-file`)
//! signs its first one itself, so that servers can authenticate each other
//! before there is a cluster, and a new cluster's CA adopts that CA. Who
//! may call what on the server port is decided in `acl::transport`.

pub(crate) mod auto_encrypt;
pub(crate) mod issuer;
pub(crate) mod listener;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use tribune_client::tls::{Identity, ServerCheck, TlsConnector, Trust, client_config};

use crate::config::AgentConfig;

/// How agents do TLS among themselves.
#[derive(Debug, Clone, Default)]
pub(crate) struct TlsSettings {
    /// The CA agents' certificates chain to. Servers then require mutual
    /// TLS on the server port; a client agent gets its certificate from
    /// the servers (auto-encrypt) and calls them on that port.
    pub ca_file: Option<PathBuf>,
    /// The CA's key (servers).
    pub ca_key_file: Option<PathBuf>,
    /// Lifetime of agents' certificates.
    pub cert_ttl_secs: u64,
}

impl TlsSettings {
    pub(crate) fn resolve(cfg: &AgentConfig, server: bool) -> anyhow::Result<Self> {
        let ttl = match cfg.tls_cert_ttl.as_deref() {
            None => 72 * 3600,
            Some(v) => {
                let d =
                    humantime::parse_duration(v).map_err(|e| anyhow::anyhow!("--tls-cert-ttl {v:?}: {e}"))?;
                if d.as_secs() < 30 {
                    bail!("--tls-cert-ttl {v:?}: must be at least 30s");
                }
                d.as_secs()
            }
        };
        match (&cfg.tls_ca_file, &cfg.tls_ca_key_file, server) {
            (None, Some(_), _) => bail!("--tls-ca-key-file needs --tls-ca-file (the CA's certificate)"),
            (Some(_), None, true) => bail!(
                "a server with --tls-ca-file also needs --tls-ca-key-file: it signs its own first certificate, \
                 so that servers can authenticate each other before the cluster's CA exists"
            ),
            (_, Some(_), false) => {
                bail!(
                    "--tls-ca-key-file is for servers: a client agent gets its certificate from them (auto-encrypt)"
                )
            }
            _ => {}
        }
        Ok(TlsSettings {
            ca_file: cfg.tls_ca_file.clone(),
            ca_key_file: cfg.tls_ca_key_file.clone(),
            cert_ttl_secs: ttl,
        })
    }

    /// Whether agents use mutual TLS on the server port.
    pub(crate) fn mutual(&self) -> bool {
        self.ca_file.is_some()
    }
}

/// What an agent presents and trusts.
pub(crate) struct AgentTls {
    /// Its own certificate, once it has one.
    pub identity: Arc<Identity>,
    /// The CA file's certificates, and the built-in CA's roots as learnt.
    pub trust: Arc<Trust>,
    /// Mutual TLS on the server port.
    pub mutual: bool,
}

impl AgentTls {
    pub(crate) fn new(settings: &TlsSettings) -> anyhow::Result<Arc<Self>> {
        let trust = match &settings.ca_file {
            Some(p) => Trust::from_file(&p.display().to_string()).context("--tls-ca-file")?,
            None => Trust::new(Vec::new()),
        };
        Ok(Arc::new(AgentTls {
            identity: Arc::default(),
            trust,
            mutual: settings.mutual(),
        }))
    }

    /// How this agent dials a server's server port: TLS presenting its own
    /// certificate and requiring a server's, when mutual; else plaintext.
    pub(crate) fn server_port_connector(&self, source: Option<std::net::IpAddr>) -> Option<TlsConnector> {
        self.mutual.then(|| {
            TlsConnector::new(
                client_config(
                    self.trust.clone(),
                    ServerCheck::AnyServer,
                    Some(self.identity.clone()),
                ),
                source,
            )
        })
    }
}
