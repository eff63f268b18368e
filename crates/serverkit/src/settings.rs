//! A node's settings: command-line flags, an equivalent TOML file, and the mapping to the
//! library's [`Config`]. A flag given on the command line wins over the file.
//!
//! [`NodeFlags`] holds what every server shares (id, peer address, members, data
//! directory, timing); a server flattens it into its own flags and adds its client
//! address and the members' client addresses (see [`client_addresses`]). The TOML file
//! takes the same names with `_` for `-`; [`NodeFlags::load_file`] hands the server the
//! keys that are its own.

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

/// The flags every node takes. Every one can also be set in the `--config` TOML file
/// under the same name with `_` for `-` (e.g. `node_id = "node-1"`,
/// `peers = { node-1 = "..." }`).
#[derive(Args, Clone, Debug, Default)]
pub struct NodeFlags {
    /// TOML file with any of the settings.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// This node's id; must appear in --peers when bootstrapping a cluster. Never reuse
    /// the id of a removed node.
    #[arg(long)]
    pub node_id: Option<String>,
    /// Address for peer (gRPC) traffic.
    #[arg(long, value_name = "HOST:PORT")]
    pub listen: Option<SocketAddr>,
    /// Every member's peer address, to bootstrap a new cluster:
    /// `node-1=127.0.0.1:8001,node-2=...`. Only a node with an empty data directory uses
    /// it; afterwards the replicated configuration rules. Leave it out to start a node that
    /// waits to be added to a running cluster (see --join).
    #[arg(long, value_name = "ID=HOST:PORT,...")]
    pub peers: Option<String>,
    /// Join a running cluster through any member's client address: the node asks to be
    /// added (as a learner, then a voter once caught up) and keeps asking until it is.
    #[arg(long, value_name = "HOST:PORT", conflicts_with = "peers")]
    pub join: Option<String>,
    /// The peer address other members dial to reach this node (default: --listen).
    #[arg(long, value_name = "HOST:PORT")]
    pub advertise: Option<String>,
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
    /// Exit when the parent process dies (used by demos and tests, so that no node
    /// outlives them).
    #[arg(long, hide = true)]
    pub exit_with_parent: bool,
}

