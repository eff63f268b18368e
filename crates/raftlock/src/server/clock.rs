//! The leader's clock for stamping log entries (cluster time, in milliseconds).
//!
//! Cluster time must never run faster than real time, or a session would expire before
//! its client's own timer says it may (the client counts its TTL from when it sent the
//! keep-alive). Wall clocks of different machines disagree, so a new leader does not
//! stamp with its wall clock: it waits until it has applied every entry before its term
//! (a ReadIndex round), reads the machine's clock, and counts on from there with its
//! monotonic clock. Time stands still between the old leader's last entry and the new
//! leader's anchor, which only lengthens sessions. While no session exists the anchor
//! also catches up with the wall clock, so cluster time stays near Unix time.

use std::sync::{Mutex, PoisonError};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use raftlock_raft::Term;
use tokio::sync::watch;

/// Where a leader's clock starts in its term.
#[derive(Clone, Copy, Debug)]
struct Anchor {
    term: Term,
    base_ms: u64,
    at: Instant,
    /// The last stamp handed out, so stamps never go backwards.
    last_ms: u64,
}

/// The stamping clock of this node's leadership terms.
#[derive(Debug)]
pub struct LogClock {
    anchor: Mutex<Option<Anchor>>,
    /// The term of the latest anchor, for those waiting for one.
    anchored: watch::Sender<Term>,
}

impl Default for LogClock {
    fn default() -> Self {
        LogClock {
            anchor: Mutex::new(None),
            anchored: watch::channel(0).0,
        }
    }
}

/// Milliseconds since the Unix epoch by this machine's wall clock.
pub fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The anchor a new leader takes: the machine's clock, or the wall clock if that is
/// later and no session could be cut short by the jump.
pub fn anchor_base(machine_now_ms: u64, sessions: usize, wall_ms: u64) -> u64 {
    if sessions == 0 {
        machine_now_ms.max(wall_ms)
    } else {
        machine_now_ms
    }
}

impl LogClock {
    /// Starts the clock of `term` at `base_ms`, now.
    pub fn anchor(&self, term: Term, base_ms: u64) {
        let mut anchor = self.anchor.lock().unwrap_or_else(PoisonError::into_inner);
        if anchor.is_some_and(|a| a.term >= term) {
            return;
        }
        *anchor = Some(Anchor {
            term,
            base_ms,
            at: Instant::now(),
            last_ms: base_ms,
        });
        drop(anchor);
        self.anchored.send_replace(term);
    }

    /// A stamp for an entry proposed in `term`, if the clock of that term is anchored.
    pub fn stamp(&self, term: Term) -> Option<u64> {
        let mut guard = self.anchor.lock().unwrap_or_else(PoisonError::into_inner);
        let anchor = guard.as_mut().filter(|a| a.term == term)?;
        let elapsed = u64::try_from(anchor.at.elapsed().as_millis()).unwrap_or(u64::MAX);
        let now = anchor.base_ms.saturating_add(elapsed).max(anchor.last_ms);
        anchor.last_ms = now;
        Some(now)
    }

    /// Resolves once a term at or after `term` is anchored.
    pub async fn anchored(&self, term: Term) {
        let mut rx = self.anchored.subscribe();
        let _ = rx.wait_for(|t| *t >= term).await;
    }

    /// The term whose clock is anchored, if any.
    pub fn anchored_term(&self) -> Option<Term> {
        self.anchor
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .map(|a| a.term)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_count_on_from_the_anchor_of_their_term_only() {
        let clock = LogClock::default();
        assert_eq!(clock.stamp(1), None, "no anchor yet");
        clock.anchor(2, 1_000);
        let a = clock.stamp(2).unwrap();
        assert!(a >= 1_000);
        assert!(clock.stamp(2).unwrap() >= a, "never backwards");
        assert_eq!(clock.stamp(3), None, "another term needs its own anchor");
        clock.anchor(1, 5);
        assert_eq!(
            clock.anchored_term(),
            Some(2),
            "an older term does not replace it"
        );
        clock.anchor(3, 900);
        assert!(clock.stamp(3).unwrap() >= 900);
        assert_eq!(clock.stamp(2), None);
    }

    #[test]
    fn the_wall_clock_is_taken_only_when_no_session_can_be_cut_short() {
        assert_eq!(anchor_base(500, 0, 10_000), 10_000);
        assert_eq!(anchor_base(500, 3, 10_000), 500);
        assert_eq!(anchor_base(20_000, 0, 10_000), 20_000, "never backwards");
    }
}
