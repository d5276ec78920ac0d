//! Compiles `tribune/**/*.proto` with protox (pure Rust, so no `protoc` is
//! needed) and writes the descriptor set that gRPC reflection serves.

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "tribune/v1/catalog.proto",
        "tribune/v1/health.proto",
        "tribune/v1/operator.proto",
        "tribune/v1/connect.proto",
        "tribune/v1/keyring.proto",
        "tribune/v1/acl.proto",
        "tribune/v1/peering.proto",
        "tribune/server/v1/server.proto",
    ];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["."])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("tribune_descriptor.bin"), fds.encode_to_vec())?;
    let mut cfg = tonic_prost_build::configure()
        // JSON output of the CLI (`--format json`) serializes the wire types.
        .type_attribute(".tribune.v1", "#[derive(serde::Serialize)]");
    for (field, with) in [
        ("tribune.v1.CheckDefinition.initial_status", "health_status"),
        ("tribune.v1.Check.status", "health_status"),
        ("tribune.v1.InstanceHealth.status", "health_status"),
        ("tribune.v1.UpdateTtlRequest.status", "health_status"),
        ("tribune.v1.ListChecksRequest.status", "health_status"),
        ("tribune.v1.ServiceInstance.kind", "service_kind"),
        ("tribune.v1.ServiceSpec.kind", "service_kind"),
        ("tribune.v1.ServiceSummary.kind", "service_kind"),
    ] {
        cfg = cfg.field_attribute(
            field,
            format!("#[serde(serialize_with = \"crate::json::{with}\")]"),
        );
    }
    cfg.compile_fds(fds)?;
    Ok(())
}
