//! [`GrpcNetwork`]: the peer transport over gRPC (tonic), for nodes in separate processes
//! or machines. Enabled by the `grpc` cargo feature (on by default).
//!
//! Each node runs one gRPC server (service `raftlock.raft.v1.RaftTransport`, see
//! `proto/raft.proto`) and, for every peer, one sender task that keeps a single
//! long-lived client stream open and writes that peer's messages on it in order. Sending
//! never blocks the node: each peer has a bounded queue, and a message that finds it full,
//! or finds the peer unreachable, is dropped (Raft tolerates lost messages). Broken streams
//! are reopened with exponential backoff (50 ms doubling to 500 ms: a restarted peer is
//! reached again within half of the default 1 s election timeout).
//!
//! The receiver checks every envelope: another `cluster_id`, a malformed body (such as an
//! unknown entry kind) or a frame over `max_message_bytes` is refused here; sender,
//! recipient and the body's consistency are checked by the node's
//! [`RpcHandler`](crate::RpcHandler), the same path every transport takes. Each refusal is
//! counted in [`GrpcNetwork::rejected_messages`] and in the node's metrics
//! ([`Metrics::observe_message_rejected`](crate::Metrics::observe_message_rejected)).
//! A sender that is not a member is refused by the handler, unless its message is a
//! leader's (see [`RpcHandler::deliver`](crate::RpcHandler::deliver)).
//!
//! The links follow the replicated membership: `GrpcOptions::peers` are dialled at start,
//! and from then on the node's runtime hands the transport the members of every
//! configuration the log puts in effect, with the addresses the configuration carries
//! ([`NetworkManager::set_peers`]). Each stream also names the sender's own address
//! ([`GrpcOptions::advertise`]) in its request metadata, so a node that accepts a message
//! from a leader it has no link to (it is joining, or has not caught up with the
//! configuration that added the leader) opens a link back and its answers arrive.
//!
//! ```no_run
//! use raftlock_raft::{GrpcNetwork, GrpcOptions, NodeId, PeerConfig};
//!
//! let peers: Vec<PeerConfig> = (1..=3)
//!     .map(|i| PeerConfig {
//!         id: NodeId::from(format!("node-{i}")),
//!         address: format!("127.0.0.1:{}", 7000 + i),
//!     })
//!     .collect();
//! let options = GrpcOptions::new(
//!     NodeId::from("node-1"),
//!     "127.0.0.1:7001".parse().unwrap(),
//!     peers,
//!     "my-cluster",
//! );
//! let network = GrpcNetwork::new(options);
//! // Hand it to `RaftBuilder::with_network`; `Raft::start` starts it.
//! # drop(network);
//! ```

mod client;
mod convert;
mod links;
mod server;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;

use self::links::{LinkSettings, Links};
use super::{Inbound, NetworkManager};
use crate::error::{ConfigError, Error};
use crate::message::Message;
use crate::types::{NodeId, PeerConfig};

/// The protobuf and gRPC code generated from `proto/raft.proto` (package
/// `raftlock.raft.v1`), for tools that talk to a node's transport directly.
#[allow(
    missing_docs,
    clippy::all,
    clippy::unwrap_used,
    clippy::expect_used,
    rustdoc::all
)]
pub mod proto {
    tonic::include_proto!("raftlock.raft.v1");
}

