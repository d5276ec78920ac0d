//! A secondary datacenter's CA. The primary owns the root: its key never
//! leaves the primary. A secondary holds the primary's trust domain and
//! roots (certificates only) and an intermediate CA of its own, signed by
//! the primary's active root from a CSR, which signs this datacenter's
//! leaves; so every leaf of the federation chains to the primary's root.
//!
//! Every round, every server of a secondary reads the primary's roots and
//! keeps its status; the leader, once caught up, asks for a new
//! intermediate when there is none, when the primary's active root changed
//! (a rotation), or when the intermediate is two thirds through its life,
//! and proposes the copy when it differs. While the primary is unreachable
//! the last copy stays and leaves go on being signed.

use std::sync::Arc;
use std::time::Duration;

use tribune_certs::RootCa;
use tribune_proto::v1 as pb;
use tribune_proto::v1::connect_ca_client::ConnectCaClient;

use super::primary::Primary;
use super::replication::{Kind, ReplicationStatus};
use crate::catalog::command::Command;
use crate::catalog::mesh::{CaRoot, CaState, MeshCommand, SigningCa};
use crate::consensus::{Leadership, Writer};
use crate::mesh::now_unix;
use crate::raft::state_machine::Shared;

/// Time between two rounds.
const ROUND: Duration = Duration::from_secs(1);
/// Deadline of one call to the primary.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) struct CaReplication {
    pub(crate) primary: Arc<Primary>,
    pub(crate) datacenter: String,
    pub(crate) state: Arc<Shared>,
    pub(crate) leadership: Leadership,
    pub(crate) writer: Writer,
    pub(crate) status: Arc<ReplicationStatus>,
}

/// Follows the primary's CA, forever; does nothing in the primary.
pub(crate) async fn run(ctx: Arc<CaReplication>) {
    if !ctx.primary.is_elsewhere() {
        return;
    }
    loop {
        if let Err(e) = round(&ctx).await {
            tracing::debug!(error = %e, "CA replication round failed");
            ctx.status.failed(Kind::Ca, e);
        }
        tokio::time::sleep(ROUND).await;
    }
}

/// The primary's roots as this datacenter keeps them: without keys.
fn roots_of(remote: &pb::CaRootsResponse) -> Vec<CaRoot> {
    remote
        .roots
        .iter()
        .map(|r| CaRoot {
            root: RootCa {
                id: r.id.clone(),
                cert_pem: r.cert_pem.clone(),
                key_pem: String::new(),
                serial_hex: r.serial_hex.clone(),
                not_before_unix: r.not_before_unix,
                not_after_unix: r.not_after_unix,
            },
            cross_signed_pem: Some(r.cross_signed_pem.clone()).filter(|p| !p.is_empty()),
            rotated_out_unix: Some(r.rotated_out_unix).filter(|t| *t != 0),
        })
        .collect()
}

/// Whether `held`'s intermediate must be replaced to follow `remote`.
fn needs_intermediate(held: Option<&CaState>, remote: &pb::CaRootsResponse, now: i64) -> bool {
    let Some(s) = held.and_then(|c| c.signing.as_ref()) else {
        return true;
    };
    let life = s.ca.not_after_unix - s.ca.not_before_unix;
    let renew_at = s.ca.not_before_unix + life * 2 / 3;
    held.is_some_and(|c| c.trust_domain != remote.trust_domain)
        || s.root_id != remote.active_root_id
        || now >= renew_at
}

