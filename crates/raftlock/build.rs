//! Generates the lock service's gRPC API (`proto/raftlock.proto`) and its replicated log and
//! snapshot formats (`proto/raftlock_log.proto`). No system `protoc` is needed: `protox`
//! parses the proto files in Rust.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=build.rs");
    // Read at run time, not with `env!`: cargo reuses a compiled build script for another
    // checkout that shares the target directory.
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .ok_or("CARGO_MANIFEST_DIR is not set; run this through cargo")?;
    let proto_dir = std::path::Path::new(&manifest_dir).join("../../proto");
    let files = [
        proto_dir.join("raftlock.proto"),
        proto_dir.join("raftlock_log.proto"),
    ];
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    let fds = protox::compile(&files, [&proto_dir])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