/// Default for [`GrpcOptions::max_message_bytes`]: 64 MiB.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
/// Default for [`GrpcOptions::queue_capacity`]: messages queued per peer.
pub const DEFAULT_QUEUE_CAPACITY: usize = 4096;
/// Default for [`GrpcOptions::connect_timeout`].
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Settings of a [`GrpcNetwork`].
#[derive(Clone, Debug)]
pub struct GrpcOptions {
    /// This node's id; envelopes addressed to another id are rejected.
    pub id: NodeId,
    /// Address the gRPC server listens on (port 0 picks a free port; see
    /// [`GrpcNetwork::local_addr`]).
    pub listen: SocketAddr,
    /// The cluster's members with their `host:port` addresses, resolved at connect time.
    /// An entry for this node itself is ignored.
    pub peers: Vec<PeerConfig>,
    /// Identifies the cluster; envelopes stamped with another id are rejected, so that
    /// nodes of two clusters never talk by mistake.
    pub cluster_id: String,
    /// Bound on establishing a connection to a peer.
    pub connect_timeout: Duration,
    /// Largest gRPC message sent or accepted, in bytes. Must exceed the largest
    /// AppendEntries batch and snapshot chunk (`max_snapshot_chunk_size`, 1 MiB by
    /// default). A snapshot's total size is not bounded by it: snapshots travel in chunks.
    pub max_message_bytes: usize,
    /// Messages queued per peer before new ones are dropped.
    pub queue_capacity: usize,
    /// The `host:port` peers reach this node at, sent with every stream it opens so that a
    /// node that does not know it yet can answer. `None` uses this node's entry in
    /// `peers`, or `listen` when that is a specific address.
    pub advertise: Option<String>,
}

impl GrpcOptions {
    /// Options with the defaults for the timeout, message size and queue capacity.
    pub fn new(
        id: NodeId,
        listen: SocketAddr,
        peers: Vec<PeerConfig>,
        cluster_id: impl Into<String>,
    ) -> Self {
        GrpcOptions {
            id,
            listen,
            peers,
            cluster_id: cluster_id.into(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            advertise: None,
        }
    }

    /// The address this node advertises (see [`GrpcOptions::advertise`]).
    fn advertised(&self, bound: Option<SocketAddr>) -> Option<String> {
        if let Some(a) = &self.advertise {
            return Some(a.clone());
        }
        if let Some(p) = self.peers.iter().find(|p| p.id == self.id) {
            return Some(p.address.clone());
        }
        let addr = bound.unwrap_or(self.listen);
        (!addr.ip().is_unspecified()).then(|| addr.to_string())
    }
}

/// Resolves once the network is stopped (or dropped).
pub(crate) async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    // An error means the sender is gone: the network was dropped, which also stops it.
    let _ = shutdown.wait_for(|stopped| *stopped).await;
}

/// State that exists until [`NetworkManager::start`].
struct Unstarted {
    listener: Option<std::net::TcpListener>,
}

/// The gRPC peer transport of one node. See the [module documentation](self).
pub struct GrpcNetwork {
    options: GrpcOptions,
    cluster_id: Arc<str>,
    /// Each peer's outgoing link, opened at start and kept in step with the membership.
    links: Arc<Links>,
    unstarted: Mutex<Option<Unstarted>>,
    local_addr: Mutex<Option<SocketAddr>>,
    shutdown: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    rejected: Arc<AtomicU64>,
    dropped: Arc<AtomicU64>,
}

impl GrpcNetwork {
    /// A transport that binds `options.listen` when started.
    pub fn new(options: GrpcOptions) -> Self {
        Self::build(options, None)
    }

    /// A transport that serves on an already bound `listener` (its address wins over
    /// `options.listen`). Binding first lets a caller learn a free port before it writes
    /// the cluster's peer list.
    pub fn with_listener(options: GrpcOptions, listener: std::net::TcpListener) -> Self {
        Self::build(options, Some(listener))
    }

    fn build(options: GrpcOptions, listener: Option<std::net::TcpListener>) -> Self {
        let local_addr = listener.as_ref().and_then(|l| l.local_addr().ok());
        let dropped = Arc::new(AtomicU64::new(0));
        GrpcNetwork {
            cluster_id: Arc::from(options.cluster_id.as_str()),
            links: Arc::new(Links::new(options.id.clone(), dropped.clone())),
            options,
            unstarted: Mutex::new(Some(Unstarted { listener })),
            local_addr: Mutex::new(local_addr),
            shutdown: watch::channel(false).0,
            tasks: Mutex::new(Vec::new()),
            rejected: Arc::new(AtomicU64::new(0)),
            dropped,
        }
    }

