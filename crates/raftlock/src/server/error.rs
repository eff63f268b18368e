//! Why a request failed, in terms that tell the client what to do next, and the mapping
//! from the library's errors and the state machine's refusals. The HTTP and gRPC front
//! ends turn these into status codes (`http.rs`, `grpc.rs`).

use raftlock_raft::{Error, NodeId};

use crate::machine::{Refusal, RefusalKind, SessionId};

/// A failed request.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ServiceError {
    /// This node is not the leader; `address` is the leader's client address, when known.
    /// Nothing happened.
    #[error("this node is not the leader (leader: {})", leader.as_ref().map_or("unknown", NodeId::as_str))]
    NotLeader {
        /// The leader this node knows of.
        leader: Option<NodeId>,
        /// Its client API address.
        address: Option<String>,
    },
    /// No leader is known (an election is under way, or this node cannot reach a
    /// quorum), or the node is stopping. Nothing happened; retry shortly.
    #[error("{0}")]
    Unavailable(String),
    /// The request may or may not have taken effect; retry with the same request id.
    #[error("the outcome is unknown: {0}")]
    Unknown(String),
    /// The input breaks a rule; nothing happened.
    #[error("{0}")]
    BadRequest(String),
    /// The session is unknown or expired.
    #[error("{0}")]
    SessionNotFound(String),
    /// The lock has no record (never held, or free and long forgotten).
    #[error("lock {0:?} is not held and has no record")]
    LockNotFound(String),
    /// The session does not hold the lock with that token.
    #[error("{message}")]
    NotHolder {
        /// What was wrong.
        message: String,
        /// The current holder, if any.
        holder: Option<SessionId>,
        /// Its token.
        token: Option<u64>,
    },
    /// A limit was reached (sessions, locks per session); nothing happened.
    #[error("{0}")]
    LimitReached(String),
    /// The node is overloaded; nothing happened, retry later.
    #[error("{0}")]
    Overloaded(String),
    /// A fault of this node; the request may or may not have taken effect.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ServiceError {
    /// A stable machine-readable name of the case: `not_leader`, `no_leader`,
    /// `outcome_unknown`, `bad_request`, `session_not_found`, `lock_not_found`,
    /// `not_holder`, `limit_reached`, `overloaded`, `internal`.
    pub fn reason(&self) -> &'static str {
        match self {
            ServiceError::NotLeader { .. } => "not_leader",
            ServiceError::Unavailable(_) => "no_leader",
            ServiceError::Unknown(_) => "outcome_unknown",
            ServiceError::BadRequest(_) => "bad_request",
            ServiceError::SessionNotFound(_) => "session_not_found",
            ServiceError::LockNotFound(_) => "lock_not_found",
            ServiceError::NotHolder { .. } => "not_holder",
            ServiceError::LimitReached(_) => "limit_reached",
            ServiceError::Overloaded(_) => "overloaded",
            ServiceError::Internal(_) => "internal",
        }
    }

    /// Maps a library error; `write` tells whether a command was proposed (whose outcome
    /// a failure can leave unknown).
    pub fn from_raft(
        error: Error,
        write: bool,
        address: impl FnOnce(&NodeId) -> Option<String>,
    ) -> Self {
        match error {
            Error::NotLeader { leader } => {
                let address = leader.as_ref().and_then(address);
                ServiceError::NotLeader { leader, address }
            }
            Error::Timeout | Error::LeadershipLost => ServiceError::Unknown(error.to_string()),
            // A write already appended may still commit after the node stops.
            Error::ShuttingDown if write => ServiceError::Unknown(error.to_string()),
            Error::ShuttingDown => ServiceError::Unavailable("the node is shutting down".into()),
            Error::QuorumUnreachable | Error::TransferInProgress { .. } => {
                ServiceError::Unavailable(error.to_string())
            }
            Error::Overloaded { .. } => ServiceError::Overloaded(error.to_string()),
            Error::ProposalTooLarge { .. } => ServiceError::BadRequest(error.to_string()),
            other => ServiceError::Internal(other.to_string()),
        }
    }
}

impl From<Refusal> for ServiceError {
    fn from(r: Refusal) -> Self {
        match r.kind {
            RefusalKind::BadRequest => ServiceError::BadRequest(r.message),
            RefusalKind::SessionNotFound => ServiceError::SessionNotFound(r.message),
            RefusalKind::TooManySessions | RefusalKind::TooManyLocks => {
                ServiceError::LimitReached(r.message)
            }
        }
    }
}

impl From<crate::machine::limits::InvalidInput> for ServiceError {
    fn from(e: crate::machine::limits::InvalidInput) -> Self {
        ServiceError::BadRequest(e.0)
    }
}

impl From<crate::machine::BadSessionId> for ServiceError {
    fn from(e: crate::machine::BadSessionId) -> Self {
        ServiceError::BadRequest(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn library_errors_keep_what_the_client_must_know() {
        let addr = |_: &NodeId| Some("127.0.0.1:7002".to_string());
        let e = ServiceError::from_raft(
            Error::NotLeader {
                leader: Some(NodeId::from("n2")),
            },
            true,
            addr,
        );
        assert_eq!(
            e,
            ServiceError::NotLeader {
                leader: Some(NodeId::from("n2")),
                address: Some("127.0.0.1:7002".into())
            }
        );
        assert_eq!(e.reason(), "not_leader");
        assert!(matches!(
            ServiceError::from_raft(Error::ShuttingDown, true, addr),
            ServiceError::Unknown(_)
        ));
        assert!(matches!(
            ServiceError::from_raft(Error::ShuttingDown, false, addr),
            ServiceError::Unavailable(_)
        ));
        assert!(matches!(
            ServiceError::from_raft(Error::LeadershipLost, true, addr),
            ServiceError::Unknown(_)
        ));
        let overloaded = ServiceError::from_raft(
            Error::Overloaded {
                reason: raftlock_raft::OverloadReason::PendingReads {
                    pending: 3,
                    limit: 3,
                },
            },
            false,
            addr,
        );
        assert!(
            matches!(overloaded, ServiceError::Overloaded(_)),
            "{overloaded:?}"
        );
        assert_eq!(overloaded.reason(), "overloaded");
    }
}
