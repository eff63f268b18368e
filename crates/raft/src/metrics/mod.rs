//! The [`Metrics`] trait: hooks the node calls as things happen (the original's
//! `Metrics`), and [`NoOpMetrics`]. Every method has an empty default, so an
//! implementation records only what it cares about.

#[cfg(feature = "prometheus")]
mod prometheus;

use std::time::Duration;

#[cfg(feature = "prometheus")]
pub use self::prometheus::PrometheusMetrics;
use crate::types::{Index, NodeId, Role, Term};

/// Why an election started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElectionReason {
    /// The election timeout expired without word from a leader.
    Timeout,
    /// A pre-vote round succeeded.
    PreVoteWon,
}

/// How a proposal ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProposalResult {
    /// Appended to the leader's log.
    Accepted,
    /// Refused: not the leader.
    NotLeader,
    /// Refused: too large or too many uncommitted bytes.
    Refused,
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
    /// An election started.
    fn observe_election_start(&self, _term: Term, _reason: ElectionReason) {}
    /// A proposal was handled.
    fn observe_proposal(&self, _result: ProposalResult) {}
    /// A batch of writes was made durable: how many entries it held and how long the
    /// writes and the fsync took (group commit).
    fn observe_persist(&self, _entries: usize, _latency: Duration) {}
    /// A read completed: how long from request to being safe to serve.
    fn observe_read_index(&self, _latency: Duration) {}
    /// A snapshot was taken and saved.
    fn observe_snapshot(&self, _index: Index, _latency: Duration) {}
}

/// Metrics that record nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoOpMetrics;

impl Metrics for NoOpMetrics {}