    /// The address the server listens on: known once bound (at start, or at once for
    /// [`GrpcNetwork::with_listener`]).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        *self
            .local_addr
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Envelopes received and refused: wrong cluster, unknown sender, wrong recipient,
    /// malformed body or frame.
    pub fn rejected_messages(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }

    /// Messages dropped without a protocol error: outgoing ones that found their peer's
    /// queue full, an unknown recipient or the peer unreachable, and incoming ones that
    /// found the node's inbound queue full.
    pub fn dropped_messages(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// The options this transport was built with.
    pub fn options(&self) -> &GrpcOptions {
        &self.options
    }

    fn bind(
        &self,
        listener: Option<std::net::TcpListener>,
    ) -> Result<tokio::net::TcpListener, Error> {
        let listen = self.options.listen;
        let fail = |e: std::io::Error| {
            Error::Config(ConfigError::new(
                "network.listen",
                format!("cannot listen on {listen}: {e}"),
            ))
        };
        let listener = match listener {
            Some(l) => l,
            None => std::net::TcpListener::bind(listen).map_err(fail)?,
        };
        listener.set_nonblocking(true).map_err(fail)?;
        tokio::net::TcpListener::from_std(listener).map_err(fail)
    }
}

impl NetworkManager for GrpcNetwork {
    fn start(&self, inbound: Inbound) -> Result<(), Error> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            Error::Config(ConfigError::new(
                "network",
                "the gRPC transport must be started inside a tokio runtime",
            ))
        })?;
        let _entered = runtime.enter();
        if *inbound.id() != self.options.id {
            return Err(Error::Config(ConfigError::new(
                "network.id",
                format!(
                    "the gRPC transport was built for {} but started by node {}",
                    self.options.id,
                    inbound.id()
                ),
            )));
        }
        let mut guard = self
            .unstarted
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let Some(unstarted) = guard.take() else {
            return Err(Error::AlreadyStarted {
                what: "gRPC transport",
            });
        };
        let listener = self.bind(unstarted.listener)?;
        let bound = listener.local_addr().ok();
        *self
            .local_addr
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = bound;

        let max = self.options.max_message_bytes;
        let handler_for_links = inbound.clone();
        let service = server::TransportService {
            cluster_id: self.options.cluster_id.clone(),
            handler: inbound,
            links: self.links.clone(),
            rejected: self.rejected.clone(),
            dropped: self.dropped.clone(),
            shutdown: self.shutdown.subscribe(),
        };
        let service = proto::raft_transport_server::RaftTransportServer::new(service)
            .max_decoding_message_size(max)
            .max_encoding_message_size(max);
        let mut shutdown = self.shutdown.subscribe();
        let server = tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .add_service(service)
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async move {
                stopped(&mut shutdown).await;
            });
        let id = self.options.id.clone();
        self.tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(tokio::spawn(async move {
                if let Err(error) = server.await {
                    tracing::warn!(node = %id, %error, "raft grpc: server failed");
                }
            }));
        let settings = LinkSettings {
            cluster_id: self.cluster_id.clone(),
            connect_timeout: self.options.connect_timeout,
            max_message_bytes: max,
            queue_capacity: self.options.queue_capacity,
            advertise: self.options.advertised(bound).map(Arc::from),
            shutdown: self.shutdown.clone(),
            handler: handler_for_links,
        };
        self.links.start(settings, &self.options.peers);
        Ok(())
    }

    fn send(&self, messages: Vec<Message>) {
        self.links.send(messages);
    }

    fn set_peers(&self, peers: &[PeerConfig]) {
        self.links.set_peers(peers);
    }

    fn stop(&self) {
        self.shutdown.send_replace(true);
        // Sender tasks may be waiting on a congested stream; end them now. The server task
        // finishes its graceful shutdown on its own (its handlers saw the signal).
        self.links.stop();
    }
}

impl Drop for GrpcNetwork {
    fn drop(&mut self) {
        self.shutdown.send_replace(true);
    }
}
