//! The Rust client of RaftLock over gRPC: it takes a list of endpoints, follows the
//! leader, retries with the same request id (so a retried acquire or release is applied
//! once), and keeps its session alive in the background.
//!
//! ```no_run
//! # async fn example() -> Result<(), raftlock::ClientError> {
//! use raftlock::{Client, ClientOptions};
//!
//! let client = Client::new(ClientOptions::new(["127.0.0.1:7001", "127.0.0.1:7002"]))?;
//! let guard = client.lock("nightly-report").await?;
//! println!("holding nightly-report with fencing token {}", guard.token());
//! tokio::select! {
//!     _ = guard.lost() => eprintln!("lost the lock; stop writing"),
//!     _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
//! }
//! guard.release().await?;
//! # Ok(())
//! # }
//! ```

mod guard;
pub mod session;
mod transport;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use raftlock_raft::{Rand, StandardRand};
use tokio::time::Instant;

pub use guard::LockGuard;
use session::Session;
pub use session::{jeopardy_margin, Health};
pub use transport::endpoint_url;
use transport::{Failure, Transport};

use crate::machine::limits::{DEFAULT_TTL_MS, MAX_WAIT_MS};
use crate::proto::api as pb;

/// How a [`Client`] behaves.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Client addresses of the cluster's nodes (`host:port`).
    pub endpoints: Vec<String>,
    /// TTL of the client's session.
    pub ttl: Duration,
    /// Lock-delay of the client's session: how long a lock it held stays blocked after
    /// the session expires.
    pub lock_delay: Duration,
    /// A name shown with the client's locks.
    pub name: String,
    /// How long one operation keeps trying (redirects, elections, unreachable nodes).
    pub deadline: Duration,
    /// How long one attempt on one node may take before the next node is tried.
    pub attempt_timeout: Duration,
}

impl ClientOptions {
    /// Options for `endpoints` with the defaults: TTL 15 s, no lock-delay, operations
    /// that keep trying for 10 s, attempts of at most 3 s.
    pub fn new(endpoints: impl IntoIterator<Item = impl Into<String>>) -> Self {
        ClientOptions {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            ttl: Duration::from_millis(DEFAULT_TTL_MS),
            lock_delay: Duration::ZERO,
            name: String::new(),
            deadline: Duration::from_secs(10),
            attempt_timeout: Duration::from_secs(3),
        }
    }

    /// Sets the session TTL.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Sets the session's lock-delay.
    pub fn lock_delay(mut self, lock_delay: Duration) -> Self {
        self.lock_delay = lock_delay;
        self
    }

    /// Sets the client's name.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Sets how long one operation keeps trying.
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }
}

/// Why an operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// An endpoint is not a valid address.
    #[error("invalid endpoint: {0}")]
    InvalidEndpoint(String),
    /// No node could serve the request before the deadline; it did not take effect.
    #[error("cluster unavailable: {0}")]
    Unavailable(String),
    /// The request may or may not have taken effect.
    #[error("outcome unknown: {0}")]
    Unknown(String),
    /// The client's session expired or was not renewed in time.
    #[error("the session was lost (it expired, or was not renewed in time)")]
    SessionLost,
    /// The cluster refused the request; it did not take effect.
    #[error("{message} ({reason})")]
    Rejected {
        /// The gRPC status code.
        code: tonic::Code,
        /// The stable reason (`bad_request`, `session_not_found`, `not_holder`, ...).
        reason: String,
        /// The server's message.
        message: String,
    },
}

impl ClientError {
    fn from_failure(f: Failure) -> Self {
        ClientError::Rejected {
            code: f.status.code(),
            reason: f.details.reason,
            message: f.status.message().to_string(),
        }
    }

    /// The refusal's reason, if the cluster refused.
    pub fn reason(&self) -> Option<&str> {
        match self {
            ClientError::Rejected { reason, .. } => Some(reason),
            _ => None,
        }
    }
}

/// A granted acquire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Acquired {
    /// The fencing token.
    pub token: u64,
    /// When it was granted (cluster time, ms).
    pub acquired_at_ms: u64,
}

/// An acquire that did not get the lock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotAcquired {
    /// The holder's session, if any.
    pub holder: Option<String>,
    /// The holder's token, if any.
    pub token: Option<u64>,
    /// When a retry might succeed.
    pub retry_after: Duration,
    /// Why: `held`, `lock_delay`, `wait_timed_out`, `queue_full`, ...
    pub reason: String,
}

/// What an acquire ended with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AcquireResult {
    /// Granted.
    Acquired(Acquired),
    /// Not granted.
    NotAcquired(NotAcquired),
}

