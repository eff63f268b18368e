//! Proposers waiting for the applier's results: one command (`propose_and_wait`) or a
//! batch at consecutive indices (`propose_batch_and_wait`), answered once the applier has
//! applied the last of them, failed when another entry takes their place, when a snapshot
//! swallows them, when the leader steps down before they commit, or when
//! `apply_entry_timeout` passes.
//!
//! Bounded: every waiter stands for entries this node appended as leader and has not
//! applied, which `max_unapplied_bytes` bounds (with a fixed overhead per entry, so empty
//! commands count too); a step-down ends every waiter that had not committed.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::applier::ApplierError;
use crate::error::{Error, Result};
use crate::types::{Index, Term};

/// Where the results go.
pub(crate) enum ResultReply {
    One(oneshot::Sender<Result<Bytes>>),
    Many(oneshot::Sender<Result<Vec<Result<Bytes>>>>),
}

impl ResultReply {
    pub(crate) fn fail(self, error: Error) {
        match self {
            ResultReply::One(tx) => {
                let _ = tx.send(Err(error));
            }
            ResultReply::Many(tx) => {
                let _ = tx.send(Err(error));
            }
        }
    }

    fn is_closed(&self) -> bool {
        match self {
            ResultReply::One(tx) => tx.is_closed(),
            ResultReply::Many(tx) => tx.is_closed(),
        }
    }

    /// Answers with the `earlier` results and the `last` one (a single command's answer
    /// is `last` alone, with no `Vec` involved).
    fn complete_with(self, mut earlier: Vec<Result<Bytes>>, last: Result<Bytes>) {
        match self {
            ResultReply::One(tx) => {
                let _ = tx.send(last);
            }
            ResultReply::Many(tx) => {
                earlier.push(last);
                let _ = tx.send(Ok(earlier));
            }
        }
    }

    fn complete(self, mut results: Vec<Result<Bytes>>) {
        match self {
            ResultReply::One(tx) => {
                let result = results.pop().unwrap_or(Err(Error::LeadershipLost));
                let _ = tx.send(result);
            }
            ResultReply::Many(tx) => {
                let _ = tx.send(Ok(results));
            }
        }
    }
}

/// One proposer: its entries are `first..=last` of `term`.
struct Waiter {
    first: Index,
    last: Index,
    term: Term,
    /// When it fails with `Timeout`, on the node's clock.
    deadline: Duration,
    /// The results of `first..last` (the last one completes the waiter).
    results: Vec<Result<Bytes>>,
    reply: ResultReply,
}

/// Every proposer waiting for results, in log order. The index ranges are disjoint and
/// ascending: a leader proposes at its log's end, and a proposal over an older one's
/// indices ends the older one (see [`WaitingResults::insert`]). So a new waiter goes at
/// the back and applied entries complete waiters from the front, each in O(1).
pub(crate) struct WaitingResults {
    waiters: VecDeque<Waiter>,
    timeout: Duration,
}

impl WaitingResults {
    /// `timeout` is `apply_entry_timeout`.
    pub(crate) fn new(timeout: Duration) -> Self {
        WaitingResults {
            waiters: VecDeque::new(),
            timeout,
        }
    }

    /// Waits for the `count` entries appended at `first` in `term`. Proposers still waiting
    /// for an index at or after `first` are answered `LeadershipLost` first: the new entries
    /// overwrote theirs (this node led before, lost an election, had its log cut back, and
    /// leads again), and an overwritten entry can never commit.
    pub(crate) fn insert(
        &mut self,
        first: Index,
        count: usize,
        term: Term,
        now: Duration,
        reply: ResultReply,
    ) {
        let Some(span) = u64::try_from(count).ok().and_then(|c| c.checked_sub(1)) else {
            reply.complete(Vec::new());
            return;
        };
        while self.waiters.back().is_some_and(|w| w.last >= first) {
            if let Some(w) = self.waiters.pop_back() {
                w.reply.fail(Error::LeadershipLost);
            }
        }
        self.waiters.push_back(Waiter {
            first,
            last: first + span,
            term,
            deadline: now + self.timeout,
            // Holds all but the last result: nothing to allocate for a single command.
            results: Vec::with_capacity(count - 1),
            reply,
        });
    }

