//! The lock service's Prometheus metrics (prefix `raftlock_`), registered next to the Raft
//! node's in one registry: table sizes, what the state machine did (replicated counts, so
//! every node reports the same), and this node's keep-alive batching.

use std::sync::{Arc, Mutex, PoisonError};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use raftlock_raft::PrometheusMetrics;

use crate::machine::{Gauges, Stats};

/// The service's metrics (cheap to clone).
#[derive(Clone, Debug)]
pub struct LockMetrics {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    sessions: Gauge,
    locks: Gauge,
    locks_held: Gauge,
    waiters: Gauge,
    held_open: Gauge,
    sessions_created: Counter,
    sessions_expired: Counter,
    sessions_closed: Counter,
    grants: Counter,
    releases: Counter,
    wait_timeouts: Counter,
    renewal_entries: Counter,
    renewal_size: Histogram,
    last: Mutex<Stats>,
}

fn gauge(v: usize) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl LockMetrics {
    /// Creates the metrics and registers them with the node's registry.
    pub fn new(registry: &PrometheusMetrics) -> Self {
        let inner = Inner {
            sessions: Gauge::default(),
            locks: Gauge::default(),
            locks_held: Gauge::default(),
            waiters: Gauge::default(),
            held_open: Gauge::default(),
            sessions_created: Counter::default(),
            sessions_expired: Counter::default(),
            sessions_closed: Counter::default(),
            grants: Counter::default(),
            releases: Counter::default(),
            wait_timeouts: Counter::default(),
            renewal_entries: Counter::default(),
            renewal_size: Histogram::new(exponential_buckets(1.0, 4.0, 9)),
            last: Mutex::new(Stats::default()),
        };
        let r = registry;
        r.register("raftlock_sessions", "Live sessions", inner.sessions.clone());
        r.register(
            "raftlock_locks",
            "Lock records (held, awaited, or recently free)",
            inner.locks.clone(),
        );
        r.register(
            "raftlock_locks_held",
            "Locks with a holder",
            inner.locks_held.clone(),
        );
        r.register("raftlock_waiters", "Queued acquires", inner.waiters.clone());
        r.register(
            "raftlock_held_open_acquires",
            "Blocking acquires this node holds open",
            inner.held_open.clone(),
        );
        r.register(
            "raftlock_sessions_created",
            "Sessions opened",
            inner.sessions_created.clone(),
        );
        r.register(
            "raftlock_sessions_expired",
            "Sessions ended by expiry",
            inner.sessions_expired.clone(),
        );
        r.register(
            "raftlock_sessions_closed",
            "Sessions closed by their client",
            inner.sessions_closed.clone(),
        );
        r.register("raftlock_grants", "Locks granted", inner.grants.clone());
        r.register(
            "raftlock_releases",
            "Locks released by their holder",
            inner.releases.clone(),
        );
        r.register(
            "raftlock_wait_timeouts",
            "Waits that timed out",
            inner.wait_timeouts.clone(),
        );
        r.register(
            "raftlock_renewal_entries",
            "Renewal entries this node proposed as leader",
            inner.renewal_entries.clone(),
        );
        r.register(
            "raftlock_renewal_sessions",
            "Sessions covered by one renewal entry",
            inner.renewal_size.clone(),
        );
        LockMetrics {
            inner: Arc::new(inner),
        }
    }

    /// Records the machine's sizes and counts after an apply.
    pub fn observe(&self, gauges: Gauges, stats: Stats) {
        let m = &self.inner;
        m.sessions.set(gauge(gauges.sessions));
        m.locks.set(gauge(gauges.locks));
        m.locks_held.set(gauge(gauges.locks_held));
        m.waiters.set(gauge(gauges.waiters));
        let mut last = m.last.lock().unwrap_or_else(PoisonError::into_inner);
        // The counts only grow (a snapshot restores later counts, never earlier ones).
        let add = |c: &Counter, now: u64, before: u64| {
            c.inc_by(now.saturating_sub(before));
        };
        add(
            &m.sessions_created,
            stats.sessions_created,
            last.sessions_created,
        );
        add(
            &m.sessions_expired,
            stats.sessions_expired,
            last.sessions_expired,
        );
        add(
            &m.sessions_closed,
            stats.sessions_closed,
            last.sessions_closed,
        );
        add(&m.grants, stats.grants, last.grants);
        add(&m.releases, stats.releases, last.releases);
        add(&m.wait_timeouts, stats.wait_timeouts, last.wait_timeouts);
        *last = stats;
    }

    /// Records one renewal entry covering `sessions`.
    pub fn observe_renewal(&self, sessions: usize) {
        self.inner.renewal_entries.inc();
        self.inner.renewal_size.observe(sessions as f64);
    }

    /// Records how many acquires this node holds open.
    pub fn set_held_open(&self, n: usize) {
        self.inner.held_open.set(gauge(n));
    }
}
