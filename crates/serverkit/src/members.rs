//! Membership at run time, as both servers serve it: the members' client addresses
//! (replicated in each member's metadata, with the static `--http-peers`/`--api-peers`
//! list as a fallback for the bootstrap members), the admin routes
//! (`GET/POST /v1/members`, `DELETE /v1/members/{id}`, `POST /v1/leader/transfer`),
//! joining a running cluster (`--join`), the start-up check that refuses a removed node,
//! and the graceful leave on SIGTERM (a leader hands leadership over before it stops).
//! The JSON shapes are documented in `docs/RUNNING_A_CLUSTER.md`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, RawQuery, State};
use axum::http::{StatusCode, Uri};
use axum::response::Response;
use axum::routing::{delete, get, post};
use axum::Router;
use raftlock_raft::{Error, Membership, MembershipError, NodeId, NodeInfo, Raft, RaftStatus};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::http::{json_reply, ApiError};

/// The metadata key under which a member's client address is replicated.
pub const CLIENT_ADDRESS_KEY: &str = "client_address";

/// How long `POST /v1/members` waits for a new member to catch up before promoting it,
/// unless the request says otherwise (`?timeout_ms=`).
pub const DEFAULT_CATCH_UP_TIMEOUT: Duration = Duration::from_secs(60);

/// Every member's client address: the one its configuration metadata carries, else the
/// static list the node was started with.
#[derive(Clone, Debug)]
pub struct ClientAddresses {
    raft: Raft,
    fixed: Arc<BTreeMap<NodeId, String>>,
}

impl ClientAddresses {
    /// Addresses from `raft`'s configuration, falling back to `fixed`.
    pub fn new(raft: Raft, fixed: BTreeMap<NodeId, String>) -> Self {
        ClientAddresses {
            raft,
            fixed: Arc::new(fixed),
        }
    }

    /// The client address of member `id`, if known.
    pub fn get(&self, id: &NodeId) -> Option<String> {
        client_address_in(&self.raft.membership(), id).or_else(|| self.fixed.get(id).cloned())
    }

    /// Every known client address: the static list overlaid with the replicated one.
    pub fn all(&self) -> BTreeMap<NodeId, String> {
        let mut all = (*self.fixed).clone();
        let m = self.raft.membership();
        for id in m.members() {
            if let Some(a) = client_address_in(&m, &id) {
                all.insert(id, a);
            }
        }
        all
    }
}

fn client_address_in(m: &Membership, id: &NodeId) -> Option<String> {
    m.nodes
        .get(id)
        .and_then(|n| n.metadata.get(CLIENT_ADDRESS_KEY))
        .filter(|a| !a.is_empty())
        .cloned()
}

/// What the admin routes need.
#[derive(Clone, Debug)]
pub struct MembersApi {
    /// The node.
    pub raft: Raft,
    /// Client addresses, for redirects to the leader.
    pub addresses: ClientAddresses,
    /// How long a change waits to commit, and a transfer for the new leader.
    pub request_timeout: Duration,
}

/// The admin routes, with their state: merge them into a server's router.
pub fn router(api: MembersApi) -> Router {
    Router::new()
        .route("/v1/members", get(list).post(add))
        .route("/v1/members/{id}", delete(remove))
        .route("/v1/leader/transfer", post(transfer))
        .with_state(api)
}

/// The members as `GET /v1/members` shows them, from `status` (progress is known on the
/// leader only).
pub fn members_view(status: &RaftStatus, addresses: &ClientAddresses) -> Value {
    let m = &status.membership;
    let leader = status.leader_id.as_ref();
    let members: Vec<Value> = m
        .members()
        .into_iter()
        .map(|id| {
            let role = if m.voters.contains(&id) {
                "voter"
            } else if m.learners.contains(&id) {
                "learner"
            } else {
                "leaving"
            };
            let info = m.nodes.get(&id);
            let mut v = json!({
                "id": id.as_str(),
                "role": role,
                "outgoing": m.outgoing.contains(&id),
                "leader": leader == Some(&id),
                "peer_address": info.map(|i| i.address.as_str()),
                "client_address": addresses.get(&id),
                "metadata": info.map(|i| &i.metadata),
            });
            if let Some(p) = status.replication.get(&id) {
                v["match_index"] = json!(p.match_index);
                v["lag"] = json!(p.replication_lag);
                v["active"] = json!(p.is_active);
                v["last_active_ms"] = json!(p.last_active_ago.map(|d| d.as_millis() as u64));
                v["snapshot_in_progress"] = json!(p.snapshot_in_progress);
            } else if id == status.id {
                v["match_index"] = json!(status.last_log_index);
            }
            v
        })
        .collect();
    json!({
        "id": status.id.as_str(),
        "leader": leader.map(NodeId::as_str),
        "term": status.term,
        "membership_index": status.membership_index,
        "committed": status.membership_committed,
        "joint": m.is_joint(),
        "members": members,
        "retired": m.retired.iter().map(NodeId::as_str).collect::<Vec<_>>(),
    })
}

