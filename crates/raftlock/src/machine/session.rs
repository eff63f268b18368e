//! A session's record and its table of remembered results (thesis §6.3).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use raftlock_raft::Index;

use super::command::SessionId;
use super::limits::DEDUP_ENTRIES_PER_SESSION;
use super::response::{AcquireOutcome, ReleaseOutcome};

/// A live session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Session {
    pub id: SessionId,
    pub client: String,
    pub ttl_ms: u64,
    pub lock_delay_ms: u64,
    pub created_ms: u64,
    /// Cluster time at which it expires unless renewed. It is alive while the clock is
    /// below this, and only an expiry entry removes it.
    pub deadline_ms: u64,
    /// Locks it holds (derived from the locks; rebuilt on restore).
    pub held: BTreeSet<String>,
    /// Locks it waits for (derived from the locks; rebuilt on restore).
    pub waiting: BTreeSet<String>,
    pub dedup: Dedup,
}

impl Session {
    pub fn is_alive(&self, now_ms: u64) -> bool {
        now_ms < self.deadline_ms
    }

    pub fn remaining_ms(&self, now_ms: u64) -> u64 {
        self.deadline_ms.saturating_sub(now_ms)
    }

    /// Locks held and awaited: bounded by `MAX_LOCKS_PER_SESSION`.
    pub fn lock_count(&self) -> usize {
        self.held.len() + self.waiting.len()
    }
}

/// A remembered result of a mutating request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Remembered {
    Acquire(AcquireOutcome),
    Release(ReleaseOutcome),
}

/// One remembered request: where it was first carried, the lock it named, its result.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Record {
    seq: Index,
    lock: String,
    result: Remembered,
}

/// The results of a session's latest requests, by request id, oldest dropped first.
/// Each remembers the lock it named, so that a request id reused for another lock is
/// refused rather than answered with the other lock's result.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Dedup {
    by_id: BTreeMap<String, Record>,
    /// Request ids by the index that first carried them: the eviction order.
    order: VecDeque<(Index, String)>,
}

impl Dedup {
    /// The lock a remembered request named, and its result.
    pub fn get(&self, request_id: &str) -> Option<(&str, &Remembered)> {
        self.by_id
            .get(request_id)
            .map(|r| (r.lock.as_str(), &r.result))
    }

    /// Remembers the result of a new request on `lock` first carried at `seq`.
    pub fn insert(&mut self, request_id: String, seq: Index, lock: &str, result: Remembered) {
        assert!(
            self.order.back().is_none_or(|(last, _)| *last < seq),
            "dedup entries are inserted in log order"
        );
        if self
            .by_id
            .insert(
                request_id.clone(),
                Record {
                    seq,
                    lock: lock.to_string(),
                    result,
                },
            )
            .is_some()
        {
            // A caller looks a request up before inserting it; a duplicate means the
            // caller did not, which would lose the first answer.
            self.order.retain(|(_, id)| *id != request_id);
        }
        self.order.push_back((seq, request_id));
        while self.order.len() > DEDUP_ENTRIES_PER_SESSION {
            if let Some((_, oldest)) = self.order.pop_front() {
                self.by_id.remove(&oldest);
            }
        }
        assert_eq!(self.by_id.len(), self.order.len());
    }

    /// Replaces the result of a request still remembered (a wait that ended); forgotten
    /// requests stay forgotten.
    pub fn update(&mut self, request_id: &str, result: Remembered) {
        if let Some(entry) = self.by_id.get_mut(request_id) {
            entry.result = result;
        }
    }

    /// Entries oldest first, as the snapshot lists them: request id, index, lock, result.
    pub fn entries(&self) -> impl Iterator<Item = (&str, Index, &str, &Remembered)> {
        self.order.iter().filter_map(|(seq, id)| {
            self.by_id
                .get(id)
                .map(|r| (id.as_str(), *seq, r.lock.as_str(), &r.result))
        })
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.order.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn granted(token: u64) -> Remembered {
        Remembered::Acquire(AcquireOutcome::Granted {
            token,
            acquired_ms: 0,
        })
    }

    #[test]
    fn keeps_the_latest_entries_and_drops_the_oldest() {
        let mut d = Dedup::default();
        let cap = DEDUP_ENTRIES_PER_SESSION as u64;
        for i in 1..=cap + 3 {
            d.insert(format!("r{i}"), i, "L", granted(i));
        }
        assert_eq!(d.len(), DEDUP_ENTRIES_PER_SESSION);
        assert!(d.get("r1").is_none() && d.get("r3").is_none());
        assert_eq!(d.get("r4"), Some(("L", &granted(4))));
        assert_eq!(
            d.entries().next().map(|(id, seq, lock, _)| (id, seq, lock)),
            Some(("r4", 4, "L"))
        );
        d.update("r4", granted(99));
        assert_eq!(d.get("r4"), Some(("L", &granted(99))));
        d.update("r1", granted(1));
        assert!(d.get("r1").is_none(), "a forgotten request is not revived");
    }
}
