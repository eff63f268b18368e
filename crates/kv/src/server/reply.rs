//! HTTP answers: JSON bodies, and the mapping from library errors to status codes that
//! tells a client what to do next (follow, retry later, or treat the outcome as unknown).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use raftlock_raft::{Error, NodeId};
use serde_json::{json, Value};

/// Seconds a client should wait before retrying a 503.
const RETRY_AFTER_SECS: &str = "1";

/// A response with a JSON body.
pub fn json_reply(status: StatusCode, body: Value) -> Response {
    (status, axum::Json(body)).into_response()
}

/// An error answer: `{"error": message, ...extra}` plus optional headers.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    body: Value,
    location: Option<String>,
    retry_after: bool,
    close: bool,
}

impl ApiError {
    /// An error with `status` and a message.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            body: json!({ "error": message.into() }),
            location: None,
            retry_after: false,
            close: false,
        }
    }

    /// 400: the request itself is wrong; retrying it will not help.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 503 with `Retry-After`.
    pub fn unavailable(message: impl Into<String>) -> Self {
        let mut e = Self::new(StatusCode::SERVICE_UNAVAILABLE, message);
        e.retry_after = true;
        e
    }

    /// 504: the request did not complete in time; it may or may not have taken effect.
    pub fn timeout() -> Self {
        Self::new(
            StatusCode::GATEWAY_TIMEOUT,
            "the request did not complete in time; its outcome is unknown",
        )
    }

    /// 307 to the same path on the leader's client address.
    pub fn redirect(leader: &NodeId, location: String) -> Self {
        let mut e = Self::new(
            StatusCode::TEMPORARY_REDIRECT,
            "this node is not the leader",
        );
        e = e.with("leader", json!(leader.as_str()));
        e = e.with("location", json!(location));
        e.location = Some(location);
        e
    }

    /// Ends the connection after this answer (`Connection: close` on HTTP/1.1): the
    /// request's body was left unread, so the next request on the connection could not
    /// be told apart from its rest. Saying so lets the client open a new connection
    /// instead of sending its next request into one the server is closing.
    pub fn closing(mut self) -> Self {
        self.close = true;
        self
    }

    /// Adds a field to the JSON body.
    pub fn with(mut self, field: &str, value: Value) -> Self {
        if let Value::Object(map) = &mut self.body {
            map.insert(field.to_string(), value);
        }
        self
    }

    /// The status code.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = json_reply(self.status, self.body);
        let headers = response.headers_mut();
        if let Some(location) = self.location.and_then(|l| HeaderValue::from_str(&l).ok()) {
            headers.insert(header::LOCATION, location);
        }
        if self.retry_after {
            headers.insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(RETRY_AFTER_SECS),
            );
        }
        if self.close {
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

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
        Error::QuorumUnreachable | Error::Overloaded { .. } => {
            ApiError::unavailable(error.to_string())
        }
        Error::ProposalTooLarge { .. } => ApiError::bad_request(error.to_string()),
        other => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let stopping = |write| from_raft_error(Error::ShuttingDown, write, no_addr).status();
        assert_eq!(stopping(true), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(stopping(false), StatusCode::SERVICE_UNAVAILABLE);
    }
}
