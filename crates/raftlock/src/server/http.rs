//! The HTTP/JSON API: routes, request bodies, and answers. See `docs/LOCK_API.md` for the
//! reference. Followers answer writes and linearizable reads with 307 to the leader's
//! client address; 503 + `Retry-After` means nothing happened and the request can be
//! retried; 504 means the outcome is unknown (retry with the same `request_id`).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use raftlock_raft::{NodeId, PrometheusMetrics};
use raftlock_serverkit::http::{json_reply, ApiError};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ServiceError;
use super::service::{AcquireRequest, LockService};
use crate::machine::view::LockView;
use crate::machine::{AcquireOutcome, Event, EventKind, SessionId};

/// Largest request body accepted (every body of this API is a few fields).
const MAX_BODY_BYTES: usize = 64 * 1024;

/// What the handlers share.
#[derive(Debug)]
pub struct HttpState {
    /// The service.
    pub service: LockService,
    /// The node's metrics registry (Raft and lock service).
    pub metrics: PrometheusMetrics,
}

/// The routes of the HTTP API (without a fallback, so that the gRPC service can share
/// the router; the caller adds [`not_found`]).
pub fn routes(state: HttpState) -> Router {
    Router::new()
        .route("/v1/sessions", post(create_session))
        .route(
            "/v1/sessions/{session}",
            get(get_session).delete(close_session),
        )
        .route("/v1/sessions/{session}/keepalive", post(keepalive))
        .route("/v1/locks", get(list_locks))
        .route("/v1/locks/{name}", get(get_lock))
        .route("/v1/locks/{name}/acquire", post(acquire))
        .route("/v1/locks/{name}/release", post(release))
        .route("/v1/locks/{name}/validate", post(validate))
        .route("/v1/events", get(events))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .with_state(Arc::new(state))
}

/// The answer to a route that does not exist.
pub async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such route").with("reason", json!("no_route"))
}

type AppState = State<Arc<HttpState>>;

/// Maps a service error to its answer; `uri` is the request's, for a redirect to the
/// same request on the leader.
fn api_error(e: ServiceError, uri: &Uri) -> ApiError {
    let reason = e.reason();
    let error = match e {
        ServiceError::NotLeader {
            leader: Some(leader),
            address: Some(address),
        } => {
            let path = uri.path_and_query().map_or("/", |p| p.as_str());
            ApiError::redirect(&leader, format!("http://{address}{path}"))
        }
        ServiceError::NotLeader {
            leader: Some(leader),
            address: None,
        } => ApiError::unavailable(format!(
            "the leader is {leader}, whose client address is unknown (add it to --api-peers)"
        ))
        .with("leader", json!(leader.as_str())),
        e @ (ServiceError::NotLeader { leader: None, .. }
        | ServiceError::Unavailable(_)
        | ServiceError::Overloaded(_)) => ApiError::unavailable(e.to_string()),
        ServiceError::Unknown(cause) => ApiError::timeout().with("cause", json!(cause)),
        ServiceError::BadRequest(m) => ApiError::bad_request(m),
        ServiceError::SessionNotFound(m) => ApiError::new(StatusCode::NOT_FOUND, m),
        e @ ServiceError::LockNotFound(_) => ApiError::new(StatusCode::NOT_FOUND, e.to_string()),
        ServiceError::NotHolder {
            message,
            holder,
            token,
        } => ApiError::new(StatusCode::PRECONDITION_FAILED, message)
            .with("released", json!(false))
            .with("holder", session_json(holder))
            .with("token", json!(token)),
        ServiceError::LimitReached(m) => ApiError::new(StatusCode::TOO_MANY_REQUESTS, m),
        e @ ServiceError::Internal(_) => {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
        }
    };
    error.with("reason", json!(reason))
}

/// 400 for input the handler could not parse, with the same `reason` the service gives
/// for input it refuses.
fn bad_input(message: String) -> ApiError {
    ApiError::bad_request(message).with("reason", json!("bad_request"))
}

fn session_json(session: Option<SessionId>) -> Value {
    session.map_or(Value::Null, |s| json!(s.to_string()))
}

