//! The lock service's operations, shared by the HTTP and gRPC front ends: input checks,
//! proposals, held-open acquires, and linearizable or local reads.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use raftlock_raft::{Rand, StandardRand};
use tokio::sync::watch;

use super::error::ServiceError;
use super::keepalive::KeepAlives;
use super::proposer::Proposer;
use super::state::{EventPage, Shared};
use super::waits::Wake;
use crate::machine::limits::{
    check_client_name, check_lock_delay, check_lock_name, check_request_id, check_ttl, check_wait,
    DEFAULT_TTL_MS,
};
use crate::machine::view::{LockView, SessionView, TokenCheck};
use crate::machine::{
    AcquireCommand, AcquireOutcome, Command, ReleaseCommand, ReleaseOutcome, Response, SessionId,
};

/// Most locks one list request returns.
pub const MAX_PAGE: usize = 1_000;
/// Locks a list request returns when it does not say.
pub const DEFAULT_PAGE: usize = 100;

/// The service's limits, proposed with the commands they bound.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Waiters per lock.
    pub max_waiters: u32,
    /// Live sessions.
    pub max_sessions: u64,
}

/// A new session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreatedSession {
    /// Its id.
    pub session: SessionId,
    /// Its TTL.
    pub ttl_ms: u64,
    /// Its lock-delay.
    pub lock_delay_ms: u64,
}

/// An acquire request.
#[derive(Clone, Debug, Default)]
pub struct AcquireRequest {
    /// The session, as the client gave it.
    pub session: String,
    /// The lock.
    pub lock: String,
    /// How long to wait (0: try once).
    pub wait_ms: u64,
    /// Higher is served first.
    pub priority: i32,
    /// Unique per session; `None` to have one made (then a retry is a new request).
    pub request_id: Option<String>,
}

/// The lock service (cheap to clone).
#[derive(Clone, Debug)]
pub struct LockService {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    proposer: Proposer,
    shared: Arc<Shared>,
    keepalives: KeepAlives,
    limits: Limits,
    rand: Mutex<StandardRand>,
    /// Set when the server begins to stop: held-open requests end at once rather than
    /// hold the shutdown for up to their whole wait.
    stopping: watch::Sender<bool>,
}

fn parse_session(text: &str) -> Result<SessionId, ServiceError> {
    Ok(text.parse::<SessionId>()?)
}

impl LockService {
    /// The service over `shared`, proposing through `proposer`.
    pub fn new(
        proposer: Proposer,
        shared: Arc<Shared>,
        keepalives: KeepAlives,
        limits: Limits,
    ) -> Self {
        LockService {
            inner: Arc::new(Inner {
                proposer,
                shared,
                keepalives,
                limits,
                rand: Mutex::new(StandardRand::new()),
                stopping: watch::channel(false).0,
            }),
        }
    }

    /// The server is stopping: held-open acquires and keep-alive streams end now, with
    /// "unavailable", so that clients retry on the next leader (a queued wait stays queued
    /// under its request id, and the retry finds it there).
    pub fn stop(&self) {
        self.inner.stopping.send_replace(true);
    }

    /// Resolves once [`LockService::stop`] was called.
    pub async fn stopped(&self) {
        let mut rx = self.inner.stopping.subscribe();
        // The sender lives as long as `self`, so this only ends when stopping is set.
        let _ = rx.wait_for(|s| *s).await;
    }

    /// The proposer (leader checks, raft handle, addresses).
    pub fn proposer(&self) -> &Proposer {
        &self.inner.proposer
    }

