//! One-shot client commands: `acquire`, `release`, `get`, `list`, `validate`, `session`,
//! `status`. Each prints what happened and exits 0 on success, 2 when a lock was not
//! acquired, 4 when the cluster could not be reached, 1 otherwise.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};

use super::{exit_code_of, parse_duration, Cmd, Endpoints, EXIT_NOT_ACQUIRED};
use crate::client::{AcquireResult, ClientError};
use crate::proto::api::LockInfo;

/// Flags of `raftlock acquire`.
#[derive(Args, Debug)]
pub struct AcquireArgs {
    /// The lock.
    pub name: String,
    /// Acquire for this session (default: open a new one and print its id).
    #[arg(long)]
    pub session: Option<String>,
    /// TTL of the new session.
    #[arg(long, value_name = "DURATION", default_value = "15s", value_parser = parse_duration)]
    pub ttl: Duration,
    /// How long to wait in the lock's queue (0s: try once).
    #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = parse_duration)]
    pub wait: Duration,
    /// Higher is served first.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub priority: i32,
    /// The request id (retrying with the same one cannot acquire twice).
    #[arg(long)]
    pub request_id: Option<String>,
    #[command(flatten)]
    pub endpoints: Endpoints,
}

/// Flags of `raftlock release`.
#[derive(Args, Debug)]
pub struct ReleaseArgs {
    /// The lock.
    pub name: String,
    /// The holding session.
    #[arg(long)]
    pub session: String,
    /// The token of the grant.
    #[arg(long)]
    pub token: u64,
    #[command(flatten)]
    pub endpoints: Endpoints,
}

/// Flags of `raftlock get`.
#[derive(Args, Debug)]
pub struct GetArgs {
    /// The lock.
    pub name: String,
    /// Read from the first node that answers, without asking the leader.
    #[arg(long)]
    pub stale: bool,
    #[command(flatten)]
    pub endpoints: Endpoints,
}

/// Flags of `raftlock list`.
#[derive(Args, Debug)]
pub struct ListArgs {
    /// Only locks whose names start with this.
    #[arg(long, default_value = "")]
    pub prefix: String,
    /// Most locks to show.
    #[arg(long, default_value_t = 100)]
    pub limit: u32,
    #[command(flatten)]
    pub endpoints: Endpoints,
}

/// Flags of `raftlock validate`.
#[derive(Args, Debug)]
pub struct ValidateArgs {
    /// The lock.
    pub name: String,
    /// The token to check.
    pub token: u64,
    #[command(flatten)]
    pub endpoints: Endpoints,
}

/// `raftlock session ...`.
#[derive(Subcommand, Debug)]
pub enum SessionCmd {
    /// Open a session and print its id.
    Create {
        /// Its TTL.
        #[arg(long, value_name = "DURATION", default_value = "15s", value_parser = parse_duration)]
        ttl: Duration,
        /// Its lock-delay.
        #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = parse_duration)]
        lock_delay: Duration,
        #[command(flatten)]
        endpoints: Endpoints,
    },
    /// Renew a session once.
    Keepalive {
        /// The session.
        session: String,
        #[command(flatten)]
        endpoints: Endpoints,
    },
    /// Close a session, releasing its locks.
    Close {
        /// The session.
        session: String,
        #[command(flatten)]
        endpoints: Endpoints,
    },
}

/// Flags of `raftlock status`.
#[derive(Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    pub endpoints: Endpoints,
}

fn print_lock(l: &LockInfo) {
    if l.holder.is_empty() {
        println!("{}: free", l.name);
    } else {
        println!(
            "{}: held by {} ({}) with token {} since {} ms, expires at {} ms unless renewed",
            l.name,
            l.holder,
            if l.holder_client.is_empty() {
                "-"
            } else {
                &l.holder_client
            },
            l.token,
            l.acquired_at_ms,
            l.expires_at_ms
        );
    }
    if l.blocked_until_ms != 0 {
        println!("  blocked by lock-delay until {} ms", l.blocked_until_ms);
    }
    for (i, w) in l.waiters.iter().enumerate() {
        println!(
            "  waiter {}: {} ({}) priority {}, waits until {} ms",
            i + 1,
            w.session,
            if w.client.is_empty() { "-" } else { &w.client },
            w.priority,
            w.wait_deadline_ms
        );
    }
}

/// Runs a one-shot command.
pub async fn run(cmd: Cmd) -> ExitCode {
    match one(cmd).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("raftlock: {e}");
            exit_code_of(&e)
        }
    }
}

