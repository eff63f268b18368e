//! A log in a test: entries get consecutive indices, a term, and the clock a test sets;
//! every entry goes through the byte codec, as it does in a node, and the invariants are
//! checked after each.

use crate::machine::codec::{decode_response, encode_entry, encode_response};
use crate::machine::{
    AcquireCommand, AcquireOutcome, Command, Entry, Event, LockMachine, ReleaseCommand,
    ReleaseOutcome, Response, SessionId,
};

/// Grace a new term gives, as a leader with 1 s election timeouts would.
pub const GRACE: u64 = 2_000;

pub struct Log {
    pub m: LockMachine,
    pub index: u64,
    pub term: u64,
    pub now: u64,
    pub max_waiters: u32,
    pub max_sessions: u64,
    pub events: Vec<Event>,
    /// Check the invariants after every entry (they cost time in the size of the state).
    pub check_each: bool,
    /// Every entry applied: (index, term, bytes).
    pub entries: Vec<(u64, u64, Vec<u8>)>,
    next_request: u64,
}

impl Log {
    pub fn new() -> Self {
        Log {
            m: LockMachine::new(),
            index: 0,
            term: 1,
            now: 1_000_000,
            max_waiters: 1024,
            max_sessions: 1_000_000,
            events: Vec::new(),
            check_each: true,
            entries: Vec::new(),
            next_request: 0,
        }
    }

    /// Appends and applies a command stamped with the test's clock.
    pub fn apply(&mut self, command: Command) -> Response {
        self.index += 1;
        let entry = Entry {
            stamp_ms: self.now,
            grace_ms: GRACE,
            command,
        };
        let bytes = encode_entry(&entry);
        let response = self.m.apply_bytes(self.index, self.term, &bytes);
        self.entries.push((self.index, self.term, bytes));
        if self.check_each {
            self.m.check_invariants();
        }
        self.events.extend(self.m.take_events());
        // The answer survives the trip back to the proposer.
        let bytes = encode_response(&response);
        assert_eq!(decode_response(&bytes).unwrap(), response);
        response
    }

    pub fn advance(&mut self, ms: u64) {
        self.now += ms;
    }

    pub fn new_term(&mut self) {
        self.term += 1;
    }

    pub fn request_id(&mut self) -> String {
        self.next_request += 1;
        format!("req-{}", self.next_request)
    }

    pub fn create(&mut self, ttl_ms: u64, lock_delay_ms: u64) -> SessionId {
        match self.apply(Command::CreateSession {
            nonce: 0xfeed_0000 + self.index,
            ttl_ms,
            lock_delay_ms,
            client: format!("client-{}", self.index + 1),
            max_sessions: self.max_sessions,
        }) {
            Response::Created { session, .. } => session,
            other => panic!("create failed: {other:?}"),
        }
    }

    pub fn acquire_with(
        &mut self,
        session: SessionId,
        lock: &str,
        wait_ms: u64,
        priority: i32,
        request_id: &str,
    ) -> Response {
        self.apply(Command::Acquire(AcquireCommand {
            session,
            lock: lock.into(),
            wait_ms,
            priority,
            request_id: request_id.into(),
            max_waiters: self.max_waiters,
        }))
    }

    /// An acquire with a fresh request id; panics unless the machine answered an outcome.
    pub fn acquire(&mut self, session: SessionId, lock: &str, wait_ms: u64) -> AcquireOutcome {
        let rid = self.request_id();
        match self.acquire_with(session, lock, wait_ms, 0, &rid) {
            Response::Acquire(o) => o,
            other => panic!("acquire answered {other:?}"),
        }
    }

    /// Acquires and expects a grant; returns the token.
    pub fn grant(&mut self, session: SessionId, lock: &str) -> u64 {
        match self.acquire(session, lock, 0) {
            AcquireOutcome::Granted { token, .. } => token,
            other => panic!("expected a grant of {lock}, got {other:?}"),
        }
    }

    pub fn release_with(
        &mut self,
        session: SessionId,
        lock: &str,
        token: u64,
        request_id: &str,
    ) -> Response {
        self.apply(Command::Release(ReleaseCommand {
            session,
            lock: lock.into(),
            token,
            request_id: request_id.into(),
        }))
    }

    pub fn release(&mut self, session: SessionId, lock: &str, token: u64) -> ReleaseOutcome {
        let rid = self.request_id();
        match self.release_with(session, lock, token, &rid) {
            Response::Release(o) => o,
            other => panic!("release answered {other:?}"),
        }
    }

    pub fn renew(&mut self, sessions: &[SessionId]) -> Vec<u64> {
        match self.apply(Command::Renew {
            sessions: sessions.to_vec(),
        }) {
            Response::Renewed { remaining_ms } => remaining_ms,
            other => panic!("renew answered {other:?}"),
        }
    }

    /// Proposes what the machine reports due at the test's clock, as the leader does.
    pub fn expire_due(&mut self) -> Response {
        let due = self.m.due(self.now, usize::MAX);
        self.apply(Command::Expire {
            sessions: due.sessions,
            waits: due.waits,
            locks: due.locks,
        })
    }

    /// The holder of `lock` and its token.
    pub fn holder(&self, lock: &str) -> Option<(SessionId, u64)> {
        self.m
            .lock(lock)
            .and_then(|l| l.holder)
            .map(|h| (h.session, h.token))
    }

    /// Tokens of the grants of `lock` in event order.
    pub fn grant_tokens(&self, lock: &str) -> Vec<u64> {
        self.events
            .iter()
            .filter_map(|e| match &e.kind {
                crate::machine::EventKind::Granted { lock: l, token, .. } if l == lock => {
                    Some(*token)
                }
                _ => None,
            })
            .collect()
    }
}
