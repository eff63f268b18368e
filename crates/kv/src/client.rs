//! An HTTP client of the raftkv API that finds the leader by itself: it follows 307
//! redirects, moves on to the next endpoint when one is unreachable or answers 503, and
//! waits (a short pause that grows) only once every endpoint has failed in a round.
//! It never retries a request that may have reached a node, so an outcome it reports as
//! [`ClientError::Unknown`] is really unknown, and everything else really happened (or
//! really did not).

use std::time::{Duration, Instant};

use raftlock_raft::Index;
use reqwest::{Method, StatusCode};
use serde_json::Value;

/// How long a client keeps trying (redirects, unreachable endpoints, 503s).
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(10);

/// The pause after a round in which every endpoint was unreachable or answered 503; it
/// doubles with each such round, up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(20);
/// The longest pause between two rounds of endpoints.
const MAX_PAUSE: Duration = Duration::from_millis(200);

/// Why an operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The request may or may not have taken effect: it timed out (504 or locally), or the
    /// connection broke after it was sent.
    #[error("outcome unknown: {0}")]
    Unknown(String),
    /// No endpoint could serve the request before the deadline; it did not take effect.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The server refused the request (4xx other than 404/409, or 5xx); it did not take
    /// effect.
    #[error("HTTP {status}: {message}")]
    Refused {
        /// The status code.
        status: u16,
        /// The server's `error` message.
        message: String,
    },
}

/// Result of a compare-and-swap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CasResult {
    /// Swapped at this log index.
    Swapped(Index),
    /// Not swapped; the key held this value (`None`: absent).
    Conflict(Option<String>),
}

/// A client over a list of endpoints (`host:port` or `http://host:port`).
#[derive(Clone, Debug)]
pub struct Client {
    http: reqwest::Client,
    endpoints: Vec<String>,
    deadline: Duration,
}

/// What one answered request looked like.
struct Answer {
    status: StatusCode,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    fn index(&self) -> Index {
        self.json()["index"].as_u64().unwrap_or(0)
    }

    fn refused(&self) -> ClientError {
        let message = self.json()["error"]
            .as_str()
            .map_or_else(|| self.body.clone(), str::to_string);
        ClientError::Refused {
            status: self.status.as_u16(),
            message,
        }
    }
}

/// Normalizes `host:port` to `http://host:port` (shared with the admin commands).
pub use raftlock_serverkit::admin::endpoint_url;

impl Client {
    /// A client of `endpoints`, with a per-request timeout of `request_timeout` (it
    /// should exceed the server's, so that the server's 504 arrives first).
    pub fn new(endpoints: &[String], request_timeout: Duration) -> Result<Self, ClientError> {
        let http = reqwest::Client::builder()
            .timeout(request_timeout)
            .connect_timeout(Duration::from_secs(1))
            .pool_max_idle_per_host(64)
            .build()
            .map_err(|e| ClientError::Unavailable(format!("building the HTTP client: {e}")))?;
        if endpoints.is_empty() {
            return Err(ClientError::Unavailable("no endpoints given".into()));
        }
        Ok(Client {
            http,
            endpoints: endpoints.iter().map(|e| endpoint_url(e)).collect(),
            deadline: DEFAULT_DEADLINE,
        })
    }

    /// Sets how long one operation keeps trying before giving up.
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// The endpoints, as URLs.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// Replaces the endpoints (the members changed), keeping the connection pool and
    /// the timeouts. An empty list is refused and leaves the endpoints as they were.
    pub fn set_endpoints(&mut self, endpoints: &[String]) -> Result<(), ClientError> {
        if endpoints.is_empty() {
            return Err(ClientError::Unavailable("no endpoints given".into()));
        }
        self.endpoints = endpoints.iter().map(|e| endpoint_url(e)).collect();
        Ok(())
    }