/// The value of `?name=` in a query string (`true` for a bare `?name`).
fn query_flag(query: Option<&str>, name: &str) -> Option<String> {
    query?
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| pair.split_once('=').unwrap_or((pair, "true")))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

fn query_bool(query: Option<&str>, name: &str, default: bool) -> Result<bool, ApiError> {
    match query_flag(query, name).as_deref() {
        None => Ok(default),
        Some("true" | "1" | "") => Ok(true),
        Some("false" | "0") => Ok(false),
        Some(other) => Err(ApiError::bad_request(format!(
            "?{name}= must be true or false, not {other:?}"
        ))),
    }
}

impl MembersApi {
    /// The answer for a library error of a membership call.
    fn error(&self, e: Error, uri: &Uri) -> ApiError {
        match e {
            Error::NotLeader { leader: Some(l) } => match self.addresses.get(&l) {
                Some(addr) => {
                    let path = uri.path_and_query().map_or("/", |p| p.as_str());
                    ApiError::redirect(&l, format!("http://{addr}{path}"))
                }
                None => ApiError::unavailable(format!(
                    "this node is not the leader and does not know {l}'s client address"
                )),
            },
            Error::NotLeader { leader: None } => {
                ApiError::unavailable("no leader is known; retry shortly")
            }
            Error::TransferInProgress { .. } | Error::ShuttingDown | Error::Overloaded { .. } => {
                ApiError::unavailable(e.to_string())
            }
            Error::Timeout | Error::LeadershipLost => ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                format!("{e}: the change may or may not have taken effect; check GET /v1/members"),
            ),
            Error::Membership(m) => match m {
                MembershipError::ChangePending { .. } | MembershipError::TermNotCommitted => {
                    ApiError::unavailable(m.to_string())
                }
                MembershipError::UnknownNode { .. } => {
                    ApiError::new(StatusCode::NOT_FOUND, m.to_string())
                }
                MembershipError::WouldLoseQuorum { .. } => ApiError::new(
                    StatusCode::CONFLICT,
                    format!("{m} (add ?force=true, or --force on the command line)"),
                ),
                MembershipError::NotCaughtUp { .. } => ApiError::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    format!("{m}; it stays a learner: promote it later with the same request"),
                ),
                other => ApiError::bad_request(other.to_string()),
            },
            other => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, other.to_string()),
        }
    }

    async fn view(&self) -> Result<Value, ApiError> {
        let status = self
            .raft
            .status()
            .await
            .map_err(|e| ApiError::unavailable(e.to_string()))?;
        Ok(members_view(&status, &self.addresses))
    }

    /// Answers with the members once `call` succeeded.
    async fn after<T>(
        &self,
        uri: &Uri,
        timeout: Duration,
        call: impl std::future::Future<Output = raftlock_raft::Result<T>>,
    ) -> Result<Response, ApiError> {
        match tokio::time::timeout(timeout, call).await {
            Err(_) => Err(self.error(Error::Timeout, uri)),
            Ok(Err(e)) => Err(self.error(e, uri)),
            Ok(Ok(_)) => Ok(json_reply(StatusCode::OK, self.view().await?)),
        }
    }
}

/// The leader's view (with replication progress), by a redirect from a follower that
/// knows the leader; `?local=true` answers with this node's own view.
async fn list(
    State(api): State<MembersApi>,
    uri: Uri,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let local = query_bool(query.as_deref(), "local", false)?;
    if !local && !api.raft.get_state().1 {
        if let Some(l) = api.raft.leader() {
            if l != *api.raft.id() && api.addresses.get(&l).is_some() {
                return Err(api.error(Error::NotLeader { leader: Some(l) }, &uri));
            }
        }
    }
    Ok(json_reply(StatusCode::OK, api.view().await?))
}

/// The body of `POST /v1/members`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AddMember {
    id: String,
    peer_address: String,
    #[serde(default)]
    client_address: Option<String>,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
}

