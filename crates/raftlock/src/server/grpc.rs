//! The gRPC API (`proto/raftlock.proto`, service `raftlock.v1.RaftLock`) over the same
//! service as the HTTP API. Errors are status codes whose details are a `google.rpc.Status`
//! carrying an `ErrorDetails`: the reason, the leader's client address, a retry hint.

use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::{mpsc, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Code, Request, Response, Status, Streaming};

use super::error::ServiceError;
use super::service::{AcquireRequest, LockService};
use crate::machine::view::LockView;
use crate::machine::{AcquireOutcome, SessionId};
use crate::proto::api as pb;
use crate::proto::api::raft_lock_server::{RaftLock, RaftLockServer};

/// Keep-alives of one stream in flight (read, not yet answered): past it the server
/// stops reading the stream until answers drain, so one client cannot pile up tasks.
const KEEPALIVE_STREAM_DEPTH: usize = 1_024;

/// How long a client should wait before retrying after UNAVAILABLE.
const RETRY_AFTER_MS: u64 = 100;

/// The gRPC service.
#[derive(Clone, Debug)]
pub struct GrpcApi {
    service: LockService,
}

impl GrpcApi {
    /// The tonic server of `service`.
    pub fn server(service: LockService) -> RaftLockServer<GrpcApi> {
        RaftLockServer::new(GrpcApi { service })
    }
}

/// Maps a service error to a status whose details carry an `ErrorDetails`.
pub fn status_of(e: ServiceError) -> Status {
    let reason = e.reason();
    let (code, leader_hint, retry_after_ms) = match &e {
        ServiceError::NotLeader { address, .. } => {
            (Code::Unavailable, address.clone().unwrap_or_default(), 0)
        }
        ServiceError::Unavailable(_) | ServiceError::Overloaded(_) => {
            (Code::Unavailable, String::new(), RETRY_AFTER_MS)
        }
        ServiceError::Unknown(_) => (Code::DeadlineExceeded, String::new(), 0),
        ServiceError::BadRequest(_) => (Code::InvalidArgument, String::new(), 0),
        ServiceError::SessionNotFound(_) | ServiceError::LockNotFound(_) => {
            (Code::NotFound, String::new(), 0)
        }
        ServiceError::NotHolder { .. } => (Code::FailedPrecondition, String::new(), 0),
        ServiceError::LimitReached(_) => (Code::ResourceExhausted, String::new(), 0),
        ServiceError::Internal(_) => (Code::Internal, String::new(), 0),
    };
    let details = pb::ErrorDetails {
        reason: reason.to_string(),
        leader_hint,
        retry_after_ms,
    };
    let message = e.to_string();
    let bytes = crate::proto::rich::encode(code, &message, &details);
    Status::with_details(code, message, bytes.into())
}

fn session_text(s: Option<SessionId>) -> String {
    s.map(|s| s.to_string()).unwrap_or_default()
}

/// A lock as the gRPC API shows it.
pub fn lock_info(v: &LockView) -> pb::LockInfo {
    let h = v.holder.as_ref();
    pb::LockInfo {
        name: v.name.clone(),
        holder: session_text(h.map(|h| h.session)),
        token: h.map_or(0, |h| h.token),
        acquired_at_ms: h.map_or(0, |h| h.acquired_ms),
        expires_at_ms: h.map_or(0, |h| h.expires_ms),
        waiters: v
            .waiters
            .iter()
            .map(|w| pb::WaiterInfo {
                session: w.session.to_string(),
                priority: w.priority,
                enqueued_at_ms: w.enqueued_ms,
                wait_deadline_ms: w.deadline_ms,
                client: w.client.clone(),
            })
            .collect(),
        blocked_until_ms: v.blocked_until_ms.unwrap_or(0),
        holder_client: h.map(|h| h.client.clone()).unwrap_or_default(),
    }
}

type KeepAliveStream = Pin<Box<dyn Stream<Item = Result<pb::KeepAliveResponse, Status>> + Send>>;

#[tonic::async_trait]
impl RaftLock for GrpcApi {
    async fn create_session(
        &self,
        request: Request<pb::CreateSessionRequest>,
    ) -> Result<Response<pb::CreateSessionResponse>, Status> {
        let r = request.into_inner();
        let created = self
            .service
            .create_session(r.ttl_ms, r.lock_delay_ms, r.client)
            .await
            .map_err(status_of)?;
        Ok(Response::new(pb::CreateSessionResponse {
            session: created.session.to_string(),
            ttl_ms: created.ttl_ms,
            lock_delay_ms: created.lock_delay_ms,
        }))
    }

    type KeepAliveStream = KeepAliveStream;

