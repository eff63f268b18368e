//! Acquires held open until their outcome is applied. A handler registers its
//! `(session, request id)` *before* it proposes the acquire, so that a grant applied right
//! after the acquire (by a release in the next entry) cannot slip past it; the applier
//! wakes it with the outcome. Registrations end when their handler does (on drop).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use raftlock_raft::Index;
use tokio::sync::oneshot;

use crate::machine::{AcquireOutcome, Event, EventKind, SessionId};

/// What wakes a held-open acquire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Wake {
    /// The acquire ended (granted, or not).
    Ended(AcquireOutcome),
    /// The state jumped (a snapshot was installed): look the outcome up in the state.
    Recheck,
}

type Key = (Index, String);

/// The handlers waiting for each request, each with its registration id.
type Table = HashMap<Key, Vec<(u64, oneshot::Sender<Wake>)>>;

/// The registry of held-open acquires.
#[derive(Debug, Default)]
pub struct Waits {
    inner: Mutex<Table>,
    next_id: AtomicU64,
}

/// One handler's registration; dropping it unregisters.
#[derive(Debug)]
pub struct Registration<'a> {
    waits: &'a Waits,
    key: Key,
    id: u64,
    rx: Option<oneshot::Receiver<Wake>>,
}

impl Waits {
    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers interest in the outcome of `session`'s acquire `request_id`.
    pub fn register(&self, session: SessionId, request_id: &str) -> Registration<'_> {
        let (tx, rx) = oneshot::channel();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let key = (session.index, request_id.to_string());
        self.lock().entry(key.clone()).or_default().push((id, tx));
        Registration {
            waits: self,
            key,
            id,
            rx: Some(rx),
        }
    }

    /// Wakes the handlers of acquires that the events end.
    pub fn publish(&self, events: &[Event]) {
        let mut map = None;
        for e in events {
            let (session, request_id, outcome) = match &e.kind {
                EventKind::Granted {
                    session,
                    request_id,
                    token,
                    ..
                } => (
                    session,
                    request_id,
                    AcquireOutcome::Granted {
                        token: *token,
                        acquired_ms: e.at_ms,
                    },
                ),
                EventKind::WaitEnded {
                    session,
                    request_id,
                    outcome,
                    ..
                } => (session, request_id, outcome.clone()),
                EventKind::Ended { .. } => continue,
            };
            let map = map.get_or_insert_with(|| self.lock());
            if map.is_empty() {
                return;
            }
            if let Some(waiting) = map.remove(&(session.index, request_id.clone())) {
                for (_, tx) in waiting {
                    let _ = tx.send(Wake::Ended(outcome.clone()));
                }
            }
        }
    }

    /// Wakes every handler to look its outcome up (after a snapshot replaced the state).
    pub fn recheck_all(&self) {
        for (_, waiting) in self.lock().drain() {
            for (_, tx) in waiting {
                let _ = tx.send(Wake::Recheck);
            }
        }
    }

    /// Handlers registered for `session`'s `request_id`.
    pub fn count(&self, session: SessionId, request_id: &str) -> usize {
        self.lock()
            .get(&(session.index, request_id.to_string()))
            .map_or(0, Vec::len)
    }

    /// Acquires held open on this node.
    pub fn len(&self) -> usize {
        self.lock().values().map(Vec::len).sum()
    }

    /// No acquire is held open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Registration<'_> {
    /// Waits for the wake-up; `None` if the registry dropped it without one (a recheck
    /// was sent to an earlier registration of the same key, or the process is ending).
    pub async fn wake(&mut self) -> Option<Wake> {
        let rx = self.rx.as_mut()?;
        let wake = rx.await.ok();
        self.rx = None;
        wake
    }

    /// Registers again after a wake-up, for the next one.
    pub fn renew(&mut self) {
        let (tx, rx) = oneshot::channel();
        self.waits
            .lock()
            .entry(self.key.clone())
            .or_default()
            .push((self.id, tx));
        self.rx = Some(rx);
    }
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        let mut map = self.waits.lock();
        if let Some(list) = map.get_mut(&self.key) {
            list.retain(|(id, _)| *id != self.id);
            if list.is_empty() {
                map.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn granted(session: SessionId, request_id: &str, token: u64) -> Event {
        Event {
            index: token,
            at_ms: 5,
            kind: EventKind::Granted {
                lock: "L".into(),
                session,
                request_id: request_id.into(),
                token,
            },
        }
    }

    #[tokio::test]
    async fn a_grant_wakes_every_handler_of_its_request_and_no_other() {
        let waits = Waits::default();
        let s = SessionId { index: 3, nonce: 1 };
        let mut a = waits.register(s, "r1");
        let mut b = waits.register(s, "r1");
        let other = waits.register(s, "r2");
        assert_eq!(waits.count(s, "r1"), 2);
        waits.publish(&[granted(s, "r1", 9)]);
        let expect = Wake::Ended(AcquireOutcome::Granted {
            token: 9,
            acquired_ms: 5,
        });
        assert_eq!(a.wake().await, Some(expect.clone()));
        assert_eq!(b.wake().await, Some(expect));
        assert_eq!(waits.count(s, "r2"), 1);
        drop(other);
        assert!(waits.is_empty());
        // A registration renewed after a recheck hears the next event.
        let mut c = waits.register(s, "r3");
        waits.recheck_all();
        assert_eq!(c.wake().await, Some(Wake::Recheck));
        c.renew();
        waits.publish(&[granted(s, "r3", 12)]);
        assert!(matches!(c.wake().await, Some(Wake::Ended(_))));
        drop(c);
        assert!(waits.is_empty());
    }
}
