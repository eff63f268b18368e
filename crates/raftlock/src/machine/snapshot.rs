//! The machine's snapshot: its records in key order, so that two replicas that applied
//! the same log write identical bytes. Restoring rebuilds the derived tables (deadline
//! order, each session's lock sets, counters) and refuses a snapshot whose records
//! contradict each other.

use std::collections::BTreeMap;

use prost::Message;
use raftlock_raft::Index;

use super::codec::{
    acquire_from_pb, acquire_to_pb, release_from_pb, release_to_pb, session_from_pb, session_to_pb,
    DecodeError,
};
use super::lock::{Holder, Lock, Waiter};
use super::schedule::Schedule;
use super::session::{Dedup, Remembered, Session};
use super::{LockMachine, Stats};
use crate::proto::log as pb;

/// The snapshot format this build writes.
const FORMAT_VERSION: u32 = 1;

/// Why a snapshot could not be restored.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The bytes do not decode.
    #[error("the snapshot does not decode: {0}")]
    Decode(#[from] DecodeError),
    /// A format this build does not know.
    #[error("snapshot format version {0} is not supported (this build reads {FORMAT_VERSION})")]
    Version(u32),
    /// The records contradict each other.
    #[error("the snapshot is inconsistent: {0}")]
    Inconsistent(String),
}

impl From<prost::DecodeError> for SnapshotError {
    fn from(e: prost::DecodeError) -> Self {
        SnapshotError::Decode(DecodeError::Protobuf(e))
    }
}

impl LockMachine {
    /// The machine's state as snapshot bytes.
    pub fn snapshot(&self) -> Vec<u8> {
        let sessions = self
            .sessions
            .values()
            .map(|s| pb::Session {
                id: Some(session_to_pb(s.id)),
                client: s.client.clone(),
                ttl_ms: s.ttl_ms,
                lock_delay_ms: s.lock_delay_ms,
                created_ms: s.created_ms,
                deadline_ms: s.deadline_ms,
                dedup: s
                    .dedup
                    .entries()
                    .map(|(request_id, seq, lock, result)| pb::DedupEntry {
                        request_id: request_id.to_string(),
                        seq,
                        lock: lock.to_string(),
                        outcome: Some(match result {
                            Remembered::Acquire(o) => {
                                pb::dedup_entry::Outcome::Acquire(acquire_to_pb(o))
                            }
                            Remembered::Release(o) => {
                                pb::dedup_entry::Outcome::Release(release_to_pb(o))
                            }
                        }),
                    })
                    .collect(),
            })
            .collect();
        let locks = self
            .locks
            .iter()
            .map(|(name, l)| pb::Lock {
                name: name.clone(),
                limit: l.limit,
                holders: l
                    .holders
                    .iter()
                    .map(|h| pb::Holder {
                        session: h.session,
                        token: h.token,
                        acquired_ms: h.acquired_ms,
                    })
                    .collect(),
                waiters: l
                    .waiters
                    .iter()
                    .map(|w| pb::Waiter {
                        session: w.session,
                        request_id: w.request_id.clone(),
                        priority: w.priority,
                        seq: w.seq,
                        enqueued_ms: w.enqueued_ms,
                        deadline_ms: w.deadline_ms,
                    })
                    .collect(),
                blocked_until_ms: l.blocked_until_ms,
                idle_since: l.idle_since,
            })
            .collect();
        let s = self.stats;
        pb::Snapshot {
            version: FORMAT_VERSION,
            now_ms: self.now_ms,
            last_term: self.last_term,
            applied: self.applied,
            sessions,
            locks,
            stats: Some(pb::Stats {
                sessions_created: s.sessions_created,
                sessions_expired: s.sessions_expired,
                sessions_closed: s.sessions_closed,
                grants: s.grants,
                releases: s.releases,
                wait_timeouts: s.wait_timeouts,
            }),
        }
        .encode_to_vec()
    }

