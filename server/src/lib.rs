//! Tribune's server agent: the catalog state machine on Raft (openraft over
//! redb), the gRPC and HTTP APIs, and the `tribune` command line.
//!
//! Data flows one way: API write -> proposer -> Raft log -> state machine
//! (catalog) -> change feed -> watchers. See ARCHITECTURE.md.
#![forbid(unsafe_code)]
#![warn(unreachable_pub)]

mod acl;
mod agent;
mod api;
mod catalog;
mod checks;
mod cli;
mod client_agent;
mod cluster;
mod codec;
mod config;
mod consensus;
mod federation;
#[cfg(test)]
mod hostile;
mod http;
mod logging;
mod mesh;
mod metrics;
mod peering;
mod raft;
mod rpc;
mod tls;

/// The `tribune` command line: parses the arguments and runs the command.
pub use cli::main;
