//! The change feed: one [`ChangeSet`] per applied log index that changed the
//! catalog, broadcast to live watchers and kept in a bounded history so that
//! a watcher can resume from an index. When the history no longer reaches
//! back to that index, the watcher gets a fresh snapshot instead.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::broadcast;

use super::model::{InstanceHealth, Node};

/// What changed at one Raft index, resolved to what readers see (instances
/// with their aggregate health at that index).
#[derive(Debug, Default)]
pub(crate) struct ChangeSet {
    pub index: u64,
    /// The catalog was replaced wholesale (restore, snapshot install).
    pub reset: bool,
    pub upserts: Vec<InstanceHealth>,
    /// Removed instances as (id, service name).
    pub removed: Vec<(String, String)>,
    pub node_upserts: Vec<Node>,
    pub node_removals: Vec<String>,
    /// The CA or intentions changed.
    pub mesh: bool,
    /// Every service name whose instances or mesh endpoints changed here
    /// (for a proxy, the service it fronts too): what the xDS dependency
    /// index looks up.
    pub services: std::collections::BTreeSet<String>,
}

impl ChangeSet {
    fn weight(&self) -> usize {
        1 + self.upserts.len() + self.removed.len() + self.node_upserts.len() + self.node_removals.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        !self.reset
            && !self.mesh
            && self.upserts.is_empty()
            && self.removed.is_empty()
            && self.node_upserts.is_empty()
            && self.node_removals.is_empty()
    }
}

pub(crate) struct Feed {
    history: VecDeque<Arc<ChangeSet>>,
    /// Every change after `floor` is in `history`.
    floor: u64,
    weight: usize,
    max_weight: usize,
    tx: broadcast::Sender<Arc<ChangeSet>>,
}

/// Where a resuming watcher starts.
pub(crate) enum Resume {
    /// Replay these, then follow the live feed.
    Replay(Vec<Arc<ChangeSet>>),
    /// The history does not reach back that far: start from a snapshot.
    Snapshot,
}

impl Feed {
    /// `max_weight` bounds the history by the number of entities it holds.
    pub(crate) fn new(floor: u64, max_weight: usize) -> Self {
        let (tx, _) = broadcast::channel(1024);
        Feed {
            history: VecDeque::new(),
            floor,
            weight: 0,
            max_weight,
            tx,
        }
    }

    pub(crate) fn publish(&mut self, cs: ChangeSet) {
        let cs = Arc::new(cs);
        if cs.reset {
            self.history.clear();
            self.weight = 0;
            self.floor = cs.index;
        } else {
            self.weight += cs.weight();
            self.history.push_back(cs.clone());
            while self.weight > self.max_weight {
                let Some(old) = self.history.pop_front() else {
                    break;
                };
                self.weight -= old.weight();
                self.floor = old.index;
            }
        }
        // No receivers is fine: nobody is watching.
        let _ = self.tx.send(cs);
    }

    pub(crate) fn resume(&self, from_index: u64, applied: u64) -> Resume {
        if from_index == 0 || from_index < self.floor || from_index > applied {
            return Resume::Snapshot;
        }
        Resume::Replay(
            self.history
                .iter()
                .filter(|c| c.index > from_index)
                .cloned()
                .collect(),
        )
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Arc<ChangeSet>> {
        self.tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cs(index: u64, n: usize) -> ChangeSet {
        ChangeSet {
            index,
            node_removals: (0..n).map(|i| format!("n{i}")).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn resume_replays_only_what_follows() {
        let mut f = Feed::new(0, 100);
        for i in 1..=5 {
            f.publish(cs(i, 1));
        }
        match f.resume(3, 5) {
            Resume::Replay(v) => assert_eq!(v.iter().map(|c| c.index).collect::<Vec<_>>(), [4, 5]),
            Resume::Snapshot => panic!("history covers index 3"),
        }
    }

    #[test]
    fn compacted_history_forces_a_snapshot() {
        let mut f = Feed::new(0, 10);
        for i in 1..=10 {
            f.publish(cs(i, 2)); // weight 3 each: only 3 fit
        }
        assert!(matches!(f.resume(2, 10), Resume::Snapshot));
        assert!(matches!(f.resume(6, 10), Resume::Snapshot));
        assert!(matches!(f.resume(7, 10), Resume::Replay(_)));
        // An index from the future (another cluster's history) also snapshots.
        assert!(matches!(f.resume(11, 10), Resume::Snapshot));
    }

    #[test]
    fn reset_clears_history() {
        let mut f = Feed::new(0, 100);
        f.publish(cs(1, 1));
        f.publish(ChangeSet {
            index: 2,
            reset: true,
            ..Default::default()
        });
        assert!(matches!(f.resume(1, 2), Resume::Snapshot));
        assert!(matches!(f.resume(2, 2), Resume::Replay(v) if v.is_empty()));
    }
}
