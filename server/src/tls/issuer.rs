//! A server's own certificate: signed by the datacenter's signer in the
//! replicated state (every server holds it), or by the CA file's key
//! before the state has a CA; renewed after two thirds of its life and as
//! soon as the signer changes (a root rotation, a new intermediate). The
//! same loop teaches the trust store the state's roots.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tribune_certs::{AgentCertRequest, AgentRole, RootCa, sign_agent};
use tribune_client::tls::{certified_key, certs_from_pem};

use super::AgentTls;
use crate::mesh::now_unix;
use crate::raft::state_machine::Shared;

pub(crate) struct ServerCertIssuer {
    pub tls: Arc<AgentTls>,
    pub state: Arc<Shared>,
    /// The CA of `--tls-ca-file` with its key, when given.
    pub file_ca: Option<RootCa>,
    pub node: String,
    pub datacenter: String,
    /// IP SANs: the addresses clients and servers dial.
    pub ips: Vec<IpAddr>,
    pub ttl_secs: i64,
}

/// What the current certificate was signed by and when it is due.
struct Held {
    signer_id: String,
    renew_at: i64,
}

/// The state's CA version and signer (one with a key), cheaply.
fn current(state: &Shared) -> Option<(u64, Option<String>)> {
    let d = state.read();
    let ca = d.catalog.mesh().ca.as_ref()?;
    let signer = ca
        .signer()
        .filter(|s| !s.key_pem.is_empty())
        .map(|s| s.id.clone());
    Some((ca.modify_index, signer))
}

/// The state's roots, PEM.
fn roots(state: &Shared) -> Vec<String> {
    let d = state.read();
    d.catalog
        .mesh()
        .ca
        .as_ref()
        .map(|ca| ca.roots.iter().map(|r| r.root.cert_pem.clone()).collect())
        .unwrap_or_default()
}

/// The state's signer with its key, and its chain after a leaf.
fn signer(state: &Shared) -> Option<(RootCa, String)> {
    let d = state.read();
    let ca = d.catalog.mesh().ca.as_ref()?;
    let signer = ca.signer().filter(|s| !s.key_pem.is_empty())?.clone();
    Some((signer, ca.chain_after_leaf()))
}

pub(crate) async fn run(ctx: Arc<ServerCertIssuer>) {
    let mut held: Option<Held> = None;
    let mut applied = ctx.state.applied();
    loop {
        if let Err(e) = tick(&ctx, &mut held) {
            tracing::warn!(error = %e, "could not renew this server's TLS certificate");
        }
        tokio::select! {
            r = applied.changed() => if r.is_err() { return },
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
        // Applies come in bursts; one look per burst is enough.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn tick(ctx: &ServerCertIssuer, held: &mut Option<Held>) -> anyhow::Result<()> {
    // Most applies touch no CA: only a new version is parsed.
    let current = current(&ctx.state);
    if let Some((version, _)) = current
        && ctx.tls.trust.learnt_version() != version
    {
        let ders = roots(&ctx.state)
            .iter()
            .filter_map(|pem| certs_from_pem(pem, "CA root").ok())
            .flatten()
            .collect();
        ctx.tls.trust.learn(version, ders);
    }
    let signer_id = match (current.and_then(|(_, id)| id), &ctx.file_ca) {
        (Some(id), _) => id,
        (None, Some(file)) => file.id.clone(),
        (None, None) => return Ok(()),
    };
    let now = now_unix();
    if held
        .as_ref()
        .is_some_and(|h| h.signer_id == signer_id && now < h.renew_at)
    {
        return Ok(());
    }
    let (signer, chain) = match (signer(&ctx.state), &ctx.file_ca) {
        (Some(s), _) => s,
        (None, Some(file)) => (file.clone(), String::new()),
        (None, None) => return Ok(()),
    };
    let cert = sign_agent(
        &signer,
        &AgentCertRequest {
            role: AgentRole::Server,
            datacenter: &ctx.datacenter,
            node: &ctx.node,
            ips: &ctx.ips,
            ttl_secs: ctx.ttl_secs,
            now_unix: now,
        },
    )?;
    let key = certified_key(&format!("{}{chain}", cert.cert_pem), &cert.key_pem)?;
    ctx.tls.identity.set(key);
    let life = cert.not_after_unix - cert.not_before_unix;
    *held = Some(Held {
        signer_id: cert.signer_id.clone(),
        renew_at: cert.not_before_unix + life * 2 / 3,
    });
    tracing::info!(
        signer = %cert.signer_id,
        not_after = cert.not_after_unix,
        "this server has a new TLS certificate"
    );
    Ok(())
}
