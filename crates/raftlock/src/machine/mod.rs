//! The lock state machine: sessions, locks, wait queues and remembered results, changed
//! only by applying log entries. Pure and synchronous like the Raft core: no I/O, no
//! clock, no tasks, no randomness, so that every replica that applies the same log holds
//! the same state and writes the same snapshot bytes.
//!
//! The rules it keeps (see `crates/raftlock/README.md`):
//!
//! - **Time comes only from the log.** Each entry carries the leader's clock; applying it
//!   moves the machine's clock to `max(clock, stamp)`. Every deadline is compared with
//!   that clock. Sessions past their deadline can do nothing, and their locks are released
//!   only by an [`Command::Expire`] the leader proposes, which re-checks each deadline.
//! - **A new term extends every session** by the proposer's grace (its maximum election
//!   timeout) when the term's first entry is applied, so keep-alives lost with the old
//!   leader do not expire anyone.
//! - **Fencing token = the index of the granting entry**, also for a grant to a waiter on
//!   a release or an expiry; renewals never change it.
//! - **Retried requests get their first answer** from a bounded per-session table.
//!
//! Modules: [`command`] (what goes into the log), [`response`] (what applying answers,
//! and events), `session`, `lock` (the records), `schedule` (deadlines in time order),
//! [`limits`] (bounds and input checks), [`codec`] (the byte format), `snapshot`,
//! [`view`] (what readers see).

pub mod codec;
pub mod command;
pub mod limits;
mod lock;
pub mod response;
mod schedule;
mod session;
mod snapshot;
pub mod view;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use raftlock_raft::{Index, Term};

pub use command::{AcquireCommand, BadSessionId, Command, Entry, ReleaseCommand, SessionId};
pub use response::{
    AcquireOutcome, EndCause, Event, EventKind, NotAcquired, Refusal, RefusalKind, ReleaseOutcome,
    Response,
};
pub use schedule::Due;
pub use snapshot::SnapshotError;

use limits::{
    check_client_name, check_lock_delay, check_lock_name, check_request_id, check_ttl, check_wait,
    MAX_IDLE_LOCKS, MAX_LOCKS_PER_SESSION, MAX_RETRY_HINT_MS, MIN_RETRY_HINT_MS,
};
use lock::{Holder, Lock, Waiter};
use schedule::Schedule;
use session::{Dedup, Remembered, Session};

/// Counters of what the machine did since the cluster began (replicated, so every node
/// reports the same numbers).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Sessions opened.
    pub sessions_created: u64,
    /// Sessions ended by expiry.
    pub sessions_expired: u64,
    /// Sessions closed by their client.
    pub sessions_closed: u64,
    /// Locks granted (immediately or to a waiter).
    pub grants: u64,
    /// Locks released by their holder.
    pub releases: u64,
    /// Waits that timed out.
    pub wait_timeouts: u64,
}

/// The current size of the machine's tables.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Gauges {
    /// Live session records (including any past their deadline and not yet expired).
    pub sessions: usize,
    /// Lock records, free ones included.
    pub locks: usize,
    /// Locks with a holder.
    pub locks_held: usize,
    /// Queued acquires.
    pub waiters: usize,
}

/// The lock service's replicated state machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockMachine {
    now_ms: u64,
    last_term: Term,
    applied: Index,
    sessions: BTreeMap<Index, Session>,
    locks: BTreeMap<String, Lock>,
    stats: Stats,
    // Derived from the records above; rebuilt on restore.
    schedule: Schedule,
    locks_held: usize,
    waiters: usize,
    /// Events of the entries applied since the last `take_events`.
    events: Vec<Event>,
    /// [`MAX_IDLE_LOCKS`]; smaller in tests.
    max_idle_locks: usize,
}

impl Default for LockMachine {
    fn default() -> Self {
        LockMachine {
            now_ms: 0,
            last_term: 0,
            applied: 0,
            sessions: BTreeMap::new(),
            locks: BTreeMap::new(),
            stats: Stats::default(),
            schedule: Schedule::default(),
            locks_held: 0,
            waiters: 0,
            events: Vec::new(),
            max_idle_locks: MAX_IDLE_LOCKS,
        }
    }
}