async fn add(
    State(api): State<MembersApi>,
    uri: Uri,
    RawQuery(query): RawQuery,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let req: AddMember = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "body must be {{\"id\", \"peer_address\", \"client_address\"}}: {e}"
        ))
    })?;
    if req.id.trim().is_empty() || req.peer_address.trim().is_empty() {
        return Err(ApiError::bad_request(
            "id and peer_address must not be empty",
        ));
    }
    let promote = query_bool(query.as_deref(), "promote", true)?;
    let catch_up = match query_flag(query.as_deref(), "timeout_ms") {
        None => DEFAULT_CATCH_UP_TIMEOUT,
        Some(ms) => Duration::from_millis(ms.parse().map_err(|_| {
            ApiError::bad_request(format!("?timeout_ms= must be a number, not {ms:?}"))
        })?),
    };
    let mut metadata = req.metadata;
    if let Some(a) = req.client_address.filter(|a| !a.is_empty()) {
        metadata.insert(CLIENT_ADDRESS_KEY.to_string(), a);
    }
    let info = NodeInfo {
        address: req.peer_address,
        metadata,
    };
    let id = NodeId::from(req.id.as_str());
    // The catch-up wait comes on top of the change's own commit.
    let timeout = catch_up + api.request_timeout;
    if promote {
        api.after(&uri, timeout, api.raft.add_voter(id, info, catch_up))
            .await
    } else {
        api.after(&uri, timeout, api.raft.add_learner(id, info))
            .await
    }
}

async fn remove(
    State(api): State<MembersApi>,
    uri: Uri,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let force = query_bool(query.as_deref(), "force", false)?;
    let timeout = api.request_timeout;
    api.after(&uri, timeout, api.raft.remove_member(id.as_str(), force))
        .await
}

/// The body of `POST /v1/leader/transfer`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Transfer {
    #[serde(default)]
    to: Option<String>,
}

async fn transfer(
    State(api): State<MembersApi>,
    uri: Uri,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let req: Transfer = if body.iter().all(u8::is_ascii_whitespace) {
        Transfer::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("body must be {{\"to\": \"<id>\"}}: {e}")))?
    };
    let to = req.to.filter(|t| !t.is_empty()).map(NodeId::from);
    let started = Instant::now();
    match tokio::time::timeout(api.request_timeout, api.raft.transfer_leader(to)).await {
        Err(_) => Err(api.error(Error::Timeout, &uri)),
        Ok(Err(e)) => Err(api.error(e, &uri)),
        Ok(Ok(leader)) => Ok(json_reply(
            StatusCode::OK,
            json!({
                "leader": leader.as_str(),
                "client_address": api.addresses.get(&leader),
                "took_ms": started.elapsed().as_millis() as u64,
            }),
        )),
    }
}

/// The file a server leaves in its data directory once a member told it that it was
/// removed from the cluster (see [`watch_removal`]); its text says why.
pub const REMOVED_MARKER: &str = "REMOVED";

/// Refuses to start a node that its own data directory says is not a member: it was told
/// it was removed ([`REMOVED_MARKER`]), its configuration retires its id, or that
/// configuration does not name it. A node with no configuration yet (joining) passes.
///
/// A removed follower's log ends at the joint configuration, which still names it (the
/// leader stops replicating to it as soon as the final one is appended): the marker is
/// what it knows, once a member refused it ([`watch_removal`]).
pub fn check_still_member(raft: &Raft, data_dir: &std::path::Path) -> Result<(), String> {
    let m = raft.membership();
    let id = raft.id();
    if let Ok(why) = std::fs::read_to_string(data_dir.join(REMOVED_MARKER)) {
        return Err(format!(
            "node {id} was removed from the cluster ({}); ids are never reused: start the \
             machine with a new --node-id and an empty --data-dir, and add it with `member add`",
            why.trim()
        ));
    }
    if m.retired.contains(id) {
        return Err(format!(
            "node {id} was removed from the cluster (its data directory's configuration, \
             {m}, lists its id as retired); ids are never reused: start the machine with a \
             new --node-id and an empty --data-dir, and add it with `member add`"
        ));
    }
    if !m.voters.is_empty() && !m.contains(id) {
        return Err(format!(
            "node {id} is not a member of the configuration in its data directory ({m}): it \
             was removed; start the machine with a new --node-id and an empty --data-dir, and \
             add it with `member add`"
        ));
    }
    Ok(())
}