    /// Sends `method path` with `body` to the first endpoint that answers, following
    /// redirects; retries only what cannot have taken effect.
    async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<String>,
    ) -> Result<Answer, ClientError> {
        let start = Instant::now();
        let mut last = String::from("no attempt");
        let mut attempt = 0usize;
        let mut pause = FIRST_PAUSE;
        while start.elapsed() < self.deadline {
            let base = &self.endpoints[attempt % self.endpoints.len()];
            attempt += 1;
            let mut req = self.http.request(method.clone(), format!("{base}{path}"));
            if let Some(b) = &body {
                req = req.body(b.clone());
            }
            match req.send().await {
                Err(e) if e.is_connect() => {
                    last = format!("{base}: {e}");
                    if attempt.is_multiple_of(self.endpoints.len()) {
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(MAX_PAUSE);
                    }
                }
                Err(e) => return Err(ClientError::Unknown(format!("{base}: {e}"))),
                Ok(response) => {
                    let status = response.status();
                    let retry_after = response
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<u64>().ok());
                    let body = response.text().await.map_err(|e| {
                        ClientError::Unknown(format!("{base}: reading the answer: {e}"))
                    })?;
                    let answer = Answer { status, body };
                    match status {
                        StatusCode::SERVICE_UNAVAILABLE => {
                            last = format!("{base}: {}", answer.refused());
                            // A 503 is answered before anything is proposed: try the
                            // next endpoint at once (a node that just restarted and
                            // knows no leader yet must not hold the client up), and
                            // once every endpoint has said no in this round, wait. The
                            // wait starts short, since a leadership hand-over or an
                            // election may be over in tens of milliseconds, and grows
                            // to less than Retry-After asks (elections take about a
                            // second and the client has its own deadline).
                            if attempt.is_multiple_of(self.endpoints.len()) {
                                let cap = retry_after.map_or(MAX_PAUSE, |s| {
                                    Duration::from_secs(s).clamp(FIRST_PAUSE, MAX_PAUSE)
                                });
                                tokio::time::sleep(pause.min(cap)).await;
                                pause = (pause * 2).min(cap);
                            }
                        }
                        StatusCode::GATEWAY_TIMEOUT => {
                            return Err(ClientError::Unknown(format!(
                                "{base}: {}",
                                answer.refused()
                            )))
                        }
                        _ => return Ok(answer),
                    }
                }
            }
        }
        Err(ClientError::Unavailable(last))
    }

    /// Sets `key` to `value`; returns the log index it was applied at.
    pub async fn put(&self, key: &str, value: &str) -> Result<Index, ClientError> {
        let a = self
            .request(Method::PUT, &key_path(key), Some(value.to_string()))
            .await?;
        match a.status {
            StatusCode::OK => Ok(a.index()),
            _ => Err(a.refused()),
        }
    }

    /// Reads `key`: linearizable, or from whichever node answers if `stale`.
    pub async fn get(&self, key: &str, stale: bool) -> Result<Option<String>, ClientError> {
        let path = if stale {
            format!("{}?stale=true", key_path(key))
        } else {
            key_path(key)
        };
        let a = self.request(Method::GET, &path, None).await?;
        match a.status {
            StatusCode::OK => Ok(Some(a.body)),
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(a.refused()),
        }
    }

    /// Removes `key`; returns whether it existed.
    pub async fn delete(&self, key: &str) -> Result<bool, ClientError> {
        let a = self.request(Method::DELETE, &key_path(key), None).await?;
        match a.status {
            StatusCode::OK => Ok(a.json()["existed"].as_bool().unwrap_or(false)),
            _ => Err(a.refused()),
        }
    }

    /// Sets `key` to `to` if it holds `from` (`None`: if it is absent).
    pub async fn cas(
        &self,
        key: &str,
        from: Option<&str>,
        to: &str,
    ) -> Result<CasResult, ClientError> {
        let body = serde_json::json!({ "from": from, "to": to }).to_string();
        let a = self
            .request(Method::POST, &format!("{}/cas", key_path(key)), Some(body))
            .await?;
        match a.status {
            StatusCode::OK => Ok(CasResult::Swapped(a.index())),
            StatusCode::CONFLICT => Ok(CasResult::Conflict(
                a.json()["current"].as_str().map(str::to_string),
            )),
            _ => Err(a.refused()),
        }
    }

    /// `GET path` on one endpoint, without redirects or retries, as JSON.
    pub async fn get_json(&self, endpoint: &str, path: &str) -> Result<Value, ClientError> {
        let url = format!("{}{path}", endpoint_url(endpoint));
        let response = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| ClientError::Unavailable(format!("{url}: {e}")))?;
        let status = response.status();
        let body = response
            .text()
            .await
            .map_err(|e| ClientError::Unavailable(format!("{url}: {e}")))?;
        let answer = Answer { status, body };
        if status.is_success() {
            Ok(answer.json())
        } else {
            Err(answer.refused())
        }
    }
}

/// `/kv/{key}` with the key percent-encoded, so any key survives the trip.
pub fn key_path(key: &str) -> String {
    let mut path = String::from("/kv/");
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            path.push(char::from(b));
        } else {
            path.push_str(&format!("%{b:02X}"));
        }
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_percent_encoded_and_endpoints_get_a_scheme() {
        assert_eq!(key_path("a b/c"), "/kv/a%20b%2Fc");
        assert_eq!(key_path("k-1.x"), "/kv/k-1.x");
        assert_eq!(endpoint_url("127.0.0.1:9001"), "http://127.0.0.1:9001");
        assert_eq!(endpoint_url("http://h:1/"), "http://h:1");
    }
}
