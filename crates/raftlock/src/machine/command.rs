//! What the lock service writes into the log: an [`Entry`] is one command stamped with the
//! proposing leader's clock. The byte format is `proto/raftlock_log.proto` (see
//! [`codec`](super::codec)).

use std::fmt;
use std::str::FromStr;

use raftlock_raft::Index;

/// A session's id: the log index of the entry that created it, and a random nonce drawn by
/// the proposer. The index makes ids unique within a cluster; the nonce makes an id of
/// another cluster, or of this cluster before it was re-created, fail to match.
///
/// Its text form, as clients see it, is `<index>-<nonce as 16 hex digits>`:
///
/// ```
/// use raftlock::SessionId;
/// let id = SessionId { index: 42, nonce: 0xabc };
/// assert_eq!(id.to_string(), "42-0000000000000abc");
/// assert_eq!("42-0000000000000abc".parse::<SessionId>(), Ok(id));
/// assert!("42".parse::<SessionId>().is_err());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId {
    /// Index of the creating entry.
    pub index: Index,
    /// The proposer's random nonce.
    pub nonce: u64,
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{:016x}", self.index, self.nonce)
    }
}

/// Why a text is not a [`SessionId`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a session id (expected <index>-<16 hex digits>)")]
pub struct BadSessionId(pub String);

impl FromStr for SessionId {
    type Err = BadSessionId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadSessionId(s.chars().take(64).collect());
        let (index, nonce) = s.split_once('-').ok_or_else(bad)?;
        if index.is_empty() || !index.bytes().all(|b| b.is_ascii_digit()) || nonce.len() != 16 {
            return Err(bad());
        }
        let index: Index = index.parse().map_err(|_| bad())?;
        let nonce = u64::from_str_radix(nonce, 16).map_err(|_| bad())?;
        if index == 0 {
            return Err(bad());
        }
        Ok(SessionId { index, nonce })
    }
}

/// One log entry of the lock service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The proposing leader's clock (cluster time, ms).
    pub stamp_ms: u64,
    /// How far the first entry of a new term pushes every session's deadline past the
    /// clock: the proposer's maximum election timeout.
    pub grace_ms: u64,
    /// What to do.
    pub command: Command,
}

/// A state-machine command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Open a session; its id is this entry's index and `nonce`.
    CreateSession {
        /// Random, drawn by the proposer.
        nonce: u64,
        /// Time to live without a keep-alive.
        ttl_ms: u64,
        /// How long a lock released by this session's expiry stays blocked.
        lock_delay_ms: u64,
        /// A name for the client.
        client: String,
        /// The leader's limit on live sessions.
        max_sessions: u64,
    },
    /// Renew the sessions whose keep-alives the leader gathered since its last renewal.
    Renew {
        /// The sessions, in the order of the answer.
        sessions: Vec<SessionId>,
    },
    /// End a session: release its locks, cancel its waits.
    CloseSession {
        /// The session.
        session: SessionId,
    },
    /// Acquire a lock, or queue for it.
    Acquire(AcquireCommand),
    /// Release a held lock.
    Release(ReleaseCommand),
    /// Withdraw a queued acquire whose client went away.
    CancelWait {
        /// The waiting session.
        session: SessionId,
        /// The lock.
        lock: String,
        /// The acquire's request id.
        request_id: String,
    },
    /// Deadlines the leader saw pass. Applying re-checks every one against the clock, so
    /// a session renewed meanwhile survives.
    Expire {
        /// Sessions (by index) whose deadline passed.
        sessions: Vec<Index>,
        /// Waits (lock, session index) whose deadline passed.
        waits: Vec<(String, Index)>,
        /// Locks whose lock-delay ended.
        locks: Vec<String>,
    },
}

/// [`Command::Acquire`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcquireCommand {
    /// The acquiring session.
    pub session: SessionId,
    /// The lock.
    pub lock: String,
    /// 0: try once; otherwise queue for up to this long.
    pub wait_ms: u64,
    /// Higher is served first; FIFO within a priority.
    pub priority: i32,
    /// Unique per session; a retry carries the same one.
    pub request_id: String,
    /// The leader's limit on waiters per lock.
    pub max_waiters: u32,
}

/// [`Command::Release`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReleaseCommand {
    /// The releasing session.
    pub session: SessionId,
    /// The lock.
    pub lock: String,
    /// The fencing token of the grant being released.
    pub token: u64,
    /// Unique per session; a retry carries the same one.
    pub request_id: String,
}