impl LockMachine {
    /// An empty machine.
    pub fn new() -> Self {
        Self::default()
    }

    /// The machine's clock: the largest stamp applied (cluster time, ms).
    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// The last index applied.
    pub fn applied(&self) -> Index {
        self.applied
    }

    /// The term of the last entry applied.
    pub fn last_term(&self) -> Term {
        self.last_term
    }

    /// Counters since the cluster began.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Current table sizes.
    pub fn gauges(&self) -> Gauges {
        Gauges {
            sessions: self.sessions.len(),
            locks: self.locks.len(),
            locks_held: self.locks_held,
            waiters: self.waiters,
        }
    }

    /// Takes the events of the entries applied since the last call.
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    /// What the leader should expire at `now_ms` (at most `limit` items).
    pub fn due(&self, now_ms: u64, limit: usize) -> Due {
        self.schedule.due(now_ms, limit)
    }

    /// Applies an entry's bytes. An entry that does not decode is answered with a
    /// refusal and changes nothing but the applied index.
    pub fn apply_bytes(&mut self, index: Index, term: Term, data: &[u8]) -> Response {
        match codec::decode_entry(data) {
            Ok(entry) => self.apply(index, term, entry),
            Err(e) => {
                self.advance_index(index);
                Response::Refused(Refusal::new(
                    RefusalKind::BadRequest,
                    format!("not a RaftLock entry: {e}"),
                ))
            }
        }
    }

    /// Applies one entry at `index` of `term`.
    pub fn apply(&mut self, index: Index, term: Term, entry: Entry) -> Response {
        self.advance_index(index);
        self.now_ms = self.now_ms.max(entry.stamp_ms);
        if term > self.last_term {
            self.promote(index, entry.grace_ms);
            self.last_term = term;
        }
        match entry.command {
            Command::CreateSession {
                nonce,
                ttl_ms,
                lock_delay_ms,
                client,
                max_sessions,
            } => self.create_session(index, nonce, ttl_ms, lock_delay_ms, client, max_sessions),
            Command::Renew { sessions } => self.renew(&sessions),
            Command::CloseSession { session } => self.close_session(index, session),
            Command::Acquire(c) => self.acquire(index, c),
            Command::Release(c) => self.release(index, c),
            Command::CancelWait {
                session,
                lock,
                request_id,
            } => self.cancel_wait(index, session, &lock, &request_id),
            Command::Expire {
                sessions,
                waits,
                locks,
            } => self.expire(index, &sessions, &waits, &locks),
        }
    }

    fn advance_index(&mut self, index: Index) {
        assert!(
            index > self.applied,
            "entries are applied in log order ({index} after {})",
            self.applied
        );
        self.applied = index;
    }

    /// The first entry of a new term: no session may expire before the new leader has
    /// had the time to hear from its client (etcd's lessor `Promote`).
    fn promote(&mut self, index: Index, grace_ms: u64) {
        let floor = self.now_ms.saturating_add(grace_ms);
        let mut revived = false;
        for session in self.sessions.values_mut() {
            if session.deadline_ms < floor {
                revived |= !session.is_alive(self.now_ms);
                self.schedule.session_deadline(
                    session.id.index,
                    Some(session.deadline_ms),
                    Some(floor),
                );
                session.deadline_ms = floor;
            }
        }
        if revived {
            // A session past its deadline that waited was passed over by grants; alive
            // again, it may be first in line for a lock that is free.
            let free: Vec<String> = self
                .locks
                .iter()
                .filter(|(_, l)| l.has_room() && l.blocked_until_ms == 0 && !l.waiters.is_empty())
                .map(|(name, _)| name.clone())
                .collect();
            for name in free {
                self.settle(index, &name);
            }
        }
    }

    /// The session `id` names, if it exists and is alive.
    fn live_session(&self, id: SessionId) -> Option<&Session> {
        self.sessions
            .get(&id.index)
            .filter(|s| s.id.nonce == id.nonce && s.is_alive(self.now_ms))
    }

