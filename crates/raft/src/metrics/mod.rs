//! The [`Metrics`] trait: hooks the node calls as things happen (the original's
//! `Metrics`), and [`NoOpMetrics`]. Every method has an empty default, so an
//! implementation records only what it cares about.

#[cfg(feature = "prometheus")]
mod prometheus;

use std::time::Duration;

#[cfg(feature = "prometheus")]
pub use self::prometheus::PrometheusMetrics;
use crate::error::RejectReason;
pub use crate::types::ElectionReason;
use crate::types::{Index, NodeId, Role, Term};

/// How a proposal ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProposalResult {
    /// Appended to the leader's log.
    Accepted,
    /// Refused: not the leader.
    NotLeader,
    /// Refused: larger than `tuning.max_proposal_bytes`
    /// ([`Error::ProposalTooLarge`](crate::Error::ProposalTooLarge)).
    TooLarge,
    /// Refused: too many uncommitted bytes
    /// ([`Error::Overloaded`](crate::Error::Overloaded)).
    Overloaded,
    /// Refused for another reason.
    Refused,
}

/// How full the node's queues and buffers are, reported once per tick through
/// [`Metrics::observe_queue_depths`]. Each has its bound in
/// [`TuningParams`](crate::TuningParams).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueueDepths {
    /// Batches of committed entries handed to the state machine and not yet reported
    /// applied (at most `max_pending_apply_batches`).
    pub apply_batches: usize,
    /// Jobs queued for the storage thread: at most `max_pending_storage_jobs`, plus the
    /// write and compaction of the one `Ready` that reached it and a snapshot to save; 0
    /// for storage written on the event loop.
    pub storage_jobs: usize,
    /// Reports of the storage and applier threads not yet taken by the event loop.
    pub worker_events: usize,
    /// On the leader, payload bytes proposed in its term and not yet committed (at most
    /// `max_uncommitted_bytes`, or one batch); 0 elsewhere.
    pub uncommitted_bytes: u64,
    /// On the leader, bytes proposed in its term and not yet applied here, with a fixed
    /// overhead per entry (at most `max_unapplied_bytes`, or one batch); 0 elsewhere.
    pub unapplied_bytes: u64,
    /// Proposers waiting for their commands' results.
    pub waiting_proposals: usize,
    /// Linearizable reads waiting for confirmation or for the state machine (at most
    /// `max_pending_reads`).
    pub pending_reads: usize,
}

/// Observability hooks. Implementations must be cheap: they run on the node's event loop.
pub trait Metrics: Send + Sync + 'static {
    /// The commit index advanced.
    fn observe_commit_index(&self, _index: Index) {}
    /// The applied index advanced.
    fn observe_applied_index(&self, _index: Index) {}
    /// The term changed.
    fn observe_term(&self, _term: Term) {}
    /// The known leader changed.
    fn observe_leader_change(&self, _leader: Option<&NodeId>, _term: Term) {}
    /// This node's role changed.
    fn observe_role(&self, _role: Role) {}
    /// This node started campaigning: `term` is the term it campaigns for. With PreVote
    /// on, an expired timeout starts a pre-vote round ([`ElectionReason::Timeout`]) and
    /// winning it starts the real election ([`ElectionReason::PreVoteWon`]).
    fn observe_election_start(&self, _term: Term, _reason: ElectionReason) {}
    /// A proposal was handled.
    fn observe_proposal(&self, _result: ProposalResult) {}
    /// A batch of writes was made durable: how many entries it held and how long the
    /// writes and the fsync took together (group commit).
    fn observe_persist(&self, _entries: usize, _latency: Duration) {}
    /// The fsync that ended a group-commit batch took `latency` (part of what
    /// `observe_persist` reports).
    fn observe_fsync(&self, _latency: Duration) {}
    /// On the leader, at most once per tick: follower `peer` holds the log up to
    /// `match_index`, `lag` entries behind the leader's last index.
    fn observe_peer_lag(&self, _peer: &NodeId, _match_index: Index, _lag: u64) {}
    /// An inbound peer message was refused, or dropped on a full queue (see
    /// [`RpcHandler`](crate::RpcHandler)).
    fn observe_message_rejected(&self, _reason: &RejectReason) {}
    /// A read completed: how long from request to being safe to serve.
    fn observe_read_index(&self, _latency: Duration) {}
    /// A snapshot was taken and saved.
    fn observe_snapshot(&self, _index: Index, _latency: Duration) {}
    /// Once per tick: how full the node's queues are.
    fn observe_queue_depths(&self, _depths: &QueueDepths) {}
}

/// Metrics that record nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoOpMetrics;

impl Metrics for NoOpMetrics {}
