//! [`RpcHandler`]: the typed entrance for inbound peer RPCs (the original's `RPCHandler`,
//! implemented by the node).
//!
//! Every message a peer sends to this node enters through a handler: the built-in
//! transports ([`LocalNetwork`](crate::LocalNetwork) and the gRPC transport) receive one
//! in [`NetworkManager::start`](crate::NetworkManager::start), and a transport of your
//! own can get one the same way or from [`Raft::rpc_handler`](crate::Raft::rpc_handler).
//! The handler checks each message — addressed to this node, sent by one of its peers
//! (or a leader's message from a node it does not know yet), well formed (see
//! `validate.rs`) — and queues it for the node's event loop. A refused
//! message never reaches the protocol: the caller gets [`Error::Rejected`] saying why,
//! and the refusal is counted ([`RpcHandler::rejected_messages`],
//! [`Metrics::observe_message_rejected`]).
//!
//! # One-way messages
//!
//! Raft's RPCs travel as one-way [`Message`]s. A handler method returns `Ok(())` once the
//! request is checked and queued, not once the node has answered it: the answer (a
//! RequestVote or AppendEntries response, ...) is a message of its own that the node sends
//! back through [`NetworkManager::send`](crate::NetworkManager::send), the way every
//! other message leaves it. This is deliberate: a transport can pipeline many
//! AppendEntries per peer on one stream without waiting a round trip for each, the node
//! drains everything that arrived into one `Ready` (one fsync for the whole batch), and
//! an answer that is held until state is durable never blocks the transport's receive
//! loop. Handler methods never block; a full queue drops the message
//! ([`RejectReason::QueueFull`]), which Raft tolerates like any lost message.

mod validate;

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use tokio::sync::mpsc::{self, error::TrySendError};

use crate::error::{Error, RejectReason, Result};
use crate::message::{
    AppendEntries, Heartbeat, InstallSnapshot, Message, MessageBody, ReadIndexRequest, RequestVote,
};
use crate::metrics::Metrics;
use crate::types::{NodeId, Term};

/// Who sent an RPC, to whom, and in which term: the envelope of a typed request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RpcHeader {
    /// The sender.
    pub from: NodeId,
    /// The recipient; must be the handler's node.
    pub to: NodeId,
    /// The sender's term (for a pre-vote, the term it would campaign in).
    pub term: Term,
}

impl RpcHeader {
    /// A header from `from` to `to` in `term`.
    ///
    /// ```
    /// use raftlock_raft::RpcHeader;
    /// let h = RpcHeader::new("node-2", "node-1", 3);
    /// assert_eq!((h.from.as_str(), h.to.as_str(), h.term), ("node-2", "node-1", 3));
    /// ```
    pub fn new(from: impl Into<NodeId>, to: impl Into<NodeId>, term: Term) -> Self {
        RpcHeader {
            from: from.into(),
            to: to.into(),
            term,
        }
    }

    fn with(self, body: MessageBody) -> Message {
        Message {
            from: self.from,
            to: self.to,
            term: self.term,
            body,
        }
    }
}

struct Inner {
    id: NodeId,
    /// Every member except this node: the configured peers at first, then the members
    /// of the configuration in effect, which the runtime sets whenever the log changes
    /// it ([`RpcHandler::set_members`]).
    peers: RwLock<HashSet<NodeId>>,
    /// Ids the configuration in effect retires: their messages are refused as
    /// [`RejectReason::Removed`], which a transport reports back to the sender.
    retired: RwLock<HashSet<NodeId>>,
    /// Set once a member told this node that it was removed (by its id).
    removed: tokio::sync::watch::Sender<Option<NodeId>>,
    inbound: mpsc::Sender<Message>,
    metrics: Arc<dyn Metrics>,
    rejected: AtomicU64,
    dropped: AtomicU64,
}

