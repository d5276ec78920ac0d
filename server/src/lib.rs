//! Tribune's server agent: the catalog state machine on Raft (openraft over
//! redb), the gRPC and HTTP APIs, and the `tribune` command line.
//!
//! Data flows one way: API write -> proposer -> Raft log -> state machine
//! (catalog) -> change feed -> watchers. See ARCHITECTURE.md.
#![forbid(unsafe_code)]

pub mod agent;
pub mod api;
pub mod catalog;
pub mod checks;
pub mod cli;
pub mod client_agent;
pub mod cluster;
pub mod config;
pub mod context;
pub mod http;
pub mod logging;
pub mod mesh;
pub mod metrics;
pub mod raft;