    /// The applier applied entries up to `index` and answered `results` (normal entries,
    /// in order); `restored` says the state machine was replaced by a snapshot instead.
    pub(crate) fn on_applied(
        &mut self,
        index: Index,
        results: Vec<(Index, Term, std::result::Result<Bytes, ApplierError>)>,
        restored: bool,
    ) {
        for (i, term, result) in results {
            // Waiters that end before `i` were passed without all their results; they are
            // settled below. The one that may hold `i` is the first that ends at or after it.
            let Some(at) = self.waiters.iter().position(|w| w.last >= i) else {
                continue;
            };
            let waiter = &mut self.waiters[at];
            if waiter.first > i {
                continue;
            }
            if waiter.term != term {
                // Another leader's entry took this index: the proposal is lost.
                if let Some(w) = self.waiters.remove(at) {
                    w.reply.fail(Error::LeadershipLost);
                }
                continue;
            }
            let result = result.map_err(Error::Applier);
            if i != waiter.last {
                waiter.results.push(result);
            } else if let Some(w) = self.waiters.remove(at) {
                w.reply.complete_with(w.results, result);
            }
        }
        // Proposers whose entries were passed without all their results: after a snapshot
        // their outcome is unknown (they may be inside it); otherwise entries of another
        // term took their indices, so they are lost. Both conditions hold for a prefix.
        let passed = |w: &Waiter| {
            if restored {
                w.first <= index
            } else {
                w.last <= index
            }
        };
        while self.waiters.front().is_some_and(passed) {
            if let Some(w) = self.waiters.pop_front() {
                w.reply.fail(if restored {
                    Error::Timeout
                } else {
                    Error::LeadershipLost
                });
            }
        }
    }

    /// Fails with `Timeout` every proposer whose deadline passed (its outcome is unknown:
    /// the entries may still commit) and forgets those that stopped waiting.
    pub(crate) fn expire(&mut self, now: Duration) {
        let due = |w: &Waiter| w.deadline <= now || w.reply.is_closed();
        if !self.waiters.iter().any(due) {
            return;
        }
        for w in std::mem::take(&mut self.waiters) {
            if due(&w) {
                w.reply.fail(Error::Timeout);
            } else {
                self.waiters.push_back(w);
            }
        }
    }

    /// This node stopped leading `term` (it follows, or leads a newer term): fails with
    /// [`Error::LeadershipLost`] every proposer of an older term with an entry past
    /// `commit`. Whether such an entry commits is now up to the next leader, so the outcome
    /// is unknown, and waiting for `apply_entry_timeout` would not tell more. Proposers
    /// whose entries are all committed keep waiting: the applier reaches them and answers.
    pub(crate) fn fail_uncommitted(&mut self, commit: Index, current: Option<Term>) {
        let stale = |w: &Waiter| w.last > commit && Some(w.term) != current;
        if !self.waiters.iter().any(stale) {
            return;
        }
        for w in std::mem::take(&mut self.waiters) {
            if stale(&w) {
                w.reply.fail(Error::LeadershipLost);
            } else {
                self.waiters.push_back(w);
            }
        }
    }

    /// Proposers waiting.
    pub(crate) fn len(&self) -> usize {
        self.waiters.len()
    }

