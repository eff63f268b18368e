//! `raftkv node`: one replicated key-value node — a Raft node on [`FileStorage`] and
//! [`GrpcNetwork`], with the client HTTP API in front of it.

mod reply;
mod routes;

use axum::serve::ListenerExt;
use raftlock_raft::{
    FileStorage, FileStorageOptions, GrpcNetwork, GrpcOptions, PrometheusMetrics, RaftBuilder,
};
use raftlock_serverkit::members::{
    check_still_member, publish_client_addresses, stop_signals, ClientAddresses, JoinRequest,
    MembersApi,
};
use raftlock_serverkit::signals::log_leader_changes;
use tokio::net::TcpListener;

pub use reply::ApiError;
pub use routes::{router, AppState, INDEX_HEADER};

use crate::config::NodeSettings;
use crate::store::KeyValueStore;

/// Why a node could not run.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The Raft node could not be built or started (storage, config, transport).
    #[error("raft: {0}")]
    Raft(#[from] raftlock_raft::Error),
    /// The data directory could not be opened or recovered.
    #[error("opening the data directory {path}: {source}")]
    Storage {
        /// The directory.
        path: String,
        /// What went wrong.
        source: raftlock_raft::StorageError,
    },
    /// The data directory says this node was removed from the cluster, or the cluster
    /// refused to add it (`--join`).
    #[error("{0}")]
    Membership(String),
    /// The client HTTP address could not be bound or served.
    #[error("client HTTP API on {addr}: {source}")]
    Http {
        /// The address.
        addr: std::net::SocketAddr,
        /// What went wrong.
        source: std::io::Error,
    },
}

/// Headroom over the largest proposal for the JSON framing of a command.
const BODY_SLACK: usize = 1024;

/// Runs a node until SIGINT or SIGTERM (or the parent's death, if asked), then stops it
/// gracefully: in-flight writes finish, the data directory is released.
pub async fn run(settings: NodeSettings) -> Result<(), NodeError> {
    let NodeSettings {
        node,
        http: http_addr,
        http_peers,
    } = settings;
    let id = node.raft.id.clone();
    let storage =
        FileStorage::open(&node.data_dir, FileStorageOptions::default()).map_err(|source| {
            NodeError::Storage {
                path: node.data_dir.display().to_string(),
                source,
            }
        })?;
    let mut grpc = GrpcOptions::new(
        id.clone(),
        node.listen,
        node.raft.peers.clone(),
        node.cluster_id.clone(),
    );
    grpc.advertise = Some(node.advertise.clone());
    let network = GrpcNetwork::new(grpc);
    let store = KeyValueStore::new();
    let reader = store.handle();
    let metrics = PrometheusMetrics::new();
    let max_body_bytes = node.raft.tuning.max_proposal_bytes;
    // Bound on the leadership hand-over at shutdown: two election timeouts.
    let hand_over =
        node.raft.options.nominal_tick_interval * node.raft.options.election_tick_count * 2;
    let raft = RaftBuilder::new()
        .with_config(node.raft)
        .with_storage(storage)
        .with_applier(store)
        .with_network(network)
        .with_metrics(metrics.clone())
        // Applying a command is one map operation under a lock held for microseconds, so it
        // runs on the node's event loop: two thread switches fewer per batch. A snapshot
        // serializes the map there too, which delays heartbeats by milliseconds per MiB of
        // state, far below the election timeout.
        .with_inline_applier()
        // The node has this runtime to itself, so a follower may block its loop for the
        // fsync: two thread wake-ups fewer on every put's critical path (docs/BENCHMARKS.md).
        .with_inline_follower_writes()
        .build()?;
    let http = TcpListener::bind(http_addr)
        .await
        .map_err(|source| NodeError::Http {
            addr: http_addr,
            source,
        })?;
    check_still_member(&raft, &node.data_dir).map_err(NodeError::Membership)?;
    if raft.membership().voters.is_empty() && node.join.is_none() {
        tracing::info!(
            node = %id,
            "no configuration yet: this node waits to be added to a running cluster \
             (`member add` on any member, or start it with --join)"
        );
    }
    raft.start()?;
    tracing::info!(node = %id, peer = %node.listen, http = %http_addr, "raftkv node started");

    tokio::spawn(log_leader_changes(raft.clone()));
    tokio::spawn(publish_client_addresses(raft.clone(), http_peers.clone()));
    let addresses = ClientAddresses::new(raft.clone(), http_peers);
    let app = router(AppState {
        raft: raft.clone(),
        store: reader,
        http_peers: addresses.clone(),
        metrics,
        request_timeout: node.request_timeout,
        max_body_bytes: max_body_bytes.saturating_add(BODY_SLACK),
    })
    .merge(raftlock_serverkit::members::router(MembersApi {
        raft: raft.clone(),
        addresses,
        request_timeout: node.request_timeout,
    }));
    // A node that joins asks the cluster to add it; being refused, or removed later,
    // stops it with an error.
    let join = node.join.clone().map(|via| JoinRequest {
        via,
        peer_address: node.advertise.clone(),
        client_address: http_addr.to_string(),
    });
    let (stopping, verdict) = stop_signals(
        &raft,
        join,
        node.data_dir.clone(),
        node.exit_with_parent,
        hand_over,
    );
    // Nagle's algorithm would hold back the second write of an answer written in parts
    // (an HTTP/2 frame after its headers, a large body) until the client's delayed ACK:
    // 40 ms. Go's net, which etcd serves on, turns it off on every connection too.
    let http = http.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY on a client connection");
        }
    });
    let served = axum::serve(http, app)
        .with_graceful_shutdown(stopping)
        .await;
    tracing::info!(node = %id, "stopping");
    raft.stop().await;
    if let Some(why) = verdict.take() {
        return Err(NodeError::Membership(why));
    }
    served.map_err(|source| NodeError::Http {
        addr: http_addr,
        source,
    })
}