/// Resolves once this node learns that it was removed from the cluster: a member
/// refused its messages because the member's configuration retires its id (a removed
/// follower, which the leader no longer replicates to), or its own configuration retires
/// it and it no longer leads (a leader that removed itself steps down once the change
/// commits). Leaves [`REMOVED_MARKER`] in `data_dir` so that the node refuses to start
/// again under this id, and returns the message to stop with. Pending forever if it never
/// happens.
pub async fn watch_removal(raft: Raft, data_dir: std::path::PathBuf) -> String {
    let id = raft.id().clone();
    let mut told = raft.removed_channel();
    let mut configs = raft.membership_channel();
    let mut roles = raft.leader_change_channel();
    let why = loop {
        let by = told.borrow_and_update().clone();
        if let Some(by) = by {
            break format!("member {by} refused its messages: its configuration retires this id");
        }
        if raft.membership().retired.contains(&id) && !raft.get_state().1 {
            break "its own configuration retires this id".to_string();
        }
        let open = tokio::select! {
            r = told.changed() => r.is_ok(),
            r = configs.changed() => r.is_ok(),
            r = roles.changed() => r.is_ok(),
        };
        if !open {
            return std::future::pending().await;
        }
    };
    if let Err(e) = std::fs::write(data_dir.join(REMOVED_MARKER), format!("{why}\n")) {
        tracing::warn!(error = %e, "could not leave the removal marker in the data directory");
    }
    format!("node {id} was removed from the cluster ({why}); stopping")
}

/// What a joining node tells the cluster about itself.
#[derive(Clone, Debug)]
pub struct JoinRequest {
    /// A member's client address (`host:port` or a URL).
    pub via: String,
    /// This node's peer address, as other members dial it.
    pub peer_address: String,
    /// This node's client address.
    pub client_address: String,
}