    fn session_id(&self, index: Index) -> SessionId {
        // Holders and waiters always name live records (checked by `check_invariants`).
        self.sessions
            .get(&index)
            .map_or(SessionId { index, nonce: 0 }, |s| s.id)
    }

    fn create_session(
        &mut self,
        index: Index,
        nonce: u64,
        ttl_ms: u64,
        lock_delay_ms: u64,
        client: String,
        max_sessions: u64,
    ) -> Response {
        let checked = check_ttl(ttl_ms)
            .and_then(|()| check_lock_delay(lock_delay_ms))
            .and_then(|()| check_client_name(&client));
        if let Err(e) = checked {
            return Response::Refused(Refusal::new(RefusalKind::BadRequest, e.0));
        }
        if self.sessions.len() as u64 >= max_sessions {
            return Response::Refused(Refusal::new(
                RefusalKind::TooManySessions,
                format!(
                    "the cluster holds {} sessions, its limit",
                    self.sessions.len()
                ),
            ));
        }
        let id = SessionId { index, nonce };
        let deadline_ms = self.now_ms.saturating_add(ttl_ms);
        self.sessions.insert(
            index,
            Session {
                id,
                client,
                ttl_ms,
                lock_delay_ms,
                created_ms: self.now_ms,
                deadline_ms,
                held: Default::default(),
                waiting: Default::default(),
                dedup: Dedup::default(),
            },
        );
        self.schedule
            .session_deadline(index, None, Some(deadline_ms));
        self.stats.sessions_created += 1;
        Response::Created {
            session: id,
            ttl_ms,
            lock_delay_ms,
        }
    }

    fn renew(&mut self, ids: &[SessionId]) -> Response {
        let now = self.now_ms;
        let remaining_ms = ids
            .iter()
            .map(|id| match self.sessions.get_mut(&id.index) {
                Some(s) if s.id.nonce == id.nonce && s.is_alive(now) => {
                    let deadline = now.saturating_add(s.ttl_ms).max(s.deadline_ms);
                    if deadline != s.deadline_ms {
                        self.schedule.session_deadline(
                            id.index,
                            Some(s.deadline_ms),
                            Some(deadline),
                        );
                        s.deadline_ms = deadline;
                    }
                    s.remaining_ms(now)
                }
                _ => 0,
            })
            .collect();
        Response::Renewed { remaining_ms }
    }

    fn close_session(&mut self, index: Index, id: SessionId) -> Response {
        if self.live_session(id).is_none() {
            return session_not_found(id);
        }
        let released = self.end_session(index, id.index, EndCause::Closed);
        self.stats.sessions_closed += 1;
        Response::Closed { released }
    }

    /// Removes a session: releases what it holds (with its lock-delay if it expired),
    /// ends its waits. Returns the locks it held.
    fn end_session(&mut self, index: Index, session: Index, cause: EndCause) -> Vec<String> {
        let Some(s) = self.sessions.remove(&session) else {
            return Vec::new();
        };
        self.schedule
            .session_deadline(session, Some(s.deadline_ms), None);
        let delay = if cause == EndCause::Expired {
            s.lock_delay_ms
        } else {
            0
        };
        for name in &s.waiting {
            let Some(lock) = self.locks.get_mut(name) else {
                continue;
            };
            let Some(at) = lock.waiter_position(session) else {
                continue;
            };
            let w = lock.waiters.remove(at);
            self.waiters -= 1;
            self.schedule.remove_wait(w.deadline_ms, session, name);
            let outcome = self.not_acquired_outcome(name, NotAcquired::SessionEnded);
            self.events.push(Event {
                index,
                at_ms: self.now_ms,
                kind: EventKind::WaitEnded {
                    lock: name.clone(),
                    session: s.id,
                    request_id: w.request_id,
                    outcome,
                },
            });
        }
        let mut released = Vec::with_capacity(s.held.len());
        for name in &s.held {
            let Some(lock) = self.locks.get_mut(name) else {
                continue;
            };
            let Some(holder) = lock.remove_holder(session) else {
                continue;
            };
            if lock.holders.is_empty() {
                self.locks_held -= 1;
            }
            if delay > 0 {
                let until = self.now_ms.saturating_add(delay);
                if until > lock.blocked_until_ms {
                    if lock.blocked_until_ms != 0 {
                        self.schedule.remove_delay(lock.blocked_until_ms, name);
                    }
                    lock.blocked_until_ms = until;
                    self.schedule.add_delay(until, name);
                }
            }
            self.events.push(Event {
                index,
                at_ms: self.now_ms,
                kind: EventKind::Ended {
                    lock: name.clone(),
                    session: s.id,
                    token: holder.token,
                    cause,
                },
            });
            released.push(name.clone());
        }
        for name in s.waiting.iter().chain(&s.held) {
            self.settle(index, name);
            self.touch(index, name);
        }
        released
    }

