//! `raftlock demo`: a 3-node cluster of child processes on loopback that shows, in about
//! half a minute, what the lock service guarantees: clients contending for one lock get
//! it one at a time with growing fencing tokens; the leader is killed with SIGKILL and
//! the lock keeps working; a holder paused with SIGSTOP loses its session after its TTL,
//! the lock passes to the next waiter with a higher token, and the holder, resumed,
//! learns that it lost the lock. Everything it starts is stopped at the end (or on
//! Ctrl-C); data and logs stay in the demo directory.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

use crate::client::{Client, ClientError, ClientOptions};
use crate::cluster::LocalCluster;

/// Why the demo stopped early.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// Starting or signalling a process failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// A client operation failed.
    #[error("{0}")]
    Client(#[from] ClientError),
    /// The cluster did not do what the demo waits for; the logs say why.
    #[error("{0} (see the logs in {1})")]
    Stuck(String, String),
}

fn stuck(what: impl Into<String>, dir: &Path) -> DemoError {
    DemoError::Stuck(what.into(), dir.display().to_string())
}

const LOCK: &str = "demo/report";
const PAUSED_LOCK: &str = "demo/backup";
const WORKERS: usize = 4;

/// Runs the demo; the cluster is stopped on every path out of here, including Ctrl-C.
pub async fn run(dir: PathBuf) -> Result<(), DemoError> {
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    let binary = std::env::current_exe()?;
    println!(
        "raftlock demo: a 3-node lock service on loopback, data and logs in {}",
        dir.display()
    );
    let started = Instant::now();
    let mut cluster = crate::cluster::start(&binary, &dir, 3, &[])?;
    let result = tokio::select! {
        r = script(&mut cluster, &binary, &dir, started) => r,
        _ = tokio::signal::ctrl_c() => {
            println!("\ninterrupted; stopping everything");
            Ok(())
        }
    };
    cluster.shutdown(Duration::from_secs(5))?;
    println!(
        "all servers stopped; data and logs kept in {}",
        dir.display()
    );
    result
}

fn endpoints(cluster: &LocalCluster) -> Vec<String> {
    cluster.nodes().iter().map(|n| n.http.to_string()).collect()
}

/// One grant seen by a worker.
struct Grant {
    worker: usize,
    token: u64,
}

