//! The two systems under test behind one interface: a client with its own connection and
//! session that acquires and releases locks. RaftLock through its Rust client (gRPC, to
//! the leader); etcd through its v3lock `Lock`/`Unlock` calls with a lease, to its leader.

use std::error::Error;
use std::future::Future;
use std::path::Path;
use std::time::Duration;

use raftlock::cluster::LocalCluster;
use raftlock::{AcquireResult, Client, ClientOptions};

use super::etcd::{self, pb, EtcdCluster};
use crate::machine;

/// Longest a blocking acquire waits (RaftLock's limit).
const WAIT: Duration = Duration::from_secs(300);

/// One client of a lock service: its own connection and session.
pub trait LockClient: Send + Sync + 'static {
    /// What a grant hands back, to release it.
    type Held: Send + 'static;

    /// Acquires `name`, waiting for it as long as needed.
    fn acquire(&self, name: &str) -> impl Future<Output = Result<Self::Held, String>> + Send;

    /// Releases a grant.
    fn release(&self, held: Self::Held) -> impl Future<Output = Result<(), String>> + Send;
}

/// A RaftLock client with a session of its own.
pub struct RaftLockClient {
    client: Client,
    session: String,
}

impl RaftLockClient {
    /// A client of `endpoints` (the leader first) with a new session of `ttl`.
    pub async fn connect(endpoints: &[String], ttl: Duration) -> Result<Self, String> {
        let client = Client::new(ClientOptions::new(endpoints.to_vec()).ttl(ttl))
            .map_err(|e| e.to_string())?;
        Self::with(client, ttl).await
    }

    /// A client with a new session of `ttl` that shares `base`'s connections.
    pub async fn sharing(base: &Client, ttl: Duration) -> Result<Self, String> {
        Self::with(base.fork(), ttl).await
    }

    async fn with(client: Client, ttl: Duration) -> Result<Self, String> {
        let session = client
            .create_session(ttl, Duration::ZERO, "bench")
            .await
            .map_err(|e| e.to_string())?;
        Ok(RaftLockClient { client, session })
    }
}

impl LockClient for RaftLockClient {
    type Held = (String, u64);

    async fn acquire(&self, name: &str) -> Result<(String, u64), String> {
        let id = self.client.new_request_id();
        match self
            .client
            .acquire_as(&self.session, name, WAIT, 0, &id)
            .await
            .map_err(|e| e.to_string())?
        {
            AcquireResult::Acquired(a) => Ok((name.to_string(), a.token)),
            AcquireResult::NotAcquired(n) => Err(format!("{name} not acquired: {}", n.reason)),
        }
    }

