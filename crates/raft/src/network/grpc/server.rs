//! The receiving side: the `RaftTransport` service. It checks every envelope's cluster id
//! and decodes its body, then hands the message to the node's [`RpcHandler`], which
//! checks sender and recipient and queues it without ever blocking. Every refusal is
//! counted by the handler (and in [`GrpcNetwork::rejected_messages`](super::GrpcNetwork::rejected_messages)).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::watch;
use tonic::{Code, Request, Response, Status, Streaming};

use super::convert::from_envelope;
use super::links::{Links, FROM_ADDRESS, REMOVED_BY};
use super::proto as pb;
use super::proto::raft_transport_server::RaftTransport;
use super::stopped;
use crate::error::{Error, RejectReason};
use crate::rpc::RpcHandler;
use crate::types::NodeId;

/// The service behind one node's gRPC listener.
pub(crate) struct TransportService {
    pub(crate) cluster_id: String,
    pub(crate) handler: RpcHandler,
    /// Outgoing links: one is opened back to an accepted sender that has none.
    pub(crate) links: Arc<Links>,
    pub(crate) rejected: Arc<AtomicU64>,
    pub(crate) dropped: Arc<AtomicU64>,
    pub(crate) shutdown: watch::Receiver<bool>,
}

impl TransportService {
    /// Checks `env`, turns it into a message and delivers it to the node. A sender this
    /// node has no link to gets one, at `from_address` (its stream's metadata), once a
    /// message of it is accepted.
    fn accept(&self, env: pb::Envelope, from_address: Option<&str>) -> Result<(), Error> {
        let h = &self.handler;
        if env.cluster_id != self.cluster_id {
            return Err(h.reject(RejectReason::WrongCluster {
                cluster_id: env.cluster_id,
            }));
        }
        // Known ids resolve to the handler's shared ones, so a valid envelope allocates
        // no id; others are built only for the handler to refuse them.
        let to = if env.to == h.id().as_str() {
            h.id().clone()
        } else {
            NodeId::from(env.to.as_str())
        };
        let from = match h.peer(&env.from) {
            Some(peer) => peer,
            None => NodeId::from(env.from.as_str()),
        };
        // Every body kind, TimeoutNow included, goes to the handler's `deliver`: the one
        // path on which all checks and counting happen.
        let message = from_envelope(env, from, to).map_err(|e| h.reject(e.into_reject_reason()))?;
        let sender = from_address.map(|a| (message.from.clone(), a));
        h.deliver(message)?;
        if let Some((id, address)) = sender {
            if !self.links.has(&id) {
                self.links.ensure(&id, address);
            }
        }
        Ok(())
    }

    /// Counts a frame the stream could not decode.
    fn reject_frame(&self, status: &Status) {
        let reason = match status.code() {
            Code::OutOfRange | Code::ResourceExhausted => {
                RejectReason::Oversized(status.message().to_string())
            }
            _ => RejectReason::Malformed(status.message().to_string()),
        };
        self.rejected.fetch_add(1, Ordering::Relaxed);
        let _ = self.handler.reject(reason);
    }
}

#[tonic::async_trait]
impl RaftTransport for TransportService {
    async fn stream(
        &self,
        request: Request<Streaming<pb::Envelope>>,
    ) -> Result<Response<pb::StreamSummary>, Status> {
        let remote = request.remote_addr();
        let from_address = request
            .metadata()
            .get(FROM_ADDRESS)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
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
                    // Either way the sender reconnects. Tonic reports a frame over the
                    // size limit as OutOfRange.
                    if matches!(
                        status.code(),
                        Code::Internal
                            | Code::ResourceExhausted
                            | Code::InvalidArgument
                            | Code::OutOfRange
                    ) {
                        self.reject_frame(&status);
                    }
                    tracing::debug!(?remote, %status, "raft grpc: stream failed");
                    return Err(status);
                }
            };
            if *shutdown.borrow() {
                break;
            }
            match self.accept(env, from_address.as_deref()) {
                Ok(()) => summary.accepted += 1,
                Err(Error::Rejected(RejectReason::QueueFull)) => {
                    // A full inbound queue drops the message, like a congested network.
                    summary.accepted += 1;
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                }
                Err(Error::ShuttingDown) => break,
                Err(Error::Rejected(RejectReason::Removed { from })) => {
                    // Tell the sender, which may not know: its stream ends with a status
                    // that says so (the sender's transport reports it to its node).
                    self.rejected.fetch_add(1, Ordering::Relaxed);
                    let mut status = Status::failed_precondition(format!(
                        "node {from} was removed from the cluster"
                    ));
                    if let Ok(me) = self.handler.id().as_str().parse() {
                        status.metadata_mut().insert(REMOVED_BY, me);
                    }
                    return Err(status);
                }
                Err(error) => {
                    summary.rejected += 1;
                    self.rejected.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(?remote, %error, "raft grpc: envelope rejected");
                }
            }
        }
        Ok(Response::new(summary))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;

    use bytes::Bytes;

    use super::*;
    use crate::message::{Message, MessageBody};
    use crate::metrics::NoOpMetrics;

    fn service() -> (TransportService, tokio::sync::mpsc::Receiver<Message>) {
        let members = ["n1", "n2", "n3"].map(NodeId::from);
        let (handler, rx) = RpcHandler::new(NodeId::from("n1"), members, 16, Arc::new(NoOpMetrics));
        let (_, shutdown) = watch::channel(false);
        let service = TransportService {
            cluster_id: "c1".into(),
            handler,
            links: Arc::new(Links::new(NodeId::from("n1"), Arc::default())),
            rejected: Arc::default(),
            dropped: Arc::default(),
            shutdown,
        };
        (service, rx)
    }

    fn envelope(body: pb::envelope::Body) -> pb::Envelope {
        pb::Envelope {
            cluster_id: "c1".into(),
            from: "n2".into(),
            to: "n1".into(),
            term: 4,
            body: Some(body),
        }
    }

    #[test]
    fn timeout_now_envelopes_reach_the_node() {
        let (service, mut rx) = service();
        service
            .accept(
                envelope(pb::envelope::Body::TimeoutNow(pb::TimeoutNow {})),
                None,
            )
            .unwrap();
        let m = rx.try_recv().unwrap();
        assert_eq!(
            (m.from.as_str(), m.term, m.body),
            ("n2", 4, MessageBody::TimeoutNow)
        );
    }

    #[test]
    fn a_snapshot_chunk_with_an_undecodable_membership_is_refused_and_counted() {
        let (service, mut rx) = service();
        let chunk = pb::InstallSnapshot {
            meta: Some(pb::SnapshotMeta {
                last_index: 8,
                last_term: 2,
                membership: Bytes::from_static(b"RLMB\x01 not a membership"),
            }),
            offset: 0,
            data: Bytes::from_static(b"state"),
            done: true,
            total_size: 5,
            checksum: crc32c::crc32c(b"state"),
        };
        let result = service.accept(envelope(pb::envelope::Body::InstallSnapshot(chunk)), None);
        assert!(
            matches!(
                result,
                Err(Error::Rejected(RejectReason::BadConfiguration {
                    index: 8,
                    ..
                }))
            ),
            "{result:?}"
        );
        assert_eq!(service.handler.rejected_messages(), 1);
        assert!(rx.try_recv().is_err(), "nothing reached the node");
    }
}