    fn acquire(&mut self, index: Index, c: AcquireCommand) -> Response {
        let Some(session) = self.live_session(c.session) else {
            return session_not_found(c.session);
        };
        match session.dedup.get(&c.request_id) {
            Some((lock, _)) if lock != c.lock => {
                return bad_request(format!(
                    "request_id `{}` was used for lock `{lock}`",
                    c.request_id
                ))
            }
            Some((_, Remembered::Acquire(outcome))) => return Response::Acquire(outcome.clone()),
            Some((_, Remembered::Release(_))) => {
                return bad_request(format!(
                    "request_id `{}` was used for a release",
                    c.request_id
                ))
            }
            None => {}
        }
        let checked = check_lock_name(&c.lock)
            .and_then(|()| check_wait(c.wait_ms))
            .and_then(|()| check_request_id(&c.request_id));
        if let Err(e) = checked {
            return bad_request(e.0);
        }
        let s = c.session.index;
        let name = c.lock.as_str();
        let adds = self
            .locks
            .get(name)
            .is_none_or(|l| l.holder(s).is_none() && l.waiter_position(s).is_none());
        if adds && session.lock_count() >= MAX_LOCKS_PER_SESSION {
            return Response::Refused(Refusal::new(
                RefusalKind::TooManyLocks,
                format!(
                    "session {} holds and waits for {MAX_LOCKS_PER_SESSION} locks, its limit",
                    c.session
                ),
            ));
        }
        self.locks
            .entry(c.lock.clone())
            .or_insert_with(Lock::exclusive);
        self.settle(index, name);
        let outcome = self.acquire_outcome(index, &c);
        if let Some(session) = self.sessions.get_mut(&s) {
            session.dedup.insert(
                c.request_id,
                index,
                name,
                Remembered::Acquire(outcome.clone()),
            );
        }
        self.touch(index, name);
        Response::Acquire(outcome)
    }

    fn acquire_outcome(&mut self, index: Index, c: &AcquireCommand) -> AcquireOutcome {
        let s = c.session.index;
        let name = c.lock.as_str();
        let now = self.now_ms;
        let Some(lock) = self.locks.get_mut(name) else {
            unreachable!("acquire created the lock record");
        };
        if let Some(h) = lock.holder(s) {
            // Re-entrant: the session already holds it; the grant and its token stand.
            return AcquireOutcome::Granted {
                token: h.token,
                acquired_ms: h.acquired_ms,
            };
        }
        if let Some(at) = lock.waiter_position(s) {
            if lock.waiters[at].request_id == c.request_id {
                // A retry whose remembered result was dropped: still waiting.
                return AcquireOutcome::Waiting {
                    deadline_ms: lock.waiters[at].deadline_ms,
                };
            }
            if c.wait_ms == 0 {
                let why = why_not(lock, now);
                return self.not_acquired_outcome(name, why);
            }
            // A new blocking acquire of the same session takes over the wait and keeps
            // its place in the queue; the older request ends.
            let deadline_ms = now.saturating_add(c.wait_ms);
            let w = &mut lock.waiters[at];
            let old_request = std::mem::replace(&mut w.request_id, c.request_id.clone());
            let old_deadline = std::mem::replace(&mut w.deadline_ms, deadline_ms);
            self.schedule.remove_wait(old_deadline, s, name);
            self.schedule.add_wait(deadline_ms, s, name);
            let ended = self.not_acquired_outcome(name, NotAcquired::Superseded);
            self.end_wait(index, s, name, old_request, ended);
            return AcquireOutcome::Waiting { deadline_ms };
        }
        // `settle` ran first: if the lock has room and is not blocked, whoever still
        // waits belongs to a session past its deadline, which is passed over.
        if lock.has_room() && !lock.is_blocked(now) {
            return self.grant(index, name, s, &c.request_id);
        }
        if c.wait_ms == 0 {
            let why = why_not(lock, now);
            return self.not_acquired_outcome(name, why);
        }
        if lock.waiters.len() >= c.max_waiters as usize {
            return self.not_acquired_outcome(name, NotAcquired::QueueFull);
        }
        let deadline_ms = now.saturating_add(c.wait_ms);
        lock.enqueue(Waiter {
            session: s,
            request_id: c.request_id.clone(),
            priority: c.priority,
            seq: index,
            enqueued_ms: now,
            deadline_ms,
        });
        self.waiters += 1;
        self.schedule.add_wait(deadline_ms, s, name);
        if let Some(session) = self.sessions.get_mut(&s) {
            session.waiting.insert(name.to_string());
        }
        AcquireOutcome::Waiting { deadline_ms }
    }

