//! A cluster of `raftkv node` processes on loopback, for the demo, the process-level
//! fault tests and the cluster benchmarks. Every process it starts is killed and reaped
//! when the [`LocalCluster`] is dropped, even on a panic, and each node is started with
//! `--exit-with-parent`, so nodes do not outlive a parent that is killed outright.

use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

use crate::client::Client;

/// One node process and its addresses.
#[derive(Debug)]
pub struct NodeProcess {
    /// Its id (`node-1`, ...).
    pub id: String,
    /// Peer (gRPC) address.
    pub peer: SocketAddr,
    /// Client HTTP address.
    pub http: SocketAddr,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Where its stdout and stderr go.
    pub log: PathBuf,
    child: Option<Child>,
    paused: bool,
}

impl NodeProcess {
    /// Whether the process is running (possibly paused).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Its operating-system pid, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn signal(&self, signal: Signal) -> std::io::Result<()> {
        let Some(pid) = self.pid() else {
            return Ok(());
        };
        let pid = i32::try_from(pid).map_err(std::io::Error::other)?;
        kill(Pid::from_raw(pid), signal).map_err(std::io::Error::other)
    }
}

/// A local cluster of `raftkv node` processes.
#[derive(Debug)]
pub struct LocalCluster {
    binary: PathBuf,
    nodes: Vec<NodeProcess>,
    extra_args: Vec<String>,
}

/// `n` distinct free loopback ports. They are free when this returns; a process that
/// binds one first would make the node fail to start, which its log then says.
fn free_ports(n: usize) -> std::io::Result<Vec<SocketAddr>> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()?;
    listeners.iter().map(TcpListener::local_addr).collect()
}

impl LocalCluster {
    /// Starts `size` nodes of `binary` (the `raftkv` executable) with data and logs under
    /// `dir`, on free loopback ports. `extra_args` go to every node (e.g. timing flags).
    pub fn start(
        binary: &Path,
        dir: &Path,
        size: usize,
        extra_args: &[String],
    ) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let ports = free_ports(size * 2)?;
        let nodes = (0..size)
            .map(|i| NodeProcess {
                id: format!("node-{}", i + 1),
                peer: ports[i],
                http: ports[size + i],
                data_dir: dir.join(format!("node-{}", i + 1)),
                log: dir.join(format!("node-{}.log", i + 1)),
                child: None,
                paused: false,
            })
            .collect();
        let mut cluster = LocalCluster {
            binary: binary.to_path_buf(),
            nodes,
            extra_args: extra_args.to_vec(),
        };
        for i in 0..size {
            cluster.spawn(i)?;
        }
        Ok(cluster)
    }

    /// The nodes.
    pub fn nodes(&self) -> &[NodeProcess] {
        &self.nodes
    }

    /// Client endpoints (`http://host:port`) of all nodes.
    pub fn endpoints(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("http://{}", n.http))
            .collect()
    }

    fn member_list(&self, addr: impl Fn(&NodeProcess) -> SocketAddr) -> String {
        self.nodes
            .iter()
            .map(|n| format!("{}={}", n.id, addr(n)))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn spawn(&mut self, i: usize) -> std::io::Result<()> {
        let peers = self.member_list(|n| n.peer);
        let http_peers = self.member_list(|n| n.http);
        let node = &mut self.nodes[i];
        let log = File::options().create(true).append(true).open(&node.log)?;
        let child = Command::new(&self.binary)
            .arg("node")
            .args(["--node-id", &node.id])
            .args(["--listen", &node.peer.to_string()])
            .args(["--http", &node.http.to_string()])
            .args(["--peers", &peers])
            .args(["--http-peers", &http_peers])
            .arg("--data-dir")
            .arg(&node.data_dir)
            .arg("--exit-with-parent")
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        node.child = Some(child);
        node.paused = false;
        Ok(())
    }

    /// Kills node `i` with SIGKILL and reaps it.
    pub fn kill(&mut self, i: usize) -> std::io::Result<()> {
        let node = &mut self.nodes[i];
        if let Some(mut child) = node.child.take() {
            child.kill()?;
            child.wait()?;
        }
        node.paused = false;
        Ok(())
    }

    /// Stops node `i` gracefully (SIGTERM), waiting up to `grace` before SIGKILL.
    pub fn terminate(&mut self, i: usize, grace: Duration) -> std::io::Result<()> {
        let node = &mut self.nodes[i];
        if node.paused {
            node.signal(Signal::SIGCONT)?;
            node.paused = false;
        }
        node.signal(Signal::SIGTERM)?;
        let Some(mut child) = node.child.take() else {
            return Ok(());
        };
        let start = Instant::now();
        while start.elapsed() < grace {
            if child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        child.kill()?;
        child.wait()?;
        Ok(())
    }

    /// Pauses node `i` (SIGSTOP): it keeps its sockets but answers nothing.
    pub fn pause(&mut self, i: usize) -> std::io::Result<()> {
        self.nodes[i].signal(Signal::SIGSTOP)?;
        self.nodes[i].paused = self.nodes[i].is_running();
        Ok(())
    }

    /// Resumes a paused node (SIGCONT).
    pub fn resume(&mut self, i: usize) -> std::io::Result<()> {
        self.nodes[i].signal(Signal::SIGCONT)?;
        self.nodes[i].paused = false;
        Ok(())
    }

    /// Starts node `i` again on the same addresses and data directory.
    pub fn restart(&mut self, i: usize) -> std::io::Result<()> {
        self.kill(i)?;
        self.spawn(i)
    }

    /// Stops every node gracefully.
    pub fn shutdown(&mut self, grace: Duration) -> std::io::Result<()> {
        for i in 0..self.nodes.len() {
            self.terminate(i, grace)?;
        }
        Ok(())
    }

    /// The last `lines` lines of node `i`'s log, for failure reports.
    pub fn log_tail(&self, i: usize, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.nodes[i].log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Every running, unpaused node's `/status`, by node position.
    pub async fn statuses(&self, client: &Client) -> Vec<Option<Value>> {
        let mut out = Vec::with_capacity(self.nodes.len());
        for node in &self.nodes {
            let status = if node.is_running() && !node.paused {
                client
                    .get_json(&node.http.to_string(), "/status")
                    .await
                    .ok()
            } else {
                None
            };
            out.push(status);
        }
        out
    }

    /// Waits until a running node reports itself leader and every other running node
    /// that answers agrees; returns its position.
    pub async fn wait_for_leader(&self, client: &Client, timeout: Duration) -> Option<usize> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            let statuses = self.statuses(client).await;
            let leader = statuses.iter().position(|s| {
                s.as_ref()
                    .is_some_and(|s| s["role"].as_str() == Some("Leader"))
            });
            if let Some(l) = leader {
                let id = &self.nodes[l].id;
                let agreed = statuses
                    .iter()
                    .flatten()
                    .all(|s| s["leader_id"].as_str() == Some(id.as_str()));
                if agreed {
                    return Some(l);
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if node.paused {
                let _ = node.signal(Signal::SIGCONT);
            }
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
