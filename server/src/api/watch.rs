//! Watch streams: a snapshot (or the history since the watcher's index),
//! then one event per Raft index that changed what the watcher follows.

use std::sync::Arc;

use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use tracing::Instrument;
use tribune_proto::v1 as pb;

use super::convert;
use crate::catalog::feed::{ChangeSet, Resume};
use crate::metrics::GaugeGuard;
use crate::raft::state_machine::Shared;
use crate::raft::state_machine::SmData;

pub(crate) enum Filter {
    Service(String),
    /// Everything the caller may read.
    Catalog(crate::acl::Caller),
}

impl Filter {
    fn snapshot(&self, d: &SmData) -> pb::WatchEvent {
        let c = &d.catalog;
        let mut ev = pb::WatchEvent {
            index: d.applied_index(),
            snapshot: true,
            ..Default::default()
        };
        match self {
            Filter::Service(name) => {
                ev.upserts = c
                    .instances_of(name)
                    .map(|s| convert::health_to_pb(&c.health_of(s)))
                    .collect();
            }
            Filter::Catalog(caller) => {
                ev.node_upserts = c
                    .nodes()
                    .filter(|n| caller.sees_node(&n.name))
                    .map(convert::node_to_pb)
                    .collect();
                ev.upserts = c
                    .service_names()
                    .filter(|(n, _)| caller.sees_service(n))
                    .flat_map(|(n, _)| c.instances_of(n))
                    .map(|s| convert::health_to_pb(&c.health_of(s)))
                    .collect();
            }
        }
        ev
    }

    /// The part of a change set this watcher follows, if any.
    fn event(&self, cs: &ChangeSet) -> Option<pb::WatchEvent> {
        let ev = match self {
            Filter::Service(name) => pb::WatchEvent {
                index: cs.index,
                snapshot: false,
                upserts: cs
                    .upserts
                    .iter()
                    .filter(|h| &h.service.name == name)
                    .map(convert::health_to_pb)
                    .collect(),
                removed_ids: cs
                    .removed
                    .iter()
                    .filter(|(_, n)| n == name)
                    .map(|(id, _)| id.clone())
                    .collect(),
                ..Default::default()
            },
            Filter::Catalog(caller) => pb::WatchEvent {
                index: cs.index,
                snapshot: false,
                upserts: cs
                    .upserts
                    .iter()
                    .filter(|h| caller.sees_service(&h.service.name))
                    .map(convert::health_to_pb)
                    .collect(),
                removed_ids: cs
                    .removed
                    .iter()
                    .filter(|(_, n)| caller.sees_service(n))
                    .map(|(id, _)| id.clone())
                    .collect(),
                node_upserts: cs
                    .node_upserts
                    .iter()
                    .filter(|n| caller.sees_node(&n.name))
                    .map(convert::node_to_pb)
                    .collect(),
                node_removals: cs
                    .node_removals
                    .iter()
                    .filter(|n| caller.sees_node(n))
                    .cloned()
                    .collect(),
            },
        };
        let empty = ev.upserts.is_empty()
            && ev.removed_ids.is_empty()
            && ev.node_upserts.is_empty()
            && ev.node_removals.is_empty();
        (!empty).then_some(ev)
    }
}

pub(crate) fn spawn_watch(
    state: Arc<Shared>,
    watches_open: prometheus_client::metrics::gauge::Gauge,
    filter: Filter,
    from_index: u64,
) -> ReceiverStream<Result<pb::WatchEvent, Status>> {
    let (tx, rx) = mpsc::channel(64);
    let span = tracing::info_span!(
        "watch",
        from_index,
        service = match &filter {
            Filter::Service(n) => n.as_str(),
            Filter::Catalog(_) => "*",
        }
    );
    tokio::spawn(
        async move {
            let _guard = GaugeGuard::new(&watches_open);
            if let Err(e) = follow(&state, &filter, from_index, &tx).await {
                tracing::debug!(error = %e, "watch ended");
            }
        }
        .instrument(span),
    );
    ReceiverStream::new(rx)
}

type Tx = mpsc::Sender<Result<pb::WatchEvent, Status>>;

async fn follow(state: &Shared, filter: &Filter, from_index: u64, tx: &Tx) -> Result<(), &'static str> {
    // Subscribing and reading the starting point under one lock: no change
    // can fall between the two.
    let (start, mut sub, mut last) = {
        let d = state.read();
        let sub = d.feed.subscribe();
        let applied = d.applied_index();
        let start = match d.feed.resume(from_index, applied) {
            Resume::Snapshot => vec![filter.snapshot(&d)],
            Resume::Replay(sets) => sets.iter().filter_map(|cs| filter.event(cs)).collect(),
        };
        (start, sub, applied)
    };
    for ev in start {
        tx.send(Ok(ev)).await.map_err(|_| "watcher left")?;
    }
    loop {
        let next = tokio::select! {
            _ = tx.closed() => return Err("watcher left"),
            n = sub.recv() => n,
        };
        let ev = match next {
            Ok(cs) if cs.index <= last => continue,
            Ok(cs) if !cs.reset => {
                last = cs.index;
                match filter.event(&cs) {
                    Some(ev) => ev,
                    None => continue,
                }
            }
            // Restored catalog, or this watcher fell behind the feed:
            // start over from a fresh snapshot.
            Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {
                let d = state.read();
                last = d.applied_index();
                filter.snapshot(&d)
            }
            Err(broadcast::error::RecvError::Closed) => return Err("feed closed"),
        };
        tx.send(Ok(ev)).await.map_err(|_| "watcher left")?;
    }
}