/// Reads a JSON body; an empty body is `T::default()` when `empty_ok`.
async fn body_of<T: DeserializeOwned + Default>(
    body: Body,
    empty_ok: bool,
    expected: &str,
) -> Result<T, ApiError> {
    let bytes = axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|e| {
            bad_input(format!(
                "the body could not be read or exceeds {MAX_BODY_BYTES} bytes: {e}"
            ))
            .closing()
        })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return if empty_ok {
            Ok(T::default())
        } else {
            Err(bad_input(format!("expected a JSON body {expected}")))
        };
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| bad_input(format!("expected a JSON body {expected}: {e}")))
}

fn path_of(path: Result<Path<String>, PathRejection>, what: &str) -> Result<String, ApiError> {
    path.map(|Path(p)| p)
        .map_err(|e| bad_input(format!("bad {what} in the path: {e}")))
}

fn query_of<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    query
        .map(|Query(q)| q)
        .map_err(|e| bad_input(format!("bad query: {e}")))
}

/// `?stale=true|false` (other query parameters are ignored, as on every route).
#[derive(Debug, Default, Deserialize)]
struct StaleQuery {
    #[serde(default)]
    stale: bool,
}

/// Body of `POST /v1/sessions`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateSessionBody {
    #[serde(default)]
    ttl_ms: u64,
    #[serde(default)]
    lock_delay_ms: u64,
    #[serde(default)]
    client: String,
}

async fn create_session(State(s): AppState, uri: Uri, body: Body) -> Result<Response, ApiError> {
    let b: CreateSessionBody = body_of(
        body,
        true,
        r#"{"ttl_ms": <1000..300000>, "lock_delay_ms": <0..60000>, "client": "<name>"}"#,
    )
    .await?;
    let created = s
        .service
        .create_session(b.ttl_ms, b.lock_delay_ms, b.client)
        .await
        .map_err(|e| api_error(e, &uri))?;
    Ok(json_reply(
        StatusCode::OK,
        json!({
            "session": created.session.to_string(),
            "ttl_ms": created.ttl_ms,
            "lock_delay_ms": created.lock_delay_ms,
        }),
    ))
}

async fn keepalive(
    State(s): AppState,
    path: Result<Path<String>, PathRejection>,
    uri: Uri,
) -> Result<Response, ApiError> {
    let session = path_of(path, "session")?;
    let remaining = s
        .service
        .keepalive(&session)
        .await
        .map_err(|e| api_error(e, &uri))?;
    Ok(json_reply(StatusCode::OK, json!({ "ttl_ms": remaining })))
}

async fn close_session(
    State(s): AppState,
    path: Result<Path<String>, PathRejection>,
    uri: Uri,
) -> Result<Response, ApiError> {
    let session = path_of(path, "session")?;
    let released = s
        .service
        .close_session(&session)
        .await
        .map_err(|e| api_error(e, &uri))?;
    Ok(json_reply(StatusCode::OK, json!({ "released": released })))
}

async fn get_session(
    State(s): AppState,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<StaleQuery>, QueryRejection>,
    uri: Uri,
) -> Result<Response, ApiError> {
    let session = path_of(path, "session")?;
    let q = query_of(query)?;
    let v = s
        .service
        .session(&session, q.stale)
        .await
        .map_err(|e| api_error(e, &uri))?;
    Ok(json_reply(
        StatusCode::OK,
        json!({
            "session": v.id.to_string(),
            "client": v.client,
            "ttl_ms": v.ttl_ms,
            "lock_delay_ms": v.lock_delay_ms,
            "created_at_ms": v.created_ms,
            "expires_at_ms": v.deadline_ms,
            "remaining_ms": v.remaining_ms,
            "held": v.held,
            "waiting": v.waiting,
        }),
    ))
}

/// Body of `POST /v1/locks/{name}/acquire`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AcquireBody {
    session: String,
    #[serde(default)]
    wait_ms: u64,
    #[serde(default)]
    priority: i32,
    #[serde(default)]
    request_id: Option<String>,
}

async fn acquire(
    State(s): AppState,
    path: Result<Path<String>, PathRejection>,
    uri: Uri,
    body: Body,
) -> Result<Response, ApiError> {
    let lock = path_of(path, "lock name")?;
    let b: AcquireBody = body_of(
        body,
        false,
        r#"{"session": "<id>", "wait_ms": <ms>, "priority": <int>, "request_id": "<unique per session>"}"#,
    )
    .await?;
    let outcome = s
        .service
        .acquire(AcquireRequest {
            session: b.session.clone(),
            lock: lock.clone(),
            wait_ms: b.wait_ms,
            priority: b.priority,
            request_id: b.request_id,
        })
        .await
        .map_err(|e| api_error(e, &uri))?;
    Ok(acquire_reply(&lock, &b.session, &outcome))
}

