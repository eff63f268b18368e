//! The peer: a 3-member etcd cluster (Debian's `etcd-server`, etcd 3.4) on loopback,
//! started as child processes in a temporary directory and killed and reaped on drop,
//! and the few gRPC calls the lock scenarios make of it (generated from
//! `crates/bench/proto/`).

use std::error::Error;
use std::fs::File;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tonic::transport::{Channel, Endpoint};

use crate::machine;

/// etcd's generated clients.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod pb {
    /// Leases and member status.
    pub mod etcdserverpb {
        tonic::include_proto!("etcdserverpb");
    }

    /// The v3lock service.
    pub mod v3lockpb {
        tonic::include_proto!("v3lockpb");
    }

    pub use etcdserverpb::*;
    pub use v3lockpb as v3lock;
}

/// Where etcd is looked for, unless `--etcd` says otherwise.
pub const DEFAULT_BINARY: &str = "/usr/bin/etcd";

/// A running 3-member etcd cluster.
pub struct EtcdCluster {
    members: Vec<Member>,
    _dir: tempfile::TempDir,
}

struct Member {
    client_url: String,
    child: Option<Child>,
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            if let Some(mut child) = m.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// A channel to `url` (`http://host:port`).
pub fn channel(url: &str) -> Result<Channel, Box<dyn Error>> {
    Ok(Endpoint::from_shared(url.to_string())?
        .tcp_nodelay(true)
        .connect_lazy())
}

impl EtcdCluster {
    /// Starts three members of `binary` with data and logs in a new directory inside
    /// `parent` (with `GOMAXPROCS` = `threads` if given), and waits until they have a
    /// leader.
    pub async fn start(
        binary: &Path,
        parent: Option<&Path>,
        threads: Option<usize>,
    ) -> Result<EtcdCluster, Box<dyn Error>> {
        if !binary.is_file() {
            return Err(format!(
                "{} not found: install Debian's etcd-server (apt install etcd-server) or pass --etcd",
                binary.display()
            )
            .into());
        }
        let dir = crate::storage::temp_dir(parent)?;
        machine::print_directory(dir.path());
        let ports = raftlock_serverkit::cluster::free_ports(6)?;
        let initial: Vec<String> = (0..3)
            .map(|i| format!("e{}=http://{}", i + 1, ports[3 + i]))
            .collect();
        let mut members = Vec::new();
        for i in 0..3 {
            let client_url = format!("http://{}", ports[i]);
            let peer_url = format!("http://{}", ports[3 + i]);
            let data = dir.path().join(format!("e{}", i + 1));
            let log = File::create(dir.path().join(format!("e{}.log", i + 1)))?;
            let mut command = Command::new(binary);
            if let Some(n) = threads {
                command.env("GOMAXPROCS", n.to_string());
            }
            let child = command
                .args(["--name", &format!("e{}", i + 1)])
                .arg("--data-dir")
                .arg(&data)
                .args(["--listen-client-urls", &client_url])
                .args(["--advertise-client-urls", &client_url])
                .args(["--listen-peer-urls", &peer_url])
                .args(["--initial-advertise-peer-urls", &peer_url])
                .args(["--initial-cluster", &initial.join(",")])
                .args(["--initial-cluster-state", "new"])
                .args(["--initial-cluster-token", "raftlock-bench"])
                .args(["--logger", "zap", "--log-level", "warn"])
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .map_err(|e| format!("starting {}: {e}", binary.display()))?;
            members.push(Member {
                client_url,
                child: Some(child),
            });
        }
        let cluster = EtcdCluster { members, _dir: dir };
        let start = Instant::now();
        while cluster.leader().await.is_err() {
            if start.elapsed() > Duration::from_secs(30) {
                return Err("etcd elected no leader within 30 s".into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(cluster)
    }

    /// The client URL of the member that leads.
    pub async fn leader(&self) -> Result<String, Box<dyn Error>> {
        for m in &self.members {
            let mut c = pb::maintenance_client::MaintenanceClient::new(channel(&m.client_url)?);
            let Ok(Ok(status)) =
                tokio::time::timeout(Duration::from_secs(1), c.status(pb::StatusRequest {})).await
            else {
                continue;
            };
            let status = status.into_inner();
            let me = status.header.map_or(0, |h| h.member_id);
            if status.leader != 0 && status.leader == me {
                return Ok(m.client_url.clone());
            }
        }
        Err("no etcd member says it leads".into())
    }

    /// The members' pids.
    pub fn pids(&self) -> Vec<u32> {
        self.members
            .iter()
            .filter_map(|m| m.child.as_ref().map(Child::id))
            .collect()
    }

    /// Total CPU time the members used so far.
    pub fn cpu_time(&self) -> Option<Duration> {
        self.pids().into_iter().map(machine::cpu_time_of).sum()
    }
}
