//! Tribune's protobuf types and gRPC stubs, generated at build time from
//! `proto/tribune/**`. Nothing else lives here: conversions to domain types
//! belong to the crates that own those types.
#![forbid(unsafe_code)]

/// The public API, package `tribune.v1`.
pub mod v1 {
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("tribune.v1");
}

/// Server-to-server RPC (Raft and the rest), package `tribune.server.v1`.
pub mod server {
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("tribune.server.v1");
}

/// Encoded `FileDescriptorSet` of every Tribune proto, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/tribune_descriptor.bin"));

/// How enum fields read in JSON: `"passing"`, `"sidecar-proxy"`, not numbers.
mod json {
    use serde::Serializer;

    fn name<S: Serializer>(full: Option<&str>, prefix: &str, raw: i32, s: S) -> Result<S::Ok, S::Error> {
        match full {
            Some(n) => s.serialize_str(
                &n.trim_start_matches(prefix)
                    .to_ascii_lowercase()
                    .replace('_', "-"),
            ),
            None => s.serialize_i32(raw),
        }
    }

    pub fn health_status<S: Serializer>(v: &i32, s: S) -> Result<S::Ok, S::Error> {
        let n = crate::v1::HealthStatus::try_from(*v)
            .ok()
            .map(|x| x.as_str_name());
        name(n, "HEALTH_STATUS_", *v, s)
    }

    pub fn service_kind<S: Serializer>(v: &i32, s: S) -> Result<S::Ok, S::Error> {
        let n = crate::v1::ServiceKind::try_from(*v).ok().map(|x| x.as_str_name());
        name(n, "SERVICE_KIND_", *v, s)
    }
}
