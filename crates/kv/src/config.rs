//! `raftkv node` settings: command-line flags, an equivalent TOML file, and the mapping to
//! the library's `Config`. A flag given on the command line wins over the file.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use clap::Args;
use raftlock_raft::NodeId;
use raftlock_serverkit::settings::{client_addresses, own_file, MemberList, NodeFlags};
pub use raftlock_serverkit::settings::{NodeSettings as NodeCommon, SettingsError};
use serde::Deserialize;

/// Flags of `raftkv node`: the [`NodeFlags`] every server takes, and the client HTTP API's
/// addresses. Every one can also be set in the `--config` TOML file under the same name
/// with `_` for `-` (e.g. `node_id = "node-1"`, `http_peers = { node-1 = "..." }`).
#[derive(Args, Clone, Debug, Default)]
pub struct NodeArgs {
    #[command(flatten)]
    /// The settings every node has.
    pub node: NodeFlags,
    /// Address for the client HTTP API.
    #[arg(long, value_name = "HOST:PORT")]
    pub http: Option<SocketAddr>,
    /// Every member's client HTTP address, so that redirects name the leader's:
    /// `node-1=127.0.0.1:9001,...`.
    #[arg(long, value_name = "ID=HOST:PORT,...")]
    pub http_peers: Option<String>,
}

/// The keys of the file that are raftkv's own.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct KvFile {
    http: Option<SocketAddr>,
    http_peers: Option<MemberList>,
}

/// Complete, checked settings of one node.
#[derive(Clone, Debug)]
pub struct NodeSettings {
    /// What every node has: the library configuration, peer address, data directory,
    /// timeouts.
    pub node: NodeCommon,
    /// Client HTTP listen address.
    pub http: SocketAddr,
    /// Client HTTP address of every member that has one.
    pub http_peers: BTreeMap<NodeId, String>,
}

impl NodeArgs {
    /// Merges the flags over the `--config` file and checks the result.
    pub fn resolve(&self) -> Result<NodeSettings, SettingsError> {
        let (common, own) = self.node.load_file(&["http", "http_peers"])?;
        let file: KvFile = own_file(own, self.node.config.as_deref())?;
        let node = self.node.resolve(common, "raftkv")?;
        let http = self
            .http
            .or(file.http)
            .ok_or_else(|| SettingsError("--http is required (or set it in --config)".into()))?;
        let http_peers = client_addresses(
            "http-peers",
            self.http_peers.as_deref(),
            file.http_peers,
            &node,
            http,
        )?;
        Ok(NodeSettings {
            node,
            http,
            http_peers,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> NodeArgs {
        NodeArgs {
            node: NodeFlags {
                node_id: Some("node-1".into()),
                listen: Some("127.0.0.1:8001".parse().unwrap()),
                peers: Some("node-1=127.0.0.1:8001, node-2=127.0.0.1:8002".into()),
                data_dir: Some("./data/node-1".into()),
                ..NodeFlags::default()
            },
            http: Some("127.0.0.1:9001".parse().unwrap()),
            http_peers: Some("node-2=127.0.0.1:9002".into()),
        }
    }

    #[test]
    fn flags_resolve_to_a_valid_config() {
        let s = args().resolve().unwrap();
        assert_eq!(s.node.raft.peers.len(), 2);
        assert_eq!(s.http_peers[&NodeId::from("node-1")], "127.0.0.1:9001");
        assert_eq!(s.http_peers[&NodeId::from("node-2")], "127.0.0.1:9002");
        assert_eq!(s.node.cluster_id, "raftkv");
        let mut a = args();
        a.http_peers = Some("node-9=127.0.0.1:9009".into());
        assert!(a.resolve().unwrap_err().0.contains("node-9"));
        let mut a = args();
        a.http = None;
        assert!(a.resolve().unwrap_err().0.contains("--http"));
    }

    #[test]
    fn the_file_carries_the_http_settings_too() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
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
        let from_file = |path: &std::path::Path| NodeArgs {
            node: NodeFlags {
                config: Some(path.to_path_buf()),
                ..NodeFlags::default()
            },
            ..NodeArgs::default()
        };
        let s = from_file(&path).resolve().unwrap();
        assert_eq!(s.http, "127.0.0.1:9001".parse().unwrap());
        assert_eq!(s.http_peers[&NodeId::from("node-2")], "127.0.0.1:9002");

        std::fs::write(&path, "node_id = \"a\"\nbogus = 1\n").unwrap();
        assert!(from_file(&path).resolve().unwrap_err().0.contains("bogus"));
    }
}
