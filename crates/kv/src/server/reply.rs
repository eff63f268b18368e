//! The mapping from library errors to HTTP answers that tells a client what to do next
//! (follow, retry later, or treat the outcome as unknown); the answers themselves are
//! the shared [`ApiError`].

use axum::http::StatusCode;
use raftlock_raft::{Error, NodeId};
pub use raftlock_serverkit::http::{json_reply, ApiError};
use serde_json::json;

/// Maps a library error to an answer; `write` tells whether the request proposed a
/// command (whose outcome a failure can leave unknown). `redirect` builds the leader's URL for this request,
/// if the leader's client address is known.
pub fn from_raft_error(
    error: Error,
    write: bool,
    redirect: impl FnOnce(&NodeId) -> Option<String>,
) -> ApiError {
    match error {
        Error::NotLeader {
            leader: Some(leader),
        } => match redirect(&leader) {
            Some(location) => ApiError::redirect(&leader, location),
            None => ApiError::unavailable(format!(
                "the leader is {leader}, whose client address is unknown (add it to --http-peers)"
            ))
            .with("leader", json!(leader.as_str())),
        },
        Error::NotLeader { leader: None } => {
            ApiError::unavailable("no leader is known yet; retry shortly")
        }
        Error::Timeout | Error::LeadershipLost => {
            ApiError::timeout().with("cause", json!(error.to_string()))
        }
        // A write that was already appended may still commit after the node stops, so
        // its outcome is unknown: 504, never a 503 a client would blindly retry.
        Error::ShuttingDown if write => ApiError::timeout().with("cause", json!(error.to_string())),
        Error::ShuttingDown => ApiError::unavailable("the node is shutting down"),
        Error::QuorumUnreachable | Error::Overloaded { .. } | Error::TransferInProgress { .. } => {
            ApiError::unavailable(error.to_string())
        }
        Error::ProposalTooLarge { .. } => ApiError::bad_request(error.to_string()),
        other => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::header;
    use axum::response::IntoResponse;
    use raftlock_raft::OverloadReason;

    #[test]
    fn errors_map_to_the_status_that_tells_the_client_what_to_do() {
        let no_addr = |_: &NodeId| None;
        let addr = |_: &NodeId| Some("http://127.0.0.1:9002/kv/a".to_string());
        let leader = Some(NodeId::from("node-2"));
        let e = from_raft_error(
            Error::NotLeader {
                leader: leader.clone(),
            },
            true,
            addr,
        );
        assert_eq!(e.status(), StatusCode::TEMPORARY_REDIRECT);
        let r = e.into_response();
        assert_eq!(r.headers()[header::LOCATION], "http://127.0.0.1:9002/kv/a");
        let e = from_raft_error(Error::NotLeader { leader }, true, no_addr);
        assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE);
        let r = from_raft_error(Error::NotLeader { leader: None }, false, no_addr).into_response();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers()[header::RETRY_AFTER], "1");
        for e in [Error::Timeout, Error::LeadershipLost] {
            assert_eq!(
                from_raft_error(e, false, no_addr).status(),
                StatusCode::GATEWAY_TIMEOUT
            );
        }
        let big = Error::ProposalTooLarge { size: 10, limit: 1 };
        assert_eq!(
            from_raft_error(big, true, no_addr).status(),
            StatusCode::BAD_REQUEST
        );
        // Backpressure: nothing happened, retry after the hint.
        let overloaded = Error::Overloaded {
            reason: OverloadReason::UnappliedBytes {
                unapplied: 10,
                size: 5,
                limit: 12,
            },
        };
        let r = from_raft_error(overloaded, true, no_addr).into_response();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers()[header::RETRY_AFTER], "1");
        let stopping = |write| from_raft_error(Error::ShuttingDown, write, no_addr).status();
        assert_eq!(stopping(true), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(stopping(false), StatusCode::SERVICE_UNAVAILABLE);
    }
}
