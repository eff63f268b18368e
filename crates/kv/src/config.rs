//! `raftkv node` settings: command-line flags, an equivalent TOML file, and the mapping to
//! the library's [`Config`]. A flag given on the command line wins over the file.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use raftlock_raft::{Config, NodeId, PeerConfig};
use serde::Deserialize;

/// Default client-request timeout: a request not answered by then gets 504.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// A settings error, naming the flag or file at fault.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SettingsError(pub String);

/// Flags of `raftkv node`. Every one can also be set in the `--config` TOML file under the
/// same name with `_` for `-` (e.g. `node_id = "node-1"`, `peers = { node-1 = "..." }`).
#[derive(Args, Clone, Debug, Default)]
pub struct NodeArgs {
    /// TOML file with any of the settings below.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// This node's id; must appear in --peers.
    #[arg(long)]
    pub node_id: Option<String>,
    /// Address for peer (gRPC) traffic.
    #[arg(long, value_name = "HOST:PORT")]
    pub listen: Option<SocketAddr>,
    /// Address for the client HTTP API.
    #[arg(long, value_name = "HOST:PORT")]
    pub http: Option<SocketAddr>,
    /// Every member's peer address: `node-1=127.0.0.1:8001,node-2=...`.
    #[arg(long, value_name = "ID=HOST:PORT,...")]
    pub peers: Option<String>,
    /// Every member's client HTTP address, so that redirects name the leader's:
    /// `node-1=127.0.0.1:9001,...`.
    #[arg(long, value_name = "ID=HOST:PORT,...")]
    pub http_peers: Option<String>,
    /// Where the log, hard state and snapshots live.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Cluster identity; peers of another cluster are refused.
    #[arg(long)]
    pub cluster_id: Option<String>,
    /// Length of one tick in milliseconds (default 100).
    #[arg(long, value_name = "MS")]
    pub tick_ms: Option<u64>,
    /// Election timeout in ticks (default 10; randomized up to twice that).
    #[arg(long, value_name = "TICKS", visible_alias = "election-tick-count")]
    pub election_ticks: Option<u32>,
    /// Heartbeat interval in ticks (default 1).
    #[arg(long, value_name = "TICKS", visible_alias = "heartbeat-tick-count")]
    pub heartbeat_ticks: Option<u32>,
    /// Applied entries between snapshots (default 10000).
    #[arg(long, value_name = "ENTRIES")]
    pub snapshot_threshold: Option<u64>,
    /// Client request timeout in milliseconds (default 5000); then 504.
    #[arg(long, value_name = "MS")]
    pub request_timeout_ms: Option<u64>,
    /// Serve linearizable reads from the leader lease when it is valid (default true).
    #[arg(long, value_name = "BOOL")]
    pub lease_reads: Option<bool>,
    /// Worker threads of the node's async runtime (default: one per CPU core). Nodes that
    /// share a machine with others (a one-machine cluster, a benchmark) do better with
    /// fewer, since every extra thread adds wake-ups and context switches.
    #[arg(long, value_name = "N")]
    pub worker_threads: Option<usize>,
    /// Exit when the parent process dies (used by `raftkv demo` and tests, so that no
    /// node outlives them).
    #[arg(long, hide = true)]
    pub exit_with_parent: bool,
}

/// The file form of [`NodeArgs`].
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeFile {
    node_id: Option<String>,
    listen: Option<SocketAddr>,
    http: Option<SocketAddr>,
    peers: Option<MemberList>,
    http_peers: Option<MemberList>,
    data_dir: Option<PathBuf>,
    cluster_id: Option<String>,
    tick_ms: Option<u64>,
    election_ticks: Option<u32>,
    heartbeat_ticks: Option<u32>,
    snapshot_threshold: Option<u64>,
    request_timeout_ms: Option<u64>,
    lease_reads: Option<bool>,
    worker_threads: Option<usize>,
}

/// A member list in the file: a table (`[peers]` with `node-1 = "host:port"`) or the
/// flag's string form (`peers = "node-1=host:port,..."`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum MemberList {
    Table(BTreeMap<String, String>),
    Text(String),
}

impl MemberList {
    fn resolve(self, flag: &str) -> Result<BTreeMap<String, String>, SettingsError> {
        match self {
            MemberList::Table(members) => Ok(members),
            MemberList::Text(text) => parse_member_list(flag, &text),
        }
    }
}

/// Complete, checked settings of one node.
#[derive(Clone, Debug)]
pub struct NodeSettings {
    /// The library configuration (id, peers, timing).
    pub raft: Config,
    /// Peer gRPC listen address.
    pub listen: SocketAddr,
    /// Client HTTP listen address.
    pub http: SocketAddr,
    /// Client HTTP address of every member that has one.
    pub http_peers: BTreeMap<NodeId, String>,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Cluster identity for the peer transport.
    pub cluster_id: String,
    /// Client request timeout.
    pub request_timeout: Duration,
    /// Worker threads of the async runtime; `None` for one per core.
    pub worker_threads: Option<usize>,
    /// See [`NodeArgs::exit_with_parent`].
    pub exit_with_parent: bool,
}

