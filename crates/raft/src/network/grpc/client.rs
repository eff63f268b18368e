//! The sending side: one task per peer keeps one long-lived `Stream` call open and writes
//! the peer's messages on it in order. While the peer is unreachable, messages are dropped
//! (the protocol retries) and the task reconnects with exponential backoff.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

use tonic::metadata::MetadataValue;

use super::convert::to_envelope;
use super::links::{FROM_ADDRESS, REMOVED_BY};
use super::proto::raft_transport_client::RaftTransportClient;
use super::stopped;
use crate::message::Message;
use crate::types::PeerConfig;

/// First reconnection delay.
const BACKOFF_MIN: Duration = Duration::from_millis(50);
/// Longest reconnection delay.
const BACKOFF_MAX: Duration = Duration::from_millis(500);
/// Envelopes buffered between the task and the HTTP/2 stream.
const STREAM_BUFFER: usize = 256;

/// What a peer task needs besides its queue.
pub(crate) struct PeerLink {
    pub(crate) peer: PeerConfig,
    pub(crate) cluster_id: Arc<str>,
    pub(crate) connect_timeout: Duration,
    pub(crate) max_message_bytes: usize,
    /// This node's own peer address, named in each stream's metadata.
    pub(crate) advertise: Option<Arc<str>>,
    /// The node's entrance, told when the peer says this node was removed.
    pub(crate) handler: crate::rpc::RpcHandler,
    pub(crate) dropped: Arc<AtomicU64>,
    pub(crate) shutdown: watch::Receiver<bool>,
}

impl PeerLink {
    async fn connect(&self) -> Result<Channel, String> {
        let endpoint = Endpoint::from_shared(format!("http://{}", self.peer.address))
            .map_err(|e| format!("bad address {:?}: {e}", self.peer.address))?
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(1))
            .keep_alive_timeout(self.connect_timeout.max(Duration::from_secs(1)))
            .keep_alive_while_idle(true);
        match tokio::time::timeout(self.connect_timeout, endpoint.connect()).await {
            Ok(Ok(channel)) => Ok(channel),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("connect timed out".into()),
        }
    }

    /// Drops every message queued until `until`. Returns `false` when the task must end.
    async fn drain_until(&mut self, queue: &mut mpsc::Receiver<Message>, until: Instant) -> bool {
        loop {
            tokio::select! {
                biased;
                _ = stopped(&mut self.shutdown) => return false,
                _ = tokio::time::sleep_until(until) => return true,
                m = queue.recv() => match m {
                    Some(_) => {
                        self.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                    None => return false,
                },
            }
        }
    }

    /// Runs until the network stops or its queue closes.
    pub(crate) async fn run(mut self, mut queue: mpsc::Receiver<Message>) {
        let mut backoff = BACKOFF_MIN;
        loop {
            if *self.shutdown.borrow() {
                return;
            }
            let channel = match self.connect().await {
                Ok(channel) => channel,
                Err(error) => {
                    tracing::debug!(peer = %self.peer.id, %error, "raft grpc: connect failed");
                    if !self.drain_until(&mut queue, Instant::now() + backoff).await {
                        return;
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
            };
            let opened = Instant::now();
            let mut client = RaftTransportClient::new(channel)
                .max_encoding_message_size(self.max_message_bytes)
                .max_decoding_message_size(self.max_message_bytes);
            let (tx, rx) = mpsc::channel(STREAM_BUFFER);
            // The call runs on its own task so that it makes progress while this one waits
            // for room in the stream buffer.
            let mut request = tonic::Request::new(ReceiverStream::new(rx));
            if let Some(value) = self
                .advertise
                .as_deref()
                .and_then(|a| MetadataValue::try_from(a).ok())
            {
                request.metadata_mut().insert(FROM_ADDRESS, value);
            }
            let mut call = tokio::spawn(async move { client.stream(request).await });
            let keep_going = loop {
                tokio::select! {
                    biased;
                    _ = stopped(&mut self.shutdown) => break false,
                    ended = &mut call => {
                        tracing::debug!(peer = %self.peer.id, ?ended, "raft grpc: stream ended");
                        if let Ok(Err(status)) = &ended {
                            if status.metadata().get(REMOVED_BY).is_some() {
                                self.handler.removed_by(self.peer.id.clone());
                            }
                        }
                        break true;
                    }
                    m = queue.recv() => match m {
                        Some(m) => {
                            let env = to_envelope(&self.cluster_id, m);
                            if tx.send(env).await.is_err() {
                                self.dropped.fetch_add(1, Ordering::Relaxed);
                                break true;
                            }
                        }
                        None => break false,
                    },
                }
            };
            call.abort();
            if !keep_going {
                return;
            }
            // A stream that lived a while was healthy: retry fast. One that broke at once
            // (e.g. the peer refuses us) backs off.
            if opened.elapsed() > BACKOFF_MAX {
                backoff = BACKOFF_MIN;
            }
            if !self.drain_until(&mut queue, Instant::now() + backoff).await {
                return;
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }
}
