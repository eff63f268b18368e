//! `raftkv`: run a replicated key-value node, a local demo cluster, or talk to a cluster.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use raftlock_kv::client::{CasResult, Client, ClientError};
use raftlock_kv::config::NodeArgs;
use raftlock_kv::{demo, server};
use raftlock_serverkit::admin::{AdminClient, AdminError, LeaderCmd, MemberCmd};

/// A replicated key-value store on raftlock-raft.
#[derive(Parser, Debug)]
#[command(name = "raftkv", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

/// Client endpoints shared by the client subcommands.
#[derive(clap::Args, Debug)]
struct Endpoints {
    /// Client addresses of the cluster's nodes; redirects to the leader are followed.
    #[arg(
        long,
        global = true,
        env = "RAFTKV_ENDPOINTS",
        value_delimiter = ',',
        default_value = "127.0.0.1:9001,127.0.0.1:9002,127.0.0.1:9003"
    )]
    endpoints: Vec<String>,
    /// Per-request timeout in milliseconds.
    #[arg(long, global = true, default_value_t = 6000)]
    timeout_ms: u64,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run one node (one per process).
    Node(NodeArgs),
    /// Start a local 3-node cluster, kill its leader, restart it, and show what happens.
    Demo {
        /// Where data and logs go (wiped at start, kept at the end).
        #[arg(long, default_value = "./raftkv-demo")]
        dir: PathBuf,
        /// Writes per phase.
        #[arg(long, default_value_t = 100)]
        writes: usize,
    },
    /// Set a key.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: String,
        #[command(flatten)]
        endpoints: Endpoints,
    },
    /// Read a key (linearizable unless --stale).
    Get {
        /// The key.
        key: String,
        /// Read from the first node that answers, without asking the leader.
        #[arg(long)]
        stale: bool,
        #[command(flatten)]
        endpoints: Endpoints,
    },
    /// Compare-and-swap: set KEY to --to if it holds --from (absent if --from is omitted).
    Cas {
        /// The key.
        key: String,
        /// The value the key must hold; omit to require that it is absent.
        #[arg(long)]
        from: Option<String>,
        /// The new value.
        #[arg(long)]
        to: String,
        #[command(flatten)]
        endpoints: Endpoints,
    },
    /// Remove a key.
    Delete {
        /// The key.
        key: String,
        #[command(flatten)]
        endpoints: Endpoints,
    },
    /// Show every endpoint's Raft status.
    Status {
        #[command(flatten)]
        endpoints: Endpoints,
    },
    /// List, add or remove cluster members.
    Member {
        #[command(subcommand)]
        cmd: MemberCmd,
        #[command(flatten)]
        endpoints: Endpoints,
    },
    /// Move the leadership.
    Leader {
        #[command(subcommand)]
        cmd: LeaderCmd,
        #[command(flatten)]
        endpoints: Endpoints,
    },
}

/// Runs `member` and `leader` commands.
async fn run_admin(cmd: Cmd) -> Result<String, AdminError> {
    let admin = |e: &Endpoints| {
        AdminClient::new(
            &e.endpoints,
            Duration::from_millis(e.timeout_ms).max(Duration::from_secs(10)),
        )
    };
    match cmd {
        Cmd::Member { cmd, endpoints } => admin(&endpoints)?.member(cmd).await,
        Cmd::Leader { cmd, endpoints } => admin(&endpoints)?.leader(cmd).await,
        _ => Ok(String::new()),
    }
}

fn client(e: &Endpoints) -> Result<Client, ClientError> {
    Client::new(&e.endpoints, Duration::from_millis(e.timeout_ms))
}

fn runtime(multi: bool) -> std::io::Result<tokio::runtime::Runtime> {
    if multi {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    }
}

/// The runtime of `raftkv node`: multi-threaded, with `workers` threads when given.
fn node_runtime(workers: Option<usize>) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = workers {
        builder.worker_threads(n);
    }
    builder.enable_all().build()
}

async fn run_client(cmd: Cmd) -> Result<ExitCode, ClientError> {
    match cmd {
        Cmd::Put {
            key,
            value,
            endpoints,
        } => {
            let index = client(&endpoints)?.put(&key, &value).await?;
            println!("OK (index {index})");
        }
        Cmd::Get {
            key,
            stale,
            endpoints,
        } => match client(&endpoints)?.get(&key, stale).await? {
            Some(value) => println!("{value}"),
            None => {
                eprintln!("key not found: {key}");
                return Ok(ExitCode::from(1));
            }
        },
        Cmd::Cas {
            key,
            from,
            to,
            endpoints,
        } => match client(&endpoints)?.cas(&key, from.as_deref(), &to).await? {
            CasResult::Swapped(index) => println!("swapped (index {index})"),
            CasResult::Conflict(current) => {
                eprintln!(
                    "not swapped: current value is {}",
                    current.map_or("absent".to_string(), |c| format!("{c:?}"))
                );
                return Ok(ExitCode::from(1));
            }
        },
        Cmd::Delete { key, endpoints } => {
            let existed = client(&endpoints)?.delete(&key).await?;
            println!(
                "{}",
                if existed {
                    "deleted"
                } else {
                    "not found (nothing to delete)"
                }
            );
        }
        Cmd::Status { endpoints } => {
            let c = client(&endpoints)?;
            for e in c.endpoints().to_vec() {
                match c.get_json(&e, "/status").await {
                    Ok(status) => println!(
                        "{e}: {}",
                        serde_json::to_string_pretty(&status).unwrap_or_default()
                    ),
                    Err(err) => println!("{e}: {err}"),
                }
            }
        }
        Cmd::Node(_) | Cmd::Demo { .. } | Cmd::Member { .. } | Cmd::Leader { .. } => {}
    }
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Cmd::Node(args) => {
            raftlock_serverkit::signals::init_tracing("RAFTKV_LOG");
            let settings = match args.resolve() {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("raftkv node: {e}");
                    return ExitCode::from(2);
                }
            };
            node_runtime(settings.node.worker_threads)
                .map_err(|e| e.to_string())
                .and_then(|rt| {
                    rt.block_on(server::run(settings))
                        .map(|()| ExitCode::SUCCESS)
                        .map_err(|e| e.to_string())
                })
        }
        Cmd::Demo { dir, writes } => runtime(true).map_err(|e| e.to_string()).and_then(|rt| {
            rt.block_on(demo::run(demo::DemoOptions {
                dir,
                writes: writes.max(1),
            }))
            .map(|()| ExitCode::SUCCESS)
            .map_err(|e| e.to_string())
        }),
        admin @ (Cmd::Member { .. } | Cmd::Leader { .. }) => runtime(false)
            .map_err(|e| e.to_string())
            .and_then(|rt| rt.block_on(run_admin(admin)).map_err(|e| e.to_string()))
            .map(|out| {
                // A closed pipe (`| head`) is not an error of the command.
                let _ = writeln!(std::io::stdout(), "{out}");
                ExitCode::SUCCESS
            }),
        other => runtime(false)
            .map_err(|e| e.to_string())
            .and_then(|rt| rt.block_on(run_client(other)).map_err(|e| e.to_string())),
    };
    match outcome {
        Ok(code) => code,
        Err(e) => {
            eprintln!("raftkv: {e}");
            ExitCode::FAILURE
        }
    }
}
