//! Incremental xDS over ADS (`DeltaAggregatedResources`): only what changed
//! is sent, removals are named, and a reconnecting client's
//! `initial_resource_versions` spare it what it already has. Requests in,
//! responses out; no I/O.

use std::collections::BTreeMap;

use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource,
};

use crate::names;
use crate::resources::SharedResources;
use crate::sotw::RequestKind;
use crate::stream::{Nonces, TypeState, TypeStatus, update_order};

pub struct DeltaStream {
    resources: SharedResources,
    types: BTreeMap<String, TypeState>,
    nonces: Nonces,
}

/// Which part of a diff a response carries.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Part {
    Upserts,
    Removals,
    Both,
}

impl DeltaStream {
    pub fn new(resources: SharedResources) -> Self {
        DeltaStream {
            resources,
            types: BTreeMap::new(),
            nonces: Nonces::default(),
        }
    }

    pub fn on_request(
        &mut self,
        req: &DeltaDiscoveryRequest,
    ) -> (RequestKind, Option<DeltaDiscoveryResponse>) {
        let ts = self.types.entry(req.type_url.clone()).or_default();
        let first = !ts.subscribed;
        let error = req.error_detail.as_ref().map(|e| e.message.clone());
        // Subscription changes count even on a stale nonce: delta requests
        // carry them only once.
        let kind = if req.response_nonce.is_empty() {
            RequestKind::Initial
        } else if !ts.settle(&req.response_nonce, error.clone()) {
            RequestKind::Stale
        } else if let Some(e) = error {
            RequestKind::Nack(e)
        } else {
            RequestKind::Ack
        };
        if first {
            ts.subscribed = true;
            ts.wildcard = names::is_wildcard_type(&req.type_url)
                && (req.resource_names_subscribe.is_empty()
                    || req.resource_names_subscribe.iter().any(|n| n == "*"));
            ts.sent = req
                .initial_resource_versions
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
        } else if req.resource_names_subscribe.iter().any(|n| n == "*") {
            ts.wildcard = true;
        }
        if req.resource_names_unsubscribe.iter().any(|n| n == "*") {
            ts.wildcard = false;
        }
        for n in req.resource_names_subscribe.iter().filter(|n| *n != "*") {
            ts.names.insert(n.clone());
        }
        for n in &req.resource_names_unsubscribe {
            ts.names.remove(n);
            // The client dropped it; it is no longer ours to remove.
            ts.sent.remove(n);
        }
        let force = first && ts.wildcard;
        let resp = respond(
            &self.resources,
            &req.type_url,
            ts,
            &mut self.nonces,
            Part::Both,
            force,
        );
        (kind, resp)
    }

    /// New resources: upserts first in make-before-break order, then removals.
    pub fn on_update(&mut self, resources: SharedResources) -> Vec<DeltaDiscoveryResponse> {
        self.resources = resources;
        let order = update_order(&self.types, &self.resources);
        let mut out = Vec::new();
        for part in [Part::Upserts, Part::Removals] {
            let types: Vec<&str> = if part == Part::Upserts {
                order.clone()
            } else {
                order.iter().rev().copied().collect()
            };
            for t in types {
                if let Some(ts) = self.types.get_mut(t)
                    && let Some(r) = respond(&self.resources, t, ts, &mut self.nonces, part, false)
                {
                    out.push(r);
                }
            }
        }
        out
    }

    pub fn status(&self) -> Vec<TypeStatus> {
        self.types.iter().map(|(t, ts)| ts.status(t)).collect()
    }
}

fn respond(
    res: &SharedResources,
    type_url: &str,
    ts: &mut TypeState,
    nonces: &mut Nonces,
    part: Part,
    force: bool,
) -> Option<DeltaDiscoveryResponse> {
    let wanted = ts.wanted(res.of_type(type_url));
    let upserts: Vec<Resource> = if part == Part::Removals {
        Vec::new()
    } else {
        wanted
            .iter()
            .filter(|(n, r)| ts.sent.get(**n) != Some(&r.version))
            .map(|(n, r)| Resource {
                name: (*n).clone(),
                version: r.version.clone(),
                resource: Some(r.body.clone()),
                ..Default::default()
            })
            .collect()
    };
    let removed: Vec<String> = if part == Part::Upserts {
        Vec::new()
    } else {
        ts.sent
            .keys()
            .filter(|n| !wanted.contains_key(n))
            .cloned()
            .collect()
    };
    if upserts.is_empty() && removed.is_empty() && !force {
        return None;
    }
    for r in &upserts {
        ts.sent.insert(r.name.clone(), r.version.clone());
    }
    for n in &removed {
        ts.sent.remove(n);
    }
    let nonce = nonces.next();
    ts.sent_version = res.index.to_string();
    ts.last_nonce = Some(nonce.clone());
    ts.acked = false;
    Some(DeltaDiscoveryResponse {
        system_version_info: res.index.to_string(),
        resources: upserts,
        type_url: type_url.to_string(),
        removed_resources: removed,
        nonce,
        ..Default::default()
    })
}

#[cfg(test)]
mod tests;