    /// The shared state.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.inner.shared
    }

    fn random(&self) -> u64 {
        self.inner
            .rand
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .next_u64()
    }

    async fn propose(&self, command: Command) -> Result<Response, ServiceError> {
        match self.inner.proposer.propose(command).await? {
            Response::Refused(r) => Err(r.into()),
            other => Ok(other),
        }
    }

    /// Opens a session; a `ttl_ms` of 0 means the default.
    pub async fn create_session(
        &self,
        ttl_ms: u64,
        lock_delay_ms: u64,
        client: String,
    ) -> Result<CreatedSession, ServiceError> {
        let ttl_ms = if ttl_ms == 0 { DEFAULT_TTL_MS } else { ttl_ms };
        check_ttl(ttl_ms)?;
        check_lock_delay(lock_delay_ms)?;
        check_client_name(&client)?;
        let command = Command::CreateSession {
            nonce: self.random(),
            ttl_ms,
            lock_delay_ms,
            client,
            max_sessions: self.inner.limits.max_sessions,
        };
        match self.propose(command).await? {
            Response::Created {
                session,
                ttl_ms,
                lock_delay_ms,
            } => Ok(CreatedSession {
                session,
                ttl_ms,
                lock_delay_ms,
            }),
            other => Err(unexpected(&other)),
        }
    }

    /// Renews a session (batched with others); returns its remaining TTL.
    pub async fn keepalive(&self, session: &str) -> Result<u64, ServiceError> {
        let id = parse_session(session)?;
        self.inner.proposer.leader_term()?;
        match self.inner.keepalives.renew(id).await? {
            0 => Err(ServiceError::SessionNotFound(format!(
                "session {id} is unknown or expired"
            ))),
            remaining => Ok(remaining),
        }
    }

    /// Closes a session; returns the locks it released.
    pub async fn close_session(&self, session: &str) -> Result<Vec<String>, ServiceError> {
        let session = parse_session(session)?;
        match self.propose(Command::CloseSession { session }).await? {
            Response::Closed { released } => Ok(released),
            other => Err(unexpected(&other)),
        }
    }

    /// Acquires a lock. With a wait, holds on until the grant or the end of the wait is
    /// applied. If the caller goes away meanwhile (the future is dropped), the wait is
    /// cancelled; a grant that was applied first stands and is remembered for a retry.
    pub async fn acquire(&self, req: AcquireRequest) -> Result<AcquireOutcome, ServiceError> {
        let session = parse_session(&req.session)?;
        check_lock_name(&req.lock)?;
        check_wait(req.wait_ms)?;
        let request_id = match req.request_id {
            Some(id) => {
                check_request_id(&id)?;
                id
            }
            None => format!("auto-{:016x}", self.random()),
        };
        // Registered before proposing: a grant applied right after the acquire must not
        // slip past. The guard is declared first so that it runs after the registration
        // is gone and sees whether another handler still waits for the same request.
        let mut cancel = CancelOnDrop {
            service: self.clone(),
            session,
            lock: req.lock.clone(),
            request_id: request_id.clone(),
            armed: false,
        };
        let shared = self.inner.shared.clone();
        let mut registration = shared.waits.register(session, &request_id);
        let command = Command::Acquire(AcquireCommand {
            session,
            lock: req.lock,
            wait_ms: req.wait_ms,
            priority: req.priority,
            request_id: request_id.clone(),
            max_waiters: self.inner.limits.max_waiters,
        });
        // A blocking acquire whose caller goes away before its answer may already be
        // queued: cancel it. (The cancel is proposed after the acquire, so it is applied
        // after it; if the acquire never reached the log, the cancel finds nothing.)
        cancel.armed = req.wait_ms > 0;
        let outcome = match self.propose(command).await {
            Ok(Response::Acquire(outcome)) => outcome,
            Ok(other) => {
                cancel.armed = false;
                return Err(unexpected(&other));
            }
            Err(e) => {
                // The client retries an unknown outcome with the same request id.
                cancel.armed = false;
                return Err(e);
            }
        };
        if outcome.is_final() {
            cancel.armed = false;
            return Ok(outcome);
        }
        shared.metrics.set_held_open(shared.waits.len());
        // The leader ends the wait when its time is up; past that (plus the time to
        // commit the ending) something is wrong, and the outcome is unknown.
        let limit = Duration::from_millis(req.wait_ms) + self.inner.proposer.request_timeout();
        let deadline = tokio::time::Instant::now() + limit;
        let result = loop {
            let wake = tokio::select! {
                wake = registration.wake() => wake,
                () = self.stopped() => {
                    // Left queued: a retry with the same request id on the next leader
                    // finds its place in the queue.
                    cancel.armed = false;
                    break Err(ServiceError::Unavailable(
                        "the node is shutting down; retry with the same request_id".into(),
                    ));
                }
                _ = tokio::time::sleep_until(deadline) => break Err(ServiceError::Unknown(
                    "the wait did not end in time; retry with the same request_id".into(),
                )),
            };
            if let Some(Wake::Ended(outcome)) = wake {
                break Ok(outcome);
            }
            // Rechecks: the state jumped to a snapshot.
            let remembered = shared
                .read()
                .remembered_acquire(session, &cancel.lock, &request_id);
            match remembered {
                Some(o) if o.is_final() => break Ok(o),
                _ => registration.renew(),
            }
        };
        cancel.armed = false;
        drop(registration);
        shared.metrics.set_held_open(shared.waits.len());
        result
    }

    /// Releases a lock held with `token`.
    pub async fn release(
        &self,
        session: &str,
        lock: String,
        token: u64,
        request_id: Option<String>,
    ) -> Result<Option<SessionId>, ServiceError> {
        let session = parse_session(session)?;
        check_lock_name(&lock)?;
        let request_id = match request_id {
            Some(id) => {
                check_request_id(&id)?;
                id
            }
            None => format!("auto-{:016x}", self.random()),
        };
        let command = Command::Release(ReleaseCommand {
            session,
            lock: lock.clone(),
            token,
            request_id,
        });
        let outcome = match self.inner.proposer.propose(command).await? {
            Response::Release(o) => o,
            Response::Refused(r) if r.kind == crate::machine::RefusalKind::SessionNotFound => {
                // An expired session holds nothing.
                return Err(ServiceError::NotHolder {
                    message: format!("{}; it holds no lock", r.message),
                    holder: None,
                    token: None,
                });
            }
            Response::Refused(r) => return Err(r.into()),
            other => return Err(unexpected(&other)),
        };
        match outcome {
            ReleaseOutcome::Released { next_holder } => Ok(next_holder),
            ReleaseOutcome::NotHolder { holder, token: t } => Err(ServiceError::NotHolder {
                message: format!("session {session} does not hold {lock:?} with token {token}"),
                holder,
                token: t,
            }),
        }
    }

    async fn read_barrier(&self, stale: bool) -> Result<(), ServiceError> {
        if stale {
            Ok(())
        } else {
            self.inner.proposer.read_barrier().await
        }
    }

    /// A lock's holder and queue; linearizable unless `stale`.
    pub async fn get_lock(&self, name: &str, stale: bool) -> Result<LockView, ServiceError> {
        check_lock_name(name)?;
        self.read_barrier(stale).await?;
        self.inner
            .shared
            .read()
            .lock(name)
            .ok_or_else(|| ServiceError::LockNotFound(name.to_string()))
    }

    /// A page of locks by name (linearizable): up to `limit` (0: the default) after
    /// `after`, and the name to continue after, if more follow.
    pub async fn list_locks(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<LockView>, Option<String>), ServiceError> {
        let limit = match limit {
            0 => DEFAULT_PAGE,
            n if n <= MAX_PAGE => n,
            n => {
                return Err(ServiceError::BadRequest(format!(
                    "limit must be 1..={MAX_PAGE}, not {n}"
                )))
            }
        };
        self.read_barrier(false).await?;
        let (page, more) = self.inner.shared.read().list(prefix, after, limit);
        let next = if more {
            page.last().map(|l| l.name.clone())
        } else {
            None
        };
        Ok((page, next))
    }

    /// Whether `token` is `name`'s current fencing token (linearizable).
    pub async fn validate(&self, name: &str, token: u64) -> Result<TokenCheck, ServiceError> {
        check_lock_name(name)?;
        self.read_barrier(false).await?;
        Ok(self.inner.shared.read().check_token(name, token))
    }

    /// A session's state; linearizable unless `stale`.
    pub async fn session(&self, session: &str, stale: bool) -> Result<SessionView, ServiceError> {
        let id = parse_session(session)?;
        self.read_barrier(stale).await?;
        self.inner.shared.read().session(id).ok_or_else(|| {
            ServiceError::SessionNotFound(format!("session {id} is unknown or expired"))
        })
    }

    /// This node's recent events after `after` (a local read).
    pub fn events(&self, after: u64, limit: usize) -> EventPage {
        self.inner
            .shared
            .events
            .page(after, limit.clamp(1, MAX_PAGE * 10))
    }
}

fn unexpected(response: &Response) -> ServiceError {
    ServiceError::Internal(format!(
        "unexpected answer from the state machine: {response:?}"
    ))
}

/// Cancels a held-open acquire whose caller went away, unless another handler on this
/// node still waits for the same request (a retry of it).
struct CancelOnDrop {
    service: LockService,
    session: SessionId,
    lock: String,
    request_id: String,
    armed: bool,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        let shared = &self.service.inner.shared;
        shared.metrics.set_held_open(shared.waits.len());
        if !self.armed || shared.waits.count(self.session, &self.request_id) > 0 {
            return;
        }
        let service = self.service.clone();
        let command = Command::CancelWait {
            session: self.session,
            lock: std::mem::take(&mut self.lock),
            request_id: std::mem::take(&mut self.request_id),
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                match service.inner.proposer.propose(command).await {
                    Ok(r) => tracing::debug!(?r, "cancelled the wait of a client that went away"),
                    Err(e) => tracing::debug!(error = %e, "cancelling a wait failed"),
                }
            });
        }
    }
}
