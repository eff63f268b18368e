//! `raftlock server`: one lock-service node — a Raft node on [`FileStorage`] and
//! [`GrpcNetwork`] applying the lock state machine, with the HTTP/JSON and gRPC client
//! APIs on one port in front of it.
//!
//! The parts: [`service`] (the operations both APIs share), [`proposer`] (stamping and
//! proposing commands, the read barrier), [`clock`] (the leader's clock), [`keepalive`]
//! (renewals batched into one entry per interval), [`housekeeping`] (anchoring the clock,
//! proposing expiries), [`waits`] (held-open acquires), [`applier`] and [`state`] (the
//! state machine behind the node), [`http`] and [`grpc`] (the front ends), [`error`],
//! [`metrics`].

pub mod applier;
pub mod clock;
pub mod error;
pub mod grpc;
pub mod housekeeping;
pub mod http;
pub mod keepalive;
pub mod metrics;
pub mod proposer;
pub mod service;
pub mod state;
pub mod waits;

use std::net::SocketAddr;
use std::sync::Arc;

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

use crate::config::ServerSettings;
use applier::LockApplier;
use clock::LogClock;
use keepalive::KeepAlives;
use metrics::LockMetrics;
use proposer::Proposer;
use service::{Limits, LockService};
use state::Shared;

/// Why a server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
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
    /// The client API address could not be bound or served.
    #[error("client API on {addr}: {source}")]
    Api {
        /// The address.
        addr: SocketAddr,
        /// What went wrong.
        source: std::io::Error,
    },
}

/// Runs a server until SIGINT or SIGTERM (or the parent's death, if asked), then stops it
/// gracefully: held-open requests end, in-flight writes finish, the data directory is
/// released.
pub async fn run(settings: ServerSettings) -> Result<(), ServerError> {
    let ServerSettings {
        node,
        api,
        api_peers,
        max_waiters,
        max_sessions,
        keepalive_interval,
        event_buffer,
    } = settings;
    let id = node.raft.id.clone();
    let storage =
        FileStorage::open(&node.data_dir, FileStorageOptions::default()).map_err(|source| {
            ServerError::Storage {
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
    let registry = PrometheusMetrics::new();
    let shared = Arc::new(Shared::new(event_buffer, LockMetrics::new(&registry)));
    // A new leader extends every session by its longest election timeout.
    let options = &node.raft.options;
    let grace = options.nominal_tick_interval * options.election_tick_count.saturating_mul(2);
    let tick = options.nominal_tick_interval;
    let hand_over = grace;
    let raft = RaftBuilder::new()
        .with_config(node.raft)
        .with_storage(storage)
        .with_applier(LockApplier::new(shared.clone()))
        .with_network(network)
        .with_metrics(registry.clone())
        // Applying an entry changes a few map records under a lock held for microseconds;
        // on the event loop it saves two thread switches per batch.
        .with_inline_applier()
        // The node has this runtime to itself: a follower may block its loop for fsync.
        .with_inline_follower_writes()
        .build()?;
    let listener = TcpListener::bind(api)
        .await
        .map_err(|source| ServerError::Api { addr: api, source })?;
    check_still_member(&raft, &node.data_dir).map_err(ServerError::Membership)?;
    if raft.membership().voters.is_empty() && node.join.is_none() {
        tracing::info!(
            node = %id,
            "no configuration yet: this node waits to be added to a running cluster \
             (`member add` on any member, or start it with --join)"
        );
    }
    raft.start()?;
    tracing::info!(node = %id, peer = %node.listen, api = %api, "raftlock server started");
    tokio::spawn(publish_client_addresses(raft.clone(), api_peers.clone()));
    let addresses = ClientAddresses::new(raft.clone(), api_peers);

    let clock = Arc::new(LogClock::default());
    let proposer = Proposer::new(
        raft.clone(),
        clock,
        u64::try_from(grace.as_millis()).unwrap_or(u64::MAX),
        node.request_timeout,
        addresses.clone(),
    );
    tokio::spawn(log_leader_changes(raft.clone()));
    tokio::spawn(housekeeping::anchor_clock(proposer.clone(), shared.clone()));
    tokio::spawn(housekeeping::expire_due(
        proposer.clone(),
        shared.clone(),
        tick,
    ));
    let keepalives = KeepAlives::start(proposer.clone(), shared.clone(), keepalive_interval);
    let service = LockService::new(
        proposer,
        shared,
        keepalives,
        Limits {
            max_waiters,
            max_sessions,
        },
    );
    let app =
        router(service.clone(), registry).merge(raftlock_serverkit::members::router(MembersApi {
            raft: raft.clone(),
            addresses,
            request_timeout: node.request_timeout,
        }));
    // A node that joins asks the cluster to add it; being refused, or removed later,
    // stops it with an error.
    let join = node.join.clone().map(|via| JoinRequest {
        via,
        peer_address: node.advertise.clone(),
        client_address: api.to_string(),
    });
    let (stopping, verdict) = stop_signals(
        &raft,
        join,
        node.data_dir.clone(),
        node.exit_with_parent,
        hand_over,
    );
    // Nagle's algorithm would hold back the second write of an answer written in parts
    // until the client's delayed ACK (40 ms).
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY on a client connection");
        }
    });
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            stopping.await;
            service.stop();
        })
        .await;
    tracing::info!(node = %id, "stopping");
    raft.stop().await;
    if let Some(why) = verdict.take() {
        return Err(ServerError::Membership(why));
    }
    served.map_err(|source| ServerError::Api { addr: api, source })
}

/// The client API: the HTTP/JSON routes and the gRPC service on one router (gRPC clients
/// speak HTTP/2 to `/raftlock.v1.RaftLock/...`), with a JSON 404 for anything else.
pub fn router(service: LockService, metrics: PrometheusMetrics) -> axum::Router {
    let grpc =
        tonic::service::Routes::new(grpc::GrpcApi::server(service.clone())).into_axum_router();
    grpc.merge(http::routes(http::HttpState { service, metrics }))
        .fallback(http::not_found)
}