/// A worker: takes the lock, holds it briefly, releases it; reports every grant.
async fn worker(i: usize, client: Client, grants: mpsc::Sender<Grant>) {
    loop {
        match client.lock(LOCK).await {
            Ok(guard) => {
                let token = guard.token();
                if grants.send(Grant { worker: i, token }).await.is_err() {
                    // The demo moved on: let go of everything.
                    let _ = guard.release().await;
                    let _ = client.close().await;
                    return;
                }
                tokio::time::sleep(Duration::from_millis(60)).await;
                if let Err(e) = guard.release().await {
                    tracing::debug!(worker = i, error = %e, "release failed");
                }
            }
            Err(e) => {
                tracing::debug!(worker = i, error = %e, "lock failed; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Prints `count` grants; checks that tokens only grow. Returns the last token.
async fn show_grants(
    grants: &mut mpsc::Receiver<Grant>,
    count: usize,
    mut last: u64,
    dir: &Path,
) -> Result<u64, DemoError> {
    for _ in 0..count {
        let g = tokio::time::timeout(Duration::from_secs(20), grants.recv())
            .await
            .map_err(|_| stuck("no grant for 20 s", dir))?
            .ok_or_else(|| stuck("the workers stopped", dir))?;
        if g.token <= last {
            return Err(stuck(
                format!("token {} after {last}: fencing order broken", g.token),
                dir,
            ));
        }
        println!("   worker-{} holds {LOCK} with token {}", g.worker, g.token);
        last = g.token;
    }
    Ok(last)
}

async fn script(
    cluster: &mut LocalCluster,
    binary: &Path,
    dir: &Path,
    started: Instant,
) -> Result<(), DemoError> {
    for n in cluster.nodes() {
        println!(
            "  started {} (pid {}), peers on {}, clients (HTTP and gRPC) on {}",
            n.id,
            n.pid().unwrap_or(0),
            n.peer,
            n.http
        );
    }
    println!("\n1. Electing a leader...");
    let leader = cluster
        .wait_for_leader(Duration::from_secs(15))
        .await
        .ok_or_else(|| stuck("no leader was elected within 15 s", dir))?;
    println!(
        "   {} is the leader ({:.2} s after start)",
        cluster.nodes()[leader].id,
        started.elapsed().as_secs_f64()
    );

    println!("\n2. {WORKERS} clients contend for {LOCK}; each holds it for 60 ms:");
    let (tx, mut grants) = mpsc::channel(64);
    let eps = endpoints(cluster);
    let mut workers = Vec::new();
    for i in 1..=WORKERS {
        let options = ClientOptions::new(eps.clone())
            .ttl(Duration::from_secs(5))
            .name(format!("worker-{i}"));
        workers.push(tokio::spawn(worker(i, Client::new(options)?, tx.clone())));
    }
    drop(tx);
    let last = show_grants(&mut grants, 8, 0, dir).await?;

    let old = cluster.nodes()[leader].id.clone();
    println!("\n3. Killing the leader {old} with SIGKILL while they contend...");
    let killed_at = Instant::now();
    cluster.kill(leader)?;
    let g = tokio::time::timeout(Duration::from_secs(20), grants.recv())
        .await
        .map_err(|_| stuck("no grant within 20 s of the kill", dir))?
        .ok_or_else(|| stuck("the workers stopped", dir))?;
    let gap = killed_at.elapsed();
    let new_leader = cluster
        .wait_for_leader(Duration::from_secs(15))
        .await
        .ok_or_else(|| stuck("no new leader within 15 s of the kill", dir))?;
    if g.token <= last {
        return Err(stuck(format!("token {} after {last}", g.token), dir));
    }
    println!(
        "   {} took over; the next grant came {:.2} s after the kill: worker-{} with token {}",
        cluster.nodes()[new_leader].id,
        gap.as_secs_f64(),
        g.worker,
        g.token
    );
    let last = show_grants(&mut grants, 6, g.token, dir).await?;
    drop(grants);
    for w in workers {
        // Each ends at its next grant, closing its session.
        let _ = tokio::time::timeout(Duration::from_secs(5), w).await;
    }
    println!("   every token was larger than the one before it (last: {last})");

    println!("\n4. Restarting {old}; it recovers from its data directory and catches up...");
    cluster.restart(leader)?;
    cluster
        .wait_all_applied(Duration::from_secs(20))
        .await
        .ok_or_else(|| stuck(format!("{old} did not catch up within 20 s"), dir))?;
    println!("   {old} is back");

    paused_holder(cluster, binary, dir).await?;

    println!("\n6. Cluster status:");
    print_status_table(cluster).await;
    println!(
        "\nTry it yourself while a cluster runs: docs/LOCK_API.md (curl), or\n  \
         raftlock lock my-job --endpoints {} -- sh -c 'echo token $RAFTLOCK_TOKEN'",
        endpoints(cluster).join(",")
    );
    Ok(())
}

/// Starts `raftlock lock` as a child process, its output in `log`.
fn lock_process(
    binary: &Path,
    cluster: &LocalCluster,
    ttl: &str,
    script: &str,
    log: &Path,
) -> std::io::Result<Child> {
    let out = std::fs::File::create(log)?;
    Command::new(binary)
        .arg("lock")
        .arg(PAUSED_LOCK)
        .args(["--ttl", ttl])
        .args(["--kill-after", "2s"])
        .args(["--endpoints", &endpoints(cluster).join(",")])
        .args(["--", "sh", "-c", script])
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .kill_on_drop(true)
        .spawn()
}

fn signal(child: &Child, sig: Signal) -> Result<(), DemoError> {
    let pid = child
        .id()
        .and_then(|p| i32::try_from(p).ok())
        .ok_or_else(|| std::io::Error::other("the process has exited"))?;
    kill(Pid::from_raw(pid), sig).map_err(|e| DemoError::Io(std::io::Error::other(e)))
}

/// Step 5: a holder paused with SIGSTOP loses the lock to a waiter, and learns it.
async fn paused_holder(cluster: &LocalCluster, binary: &Path, dir: &Path) -> Result<(), DemoError> {
    println!(
        "\n5. A process holds {PAUSED_LOCK} (`raftlock lock --ttl 2s -- ...`) and another waits for it;\n   \
         the holder is paused with SIGSTOP:"
    );
    let client = Arc::new(Client::new(ClientOptions::new(endpoints(cluster)))?);
    let holder_log = dir.join("holder.log");
    let mut holder = lock_process(
        binary,
        cluster,
        "2s",
        "echo \"holder: working with token $RAFTLOCK_TOKEN\"; exec sleep 60",
        &holder_log,
    )?;
    let first = wait_for(dir, Duration::from_secs(15), || {
        let client = client.clone();
        async move {
            client
                .get_lock(PAUSED_LOCK, false)
                .await
                .ok()
                .flatten()
                .filter(|l| !l.holder.is_empty())
        }
    })
    .await?;
    println!(
        "   holder (pid {}) got {PAUSED_LOCK} with token {}",
        holder.id().unwrap_or(0),
        first.token
    );
    let waiter_log = dir.join("waiter.log");
    let mut waiter = lock_process(
        binary,
        cluster,
        "5s",
        "echo \"waiter: working with token $RAFTLOCK_TOKEN\"",
        &waiter_log,
    )?;
    wait_for(dir, Duration::from_secs(15), || {
        let client = client.clone();
        async move {
            client
                .get_lock(PAUSED_LOCK, false)
                .await
                .ok()
                .flatten()
                .filter(|l| !l.waiters.is_empty())
        }
    })
    .await?;
    println!(
        "   waiter (pid {}) is queued for it",
        waiter.id().unwrap_or(0)
    );
    signal(&holder, Signal::SIGSTOP)?;
    let paused_at = Instant::now();
    println!("   SIGSTOP to the holder: it stops sending keep-alives");
    let status = tokio::time::timeout(Duration::from_secs(20), waiter.wait())
        .await
        .map_err(|_| stuck("the waiter did not get the lock within 20 s", dir))??;
    let waiter_said = std::fs::read_to_string(&waiter_log).unwrap_or_default();
    let granted = waiter_said
        .lines()
        .find(|l| l.starts_with("waiter:"))
        .unwrap_or("(no output)");
    let token: u64 = granted
        .rsplit(' ')
        .next()
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| stuck(format!("the waiter said {granted:?}"), dir))?;
    if token <= first.token {
        return Err(stuck(
            format!("the waiter's token {token} is not above {}", first.token),
            dir,
        ));
    }
    println!(
        "   {:.1} s later the holder's session had expired and the lock passed to the waiter,\n   \
         with a higher token ({token} > {}): \"{granted}\" (exit {})",
        paused_at.elapsed().as_secs_f64(),
        first.token,
        status.code().unwrap_or(-1)
    );
    signal(&holder, Signal::SIGCONT)?;
    let status = tokio::time::timeout(Duration::from_secs(20), holder.wait())
        .await
        .map_err(|_| stuck("the resumed holder did not exit within 20 s", dir))??;
    let holder_said = std::fs::read_to_string(&holder_log).unwrap_or_default();
    let lost = holder_said
        .lines()
        .find(|l| l.contains("lost"))
        .unwrap_or("(no output)");
    println!(
        "   SIGCONT to the holder: it notices at once that its session could not be trusted,\n   \
         stops its command and exits with code {} (3 = lock lost):\n   \"{lost}\"",
        status.code().unwrap_or(-1)
    );
    Ok(())
}

/// Polls `probe` until it yields something, for up to `timeout`.
async fn wait_for<T, F, Fut>(dir: &Path, timeout: Duration, mut probe: F) -> Result<T, DemoError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    while start.elapsed() < timeout {
        if let Some(v) = probe().await {
            return Ok(v);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(stuck(
        format!("nothing happened within {} s", timeout.as_secs()),
        dir,
    ))
}

async fn print_status_table(cluster: &LocalCluster) {
    let statuses = cluster.statuses().await;
    println!(
        "  {:<8} {:<8} {:<10} {:>5} {:>8} {:>8} {:>9} {:>11}  client address",
        "node", "pid", "role", "term", "commit", "applied", "sessions", "locks held"
    );
    for (node, status) in cluster.nodes().iter().zip(&statuses) {
        let field = |path: &[&str]| -> String {
            let mut v = status.as_ref();
            for p in path {
                v = v.and_then(|x| x.get(*p));
            }
            match v {
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(serde_json::Value::Null) | None => "-".into(),
                Some(other) => other.to_string(),
            }
        };
        let role = if node.is_running() {
            field(&["role"])
        } else {
            "(down)".into()
        };
        println!(
            "  {:<8} {:<8} {:<10} {:>5} {:>8} {:>8} {:>9} {:>11}  {}",
            node.id,
            node.pid().map_or("-".to_string(), |p| p.to_string()),
            role,
            field(&["term"]),
            field(&["commit_index"]),
            field(&["last_applied"]),
            field(&["lock_service", "sessions"]),
            field(&["lock_service", "locks_held"]),
            node.http
        );
    }
}
