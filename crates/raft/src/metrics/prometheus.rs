//! [`PrometheusMetrics`]: the [`Metrics`] hooks recorded as Prometheus metrics (feature
//! `prometheus`), exposed in the text format for a `/metrics` endpoint.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use super::{ElectionReason, Metrics, ProposalResult, QueueDepths};
use crate::error::RejectReason;
use crate::types::{Index, NodeId, Role, Term};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerLabel {
    peer: String,
}

/// Records the node's metrics in a Prometheus registry (names prefixed `raft_`).
///
/// ```
/// use raftlock_raft::{Metrics, PrometheusMetrics};
/// let m = PrometheusMetrics::new();
/// m.observe_commit_index(42);
/// assert!(m.encode().contains("raft_commit_index 42"));
/// ```
#[derive(Clone)]
pub struct PrometheusMetrics {
    registry: Arc<Mutex<Registry>>,
    term: Gauge,
    role: Gauge,
    commit_index: Gauge,
    applied_index: Gauge,
    leader_changes: Counter,
    elections: Family<ReasonLabel, Counter>,
    proposals: Family<ResultLabel, Counter>,
    persist_seconds: Histogram,
    fsync_seconds: Histogram,
    persisted_entries: Counter,
    peer_lag: Family<PeerLabel, Gauge>,
    peer_match_index: Family<PeerLabel, Gauge>,
    rejected_messages: Family<ReasonLabel, Counter>,
    read_index_seconds: Histogram,
    snapshots: Counter,
    snapshot_seconds: Histogram,
    snapshot_index: Gauge,
    queues: QueueGauges,
}

/// One gauge per field of [`QueueDepths`].
#[derive(Clone, Default)]
struct QueueGauges {
    apply_batches: Gauge,
    storage_jobs: Gauge,
    worker_events: Gauge,
    uncommitted_bytes: Gauge,
    unapplied_bytes: Gauge,
    waiting_proposals: Gauge,
    pending_reads: Gauge,
}

impl QueueGauges {
    fn register(&self, r: &mut Registry) {
        let gauges: [(&str, &str, &Gauge); 7] = [
            (
                "raft_apply_queue_batches",
                "Batches of committed entries handed to the state machine and not yet applied",
                &self.apply_batches,
            ),
            (
                "raft_storage_queue_jobs",
                "Jobs queued for the storage thread",
                &self.storage_jobs,
            ),
            (
                "raft_worker_events_queued",
                "Reports of the storage and applier threads not yet taken by the event loop",
                &self.worker_events,
            ),
            (
                "raft_uncommitted_bytes",
                "On the leader: payload bytes proposed in its term and not yet committed",
                &self.uncommitted_bytes,
            ),
            (
                "raft_unapplied_bytes",
                "On the leader: bytes proposed in its term and not yet applied here, with a fixed overhead per entry",
                &self.unapplied_bytes,
            ),
            (
                "raft_waiting_proposals",
                "Proposers waiting for their commands' results",
                &self.waiting_proposals,
            ),
            (
                "raft_pending_reads",
                "Linearizable reads waiting for confirmation or for the state machine",
                &self.pending_reads,
            ),
        ];
        for (name, help, gauge) in gauges {
            r.register(name, help, gauge.clone());
        }
    }

    fn set(&self, d: &QueueDepths) {
        self.apply_batches.set(gauge_value(d.apply_batches as u64));
        self.storage_jobs.set(gauge_value(d.storage_jobs as u64));
        self.worker_events.set(gauge_value(d.worker_events as u64));
        self.uncommitted_bytes.set(gauge_value(d.uncommitted_bytes));
        self.unapplied_bytes.set(gauge_value(d.unapplied_bytes));
        self.waiting_proposals
            .set(gauge_value(d.waiting_proposals as u64));
        self.pending_reads.set(gauge_value(d.pending_reads as u64));
    }
}

impl std::fmt::Debug for PrometheusMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrometheusMetrics").finish_non_exhaustive()
    }
}

impl Default for PrometheusMetrics {
    fn default() -> Self {
        Self::new()
    }
}

