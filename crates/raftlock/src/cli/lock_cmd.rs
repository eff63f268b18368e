//! `raftlock lock NAME -- CMD ARGS...`: runs a command while holding a lock (like
//! `etcdctl lock` and `consul lock`). The command learns the fencing token from
//! `RAFTLOCK_TOKEN`; if the lock is lost it gets SIGTERM (then SIGKILL after a grace
//! period) and `raftlock` exits with 3.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

use super::{exit_code_of, parse_duration, Endpoints, EXIT_LOCK_LOST, EXIT_NOT_ACQUIRED};
use crate::client::{Client, LockGuard};

/// Flags of `raftlock lock`.
#[derive(Args, Debug)]
pub struct LockArgs {
    /// The lock.
    pub name: String,
    /// The session's TTL: how long the cluster keeps the lock for this process once it
    /// stops hearing from it.
    #[arg(long, value_name = "DURATION", default_value = "15s", value_parser = parse_duration)]
    pub ttl: Duration,
    /// How long to wait for the lock (default: as long as it takes; 0s tries once).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub wait: Option<Duration>,
    /// How long a lock released by this session's expiry stays blocked for others.
    #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = parse_duration)]
    pub lock_delay: Duration,
    /// After SIGTERM, how long the command may take to exit before SIGKILL.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub kill_after: Duration,
    #[command(flatten)]
    pub endpoints: Endpoints,
    /// The command and its arguments.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

fn signal(child: &Child, sig: Signal) {
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        let _ = kill(Pid::from_raw(pid), sig);
    }
}

/// The exit code of a finished child: its own, or 128 + the signal that ended it.
fn child_code(status: std::process::ExitStatus) -> ExitCode {
    use std::os::unix::process::ExitStatusExt;
    let code = status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1);
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

/// Runs `raftlock lock`; returns the exit code.
pub async fn run(args: LockArgs) -> ExitCode {
    let options = args.endpoints.options(args.ttl).lock_delay(args.lock_delay);
    let client = match Client::new(options) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("raftlock lock: {e}");
            return exit_code_of(&e);
        }
    };
    let acquired = match args.wait {
        None => client.lock(&args.name).await.map(Some),
        Some(wait) => client.lock_with_timeout(&args.name, wait).await,
    };
    let guard = match acquired {
        Ok(Some(guard)) => guard,
        Ok(None) => {
            eprintln!("raftlock lock: {} was not acquired", args.name);
            return ExitCode::from(EXIT_NOT_ACQUIRED);
        }
        Err(e) => {
            eprintln!("raftlock lock: acquiring {}: {e}", args.name);
            return exit_code_of(&e);
        }
    };
    eprintln!(
        "raftlock lock: acquired {} (token {}, session {})",
        args.name,
        guard.token(),
        guard.session()
    );
    let (code, lost) = supervise(&args, &guard).await;
    // A lost lock is not released: the session is gone or cannot be trusted, and a
    // release could only fail. The command's own exit code 3 is not a lost lock.
    if !lost {
        if let Err(e) = guard.release().await {
            eprintln!(
                "raftlock lock: releasing {}: {e} (it is freed when the session expires)",
                args.name
            );
        }
        let _ = client.close().await;
    }
    code
}

/// Runs the command; ends it if the lock is lost or this process is asked to stop.
/// Returns the exit code and whether the lock was lost.
async fn supervise(args: &LockArgs, guard: &LockGuard) -> (ExitCode, bool) {
    let (program, rest) = match args.command.split_first() {
        Some(split) => split,
        None => return (ExitCode::FAILURE, false),
    };
    let mut child = match Command::new(program)
        .args(rest)
        .env("RAFTLOCK_TOKEN", guard.token().to_string())
        .env("RAFTLOCK_LOCK", guard.name())
        .env("RAFTLOCK_SESSION", guard.session())
        .kill_on_drop(true)
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("raftlock lock: starting {program}: {e}");
            return (ExitCode::from(127), false);
        }
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let asked_to_stop = async {
        match term.as_mut() {
            Some(s) => {
                s.recv().await;
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        status = child.wait() => match status {
            Ok(status) => (child_code(status), false),
            Err(e) => {
                eprintln!("raftlock lock: waiting for {program}: {e}");
                (ExitCode::FAILURE, false)
            }
        },
        _ = guard.lost() => {
            eprintln!(
                "raftlock lock: lost {} (session {} not renewed in time); stopping {program}",
                guard.name(),
                guard.session()
            );
            stop(&mut child, args.kill_after).await;
            (ExitCode::from(EXIT_LOCK_LOST), true)
        }
        _ = asked_to_stop => {
            let code = stop(&mut child, args.kill_after).await.map_or(ExitCode::FAILURE, child_code);
            (code, false)
        }
    }
}

/// SIGTERM, then SIGKILL after `grace`; the child's exit status.
async fn stop(child: &mut Child, grace: Duration) -> Option<std::process::ExitStatus> {
    signal(child, Signal::SIGTERM);
    match tokio::time::timeout(grace, child.wait()).await {
        Ok(status) => status.ok(),
        Err(_) => {
            signal(child, Signal::SIGKILL);
            child.wait().await.ok()
        }
    }
}
