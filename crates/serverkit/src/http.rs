//! HTTP answers of the servers' JSON APIs: JSON bodies, and errors whose status and
//! headers tell a client what to do next (follow a redirect, retry later, fix the input,
//! or treat the outcome as unknown).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use raftlock_raft::NodeId;
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

    /// 307 to the same request on the leader's client address (`location`).
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