    /// Fails every proposer with `error()` (shutdown).
    pub(crate) fn fail_all(&mut self, error: impl Fn() -> Error) {
        for w in self.waiters.drain(..) {
            w.reply.fail(error());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(i: Index, term: Term) -> (Index, Term, std::result::Result<Bytes, ApplierError>) {
        (i, term, Ok(Bytes::from(format!("r{i}"))))
    }

    #[test]
    fn a_batch_is_answered_once_its_last_entry_is_applied_even_across_events() {
        let mut w = WaitingResults::new(Duration::from_secs(5));
        let (tx, mut rx) = oneshot::channel();
        w.insert(3, 3, 2, Duration::ZERO, ResultReply::Many(tx));
        w.on_applied(4, vec![ok(3, 2), ok(4, 2)], false);
        assert!(rx.try_recv().is_err(), "not before the last entry");
        w.on_applied(5, vec![ok(5, 2)], false);
        let results = rx.try_recv().unwrap().unwrap();
        let texts: Vec<Bytes> = results.into_iter().map(|r| r.unwrap()).collect();
        assert_eq!(texts, vec!["r3", "r4", "r5"]);
    }

    #[test]
    fn another_term_at_the_index_loses_the_proposal_and_a_snapshot_makes_it_unknown() {
        let mut w = WaitingResults::new(Duration::from_secs(5));
        let (one, mut one_rx) = oneshot::channel();
        w.insert(7, 1, 2, Duration::ZERO, ResultReply::One(one));
        w.on_applied(7, vec![ok(7, 3)], false);
        assert!(matches!(
            one_rx.try_recv().unwrap(),
            Err(Error::LeadershipLost)
        ));

        let (many, mut many_rx) = oneshot::channel();
        w.insert(8, 4, 2, Duration::ZERO, ResultReply::Many(many));
        w.on_applied(9, Vec::new(), true);
        assert!(matches!(many_rx.try_recv().unwrap(), Err(Error::Timeout)));
    }

    #[test]
    fn a_new_proposal_over_an_older_ones_index_loses_the_older_one() {
        let mut w = WaitingResults::new(Duration::from_secs(5));
        let (kept, mut kept_rx) = oneshot::channel();
        w.insert(4, 1, 1, Duration::ZERO, ResultReply::One(kept));
        let (old, mut old_rx) = oneshot::channel();
        w.insert(5, 3, 1, Duration::ZERO, ResultReply::Many(old));
        // Leader again in term 3 with the log cut back to 5: the next proposal lands at 6.
        let (new, mut new_rx) = oneshot::channel();
        w.insert(6, 1, 3, Duration::ZERO, ResultReply::One(new));
        assert!(matches!(
            old_rx.try_recv().unwrap(),
            Err(Error::LeadershipLost)
        ));
        assert!(kept_rx.try_recv().is_err(), "entry 4 was not overwritten");
        w.on_applied(6, vec![ok(4, 1), ok(5, 2), ok(6, 3)], false);
        assert_eq!(kept_rx.try_recv().unwrap().unwrap(), "r4");
        assert_eq!(new_rx.try_recv().unwrap().unwrap(), "r6");
    }

    #[test]
    fn stepping_down_fails_the_uncommitted_and_keeps_the_committed() {
        let mut w = WaitingResults::new(Duration::from_secs(60));
        let (committed, mut committed_rx) = oneshot::channel();
        w.insert(4, 2, 3, Duration::ZERO, ResultReply::Many(committed));
        let (straddling, mut straddling_rx) = oneshot::channel();
        w.insert(6, 2, 3, Duration::ZERO, ResultReply::Many(straddling));
        let (open, mut open_rx) = oneshot::channel();
        w.insert(8, 1, 3, Duration::ZERO, ResultReply::One(open));
        // Leads term 4 now, with a proposal of its own already waiting.
        let (new, mut new_rx) = oneshot::channel();
        w.insert(9, 1, 4, Duration::ZERO, ResultReply::One(new));
        w.fail_uncommitted(6, Some(4));
        assert!(matches!(
            straddling_rx.try_recv().unwrap(),
            Err(Error::LeadershipLost)
        ));
        assert!(matches!(
            open_rx.try_recv().unwrap(),
            Err(Error::LeadershipLost)
        ));
        assert!(committed_rx.try_recv().is_err(), "committed: still waits");
        assert!(
            new_rx.try_recv().is_err(),
            "the current term's own proposal"
        );
        assert_eq!(w.len(), 2);
        w.on_applied(5, vec![ok(4, 3), ok(5, 3)], false);
        let texts: Vec<Bytes> = committed_rx
            .try_recv()
            .unwrap()
            .unwrap()
            .into_iter()
            .map(|r| r.unwrap())
            .collect();
        assert_eq!(
            texts,
            vec!["r4", "r5"],
            "applied entries keep their results"
        );
        w.fail_uncommitted(6, None);
        assert!(matches!(
            new_rx.try_recv().unwrap(),
            Err(Error::LeadershipLost)
        ));
    }

    #[test]
    fn an_applier_error_is_the_proposers_answer() {
        let mut w = WaitingResults::new(Duration::from_secs(5));
        let (tx, mut rx) = oneshot::channel();
        w.insert(1, 1, 1, Duration::ZERO, ResultReply::One(tx));
        w.on_applied(
            1,
            vec![(1, 1, Err(ApplierError("no such key".into())))],
            false,
        );
        match rx.try_recv().unwrap() {
            Err(Error::Applier(e)) => assert_eq!(e, ApplierError("no such key".into())),
            other => panic!("expected Error::Applier, got {other:?}"),
        }
    }

    #[test]
    fn overdue_and_abandoned_proposers_expire() {
        let mut w = WaitingResults::new(Duration::from_millis(100));
        let (late, mut late_rx) = oneshot::channel();
        w.insert(1, 1, 1, Duration::ZERO, ResultReply::One(late));
        let (fresh, mut fresh_rx) = oneshot::channel();
        w.insert(2, 1, 1, Duration::from_millis(50), ResultReply::One(fresh));
        w.expire(Duration::from_millis(120));
        assert!(matches!(late_rx.try_recv().unwrap(), Err(Error::Timeout)));
        assert!(fresh_rx.try_recv().is_err(), "still within its timeout");
        w.fail_all(|| Error::ShuttingDown);
        assert!(matches!(
            fresh_rx.try_recv().unwrap(),
            Err(Error::ShuttingDown)
        ));
    }
}
