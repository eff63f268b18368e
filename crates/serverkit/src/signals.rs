//! The life of a server process: tracing set-up, logging of leader changes, and the
//! signals that stop it gracefully.

use std::time::Duration;

/// Logs to stderr at the level the environment variable `var` gives (`info` by default,
/// e.g. `RAFTKV_LOG=debug`), with colours only on a terminal.
pub fn init_tracing(var: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env(var)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    // A second call (a test that runs two servers in one process) keeps the first set-up.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

/// Logs every change of role, term or leader, so that a node's log tells its story.
pub async fn log_leader_changes(raft: raftlock_raft::Raft) {
    let mut changes = raft.leader_change_channel();
    while changes.changed().await.is_ok() {
        let o = changes.borrow_and_update().clone();
        let leader = o.leader.as_ref().map_or("none", |l| l.as_str());
        tracing::info!(term = o.term, role = %o.role, leader, "raft state changed");
    }
}

/// Resolves on SIGINT, SIGTERM, or (with `exit_with_parent`) when the parent process is
/// gone, so that a demo or test that dies cannot leave nodes behind.
pub async fn shutdown_signal(exit_with_parent: bool) {
    use tokio::signal::unix::{signal, SignalKind};
    let parent = std::os::unix::process::parent_id();
    let orphaned = async move {
        if !exit_with_parent {
            return std::future::pending().await;
        }
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            if std::os::unix::process::parent_id() != parent {
                tracing::warn!("parent process exited; stopping");
                return;
            }
        }
    };
    let term = async {
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
        _ = orphaned => {}
    }
}