fn acquire_reply(lock: &str, session: &str, outcome: &AcquireOutcome) -> Response {
    match outcome {
        AcquireOutcome::Granted { token, acquired_ms } => json_reply(
            StatusCode::OK,
            json!({
                "acquired": true,
                "token": token,
                "acquired_at_ms": acquired_ms,
                "lock": lock,
                "session": session,
            }),
        ),
        AcquireOutcome::NotAcquired {
            why,
            holder,
            token,
            retry_after_ms,
        } => json_reply(
            StatusCode::CONFLICT,
            json!({
                "acquired": false,
                "holder": session_json(*holder),
                "token": token,
                "retry_after_ms": retry_after_ms,
                "reason": why.as_str(),
                "error": format!("lock {lock:?} was not acquired: {}", why.as_str().replace('_', " ")),
            }),
        ),
        // The service only returns once a wait has ended.
        AcquireOutcome::Waiting { deadline_ms } => json_reply(
            StatusCode::GATEWAY_TIMEOUT,
            json!({
                "error": "the acquire is still waiting; retry with the same request_id",
                "wait_deadline_ms": deadline_ms,
                "reason": "outcome_unknown",
            }),
        ),
    }
}

/// Body of `POST /v1/locks/{name}/release`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReleaseBody {
    session: String,
    token: u64,
    #[serde(default)]
    request_id: Option<String>,
}

async fn release(
    State(s): AppState,
    path: Result<Path<String>, PathRejection>,
    uri: Uri,
    body: Body,
) -> Result<Response, ApiError> {
    let lock = path_of(path, "lock name")?;
    let b: ReleaseBody = body_of(
        body,
        false,
        r#"{"session": "<id>", "token": <u64>, "request_id": "<unique per session>"}"#,
    )
    .await?;
    let next = s
        .service
        .release(&b.session, lock, b.token, b.request_id)
        .await
        .map_err(|e| api_error(e, &uri))?;
    Ok(json_reply(
        StatusCode::OK,
        json!({ "released": true, "next_holder": session_json(next) }),
    ))
}

/// Body of `POST /v1/locks/{name}/validate`.
#[derive(Debug, Default, Deserialize)]
// A resource server may pass along more context than the token; it is ignored.
struct ValidateBody {
    token: u64,
}

