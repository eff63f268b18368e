//! A client's session: kept alive in the background, and trusted only until its local
//! deadline. The deadline is counted from when each keep-alive was *sent* (the cluster
//! renews from a later moment, so its own deadline is later), minus a margin for clock
//! rate differences: Chubby's jeopardy. Past it without a renewal, the session is lost
//! for this client, for good; its locks must be treated as gone.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::transport::Transport;
use super::ClientError;
use crate::proto::api as pb;

/// Smallest margin between the cluster's deadline and the client's.
const MIN_MARGIN: Duration = Duration::from_millis(50);
/// Pause between keep-alive attempts that failed.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// Whether the session can be trusted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    /// Alive on the cluster until at least this moment (of this process's clock).
    Alive {
        /// The local deadline.
        valid_until: Instant,
    },
    /// Expired, or not renewed in time: nothing held under it can be trusted.
    Lost,
}

/// The margin subtracted from a TTL: a twentieth of it, at least 50 ms.
pub fn jeopardy_margin(ttl: Duration) -> Duration {
    (ttl / 20).max(MIN_MARGIN)
}

/// A live session and its keep-alive task (stopped when the last handle is dropped).
#[derive(Debug)]
pub struct Session {
    /// Its id.
    pub id: String,
    /// Its TTL.
    pub ttl: Duration,
    health: watch::Sender<Health>,
    task: JoinHandle<()>,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Session {
    /// Starts keeping session `id` alive; `sent` is when the request that created (or
    /// last renewed) it was sent.
    pub(crate) fn start(
        transport: Arc<Transport>,
        id: String,
        ttl: Duration,
        sent: Instant,
        attempt: Duration,
    ) -> Arc<Session> {
        let margin = jeopardy_margin(ttl);
        let first = Health::Alive {
            valid_until: sent + ttl.saturating_sub(margin),
        };
        let (health, _) = watch::channel(first);
        let task = tokio::spawn(keep_alive(
            transport,
            id.clone(),
            ttl,
            health.clone(),
            attempt,
        ));
        Arc::new(Session {
            id,
            ttl,
            health,
            task,
        })
    }

    /// The current health, with the local deadline applied.
    pub fn health(&self) -> Health {
        // Copied out first: a `watch` borrow held across `send_replace` is a read lock held
        // while taking the write lock, which deadlocks (it hung the process-level lock test
        // once a session's local deadline passed).
        let current = *self.health.borrow();
        match current {
            Health::Alive { valid_until } if Instant::now() >= valid_until => {
                self.health.send_replace(Health::Lost);
                Health::Lost
            }
            h => h,
        }
    }

    /// Whether the session is lost.
    pub fn is_lost(&self) -> bool {
        self.health() == Health::Lost
    }

    /// Resolves when the session is lost: the cluster said it expired, or its local
    /// deadline passed without a renewal.
    pub async fn lost(&self) {
        let mut rx = self.health.subscribe();
        loop {
            let seen = *rx.borrow_and_update();
            let Health::Alive { valid_until } = seen else {
                return;
            };
            tokio::select! {
                _ = tokio::time::sleep_until(valid_until) => {
                    if *rx.borrow() == seen {
                        self.health.send_replace(Health::Lost);
                        return;
                    }
                }
                changed = rx.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

/// Renews every third of the TTL; retries failures until the local deadline passes.
async fn keep_alive(
    transport: Arc<Transport>,
    id: String,
    ttl: Duration,
    health: watch::Sender<Health>,
    attempt: Duration,
) {
    let margin = jeopardy_margin(ttl);
    let period = ttl / 3;
    let mut next = Instant::now() + period;
    loop {
        tokio::time::sleep_until(next).await;
        let Health::Alive { valid_until } = *health.borrow() else {
            return;
        };
        if Instant::now() >= valid_until {
            health.send_replace(Health::Lost);
            return;
        }
        let sent = Instant::now();
        match renew(&transport, &id, valid_until, attempt).await {
            Ok(Some(remaining)) => {
                let until = sent
                    + Duration::from_millis(remaining)
                        .min(ttl)
                        .saturating_sub(margin);
                health.send_if_modified(|h| match h {
                    Health::Alive { valid_until } if until > *valid_until => {
                        *valid_until = until;
                        true
                    }
                    _ => false,
                });
                next = sent + period;
            }
            Ok(None) => {
                tracing::debug!(session = %id, "the cluster says the session expired");
                health.send_replace(Health::Lost);
                return;
            }
            Err(e) => {
                tracing::debug!(session = %id, error = %e, "keep-alive failed; retrying");
                next = Instant::now() + RETRY_PAUSE;
            }
        }
    }
}

/// One keep-alive; `Ok(None)` when the cluster says the session is gone.
pub(crate) async fn renew(
    transport: &Transport,
    id: &str,
    deadline: Instant,
    attempt: Duration,
) -> Result<Option<u64>, ClientError> {
    let answer = transport
        .call(deadline, attempt, |mut c| {
            let request = pb::KeepAliveRequest {
                session: id.to_string(),
            };
            async move {
                let response = c.keep_alive(tokio_stream::once(request)).await?;
                let mut answers = response.into_inner();
                match answers.message().await? {
                    Some(answer) => Ok(tonic::Response::new(answer)),
                    None => Err(tonic::Status::unavailable(
                        "the keep-alive stream ended without an answer",
                    )),
                }
            }
        })
        .await?;
    Ok((!answer.expired && answer.ttl_ms > 0).then_some(answer.ttl_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_session_past_its_local_deadline_reads_as_lost_without_deadlocking() {
        let (health, _) = watch::channel(Health::Alive {
            valid_until: Instant::now() - Duration::from_millis(1),
        });
        let session = Session {
            id: "s".into(),
            ttl: Duration::from_secs(1),
            health,
            task: tokio::spawn(async {}),
        };
        // Before the fix this held the watch's read lock while taking its write lock and
        // hung; on its own thread, a hang fails the test instead of stalling the run.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send((session.is_lost(), session.health()));
        });
        let answer = rx.recv_timeout(std::time::Duration::from_secs(10));
        assert_eq!(answer, Ok((true, Health::Lost)), "health() deadlocked");
    }

    #[test]
    fn the_margin_is_a_twentieth_of_the_ttl_and_at_least_50_ms() {
        assert_eq!(
            jeopardy_margin(Duration::from_secs(15)),
            Duration::from_millis(750)
        );
        assert_eq!(
            jeopardy_margin(Duration::from_millis(500)),
            Duration::from_millis(50)
        );
    }
}
