//! What the process-level scenarios (`cluster`, `failover`, `soak`) share: finding (or
//! building) the `raftkv` executable, and a 3-node [`LocalCluster`] in a temporary
//! directory that is removed, with every node process reaped, when it is dropped.

use std::error::Error;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use raftlock_kv::client::Client;
use raftlock_kv::cluster::LocalCluster;

use crate::{machine, storage};

/// Nodes in every process-level cluster.
pub const NODES: usize = 3;

/// How long to wait for a leader after starting a cluster.
const LEADER_TIMEOUT: Duration = Duration::from_secs(20);

/// The `raftkv` executable: next to this benchmark's own executable (e.g.
/// `target/release/raftkv`). When it is missing and this runs under `cargo run` (`$CARGO`
/// is set), it is built first with the same profile.
pub fn locate() -> Result<PathBuf, Box<dyn Error>> {
    locate_binary("raftkv", "raftlock-kv", "../kv/Cargo.toml")
}

/// The executable `name` of workspace package `package` (whose manifest is at
/// `manifest`, relative to this crate's): next to this benchmark's own executable, or
/// built first with the same profile when this runs under `cargo run`.
pub fn locate_binary(name: &str, package: &str, manifest: &str) -> Result<PathBuf, Box<dyn Error>> {
    let exe = std::env::current_exe().map_err(|e| format!("locating this executable: {e}"))?;
    let dir = exe
        .parent()
        .ok_or_else(|| format!("{} has no parent directory", exe.display()))?;
    // Test binaries live in `deps/`, one level below the profile directory.
    let dir = if dir.ends_with("deps") {
        dir.parent().unwrap_or(dir)
    } else {
        dir
    };
    let binary = dir.join(name);
    if binary.is_file() {
        return Ok(binary);
    }
    let Some(cargo) = std::env::var_os("CARGO") else {
        return Err(format!(
            "{} not found: run `cargo build --release -p {package}` first",
            binary.display()
        )
        .into());
    };
    build(Path::new(&cargo), dir, package, manifest)?;
    if binary.is_file() {
        Ok(binary)
    } else {
        Err(format!(
            "{} still not found after building {package}: run `cargo build --release -p \
             {package}` with the same CARGO_TARGET_DIR as this benchmark",
            binary.display()
        )
        .into())
    }
}

/// Builds `package` with `cargo`, in release unless `profile_dir` is a debug directory.
fn build(
    cargo: &Path,
    profile_dir: &Path,
    package: &str,
    manifest: &str,
) -> Result<(), Box<dyn Error>> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join(manifest);
    let mut command = Command::new(cargo);
    command.arg("build").arg("--manifest-path").arg(&manifest);
    if !profile_dir.ends_with("debug") {
        command.arg("--release");
    }
    command.args(["-p", package]);
    println!("{package} not built yet; building it: {command:?}");
    let status = command
        .status()
        .map_err(|e| format!("running {}: {e}", cargo.display()))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("building {package} failed ({status})").into())
    }
}

/// A running cluster of [`NODES`] `raftkv node` processes with data and logs in a
/// temporary directory. Dropping it kills and reaps the nodes, then removes the directory.
pub struct KvCluster {
    /// The node processes (dropped first: nodes stop before their directory goes).
    pub cluster: LocalCluster,
    /// A leader-finding client of every node.
    pub client: Client,
    /// Holds the data directories (removed on drop).
    _dir: tempfile::TempDir,
}

impl KvCluster {
    /// Starts the nodes of the `raftkv` executable `binary` with `extra_args`, in a fresh
    /// directory inside `parent` (default: inside ./target), and prints where.
    pub fn start(
        binary: &Path,
        parent: Option<&Path>,
        extra_args: &[&str],
    ) -> Result<KvCluster, Box<dyn Error>> {
        let dir = storage::temp_dir(parent)?;
        machine::print_directory(dir.path());
        let args: Vec<String> = extra_args.iter().map(|a| (*a).to_string()).collect();
        let cluster = raftlock_kv::cluster::start(binary, dir.path(), NODES, &args)
            .map_err(|e| format!("starting {}: {e}", binary.display()))?;
        let client = Client::new(&cluster.endpoints(), Duration::from_secs(10))?;
        Ok(KvCluster {
            cluster,
            client,
            _dir: dir,
        })
    }

    /// Waits until the nodes agree on a leader; returns its position. The error carries
    /// the tail of every node's log.
    pub async fn leader(&self) -> Result<usize, Box<dyn Error>> {
        match self.cluster.wait_for_leader(LEADER_TIMEOUT).await {
            Some(i) => Ok(i),
            None => {
                let logs: Vec<String> = (0..NODES)
                    .map(|i| format!("node-{}:\n{}", i + 1, self.cluster.log_tail(i, 10)))
                    .collect();
                Err(format!(
                    "no leader within {LEADER_TIMEOUT:?}; node logs:\n{}",
                    logs.join("\n")
                )
                .into())
            }
        }
    }

    /// The HTTP base URL (`http://host:port`) of node `i`.
    pub fn url(&self, i: usize) -> String {
        format!("http://{}", self.cluster.nodes()[i].http)
    }

    /// Total CPU time used so far by the running nodes (`None` if one cannot be read).
    pub fn cpu_time(&self) -> Option<Duration> {
        self.cluster
            .nodes()
            .iter()
            .filter_map(|n| n.pid())
            .map(machine::cpu_time_of)
            .sum()
    }
}

/// Total size of the files under `dir` (not following links; 0 if unreadable).
pub fn disk_usage(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => disk_usage(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Bytes as MiB, for display.
pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// A small, fast pseudo-random generator (SplitMix64) for picking keys and operations.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next value, uniform over `0..n` (`n` > 0; tiny modulo bias is fine here).
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % n.max(1)
    }
}

/// The 8-byte key number `n`: `k0000042`.
pub fn key(n: u64) -> String {
    format!("k{:07}", n % 10_000_000)
}

/// A value of `size` printable bytes.
pub fn value(size: usize) -> bytes::Bytes {
    bytes::Bytes::from(
        (0..size)
            .map(|i| b'a' + (i % 26) as u8)
            .collect::<Vec<u8>>(),
    )
}

/// A tokio runtime for the benchmark's clients with `threads` worker threads.
pub fn runtime(threads: usize) -> Result<tokio::runtime::Runtime, Box<dyn Error>> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()
        .map_err(|e| format!("building the tokio runtime: {e}"))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_have_eight_bytes_and_values_the_asked_size() {
        assert_eq!(key(42), "k0000042");
        assert!((0..1000).map(|n| key(n * 9_999)).all(|k| k.len() == 8));
        assert_eq!(value(256).len(), 256);
        let mut rng = Rng::new(1);
        assert!((0..1000).all(|_| rng.below(7) < 7));
    }
}
