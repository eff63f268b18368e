//! Keep-alives, batched: the leader gathers the sessions renewed since its last renewal
//! entry and renews them all with the next one, at most one entry per interval. The cost
//! of keeping sessions alive is then a few entries a second, whatever their number; each
//! keep-alive is answered once the entry that covers it is applied.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::error::ServiceError;
use super::proposer::Proposer;
use super::state::Shared;
use crate::machine::limits::MAX_RENEW_BATCH;
use crate::machine::{Command, Response, SessionId};

/// Keep-alives queued before callers wait for room (backpressure).
const QUEUE: usize = 65_536;

type Reply = oneshot::Sender<Result<u64, ServiceError>>;

/// The entrance to the batcher (cheap to clone).
#[derive(Clone, Debug)]
pub struct KeepAlives {
    tx: mpsc::Sender<(SessionId, Reply)>,
}

impl KeepAlives {
    /// Starts the batcher task.
    pub fn start(proposer: Proposer, shared: Arc<Shared>, interval: Duration) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(rx, proposer, shared, interval));
        KeepAlives { tx }
    }

    /// Renews `session`; returns its remaining TTL once the renewal is applied.
    pub async fn renew(&self, session: SessionId) -> Result<u64, ServiceError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send((session, reply))
            .await
            .map_err(|_| ServiceError::Unavailable("the node is shutting down".into()))?;
        rx.await
            .map_err(|_| ServiceError::Unavailable("the node is shutting down".into()))?
    }
}

async fn run(
    mut rx: mpsc::Receiver<(SessionId, Reply)>,
    proposer: Proposer,
    shared: Arc<Shared>,
    interval: Duration,
) {
    let mut last_flush = Instant::now() - interval;
    while let Some(first) = rx.recv().await {
        let mut batch: HashMap<SessionId, Vec<Reply>> = HashMap::new();
        batch.entry(first.0).or_default().push(first.1);
        let flush_at = last_flush + interval;
        loop {
            tokio::select! {
                biased;
                next = rx.recv() => match next {
                    Some((session, reply)) => batch.entry(session).or_default().push(reply),
                    None => break,
                },
                _ = tokio::time::sleep_until(flush_at) => break,
            }
        }
        last_flush = Instant::now();
        flush(batch, &proposer, &shared).await;
    }
}

/// Answers sessions the state says are gone at once, and renews the rest.
async fn flush(batch: HashMap<SessionId, Vec<Reply>>, proposer: &Proposer, shared: &Shared) {
    let mut sessions: Vec<(SessionId, Vec<Reply>)> = Vec::with_capacity(batch.len());
    {
        let machine = shared.read();
        let applied = machine.applied();
        for (session, replies) in batch {
            // A session created at or before the applied index that is not alive is gone
            // for good; a later one may be a creation this node has not applied yet.
            if session.index <= applied && !machine.session_is_alive(session) {
                for reply in replies {
                    let _ = reply.send(Ok(0));
                }
            } else {
                sessions.push((session, replies));
            }
        }
    }
    sessions.sort_by_key(|(s, _)| *s);
    while !sessions.is_empty() {
        let rest = sessions.split_off(sessions.len().min(MAX_RENEW_BATCH));
        let chunk = std::mem::replace(&mut sessions, rest);
        let ids: Vec<SessionId> = chunk.iter().map(|(s, _)| *s).collect();
        shared.metrics.observe_renewal(ids.len());
        match proposer.propose(Command::Renew { sessions: ids }).await {
            Ok(Response::Renewed { remaining_ms }) if remaining_ms.len() == chunk.len() => {
                for ((_, replies), remaining) in chunk.into_iter().zip(remaining_ms) {
                    for reply in replies {
                        let _ = reply.send(Ok(remaining));
                    }
                }
            }
            Ok(other) => {
                let e = ServiceError::Internal(format!("a renewal was answered {other:?}"));
                answer_all(chunk, &e);
            }
            Err(e) => answer_all(chunk, &e),
        }
    }
}

fn answer_all(chunk: Vec<(SessionId, Vec<Reply>)>, e: &ServiceError) {
    for (_, replies) in chunk {
        for reply in replies {
            let _ = reply.send(Err(e.clone()));
        }
    }
}
