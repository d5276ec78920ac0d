//! Group commit above Raft. openraft 0.9 appends (and fsyncs) one client
//! write at a time, so concurrent writes are gathered here into one log
//! entry: while a batch is being committed the next one fills up, and every
//! write in it shares one fsync. Each caller gets its own command's outcome
//! and the entry's index.

use std::sync::Arc;

use openraft::error::{ClientWriteError, RaftError};
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::{Raft, ServerNode};
use crate::catalog::command::{Command, Outcome, Request};
use crate::metrics::Metrics;

/// At most this many commands share one log entry.
const MAX_BATCH: usize = 256;
/// Entries in flight at once: one being fsynced while the next is formed.
const IN_FLIGHT: usize = 2;

#[derive(Debug, Clone, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub(crate) enum ProposeError {
    #[error("this server is not the leader{}", leader_hint(.leader))]
    NotLeader { leader: Option<ServerNode> },
    #[error("raft: {0}")]
    Raft(String),
    #[error("the server is shutting down")]
    ShuttingDown,
    #[error("the leader could not be reached: {0}")]
    Unreachable(String),
}

fn leader_hint(l: &Option<ServerNode>) -> String {
    match l {
        Some(n) => format!(" (the leader is {} at {})", n.name, n.grpc_addr),
        None => "; no leader is elected yet".into(),
    }
}

struct Pending {
    cmd: Command,
    reply: oneshot::Sender<Result<(u64, Outcome), ProposeError>>,
}

#[derive(Clone)]
pub(crate) struct Proposer {
    tx: mpsc::Sender<Pending>,
    metrics: Arc<Metrics>,
}

impl Proposer {
    pub(crate) fn start(raft: Raft, metrics: Arc<Metrics>) -> Self {
        let (tx, rx) = mpsc::channel(8192);
        tokio::spawn(run(raft, rx));
        Proposer { tx, metrics }
    }

    /// Commits `cmd` through Raft; returns once it is durable on a quorum
    /// and applied here, with the index of its log entry.
    pub(crate) async fn propose(&self, cmd: Command) -> Result<(u64, Outcome), ProposeError> {
        let started = tokio::time::Instant::now();
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Pending { cmd, reply })
            .await
            .map_err(|_| ProposeError::ShuttingDown)?;
        let res = rx.await.map_err(|_| ProposeError::ShuttingDown)?;
        if res.is_ok() {
            self.metrics
                .commit_seconds
                .observe(started.elapsed().as_secs_f64());
        }
        res
    }
}

async fn run(raft: Raft, mut rx: mpsc::Receiver<Pending>) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = rx.recv().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let raft = raft.clone();
        tokio::spawn(async move {
            commit(&raft, batch).await;
            drop(permit);
        });
    }
}

async fn commit(raft: &Raft, batch: Vec<Pending>) {
    let (cmds, replies): (Vec<_>, Vec<_>) = batch.into_iter().map(|p| (p.cmd, p.reply)).unzip();
    let n = cmds.len();
    match raft.client_write(Request { commands: cmds }).await {
        Ok(resp) => {
            let index = resp.log_id.index;
            let mut outcomes = resp.data.outcomes.into_iter();
            for reply in replies {
                let r = outcomes.next().map(|o| (index, o)).ok_or_else(|| {
                    ProposeError::Raft(format!(
                        "entry {index} returned fewer outcomes than its {n} commands"
                    ))
                });
                let _ = reply.send(r);
            }
        }
        Err(e) => {
            let err = match e {
                RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => ProposeError::NotLeader {
                    leader: f.leader_node,
                },
                RaftError::Fatal(openraft::error::Fatal::Stopped) => ProposeError::ShuttingDown,
                other => ProposeError::Raft(other.to_string()),
            };
            for reply in replies {
                let _ = reply.send(Err(err.clone()));
            }
        }
    }
}
