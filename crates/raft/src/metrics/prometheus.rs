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

use super::{Metrics, ProposalResult};
use crate::types::{Index, NodeId, Role, Term};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
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
    proposals: Family<ResultLabel, Counter>,
    persist_seconds: Histogram,
    persisted_entries: Counter,
    read_index_seconds: Histogram,
    snapshots: Counter,
    snapshot_seconds: Histogram,
    snapshot_index: Gauge,
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
            proposals: Family::default(),
            persist_seconds: latency(),
            persisted_entries: Counter::default(),
            read_index_seconds: latency(),
            snapshots: Counter::default(),
            snapshot_seconds: latency(),
            snapshot_index: Gauge::default(),
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
            r.register("raft_proposals", "Proposals by result", m.proposals.clone());
            r.register(
                "raft_persist_seconds",
                "Time to write and fsync one group-commit batch",
                m.persist_seconds.clone(),
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
        }
        m
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
            ProposalResult::Refused => "refused",
        };
        self.proposals.get_or_create(&ResultLabel { result }).inc();
    }

    fn observe_persist(&self, entries: usize, latency: Duration) {
        self.persist_seconds.observe(latency.as_secs_f64());
        self.persisted_entries.inc_by(entries as u64);
    }

    fn observe_read_index(&self, latency: Duration) {
        self.read_index_seconds.observe(latency.as_secs_f64());
    }

    fn observe_snapshot(&self, index: Index, latency: Duration) {
        self.snapshots.inc();
        self.snapshot_seconds.observe(latency.as_secs_f64());
        self.snapshot_index.set(gauge_value(index));
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
        ] {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
    }
}
