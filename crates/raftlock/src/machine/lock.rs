//! A lock's record: its holders (one, for the exclusive locks of this format; the list and
//! the limit leave room for shared locks and semaphores) and its wait queue.

use raftlock_raft::Index;

/// One lock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Lock {
    /// Holders allowed at once (1: exclusive).
    pub limit: u32,
    /// In grant order.
    pub holders: Vec<Holder>,
    /// In grant order: higher priority first, then by the index that queued them.
    pub waiters: Vec<Waiter>,
    /// While the clock is below this, nobody is granted the lock (lock-delay); 0: none.
    pub blocked_until_ms: u64,
    /// The index at which it last became free with nobody waiting; 0 while in use.
    pub idle_since: Index,
}

/// A grant in force.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Holder {
    /// The holding session's index.
    pub session: Index,
    /// The fencing token: the index of the granting entry.
    pub token: u64,
    pub acquired_ms: u64,
}

/// A queued acquire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Waiter {
    pub session: Index,
    pub request_id: String,
    pub priority: i32,
    /// The index of the entry that queued it.
    pub seq: Index,
    pub enqueued_ms: u64,
    pub deadline_ms: u64,
}

impl Waiter {
    /// Sort key of the queue: higher priority first, FIFO within a priority.
    fn key(&self) -> (std::cmp::Reverse<i32>, Index) {
        (std::cmp::Reverse(self.priority), self.seq)
    }
}

impl Lock {
    pub fn exclusive() -> Self {
        Lock {
            limit: 1,
            holders: Vec::new(),
            waiters: Vec::new(),
            blocked_until_ms: 0,
            idle_since: 0,
        }
    }

    pub fn holder(&self, session: Index) -> Option<&Holder> {
        self.holders.iter().find(|h| h.session == session)
    }

    /// The holder a client sees first (the only one of an exclusive lock).
    pub fn first_holder(&self) -> Option<&Holder> {
        self.holders.first()
    }

    pub fn has_room(&self) -> bool {
        self.holders.len() < self.limit as usize
    }

    pub fn is_blocked(&self, now_ms: u64) -> bool {
        now_ms < self.blocked_until_ms
    }

    /// Nobody holds or waits for it.
    pub fn is_unused(&self) -> bool {
        self.holders.is_empty() && self.waiters.is_empty()
    }

    pub fn waiter_position(&self, session: Index) -> Option<usize> {
        self.waiters.iter().position(|w| w.session == session)
    }

    /// Queues `waiter` in grant order.
    pub fn enqueue(&mut self, waiter: Waiter) {
        assert!(
            self.waiter_position(waiter.session).is_none(),
            "a session waits at most once per lock"
        );
        let at = self.waiters.partition_point(|w| w.key() <= waiter.key());
        self.waiters.insert(at, waiter);
    }

    pub fn remove_holder(&mut self, session: Index) -> Option<Holder> {
        let at = self.holders.iter().position(|h| h.session == session)?;
        Some(self.holders.remove(at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiter(session: Index, priority: i32, seq: Index) -> Waiter {
        Waiter {
            session,
            request_id: format!("r{session}"),
            priority,
            seq,
            enqueued_ms: 0,
            deadline_ms: 0,
        }
    }

    #[test]
    fn the_queue_serves_higher_priority_first_and_fifo_within_one() {
        let mut lock = Lock::exclusive();
        lock.enqueue(waiter(1, 0, 10));
        lock.enqueue(waiter(2, 5, 11));
        lock.enqueue(waiter(3, 0, 12));
        lock.enqueue(waiter(4, 5, 13));
        lock.enqueue(waiter(5, -1, 14));
        let order: Vec<Index> = lock.waiters.iter().map(|w| w.session).collect();
        assert_eq!(order, vec![2, 4, 1, 3, 5]);
        assert_eq!(lock.waiter_position(3), Some(3));
    }
}
