//! Generates the gRPC peer transport from `proto/raft.proto` when the `grpc` feature is on.
//! No system `protoc` is needed: `protox` parses the proto files in Rust.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var_os("CARGO_FEATURE_GRPC").is_none() {
        return Ok(());
    }
    #[cfg(feature = "grpc")]
    {
        let proto_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
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
