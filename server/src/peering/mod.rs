//! Cluster peering: clusters that stay independent (their own servers,
//! trust domain, CA and ACLs) share the services each exports to the other.
//!
//! - `token.rs`: what a peering token carries, and its text form.
//! - `exports.rs`: what this cluster sends a peer (its identity and the
//!   services it exports to it), computed from the catalog; conversions.
//! - `api.rs`: `tribune.v1.Peering` (tokens, establishment, status,
//!   exports, imports).
//! - `stream.rs`: `tribune.v1.PeerStream`, served by the accepting
//!   cluster's servers on their gRPC TLS port.
//! - `link.rs`: one open stream, the same on both sides: resources out
//!   with nonces, acknowledgements, heartbeats; imports written through
//!   Raft.
//! - `dialer.rs`: the dialing cluster's leader keeps a stream open to each
//!   peer it dialled, and every leader drops imports held too long.
//!
//! The catalog keeps peerings, exports and imports (`catalog::peering`);
//! nothing here keeps state of its own but the live links' last messages.

pub(crate) mod api;
pub(crate) mod dialer;
pub(crate) mod exports;
pub(crate) mod link;
pub(crate) mod stream;
pub(crate) mod token;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::consensus::{Leadership, Writer};
use crate::raft::state_machine::Shared;

/// What peering takes: the state, where writes go, who leads, and this
/// server's live links.
pub(crate) struct PeeringCtx {
    pub(crate) state: Arc<Shared>,
    pub(crate) writer: Writer,
    pub(crate) leadership: Leadership,
    pub(crate) datacenter: String,
    pub(crate) links: Links,
    /// This server's gRPC TLS address: what a token names until the
    /// servers' own registrations (node meta) are in the catalog.
    pub(crate) tls_addr: Option<String>,
    /// Stream bytes by direction.
    pub(crate) bytes: prometheus_client::metrics::family::Family<
        crate::metrics::DirectionLabel,
        prometheus_client::metrics::counter::Counter,
    >,
}

impl PeeringCtx {
    pub(crate) fn count(&self, direction: &'static str, n: usize) {
        self.bytes
            .get_or_create(&crate::metrics::DirectionLabel { direction })
            .inc_by(n as u64);
    }
}

/// When each peer was last heard from on this server (Unix seconds), and
/// which of its links is the latest: a link that ends after a newer one
/// opened says nothing about the peering.
#[derive(Default)]
pub(crate) struct Links {
    last_seen: Mutex<HashMap<String, i64>>,
    latest: Mutex<HashMap<String, u64>>,
}

impl Links {
    /// A new link for `name`: its generation.
    pub(crate) fn begin(&self, name: &str) -> u64 {
        let mut l = self.latest.lock().unwrap_or_else(|e| e.into_inner());
        let g = l.get(name).copied().unwrap_or(0) + 1;
        l.insert(name.to_string(), g);
        g
    }

    pub(crate) fn is_latest(&self, name: &str, generation: u64) -> bool {
        self.latest
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .is_some_and(|g| *g == generation)
    }

    pub(crate) fn seen(&self, name: &str, at: i64) {
        self.last_seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string(), at);
    }

    pub(crate) fn last_seen(&self, name: &str) -> i64 {
        self.last_seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .copied()
            .unwrap_or(0)
    }
}

/// Lower-case hex SHA-256: how secrets that authenticate a peer are kept.
pub(crate) fn sha256(secret: &str) -> String {
    crate::acl::secret_sha256(secret)
}

/// The node meta key under which a server registers its gRPC TLS address,
/// which peering tokens and streams name.
pub(crate) const TLS_ADDR_META: &str = "tribune-grpc-tls-addr";