/// Asks the cluster at `req.via` to add this node (as a learner that is promoted once it
/// has caught up), retrying through redirects, unreachable members and elections until
/// this node is a voter. Returns an error, for the server to exit with, when the cluster
/// refuses it for good (a retired id, a voter already, a malformed request).
pub async fn join_cluster(raft: Raft, req: JoinRequest) -> Result<(), String> {
    let id = raft.id().clone();
    if raft.membership().is_voter(&id) {
        tracing::info!(node = %id, "already a voter; --join has nothing to do");
        return Ok(());
    }
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(DEFAULT_CATCH_UP_TIMEOUT + Duration::from_secs(30))
        .build()
        .map_err(|e| format!("building the HTTP client: {e}"))?;
    let body = json!({
        "id": id.as_str(),
        "peer_address": req.peer_address,
        "client_address": req.client_address,
    })
    .to_string();
    let mut url = format!("{}/v1/members", crate::admin::endpoint_url(&req.via));
    let mut backoff = Duration::from_millis(200);
    loop {
        if raft.membership().is_voter(&id) {
            tracing::info!(node = %id, "joined the cluster as a voter");
            return Ok(());
        }
        tracing::info!(node = %id, %url, "asking the cluster to add this node");
        match http
            .post(&url)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
        {
            Err(e) => tracing::warn!(node = %id, %url, error = %e, "join request failed; retrying"),
            Ok(resp) => {
                let status = resp.status();
                let location = resp
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let text = resp.text().await.unwrap_or_default();
                match status.as_u16() {
                    200 => {
                        tracing::info!(node = %id, "the cluster added this node");
                        backoff = Duration::from_millis(200);
                    }
                    307 | 308 => {
                        if let Some(l) = location {
                            url = l;
                            continue;
                        }
                    }
                    400 | 404 | 409 => {
                        return Err(format!("the cluster refused to add {id}: {text}"));
                    }
                    _ => {
                        tracing::warn!(node = %id, %status, body = %text, "join not done yet; retrying")
                    }
                }
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
        // Start again from the member named, in case the leader we were sent to is gone.
        url = format!("{}/v1/members", crate::admin::endpoint_url(&req.via));
    }
}

/// Keeps every member's client address in the replicated configuration: while this node
/// leads, members whose metadata lacks one it knows from the static list (the bootstrap
/// members' `--http-peers`/`--api-peers`) get it. Runs until the node stops.
pub async fn publish_client_addresses(raft: Raft, fixed: BTreeMap<NodeId, String>) {
    let mut leaders = raft.leader_change_channel();
    let mut configs = raft.membership_channel();
    loop {
        if raft.get_state().1 {
            let m = raft.membership();
            let missing: BTreeMap<NodeId, NodeInfo> = m
                .members()
                .into_iter()
                .filter(|id| client_address_in(&m, id).is_none())
                .filter_map(|id| {
                    let address = fixed.get(&id)?.clone();
                    let mut info = m.nodes.get(&id).cloned().unwrap_or_default();
                    info.metadata
                        .insert(CLIENT_ADDRESS_KEY.to_string(), address);
                    Some((id, info))
                })
                .collect();
            if !missing.is_empty() {
                if let Err(e) = raft.update_member_info(missing).await {
                    tracing::debug!(error = %e, "publishing client addresses; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            }
        }
        tokio::select! {
            changed = leaders.changed() => if changed.is_err() { return },
            changed = configs.changed() => if changed.is_err() { return },
        }
    }
}

/// What to tell a client whose request met a leadership transfer
/// ([`Error::TransferInProgress`]: nothing was proposed): waits, at most `limit`, for
/// the new leader and returns [`Error::NotLeader`] naming it, so the client is redirected
/// at once instead of retrying blindly; if the transfer is abandoned, `NotLeader` with no
/// leader (retry shortly). Other errors pass through.
pub async fn after_transfer(raft: &Raft, error: Error, limit: Duration) -> Error {
    if !matches!(error, Error::TransferInProgress { .. }) {
        return error;
    }
    let me = raft.id().clone();
    let mut leaders = raft.leader_change_channel();
    let moved = async move {
        leaders
            .wait_for(|o| o.leader.as_ref().is_some_and(|l| *l != me))
            .await
            .ok()
            .and_then(|o| o.leader.clone())
    };
    Error::NotLeader {
        leader: tokio::time::timeout(limit, moved).await.ok().flatten(),
    }
}

/// Why a server stopped, when it was not asked to: removed from the cluster, or refused
/// by it (`--join`). Read it after the server stopped serving, to exit with an error.
#[derive(Clone, Debug, Default)]
pub struct Verdict(Arc<std::sync::Mutex<Option<String>>>);

impl Verdict {
    fn set(&self, why: String) {
        if let Ok(mut v) = self.0.lock() {
            *v = Some(why);
        }
    }

    /// The reason the server must exit with an error, if any.
    pub fn take(&self) -> Option<String> {
        self.0.lock().ok().and_then(|mut v| v.take())
    }
}

/// The membership side of a server's life: joins the cluster if `join` says so, and
/// returns the future to stop serving on — SIGTERM/SIGINT (or the parent's death), after
/// a leader handed leadership over (bounded by `hand_over`); the node learning it was
/// removed ([`watch_removal`]); or the cluster refusing `--join` — with the [`Verdict`]
/// that says which of the last two, if any.
pub fn stop_signals(
    raft: &Raft,
    join: Option<JoinRequest>,
    data_dir: std::path::PathBuf,
    exit_with_parent: bool,
    hand_over: Duration,
) -> (
    impl std::future::Future<Output = ()> + Send + 'static,
    Verdict,
) {
    let (refused_tx, refused) = tokio::sync::oneshot::channel::<String>();
    if let Some(request) = join {
        let joining = raft.clone();
        tokio::spawn(async move {
            if let Err(why) = join_cluster(joining, request).await {
                tracing::error!(%why, "could not join the cluster");
                let _ = refused_tx.send(why);
            }
        });
    }
    let verdict = Verdict::default();
    let stopping = {
        let raft = raft.clone();
        let verdict = verdict.clone();
        async move {
            tokio::select! {
                () = crate::signals::shutdown_signal(exit_with_parent) => {
                    // A leader that stops hands leadership over first: clients see a
                    // pause of a round trip instead of an election timeout.
                    hand_over_leadership(&raft, hand_over).await;
                }
                why = watch_removal(raft.clone(), data_dir) => {
                    tracing::error!(%why, "removed from the cluster");
                    verdict.set(why);
                }
                Ok(why) = refused => verdict.set(why),
            }
        }
    };
    (stopping, verdict)
}

/// The graceful leave: a leader hands leadership to the most up-to-date voter before it
/// stops, so the cluster does not wait an election timeout for a new leader. Bounded by
/// `limit`; a follower returns at once.
pub async fn hand_over_leadership(raft: &Raft, limit: Duration) {
    if !raft.get_state().1 {
        return;
    }
    let started = Instant::now();
    match tokio::time::timeout(limit, raft.transfer_leader(None)).await {
        Ok(Ok(leader)) => tracing::info!(
            node = %raft.id(), to = %leader, took_ms = started.elapsed().as_millis() as u64,
            "handed leadership over before stopping"
        ),
        Ok(Err(e)) => {
            tracing::warn!(node = %raft.id(), error = %e, "could not hand leadership over; stopping anyway")
        }
        Err(_) => {
            tracing::warn!(node = %raft.id(), "handing leadership over timed out; stopping anyway")
        }
    }
}
