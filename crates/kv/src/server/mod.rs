//! `raftkv node`: one replicated key-value node — a Raft node on [`FileStorage`] and
//! [`GrpcNetwork`], with the client HTTP API in front of it.

mod reply;
mod routes;

use std::sync::Arc;
use std::time::Duration;

use axum::serve::ListenerExt;
use raftlock_raft::{
    FileStorage, FileStorageOptions, GrpcNetwork, GrpcOptions, PrometheusMetrics, RaftBuilder,
};
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
    let id = settings.raft.id.clone();
    let storage =
        FileStorage::open(&settings.data_dir, FileStorageOptions::default()).map_err(|source| {
            NodeError::Storage {
                path: settings.data_dir.display().to_string(),
                source,
            }
        })?;
    let network = GrpcNetwork::new(GrpcOptions::new(
        id.clone(),
        settings.listen,
        settings.raft.peers.clone(),
        settings.cluster_id.clone(),
    ));
    let store = KeyValueStore::new();
    let reader = store.handle();
    let metrics = PrometheusMetrics::new();
    let max_body_bytes = settings.raft.tuning.max_proposal_bytes;
    let raft = RaftBuilder::new()
        .with_config(settings.raft)
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
    let http = TcpListener::bind(settings.http)
        .await
        .map_err(|source| NodeError::Http {
            addr: settings.http,
            source,
        })?;
    raft.start()?;
    tracing::info!(node = %id, peer = %settings.listen, http = %settings.http, "raftkv node started");

    tokio::spawn(log_leader_changes(raft.clone()));
    let app = router(AppState {
        raft: raft.clone(),
        store: reader,
        http_peers: Arc::new(settings.http_peers),
        metrics,
        request_timeout: settings.request_timeout,
        max_body_bytes: max_body_bytes.saturating_add(BODY_SLACK),
    });
    // Nagle's algorithm would hold back the second write of an answer written in parts
    // (an HTTP/2 frame after its headers, a large body) until the client's delayed ACK:
    // 40 ms. Go's net, which etcd serves on, turns it off on every connection too.
    let http = http.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY on a client connection");
        }
    });
    let served = axum::serve(http, app)
        .with_graceful_shutdown(shutdown_signal(settings.exit_with_parent))
        .await;
    tracing::info!(node = %id, "stopping");
    raft.stop().await;
    served.map_err(|source| NodeError::Http {
        addr: settings.http,
        source,
    })
}

/// Logs every change of role, term or leader, so that a node's log tells its story.
async fn log_leader_changes(raft: raftlock_raft::Raft) {
    let mut changes = raft.leader_change_channel();
    while changes.changed().await.is_ok() {
        let o = changes.borrow_and_update().clone();
        let leader = o.leader.as_ref().map_or("none", |l| l.as_str());
        tracing::info!(term = o.term, role = %o.role, leader, "raft state changed");
    }
}

/// Resolves on SIGINT, SIGTERM, or (with `exit_with_parent`) when the parent process is
/// gone, so that a demo or test that dies cannot leave nodes behind.
async fn shutdown_signal(exit_with_parent: bool) {
    use tokio::signal::unix::{signal, SignalKind};
    let parent = std::os::unix::process::parent_id();
    let orphaned = async move {
        if !exit_with_parent {
            return std::future::pending().await;
        }
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            if std::os::unix::process::parent_id() != parent {
                tracing::warn!("parent process exited; stopping");
                return;
            }
        }
    };
    let term = async {
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
        _ = orphaned => {}
    }
}