    /// Grants `name` to session `s` at `index`.
    fn grant(&mut self, index: Index, name: &str, s: Index, request_id: &str) -> AcquireOutcome {
        let now = self.now_ms;
        let Some(lock) = self.locks.get_mut(name) else {
            unreachable!("grant is called on an existing lock");
        };
        assert!(lock.has_room() && !lock.is_blocked(now));
        if lock.holders.is_empty() {
            self.locks_held += 1;
        }
        lock.holders.push(Holder {
            session: s,
            token: index,
            acquired_ms: now,
        });
        let id = self.session_id(s);
        if let Some(session) = self.sessions.get_mut(&s) {
            session.held.insert(name.to_string());
        }
        self.stats.grants += 1;
        self.events.push(Event {
            index,
            at_ms: now,
            kind: EventKind::Granted {
                lock: name.to_string(),
                session: id,
                request_id: request_id.to_string(),
                token: index,
            },
        });
        AcquireOutcome::Granted {
            token: index,
            acquired_ms: now,
        }
    }

    /// Grants the lock to waiters while it has room and is not blocked; clears a
    /// lock-delay that has passed. Waiters whose session is past its deadline are passed
    /// over (their expiry will remove them). Returns the first session granted.
    fn settle(&mut self, index: Index, name: &str) -> Option<SessionId> {
        let now = self.now_ms;
        let lock = self.locks.get_mut(name)?;
        if lock.blocked_until_ms != 0 && !lock.is_blocked(now) {
            self.schedule.remove_delay(lock.blocked_until_ms, name);
            lock.blocked_until_ms = 0;
        }
        let mut first = None;
        loop {
            let lock = self.locks.get_mut(name)?;
            if !lock.has_room() || lock.is_blocked(now) {
                break;
            }
            let sessions = &self.sessions;
            let Some(at) = lock
                .waiters
                .iter()
                .position(|w| sessions.get(&w.session).is_some_and(|s| s.is_alive(now)))
            else {
                break;
            };
            let w = lock.waiters.remove(at);
            self.waiters -= 1;
            self.schedule.remove_wait(w.deadline_ms, w.session, name);
            if let Some(session) = self.sessions.get_mut(&w.session) {
                session.waiting.remove(name);
            }
            let outcome = self.grant(index, name, w.session, &w.request_id);
            if let Some(session) = self.sessions.get_mut(&w.session) {
                session
                    .dedup
                    .update(&w.request_id, Remembered::Acquire(outcome));
            }
            first = first.or(Some(self.session_id(w.session)));
        }
        first
    }

    /// Keeps the record of free locks: a lock nobody holds or waits for is remembered
    /// (for reads and token checks) until [`MAX_IDLE_LOCKS`] others became free after it.
    fn touch(&mut self, index: Index, name: &str) {
        let Some(lock) = self.locks.get_mut(name) else {
            return;
        };
        match (lock.is_unused(), lock.idle_since) {
            (true, 0) => {
                lock.idle_since = index;
                self.schedule.add_idle(index, name);
                self.forget_idle_locks();
            }
            (false, since) if since != 0 => {
                self.schedule.remove_idle(since, name);
                lock.idle_since = 0;
            }
            _ => {}
        }
    }

