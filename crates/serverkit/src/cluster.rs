//! A cluster of node processes on loopback, for demos, process-level fault tests and
//! benchmarks. Every process it starts is killed and reaped when the [`LocalCluster`] is
//! dropped, even on a panic, and each node is started with `--exit-with-parent`, so nodes
//! do not outlive a parent that is killed outright.
//!
//! The cluster can grow and shrink as its membership does: [`LocalCluster::add_node`]
//! starts one more node (a fresh id, free ports, an empty data directory, no `--peers`,
//! optionally `--join`), and [`LocalCluster::forget`] stops one and leaves it out of the
//! cluster's views ([`endpoints`](LocalCluster::endpoints), [`statuses`](LocalCluster::statuses),
//! the waits). Positions (the `i` of every method) are stable: a node keeps its position
//! for the cluster's life, forgotten or not, and ids (`node-1`, `node-2`, ...) are never
//! reused. Changing the replicated membership is the caller's business (the servers'
//! `/v1/members` routes); this module only runs the processes.

use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

/// How to start one node of a server binary: its subcommand and the names of its
/// client-address flags. Every server also takes the [`NodeFlags`](crate::settings::NodeFlags).
#[derive(Clone, Debug)]
pub struct ProcessSpec {
    /// The server's executable.
    pub binary: PathBuf,
    /// The subcommand that runs a node (`node` for raftkv, `server` for raftlock).
    pub subcommand: String,
    /// The flag of the node's client address (`--http`, `--api`).
    pub client_flag: String,
    /// The flag of every member's client address (`--http-peers`, `--api-peers`).
    pub client_peers_flag: String,
}

/// One node process and its addresses.
#[derive(Debug)]
pub struct NodeProcess {
    /// Its id (`node-1`, ...).
    pub id: String,
    /// Peer (gRPC) address.
    pub peer: SocketAddr,
    /// Client address (HTTP, and for raftlock gRPC on the same port).
    pub http: SocketAddr,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Where its stdout and stderr go.
    pub log: PathBuf,
    child: Option<Child>,
    paused: bool,
    /// Started with the cluster: it bootstraps with `--peers` of the initial members.
    bootstrap: bool,
    /// The client address it joins through (`--join`), for a node added later.
    join: Option<String>,
    /// Left out of the cluster's views (see [`LocalCluster::forget`]).
    forgotten: bool,
}

impl NodeProcess {
    /// Whether the process is running (possibly paused).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Whether the process is paused (SIGSTOP).
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// Its operating-system pid, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether it was one of the nodes the cluster started with (bootstrapped with
    /// `--peers`), rather than added by [`LocalCluster::add_node`].
    pub fn is_bootstrap(&self) -> bool {
        self.bootstrap
    }

    /// The client address it was told to join through (`--join`), if any.
    pub fn join_via(&self) -> Option<&str> {
        self.join.as_deref()
    }

    /// Whether the cluster forgot it ([`LocalCluster::forget`]).
    pub fn is_forgotten(&self) -> bool {
        self.forgotten
    }

    /// Its client endpoint, `http://host:port`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.http)
    }

    fn signal(&self, signal: Signal) -> std::io::Result<()> {
        let Some(pid) = self.pid() else {
            return Ok(());
        };
        let pid = i32::try_from(pid).map_err(std::io::Error::other)?;
        kill(Pid::from_raw(pid), signal).map_err(std::io::Error::other)
    }
}

/// A local cluster of node processes.
#[derive(Debug)]
pub struct LocalCluster {
    spec: ProcessSpec,
    /// Where data directories and logs go.
    dir: PathBuf,
    nodes: Vec<NodeProcess>,
    extra_args: Vec<String>,
    http: reqwest::Client,
}

/// `n` distinct free loopback ports. They are free when this returns; a process that
/// binds one first would make the node fail to start, which its log then says.
pub fn free_ports(n: usize) -> std::io::Result<Vec<SocketAddr>> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()?;
    listeners.iter().map(TcpListener::local_addr).collect()
}

