//! Reaching the leader: a gRPC channel per endpoint, the endpoint believed to lead, and
//! the retry rules. A call goes to the believed leader; a follower's answer names the
//! leader (its client address), an unreachable endpoint or an election makes the call
//! move on, and everything is retried until the operation's deadline. Every call of the
//! client is safe to repeat: the lock operations carry a request id that the cluster
//! remembers, reads and renewals are idempotent, and a repeated session creation leaves
//! at most an unused session that expires.

use std::future::Future;
use std::sync::{PoisonError, RwLock};
use std::time::Duration;

use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use super::ClientError;
use crate::proto::api as pb;
use crate::proto::api::raft_lock_client::RaftLockClient;

/// Pause before trying the next endpoint when a whole round failed to connect.
const ROUND_PAUSE: Duration = Duration::from_millis(50);
/// Pause after "no leader yet" when the server gives no hint.
const NO_LEADER_PAUSE: Duration = Duration::from_millis(50);

#[derive(Debug)]
struct Member {
    address: String,
    client: RaftLockClient<Channel>,
}

/// The endpoints and the one believed to lead.
#[derive(Debug)]
pub(crate) struct Transport {
    members: RwLock<Vec<Member>>,
    leader: RwLock<usize>,
    connect_timeout: Duration,
}

/// `host:port` or `http://host:port` to `http://host:port` (shared with the admin
/// commands).
pub use raftlock_serverkit::admin::endpoint_url;

fn connect(address: &str, connect_timeout: Duration) -> Result<Member, ClientError> {
    let url = endpoint_url(address);
    let endpoint = Endpoint::from_shared(url.clone())
        .map_err(|e| ClientError::InvalidEndpoint(format!("{address}: {e}")))?
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5));
    Ok(Member {
        address: url,
        client: RaftLockClient::new(endpoint.connect_lazy()),
    })
}

/// What the server said about a failed call.
pub(crate) struct Failure {
    pub status: Status,
    pub details: pb::ErrorDetails,
}

impl Failure {
    fn of(status: Status) -> Self {
        let details = crate::proto::rich::decode(status.details()).unwrap_or_default();
        Failure { status, details }
    }

    /// The call failed to connect, so it reached no server.
    fn unreached(&self) -> bool {
        self.details.reason.is_empty() && {
            let m = self.status.message().to_ascii_lowercase();
            m.contains("connect") || m.contains("dns")
        }
    }
}

impl Transport {
    pub(crate) fn new(
        endpoints: &[String],
        connect_timeout: Duration,
    ) -> Result<Self, ClientError> {
        if endpoints.is_empty() {
            return Err(ClientError::InvalidEndpoint("no endpoints given".into()));
        }
        let members = endpoints
            .iter()
            .map(|e| connect(e, connect_timeout))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Transport {
            members: RwLock::new(members),
            leader: RwLock::new(0),
            connect_timeout,
        })
    }

    fn current(&self) -> (usize, RaftLockClient<Channel>, String) {
        let i = *self.leader.read().unwrap_or_else(PoisonError::into_inner);
        let members = self.members.read().unwrap_or_else(PoisonError::into_inner);
        let i = i % members.len();
        (i, members[i].client.clone(), members[i].address.clone())
    }

    fn rotate(&self, from: usize) -> bool {
        let n = self
            .members
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        let mut leader = self.leader.write().unwrap_or_else(PoisonError::into_inner);
        if *leader == from {
            *leader = (from + 1) % n;
        }
        // A full round ends when we are back at the first endpoint.
        *leader == 0
    }

    /// Makes `hint` (a client address) the believed leader, adding it if unknown.
    fn follow(&self, hint: &str) {
        let url = endpoint_url(hint);
        let mut members = self.members.write().unwrap_or_else(PoisonError::into_inner);
        let i = match members.iter().position(|m| m.address == url) {
            Some(i) => i,
            None => match connect(hint, self.connect_timeout) {
                Ok(m) => {
                    members.push(m);
                    members.len() - 1
                }
                Err(_) => return,
            },
        };
        *self.leader.write().unwrap_or_else(PoisonError::into_inner) = i;
    }

    /// The endpoints' addresses, believed leader first.
    pub(crate) fn addresses(&self) -> Vec<String> {
        let (i, _, _) = self.current();
        let members = self.members.read().unwrap_or_else(PoisonError::into_inner);
        let mut out: Vec<String> = members.iter().map(|m| m.address.clone()).collect();
        out.rotate_left(i);
        out
    }

    /// Runs `op` against the believed leader until it succeeds, fails for good, or
    /// `deadline` passes.
    ///
    /// One attempt may take `attempt` at most; then the next endpoint is tried (the
    /// outcome of the first is then unknown).
    pub(crate) async fn call<T, F, Fut>(
        &self,
        deadline: Instant,
        attempt: Duration,
        mut op: F,
    ) -> Result<T, ClientError>
    where
        F: FnMut(RaftLockClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let mut last;
        let mut unknown = false;
        loop {
            let (i, client, address) = self.current();
            let until = deadline.min(Instant::now() + attempt);
            let failure = match tokio::time::timeout_at(until, op(client)).await {
                Err(_) => {
                    // No answer in time: the request may have been acted on.
                    unknown = true;
                    last = format!("{address}: no answer within {} ms", attempt.as_millis());
                    if Instant::now() >= deadline {
                        return Err(ClientError::Unknown(last));
                    }
                    self.rotate(i);
                    continue;
                }
                Ok(Ok(response)) => return Ok(response.into_inner()),
                Ok(Err(status)) => Failure::of(status),
            };
            last = format!("{address}: {}", failure.status.message());
            let reason = failure.details.reason.as_str();
            match failure.status.code() {
                Code::Unavailable
                    if reason == "not_leader" && !failure.details.leader_hint.is_empty() =>
                {
                    self.follow(&failure.details.leader_hint);
                }
                Code::Unavailable if !reason.is_empty() => {
                    // No leader yet, or the node is stopping: nothing happened.
                    self.rotate(i);
                    let pause =
                        Duration::from_millis(failure.details.retry_after_ms).max(NO_LEADER_PAUSE);
                    tokio::time::sleep(pause).await;
                }
                Code::Unavailable | Code::Unknown | Code::Cancelled if failure.unreached() => {
                    if self.rotate(i) {
                        tokio::time::sleep(ROUND_PAUSE).await;
                    }
                }
                Code::Unavailable | Code::Unknown | Code::Cancelled => {
                    // The connection broke: the request may have been acted on.
                    unknown = true;
                    self.rotate(i);
                    tokio::time::sleep(NO_LEADER_PAUSE).await;
                }
                Code::DeadlineExceeded => {
                    // The server's own timeout: the outcome is unknown; ask again.
                    unknown = true;
                    tokio::time::sleep(NO_LEADER_PAUSE).await;
                }
                _ => return Err(ClientError::from_failure(failure)),
            }
            if Instant::now() >= deadline {
                return Err(if unknown {
                    ClientError::Unknown(last)
                } else {
                    ClientError::Unavailable(last)
                });
            }
        }
    }
}
