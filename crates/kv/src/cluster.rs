//! `raftkv node` processes on loopback: the shared [`LocalCluster`] started with raftkv's
//! subcommand and flags.

use std::path::Path;

pub use raftlock_serverkit::cluster::{LocalCluster, NodeProcess, ProcessSpec};

/// How to start nodes of the `raftkv` executable at `binary`.
pub fn spec(binary: &Path) -> ProcessSpec {
    ProcessSpec {
        binary: binary.to_path_buf(),
        subcommand: "node".into(),
        client_flag: "--http".into(),
        client_peers_flag: "--http-peers".into(),
    }
}

/// Starts `size` raftkv nodes of `binary` under `dir` (see [`LocalCluster::start`]).
pub fn start(
    binary: &Path,
    dir: &Path,
    size: usize,
    extra_args: &[String],
) -> std::io::Result<LocalCluster> {
    LocalCluster::start(spec(binary), dir, size, extra_args)
}
