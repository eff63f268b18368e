//! The `raftlock` command line: `server`, `lock` (run a command under a lock), one-shot
//! client commands, and `demo`.

mod demo;
mod lock_cmd;
mod oneshot;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::client::{Client, ClientError, ClientOptions};
use crate::config::ServerArgs;
use raftlock_serverkit::admin::{AdminClient, AdminError, LeaderCmd, MemberCmd};

/// Exit code: the lock was not acquired.
pub const EXIT_NOT_ACQUIRED: u8 = 2;
/// Exit code: the lock was lost while the command ran.
pub const EXIT_LOCK_LOST: u8 = 3;
/// Exit code: the cluster could not be reached (or did not answer in time).
pub const EXIT_UNAVAILABLE: u8 = 4;

/// A distributed lock service on Raft.
#[derive(Parser, Debug)]
#[command(name = "raftlock", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

/// Where the cluster is.
#[derive(Args, Clone, Debug)]
pub struct Endpoints {
    /// Client API addresses of the cluster's nodes; the leader is found from any of them.
    #[arg(
        long,
        global = true,
        env = "RAFTLOCK_ENDPOINTS",
        value_delimiter = ',',
        default_value = "127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003"
    )]
    pub endpoints: Vec<String>,
    /// How long one command keeps trying to reach the leader.
    #[arg(long, global = true, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
}

impl Endpoints {
    /// Client options for these endpoints, with a session of `ttl`.
    fn options(&self, ttl: Duration) -> ClientOptions {
        ClientOptions::new(self.endpoints.clone())
            .ttl(ttl)
            .deadline(self.timeout)
            .name(client_name())
    }

    fn client(&self, ttl: Duration) -> Result<Client, ClientError> {
        Client::new(self.options(ttl))
    }
}

/// `user@host:pid`, shown with the locks this process holds.
fn client_name() -> String {
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    format!("{user}@{host}:{}", std::process::id())
}

/// Parses `500ms`, `15s`, `2m`, `1h`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration like 500ms, 15s, 2m"))?;
    let ms = match unit {
        "ms" => Some(n),
        "" | "s" => n.checked_mul(1_000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        _ => None,
    }
    .ok_or_else(|| format!("`{text}` is not a duration like 500ms, 15s, 2m"))?;
    Ok(Duration::from_millis(ms))
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run one server (one per process).
    Server(Box<ServerArgs>),
    /// Run a command while holding a lock. The command gets RAFTLOCK_TOKEN (the fencing
    /// token), RAFTLOCK_LOCK and RAFTLOCK_SESSION in its environment and SIGTERM if the
    /// lock is lost. Exit code: the command's own; 2 not acquired; 3 lock lost; 4 cluster
    /// unavailable.
    Lock(lock_cmd::LockArgs),
    /// Acquire a lock once and print the token (the session lives for its TTL unless
    /// kept alive with `raftlock session keepalive`).
    Acquire(oneshot::AcquireArgs),
    /// Release a lock held by a session with a token.
    Release(oneshot::ReleaseArgs),
    /// Show a lock: holder, token, waiters.
    Get(oneshot::GetArgs),
    /// List locks.
    List(oneshot::ListArgs),
    /// Check a fencing token against a lock's current one.
    Validate(oneshot::ValidateArgs),
    /// Open, renew or close a session.
    #[command(subcommand)]
    Session(oneshot::SessionCmd),
    /// Show every endpoint's status.
    Status(oneshot::StatusArgs),
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
    /// Start a local 3-node cluster, contend for a lock, kill the leader, pause a holder,
    /// and show that the lock stays exclusive.
    Demo {
        /// Where data and logs go (wiped at start, kept at the end).
        #[arg(long, default_value = "./raftlock-demo")]
        dir: PathBuf,
    },
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

/// Runs an admin command (`member`, `leader`) against `endpoints` and prints its answer.
fn admin<F: std::future::Future<Output = Result<String, AdminError>>>(
    endpoints: &Endpoints,
    f: impl FnOnce(AdminClient) -> F,
) -> Result<ExitCode, String> {
    let client = AdminClient::new(
        &endpoints.endpoints,
        endpoints.timeout.max(Duration::from_secs(10)),
    )
    .map_err(|e| e.to_string())?;
    let rt = runtime(false).map_err(|e| e.to_string())?;
    match rt.block_on(f(client)) {
        Ok(out) => {
            // A closed pipe (`| head`) is not an error of the command.
            let _ = writeln!(std::io::stdout(), "{out}");
            Ok(ExitCode::SUCCESS)
        }
        Err(e @ (AdminError::Unavailable(_) | AdminError::Unknown(_))) => {
            eprintln!("raftlock: {e}");
            Ok(ExitCode::from(EXIT_UNAVAILABLE))
        }
        Err(e) => Err(e.to_string()),
    }
}

/// The exit code for a client error: 4 when the cluster could not be reached.
pub fn exit_code_of(e: &ClientError) -> ExitCode {
    match e {
        ClientError::Unavailable(_) | ClientError::Unknown(_) => ExitCode::from(EXIT_UNAVAILABLE),
        _ => ExitCode::FAILURE,
    }
}

/// Runs the command line; returns the process's exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome: Result<ExitCode, String> = match cli.command {
        Cmd::Server(args) => {
            raftlock_serverkit::signals::init_tracing("RAFTLOCK_LOG");
            let settings = match (*args).resolve() {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("raftlock server: {e}");
                    return ExitCode::from(2);
                }
            };
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            if let Some(n) = settings.node.worker_threads {
                builder.worker_threads(n);
            }
            builder
                .enable_all()
                .build()
                .map_err(|e| e.to_string())
                .and_then(|rt| {
                    rt.block_on(crate::server::run(settings))
                        .map(|()| ExitCode::SUCCESS)
                        .map_err(|e| format!("server: {e}"))
                })
        }
        Cmd::Demo { dir } => runtime(true)
            .map_err(|e| e.to_string())
            .and_then(|rt| rt.block_on(demo::run(dir)).map_err(|e| e.to_string()))
            .map(|()| ExitCode::SUCCESS),
        Cmd::Member { cmd, endpoints } => admin(&endpoints, |a| async move { a.member(cmd).await }),
        Cmd::Leader { cmd, endpoints } => admin(&endpoints, |a| async move { a.leader(cmd).await }),
        Cmd::Lock(args) => runtime(true)
            .map_err(|e| e.to_string())
            .map(|rt| rt.block_on(lock_cmd::run(args))),
        other => runtime(false)
            .map_err(|e| e.to_string())
            .map(|rt| rt.block_on(oneshot::run(other))),
    };
    match outcome {
        Ok(code) => code,
        Err(e) => {
            eprintln!("raftlock: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("15"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("1.5s").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("3d").is_err());
        assert!(parse_duration("99999999999999999999h").is_err());
    }
}
