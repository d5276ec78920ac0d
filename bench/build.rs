//! Compiles the minimal etcd KV API in `proto/etcd.proto` with protox (pure
//! Rust, so no `protoc` is needed) into a tonic client.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["etcd.proto"];
    for f in files {
        println!("cargo:rerun-if-changed=proto/{f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure()
        .build_server(false)
        .compile_fds(fds)?;
    Ok(())
}
