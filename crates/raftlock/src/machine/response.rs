//! What applying a command answers, and the events it causes.

use raftlock_raft::Index;

use super::command::SessionId;

/// The state machine's answer to one command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    /// A session was opened.
    Created {
        /// Its id.
        session: SessionId,
        /// Its TTL.
        ttl_ms: u64,
        /// Its lock-delay.
        lock_delay_ms: u64,
    },
    /// Remaining TTL of each renewed session, in the command's order; 0: gone.
    Renewed {
        /// One per session of the command.
        remaining_ms: Vec<u64>,
    },
    /// A session was closed; these locks were released.
    Closed {
        /// The locks it held, by name.
        released: Vec<String>,
    },
    /// The answer to an acquire.
    Acquire(AcquireOutcome),
    /// The answer to a release.
    Release(ReleaseOutcome),
    /// The answer to a cancelled wait.
    Cancelled {
        /// What the acquire ended with (it may have been granted before the cancel).
        outcome: AcquireOutcome,
        /// Whether the cancel removed a waiter.
        was_waiting: bool,
    },
    /// What an expiry entry did.
    Expired {
        /// Sessions expired.
        sessions: u64,
        /// Waits timed out.
        waits: u64,
        /// Locks granted to waiters as a result.
        grants: u64,
    },
    /// The command was refused; nothing changed.
    Refused(Refusal),
}

/// How an acquire ended, or that it waits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AcquireOutcome {
    /// The lock is the session's.
    Granted {
        /// The fencing token: the index of the granting entry.
        token: u64,
        /// When it was granted (cluster time, ms).
        acquired_ms: u64,
    },
    /// Queued; the outcome follows when the lock is granted or the wait ends.
    Waiting {
        /// When the wait times out (cluster time, ms).
        deadline_ms: u64,
    },
    /// Not granted.
    NotAcquired {
        /// Why.
        why: NotAcquired,
        /// The current holder, if any.
        holder: Option<SessionId>,
        /// The current holder's token, if any.
        token: Option<u64>,
        /// A hint of when a retry might succeed.
        retry_after_ms: u64,
    },
}

impl AcquireOutcome {
    /// Whether the acquire is over (granted or not); `false` while waiting.
    pub fn is_final(&self) -> bool {
        !matches!(self, AcquireOutcome::Waiting { .. })
    }
}

/// Why an acquire did not get the lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NotAcquired {
    /// Another session holds it (a try-lock).
    Held,
    /// It is blocked by the lock-delay of a holder that expired (a try-lock).
    LockDelay,
    /// The wait's time ran out.
    WaitTimedOut,
    /// The client went away and the wait was cancelled.
    WaitCancelled,
    /// A later acquire of the same session for the same lock took over the wait.
    Superseded,
    /// The lock's wait queue is full.
    QueueFull,
    /// The session ended while waiting.
    SessionEnded,
}

impl NotAcquired {
    /// A stable name for APIs: `held`, `lock_delay`, `wait_timed_out`, `wait_cancelled`,
    /// `superseded`, `queue_full`, `session_ended`.
    pub fn as_str(self) -> &'static str {
        match self {
            NotAcquired::Held => "held",
            NotAcquired::LockDelay => "lock_delay",
            NotAcquired::WaitTimedOut => "wait_timed_out",
            NotAcquired::WaitCancelled => "wait_cancelled",
            NotAcquired::Superseded => "superseded",
            NotAcquired::QueueFull => "queue_full",
            NotAcquired::SessionEnded => "session_ended",
        }
    }
}

/// How a release ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReleaseOutcome {
    /// Released; the lock passed to `next_holder` in the same entry.
    Released {
        /// The waiter granted the lock, if any.
        next_holder: Option<SessionId>,
    },
    /// The session does not hold the lock with that token; nothing changed.
    NotHolder {
        /// The current holder, if any.
        holder: Option<SessionId>,
        /// Its token.
        token: Option<u64>,
    },
}

/// A refused command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The kind of refusal.
    pub kind: RefusalKind,
    /// What was wrong, for the client.
    pub message: String,
}

/// Kinds of [`Refusal`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RefusalKind {
    /// The input breaks a rule of the model.
    BadRequest,
    /// The session is unknown or expired.
    SessionNotFound,
    /// The cluster holds as many sessions as the leader allows.
    TooManySessions,
    /// The session holds and waits for as many locks as allowed.
    TooManyLocks,
}

impl Refusal {
    pub(crate) fn new(kind: RefusalKind, message: impl Into<String>) -> Self {
        Refusal {
            kind,
            message: message.into(),
        }
    }
}

/// Something applying an entry did that someone may be waiting for: a held-open acquire
/// (granted or ended), or a watcher of the lock's history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// The index of the entry that caused it.
    pub index: Index,
    /// The cluster time of that entry (ms).
    pub at_ms: u64,
    /// What happened.
    pub kind: EventKind,
}

/// Kinds of [`Event`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A lock was granted; its token is the event's index.
    Granted {
        /// The lock.
        lock: String,
        /// The new holder.
        session: SessionId,
        /// The acquire that asked for it.
        request_id: String,
        /// The fencing token.
        token: u64,
    },
    /// A holder's tenure ended.
    Ended {
        /// The lock.
        lock: String,
        /// The holder.
        session: SessionId,
        /// The token of the ended grant.
        token: u64,
        /// How it ended.
        cause: EndCause,
    },
    /// A queued acquire ended without the lock.
    WaitEnded {
        /// The lock.
        lock: String,
        /// The waiting session.
        session: SessionId,
        /// The acquire's request id.
        request_id: String,
        /// How it ended.
        outcome: AcquireOutcome,
    },
}

/// How a holder's tenure ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EndCause {
    /// Released by its holder.
    Released,
    /// Its session expired.
    Expired,
    /// Its session was closed.
    Closed,
}

impl EndCause {
    /// `released`, `expired` or `closed`.
    pub fn as_str(self) -> &'static str {
        match self {
            EndCause::Released => "released",
            EndCause::Expired => "expired",
            EndCause::Closed => "closed",
        }
    }
}