/// The file form of [`NodeFlags`].
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeFile {
    node_id: Option<String>,
    listen: Option<SocketAddr>,
    peers: Option<MemberList>,
    join: Option<String>,
    advertise: Option<String>,
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
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum MemberList {
    /// `[peers]` with `node-1 = "host:port"`.
    Table(BTreeMap<String, String>),
    /// `"node-1=host:port,..."`.
    Text(String),
}

impl MemberList {
    /// The members, checked as the flag `flag` would be.
    pub fn resolve(self, flag: &str) -> Result<BTreeMap<String, String>, SettingsError> {
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
    /// The peer address other members dial (`--advertise`, else `--listen`).
    pub advertise: String,
    /// A member's client address to join through (`--join`).
    pub join: Option<String>,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Cluster identity for the peer transport.
    pub cluster_id: String,
    /// Client request timeout.
    pub request_timeout: Duration,
    /// Worker threads of the async runtime; `None` for one per core.
    pub worker_threads: Option<usize>,
    /// See [`NodeFlags::exit_with_parent`].
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

fn missing(flag: &str) -> SettingsError {
    SettingsError(format!("--{flag} is required (or set it in --config)"))
}

fn required<T>(value: Option<T>, flag: &str) -> Result<T, SettingsError> {
    value.ok_or_else(|| missing(flag))
}

/// Reads a TOML file and splits off the keys in `own`: those go back to the caller as a
/// table, the rest must be [`NodeFile`]'s (an unknown key is an error naming it).
fn split_file(path: &Path, own: &[&str]) -> Result<(NodeFile, toml::Table), SettingsError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| SettingsError(format!("reading {}: {e}", path.display())))?;
    let mut table: toml::Table =
        toml::from_str(&text).map_err(|e| SettingsError(format!("{}: {e}", path.display())))?;
    let mut mine = toml::Table::new();
    for key in own {
        if let Some(value) = table.remove(*key) {
            mine.insert((*key).to_string(), value);
        }
    }
    let common = NodeFile::deserialize(toml::Value::Table(table))
        .map_err(|e| SettingsError(format!("{}: {e}", path.display())))?;
    Ok((common, mine))
}

/// Deserializes the server's own keys (from [`NodeFlags::load_file`]) into its file type.
pub fn own_file<T: serde::de::DeserializeOwned>(
    table: toml::Table,
    path: Option<&Path>,
) -> Result<T, SettingsError> {
    let name = path.map_or_else(|| "--config".to_string(), |p| p.display().to_string());
    T::deserialize(toml::Value::Table(table)).map_err(|e| SettingsError(format!("{name}: {e}")))
}

impl NodeFlags {
    /// Reads `--config` if given: the shared settings, and a table of the keys in `own`
    /// for the server to read itself (see [`own_file`]).
    pub fn load_file(&self, own: &[&str]) -> Result<(NodeFile, toml::Table), SettingsError> {
        match &self.config {
            Some(path) => split_file(path, own),
            None => Ok((NodeFile::default(), toml::Table::new())),
        }
    }

    /// Merges the flags over `file` and checks the result; `default_cluster_id` names the
    /// cluster when neither sets it.
    pub fn resolve(
        &self,
        file: NodeFile,
        default_cluster_id: &str,
    ) -> Result<NodeSettings, SettingsError> {
        let node_id = required(self.node_id.clone().or(file.node_id), "node-id")?;
        let listen = required(self.listen.or(file.listen), "listen")?;
        let join = self.join.clone().or(file.join);
        let peers = match (&self.peers, file.peers) {
            (Some(text), _) => parse_member_list("peers", text)?,
            (None, Some(list)) => list.resolve("peers")?,
            // No peers: a node that waits to be added to a running cluster.
            (None, None) => BTreeMap::new(),
        };
        if join.is_some() && !peers.is_empty() {
            return Err(SettingsError(
                "--join and --peers exclude each other: --peers bootstraps a new cluster, \
                 --join adds this node to a running one"
                    .into(),
            ));
        }
        let advertise = match self.advertise.clone().or(file.advertise) {
            Some(a) => a,
            None => match peers.get(&node_id) {
                Some(own) => own.clone(),
                None if listen.ip().is_unspecified() => {
                    return Err(SettingsError(format!(
                        "--listen {listen} is not an address others can dial: set --advertise"
                    )))
                }
                None => listen.to_string(),
            },
        };
        let data_dir = required(self.data_dir.clone().or(file.data_dir), "data-dir")?;
        let cluster_id = self
            .cluster_id
            .clone()
            .or(file.cluster_id)
            .unwrap_or_else(|| default_cluster_id.to_string());
        if !peers.is_empty() && !peers.contains_key(&node_id) {
            return Err(SettingsError(format!(
                "--peers does not list this node (`{node_id}`)"
            )));
        }
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
            advertise,
            join,
            data_dir,
            cluster_id,
            request_timeout,
            worker_threads,
            exit_with_parent: self.exit_with_parent,
        })
    }
}

