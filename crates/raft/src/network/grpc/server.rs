//! The receiving side: the `RaftTransport` service. It checks every envelope's header
//! (cluster, sender, recipient) and body, and hands valid messages to the node's inbound
//! queue without ever blocking on it.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::watch;
use tonic::{Code, Request, Response, Status, Streaming};

use super::convert::from_envelope;
use super::proto as pb;
use super::proto::raft_transport_server::RaftTransport;
use super::stopped;
use crate::message::Message;
use crate::network::Inbound;
use crate::types::NodeId;

/// The service behind one node's gRPC listener.
pub(crate) struct TransportService {
    pub(crate) id: NodeId,
    pub(crate) cluster_id: String,
    /// Members that may send to this node (every peer except itself).
    pub(crate) peers: HashSet<NodeId>,
    pub(crate) inbound: Inbound,
    pub(crate) rejected: Arc<AtomicU64>,
    pub(crate) dropped: Arc<AtomicU64>,
    pub(crate) shutdown: watch::Receiver<bool>,
}

impl TransportService {
    /// Checks `env` and turns it into a message for this node; `Err` says why not.
    fn accept(&self, env: pb::Envelope) -> Result<Message, String> {
        if env.cluster_id != self.cluster_id {
            return Err(format!("cluster {:?}", env.cluster_id));
        }
        if env.to != self.id.as_str() {
            return Err(format!("addressed to {:?}", env.to));
        }
        let Some(from) = self.peers.get(env.from.as_str()).cloned() else {
            return Err(format!("unknown sender {:?}", env.from));
        };
        from_envelope(env, from, self.id.clone()).map_err(|e| e.to_string())
    }
}

#[tonic::async_trait]
impl RaftTransport for TransportService {
    async fn stream(
        &self,
        request: Request<Streaming<pb::Envelope>>,
    ) -> Result<Response<pb::StreamSummary>, Status> {
        let remote = request.remote_addr();
        let mut envelopes = request.into_inner();
        let mut shutdown = self.shutdown.clone();
        let mut summary = pb::StreamSummary::default();
        loop {
            let next = tokio::select! {
                biased;
                _ = stopped(&mut shutdown) => break,
                next = envelopes.message() => next,
            };
            let env = match next {
                Ok(Some(env)) => env,
                Ok(None) => break,
                Err(status) => {
                    // A malformed or oversized frame ends the stream (it counts as a
                    // rejected envelope); so does a peer that goes away (it does not).
                    // Either way the sender reconnects.
                    if matches!(
                        status.code(),
                        Code::Internal | Code::ResourceExhausted | Code::InvalidArgument
                    ) {
                        self.rejected.fetch_add(1, Ordering::Relaxed);
                    }
                    tracing::debug!(?remote, %status, "raft grpc: stream failed");
                    return Err(status);
                }
            };
            match self.accept(env) {
                Ok(message) => {
                    if *shutdown.borrow() {
                        break;
                    }
                    summary.accepted += 1;
                    // A full inbound queue drops the message, like a congested network.
                    if self.inbound.try_send(message).is_err() {
                        self.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Err(reason) => {
                    summary.rejected += 1;
                    self.rejected.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(?remote, %reason, "raft grpc: envelope rejected");
                }
            }
        }
        Ok(Response::new(summary))
    }
}
