//! The leader's view of one follower (the original's per-peer `NextIndex` / `MatchIndex`,
//! with etcd's probe / replicate / snapshot flow-control states).

use super::inflight::Inflights;
use crate::core::snapshot::Transfer;
use crate::types::{Index, ReplicationMode};

#[derive(Debug, Clone)]
pub(crate) struct Progress {
    pub(crate) match_index: Index,
    pub(crate) next_index: Index,
    pub(crate) mode: ReplicationMode,
    /// In probe mode: a request is out and we wait for its answer (or a heartbeat response).
    pub(crate) probe_sent: bool,
    pub(crate) inflights: Inflights,
    /// Heard from since the last CheckQuorum round.
    pub(crate) recent_active: bool,
    /// Core tick of the last response in this term.
    pub(crate) last_response_tick: Option<u64>,
    /// Highest commit index sent to the follower (capped at what the request let it
    /// commit), so an idle follower that missed a commit update gets one (etcd's
    /// `sentCommit`).
    pub(crate) sent_commit: Index,
    /// The snapshot being sent, in snapshot mode.
    pub(crate) transfer: Option<Transfer>,
    /// Highest heartbeat round the follower acknowledged.
    pub(crate) read_acked: u64,
}

impl Progress {
    pub(crate) fn new(next_index: Index, max_inflight: usize) -> Self {
        Progress {
            match_index: 0,
            next_index,
            mode: ReplicationMode::Probe,
            probe_sent: false,
            inflights: Inflights::new(max_inflight),
            recent_active: false,
            last_response_tick: None,
            sent_commit: 0,
            transfer: None,
            read_acked: 0,
        }
    }

    /// Whether sending must wait: an unanswered probe, a full window, or a snapshot in flight.
    pub(crate) fn is_paused(&self) -> bool {
        match self.mode {
            ReplicationMode::Probe => self.probe_sent,
            ReplicationMode::Replicate => self.inflights.full(),
            ReplicationMode::Snapshot => true,
        }
    }

    pub(crate) fn become_probe(&mut self) {
        self.mode = ReplicationMode::Probe;
        self.next_index = self.match_index + 1;
        self.probe_sent = false;
        self.inflights.reset();
    }

    pub(crate) fn become_replicate(&mut self) {
        self.mode = ReplicationMode::Replicate;
        self.next_index = self.match_index + 1;
        self.probe_sent = false;
        self.inflights.reset();
    }

    /// A success covering `index`; returns whether `match_index` advanced. Duplicate and
    /// reordered responses never move anything backwards.
    pub(crate) fn maybe_update(&mut self, index: Index) -> bool {
        let updated = index > self.match_index;
        if updated {
            self.match_index = index;
            self.probe_sent = false;
        }
        self.next_index = self.next_index.max(index + 1);
        updated
    }

    /// A rejection of a request whose `prev_log_index` was `rejected`, with the follower's
    /// hint translated into the next index to try. Returns `false` for a stale rejection
    /// (one answering a request sent before the progress moved on), which must be ignored.
    pub(crate) fn maybe_decrease_to(&mut self, rejected: Index, hinted_next: Index) -> bool {
        match self.mode {
            ReplicationMode::Replicate => {
                if rejected <= self.match_index {
                    return false;
                }
                self.become_probe();
                self.next_index = hinted_next.min(rejected).max(self.match_index + 1);
                true
            }
            ReplicationMode::Probe => {
                if self.next_index == 0 || self.next_index - 1 != rejected {
                    return false;
                }
                self.next_index = hinted_next.min(rejected).max(self.match_index + 1);
                self.probe_sent = false;
                true
            }
            ReplicationMode::Snapshot => false,
        }
    }

    /// The answer to the current probe says the follower's log ends at `follower_last`,
    /// below what it acknowledged: it restarted without its data (a wiped or replaced data
    /// directory). Its match index drops to what it holds, which only makes the leader
    /// more conservative (commit never goes back; entries are sent again), and the probe
    /// resumes there — with a snapshot if those entries were compacted. Without this the
    /// leader kept probing above the old match index forever. Returns whether it applied.
    pub(crate) fn lost_entries(&mut self, rejected: Index, follower_last: Index) -> bool {
        match self.mode {
            ReplicationMode::Probe
                if self.next_index == rejected + 1 && follower_last < self.match_index =>
            {
                self.match_index = follower_last;
                self.next_index = follower_last + 1;
                self.probe_sent = false;
                true
            }
            _ => false,
        }
    }

    /// Records that a request carrying entries up to `last` (or none) was sent.
    pub(crate) fn sent(&mut self, last: Option<Index>) {
        match self.mode {
            ReplicationMode::Replicate => {
                if let Some(last) = last {
                    self.next_index = last + 1;
                    self.inflights.add(last);
                }
            }
            ReplicationMode::Probe => self.probe_sent = true,
            ReplicationMode::Snapshot => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_rejections_are_ignored() {
        let mut p = Progress::new(10, 4);
        p.become_replicate();
        p.maybe_update(7);
        // A rejection of prev index 5 predates the success at 7.
        assert!(!p.maybe_decrease_to(5, 3));
        assert_eq!(p.mode, ReplicationMode::Replicate);
        assert!(p.maybe_decrease_to(9, 8));
        assert_eq!((p.mode, p.next_index), (ReplicationMode::Probe, 8));
        // In probe mode only the rejection of the outstanding probe counts.
        assert!(!p.maybe_decrease_to(9, 8));
        assert!(p.maybe_decrease_to(7, 1));
        assert_eq!(p.next_index, 8, "never below match + 1");
    }

    #[test]
    fn duplicate_successes_do_not_move_backwards() {
        let mut p = Progress::new(1, 4);
        assert!(p.maybe_update(5));
        assert!(!p.maybe_update(3));
        assert_eq!((p.match_index, p.next_index), (5, 6));
    }
}