async fn validate(
    State(s): AppState,
    path: Result<Path<String>, PathRejection>,
    uri: Uri,
    body: Body,
) -> Result<Response, ApiError> {
    let lock = path_of(path, "lock name")?;
    let b: ValidateBody = body_of(body, false, r#"{"token": <u64>}"#).await?;
    let check = s
        .service
        .validate(&lock, b.token)
        .await
        .map_err(|e| api_error(e, &uri))?;
    Ok(json_reply(
        StatusCode::OK,
        json!({ "valid": check.valid, "current_token": check.current_token }),
    ))
}

/// A lock as JSON.
pub fn lock_json(v: &LockView) -> Value {
    let holder = v.holder.as_ref();
    json!({
        "name": v.name,
        "holder": holder.map(|h| h.session.to_string()),
        "holder_client": holder.map(|h| h.client.clone()),
        "token": holder.map(|h| h.token),
        "acquired_at_ms": holder.map(|h| h.acquired_ms),
        "expires_at_ms": holder.map(|h| h.expires_ms),
        "blocked_until_ms": v.blocked_until_ms,
        "waiters": v.waiters.iter().map(|w| json!({
            "session": w.session.to_string(),
            "client": w.client,
            "priority": w.priority,
            "enqueued_at_ms": w.enqueued_ms,
            "wait_deadline_ms": w.deadline_ms,
        })).collect::<Vec<_>>(),
    })
}

async fn get_lock(
    State(s): AppState,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<StaleQuery>, QueryRejection>,
    uri: Uri,
) -> Result<Response, ApiError> {
    let lock = path_of(path, "lock name")?;
    let q = query_of(query)?;
    let view = s
        .service
        .get_lock(&lock, q.stale)
        .await
        .map_err(|e| api_error(e, &uri))?;
    Ok(json_reply(StatusCode::OK, lock_json(&view)))
}

/// `GET /v1/locks?prefix=&after=&limit=`.
#[derive(Debug, Default, Deserialize)]
struct ListQuery {
    #[serde(default)]
    prefix: String,
    #[serde(default)]
    after: Option<String>,
    #[serde(default)]
    limit: usize,
}

async fn list_locks(
    State(s): AppState,
    query: Result<Query<ListQuery>, QueryRejection>,
    uri: Uri,
) -> Result<Response, ApiError> {
    let q = query_of(query)?;
    let (page, next) = s
        .service
        .list_locks(&q.prefix, q.after.as_deref(), q.limit)
        .await
        .map_err(|e| api_error(e, &uri))?;
    Ok(json_reply(
        StatusCode::OK,
        json!({
            "locks": page.iter().map(lock_json).collect::<Vec<_>>(),
            "next_after": next,
        }),
    ))
}

/// `GET /v1/events?after=&limit=`.
#[derive(Debug, Default, Deserialize)]
struct EventsQuery {
    #[serde(default)]
    after: u64,
    #[serde(default)]
    limit: Option<usize>,
}

/// An event as JSON.
pub fn event_json(e: &Event) -> Value {
    let mut v = json!({ "index": e.index, "at_ms": e.at_ms });
    let fields = match &e.kind {
        EventKind::Granted {
            lock,
            session,
            request_id,
            token,
        } => json!({
            "kind": "granted", "lock": lock, "session": session.to_string(),
            "request_id": request_id, "token": token,
        }),
        EventKind::Ended {
            lock,
            session,
            token,
            cause,
        } => json!({
            "kind": "ended", "lock": lock, "session": session.to_string(),
            "token": token, "cause": cause.as_str(),
        }),
        EventKind::WaitEnded {
            lock,
            session,
            request_id,
            outcome,
        } => json!({
            "kind": "wait_ended", "lock": lock, "session": session.to_string(),
            "request_id": request_id,
            "outcome": match outcome {
                AcquireOutcome::NotAcquired { why, .. } => why.as_str(),
                AcquireOutcome::Granted { .. } => "granted",
                AcquireOutcome::Waiting { .. } => "waiting",
            },
        }),
    };
    if let (Value::Object(v), Value::Object(f)) = (&mut v, fields) {
        v.extend(f);
    }
    v
}

async fn events(
    State(s): AppState,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let q = query_of(query)?;
    let page = s.service.events(q.after, q.limit.unwrap_or(1_000));
    let applied = s.service.shared().read().applied();
    Ok(json_reply(
        StatusCode::OK,
        json!({
            "events": page.events.iter().map(event_json).collect::<Vec<_>>(),
            "gap_until": page.gap_until,
            "applied": applied,
        }),
    ))
}

async fn status(State(s): AppState, uri: Uri) -> Result<Response, ApiError> {
    let raft = s.service.proposer().raft();
    let status = raft
        .status()
        .await
        .map_err(|e| api_error(ServiceError::from_raft(e, false, |_| None), &uri))?;
    let mut body = serde_json::to_value(&status).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding status: {e}"),
        )
    })?;
    let (gauges, now_ms) = {
        let m = s.service.shared().read();
        (m.gauges(), m.now_ms())
    };
    if let Value::Object(map) = &mut body {
        map.insert(
            "lock_service".into(),
            json!({
                "sessions": gauges.sessions,
                "locks": gauges.locks,
                "locks_held": gauges.locks_held,
                "waiters": gauges.waiters,
                "cluster_time_ms": now_ms,
                "held_open_acquires": s.service.shared().waits.len(),
                "api_peers": s.service.proposer().api_peers(),
            }),
        );
    }
    Ok(json_reply(StatusCode::OK, body))
}

async fn metrics(State(s): AppState) -> Response {
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
        .into_response()
}

async fn health(State(s): AppState) -> Response {
    let raft = s.service.proposer().raft();
    let observed = raft.leader_change_channel().borrow().clone();
    json_reply(
        StatusCode::OK,
        json!({
            "status": "ok",
            "id": raft.id().as_str(),
            "role": observed.role.to_string(),
            "term": observed.term,
            "leader": observed.leader.as_ref().map(NodeId::as_str),
        }),
    )
}
