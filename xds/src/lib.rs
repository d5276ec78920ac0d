//! Tribune's Envoy xDS, in two halves that never meet inside this crate:
//!
//! - **translation** ([`sidecar::build`], [`gateway::build`]): a
//!   [`MeshSnapshot`] and a [`Sidecar`] or a mesh [`Gateway`] in, Envoy v3
//!   resources out. Sidecars terminate mTLS and reach upstreams in this or
//!   another datacenter (directly or through mesh gateways, per
//!   [`GatewayMode`]); gateways route on SNI without terminating TLS. Pure
//!   functions: no I/O, no clock, no randomness.
//! - **stream machinery** ([`SotwStream`], [`DeltaStream`]): the per-stream
//!   protocol state of ADS (versions, nonces, ACK/NACK, wildcard and named
//!   subscriptions, make-before-break ordering). Requests and resource
//!   updates in, responses out; the server owns the sockets.
//!
//! This crate knows nothing of Raft, storage or gossip.
#![forbid(unsafe_code)]

mod common;
pub mod delta;
pub mod gateway;
pub mod model;
pub mod names;
pub mod rbac;
pub mod resources;
pub mod sidecar;
pub mod sotw;
mod stream;

pub use delta::DeltaStream;
pub use model::{
    Gateway, GatewayMode, Intention, LeafCert, MeshEndpoint, MeshSnapshot, PeerMesh, PeerService, PeerTrust,
    RemoteDatacenter, Sidecar, Upstream,
};
pub use resources::{ProxyResources, Resource, SharedResources};
pub use sotw::{RequestKind, SotwStream};
pub use stream::{Nack, TypeStatus};
