//! The client HTTP API: routes and handlers. See `docs/HTTP_API.md` for the reference.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use raftlock_raft::{NodeId, PrometheusMetrics, Raft};
use raftlock_serverkit::members::{after_transfer, ClientAddresses};
use serde::Deserialize;
use serde_json::json;

use super::reply::{from_raft_error, json_reply, ApiError};
use crate::command::{Applied, Command, Outcome};
use crate::store::StoreHandle;

/// Header carrying the log index a read reflects.
pub const INDEX_HEADER: &str = "x-raft-index";

/// What the handlers share.
pub struct AppState {
    /// The Raft node.
    pub raft: Raft,
    /// The state machine, for reads.
    pub store: StoreHandle,
    /// Client address of every member, for redirects: replicated in the members'
    /// metadata, with `--http-peers` as the fallback for the bootstrap members.
    pub http_peers: ClientAddresses,
    /// The node's metrics, for `/metrics`.
    pub metrics: PrometheusMetrics,
    /// A request not done by then gets 504.
    pub request_timeout: Duration,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
}

impl AppState {
    fn leader_url(&self, leader: &NodeId, uri: &Uri) -> Option<String> {
        let addr = self.http_peers.get(leader)?;
        let addr = addr.as_str();
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        Some(format!("http://{addr}{path}"))
    }

    /// Runs a library call under the request timeout, mapping its errors.
    async fn call<T>(
        &self,
        uri: &Uri,
        write: bool,
        f: impl Future<Output = raftlock_raft::Result<T>>,
    ) -> Result<T, ApiError> {
        match tokio::time::timeout(self.request_timeout, f).await {
            Err(_) => Err(ApiError::timeout()),
            Ok(Err(e)) => {
                // Met a leadership transfer (nothing proposed): redirect to the new leader.
                let e = after_transfer(&self.raft, e, self.request_timeout).await;
                Err(from_raft_error(e, write, |l| self.leader_url(l, uri)))
            }
            Ok(Ok(v)) => Ok(v),
        }
    }

    async fn write(&self, uri: &Uri, command: Command) -> Result<Applied, ApiError> {
        let bytes = self
            .call(uri, true, self.raft.propose_and_wait(command.encode()))
            .await?;
        let applied = Applied::decode(&bytes).map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the state machine's answer is unreadable: {e}"),
            )
        })?;
        if let Outcome::Rejected { reason } = &applied.outcome {
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                reason.clone(),
            ));
        }
        Ok(applied)
    }
}

/// The router of the client API. The state is shared behind one `Arc`, so a request
/// clones one pointer rather than every handle inside.
pub fn router(state: AppState) -> Router {
    let state = Arc::new(state);
    Router::new()
        .route("/kv/{key}", get(get_key).put(put_key).delete(delete_key))
        .route("/kv/{key}/cas", post(cas_key))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such route") })
        .with_state(state)
}

fn key_of(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let Path(key) = path.map_err(|e| ApiError::bad_request(format!("bad key: {e}")))?;
    if key.is_empty() {
        return Err(ApiError::bad_request("the key is empty"));
    }
    Ok(key)
}

async fn body_of(state: &AppState, body: Body) -> Result<Vec<u8>, ApiError> {
    let bytes = axum::body::to_bytes(body, state.max_body_bytes)
        .await
        .map_err(|e| {
            ApiError::bad_request(format!(
                "the body could not be read or exceeds {} bytes: {e}",
                state.max_body_bytes
            ))
            .closing()
        })?;
    Ok(bytes.to_vec())
}

fn text_of(bytes: Vec<u8>) -> Result<String, ApiError> {
    String::from_utf8(bytes).map_err(|_| ApiError::bad_request("the value must be UTF-8 text"))
}

/// Whether `?stale=true` was given; anything but a boolean is refused.
fn stale_of(query: Option<&str>) -> Result<bool, ApiError> {
    let mut stale = false;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, "true"));
        if name == "stale" {
            stale = match value {
                "true" | "1" | "" => true,
                "false" | "0" => false,
                other => {
                    return Err(ApiError::bad_request(format!(
                        "stale must be true or false, not `{other}`"
                    )))
                }
            };
        }
    }
    Ok(stale)
}

