//! What the SotW and delta state machines share: per-type bookkeeping of
//! what was sent, acknowledged and rejected, and the status they report.

use std::collections::{BTreeMap, BTreeSet};

use crate::names;
use crate::resources::{ProxyResources, TypeResources};

/// A rejected response, as Envoy described it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Nack {
    pub nonce: String,
    pub message: String,
}

/// What one resource type of one stream looks like from outside.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TypeStatus {
    pub type_url: String,
    /// SotW: the version last sent; delta: the index of the last response.
    pub sent_version: String,
    /// The last response was acknowledged.
    pub acked: bool,
    pub nacks: u64,
    /// The most recent rejection, kept until a later response is accepted.
    pub last_nack: Option<Nack>,
    pub resources: usize,
}

/// Per-type state common to both protocols.
#[derive(Clone, Debug, Default)]
pub(crate) struct TypeState {
    /// A request for this type has been seen.
    pub subscribed: bool,
    pub wildcard: bool,
    /// Explicitly requested names.
    pub names: BTreeSet<String>,
    /// What the client holds (delta) or was last sent (SotW): name -> version.
    pub sent: BTreeMap<String, String>,
    pub sent_version: String,
    pub last_nonce: Option<String>,
    pub acked: bool,
    pub nacks: u64,
    pub last_nack: Option<Nack>,
}

impl TypeState {
    /// The resources of this type the client should hold now.
    pub fn wanted<'a>(&self, all: Option<&'a TypeResources>) -> BTreeMap<&'a String, &'a crate::Resource> {
        let Some(all) = all else { return BTreeMap::new() };
        if self.wildcard {
            all.iter().collect()
        } else {
            self.names.iter().filter_map(|n| all.get_key_value(n)).collect()
        }
    }

    /// Records an ACK or NACK for `nonce`; false when it is stale.
    pub fn settle(&mut self, nonce: &str, error: Option<String>) -> bool {
        if nonce.is_empty() || self.last_nonce.as_deref() != Some(nonce) {
            return false;
        }
        match error {
            Some(message) => {
                self.acked = false;
                self.nacks += 1;
                self.last_nack = Some(Nack {
                    nonce: nonce.to_string(),
                    message,
                });
            }
            None => {
                self.acked = true;
                self.last_nack = None;
            }
        }
        true
    }

    pub fn status(&self, type_url: &str) -> TypeStatus {
        TypeStatus {
            type_url: type_url.to_string(),
            sent_version: self.sent_version.clone(),
            acked: self.acked,
            nacks: self.nacks,
            last_nack: self.last_nack.clone(),
            resources: self.sent.len(),
        }
    }
}

/// Per-stream nonces: a counter, so a stale one is easy to tell.
#[derive(Debug, Default)]
pub(crate) struct Nonces(u64);

impl Nonces {
    pub fn next(&mut self) -> String {
        self.0 += 1;
        self.0.to_string()
    }
}

/// Types in the order an update is sent: types that add or change
/// something first (clusters, endpoints, secrets, listeners, routes), then
/// types that only remove something, in reverse, so nothing is removed
/// while something still refers to it.
pub(crate) fn update_order(types: &BTreeMap<String, TypeState>, res: &ProxyResources) -> Vec<&'static str> {
    let mut adds = Vec::new();
    let mut removals = Vec::new();
    for t in names::ORDER {
        let Some(ts) = types.get(t).filter(|ts| ts.subscribed) else {
            continue;
        };
        let wanted = ts.wanted(res.of_type(t));
        let adds_something = wanted.iter().any(|(n, r)| ts.sent.get(*n) != Some(&r.version));
        if adds_something {
            adds.push(t);
        } else if ts.sent.keys().any(|n| !wanted.contains_key(n)) {
            removals.push(t);
        }
    }
    removals.reverse();
    adds.extend(removals);
    adds
}
