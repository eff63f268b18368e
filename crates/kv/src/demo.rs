//! `raftkv demo`: a 3-node cluster of child processes on loopback that shows, in about
//! half a minute, what the library does: election, replication, a leader killed with
//! SIGKILL and replaced, and the old leader restarted and caught up.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::client::{Client, ClientError};
use crate::cluster::LocalCluster;

/// Why the demo stopped early.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// Starting or signalling a process failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// A request failed.
    #[error("{0}")]
    Client(#[from] ClientError),
    /// The cluster did not do what the demo waits for; the node logs say why.
    #[error("{0} (see the node logs in {1})")]
    Stuck(String, String),
}

/// Settings of the demo.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// Where data and logs go; wiped at start.
    pub dir: PathBuf,
    /// Writes in each phase.
    pub writes: usize,
}

fn stuck(what: &str, dir: &Path) -> DemoError {
    DemoError::Stuck(what.to_string(), dir.display().to_string())
}

fn field(status: &Option<Value>, name: &str) -> String {
    match status.as_ref().map(|s| &s[name]) {
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) => "-".into(),
        Some(other) => other.to_string(),
        None => "-".into(),
    }
}

async fn print_status_table(cluster: &LocalCluster) {
    let statuses = cluster.statuses().await;
    println!(
        "  {:<8} {:<8} {:<10} {:>5} {:>8} {:>8} {:>8}  client address",
        "node", "pid", "role", "term", "last", "commit", "applied"
    );
    for (node, status) in cluster.nodes().iter().zip(&statuses) {
        let role = if node.is_running() {
            field(status, "role")
        } else {
            "(down)".to_string()
        };
        let pid = node.pid().map_or("-".to_string(), |p| p.to_string());
        println!(
            "  {:<8} {:<8} {:<10} {:>5} {:>8} {:>8} {:>8}  http://{}",
            node.id,
            pid,
            role,
            field(status, "term"),
            field(status, "last_log_index"),
            field(status, "commit_index"),
            field(status, "last_applied"),
            node.http
        );
    }
}

/// Writes `count` keys `prefix-i`; returns the mean latency.
async fn write_keys(client: &Client, prefix: &str, count: usize) -> Result<Duration, DemoError> {
    let start = Instant::now();
    for i in 0..count {
        client
            .put(&format!("{prefix}-{i}"), &format!("value-{i}"))
            .await?;
    }
    Ok(start.elapsed() / u32::try_from(count.max(1)).unwrap_or(u32::MAX))
}

/// Runs the demo; the cluster is stopped on every path out of here, including Ctrl-C.
pub async fn run(options: DemoOptions) -> Result<(), DemoError> {
    if options.dir.exists() {
        std::fs::remove_dir_all(&options.dir)?;
    }
    let binary = std::env::current_exe()?;
    let dir = &options.dir;
    println!(
        "raftkv demo: a 3-node cluster on loopback, data and logs in {}",
        dir.display()
    );
    let started = Instant::now();
    let mut cluster = crate::cluster::start(&binary, dir, 3, &[])?;
    let client = Client::new(&cluster.endpoints(), Duration::from_secs(6))?;
    let result = tokio::select! {
        r = script(&mut cluster, &client, &options, started) => r,
        _ = tokio::signal::ctrl_c() => {
            println!("\ninterrupted; stopping the cluster");
            Ok(())
        }
    };
    cluster.shutdown(Duration::from_secs(5))?;
    println!("all nodes stopped; data and logs kept in {}", dir.display());
    result
}

async fn script(
    cluster: &mut LocalCluster,
    client: &Client,
    options: &DemoOptions,
    started: Instant,
) -> Result<(), DemoError> {
    let dir = &options.dir;
    for n in cluster.nodes() {
        println!(
            "  started {} (pid {}), peers on {}, clients on http://{}",
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

    println!(
        "\n2. Writing {} keys through the leader (each waits until applied)...",
        options.writes
    );
    let mean = write_keys(client, "before", options.writes).await?;
    println!(
        "   done, {:.2} ms per write on average",
        mean.as_secs_f64() * 1e3
    );
    let read = client.get("before-0", false).await?;
    println!(
        "   linearizable read of before-0: {}",
        read.as_deref().unwrap_or("(absent)")
    );

    let old = cluster.nodes()[leader].id.clone();
    println!("\n3. Killing the leader {old} with SIGKILL...");
    let killed_at = Instant::now();
    cluster.kill(leader)?;
    let new_leader = cluster
        .wait_for_leader(Duration::from_secs(15))
        .await
        .ok_or_else(|| stuck("no new leader within 15 s of the kill", dir))?;
    let elected = killed_at.elapsed();
    client
        .put("after-kill", "first write after failover")
        .await?;
    let first_write = killed_at.elapsed();
    println!(
        "   {} took over: elected {:.2} s after the kill, first write accepted after {:.2} s",
        cluster.nodes()[new_leader].id,
        elected.as_secs_f64(),
        first_write.as_secs_f64()
    );

    println!(
        "\n4. Writing {} more keys with one node down...",
        options.writes
    );
    let mean = write_keys(client, "after", options.writes).await?;
    println!(
        "   done, {:.2} ms per write on average",
        mean.as_secs_f64() * 1e3
    );

    println!("\n5. Restarting {old}; it recovers from its data directory and catches up...");
    let restarted_at = Instant::now();
    cluster.restart(leader)?;
    let caught_up = wait_caught_up(cluster, leader, Duration::from_secs(20))
        .await
        .ok_or_else(|| stuck(&format!("{old} did not catch up within 20 s"), dir))?;
    let local = Client::new(
        &[cluster.nodes()[leader].http.to_string()],
        Duration::from_secs(5),
    )?;
    let value = local
        .get(&format!("after-{}", options.writes - 1), true)
        .await?;
    println!(
        "   {old} caught up at index {caught_up} in {:.2} s; its local copy of after-{} = {}",
        restarted_at.elapsed().as_secs_f64(),
        options.writes - 1,
        value.as_deref().unwrap_or("(absent)")
    );

    println!("\n6. Cluster status:");
    print_status_table(cluster).await;
    println!("\nTry it yourself while a cluster runs: see docs/HTTP_API.md (curl -L http://<node>/kv/<key>).");
    Ok(())
}

/// Waits until node `i` has applied everything the leader has committed; returns that
/// index.
async fn wait_caught_up(cluster: &LocalCluster, i: usize, timeout: Duration) -> Option<u64> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        let statuses = cluster.statuses().await;
        let leader_commit = statuses
            .iter()
            .flatten()
            .find(|s| s["role"].as_str() == Some("Leader"))
            .and_then(|s| s["commit_index"].as_u64());
        let applied = statuses[i]
            .as_ref()
            .and_then(|s| s["last_applied"].as_u64());
        if let (Some(c), Some(a)) = (leader_commit, applied) {
            if a >= c {
                return Some(a);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}