    fn forget_idle_locks(&mut self) {
        let excess = self
            .schedule
            .idle_count()
            .saturating_sub(self.max_idle_locks);
        if excess == 0 {
            return;
        }
        let now = self.now_ms;
        // A lock still blocked by a lock-delay is kept until the delay ends.
        let forget: Vec<(Index, String)> = self
            .schedule
            .idle_oldest_first()
            .filter(|(_, name)| self.locks.get(name).is_some_and(|l| !l.is_blocked(now)))
            .take(excess)
            .cloned()
            .collect();
        for (since, name) in forget {
            self.schedule.remove_idle(since, &name);
            if let Some(lock) = self.locks.remove(&name) {
                if lock.blocked_until_ms != 0 {
                    self.schedule.remove_delay(lock.blocked_until_ms, &name);
                }
            }
        }
    }

    fn release(&mut self, index: Index, c: ReleaseCommand) -> Response {
        let Some(session) = self.live_session(c.session) else {
            return session_not_found(c.session);
        };
        match session.dedup.get(&c.request_id) {
            Some((lock, _)) if lock != c.lock => {
                return bad_request(format!(
                    "request_id `{}` was used for lock `{lock}`",
                    c.request_id
                ))
            }
            Some((_, Remembered::Release(outcome))) => return Response::Release(outcome.clone()),
            Some((_, Remembered::Acquire(_))) => {
                return bad_request(format!(
                    "request_id `{}` was used for an acquire",
                    c.request_id
                ))
            }
            None => {}
        }
        if let Err(e) = check_lock_name(&c.lock).and_then(|()| check_request_id(&c.request_id)) {
            return bad_request(e.0);
        }
        let s = c.session.index;
        let name = c.lock.as_str();
        let holds = self
            .locks
            .get(name)
            .and_then(|l| l.holder(s))
            .is_some_and(|h| h.token == c.token);
        let outcome = if holds {
            if let Some(lock) = self.locks.get_mut(name) {
                lock.remove_holder(s);
                if lock.holders.is_empty() {
                    self.locks_held -= 1;
                }
            }
            if let Some(session) = self.sessions.get_mut(&s) {
                session.held.remove(name);
            }
            self.stats.releases += 1;
            self.events.push(Event {
                index,
                at_ms: self.now_ms,
                kind: EventKind::Ended {
                    lock: c.lock.clone(),
                    session: c.session,
                    token: c.token,
                    cause: EndCause::Released,
                },
            });
            let next_holder = self.settle(index, name);
            self.touch(index, name);
            ReleaseOutcome::Released { next_holder }
        } else {
            let current = self.locks.get(name).and_then(Lock::first_holder);
            ReleaseOutcome::NotHolder {
                holder: current.map(|h| self.session_id(h.session)),
                token: current.map(|h| h.token),
            }
        };
        if let Some(session) = self.sessions.get_mut(&s) {
            session.dedup.insert(
                c.request_id,
                index,
                &c.lock,
                Remembered::Release(outcome.clone()),
            );
        }
        Response::Release(outcome)
    }

    fn cancel_wait(
        &mut self,
        index: Index,
        id: SessionId,
        name: &str,
        request_id: &str,
    ) -> Response {
        let Some(session) = self.live_session(id) else {
            return session_not_found(id);
        };
        let remembered = match session.dedup.get(request_id) {
            Some((lock, Remembered::Acquire(outcome))) if lock == name => Some(outcome.clone()),
            _ => None,
        };
        let waiting = self.locks.get(name).is_some_and(|l| {
            l.waiter_position(id.index)
                .is_some_and(|at| l.waiters[at].request_id == request_id)
        });
        if !waiting {
            let outcome = remembered
                .unwrap_or_else(|| self.not_acquired_outcome(name, NotAcquired::WaitCancelled));
            return Response::Cancelled {
                outcome,
                was_waiting: false,
            };
        }
        let outcome = self.not_acquired_outcome(name, NotAcquired::WaitCancelled);
        self.remove_waiter(index, id.index, name, outcome.clone());
        Response::Cancelled {
            outcome,
            was_waiting: true,
        }
    }