/// Parses `id=host:port,id=host:port`.
pub fn parse_member_list(
    flag: &str,
    text: &str,
) -> Result<BTreeMap<String, String>, SettingsError> {
    let mut members = BTreeMap::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let Some((id, addr)) = item.split_once('=') else {
            return Err(SettingsError(format!(
                "--{flag}: `{item}` is not of the form id=host:port"
            )));
        };
        let (id, addr) = (id.trim(), addr.trim());
        if id.is_empty() || addr.is_empty() {
            return Err(SettingsError(format!(
                "--{flag}: `{item}` has an empty id or address"
            )));
        }
        if members.insert(id.to_string(), addr.to_string()).is_some() {
            return Err(SettingsError(format!("--{flag}: `{id}` is listed twice")));
        }
    }
    Ok(members)
}

fn load_file(path: &Path) -> Result<NodeFile, SettingsError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| SettingsError(format!("reading {}: {e}", path.display())))?;
    toml::from_str(&text).map_err(|e| SettingsError(format!("{}: {e}", path.display())))
}

fn required<T>(value: Option<T>, flag: &str) -> Result<T, SettingsError> {
    value.ok_or_else(|| SettingsError(format!("--{flag} is required (or set it in --config)")))
}

impl NodeArgs {
    /// Merges the flags over the `--config` file and checks the result.
    pub fn resolve(&self) -> Result<NodeSettings, SettingsError> {
        let file = match &self.config {
            Some(path) => load_file(path)?,
            None => NodeFile::default(),
        };
        let members = |flag: &str,
                       given: &Option<String>,
                       from_file: Option<MemberList>|
         -> Result<Option<BTreeMap<String, String>>, SettingsError> {
            match (given, from_file) {
                (Some(text), _) => parse_member_list(flag, text).map(Some),
                (None, Some(list)) => list.resolve(flag).map(Some),
                (None, None) => Ok(None),
            }
        };
        let node_id = required(self.node_id.clone().or(file.node_id), "node-id")?;
        let listen = required(self.listen.or(file.listen), "listen")?;
        let http = required(self.http.or(file.http), "http")?;
        let peers = required(members("peers", &self.peers, file.peers)?, "peers")?;
        let http_peers =
            members("http-peers", &self.http_peers, file.http_peers)?.unwrap_or_default();
        let data_dir = required(self.data_dir.clone().or(file.data_dir), "data-dir")?;
        let cluster_id = self
            .cluster_id
            .clone()
            .or(file.cluster_id)
            .unwrap_or_else(|| "raftkv".to_string());

        if !peers.contains_key(&node_id) {
            return Err(SettingsError(format!(
                "--peers does not list this node (`{node_id}`)"
            )));
        }
        if let Some(unknown) = http_peers.keys().find(|id| !peers.contains_key(*id)) {
            return Err(SettingsError(format!(
                "--http-peers names `{unknown}`, which is not in --peers"
            )));
        }
        let mut http_peers: BTreeMap<NodeId, String> = http_peers
            .into_iter()
            .map(|(id, addr)| (NodeId::from(id.as_str()), addr))
            .collect();
        http_peers
            .entry(NodeId::from(node_id.as_str()))
            .or_insert_with(|| http.to_string());

        let peer_list = peers
            .into_iter()
            .map(|(id, address)| PeerConfig {
                id: NodeId::from(id.as_str()),
                address,
            })
            .collect();
        let mut raft = Config::new(NodeId::from(node_id.as_str()), peer_list);
        if let Some(ms) = self.tick_ms.or(file.tick_ms) {
            raft.options.nominal_tick_interval = Duration::from_millis(ms);
        }
        if let Some(t) = self.election_ticks.or(file.election_ticks) {
            raft.options.election_tick_count = t;
        }
        if let Some(t) = self.heartbeat_ticks.or(file.heartbeat_ticks) {
            raft.options.heartbeat_tick_count = t;
        }
        if let Some(n) = self.snapshot_threshold.or(file.snapshot_threshold) {
            raft.options.snapshot_threshold = n;
            // Keep a tail of at most half the threshold so that small thresholds (tests)
            // still compact; the library requires min_entries < threshold.
            raft.options.log_compaction_min_entries =
                raft.options.log_compaction_min_entries.min(n / 2);
        }
        if let Some(lease) = self.lease_reads.or(file.lease_reads) {
            raft.feature_flags.enable_leader_lease = lease;
        }
        raft.validate()
            .map_err(|e| SettingsError(format!("{e} (from the node flags)")))?;
        let request_timeout = self
            .request_timeout_ms
            .or(file.request_timeout_ms)
            .map_or(DEFAULT_REQUEST_TIMEOUT, Duration::from_millis);
        if request_timeout.is_zero() {
            return Err(SettingsError(
                "--request-timeout-ms must be positive".into(),
            ));
        }
        let worker_threads = self.worker_threads.or(file.worker_threads);
        if let Some(n) = worker_threads {
            if !(1..=1024).contains(&n) {
                return Err(SettingsError(format!(
                    "--worker-threads must be 1..1024, not {n}"
                )));
            }
        }
        Ok(NodeSettings {
            raft,
            listen,
            http,
            http_peers,
            data_dir,
            cluster_id,
            request_timeout,
            worker_threads,
            exit_with_parent: self.exit_with_parent,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> NodeArgs {
        NodeArgs {
            node_id: Some("node-1".into()),
            listen: Some("127.0.0.1:8001".parse().unwrap()),
            http: Some("127.0.0.1:9001".parse().unwrap()),
            peers: Some("node-1=127.0.0.1:8001, node-2=127.0.0.1:8002".into()),
            http_peers: Some("node-2=127.0.0.1:9002".into()),
            data_dir: Some("./data/node-1".into()),
            ..NodeArgs::default()
        }
    }

    #[test]
    fn flags_resolve_to_a_valid_config() {
        let s = args().resolve().unwrap();
        assert_eq!(s.raft.peers.len(), 2);
        assert_eq!(s.http_peers[&NodeId::from("node-1")], "127.0.0.1:9001");
        assert_eq!(s.http_peers[&NodeId::from("node-2")], "127.0.0.1:9002");
        assert_eq!(s.cluster_id, "raftkv");
    }

    #[test]
    fn bad_member_lists_name_the_flag() {
        let mut a = args();
        a.peers = Some("node-1=127.0.0.1:8001,node-2".into());
        assert!(a.resolve().unwrap_err().0.contains("--peers"));
        let mut a = args();
        a.peers = Some("node-2=127.0.0.1:8002".into());
        assert!(a
            .resolve()
            .unwrap_err()
            .0
            .contains("does not list this node"));
        let mut a = args();
        a.http_peers = Some("node-9=127.0.0.1:9009".into());
        assert!(a.resolve().unwrap_err().0.contains("node-9"));
        let mut a = args();
        a.data_dir = None;
        assert!(a.resolve().unwrap_err().0.contains("--data-dir"));
        let mut a = args();
        a.heartbeat_ticks = Some(50);
        assert!(
            a.resolve().is_err(),
            "heartbeat must be below the election timeout"
        );
    }

    #[test]
    fn the_file_supplies_what_flags_leave_out_and_flags_win() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        std::fs::write(
            &path,
            r#"
node_id = "node-2"
listen = "127.0.0.1:8002"
http = "127.0.0.1:9002"
data_dir = "/tmp/x"
election_ticks = 20
snapshot_threshold = 100
worker_threads = 1
[peers]
node-1 = "127.0.0.1:8001"
node-2 = "127.0.0.1:8002"
"#,
        )
        .unwrap();
        let a = NodeArgs {
            config: Some(path.clone()),
            election_ticks: Some(15),
            ..NodeArgs::default()
        };
        let s = a.resolve().unwrap();
        assert_eq!(s.raft.id, NodeId::from("node-2"));
        assert_eq!(s.raft.options.election_tick_count, 15);
        assert_eq!(s.raft.options.snapshot_threshold, 100);
        assert!(s.raft.options.log_compaction_min_entries < 100);
        assert_eq!(s.worker_threads, Some(1));
        let zero = NodeArgs {
            config: Some(path.clone()),
            worker_threads: Some(0),
            ..NodeArgs::default()
        };
        assert!(zero.resolve().unwrap_err().0.contains("--worker-threads"));

        std::fs::write(
            &path,
            r#"
node_id = "node-1"
listen = "127.0.0.1:8001"
http = "127.0.0.1:9001"
data_dir = "/tmp/x"
peers = "node-1=127.0.0.1:8001,node-2=127.0.0.1:8002"
http_peers = "node-2=127.0.0.1:9002"
"#,
        )
        .unwrap();
        let s = NodeArgs {
            config: Some(path.clone()),
            ..NodeArgs::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(
            s.raft.peers.len(),
            2,
            "member lists may be written as the flag's string"
        );
        assert_eq!(s.http_peers[&NodeId::from("node-2")], "127.0.0.1:9002");

        std::fs::write(&path, "node_id = \"a\"\nbogus = 1\n").unwrap();
        let a = NodeArgs {
            config: Some(path),
            ..NodeArgs::default()
        };
        assert!(a.resolve().unwrap_err().0.contains("bogus"));
    }
}
