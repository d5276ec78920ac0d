//! State of the world over ADS (`StreamAggregatedResources`): each response
//! carries every resource of its type the client asked for, with a version
//! per type. Requests in, responses out; no I/O.

use std::collections::BTreeMap;

use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};

use crate::names;
use crate::resources::{SharedResources, set_version};
use crate::stream::{Nonces, TypeState, TypeStatus, update_order};

/// What a request turned out to be, for logs and metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestKind {
    Initial,
    Ack,
    Nack(String),
    /// Carries a nonce that is not the latest: ignored.
    Stale,
}

pub struct SotwStream {
    resources: SharedResources,
    types: BTreeMap<String, TypeState>,
    nonces: Nonces,
}

impl SotwStream {
    pub fn new(resources: SharedResources) -> Self {
        SotwStream {
            resources,
            types: BTreeMap::new(),
            nonces: Nonces::default(),
        }
    }

    pub fn on_request(&mut self, req: &DiscoveryRequest) -> (RequestKind, Option<DiscoveryResponse>) {
        let ts = self.types.entry(req.type_url.clone()).or_default();
        let error = req.error_detail.as_ref().map(|e| e.message.clone());
        let kind = if req.response_nonce.is_empty() {
            RequestKind::Initial
        } else if !ts.settle(&req.response_nonce, error.clone()) {
            return (RequestKind::Stale, None);
        } else if let Some(e) = error {
            RequestKind::Nack(e)
        } else {
            RequestKind::Ack
        };
        let first = !ts.subscribed;
        ts.subscribed = true;
        ts.wildcard = names::is_wildcard_type(&req.type_url)
            && (req.resource_names.is_empty() || req.resource_names.iter().any(|n| n == "*"));
        ts.names = req.resource_names.iter().filter(|n| *n != "*").cloned().collect();
        let force = first && ts.wildcard;
        let resp = respond(&self.resources, &req.type_url, ts, &mut self.nonces, force);
        (kind, resp)
    }

    /// New resources for this proxy: the responses to send, in
    /// make-before-break order.
    pub fn on_update(&mut self, resources: SharedResources) -> Vec<DiscoveryResponse> {
        self.resources = resources;
        let order = update_order(&self.types, &self.resources);
        let mut out = Vec::new();
        for t in order {
            if let Some(ts) = self.types.get_mut(t)
                && let Some(r) = respond(&self.resources, t, ts, &mut self.nonces, false)
            {
                out.push(r);
            }
        }
        out
    }

    pub fn status(&self) -> Vec<TypeStatus> {
        self.types.iter().map(|(t, ts)| ts.status(t)).collect()
    }
}

/// The response this type needs now, if any: when what the client should
/// hold differs from what it was last sent (or `force`, for the first
/// wildcard request, which Envoy waits on even when the set is empty).
fn respond(
    res: &SharedResources,
    type_url: &str,
    ts: &mut TypeState,
    nonces: &mut Nonces,
    force: bool,
) -> Option<DiscoveryResponse> {
    let wanted = ts.wanted(res.of_type(type_url));
    let version = set_version(wanted.values().copied());
    let unchanged =
        wanted.len() == ts.sent.len() && wanted.iter().all(|(n, r)| ts.sent.get(*n) == Some(&r.version));
    if unchanged && !force && ts.last_nonce.is_some() {
        return None;
    }
    // A named type with nothing to send yet waits: the names are remembered.
    if wanted.is_empty() && !ts.wildcard && ts.last_nonce.is_none() {
        return None;
    }
    let nonce = nonces.next();
    ts.sent = wanted
        .iter()
        .map(|(n, r)| ((*n).clone(), r.version.clone()))
        .collect();
    ts.sent_version = version.clone();
    ts.last_nonce = Some(nonce.clone());
    ts.acked = false;
    Some(DiscoveryResponse {
        version_info: version,
        resources: wanted.values().map(|r| r.body.clone()).collect(),
        type_url: type_url.to_string(),
        nonce,
        ..Default::default()
    })
}

#[cfg(test)]
mod tests;
