//! The one way commands enter the log: stamped with the leader's clock of its current
//! term, proposed, and answered with what the state machine applied. Also the leader
//! check and the read barrier of linearizable reads.

use raftlock_serverkit::members::{after_transfer, ClientAddresses};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use raftlock_raft::{NodeId, Raft, Term};

use super::clock::LogClock;
use super::error::ServiceError;
use crate::machine::codec::{decode_response, encode_entry};
use crate::machine::{Command, Entry, Response};

/// Proposes commands on this node (cheap to clone).
#[derive(Clone, Debug)]
pub struct Proposer {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    raft: Raft,
    clock: Arc<LogClock>,
    grace_ms: u64,
    request_timeout: Duration,
    api_peers: ClientAddresses,
}

impl Proposer {
    /// A proposer on `raft`. `grace_ms` is this node's maximum election timeout (what a
    /// term it leads adds to every session); `api_peers` names the members' client
    /// addresses for redirects (replicated in the members' metadata, with the static
    /// `--api-peers` list as the fallback).
    pub fn new(
        raft: Raft,
        clock: Arc<LogClock>,
        grace_ms: u64,
        request_timeout: Duration,
        api_peers: ClientAddresses,
    ) -> Self {
        Proposer {
            inner: Arc::new(Inner {
                raft,
                clock,
                grace_ms,
                request_timeout,
                api_peers,
            }),
        }
    }

    /// The Raft node.
    pub fn raft(&self) -> &Raft {
        &self.inner.raft
    }

    /// The stamping clock.
    pub fn clock(&self) -> &LogClock {
        &self.inner.clock
    }

    /// How long a request may take before its outcome is reported unknown.
    pub fn request_timeout(&self) -> Duration {
        self.inner.request_timeout
    }

    /// The client address of member `id`.
    pub fn address_of(&self, id: &NodeId) -> Option<String> {
        self.inner.api_peers.get(id)
    }

    /// Every member's client address.
    pub fn api_peers(&self) -> BTreeMap<NodeId, String> {
        self.inner.api_peers.all()
    }

    /// The members' client addresses.
    pub fn addresses(&self) -> &ClientAddresses {
        &self.inner.api_peers
    }

    /// The "go to the leader" error, naming the leader this node knows of.
    pub fn not_leader(&self) -> ServiceError {
        let leader = self.inner.raft.leader();
        match leader {
            Some(leader) => ServiceError::NotLeader {
                address: self.address_of(&leader),
                leader: Some(leader),
            },
            None => ServiceError::Unavailable("no leader is known yet; retry shortly".into()),
        }
    }

    /// This node's term, if it is the leader.
    pub fn leader_term(&self) -> Result<Term, ServiceError> {
        match self.inner.raft.get_state() {
            (term, true) => Ok(term),
            _ => Err(self.not_leader()),
        }
    }

    fn raft_error(&self, e: raftlock_raft::Error, write: bool) -> ServiceError {
        ServiceError::from_raft(e, write, |id| self.address_of(id))
    }

    /// A stamp of this node's clock in `term`, waiting (up to the request timeout) for
    /// a new leader's clock to be anchored.
    pub async fn stamp(&self, term: Term) -> Result<u64, ServiceError> {
        if let Some(stamp) = self.inner.clock.stamp(term) {
            return Ok(stamp);
        }
        let anchored =
            tokio::time::timeout(self.inner.request_timeout, self.inner.clock.anchored(term)).await;
        if anchored.is_err() {
            return Err(ServiceError::Unavailable(
                "the new leader has not caught up with the log yet; retry shortly".into(),
            ));
        }
        self.inner
            .clock
            .stamp(term)
            .ok_or_else(|| self.not_leader())
    }

    /// Proposes `command` and returns what applying it answered. Fails with
    /// [`ServiceError::NotLeader`] (nothing happened) on a follower.
    pub async fn propose(&self, command: Command) -> Result<Response, ServiceError> {
        let term = self.leader_term()?;
        let stamp_ms = self.stamp(term).await?;
        let entry = Entry {
            stamp_ms,
            grace_ms: self.inner.grace_ms,
            command,
        };
        let proposed = tokio::time::timeout(
            self.inner.request_timeout,
            self.inner.raft.propose_and_wait(encode_entry(&entry)),
        )
        .await;
        let bytes = match proposed {
            Err(_) => {
                return Err(ServiceError::Unknown(format!(
                    "not applied within {} ms",
                    self.inner.request_timeout.as_millis()
                )))
            }
            Ok(Err(e)) => {
                // Met a leadership transfer (nothing proposed): redirect to the new leader.
                let e = after_transfer(&self.inner.raft, e, self.inner.request_timeout).await;
                return Err(self.raft_error(e, true));
            }
            Ok(Ok(bytes)) => bytes,
        };
        decode_response(&bytes)
            .map_err(|e| ServiceError::Internal(format!("the state machine's answer: {e}")))
    }

    /// Waits until this node, the leader, may answer a linearizable read from its state
    /// (ReadIndex, or the lease). Followers get [`ServiceError::NotLeader`].
    pub async fn read_barrier(&self) -> Result<(), ServiceError> {
        self.leader_term()?;
        match tokio::time::timeout(self.inner.request_timeout, self.inner.raft.read_index()).await {
            Err(_) => Err(ServiceError::Unavailable(format!(
                "the read was not confirmed within {} ms",
                self.inner.request_timeout.as_millis()
            ))),
            Ok(Err(e)) => Err(self.raft_error(e, false)),
            Ok(Ok(_)) => Ok(()),
        }
    }
}
