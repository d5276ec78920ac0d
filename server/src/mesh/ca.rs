//! The CA's life on the leader: initialize it once per cluster, rotate the
//! root on request (cross-signed by the old one), and prune retired roots
//! once every leaf they signed has expired.

use std::sync::Arc;
use std::time::Duration;

use tribune_certs::{cross_sign, new_root};

use crate::catalog::command::{Command, Outcome};
use crate::catalog::mesh::MeshCommand;
use crate::consensus::{Leadership, Writer};
use crate::raft::proposer::ProposeError;
use crate::raft::state_machine::Shared;

use super::MeshSettings;

use super::now_unix;

/// Extra time a retired root is kept beyond the leaf TTL, for clock skew.
const PRUNE_GRACE_SECS: i64 = 60;

#[derive(Debug, thiserror::Error)]
pub(crate) enum CaError {
    #[error(transparent)]
    Propose(#[from] ProposeError),
    #[error("{0}")]
    Cert(#[from] tribune_certs::CertError),
    #[error("the CA is not initialized yet")]
    NotInitialized,
    #[error("{0:?}")]
    Refused(Outcome),
}

/// What the CA's life takes: who leads, the state, where writes go, and the
/// CA settings.
pub(crate) struct CaDuties {
    pub(crate) leadership: Leadership,
    pub(crate) state: Arc<Shared>,
    pub(crate) writer: Writer,
    pub(crate) mesh: MeshSettings,
    /// This datacenter is a secondary one: its CA follows the primary's
    /// (`federation::ca`) and is never initialized or pruned here.
    pub(crate) secondary: bool,
    /// The operator's CA (`--tls-ca-file` and its key): a new cluster's
    /// first root, so that agents' certificates and the mesh share one CA.
    pub(crate) adopt: Option<tribune_certs::RootCa>,
}

/// The cluster ID a CA made by `tribune tls ca create` names: its only URI
/// SAN is `spiffe://<cluster-id>.tribune`.
pub(crate) fn cluster_id_of(root: &tribune_certs::RootCa) -> Result<String, CaError> {
    let info = tribune_certs::inspect(&root.cert_pem)?;
    info.uri_sans
        .iter()
        .find_map(|u| u.strip_prefix("spiffe://")?.strip_suffix(".tribune"))
        .map(str::to_string)
        .ok_or_else(|| {
            CaError::Cert(tribune_certs::CertError::InvalidArgument {
                what: "--tls-ca-file",
                reason: "names no spiffe://<cluster-id>.tribune trust domain (make it with `tribune tls ca create`)"
                    .into(),
            })
        })
}

/// Runs for the life of the agent; acts only while this server leads and
/// has applied its whole log: a leader that restarted sees the state of its
/// last snapshot until it has re-applied the entries after it, and must not
/// take a CA restored by one of those entries for a missing one.
pub(crate) async fn leader_duties(ctx: Arc<CaDuties>) {
    let mut metrics = ctx.leadership.raft().metrics();
    loop {
        if ctx.leadership.leads_caught_up() && !ctx.secondary {
            if let Err(e) = ensure_initialized(&ctx).await {
                tracing::warn!(error = %e, "could not initialize the CA");
            }
            if let Err(e) = prune(&ctx).await {
                tracing::warn!(error = %e, "could not prune retired CA roots");
            }
        }
        tokio::select! {
            r = metrics.changed() => if r.is_err() { return },
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
    }
}

async fn ensure_initialized(ctx: &CaDuties) -> Result<(), CaError> {
    if ctx.state.read().catalog.mesh().ca.is_some() {
        return Ok(());
    }
    let (cluster_id, root) = match &ctx.adopt {
        Some(root) => (cluster_id_of(root)?, root.clone()),
        None => {
            let cluster_id = uuid::Uuid::new_v4().to_string();
            let td = tribune_certs::trust_domain(&cluster_id);
            let root = new_root(&td, "Tribune CA 1", ctx.mesh.root_ttl_secs as i64, now_unix())?;
            (cluster_id, root)
        }
    };
    let td = tribune_certs::trust_domain(&cluster_id);
    tracing::info!(trust_domain = %td, root = %root.id, "initializing the CA");
    ctx.writer
        .propose(Command::Mesh(MeshCommand::CaInit {
            cluster_id,
            root: Box::new(root),
            leaf_ttl_secs: ctx.mesh.leaf_ttl_secs,
        }))
        .await?;
    Ok(())
}

async fn prune(ctx: &CaDuties) -> Result<(), CaError> {
    let ids = match &ctx.state.read().catalog.mesh().ca {
        Some(ca) => ca.prunable(now_unix(), PRUNE_GRACE_SECS),
        None => return Ok(()),
    };
    if ids.is_empty() {
        return Ok(());
    }
    tracing::info!(roots = ?ids, "pruning retired CA roots");
    ctx.writer
        .propose(Command::Mesh(MeshCommand::CaPrune { root_ids: ids }))
        .await?;
    Ok(())
}

/// How long an intermediate CA lives (clipped to its root's life); a
/// secondary renews it well before (`federation::ca`).
pub(crate) const INTERMEDIATE_TTL_SECS: i64 = 365 * 86_400;

/// Signs a secondary datacenter's intermediate CA under the active root
/// (in the primary, which holds the root's key). Returns the certificate
/// and the root's ID.
pub(crate) fn sign_intermediate(ctx: &CaDuties, csr_pem: &str) -> Result<(String, String), CaError> {
    let root = {
        let d = ctx.state.read();
        let ca = d.catalog.mesh().ca.as_ref().ok_or(CaError::NotInitialized)?;
        ca.active().ok_or(CaError::NotInitialized)?.root.clone()
    };
    if root.key_pem.is_empty() {
        // A secondary's copy of the roots carries no keys.
        return Err(CaError::NotInitialized);
    }
    let cert = tribune_certs::sign_intermediate(&root, csr_pem, INTERMEDIATE_TTL_SECS, now_unix())?;
    Ok((cert, root.id))
}

/// A new active root, cross-signed by the current one. Returns the index
/// and the new root's ID.
pub(crate) async fn rotate(ctx: &CaDuties) -> Result<(u64, String), CaError> {
    let (td, old, n) = {
        let d = ctx.state.read();
        let ca = d.catalog.mesh().ca.as_ref().ok_or(CaError::NotInitialized)?;
        let old = ca.active().ok_or(CaError::NotInitialized)?.root.clone();
        (ca.trust_domain.clone(), old, ca.roots.len() + 1)
    };
    let now = now_unix();
    let root = new_root(
        &td,
        &format!("Tribune CA {n}"),
        ctx.mesh.root_ttl_secs as i64,
        now,
    )?;
    let cross_signed_pem = cross_sign(&root, &old, now)?;
    let id = root.id.clone();
    tracing::info!(old = %old.id, new = %id, "rotating the CA root");
    match ctx
        .writer
        .propose(Command::Mesh(MeshCommand::CaRotate {
            root: Box::new(root),
            cross_signed_pem,
            at_unix: now,
        }))
        .await?
    {
        (index, Outcome::MeshUpdated) => Ok((index, id)),
        (_, other) => Err(CaError::Refused(other)),
    }
}
