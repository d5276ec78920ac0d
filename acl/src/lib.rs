//! Tribune's access control, decided in one place.
//!
//! - [`Rules::parse`] reads a policy's rules in Consul's rule language,
//!   HCL or JSON (`service "web" { policy = "write" }`, `service_prefix`,
//!   `node`, `node_prefix`, `agent`, `agent_prefix`, and `operator`, `mesh`,
//!   `acl`, `keyring` at the top level; `intentions` on service rules). A
//!   rule that does not parse is refused with its line and column.
//! - [`service_identity`] and [`node_identity`] expand a token's
//!   identities into rules, as Consul does.
//! - [`Authorizer`] merges every rule a token holds and answers whether it
//!   grants a [`Permission`]: an exact name beats any prefix, the longest
//!   prefix wins, and between rules that match equally deny wins, then the
//!   greater access (write includes read). What no rule matches falls to
//!   the default policy.
//!
//! It knows nothing of tokens' storage, Raft, gRPC or the clock.
#![forbid(unsafe_code)]

mod access;
mod authorizer;
mod identity;
mod rules;

pub use access::{Access, Permission, Resource};
pub use authorizer::Authorizer;
pub use identity::{node_identity, service_identity};
pub use rules::{Rule, RuleError, Rules, Target};
