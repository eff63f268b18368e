//! `raftlock server` processes on loopback: the shared [`LocalCluster`] started with
//! raftlock's subcommand and flags, for the demo, the process-level tests and the
//! benchmarks.

use std::path::Path;

pub use raftlock_serverkit::cluster::{LocalCluster, NodeProcess, ProcessSpec};

/// How to start servers of the `raftlock` executable at `binary`.
pub fn spec(binary: &Path) -> ProcessSpec {
    ProcessSpec {
        binary: binary.to_path_buf(),
        subcommand: "server".into(),
        client_flag: "--api".into(),
        client_peers_flag: "--api-peers".into(),
    }
}

/// Starts `size` raftlock servers of `binary` under `dir` (see [`LocalCluster::start`]).
pub fn start(
    binary: &Path,
    dir: &Path,
    size: usize,
    extra_args: &[String],
) -> std::io::Result<LocalCluster> {
    LocalCluster::start(spec(binary), dir, size, extra_args)
}
