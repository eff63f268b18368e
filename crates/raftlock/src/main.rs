//! `raftlock`: run a lock server, a local demo cluster, or talk to a cluster.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use raftlock::config::ServerArgs;

/// A distributed lock service on Raft.
#[derive(Parser, Debug)]
#[command(name = "raftlock", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run one server (one per process).
    Server(ServerArgs),
}

/// The runtime of `raftlock server`: multi-threaded, with `workers` threads when given.
fn server_runtime(workers: Option<usize>) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = workers {
        builder.worker_threads(n);
    }
    builder.enable_all().build()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Server(args) => {
            raftlock_serverkit::signals::init_tracing("RAFTLOCK_LOG");
            let settings = match args.resolve() {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("raftlock server: {e}");
                    return ExitCode::from(2);
                }
            };
            let outcome = server_runtime(settings.node.worker_threads)
                .map_err(|e| e.to_string())
                .and_then(|rt| {
                    rt.block_on(raftlock::server::run(settings))
                        .map_err(|e| e.to_string())
                });
            match outcome {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("raftlock server: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