async fn put_key(
    State(state): State<Arc<AppState>>,
    path: Result<Path<String>, PathRejection>,
    uri: Uri,
    body: Body,
) -> Result<Response, ApiError> {
    let key = key_of(path)?;
    let value = text_of(body_of(&state, body).await?)?;
    let applied = state.write(&uri, Command::Put { key, value }).await?;
    Ok(json_reply(
        StatusCode::OK,
        json!({ "index": applied.index }),
    ))
}

async fn delete_key(
    State(state): State<Arc<AppState>>,
    path: Result<Path<String>, PathRejection>,
    uri: Uri,
) -> Result<Response, ApiError> {
    let key = key_of(path)?;
    let applied = state.write(&uri, Command::Delete { key }).await?;
    let existed = matches!(applied.outcome, Outcome::Deleted { existed: true });
    Ok(json_reply(
        StatusCode::OK,
        json!({ "index": applied.index, "existed": existed }),
    ))
}

/// Body of `POST /kv/{key}/cas`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CasBody {
    /// Expected current value; `null` (or absent) means "the key must not exist".
    #[serde(default)]
    from: Option<String>,
    /// New value.
    to: String,
}

async fn cas_key(
    State(state): State<Arc<AppState>>,
    path: Result<Path<String>, PathRejection>,
    uri: Uri,
    body: Body,
) -> Result<Response, ApiError> {
    let key = key_of(path)?;
    let body = body_of(&state, body).await?;
    let CasBody { from, to } = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "expected a JSON body {{\"from\": <string or null>, \"to\": <string>}}: {e}"
        ))
    })?;
    let applied = state.write(&uri, Command::Cas { key, from, to }).await?;
    match applied.outcome {
        Outcome::CasFailed { current } => Err(ApiError::new(
            StatusCode::CONFLICT,
            "the current value does not match `from`",
        )
        .with("current", json!(current))
        .with("index", json!(applied.index))),
        _ => Ok(json_reply(
            StatusCode::OK,
            json!({ "index": applied.index, "swapped": true }),
        )),
    }
}

async fn get_key(
    State(state): State<Arc<AppState>>,
    path: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
    uri: Uri,
) -> Result<Response, ApiError> {
    let key = key_of(path)?;
    if !stale_of(query.as_deref())? {
        // Linearizable reads are the leader's job; a follower sends the client there so
        // that `curl -L` works and the read costs one round trip, not two.
        if !state.raft.get_state().1 {
            let leader = state.raft.leader();
            return Err(from_raft_error(
                raftlock_raft::Error::NotLeader { leader },
                false,
                |l| state.leader_url(l, &uri),
            ));
        }
        state.call(&uri, false, state.raft.read_index()).await?;
    }
    let store = state.store.read();
    let mut response = match store.data.get(&key) {
        Some(value) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            value.clone(),
        )
            .into_response(),
        None => ApiError::new(StatusCode::NOT_FOUND, "key not found")
            .with("key", json!(key))
            .into_response(),
    };
    response
        .headers_mut()
        .insert(INDEX_HEADER, HeaderValue::from(store.applied));
    Ok(response)
}

async fn status(State(state): State<Arc<AppState>>, uri: Uri) -> Result<Response, ApiError> {
    let status = state.call(&uri, false, state.raft.status()).await?;
    let body = serde_json::to_value(&status).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding status: {e}"),
        )
    })?;
    Ok(json_reply(StatusCode::OK, body))
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}

async fn health(State(state): State<Arc<AppState>>) -> Response {
    let observed = state.raft.leader_change_channel().borrow().clone();
    json_reply(
        StatusCode::OK,
        json!({
            "status": "ok",
            "id": state.raft.id().as_str(),
            "role": observed.role.to_string(),
            "term": observed.term,
            "leader": observed.leader.as_ref().map(NodeId::as_str),
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_flag_parses_booleans_and_refuses_the_rest() {
        assert!(!stale_of(None).unwrap());
        assert!(stale_of(Some("stale=true")).unwrap());
        assert!(stale_of(Some("x=1&stale")).unwrap());
        assert!(!stale_of(Some("stale=false")).unwrap());
        assert_eq!(
            stale_of(Some("stale=maybe")).unwrap_err().status(),
            StatusCode::BAD_REQUEST
        );
    }
}