    async fn keep_alive(
        &self,
        request: Request<Streaming<pb::KeepAliveRequest>>,
    ) -> Result<Response<Self::KeepAliveStream>, Status> {
        let mut incoming = request.into_inner();
        let (tx, rx) = mpsc::channel(KEEPALIVE_STREAM_DEPTH);
        let in_flight = Arc::new(Semaphore::new(KEEPALIVE_STREAM_DEPTH));
        let service = self.service.clone();
        tokio::spawn(async move {
            loop {
                // A stopping server ends the stream (the client reopens it on the next
                // leader) instead of holding the shutdown open.
                let next = tokio::select! {
                    next = incoming.next() => next,
                    () = service.stopped() => break,
                };
                let Some(Ok(req)) = next else { break };
                let Ok(permit) = in_flight.clone().acquire_owned().await else {
                    break;
                };
                let (service, tx) = (service.clone(), tx.clone());
                // Answered when the renewal that covers it is applied; meanwhile the
                // stream keeps taking keep-alives (of this and other sessions).
                tokio::spawn(async move {
                    let answer = match service.keepalive(&req.session).await {
                        Ok(ttl_ms) => Ok(pb::KeepAliveResponse {
                            session: req.session,
                            ttl_ms,
                            expired: false,
                        }),
                        // A malformed id names no live session: that one answer says so,
                        // and the stream goes on serving the others.
                        Err(ServiceError::SessionNotFound(_) | ServiceError::BadRequest(_)) => {
                            Ok(pb::KeepAliveResponse {
                                session: req.session,
                                ttl_ms: 0,
                                expired: true,
                            })
                        }
                        // Not the leader, shutting down: the whole stream must move.
                        Err(e) => Err(status_of(e)),
                    };
                    let _ = tx.send(answer).await;
                    drop(permit);
                });
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn close_session(
        &self,
        request: Request<pb::CloseSessionRequest>,
    ) -> Result<Response<pb::CloseSessionResponse>, Status> {
        let released = self
            .service
            .close_session(&request.into_inner().session)
            .await
            .map_err(status_of)?;
        Ok(Response::new(pb::CloseSessionResponse { released }))
    }

    async fn acquire(
        &self,
        request: Request<pb::AcquireRequest>,
    ) -> Result<Response<pb::AcquireResponse>, Status> {
        let r = request.into_inner();
        let outcome = self
            .service
            .acquire(AcquireRequest {
                session: r.session,
                lock: r.lock,
                wait_ms: r.wait_ms,
                priority: r.priority,
                request_id: (!r.request_id.is_empty()).then_some(r.request_id),
            })
            .await
            .map_err(status_of)?;
        let response = match outcome {
            AcquireOutcome::Granted { token, acquired_ms } => pb::AcquireResponse {
                acquired: true,
                token,
                acquired_at_ms: acquired_ms,
                ..Default::default()
            },
            AcquireOutcome::NotAcquired {
                why,
                holder,
                token,
                retry_after_ms,
            } => pb::AcquireResponse {
                acquired: false,
                token: token.unwrap_or(0),
                holder: session_text(holder),
                retry_after_ms,
                reason: why.as_str().to_string(),
                acquired_at_ms: 0,
            },
            AcquireOutcome::Waiting { .. } => {
                return Err(status_of(ServiceError::Unknown(
                    "the acquire is still waiting; retry with the same request_id".into(),
                )))
            }
        };
        Ok(Response::new(response))
    }

    async fn release(
        &self,
        request: Request<pb::ReleaseRequest>,
    ) -> Result<Response<pb::ReleaseResponse>, Status> {
        let r = request.into_inner();
        let next = self
            .service
            .release(
                &r.session,
                r.lock,
                r.token,
                (!r.request_id.is_empty()).then_some(r.request_id),
            )
            .await
            .map_err(status_of)?;
        Ok(Response::new(pb::ReleaseResponse {
            released: true,
            next_holder: session_text(next),
        }))
    }

    async fn get_lock(
        &self,
        request: Request<pb::GetLockRequest>,
    ) -> Result<Response<pb::LockInfo>, Status> {
        let r = request.into_inner();
        let view = self
            .service
            .get_lock(&r.lock, r.stale)
            .await
            .map_err(status_of)?;
        Ok(Response::new(lock_info(&view)))
    }

    async fn list_locks(
        &self,
        request: Request<pb::ListLocksRequest>,
    ) -> Result<Response<pb::ListLocksResponse>, Status> {
        let r = request.into_inner();
        let after = (!r.after.is_empty()).then_some(r.after.as_str());
        let (page, next) = self
            .service
            .list_locks(&r.prefix, after, r.limit as usize)
            .await
            .map_err(status_of)?;
        Ok(Response::new(pb::ListLocksResponse {
            locks: page.iter().map(lock_info).collect(),
            next_after: next.unwrap_or_default(),
        }))
    }

    async fn validate_token(
        &self,
        request: Request<pb::ValidateTokenRequest>,
    ) -> Result<Response<pb::ValidateTokenResponse>, Status> {
        let r = request.into_inner();
        let check = self
            .service
            .validate(&r.lock, r.token)
            .await
            .map_err(status_of)?;
        Ok(Response::new(pb::ValidateTokenResponse {
            valid: check.valid,
            current_token: check.current_token.unwrap_or(0),
        }))
    }
}