async fn round(ctx: &CaReplication) -> Result<(), String> {
    let remote = ctx
        .primary
        .call(|ch| async move {
            let mut req = tonic::Request::new(pb::CaRootsRequest {});
            req.set_timeout(CALL_TIMEOUT);
            ConnectCaClient::new(ch).roots(req).await.map(|r| r.into_inner())
        })
        .await
        .map_err(|s| s.message().to_string())?;
    let roots = roots_of(&remote);
    let held = ctx.state.read().catalog.mesh().ca.clone();
    let renew = needs_intermediate(held.as_ref(), &remote, now_unix());
    let same = held.as_ref().is_some_and(|c| {
        c.cluster_id == remote.cluster_id && c.leaf_ttl_secs == remote.leaf_ttl_secs && c.roots == roots
    });
    if same && !renew {
        ctx.status.succeeded(Kind::Ca, remote.index);
        return Ok(());
    }
    if !ctx.leadership.leads_caught_up() {
        // The leader copies; this server's copy follows through Raft.
        return Ok(());
    }
    let signing = match (renew, held.and_then(|c| c.signing)) {
        (false, Some(s)) => s,
        _ => new_intermediate(ctx, &remote).await?,
    };
    let cmd = Command::Mesh(MeshCommand::CaReplicate {
        cluster_id: remote.cluster_id.clone(),
        leaf_ttl_secs: remote.leaf_ttl_secs,
        roots,
        signing: Some(Box::new(signing)),
    });
    ctx.writer.propose(cmd).await.map_err(|e| e.to_string())?;
    tracing::info!(
        primary_index = remote.index,
        active_root = %remote.active_root_id,
        renewed_intermediate = renew,
        "CA copied from the primary datacenter"
    );
    ctx.status.succeeded(Kind::Ca, remote.index);
    Ok(())
}

/// A fresh key and CSR here, signed by the primary's active root there.
async fn new_intermediate(ctx: &CaReplication, remote: &pb::CaRootsResponse) -> Result<SigningCa, String> {
    let req =
        tribune_certs::intermediate_request(&remote.trust_domain, &format!("Tribune {} CA", ctx.datacenter))
            .map_err(|e| e.to_string())?;
    let csr_pem = req.csr_pem.clone();
    let datacenter = ctx.datacenter.clone();
    let signed = ctx
        .primary
        .call(|ch| {
            let mut r = tonic::Request::new(pb::CaSignIntermediateRequest {
                csr_pem: csr_pem.clone(),
                datacenter: datacenter.clone(),
            });
            r.set_timeout(CALL_TIMEOUT);
            async move {
                ConnectCaClient::new(ch)
                    .sign_intermediate(r)
                    .await
                    .map(|r| r.into_inner())
            }
        })
        .await
        .map_err(|s| format!("signing the intermediate CA: {}", s.message()))?;
    let ca = tribune_certs::signing_ca(&signed.cert_pem, &req.key_pem).map_err(|e| e.to_string())?;
    Ok(SigningCa {
        ca,
        root_id: signed.root_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote(active: &str) -> pb::CaRootsResponse {
        pb::CaRootsResponse {
            trust_domain: "abc.tribune".into(),
            active_root_id: active.into(),
            ..Default::default()
        }
    }

    fn held(root_id: &str, not_before: i64, not_after: i64) -> CaState {
        CaState {
            cluster_id: "abc".into(),
            trust_domain: "abc.tribune".into(),
            leaf_ttl_secs: 3600,
            roots: vec![],
            signing: Some(SigningCa {
                ca: RootCa {
                    id: "i".into(),
                    cert_pem: String::new(),
                    key_pem: String::new(),
                    serial_hex: String::new(),
                    not_before_unix: not_before,
                    not_after_unix: not_after,
                },
                root_id: root_id.into(),
            }),
            create_index: 1,
            modify_index: 1,
        }
    }

    #[test]
    fn an_intermediate_is_renewed_on_rotation_and_at_two_thirds_of_its_life() {
        assert!(needs_intermediate(None, &remote("r1"), 0), "none yet");
        let ca = held("r1", 0, 300);
        assert!(!needs_intermediate(Some(&ca), &remote("r1"), 100));
        assert!(
            needs_intermediate(Some(&ca), &remote("r2"), 100),
            "the primary rotated"
        );
        assert!(
            needs_intermediate(Some(&ca), &remote("r1"), 200),
            "two thirds through"
        );
    }
}