    /// Removes session `s`'s wait on `name`, ending its acquire with `outcome`.
    fn remove_waiter(&mut self, index: Index, s: Index, name: &str, outcome: AcquireOutcome) {
        let Some(lock) = self.locks.get_mut(name) else {
            return;
        };
        let Some(at) = lock.waiter_position(s) else {
            return;
        };
        let w = lock.waiters.remove(at);
        self.waiters -= 1;
        self.schedule.remove_wait(w.deadline_ms, s, name);
        if let Some(session) = self.sessions.get_mut(&s) {
            session.waiting.remove(name);
        }
        self.end_wait(index, s, name, w.request_id, outcome);
        self.touch(index, name);
    }

    /// Records the end of an acquire that waited: its remembered result and an event.
    fn end_wait(
        &mut self,
        index: Index,
        s: Index,
        name: &str,
        request_id: String,
        outcome: AcquireOutcome,
    ) {
        let id = self.session_id(s);
        if let Some(session) = self.sessions.get_mut(&s) {
            session
                .dedup
                .update(&request_id, Remembered::Acquire(outcome.clone()));
        }
        self.events.push(Event {
            index,
            at_ms: self.now_ms,
            kind: EventKind::WaitEnded {
                lock: name.to_string(),
                session: id,
                request_id,
                outcome,
            },
        });
    }

    fn expire(
        &mut self,
        index: Index,
        sessions: &[Index],
        waits: &[(String, Index)],
        locks: &[String],
    ) -> Response {
        let now = self.now_ms;
        let grants_before = self.stats.grants;
        let mut expired = 0;
        for s in sessions {
            if self.sessions.get(s).is_some_and(|s| !s.is_alive(now)) {
                self.end_session(index, *s, EndCause::Expired);
                self.stats.sessions_expired += 1;
                expired += 1;
            }
        }
        let mut timed_out = 0;
        for (name, s) in waits {
            let due = self.locks.get(name).is_some_and(|l| {
                l.waiter_position(*s)
                    .is_some_and(|at| l.waiters[at].deadline_ms <= now)
            });
            if due {
                let outcome = self.not_acquired_outcome(name, NotAcquired::WaitTimedOut);
                self.remove_waiter(index, *s, name, outcome);
                self.stats.wait_timeouts += 1;
                timed_out += 1;
            }
        }
        for name in locks {
            self.settle(index, name);
            self.touch(index, name);
        }
        Response::Expired {
            sessions: expired,
            waits: timed_out,
            grants: self.stats.grants - grants_before,
        }
    }

    /// A "not acquired" answer naming the current holder and a retry hint.
    fn not_acquired_outcome(&self, name: &str, why: NotAcquired) -> AcquireOutcome {
        let now = self.now_ms;
        let lock = self.locks.get(name);
        let holder = lock.and_then(Lock::first_holder);
        let retry_after_ms = match lock {
            Some(l) if l.is_blocked(now) => l.blocked_until_ms - now,
            Some(_) => holder
                .and_then(|h| self.sessions.get(&h.session))
                .map_or(MIN_RETRY_HINT_MS, |s| s.remaining_ms(now))
                .clamp(MIN_RETRY_HINT_MS, MAX_RETRY_HINT_MS),
            None => MIN_RETRY_HINT_MS,
        };
        AcquireOutcome::NotAcquired {
            why,
            holder: holder.map(|h| self.session_id(h.session)),
            token: holder.map(|h| h.token),
            retry_after_ms,
        }
    }

    /// Checks every invariant that ties the tables together; panics on the first broken
    /// one. The tests run it after every entry; it costs time in the size of the state,
    /// so a node runs it only on restore (as `validate`, which names what is broken).
    pub fn check_invariants(&self) {
        if let Err(broken) = self.validate() {
            panic!(
                "lock machine invariant broken at index {}: {broken}",
                self.applied
            );
        }
    }

