//! `raftlock server` settings: the node flags every server shares
//! ([`NodeFlags`]), the client API's addresses, and the lock service's limits. Each can also
//! be set in the `--config` TOML file under the same name with `_` for `-`; a flag given
//! on the command line wins over the file.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;
use raftlock_raft::NodeId;
use raftlock_serverkit::settings::{client_addresses, own_file, MemberList, NodeFlags};
pub use raftlock_serverkit::settings::{NodeSettings, SettingsError};
use serde::Deserialize;

use crate::machine::limits::{DEFAULT_MAX_SESSIONS, DEFAULT_MAX_WAITERS};

/// Default pause between two renewal entries: keep-alives that arrive meanwhile share the
/// next one, so the log carries at most one renewal entry per interval however many
/// sessions there are.
pub const DEFAULT_KEEPALIVE_INTERVAL: Duration = Duration::from_millis(50);
/// Default number of recent lock events a node keeps for `GET /v1/events`.
pub const DEFAULT_EVENT_BUFFER: usize = 100_000;

/// Flags of `raftlock server`.
#[derive(Args, Clone, Debug, Default)]
pub struct ServerArgs {
    #[command(flatten)]
    /// The settings every node has.
    pub node: NodeFlags,
    /// Address of the client API: HTTP/JSON and gRPC on one port.
    #[arg(long, value_name = "HOST:PORT")]
    pub api: Option<SocketAddr>,
    /// Every member's client API address, so that redirects and leader hints name the
    /// leader's: `node-1=127.0.0.1:7001,...`.
    #[arg(long, value_name = "ID=HOST:PORT,...")]
    pub api_peers: Option<String>,
    /// Most sessions that may wait for one lock (default 1024).
    #[arg(long, value_name = "N")]
    pub max_waiters: Option<u32>,
    /// Most live sessions in the cluster (default 1000000).
    #[arg(long, value_name = "N")]
    pub max_sessions: Option<u64>,
    /// Milliseconds between two renewal entries on the leader (default 50).
    #[arg(long, value_name = "MS")]
    pub keepalive_interval_ms: Option<u64>,
    /// Recent lock events kept for `GET /v1/events` (default 100000).
    #[arg(long, value_name = "N")]
    pub event_buffer: Option<usize>,
}

/// The keys of the file that are raftlock's own.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LockFile {
    api: Option<SocketAddr>,
    api_peers: Option<MemberList>,
    max_waiters: Option<u32>,
    max_sessions: Option<u64>,
    keepalive_interval_ms: Option<u64>,
    event_buffer: Option<usize>,
}

const OWN_KEYS: [&str; 6] = [
    "api",
    "api_peers",
    "max_waiters",
    "max_sessions",
    "keepalive_interval_ms",
    "event_buffer",
];

/// Complete, checked settings of one lock server.
#[derive(Clone, Debug)]
pub struct ServerSettings {
    /// What every node has: the library configuration, peer address, data directory,
    /// timeouts.
    pub node: NodeSettings,
    /// Client API listen address.
    pub api: SocketAddr,
    /// Client API address of every member that has one.
    pub api_peers: BTreeMap<NodeId, String>,
    /// Limit on waiters per lock.
    pub max_waiters: u32,
    /// Limit on live sessions.
    pub max_sessions: u64,
    /// Pause between renewal entries.
    pub keepalive_interval: Duration,
    /// Recent events kept.
    pub event_buffer: usize,
}