async fn one(cmd: Cmd) -> Result<ExitCode, ClientError> {
    match cmd {
        Cmd::Acquire(a) => {
            let client = a.endpoints.client(a.ttl)?;
            let session = match a.session {
                Some(s) => s,
                None => {
                    let id = client
                        .create_session(a.ttl, Duration::ZERO, &client.options().name)
                        .await?;
                    println!(
                        "session {id} (TTL {} ms; renew it with `raftlock session keepalive {id}`)",
                        a.ttl.as_millis()
                    );
                    id
                }
            };
            let request_id = a.request_id.unwrap_or_else(|| client.new_request_id());
            match client
                .acquire_as(&session, &a.name, a.wait, a.priority, &request_id)
                .await?
            {
                AcquireResult::Acquired(g) => {
                    println!(
                        "acquired {} with token {} (session {session})",
                        a.name, g.token
                    );
                    Ok(ExitCode::SUCCESS)
                }
                AcquireResult::NotAcquired(n) => {
                    println!(
                        "not acquired ({}): held by {} with token {}; retry after {} ms",
                        n.reason,
                        n.holder.as_deref().unwrap_or("nobody"),
                        n.token.map_or("-".to_string(), |t| t.to_string()),
                        n.retry_after.as_millis()
                    );
                    Ok(ExitCode::from(EXIT_NOT_ACQUIRED))
                }
            }
        }
        Cmd::Release(r) => {
            let client = r.endpoints.client(Duration::from_secs(15))?;
            let next = client.release_as(&r.session, &r.name, r.token).await?;
            match next {
                Some(next) => println!("released {}; it passed to {next}", r.name),
                None => println!("released {}", r.name),
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Get(g) => {
            let client = g.endpoints.client(Duration::from_secs(15))?;
            match client.get_lock(&g.name, g.stale).await? {
                Some(info) => {
                    print_lock(&info);
                    Ok(ExitCode::SUCCESS)
                }
                None => {
                    println!("{}: no record (never held, or free for long)", g.name);
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Cmd::List(l) => {
            let client = l.endpoints.client(Duration::from_secs(15))?;
            let (locks, next) = client.list_locks(&l.prefix, None, l.limit).await?;
            for info in &locks {
                print_lock(info);
            }
            if let Some(next) = next {
                println!("(more after {next})");
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Validate(v) => {
            let client = v.endpoints.client(Duration::from_secs(15))?;
            let (valid, current) = client.validate(&v.name, v.token).await?;
            if valid {
                println!("valid: {} is the current token of {}", v.token, v.name);
                Ok(ExitCode::SUCCESS)
            } else {
                println!(
                    "not valid: the current token of {} is {}",
                    v.name,
                    current.map_or("none (free)".to_string(), |t| t.to_string())
                );
                Ok(ExitCode::FAILURE)
            }
        }
        Cmd::Session(SessionCmd::Create {
            ttl,
            lock_delay,
            endpoints,
        }) => {
            let client = endpoints.client(ttl)?;
            let id = client
                .create_session(ttl, lock_delay, &client.options().name)
                .await?;
            println!("{id}");
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Session(SessionCmd::Keepalive { session, endpoints }) => {
            let client = endpoints.client(Duration::from_secs(15))?;
            match client.keepalive_once(&session).await? {
                Some(remaining) => {
                    println!("{session}: {} ms to live", remaining.as_millis());
                    Ok(ExitCode::SUCCESS)
                }
                None => {
                    println!("{session}: expired or unknown");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Cmd::Session(SessionCmd::Close { session, endpoints }) => {
            let client = endpoints.client(Duration::from_secs(15))?;
            let released = client.close_session(&session).await?;
            println!("closed {session}; released {released:?}");
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Status(s) => {
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(3))
                .build()
                .map_err(|e| ClientError::Unavailable(e.to_string()))?;
            let mut reached = 0;
            for e in &s.endpoints.endpoints {
                let url = format!("{}/status", crate::client::endpoint_url(e));
                match http.get(&url).send().await {
                    Ok(r) => {
                        reached += 1;
                        let body = r.text().await.unwrap_or_default();
                        let pretty = serde_json::from_str::<serde_json::Value>(&body)
                            .and_then(|v| serde_json::to_string_pretty(&v))
                            .unwrap_or(body);
                        println!("{e}: {pretty}");
                    }
                    Err(err) => println!("{e}: unreachable ({err})"),
                }
            }
            Ok(if reached == 0 {
                ExitCode::from(super::EXIT_UNAVAILABLE)
            } else {
                ExitCode::SUCCESS
            })
        }
        Cmd::Server(_)
        | Cmd::Lock(_)
        | Cmd::Demo { .. }
        | Cmd::Member { .. }
        | Cmd::Leader { .. } => Ok(ExitCode::FAILURE),
    }
}