    /// Checks every invariant that ties the tables together; names the first broken one.
    fn validate(&self) -> Result<(), String> {
        macro_rules! ensure {
            ($cond:expr, $($msg:tt)+) => {
                if !$cond {
                    return Err(format!($($msg)+));
                }
            };
        }
        let now = self.now_ms;
        let mut held = 0;
        let mut waiters = 0;
        let mut idle = 0;
        for (name, lock) in &self.locks {
            ensure!(
                lock.holders.len() <= lock.limit as usize,
                "{name:?}: over its limit"
            );
            held += usize::from(!lock.holders.is_empty());
            waiters += lock.waiters.len();
            for h in &lock.holders {
                let s = self.sessions.get(&h.session);
                ensure!(
                    s.is_some_and(|s| s.held.contains(name)),
                    "{name:?}: holder {} has no session that lists it",
                    h.session
                );
                ensure!(
                    h.token <= self.applied,
                    "{name:?}: token {} from the future",
                    h.token
                );
            }
            for pair in lock.waiters.windows(2) {
                ensure!(
                    (std::cmp::Reverse(pair[0].priority), pair[0].seq)
                        < (std::cmp::Reverse(pair[1].priority), pair[1].seq),
                    "{name:?}: waiters out of order"
                );
            }
            for w in &lock.waiters {
                let s = self.sessions.get(&w.session);
                ensure!(
                    s.is_some_and(|s| s.waiting.contains(name)),
                    "{name:?}: waiter {} has no session that lists it",
                    w.session
                );
                ensure!(
                    lock.holder(w.session).is_none(),
                    "{name:?}: a holder also waits"
                );
            }
            // A lock with room and no lock-delay never keeps a live session waiting (a
            // delay that has passed is cleared by the next entry that touches the lock).
            if lock.has_room() && lock.blocked_until_ms == 0 {
                ensure!(
                    lock.waiters.iter().all(|w| self
                        .sessions
                        .get(&w.session)
                        .is_some_and(|s| !s.is_alive(now))),
                    "{name:?}: free and unblocked with a live waiter"
                );
            }
            ensure!(
                lock.is_unused() == (lock.idle_since != 0),
                "{name:?}: idle mark {} does not match its use",
                lock.idle_since
            );
            idle += usize::from(lock.idle_since != 0);
        }
        ensure!(
            held == self.locks_held,
            "held-lock count {} != {held}",
            self.locks_held
        );
        ensure!(
            waiters == self.waiters,
            "waiter count {} != {waiters}",
            self.waiters
        );
        ensure!(idle == self.schedule.idle_count(), "idle index");
        let (scheduled_sessions, scheduled_waits, _) = self.schedule.counts();
        ensure!(
            scheduled_sessions == self.sessions.len(),
            "session deadlines"
        );
        ensure!(scheduled_waits == self.waiters, "wait deadlines");
        for (index, s) in &self.sessions {
            ensure!(*index == s.id.index, "session {} filed under {index}", s.id);
            for name in &s.held {
                ensure!(
                    self.locks
                        .get(name)
                        .is_some_and(|l| l.holder(*index).is_some()),
                    "session {} lists {name:?} as held",
                    s.id
                );
            }
            for name in &s.waiting {
                ensure!(
                    self.locks
                        .get(name)
                        .is_some_and(|l| l.waiter_position(*index).is_some()),
                    "session {} lists {name:?} as awaited",
                    s.id
                );
            }
        }
        Ok(())
    }
}

/// Why an acquire that may not wait is not granted: the lock is held, or blocked.
fn why_not(lock: &Lock, now_ms: u64) -> NotAcquired {
    if lock.holders.is_empty() && lock.is_blocked(now_ms) {
        NotAcquired::LockDelay
    } else {
        NotAcquired::Held
    }
}

fn session_not_found(id: SessionId) -> Response {
    Response::Refused(Refusal::new(
        RefusalKind::SessionNotFound,
        format!("session {id} is unknown or expired"),
    ))
}

fn bad_request(message: String) -> Response {
    Response::Refused(Refusal::new(RefusalKind::BadRequest, message))
}
