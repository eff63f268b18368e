//! Deadlines in time order: session expiries, wait timeouts and lock-delays, so that the
//! leader finds what is due without scanning every session; and free locks in the order
//! they became free, so that the oldest is forgotten first. Derived from the records (not
//! in the snapshot) and rebuilt on restore.

use std::collections::BTreeSet;

use raftlock_raft::Index;

/// Work the leader proposes in one expiry entry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Due {
    /// Sessions whose deadline passed.
    pub sessions: Vec<Index>,
    /// Waits (lock, session) whose deadline passed.
    pub waits: Vec<(String, Index)>,
    /// Locks whose lock-delay ended.
    pub locks: Vec<String>,
}

impl Due {
    /// Nothing is due.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty() && self.waits.is_empty() && self.locks.is_empty()
    }

    /// Items in all.
    pub fn len(&self) -> usize {
        self.sessions.len() + self.waits.len() + self.locks.len()
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Schedule {
    sessions: BTreeSet<(u64, Index)>,
    waits: BTreeSet<(u64, Index, String)>,
    delays: BTreeSet<(u64, String)>,
    idle: BTreeSet<(Index, String)>,
}

impl Schedule {
    pub fn session_deadline(&mut self, session: Index, old: Option<u64>, new: Option<u64>) {
        if let Some(old) = old {
            let removed = self.sessions.remove(&(old, session));
            assert!(removed, "session {session} was scheduled at {old}");
        }
        if let Some(new) = new {
            self.sessions.insert((new, session));
        }
    }

    pub fn add_wait(&mut self, deadline: u64, session: Index, lock: &str) {
        self.waits.insert((deadline, session, lock.to_string()));
    }

    pub fn remove_wait(&mut self, deadline: u64, session: Index, lock: &str) {
        let removed = self.waits.remove(&(deadline, session, lock.to_string()));
        assert!(
            removed,
            "wait of {session} on {lock} was scheduled at {deadline}"
        );
    }

    pub fn add_delay(&mut self, until: u64, lock: &str) {
        self.delays.insert((until, lock.to_string()));
    }

    pub fn remove_delay(&mut self, until: u64, lock: &str) {
        self.delays.remove(&(until, lock.to_string()));
    }

    pub fn add_idle(&mut self, since: Index, lock: &str) {
        self.idle.insert((since, lock.to_string()));
    }

    pub fn remove_idle(&mut self, since: Index, lock: &str) {
        let removed = self.idle.remove(&(since, lock.to_string()));
        assert!(removed, "idle lock {lock} was listed since {since}");
    }

    pub fn idle_count(&self) -> usize {
        self.idle.len()
    }

    /// The free locks, longest free first.
    pub fn idle_oldest_first(&self) -> impl Iterator<Item = &(Index, String)> {
        self.idle.iter()
    }

    /// What is due at `now_ms`, at most `limit` items.
    pub fn due(&self, now_ms: u64, limit: usize) -> Due {
        let mut due = Due::default();
        for (deadline, session) in &self.sessions {
            if *deadline > now_ms || due.len() >= limit {
                break;
            }
            due.sessions.push(*session);
        }
        for (deadline, session, lock) in &self.waits {
            if *deadline > now_ms || due.len() >= limit {
                break;
            }
            due.waits.push((lock.clone(), *session));
        }
        for (until, lock) in &self.delays {
            if *until > now_ms || due.len() >= limit {
                break;
            }
            due.locks.push(lock.clone());
        }
        due
    }

    /// Scheduled deadlines of each kind, for invariant checks.
    pub fn counts(&self) -> (usize, usize, usize) {
        (self.sessions.len(), self.waits.len(), self.delays.len())
    }
}
