//! What a secondary datacenter copies from the primary: its intentions
//! (here) and its CA (`ca.rs`), each with the status `operator replication
//! status` shows.
//! Every server of a secondary reads the primary's set each round and keeps
//! its own status (what `operator replication status` shows); the leader,
//! once caught up, proposes the set when the local copy differs. The copy
//! stays as it was while the primary is unreachable.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tribune_proto::v1 as pb;
use tribune_proto::v1::intentions_client::IntentionsClient;

use super::primary::Primary;
use crate::catalog::command::Command;
use crate::catalog::mesh::{IntentionRule, MeshCommand};
use crate::consensus::{Leadership, Writer};
use crate::raft::state_machine::Shared;

/// Time between two rounds.
const ROUND: Duration = Duration::from_secs(1);
/// Deadline of one read of the primary's set.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// One replicated kind's progress, as this server saw it.
#[derive(Clone, Debug, Default)]
pub(crate) struct KindStatus {
    /// The primary's index as of the last round in which the local copy
    /// held the primary's set.
    pub(crate) index: u64,
    pub(crate) last_success: Option<Instant>,
    pub(crate) last_error: Option<String>,
}

/// What a secondary copies from the primary, one status each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Kind {
    Intentions,
    /// The CA's roots and this datacenter's intermediate.
    Ca,
    /// Policies and tokens.
    Acl,
}

impl Kind {
    pub(crate) const ALL: [Kind; 3] = [Kind::Intentions, Kind::Ca, Kind::Acl];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Intentions => "intentions",
            Kind::Ca => "ca",
            Kind::Acl => "acl",
        }
    }
}

#[derive(Default)]
pub(crate) struct ReplicationStatus {
    kinds: Mutex<std::collections::BTreeMap<Kind, KindStatus>>,
}

impl ReplicationStatus {
    pub(crate) fn of(&self, kind: Kind) -> KindStatus {
        self.lock().get(&kind).cloned().unwrap_or_default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<Kind, KindStatus>> {
        self.kinds.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn failed(&self, kind: Kind, error: String) {
        self.lock().entry(kind).or_default().last_error = Some(error);
    }

    pub(crate) fn succeeded(&self, kind: Kind, index: u64) {
        let mut kinds = self.lock();
        let s = kinds.entry(kind).or_default();
        s.index = index;
        s.last_success = Some(Instant::now());
        s.last_error = None;
    }
}

pub(crate) struct IntentionReplication {
    pub(crate) primary: Arc<Primary>,
    pub(crate) state: Arc<Shared>,
    pub(crate) leadership: Leadership,
    pub(crate) writer: Writer,
    pub(crate) status: Arc<ReplicationStatus>,
}

/// Copies the primary's intentions, forever; does nothing in the primary.
pub(crate) async fn run(ctx: Arc<IntentionReplication>) {
    if !ctx.primary.is_elsewhere() {
        return;
    }
    loop {
        if let Err(e) = round(&ctx).await {
            tracing::debug!(error = %e, "intention replication round failed");
            ctx.status.failed(Kind::Intentions, e);
        }
        tokio::time::sleep(ROUND).await;
    }
}

fn rules<'a>(it: impl Iterator<Item = (&'a str, &'a str, bool)>) -> Vec<IntentionRule> {
    let mut v: Vec<IntentionRule> = it
        .map(|(s, d, allow)| IntentionRule {
            source: s.to_string(),
            destination: d.to_string(),
            allow,
        })
        .collect();
    v.sort();
    v
}

async fn round(ctx: &IntentionReplication) -> Result<(), String> {
    let remote = ctx
        .primary
        .call(|ch| async move {
            let mut req = tonic::Request::new(pb::IntentionListRequest {});
            req.set_timeout(READ_TIMEOUT);
            IntentionsClient::new(ch).list(req).await.map(|r| r.into_inner())
        })
        .await
        .map_err(|s| s.message().to_string())?;
    let wanted = rules(
        remote
            .intentions
            .iter()
            .map(|i| (i.source.as_str(), i.destination.as_str(), i.allow)),
    );
    let held = {
        let d = ctx.state.read();
        rules(
            d.catalog
                .mesh()
                .intentions
                .values()
                .map(|i| (i.source.as_str(), i.destination.as_str(), i.allow)),
        )
    };
    if held != wanted {
        if !ctx.leadership.leads_caught_up() {
            // The leader copies; this server's copy follows through Raft.
            return Ok(());
        }
        let cmd = Command::Mesh(MeshCommand::IntentionsReplace { intentions: wanted });
        ctx.writer.propose(cmd).await.map_err(|e| e.to_string())?;
        tracing::info!(
            primary_index = remote.index,
            "intentions copied from the primary datacenter"
        );
    }
    ctx.status.succeeded(Kind::Intentions, remote.index);
    Ok(())
}