/// Every member's client address, from a flag (`flag`, e.g. `http-peers`) or the file,
/// checked against the members; this node's own address is added when missing. Redirects
/// and leader hints name the leader by this address.
pub fn client_addresses(
    flag: &str,
    given: Option<&str>,
    from_file: Option<MemberList>,
    node: &NodeSettings,
    own: SocketAddr,
) -> Result<BTreeMap<NodeId, String>, SettingsError> {
    let listed = match (given, from_file) {
        (Some(text), _) => parse_member_list(flag, text)?,
        (None, Some(list)) => list.resolve(flag)?,
        (None, None) => BTreeMap::new(),
    };
    let is_member = |id: &str| node.raft.peers.iter().any(|p| p.id.as_str() == id);
    if let Some(unknown) = listed.keys().find(|id| !is_member(id)) {
        return Err(SettingsError(format!(
            "--{flag} names `{unknown}`, which is not in --peers"
        )));
    }
    let mut addresses: BTreeMap<NodeId, String> = listed
        .into_iter()
        .map(|(id, addr)| (NodeId::from(id.as_str()), addr))
        .collect();
    addresses
        .entry(node.raft.id.clone())
        .or_insert_with(|| own.to_string());
    Ok(addresses)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags() -> NodeFlags {
        NodeFlags {
            node_id: Some("node-1".into()),
            listen: Some("127.0.0.1:8001".parse().unwrap()),
            peers: Some("node-1=127.0.0.1:8001, node-2=127.0.0.1:8002".into()),
            data_dir: Some("./data/node-1".into()),
            ..NodeFlags::default()
        }
    }

    fn resolve(f: &NodeFlags) -> Result<NodeSettings, SettingsError> {
        let (file, _) = f.load_file(&[])?;
        f.resolve(file, "test")
    }

    #[test]
    fn without_peers_a_node_waits_to_join() {
        let mut f = flags();
        f.peers = None;
        f.join = Some("127.0.0.1:9001".into());
        let s = resolve(&f).unwrap();
        assert!(s.raft.peers.is_empty());
        assert_eq!(s.advertise, "127.0.0.1:8001");
        assert_eq!(s.join.as_deref(), Some("127.0.0.1:9001"));
        f.advertise = Some("10.0.0.7:8001".into());
        assert_eq!(resolve(&f).unwrap().advertise, "10.0.0.7:8001");
    }

    #[test]
    fn flags_resolve_to_a_valid_config() {
        let s = resolve(&flags()).unwrap();
        assert_eq!(s.raft.peers.len(), 2);
        assert_eq!(s.advertise, "127.0.0.1:8001");
        assert_eq!(s.cluster_id, "test");
        let own = "127.0.0.1:9001".parse().unwrap();
        let addrs =
            client_addresses("http-peers", Some("node-2=127.0.0.1:9002"), None, &s, own).unwrap();
        assert_eq!(addrs[&NodeId::from("node-1")], "127.0.0.1:9001");
        assert_eq!(addrs[&NodeId::from("node-2")], "127.0.0.1:9002");
        let err = client_addresses("http-peers", Some("node-9=127.0.0.1:9009"), None, &s, own)
            .unwrap_err();
        assert!(err.0.contains("node-9") && err.0.contains("--http-peers"));
    }

    #[test]
    fn bad_member_lists_name_the_flag() {
        let mut f = flags();
        f.peers = Some("node-1=127.0.0.1:8001,node-2".into());
        assert!(resolve(&f).unwrap_err().0.contains("--peers"));
        let mut f = flags();
        f.peers = Some("node-2=127.0.0.1:8002".into());
        assert!(resolve(&f)
            .unwrap_err()
            .0
            .contains("does not list this node"));
        let mut f = flags();
        f.data_dir = None;
        assert!(resolve(&f).unwrap_err().0.contains("--data-dir"));
        let mut f = flags();
        f.join = Some("127.0.0.1:9001".into());
        assert!(resolve(&f).unwrap_err().0.contains("--join"));
        let mut f = flags();
        f.peers = None;
        f.listen = Some("0.0.0.0:8001".parse().unwrap());
        assert!(resolve(&f).unwrap_err().0.contains("--advertise"));
        let mut f = flags();
        f.heartbeat_ticks = Some(50);
        assert!(
            resolve(&f).is_err(),
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
        let f = NodeFlags {
            config: Some(path.clone()),
            election_ticks: Some(15),
            ..NodeFlags::default()
        };
        let (file, own) = f.load_file(&["http"]).unwrap();
        assert_eq!(own["http"].as_str(), Some("127.0.0.1:9002"));
        let s = f.resolve(file, "x").unwrap();
        assert_eq!(s.raft.id, NodeId::from("node-2"));
        assert_eq!(s.raft.options.election_tick_count, 15);
        assert_eq!(s.raft.options.snapshot_threshold, 100);
        assert!(s.raft.options.log_compaction_min_entries < 100);
        assert_eq!(s.worker_threads, Some(1));
        let zero = NodeFlags {
            config: Some(path.clone()),
            worker_threads: Some(0),
            ..NodeFlags::default()
        };
        let (file, _) = zero.load_file(&["http"]).unwrap();
        assert!(zero
            .resolve(file, "x")
            .unwrap_err()
            .0
            .contains("--worker-threads"));

        std::fs::write(
            &path,
            r#"
node_id = "node-1"
listen = "127.0.0.1:8001"
data_dir = "/tmp/x"
peers = "node-1=127.0.0.1:8001,node-2=127.0.0.1:8002"
"#,
        )
        .unwrap();
        let f = NodeFlags {
            config: Some(path.clone()),
            ..NodeFlags::default()
        };
        let (file, _) = f.load_file(&[]).unwrap();
        assert_eq!(
            f.resolve(file, "x").unwrap().raft.peers.len(),
            2,
            "member lists may be written as the flag's string"
        );

        std::fs::write(&path, "node_id = \"a\"\nbogus = 1\n").unwrap();
        let f = NodeFlags {
            config: Some(path),
            ..NodeFlags::default()
        };
        assert!(f.load_file(&[]).unwrap_err().0.contains("bogus"));
    }
}