impl ServerArgs {
    /// Merges the flags over the `--config` file and checks the result.
    pub fn resolve(&self) -> Result<ServerSettings, SettingsError> {
        let (common, own) = self.node.load_file(&OWN_KEYS)?;
        let file: LockFile = own_file(own, self.node.config.as_deref())?;
        let node = self.node.resolve(common, "raftlock")?;
        let api = self
            .api
            .or(file.api)
            .ok_or_else(|| SettingsError("--api is required (or set it in --config)".into()))?;
        let api_peers = client_addresses(
            "api-peers",
            self.api_peers.as_deref(),
            file.api_peers,
            &node,
            api,
        )?;
        let max_waiters = self
            .max_waiters
            .or(file.max_waiters)
            .unwrap_or(DEFAULT_MAX_WAITERS);
        if max_waiters == 0 {
            return Err(SettingsError("--max-waiters must be at least 1".into()));
        }
        let max_sessions = self
            .max_sessions
            .or(file.max_sessions)
            .unwrap_or(DEFAULT_MAX_SESSIONS);
        if max_sessions == 0 {
            return Err(SettingsError("--max-sessions must be at least 1".into()));
        }
        let keepalive_ms = self
            .keepalive_interval_ms
            .or(file.keepalive_interval_ms)
            .map_or(DEFAULT_KEEPALIVE_INTERVAL.as_millis() as u64, |ms| ms);
        if !(1..=1_000).contains(&keepalive_ms) {
            return Err(SettingsError(format!(
                "--keepalive-interval-ms must be 1..=1000 (well below the shortest TTL), not {keepalive_ms}"
            )));
        }
        let event_buffer = self
            .event_buffer
            .or(file.event_buffer)
            .unwrap_or(DEFAULT_EVENT_BUFFER);
        if event_buffer > 10_000_000 {
            return Err(SettingsError(format!(
                "--event-buffer must be at most 10000000, not {event_buffer}"
            )));
        }
        Ok(ServerSettings {
            node,
            api,
            api_peers,
            max_waiters,
            max_sessions,
            keepalive_interval: Duration::from_millis(keepalive_ms),
            event_buffer,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> ServerArgs {
        ServerArgs {
            node: NodeFlags {
                node_id: Some("n1".into()),
                listen: Some("127.0.0.1:8001".parse().unwrap()),
                peers: Some("n1=127.0.0.1:8001,n2=127.0.0.1:8002,n3=127.0.0.1:8003".into()),
                data_dir: Some("./data/n1".into()),
                ..NodeFlags::default()
            },
            api: Some("127.0.0.1:7001".parse().unwrap()),
            api_peers: Some("n2=127.0.0.1:7002,n3=127.0.0.1:7003".into()),
            ..ServerArgs::default()
        }
    }

    #[test]
    fn flags_resolve_with_the_lock_service_defaults() {
        let s = args().resolve().unwrap();
        assert_eq!(s.node.cluster_id, "raftlock");
        assert_eq!(s.api_peers[&NodeId::from("n1")], "127.0.0.1:7001");
        assert_eq!(s.api_peers[&NodeId::from("n3")], "127.0.0.1:7003");
        assert_eq!(s.max_waiters, DEFAULT_MAX_WAITERS);
        assert_eq!(s.keepalive_interval, DEFAULT_KEEPALIVE_INTERVAL);
    }

    #[test]
    fn bad_limits_name_their_flag() {
        for (mut a, flag) in [
            (args(), "--api"),
            (args(), "--max-waiters"),
            (args(), "--keepalive-interval-ms"),
            (args(), "--api-peers"),
        ] {
            match flag {
                "--api" => a.api = None,
                "--max-waiters" => a.max_waiters = Some(0),
                "--keepalive-interval-ms" => a.keepalive_interval_ms = Some(0),
                _ => a.api_peers = Some("n9=127.0.0.1:1".into()),
            }
            let e = a.resolve().unwrap_err();
            assert!(e.0.contains(flag), "{e}");
        }
    }

    #[test]
    fn the_file_takes_the_same_names() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n1.toml");
        std::fs::write(
            &path,
            r#"
node_id = "n1"
listen = "127.0.0.1:8001"
api = "127.0.0.1:7001"
data_dir = "/tmp/n1"
max_waiters = 7
[peers]
n1 = "127.0.0.1:8001"
n2 = "127.0.0.1:8002"
[api_peers]
n2 = "127.0.0.1:7002"
"#,
        )
        .unwrap();
        let a = ServerArgs {
            node: NodeFlags {
                config: Some(path.clone()),
                ..NodeFlags::default()
            },
            ..ServerArgs::default()
        };
        let s = a.resolve().unwrap();
        assert_eq!(s.max_waiters, 7);
        assert_eq!(s.api_peers[&NodeId::from("n2")], "127.0.0.1:7002");
        std::fs::write(&path, "node_id = \"n1\"\nmax_waiter = 7\n").unwrap();
        assert!(a.resolve().unwrap_err().0.contains("max_waiter"));
    }
}