    /// A machine restored from [`snapshot`](Self::snapshot) bytes, covering the log up to
    /// `applied` (the snapshot's last index, which wins over the one recorded inside).
    pub fn restore(data: &[u8], applied: Index) -> Result<LockMachine, SnapshotError> {
        let snap = pb::Snapshot::decode(data)?;
        if snap.version != FORMAT_VERSION {
            return Err(SnapshotError::Version(snap.version));
        }
        let inconsistent = |m: String| SnapshotError::Inconsistent(m);
        let mut m = LockMachine {
            now_ms: snap.now_ms,
            last_term: snap.last_term,
            applied,
            ..LockMachine::default()
        };
        for s in snap.sessions {
            let id = session_from_pb(s.id)?;
            let mut dedup = Dedup::default();
            for e in s.dedup {
                let result = match e.outcome {
                    Some(pb::dedup_entry::Outcome::Acquire(o)) => {
                        Remembered::Acquire(acquire_from_pb(o)?)
                    }
                    Some(pb::dedup_entry::Outcome::Release(o)) => {
                        Remembered::Release(release_from_pb(o)?)
                    }
                    None => return Err(inconsistent(format!("session {id}: empty dedup entry"))),
                };
                if dedup.get(&e.request_id).is_some()
                    || dedup
                        .entries()
                        .last()
                        .is_some_and(|(_, seq, _, _)| seq >= e.seq)
                {
                    return Err(inconsistent(format!(
                        "session {id}: dedup entries out of order"
                    )));
                }
                dedup.insert(e.request_id, e.seq, &e.lock, result);
            }
            let session = Session {
                id,
                client: s.client,
                ttl_ms: s.ttl_ms,
                lock_delay_ms: s.lock_delay_ms,
                created_ms: s.created_ms,
                deadline_ms: s.deadline_ms,
                held: Default::default(),
                waiting: Default::default(),
                dedup,
            };
            if m.sessions.insert(id.index, session).is_some() {
                return Err(inconsistent(format!("session {id} is listed twice")));
            }
        }
        let mut locks = BTreeMap::new();
        for l in snap.locks {
            let lock = Lock {
                limit: l.limit,
                holders: l
                    .holders
                    .into_iter()
                    .map(|h| Holder {
                        session: h.session,
                        token: h.token,
                        acquired_ms: h.acquired_ms,
                    })
                    .collect(),
                waiters: l
                    .waiters
                    .into_iter()
                    .map(|w| Waiter {
                        session: w.session,
                        request_id: w.request_id,
                        priority: w.priority,
                        seq: w.seq,
                        enqueued_ms: w.enqueued_ms,
                        deadline_ms: w.deadline_ms,
                    })
                    .collect(),
                blocked_until_ms: l.blocked_until_ms,
                idle_since: l.idle_since,
            };
            if locks.insert(l.name.clone(), lock).is_some() {
                return Err(inconsistent(format!("lock {:?} is listed twice", l.name)));
            }
        }
        m.locks = locks;
        m.rebuild_derived().map_err(inconsistent)?;
        if let Some(s) = snap.stats {
            m.stats = Stats {
                sessions_created: s.sessions_created,
                sessions_expired: s.sessions_expired,
                sessions_closed: s.sessions_closed,
                grants: s.grants,
                releases: s.releases,
                wait_timeouts: s.wait_timeouts,
            };
        }
        m.validate().map_err(inconsistent)?;
        Ok(m)
    }

    /// Rebuilds what is derived from the sessions and locks.
    fn rebuild_derived(&mut self) -> Result<(), String> {
        self.schedule = Schedule::default();
        self.locks_held = 0;
        self.waiters = 0;
        for s in self.sessions.values() {
            self.schedule
                .session_deadline(s.id.index, None, Some(s.deadline_ms));
        }
        for (name, lock) in &self.locks {
            if lock.limit == 0 {
                return Err(format!("lock {name:?} allows no holder"));
            }
            if !lock.holders.is_empty() {
                self.locks_held += 1;
            }
            for h in &lock.holders {
                let s = self.sessions.get_mut(&h.session).ok_or_else(|| {
                    format!("lock {name:?} is held by unknown session {}", h.session)
                })?;
                if !s.held.insert(name.clone()) {
                    return Err(format!("lock {name:?} lists holder {} twice", h.session));
                }
            }
            for w in &lock.waiters {
                let s = self.sessions.get_mut(&w.session).ok_or_else(|| {
                    format!("lock {name:?} is awaited by unknown session {}", w.session)
                })?;
                if !s.waiting.insert(name.clone()) {
                    return Err(format!("lock {name:?} lists waiter {} twice", w.session));
                }
                self.waiters += 1;
                self.schedule.add_wait(w.deadline_ms, w.session, name);
            }
            if lock.blocked_until_ms != 0 {
                self.schedule.add_delay(lock.blocked_until_ms, name);
            }
            if lock.idle_since != 0 {
                self.schedule.add_idle(lock.idle_since, name);
            }
        }
        Ok(())
    }
}