    async fn release(&self, (name, token): (String, u64)) -> Result<(), String> {
        self.client
            .release_as(&self.session, &name, token)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// An etcd client with a lease of its own.
pub struct EtcdClient {
    locks: pb::v3lock::lock_client::LockClient<tonic::transport::Channel>,
    lease: i64,
}

impl EtcdClient {
    /// A client of the member at `url` with a new lease of `ttl`.
    pub async fn connect(url: &str, ttl: Duration) -> Result<Self, String> {
        let channel = etcd::channel(url).map_err(|e| e.to_string())?;
        Self::on(channel, ttl).await
    }

    /// A client with a new lease of `ttl` on an existing connection.
    pub async fn on(channel: tonic::transport::Channel, ttl: Duration) -> Result<Self, String> {
        let mut leases = pb::lease_client::LeaseClient::new(channel.clone());
        let granted = leases
            .lease_grant(pb::LeaseGrantRequest {
                ttl: i64::try_from(ttl.as_secs()).unwrap_or(60),
                id: 0,
            })
            .await
            .map_err(|e| e.to_string())?
            .into_inner();
        Ok(EtcdClient {
            locks: pb::v3lock::lock_client::LockClient::new(channel),
            lease: granted.id,
        })
    }
}

impl LockClient for EtcdClient {
    type Held = Vec<u8>;

    async fn acquire(&self, name: &str) -> Result<Vec<u8>, String> {
        let mut locks = self.locks.clone();
        let r = locks
            .lock(pb::v3lock::LockRequest {
                name: name.as_bytes().to_vec(),
                lease: self.lease,
            })
            .await
            .map_err(|e| e.to_string())?;
        Ok(r.into_inner().key)
    }

    async fn release(&self, key: Vec<u8>) -> Result<(), String> {
        let mut locks = self.locks.clone();
        locks
            .unlock(pb::v3lock::UnlockRequest { key })
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// A running RaftLock cluster of three `raftlock server` processes.
pub struct RaftLockCluster {
    /// The server processes (dropped first).
    pub cluster: LocalCluster,
    _dir: tempfile::TempDir,
}

impl RaftLockCluster {
    /// Starts three servers of `binary` with `extra` flags in a new directory inside
    /// `parent`; waits for a leader.
    pub async fn start(
        binary: &Path,
        parent: Option<&Path>,
        extra: &[String],
    ) -> Result<RaftLockCluster, Box<dyn Error>> {
        let dir = crate::storage::temp_dir(parent)?;
        machine::print_directory(dir.path());
        let cluster = raftlock::cluster::start(binary, dir.path(), 3, extra)
            .map_err(|e| format!("starting {}: {e}", binary.display()))?;
        let c = RaftLockCluster { cluster, _dir: dir };
        c.cluster
            .wait_for_leader(Duration::from_secs(20))
            .await
            .ok_or("the RaftLock cluster elected no leader within 20 s")?;
        Ok(c)
    }

    /// Client addresses, the leader's first.
    pub async fn endpoints(&self) -> Result<Vec<String>, Box<dyn Error>> {
        let leader = self
            .cluster
            .wait_for_leader(Duration::from_secs(20))
            .await
            .ok_or("the RaftLock cluster has no leader")?;
        let mut all: Vec<String> = self
            .cluster
            .nodes()
            .iter()
            .map(|n| n.http.to_string())
            .collect();
        all.rotate_left(leader);
        Ok(all)
    }

    /// The servers' pids.
    pub fn pids(&self) -> Vec<u32> {
        self.cluster
            .nodes()
            .iter()
            .filter_map(|n| n.pid())
            .collect()
    }

    /// Total CPU time the servers used so far.
    pub fn cpu_time(&self) -> Option<Duration> {
        self.pids().into_iter().map(machine::cpu_time_of).sum()
    }
}

/// Either system, for the report.
pub enum System<'a> {
    /// RaftLock.
    RaftLock(&'a RaftLockCluster),
    /// etcd.
    Etcd(&'a EtcdCluster),
}

impl System<'_> {
    /// The system's name in tables.
    pub fn name(&self) -> &'static str {
        match self {
            System::RaftLock(_) => "RaftLock",
            System::Etcd(_) => "etcd 3.4",
        }
    }

    /// Total CPU time its processes used so far.
    pub fn cpu_time(&self) -> Option<Duration> {
        match self {
            System::RaftLock(c) => c.cpu_time(),
            System::Etcd(c) => c.cpu_time(),
        }
    }
}

/// RaftLock's sessions, created through the client and renewed over keep-alive streams
/// to the leader.
pub struct RaftLockSessions {
    client: Client,
    leader: raftlock::proto::api::raft_lock_client::RaftLockClient<tonic::transport::Channel>,
    status_url: String,
    http: reqwest::Client,
}

impl RaftLockSessions {
    /// Sessions of the cluster whose endpoints are `endpoints`, the leader first.
    pub fn new(endpoints: &[String]) -> Result<Self, Box<dyn Error>> {
        let leader = endpoints.first().ok_or("no endpoints")?;
        let channel = etcd::channel(&format!("http://{leader}"))?;
        Ok(RaftLockSessions {
            client: Client::new(ClientOptions::new(endpoints.to_vec()))?,
            leader: raftlock::proto::api::raft_lock_client::RaftLockClient::new(channel),
            status_url: format!("http://{leader}/status"),
            http: reqwest::Client::new(),
        })
    }
}

impl super::sessions::KeepAlive for RaftLockSessions {
    type Id = String;

    async fn create(&self, ttl: Duration) -> Result<String, String> {
        self.client
            .create_session(ttl, Duration::ZERO, "bench")
            .await
            .map_err(|e| e.to_string())
    }

    async fn open(
        &self,
    ) -> Result<
        (
            tokio::sync::mpsc::Sender<String>,
            super::sessions::Answers<String>,
        ),
        String,
    > {
        use tokio_stream::StreamExt;
        let (tx, rx) = tokio::sync::mpsc::channel::<String>(16_384);
        let requests = tokio_stream::wrappers::ReceiverStream::new(rx)
            .map(|session| raftlock::proto::api::KeepAliveRequest { session });
        let answers = self
            .leader
            .clone()
            .keep_alive(requests)
            .await
            .map_err(|e| e.to_string())?
            .into_inner()
            .map(|a| {
                a.map(|a| {
                    let alive = !a.expired && a.ttl_ms > 0;
                    (a.session, alive)
                })
                .map_err(|e| e.to_string())
            });
        Ok((tx, Box::pin(answers)))
    }

    async fn alive(&self) -> Option<u64> {
        let body = self
            .http
            .get(&self.status_url)
            .send()
            .await
            .ok()?
            .bytes()
            .await
            .ok()?;
        let v: serde_json::Value = serde_json::from_slice(&body).ok()?;
        v["lock_service"]["sessions"].as_u64()
    }
}

/// etcd's leases, granted and renewed over keep-alive streams to the leader.
pub struct EtcdSessions {
    leases: pb::lease_client::LeaseClient<tonic::transport::Channel>,
}

impl EtcdSessions {
    /// Leases of the member at `leader_url`.
    pub fn new(leader_url: &str) -> Result<Self, Box<dyn Error>> {
        Ok(EtcdSessions {
            leases: pb::lease_client::LeaseClient::new(etcd::channel(leader_url)?),
        })
    }
}

impl super::sessions::KeepAlive for EtcdSessions {
    type Id = i64;

    async fn create(&self, ttl: Duration) -> Result<i64, String> {
        let r = self
            .leases
            .clone()
            .lease_grant(pb::LeaseGrantRequest {
                ttl: i64::try_from(ttl.as_secs()).unwrap_or(10),
                id: 0,
            })
            .await
            .map_err(|e| e.to_string())?
            .into_inner();
        if r.error.is_empty() {
            Ok(r.id)
        } else {
            Err(r.error)
        }
    }

    async fn open(
        &self,
    ) -> Result<
        (
            tokio::sync::mpsc::Sender<i64>,
            super::sessions::Answers<i64>,
        ),
        String,
    > {
        use tokio_stream::StreamExt;
        let (tx, rx) = tokio::sync::mpsc::channel::<i64>(16_384);
        let requests = tokio_stream::wrappers::ReceiverStream::new(rx)
            .map(|id| pb::LeaseKeepAliveRequest { id });
        // etcd (grpc-go) sends a stream's response headers only with its first answer, so
        // the call cannot be awaited here, before anything was sent: a task opens it and
        // forwards the answers.
        let (answer_tx, answer_rx) = tokio::sync::mpsc::channel(16_384);
        let mut leases = self.leases.clone();
        tokio::spawn(async move {
            let mut answers = match leases.lease_keep_alive(requests).await {
                Ok(r) => r.into_inner(),
                Err(e) => {
                    let _ = answer_tx.send(Err(e.to_string())).await;
                    return;
                }
            };
            while let Some(a) = answers.next().await {
                let a = a.map(|a| (a.id, a.ttl > 0)).map_err(|e| e.to_string());
                if answer_tx.send(a).await.is_err() {
                    return;
                }
            }
        });
        let answers = tokio_stream::wrappers::ReceiverStream::new(answer_rx);
        Ok((tx, Box::pin(answers)))
    }

    async fn alive(&self) -> Option<u64> {
        let r = self
            .leases
            .clone()
            .lease_leases(pb::LeaseLeasesRequest {})
            .await
            .ok()?;
        Some(r.into_inner().leases.len() as u64)
    }
}
