//! What the server's tasks share with the applier: the state machine behind a lock that
//! readers hold for microseconds, the held-open acquires, the recent events, and the
//! service's metrics.

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use raftlock_raft::Index;

use super::metrics::LockMetrics;
use super::waits::Waits;
use crate::machine::{Event, LockMachine};

/// State shared by the applier (the only writer) and the request handlers.
#[derive(Debug)]
pub struct Shared {
    machine: RwLock<LockMachine>,
    /// Acquires held open until their grant or the end of their wait.
    pub waits: Waits,
    /// Recent events, for `GET /v1/events`.
    pub events: EventLog,
    /// The lock service's metrics.
    pub metrics: LockMetrics,
}

impl Shared {
    /// A fresh state with room for `event_buffer` recent events.
    pub fn new(event_buffer: usize, metrics: LockMetrics) -> Self {
        Shared {
            machine: RwLock::new(LockMachine::new()),
            waits: Waits::default(),
            events: EventLog::new(event_buffer),
            metrics,
        }
    }

    /// Locks the machine for reading. The applier never leaves it half changed (an entry
    /// is applied under one write lock), so a poisoned lock is still readable.
    pub fn read(&self) -> RwLockReadGuard<'_, LockMachine> {
        self.machine.read().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn write(&self) -> RwLockWriteGuard<'_, LockMachine> {
        self.machine.write().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The events this node applied since it started (from its latest snapshot on), at most
/// a fixed number, oldest dropped first.
#[derive(Debug)]
pub struct EventLog {
    inner: Mutex<EventRing>,
}

#[derive(Debug)]
struct EventRing {
    capacity: usize,
    events: VecDeque<Event>,
    /// Events up to this index are not here: dropped, or before a snapshot this node
    /// installed or started from.
    gap_until: Index,
}

/// A page of events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventPage {
    /// Events after the asked index, oldest first.
    pub events: Vec<Event>,
    /// Events at or below this index are no longer (or never were) kept here; a reader
    /// that asked for less missed some.
    pub gap_until: Index,
}

impl EventLog {
    fn new(capacity: usize) -> Self {
        EventLog {
            inner: Mutex::new(EventRing {
                capacity,
                events: VecDeque::new(),
                gap_until: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, EventRing> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends the events of applied entries.
    pub fn extend(&self, events: impl IntoIterator<Item = Event>) {
        let mut ring = self.lock();
        for e in events {
            if ring.capacity == 0 {
                ring.gap_until = e.index;
                continue;
            }
            if ring.events.len() >= ring.capacity {
                // Drop the oldest entry's events all together, so that the ring never
                // holds part of an entry and `gap_until` stays an exact boundary.
                if let Some(oldest) = ring.events.front().map(|old| old.index) {
                    while ring.events.front().is_some_and(|old| old.index == oldest) {
                        ring.events.pop_front();
                    }
                    ring.gap_until = ring.gap_until.max(oldest);
                }
            }
            ring.events.push_back(e);
        }
    }

    /// The state jumped to a snapshot at `index`: what happened before is not here.
    pub fn restored(&self, index: Index) {
        let mut ring = self.lock();
        ring.events.clear();
        ring.gap_until = index;
    }

    /// Events with an index above `after`: whole entries, as many as fit in `limit`
    /// events, and always at least the first entry's (one entry's events never straddle
    /// two pages, since readers page by index).
    pub fn page(&self, after: Index, limit: usize) -> EventPage {
        let ring = self.lock();
        let start = ring.events.partition_point(|e| e.index <= after);
        let mut events: Vec<Event> = Vec::new();
        let mut rest = ring.events.iter().skip(start).peekable();
        while let Some(first) = rest.peek().map(|e| e.index) {
            let entry: Vec<Event> = std::iter::from_fn(|| rest.next_if(|e| e.index == first))
                .cloned()
                .collect();
            if !events.is_empty() && events.len() + entry.len() > limit {
                break;
            }
            events.extend(entry);
        }
        EventPage {
            events,
            gap_until: ring.gap_until,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::{EndCause, EventKind, SessionId};

    fn event(index: Index) -> Event {
        Event {
            index,
            at_ms: index,
            kind: EventKind::Ended {
                lock: "L".into(),
                session: SessionId { index: 1, nonce: 0 },
                token: 1,
                cause: EndCause::Released,
            },
        }
    }

    #[test]
    fn the_log_keeps_the_latest_events_and_says_what_it_dropped() {
        let log = EventLog::new(3);
        log.extend((1..=5).map(event));
        let page = log.page(0, 10);
        assert_eq!(
            page.events.iter().map(|e| e.index).collect::<Vec<_>>(),
            [3, 4, 5]
        );
        assert_eq!(page.gap_until, 2);
        assert_eq!(log.page(3, 1).events[0].index, 4);
        log.restored(100);
        let page = log.page(0, 10);
        assert!(page.events.is_empty());
        assert_eq!(page.gap_until, 100);
    }

    #[test]
    fn pages_and_drops_hold_whole_entries() {
        let log = EventLog::new(4);
        // Entry 1 has three events, entry 2 two, entry 3 one.
        log.extend([event(1), event(1), event(1), event(2), event(2), event(3)]);
        // Entry 1 was dropped whole to make room, so the gap ends exactly at it.
        let indexes = |p: &EventPage| p.events.iter().map(|e| e.index).collect::<Vec<_>>();
        let page = log.page(0, 10);
        assert_eq!(indexes(&page), [2, 2, 3]);
        assert_eq!(page.gap_until, 1);
        // A page never ends inside an entry, and never comes back empty while events wait.
        assert_eq!(indexes(&log.page(0, 1)), [2, 2]);
        assert_eq!(indexes(&log.page(0, 2)), [2, 2]);
        assert_eq!(indexes(&log.page(0, 3)), [2, 2, 3]);
        assert_eq!(indexes(&log.page(2, 1)), [3]);
    }

    #[test]
    fn a_ring_without_room_keeps_nothing() {
        let log = EventLog::new(0);
        log.extend([event(7)]);
        let page = log.page(0, 10);
        assert!(page.events.is_empty());
        assert_eq!(page.gap_until, 7);
    }
}