/// Delivers inbound peer RPCs to a node. Cheap to clone; clones share the queue and the
/// counters. See the [module documentation](self) for why methods return when the
/// message is queued rather than when it is answered.
///
/// ```
/// use std::sync::Arc;
/// use raftlock_raft::{Error, NoOpMetrics, NodeId, RejectReason, RequestVote, RpcHandler, RpcHeader};
///
/// let members = ["node-1", "node-2", "node-3"].map(NodeId::from);
/// let (handler, mut queue) = RpcHandler::new(NodeId::from("node-1"), members, 16, Arc::new(NoOpMetrics));
/// let vote = RequestVote { pre_vote: false, last_log_index: 0, last_log_term: 0, transfer: false };
///
/// handler.request_vote(RpcHeader::new("node-2", "node-1", 1), vote.clone()).unwrap();
/// assert_eq!(queue.try_recv().unwrap().kind(), "RequestVote");
///
/// let refused = handler.request_vote(RpcHeader::new("node-9", "node-1", 1), vote);
/// assert!(matches!(refused, Err(Error::Rejected(RejectReason::UnknownSender { .. }))));
/// assert_eq!(handler.rejected_messages(), 1);
/// ```
#[derive(Clone)]
pub struct RpcHandler {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RpcHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpcHandler")
            .field("id", &self.inner.id)
            .field("rejected", &self.rejected_messages())
            .field("dropped", &self.dropped_messages())
            .finish_non_exhaustive()
    }
}

impl RpcHandler {
    /// A handler for node `id` whose cluster is `members` (an entry for `id` itself is
    /// ignored), queueing up to `capacity` messages, and the receiving end of that queue.
    /// A node's runtime keeps the members in step with the replicated configuration
    /// ([`RpcHandler::set_members`]).
    ///
    /// A node builds its own (see [`Raft::rpc_handler`](crate::Raft::rpc_handler)); this
    /// constructor is for testing a transport on its own.
    pub fn new(
        id: NodeId,
        members: impl IntoIterator<Item = NodeId>,
        capacity: usize,
        metrics: Arc<dyn Metrics>,
    ) -> (Self, mpsc::Receiver<Message>) {
        let (inbound, rx) = mpsc::channel(capacity.max(1));
        let peers = members.into_iter().filter(|m| *m != id).collect();
        let handler = RpcHandler {
            inner: Arc::new(Inner {
                id,
                peers: RwLock::new(peers),
                retired: RwLock::new(HashSet::new()),
                removed: tokio::sync::watch::channel(None).0,
                inbound,
                metrics,
                rejected: AtomicU64::new(0),
                dropped: AtomicU64::new(0),
            }),
        };
        (handler, rx)
    }

    /// The node this handler delivers to.
    pub fn id(&self) -> &NodeId {
        &self.inner.id
    }

    /// The peer named `id`, if it is one. The returned id is shared, so a transport that
    /// builds messages with it allocates nothing per message.
    pub fn peer(&self, id: &str) -> Option<NodeId> {
        self.peers().get(id).cloned()
    }

    /// Replaces the members whose messages are accepted (an entry for this node is
    /// ignored). The runtime calls it whenever the configuration in effect changes: a
    /// removed node's requests are refused from then on, an added node's accepted.
    pub fn set_members(&self, members: impl IntoIterator<Item = NodeId>) {
        let id = &self.inner.id;
        let peers: HashSet<NodeId> = members.into_iter().filter(|m| m != id).collect();
        *self
            .inner
            .peers
            .write()
            .unwrap_or_else(PoisonError::into_inner) = peers;
    }

    /// Replaces the retired ids (members removed from the cluster, see
    /// [`Membership::retired`](crate::Membership::retired)): their messages are refused
    /// as [`RejectReason::Removed`].
    pub fn set_retired(&self, retired: impl IntoIterator<Item = NodeId>) {
        *self
            .inner
            .retired
            .write()
            .unwrap_or_else(PoisonError::into_inner) = retired.into_iter().collect();
    }

    /// A transport calls this when member `by` answered that this node was removed from
    /// the cluster ([`RejectReason::Removed`]). Watched through
    /// [`Raft::removed_channel`](crate::Raft::removed_channel).
    pub fn removed_by(&self, by: NodeId) {
        tracing::warn!(node = %self.inner.id, %by, "a member says this node was removed from the cluster");
        self.inner.removed.send_if_modified(|r| {
            let first = r.is_none();
            if first {
                *r = Some(by);
            }
            first
        });
    }

    /// Watches whether a member told this node that it was removed: `Some(member)` once
    /// one did.
    pub fn removed_channel(&self) -> tokio::sync::watch::Receiver<Option<NodeId>> {
        self.inner.removed.subscribe()
    }

    fn peers(&self) -> std::sync::RwLockReadGuard<'_, HashSet<NodeId>> {
        self.inner
            .peers
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Delivers a RequestVote (or pre-vote) request. The answer leaves through the
    /// transport's `send`.
    pub fn request_vote(&self, header: RpcHeader, request: RequestVote) -> Result<()> {
        self.deliver(header.with(MessageBody::RequestVote(request)))
    }