fn gauge_value(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl PrometheusMetrics {
    /// A fresh set of metrics in its own registry.
    pub fn new() -> Self {
        // 50 µs to about 3 s: an fsync, a quorum round, a snapshot.
        let latency = || Histogram::new(exponential_buckets(0.000_05, 2.0, 16));
        let m = PrometheusMetrics {
            registry: Arc::new(Mutex::new(Registry::default())),
            term: Gauge::default(),
            role: Gauge::default(),
            commit_index: Gauge::default(),
            applied_index: Gauge::default(),
            leader_changes: Counter::default(),
            elections: Family::default(),
            proposals: Family::default(),
            persist_seconds: latency(),
            fsync_seconds: latency(),
            persisted_entries: Counter::default(),
            peer_lag: Family::default(),
            peer_match_index: Family::default(),
            rejected_messages: Family::default(),
            read_index_seconds: latency(),
            snapshots: Counter::default(),
            snapshot_seconds: latency(),
            snapshot_index: Gauge::default(),
            queues: QueueGauges::default(),
        };
        {
            let mut r = m.registry.lock().unwrap_or_else(PoisonError::into_inner);
            r.register("raft_term", "Current term", m.term.clone());
            r.register(
                "raft_role",
                "Current role: 0 follower, 1 pre-candidate, 2 candidate, 3 leader",
                m.role.clone(),
            );
            r.register(
                "raft_commit_index",
                "Highest committed index",
                m.commit_index.clone(),
            );
            r.register(
                "raft_applied_index",
                "Highest applied index",
                m.applied_index.clone(),
            );
            r.register(
                "raft_leader_changes",
                "Times the known leader changed",
                m.leader_changes.clone(),
            );
            r.register(
                "raft_elections",
                "Campaigns started, by reason: timeout (a pre-vote round, or the election itself without PreVote), pre_vote_won (the election after a won pre-vote)",
                m.elections.clone(),
            );
            r.register("raft_proposals", "Proposals by result", m.proposals.clone());
            r.register(
                "raft_persist_seconds",
                "Time to append (write and fsync) one group-commit batch",
                m.persist_seconds.clone(),
            );
            r.register(
                "raft_fsync_seconds",
                "Time of the fsync that ends one group-commit batch",
                m.fsync_seconds.clone(),
            );
            r.register(
                "raft_peer_replication_lag",
                "On the leader: log entries each follower is behind the leader's last index",
                m.peer_lag.clone(),
            );
            r.register(
                "raft_peer_match_index",
                "On the leader: highest index known replicated to each follower",
                m.peer_match_index.clone(),
            );
            r.register(
                "raft_rejected_messages",
                "Inbound peer messages refused or dropped, by reason",
                m.rejected_messages.clone(),
            );
            r.register(
                "raft_persisted_entries",
                "Log entries made durable",
                m.persisted_entries.clone(),
            );
            r.register(
                "raft_read_index_seconds",
                "Time from a read request until it is safe to serve",
                m.read_index_seconds.clone(),
            );
            r.register("raft_snapshots", "Snapshots taken", m.snapshots.clone());
            r.register(
                "raft_snapshot_seconds",
                "Time to build and save a snapshot",
                m.snapshot_seconds.clone(),
            );
            r.register(
                "raft_snapshot_index",
                "Index of the latest snapshot taken",
                m.snapshot_index.clone(),
            );
            m.queues.register(&mut r);
        }
        m
    }

    /// Registers an application's own metric in the same registry, so that one
    /// [`encode`](Self::encode) (one `/metrics` route) shows the node's and the
    /// application's metrics together. `name` should carry the application's prefix.
    ///
    /// ```
    /// use prometheus_client::metrics::gauge::Gauge;
    /// use raftlock_raft::PrometheusMetrics;
    /// let m = PrometheusMetrics::new();
    /// let sessions: Gauge = Gauge::default();
    /// m.register("app_sessions", "Live sessions", sessions.clone());
    /// sessions.set(3);
    /// assert!(m.encode().contains("app_sessions 3"));
    /// ```
    pub fn register(
        &self,
        name: &str,
        help: &str,
        metric: impl prometheus_client::registry::Metric,
    ) {
        self.registry
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .register(name, help, metric);
    }

    /// The metrics in the Prometheus text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(PoisonError::into_inner);
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &registry);
        out
    }
}

impl Metrics for PrometheusMetrics {
    fn observe_commit_index(&self, index: Index) {
        self.commit_index.set(gauge_value(index));
    }

    fn observe_applied_index(&self, index: Index) {
        self.applied_index.set(gauge_value(index));
    }

    fn observe_term(&self, term: Term) {
        self.term.set(gauge_value(term));
    }

    fn observe_leader_change(&self, _leader: Option<&NodeId>, _term: Term) {
        self.leader_changes.inc();
    }

    fn observe_role(&self, role: Role) {
        if role != Role::Leader {
            // Only a leader tracks its followers; stale values would mislead.
            self.peer_lag.clear();
            self.peer_match_index.clear();
        }
        self.role.set(match role {
            Role::Follower => 0,
            Role::PreCandidate => 1,
            Role::Candidate => 2,
            Role::Leader => 3,
        });
    }

