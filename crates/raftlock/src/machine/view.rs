//! What readers see of the machine: a lock with its holder and queue, a page of locks, a
//! session, a token check. Plain values, copied out under the read lock.

use std::ops::Bound;

use super::command::SessionId;
use super::lock::Lock;
use super::LockMachine;

/// A lock as clients see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockView {
    /// Its name.
    pub name: String,
    /// Its holder, if held.
    pub holder: Option<HolderView>,
    /// Its queue, in grant order.
    pub waiters: Vec<WaiterView>,
    /// Set while a lock-delay blocks it (cluster time, ms).
    pub blocked_until_ms: Option<u64>,
}

/// The holder of a lock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HolderView {
    /// The holding session.
    pub session: SessionId,
    /// Its client name.
    pub client: String,
    /// The grant's fencing token.
    pub token: u64,
    /// When it was granted (cluster time, ms).
    pub acquired_ms: u64,
    /// When the holder's session expires unless kept alive (cluster time, ms).
    pub expires_ms: u64,
}

/// A queued acquire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WaiterView {
    /// The waiting session.
    pub session: SessionId,
    /// Its client name.
    pub client: String,
    /// Its priority.
    pub priority: i32,
    /// When it was queued (cluster time, ms).
    pub enqueued_ms: u64,
    /// When the wait times out (cluster time, ms).
    pub deadline_ms: u64,
}

/// A session as clients see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionView {
    /// Its id.
    pub id: SessionId,
    /// Its client name.
    pub client: String,
    /// Its TTL.
    pub ttl_ms: u64,
    /// Its lock-delay.
    pub lock_delay_ms: u64,
    /// When it was created (cluster time, ms).
    pub created_ms: u64,
    /// When it expires unless kept alive (cluster time, ms).
    pub deadline_ms: u64,
    /// Time left at the machine's clock.
    pub remaining_ms: u64,
    /// Locks it holds.
    pub held: Vec<String>,
    /// Locks it waits for.
    pub waiting: Vec<String>,
}

/// The answer to a token check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenCheck {
    /// Whether the token is the lock's current one, held by a live session.
    pub valid: bool,
    /// The current holder's token, if the lock is held.
    pub current_token: Option<u64>,
}

impl LockMachine {
    fn view_of(&self, name: &str, lock: &Lock) -> LockView {
        let now = self.now_ms;
        let client = |s: u64| {
            self.sessions
                .get(&s)
                .map(|s| s.client.clone())
                .unwrap_or_default()
        };
        LockView {
            name: name.to_string(),
            holder: lock.first_holder().map(|h| HolderView {
                session: self.session_id(h.session),
                client: client(h.session),
                token: h.token,
                acquired_ms: h.acquired_ms,
                expires_ms: self.sessions.get(&h.session).map_or(0, |s| s.deadline_ms),
            }),
            waiters: lock
                .waiters
                .iter()
                .map(|w| WaiterView {
                    session: self.session_id(w.session),
                    client: client(w.session),
                    priority: w.priority,
                    enqueued_ms: w.enqueued_ms,
                    deadline_ms: w.deadline_ms,
                })
                .collect(),
            blocked_until_ms: lock.is_blocked(now).then_some(lock.blocked_until_ms),
        }
    }

    /// The lock `name`, if the machine has a record of it (held, awaited, or free and
    /// among the last [`MAX_IDLE_LOCKS`](super::limits::MAX_IDLE_LOCKS) to become free).
    pub fn lock(&self, name: &str) -> Option<LockView> {
        self.locks.get(name).map(|l| self.view_of(name, l))
    }

    /// Up to `limit` locks whose names start with `prefix` and sort after `after`, in name
    /// order; and whether more follow.
    pub fn list(&self, prefix: &str, after: Option<&str>, limit: usize) -> (Vec<LockView>, bool) {
        let start = match after {
            Some(a) if a >= prefix => Bound::Excluded(a.to_string()),
            _ => Bound::Included(prefix.to_string()),
        };
        let mut page = Vec::with_capacity(limit.min(1024));
        let mut more = false;
        for (name, lock) in self.locks.range::<String, _>((start, Bound::Unbounded)) {
            if !name.starts_with(prefix) {
                break;
            }
            if page.len() == limit {
                more = true;
                break;
            }
            page.push(self.view_of(name, lock));
        }
        (page, more)
    }

    /// Whether `token` is the current fencing token of `name` (Chubby's `CheckSequencer`):
    /// the lock is held with it by a session that is alive.
    pub fn check_token(&self, name: &str, token: u64) -> TokenCheck {
        let now = self.now_ms;
        let holder = self.locks.get(name).and_then(Lock::first_holder);
        let alive = holder
            .and_then(|h| self.sessions.get(&h.session))
            .is_some_and(|s| s.is_alive(now));
        TokenCheck {
            valid: holder.is_some_and(|h| h.token == token) && alive,
            current_token: holder.map(|h| h.token),
        }
    }

    /// The session `id`, if it exists (alive or past its deadline but not yet expired).
    pub fn session(&self, id: SessionId) -> Option<SessionView> {
        let s = self.sessions.get(&id.index).filter(|s| s.id == id)?;
        Some(SessionView {
            id: s.id,
            client: s.client.clone(),
            ttl_ms: s.ttl_ms,
            lock_delay_ms: s.lock_delay_ms,
            created_ms: s.created_ms,
            deadline_ms: s.deadline_ms,
            remaining_ms: s.remaining_ms(self.now_ms),
            held: s.held.iter().cloned().collect(),
            waiting: s.waiting.iter().cloned().collect(),
        })
    }

    /// What the machine remembers of `session`'s acquire `request_id` of `lock`, if
    /// anything.
    pub fn remembered_acquire(
        &self,
        session: SessionId,
        lock: &str,
        request_id: &str,
    ) -> Option<super::AcquireOutcome> {
        let s = self
            .sessions
            .get(&session.index)
            .filter(|s| s.id == session)?;
        match s.dedup.get(request_id)? {
            (l, super::session::Remembered::Acquire(o)) if l == lock => Some(o.clone()),
            _ => None,
        }
    }

    /// Whether the session `id` exists and is alive at the machine's clock.
    pub fn session_is_alive(&self, id: SessionId) -> bool {
        self.live_session(id).is_some()
    }
}