    /// Delivers an AppendEntries request. The answer leaves through the transport's
    /// `send`, once the entries are durable.
    pub fn append_entries(&self, header: RpcHeader, request: AppendEntries) -> Result<()> {
        self.deliver(header.with(MessageBody::AppendEntries(request)))
    }

    /// Delivers one chunk of an InstallSnapshot. The answer leaves through the
    /// transport's `send`.
    pub fn install_snapshot(&self, header: RpcHeader, request: InstallSnapshot) -> Result<()> {
        self.deliver(header.with(MessageBody::InstallSnapshot(request)))
    }

    /// Delivers a leader's heartbeat.
    pub fn heartbeat(&self, header: RpcHeader, heartbeat: Heartbeat) -> Result<()> {
        self.deliver(header.with(MessageBody::Heartbeat(heartbeat)))
    }

    /// Delivers a follower's request for a read index.
    pub fn read_index(&self, header: RpcHeader, request: ReadIndexRequest) -> Result<()> {
        self.deliver(header.with(MessageBody::ReadIndex(request)))
    }

    /// Delivers a leader's TimeoutNow: the last step of a leadership transfer, telling
    /// this node to campaign at once (its vote requests carry `transfer: true`).
    pub fn timeout_now(&self, header: RpcHeader) -> Result<()> {
        self.deliver(header.with(MessageBody::TimeoutNow))
    }

    /// Delivers any message, requests and answers alike: the path every typed method and
    /// the built-in transports take.
    ///
    /// A leader's messages (AppendEntries, heartbeats, snapshot chunks) are accepted from
    /// a node that is not a member yet: a node learns of a configuration from the log,
    /// so a new member, or a node still catching up, hears from a leader its log does
    /// not name yet; the protocol's term checks decide what such a message is worth. Every
    /// other message must come from a member.
    ///
    /// Fails with [`Error::Rejected`] if the message is not addressed to this node, does
    /// not come from one of its peers (as above), is malformed (a configuration it carries that does
    /// not decode is [`RejectReason::BadConfiguration`]), or finds the queue full (each
    /// case counted), and with [`Error::ShuttingDown`] once the node has stopped. Never
    /// blocks.
    pub fn deliver(&self, message: Message) -> Result<()> {
        let inner = &self.inner;
        if message.to != inner.id {
            return Err(self.reject(RejectReason::WrongRecipient {
                to: message.to.to_string(),
            }));
        }
        let from_leader = matches!(
            message.body,
            MessageBody::AppendEntries(_)
                | MessageBody::Heartbeat(_)
                | MessageBody::InstallSnapshot(_)
        );
        let known =
            message.from != inner.id && (from_leader || self.peers().contains(&message.from));
        if !known
            && inner
                .retired
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .contains(&message.from)
        {
            return Err(self.reject(RejectReason::Removed {
                from: message.from.to_string(),
            }));
        }
        if !known {
            return Err(self.reject(RejectReason::UnknownSender {
                from: message.from.to_string(),
            }));
        }
        if let Err(reason) = validate::check(&message) {
            return Err(self.reject(reason));
        }
        match inner.inbound.try_send(message) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(self.reject(RejectReason::QueueFull)),
            Err(TrySendError::Closed(_)) => Err(Error::ShuttingDown),
        }
    }

    /// Counts a message refused for `reason` and returns the error to report. Transports
    /// call it for what they refuse before a [`Message`] exists (another cluster's id, an
    /// undecodable or oversized frame), so every refusal is counted in one place.
    pub fn reject(&self, reason: RejectReason) -> Error {
        let counter = if reason == RejectReason::QueueFull {
            &self.inner.dropped
        } else {
            &self.inner.rejected
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.inner.metrics.observe_message_rejected(&reason);
        tracing::debug!(node = %self.inner.id, %reason, "peer message rejected");
        Error::Rejected(reason)
    }

    /// Messages refused so far: misaddressed, from a node that is not a peer, malformed,
    /// or refused by the transport (see [`RpcHandler::reject`]).
    pub fn rejected_messages(&self) -> u64 {
        self.inner.rejected.load(Ordering::Relaxed)
    }

    /// Valid messages dropped because the node's inbound queue was full.
    pub fn dropped_messages(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests;