impl LocalCluster {
    /// Starts `size` nodes as `spec` says, with data and logs under `dir`, on free
    /// loopback ports. `extra_args` go to every node, those added later included (e.g.
    /// timing flags).
    pub fn start(
        spec: ProcessSpec,
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
                bootstrap: true,
                join: None,
                forgotten: false,
            })
            .collect();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .map_err(std::io::Error::other)?;
        let mut cluster = LocalCluster {
            spec,
            dir: dir.to_path_buf(),
            nodes,
            extra_args: extra_args.to_vec(),
            http,
        };
        for i in 0..size {
            cluster.spawn(i)?;
        }
        Ok(cluster)
    }

    /// Every node ever started, forgotten ones included, by position.
    pub fn nodes(&self) -> &[NodeProcess] {
        &self.nodes
    }

    /// The position of the node with id `id`.
    pub fn position(&self, id: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.id == id)
    }

    /// Client endpoints (`http://host:port`) of every node not forgotten, running or not
    /// (a killed node is expected back; clients skip it while it is down).
    pub fn endpoints(&self) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|n| !n.forgotten)
            .map(NodeProcess::endpoint)
            .collect()
    }

    /// Client endpoints of the nodes that are running, not paused and not forgotten:
    /// the ones a client can reach now.
    pub fn running_endpoints(&self) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|n| n.is_running() && !n.paused && !n.forgotten)
            .map(NodeProcess::endpoint)
            .collect()
    }

    /// `id=address` of every bootstrap member: the initial configuration, the same for
    /// every start of every bootstrap node whatever happened to the membership since
    /// (only a node with an empty data directory reads it).
    fn member_list(&self, addr: impl Fn(&NodeProcess) -> SocketAddr) -> String {
        self.nodes
            .iter()
            .filter(|n| n.bootstrap)
            .map(|n| format!("{}={}", n.id, addr(n)))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn spawn(&mut self, i: usize) -> std::io::Result<()> {
        let peers = self.member_list(|n| n.peer);
        let clients = self.member_list(|n| n.http);
        let spec = &self.spec;
        let node = &mut self.nodes[i];
        let log = File::options().create(true).append(true).open(&node.log)?;
        let mut command = Command::new(&spec.binary);
        command
            .arg(&spec.subcommand)
            .args(["--node-id", &node.id])
            .args(["--listen", &node.peer.to_string()])
            .args([spec.client_flag.as_str(), &node.http.to_string()]);
        if node.bootstrap {
            command
                .args(["--peers", &peers])
                .args([spec.client_peers_flag.as_str(), &clients]);
        } else if let Some(via) = &node.join {
            command.args(["--join", via]);
        }
        let child = command
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

    /// Starts one more node: the next fresh id (`node-<n>`, never one used before), two
    /// free loopback ports, an empty data directory, the cluster's extra arguments, and
    /// no `--peers`, so it waits to be added (`POST /v1/members`), or with `join` set,
    /// `--join join` so that it asks the cluster to add it through that client address.
    /// Returns its position. Restarts keep the same flags.
    pub fn add_node(&mut self, join: Option<&str>) -> std::io::Result<usize> {
        let n = self.nodes.len() + 1;
        let id = format!("node-{n}");
        let data_dir = self.dir.join(&id);
        if data_dir.exists() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!("{} exists: a new node starts empty", data_dir.display()),
            ));
        }
        let ports = free_ports(2)?;
        self.nodes.push(NodeProcess {
            log: self.dir.join(format!("{id}.log")),
            id,
            peer: ports[0],
            http: ports[1],
            data_dir,
            child: None,
            paused: false,
            bootstrap: false,
            join: join.map(str::to_string),
            forgotten: false,
        });
        let i = self.nodes.len() - 1;
        self.spawn(i)?;
        Ok(i)
    }

    /// Stops node `i` (SIGTERM, then SIGKILL after `grace`) and forgets it: from now on
    /// it is left out of [`endpoints`](Self::endpoints), [`statuses`](Self::statuses) and
    /// the waits, as a node removed from the membership should be. It keeps its
    /// position, id, data directory and log; [`restart`](Self::restart) still starts it
    /// (to see what a removed node does on its data directory), out of the views.
    pub fn forget(&mut self, i: usize, grace: Duration) -> std::io::Result<()> {
        self.terminate(i, grace)?;
        self.nodes[i].forgotten = true;
        Ok(())
    }

    /// Waits up to `timeout` for node `i`'s process to exit by itself (e.g. a node that
    /// refuses to start); returns its exit status once reaped, `None` if it is still
    /// running (or was not running).
    pub fn wait_exit(
        &mut self,
        i: usize,
        timeout: Duration,
    ) -> std::io::Result<Option<ExitStatus>> {
        let node = &mut self.nodes[i];
        let Some(child) = node.child.as_mut() else {
            return Ok(None);
        };
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait()? {
                node.child = None;
                node.paused = false;
                return Ok(Some(status));
            }
            if start.elapsed() >= timeout {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
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

    /// Starts node `i` again on the same addresses, data directory and flags.
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

    /// `GET path` on node `i` as JSON, `None` if it does not answer 2xx with JSON.
    pub async fn get_json(&self, i: usize, path: &str) -> Option<Value> {
        let url = format!("http://{}{path}", self.nodes[i].http);
        let response = self.http.get(url).send().await.ok()?;
        if !response.status().is_success() {
            return None;
        }
        let body = response.bytes().await.ok()?;
        serde_json::from_slice(&body).ok()
    }

    /// Every running, unpaused, not forgotten node's `/status`, by node position (`None`
    /// for the others).
    pub async fn statuses(&self) -> Vec<Option<Value>> {
        let mut out = Vec::with_capacity(self.nodes.len());
        for (i, node) in self.nodes.iter().enumerate() {
            let status = if node.is_running() && !node.paused && !node.forgotten {
                self.get_json(i, "/status").await
            } else {
                None
            };
            out.push(status);
        }
        out
    }

    /// Waits until a running node reports itself leader and every other running node
    /// that answers agrees (forgotten nodes are not asked); returns its position.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Option<usize> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            let statuses = self.statuses().await;
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

    /// Waits until every running, unpaused, not forgotten node has applied the commit
    /// index the leader reported when first asked; returns that index, or `None` after
    /// `timeout`. The target is fixed once known: under a steady write load, the leader's
    /// commit index read after a follower's applied index is always a little ahead of it,
    /// and a moving target would keep the wait going until the load stops.
    pub async fn wait_all_applied(&self, timeout: Duration) -> Option<u64> {
        let start = Instant::now();
        let mut target = None;
        while start.elapsed() < timeout {
            let statuses = self.statuses().await;
            if target.is_none() {
                target = statuses
                    .iter()
                    .flatten()
                    .find(|s| s["role"] == "Leader")
                    .and_then(|s| s["commit_index"].as_u64());
            }
            if let Some(commit) = target {
                let all = self
                    .nodes
                    .iter()
                    .zip(&statuses)
                    .filter(|(n, _)| n.is_running() && !n.paused && !n.forgotten)
                    .all(|(_, s)| {
                        s.as_ref()
                            .and_then(|s| s["last_applied"].as_u64())
                            .is_some_and(|a| a >= commit)
                    });
                if all {
                    return Some(commit);
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
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
