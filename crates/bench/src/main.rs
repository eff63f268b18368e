//! `raftlock-bench`: benchmarks of the raftlock-raft library.
//!
//! Each scenario is a subcommand living in its own module:
//!
//! - `storage` ([`storage`]): `FileStorage` group-commit throughput and latency against the
//!   raw `write + fdatasync` rate of the same disk.
//! - `inproc` ([`inproc`]): three nodes in one process on `LocalNetwork` and `MemStorage`,
//!   N clients looping `propose_and_wait`; compared with openraft's `benchmarks/minimal`.
//! - `durable` ([`durable`]): the same on `FileStorage` with an fsync per batch, with the
//!   nodes' fsync rates next to the disk's raw rate.
//!
//! - `core` ([`core`]): the consensus core alone on one thread, no runtime: the protocol
//!   code's CPU per proposal (deterministic, for callgrind).
//!
//! The two in-process scenarios share their engine ([`inproc_cluster`]).
//!
//! Against real `raftkv` processes (the executable is found or built by [`raftkv_bin`]):
//!
//! - `cluster` ([`cluster`]): three nodes on loopback with fsync, clients over HTTP.
//! - `loopback` ([`loopback`]): the floor under `cluster`: bare TCP request/answer
//!   exchanges of the same sizes with a server that does nothing else.
//! - `floor` ([`floor`]): the floor under `cluster`'s puts: a client exchange, replication to
//!   two followers and three fdatasyncs, with nothing else.
//! - `failover` ([`failover`]): kill -9 the leader; time to a new leader and to a write.
//! - `transfer` ([`transfer`]): move the leadership with `POST /v1/leader/transfer` under a
//!   steady write load; how long writes stop.
//!
//! Against real `raftlock server` processes and, in the same run, an etcd 3.4 cluster:
//!
//! - `locks` ([`locks`]): uncontended acquire + release pairs, hand-off of a contended
//!   lock, and how many sessions a cluster keeps alive.
//! - `soak` ([`soak`]): mixed load with snapshots; RSS per node over time.
//!
//! And `recovery` ([`recovery`]): time and memory to open a data directory with 1 M entries.
//!
//! Every run starts by describing the machine ([`machine`]) and warns when it is busy, since
//! numbers taken on a loaded machine are not comparable. Results are printed as a plain-text
//! table that is also valid Markdown ([`report`]).

use std::error::Error;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cluster;
mod core;
mod durable;
mod failover;
mod floor;
mod http1;
mod http2;
mod inproc;
mod inproc_cluster;
mod locks;
mod loopback;
mod machine;
mod raftkv_bin;
mod recovery;
mod report;
mod soak;
mod storage;
mod transfer;

/// Benchmarks of raftlock-raft.
#[derive(Debug, Parser)]
#[command(name = "raftlock-bench", version, about)]
struct Cli {
    /// Which benchmark to run.
    #[command(subcommand)]
    command: Command,
}

/// The benchmark scenarios.
#[derive(Debug, Subcommand)]
enum Command {
    /// FileStorage append + sync (group commit) against the disk's raw write + fdatasync rate.
    Storage(storage::StorageArgs),
    /// Three nodes in one process (LocalNetwork, MemStorage), N clients looping
    /// propose_and_wait: throughput, latency, CPU per op, against openraft's numbers.
    Inproc(inproc::InprocArgs),
    /// The consensus core alone: three RaftCores on one thread with no runtime, CPU per
    /// proposal of the protocol code itself (deterministic under callgrind).
    Core(core::CoreArgs),
    /// Like inproc, on FileStorage with an fsync per batch: adds fsyncs/s and entries per
    /// fsync next to the disk's raw write + fdatasync rate.
    Durable(durable::DurableArgs),
    /// Three raftkv node processes on loopback with fsync, clients over the HTTP API:
    /// puts and linearizable reads (lease and ReadIndex) against etcd's numbers.
    Cluster(cluster::ClusterArgs),
    /// The floor under cluster's HTTP rows: N loopback TCP connections exchanging requests
    /// and answers of a put's size with a server that does nothing else.
    Loopback(loopback::LoopbackArgs),
    /// The floor under cluster's put rows: the least work a replicated, durable put can
    /// be here (client exchange, two followers, three fdatasyncs), with nothing else.
    Floor(floor::FloorArgs),
    /// RaftLock against etcd 3.4 in the same run: uncontended acquire + release pairs,
    /// hand-off of a contended lock, sessions kept alive.
    Locks(locks::LocksArgs),
    /// Kill -9 the leader of a raftkv cluster repeatedly: time to a new leader and to the
    /// first successful write.
    Failover(failover::FailoverArgs),
    /// Move a raftkv cluster's leadership with POST /v1/leader/transfer, round robin,
    /// under a steady write load: how long writes stop at each transfer.
    Transfer(transfer::TransferArgs),
    /// Open a FileStorage directory holding a long log: time and memory.
    Recovery(recovery::RecoveryArgs),
    /// The child process of `recovery`: opens a data directory and prints time and memory.
    #[command(hide = true)]
    RecoveryOpen(recovery::OpenArgs),
    /// Minutes of mixed writes and reads with snapshots on: RSS per node over time.
    Soak(soak::SoakArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("raftlock-bench: error: {e}");
            let mut source = e.source();
            while let Some(cause) = source {
                eprintln!("  caused by: {cause}");
                source = cause.source();
            }
            ExitCode::FAILURE
        }
    }
}

/// Dispatches to the chosen scenario.
fn run(cli: Cli) -> Result<(), Box<dyn Error>> {
    match cli.command {
        Command::Storage(args) => storage::run(&args),
        Command::Inproc(args) => inproc::run(&args),
        Command::Core(args) => core::run(&args),
        Command::Durable(args) => durable::run(&args),
        Command::Cluster(args) => cluster::run(&args),
        Command::Loopback(args) => loopback::run(&args),
        Command::Floor(args) => floor::run(&args),
        Command::Locks(args) => locks::run(&args),
        Command::Failover(args) => failover::run(&args),
        Command::Transfer(args) => transfer::run(&args),
        Command::Recovery(args) => recovery::run(&args),
        Command::RecoveryOpen(args) => recovery::open(&args),
        Command::Soak(args) => soak::run(&args),
    }
}
