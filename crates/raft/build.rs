//! Generates the gRPC peer transport from `proto/raft.proto` when the `grpc` feature is on.
//! No system `protoc` is needed: `protox` parses the proto files in Rust.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var_os("CARGO_FEATURE_GRPC").is_none() {
        return Ok(());
    }
    #[cfg(feature = "grpc")]
    {
        // Read at run time, not with `env!`: cargo reuses a compiled build script for
        // another checkout that shares the target directory, and a path baked in at
        // compile time would point that checkout at the first one's proto file.
        let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
            .ok_or("CARGO_MANIFEST_DIR is not set; run this through cargo")?;
        let proto_dir = std::path::Path::new(&manifest_dir).join("../../proto");
        let file = proto_dir.join("raft.proto");
        println!("cargo:rerun-if-changed={}", file.display());
        let fds = protox::compile([&file], [&proto_dir])?;
        tonic_prost_build::configure()
            .build_client(true)
            .build_server(true)
            .bytes(".")
            .compile_fds(fds)?;
    }
    Ok(())
}
