//! Envoy resources as the stream machinery sees them: a name, a content
//! version and the packed message, grouped by type.

use std::collections::BTreeMap;
use std::sync::Arc;

use envoy_types::pb::google::protobuf::Any;
use prost::Message;

/// One named Envoy resource.
#[derive(Clone, Debug, PartialEq)]
pub struct Resource {
    pub name: String,
    /// Content hash: equal versions, equal bytes.
    pub version: String,
    pub body: Any,
}

impl Resource {
    pub fn new<T: prost::Name + Message>(name: impl Into<String>, msg: T) -> Resource {
        let body = envoy_types::util::pack_any(msg);
        Resource {
            name: name.into(),
            version: content_hash(&body.value),
            body,
        }
    }
}

/// Resources of one type, by name.
pub type TypeResources = BTreeMap<String, Resource>;

/// Everything one proxy is to hold, by type URL, and the Raft index it
/// reflects. Shared between streams of the same proxy.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProxyResources {
    pub index: u64,
    pub by_type: BTreeMap<&'static str, TypeResources>,
}

impl ProxyResources {
    pub fn of_type(&self, type_url: &str) -> Option<&TypeResources> {
        self.by_type.get(type_url)
    }

    pub fn insert(&mut self, type_url: &'static str, r: Resource) {
        self.by_type
            .entry(type_url)
            .or_default()
            .insert(r.name.clone(), r);
    }
}

pub type SharedResources = Arc<ProxyResources>;

/// FNV-1a 64: stable across runs and builds, so a reconnecting Envoy's
/// `initial_resource_versions` still match.
pub fn content_hash(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// The version of a set of resources: a hash over names and versions.
pub fn set_version<'a>(items: impl Iterator<Item = &'a Resource>) -> String {
    let mut buf = Vec::new();
    for r in items {
        buf.extend_from_slice(r.name.as_bytes());
        buf.push(0);
        buf.extend_from_slice(r.version.as_bytes());
        buf.push(0);
    }
    content_hash(&buf)
}