    fn observe_proposal(&self, result: ProposalResult) {
        let result = match result {
            ProposalResult::Accepted => "accepted",
            ProposalResult::NotLeader => "not_leader",
            ProposalResult::TooLarge => "too_large",
            ProposalResult::Overloaded => "overloaded",
            ProposalResult::Refused => "refused",
        };
        self.proposals.get_or_create(&ResultLabel { result }).inc();
    }

    fn observe_persist(&self, entries: usize, latency: Duration) {
        self.persist_seconds.observe(latency.as_secs_f64());
        self.persisted_entries.inc_by(entries as u64);
    }

    fn observe_fsync(&self, latency: Duration) {
        self.fsync_seconds.observe(latency.as_secs_f64());
    }

    fn observe_election_start(&self, _term: Term, reason: ElectionReason) {
        let reason = reason.label();
        self.elections.get_or_create(&ReasonLabel { reason }).inc();
    }

    fn observe_peer_lag(&self, peer: &NodeId, match_index: Index, lag: u64) {
        let label = PeerLabel {
            peer: peer.to_string(),
        };
        self.peer_lag.get_or_create(&label).set(gauge_value(lag));
        self.peer_match_index
            .get_or_create(&label)
            .set(gauge_value(match_index));
    }

    fn observe_message_rejected(&self, reason: &RejectReason) {
        let reason = reason.label();
        self.rejected_messages
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    fn observe_read_index(&self, latency: Duration) {
        self.read_index_seconds.observe(latency.as_secs_f64());
    }

    fn observe_snapshot(&self, index: Index, latency: Duration) {
        self.snapshots.inc();
        self.snapshot_seconds.observe(latency.as_secs_f64());
        self.snapshot_index.set(gauge_value(index));
    }

    fn observe_queue_depths(&self, depths: &QueueDepths) {
        self.queues.set(depths);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hooks_show_up_in_the_exposition() {
        let m = PrometheusMetrics::new();
        m.observe_term(7);
        m.observe_role(Role::Leader);
        m.observe_applied_index(40);
        m.observe_leader_change(None, 7);
        m.observe_proposal(ProposalResult::Accepted);
        m.observe_proposal(ProposalResult::NotLeader);
        m.observe_persist(16, Duration::from_micros(200));
        m.observe_read_index(Duration::from_millis(1));
        m.observe_snapshot(30, Duration::from_millis(5));
        m.observe_proposal(ProposalResult::TooLarge);
        m.observe_fsync(Duration::from_micros(80));
        m.observe_election_start(7, ElectionReason::Timeout);
        m.observe_election_start(7, ElectionReason::PreVoteWon);
        m.observe_election_start(8, ElectionReason::Timeout);
        m.observe_peer_lag(&NodeId::from("node-2"), 38, 2);
        m.observe_message_rejected(&RejectReason::UnknownSender {
            from: "node-9".into(),
        });
        m.observe_queue_depths(&QueueDepths {
            apply_batches: 3,
            storage_jobs: 4,
            worker_events: 5,
            uncommitted_bytes: 600,
            unapplied_bytes: 700,
            waiting_proposals: 8,
            pending_reads: 9,
        });
        let text = m.encode();
        for needle in [
            "raft_term 7",
            "raft_role 3",
            "raft_applied_index 40",
            "raft_leader_changes_total 1",
            "raft_proposals_total{result=\"accepted\"} 1",
            "raft_proposals_total{result=\"not_leader\"} 1",
            "raft_persisted_entries_total 16",
            "raft_persist_seconds_count 1",
            "raft_read_index_seconds_count 1",
            "raft_snapshots_total 1",
            "raft_snapshot_index 30",
            "raft_proposals_total{result=\"too_large\"} 1",
            "raft_fsync_seconds_count 1",
            "raft_elections_total{reason=\"timeout\"} 2",
            "raft_elections_total{reason=\"pre_vote_won\"} 1",
            "raft_peer_replication_lag{peer=\"node-2\"} 2",
            "raft_peer_match_index{peer=\"node-2\"} 38",
            "raft_rejected_messages_total{reason=\"unknown_sender\"} 1",
            "raft_apply_queue_batches 3",
            "raft_storage_queue_jobs 4",
            "raft_worker_events_queued 5",
            "raft_uncommitted_bytes 600",
            "raft_unapplied_bytes 700",
            "raft_waiting_proposals 8",
            "raft_pending_reads 9",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
    }

    #[test]
    fn peer_lag_is_cleared_when_the_node_stops_leading() {
        let m = PrometheusMetrics::new();
        m.observe_role(Role::Leader);
        m.observe_peer_lag(&NodeId::from("node-3"), 5, 1);
        assert!(m
            .encode()
            .contains("raft_peer_replication_lag{peer=\"node-3\"} 1"));
        m.observe_role(Role::Follower);
        assert!(!m.encode().contains("node-3"));
    }
}