/// A client of a RaftLock cluster (cheap to clone; clones share the session).
#[derive(Clone, Debug)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    transport: Arc<Transport>,
    options: ClientOptions,
    session: tokio::sync::Mutex<Option<Arc<Session>>>,
    request_prefix: String,
    next_request: AtomicU64,
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Client {
    /// A client of the cluster at `options.endpoints`. Nothing is sent until the first
    /// operation; the session is opened by the first lock operation.
    pub fn new(options: ClientOptions) -> Result<Client, ClientError> {
        let transport = Transport::new(&options.endpoints, Duration::from_secs(1))?;
        Ok(Client {
            inner: Arc::new(Inner {
                transport: Arc::new(transport),
                options,
                session: tokio::sync::Mutex::new(None),
                request_prefix: format!("{:012x}", StandardRand::new().next_u64() >> 16),
                next_request: AtomicU64::new(1),
            }),
        })
    }

    /// Another client with the same options and a session of its own, sharing this
    /// one's connections and its knowledge of the leader: many independent lock holders
    /// in one process without a connection each (gRPC multiplexes their calls).
    pub fn fork(&self) -> Client {
        Client {
            inner: Arc::new(Inner {
                transport: self.inner.transport.clone(),
                options: self.inner.options.clone(),
                session: tokio::sync::Mutex::new(None),
                request_prefix: format!("{:012x}", StandardRand::new().next_u64() >> 16),
                next_request: AtomicU64::new(1),
            }),
        }
    }

    /// The options the client was made with.
    pub fn options(&self) -> &ClientOptions {
        &self.inner.options
    }

    /// The endpoints, the believed leader first (leaders this client was sent to are
    /// added).
    pub fn endpoints(&self) -> Vec<String> {
        self.inner.transport.addresses()
    }

    fn deadline(&self) -> Instant {
        Instant::now() + self.inner.options.deadline
    }

    fn attempt(&self) -> Duration {
        self.inner.options.attempt_timeout
    }

    /// A request id unique within this client.
    pub fn new_request_id(&self) -> String {
        let n = self.inner.next_request.fetch_add(1, Ordering::Relaxed);
        format!("{}-{n}", self.inner.request_prefix)
    }

    /// The client's session: the current one, or a new one if there is none or it was
    /// lost.
    async fn session(&self) -> Result<Arc<Session>, ClientError> {
        let mut slot = self.inner.session.lock().await;
        if let Some(s) = slot.as_ref().filter(|s| !s.is_lost()) {
            return Ok(s.clone());
        }
        let o = &self.inner.options;
        let sent = Instant::now();
        let id = self.create_session(o.ttl, o.lock_delay, &o.name).await?;
        let session = Session::start(
            self.inner.transport.clone(),
            id,
            o.ttl,
            sent,
            self.attempt(),
        );
        *slot = Some(session.clone());
        Ok(session)
    }

    /// The id of the client's session, opening it if needed.
    pub async fn session_id(&self) -> Result<String, ClientError> {
        Ok(self.session().await?.id.clone())
    }

    /// Acquires `name`, waiting as long as it takes. Fails with
    /// [`ClientError::SessionLost`] if the session is lost meanwhile.
    pub async fn lock(&self, name: &str) -> Result<LockGuard, ClientError> {
        loop {
            if let Some(guard) = self
                .lock_with_timeout(name, Duration::from_millis(MAX_WAIT_MS))
                .await?
            {
                return Ok(guard);
            }
        }
    }

    /// Acquires `name` if it is free now.
    pub async fn try_lock(&self, name: &str) -> Result<Option<LockGuard>, ClientError> {
        self.lock_with_timeout(name, Duration::ZERO).await
    }

    /// Acquires `name`, waiting in its queue up to `timeout` (at most 300 s; longer
    /// waits are cut to that). `None` if it was not granted in time.
    pub async fn lock_with_timeout(
        &self,
        name: &str,
        timeout: Duration,
    ) -> Result<Option<LockGuard>, ClientError> {
        let session = self.session().await?;
        let wait = timeout.min(Duration::from_millis(MAX_WAIT_MS));
        let request_id = self.new_request_id();
        let acquired = tokio::select! {
            r = self.acquire_as(&session.id, name, wait, 0, &request_id) => r?,
            _ = session.lost() => return Err(ClientError::SessionLost),
        };
        match acquired {
            AcquireResult::Acquired(a) => Ok(Some(LockGuard::new(
                self.clone(),
                session,
                name.to_string(),
                a.token,
            ))),
            AcquireResult::NotAcquired(_) => Ok(None),
        }
    }

    /// Opens a session of its own (not the client's), for tools that manage sessions
    /// themselves; returns its id. Nothing keeps it alive.
    pub async fn create_session(
        &self,
        ttl: Duration,
        lock_delay: Duration,
        name: &str,
    ) -> Result<String, ClientError> {
        let request = pb::CreateSessionRequest {
            ttl_ms: millis(ttl),
            lock_delay_ms: millis(lock_delay),
            client: name.to_string(),
        };
        let created = self
            .inner
            .transport
            .call(self.deadline(), self.attempt(), |mut c| {
                let request = request.clone();
                async move { c.create_session(request).await }
            })
            .await?;
        Ok(created.session)
    }

    /// Renews session `id` once; its remaining TTL, or `None` if it is gone.
    pub async fn keepalive_once(&self, id: &str) -> Result<Option<Duration>, ClientError> {
        let remaining =
            session::renew(&self.inner.transport, id, self.deadline(), self.attempt()).await?;
        Ok(remaining.map(Duration::from_millis))
    }

    /// Closes session `id`; returns the locks it released. A session that is already
    /// gone is refused with reason `session_not_found`.
    pub async fn close_session(&self, id: &str) -> Result<Vec<String>, ClientError> {
        let request = pb::CloseSessionRequest {
            session: id.to_string(),
        };
        let closed = self
            .inner
            .transport
            .call(self.deadline(), self.attempt(), |mut c| {
                let request = request.clone();
                async move { c.close_session(request).await }
            })
            .await?;
        Ok(closed.released)
    }

    /// Closes the client's session, if it has one: its locks are released at once.
    pub async fn close(&self) -> Result<(), ClientError> {
        let session = self.inner.session.lock().await.take();
        match session {
            Some(s) => match self.close_session(&s.id).await {
                Ok(_) => Ok(()),
                Err(e) if e.reason() == Some("session_not_found") => Ok(()),
                Err(e) => Err(e),
            },
            None => Ok(()),
        }
    }

    /// Acquires `name` for session `session` with `request_id` (retries reuse it),
    /// waiting up to `wait` in the queue.
    pub async fn acquire_as(
        &self,
        session: &str,
        name: &str,
        wait: Duration,
        priority: i32,
        request_id: &str,
    ) -> Result<AcquireResult, ClientError> {
        let request = pb::AcquireRequest {
            session: session.to_string(),
            lock: name.to_string(),
            wait_ms: millis(wait),
            priority,
            request_id: request_id.to_string(),
        };
        let answer = self
            .inner
            .transport
            .call(self.deadline() + wait, self.attempt() + wait, |mut c| {
                let request = request.clone();
                async move { c.acquire(request).await }
            })
            .await?;
        Ok(if answer.acquired {
            AcquireResult::Acquired(Acquired {
                token: answer.token,
                acquired_at_ms: answer.acquired_at_ms,
            })
        } else {
            AcquireResult::NotAcquired(NotAcquired {
                holder: non_empty(answer.holder),
                token: (answer.token != 0).then_some(answer.token),
                retry_after: Duration::from_millis(answer.retry_after_ms),
                reason: answer.reason,
            })
        })
    }

    /// Releases `name` held by `session` with `token`; returns the session it passed to.
    pub async fn release_as(
        &self,
        session: &str,
        name: &str,
        token: u64,
    ) -> Result<Option<String>, ClientError> {
        let request = pb::ReleaseRequest {
            session: session.to_string(),
            lock: name.to_string(),
            token,
            request_id: self.new_request_id(),
        };
        let answer = self
            .inner
            .transport
            .call(self.deadline(), self.attempt(), |mut c| {
                let request = request.clone();
                async move { c.release(request).await }
            })
            .await?;
        Ok(non_empty(answer.next_holder))
    }

    /// A lock's holder and queue; `None` if the cluster has no record of it.
    /// Linearizable unless `stale`.
    pub async fn get_lock(
        &self,
        name: &str,
        stale: bool,
    ) -> Result<Option<pb::LockInfo>, ClientError> {
        let request = pb::GetLockRequest {
            lock: name.to_string(),
            stale,
        };
        let answer = self
            .inner
            .transport
            .call(self.deadline(), self.attempt(), |mut c| {
                let request = request.clone();
                async move { c.get_lock(request).await }
            })
            .await;
        match answer {
            Ok(info) => Ok(Some(info)),
            Err(e) if e.reason() == Some("lock_not_found") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A page of locks whose names start with `prefix`, after `after`; and the name to
    /// continue after, if more follow.
    pub async fn list_locks(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<(Vec<pb::LockInfo>, Option<String>), ClientError> {
        let request = pb::ListLocksRequest {
            prefix: prefix.to_string(),
            after: after.unwrap_or_default().to_string(),
            limit,
        };
        let page = self
            .inner
            .transport
            .call(self.deadline(), self.attempt(), |mut c| {
                let request = request.clone();
                async move { c.list_locks(request).await }
            })
            .await?;
        Ok((page.locks, non_empty(page.next_after)))
    }

    /// Whether `token` is `name`'s current fencing token; and the current one.
    pub async fn validate(
        &self,
        name: &str,
        token: u64,
    ) -> Result<(bool, Option<u64>), ClientError> {
        let request = pb::ValidateTokenRequest {
            lock: name.to_string(),
            token,
        };
        let answer = self
            .inner
            .transport
            .call(self.deadline(), self.attempt(), |mut c| {
                let request = request.clone();
                async move { c.validate_token(request).await }
            })
            .await?;
        Ok((
            answer.valid,
            (answer.current_token != 0).then_some(answer.current_token),
        ))
    }
}
