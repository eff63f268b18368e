//! Generates the gRPC clients of the few etcd calls `raftlock-bench locks` makes
//! (`proto/etcd.proto`, `proto/v3lock.proto`). No system `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=build.rs");
    // Read at run time: cargo may reuse a compiled build script for another checkout.
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .ok_or("CARGO_MANIFEST_DIR is not set; run this through cargo")?;
    let proto_dir = std::path::Path::new(&manifest_dir).join("proto");
    let files = [proto_dir.join("etcd.proto"), proto_dir.join("v3lock.proto")];
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    let fds = protox::compile(&files, [&proto_dir])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(false)
        .compile_fds(fds)?;
    Ok(())
}
