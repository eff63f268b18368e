//! `raftlock-bench`: benchmarks of the raftlock-raft library.
//!
//! Each scenario is a subcommand living in its own module:
//!
//! - `storage` ([`storage`]): `FileStorage` group-commit throughput and latency against the
//!   raw `write + fdatasync` rate of the same disk.
//!
//! Planned: `inproc`, `durable`, `cluster`, `failover`, `recovery`, `soak`.
//!
//! Every run starts by describing the machine ([`machine`]) and warns when it is busy, since
//! numbers taken on a loaded machine are not comparable. Results are printed as a plain-text
//! table that is also valid Markdown ([`report`]).

use std::error::Error;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod machine;
mod report;
mod storage;

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
    }
}
