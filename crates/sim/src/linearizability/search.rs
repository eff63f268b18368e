//! The WGL depth-first search over one key's history (see [`super::history`] for the
//! event lists).
//!
//! At each configuration the candidates are the operations whose call precedes the first
//! outstanding return `R` in list A: first the completed ones (scanning A up to `R`), then
//! the uncertain ones invoked before `R` (scanning list B), so uncertain operations are
//! only linearized when nothing else works. Linearizing a candidate lifts its events,
//! pushes a frame and restarts the scan; running out of candidates pops a frame, relinks
//! its events and resumes the scan after the operation it had chosen. Success is reached
//! when no completed operation is left, whatever uncertain operations remain.
//!
//! These reductions keep the search small, each preserving the existence of a
//! linearization:
//!
//! * **Observers first.** If a completed Get or failed Cas is a candidate and agrees with
//!   the current state, it is linearized right away and no alternative is tried at that
//!   configuration: it does not change the state and every operation that must precede
//!   it already has, so any linearization can be rearranged to start with it.
//! * **Canonical uncertain operations**: every uncertain operation that takes effect is
//!   observed before a blind write overwrites it (see [`Frame::restricted`]).
//! * **Interchangeable retries**: uncertain operations with identical effects (a Put
//!   retried with the same value) are used in invocation order, since swapping two of
//!   them never matters and the earlier one can take effect whenever the later can.
//! * **Memoization with dominance** (see [`Memo::insert`]). A hit is either fully
//!   explored (and failed) or, after a chain of uncertain operations, an ancestor still
//!   being explored; either way every continuation of the skipped configuration is
//!   covered by the dominating one.

use super::history::{ANode, Choice, KeyHistory, UncOp, HEAD};
use super::memo::{flip, is_set, op_hash, state_hash, Memo};
use super::model::{StateId, ABSENT};

/// Verdict for one key.
pub(super) enum KeyOutcome {
    Linearizable,
    Violation(String),
    Unknown(String),
}

/// A backtracking frame.
struct Frame {
    /// The operation linearized.
    choice: Choice,
    /// The state before it.
    saved: StateId,
    /// For uncertain choices: the position of the return bounding that scan.
    r_pos: usize,
    /// Whether the configuration reached is *restricted*: it may not continue with a
    /// blind write (Put or Delete), and its state must be able to reach an observer
    /// ([`KeyHistory::viable`]).
    ///
    /// Linearizations are searched in a canonical form in which the effect of every
    /// linearized uncertain operation is observed — by a completed Get or Cas — before
    /// it is overwritten by a blind write. Any linearization can be brought into that
    /// form by dropping the uncertain operations that break it: between such an
    /// operation and the overwrite only Appends and uncertain operations happen, whose
    /// results do not depend on the state, and from the overwrite on the states are
    /// unchanged. So a configuration is restricted from an uncertain operation until
    /// the next completed Get or Cas.
    restricted: bool,
    /// Whether the choice was forced (observers first): backtracking over it continues
    /// to the frame below, as no alternative needs trying.
    forced: bool,
}

/// Where the search is.
#[derive(Clone, Copy)]
enum Cursor {
    /// At a newly reached configuration.
    Start,
    /// Scanning completed calls in list A.
    A(usize),
    /// Scanning uncertain calls in list B invoked before event position `r_pos`.
    B { node: usize, r_pos: usize },
    /// Out of candidates: undo the last choice.
    Backtrack,
}

/// The search budget ran out.
struct Exhausted;

/// Checks one key's history, exploring at most `budget` configurations.
pub(super) fn check(mut history: KeyHistory<'_>, budget: u64) -> KeyOutcome {
    if history.ok.is_empty() {
        return KeyOutcome::Linearizable;
    }
    let mut search = Search::new(&mut history, budget);
    match search.run() {
        Ok(true) => KeyOutcome::Linearizable,
        Ok(false) => KeyOutcome::Violation(search.h.explain_violation(&search.best)),
        Err(Exhausted) => KeyOutcome::Unknown(search.h.explain_budget(budget, search.best_len)),
    }
}

/// The mutable state of one search.
struct Search<'h, 'a> {
    h: &'h mut KeyHistory<'a>,
    budget: u64,
    memo: Memo,
    /// Linearized completed operations.
    ok_bits: Vec<u64>,
    /// Linearized uncertain operations.
    unc_bits: Vec<u64>,
    /// Zobrist hash of `ok_bits`.
    zobrist: u64,
    state: StateId,
    /// Completed operations not linearized yet.
    remaining: usize,
    stack: Vec<Frame>,
    /// Configurations visited.
    visited: u64,
    /// The choices of the longest linearizable prefix found (by completed operations).
    best: Vec<Choice>,
    best_len: usize,
}

impl<'h, 'a> Search<'h, 'a> {
    fn new(h: &'h mut KeyHistory<'a>, budget: u64) -> Self {
        let ok_bits = vec![0; h.ok.len().div_ceil(64)];
        let unc_bits = vec![0; h.unc.len().div_ceil(64)];
        let mut memo = Memo::default();
        memo.insert(state_hash(ABSENT), ABSENT, &ok_bits, &unc_bits, false);
        Search {
            remaining: h.ok.len(),
            h,
            budget,
            memo,
            ok_bits,
            unc_bits,
            zobrist: 0,
            state: ABSENT,
            stack: Vec::new(),
            visited: 0,
            best: Vec::new(),
            best_len: 0,
        }
    }

    /// Runs the search: whether a linearization exists.
    fn run(&mut self) -> Result<bool, Exhausted> {
        let mut cursor = Cursor::Start;
        loop {
            cursor = match cursor {
                Cursor::Start => {
                    if self.remaining == 0 {
                        return Ok(true);
                    }
                    match self.agreeing_observer() {
                        None => Cursor::A(self.h.a_next[HEAD]),
                        Some(i) if self.try_ok(i, true)? => Cursor::Start,
                        // Its configuration already failed, hence so does this one.
                        Some(_) => Cursor::Backtrack,
                    }
                }
                Cursor::A(node) => match self.h.a_kind.get(node).copied() {
                    Some(ANode::Call(i)) => {
                        if self.try_ok(i, false)? {
                            Cursor::Start
                        } else {
                            Cursor::A(self.h.a_next[node])
                        }
                    }
                    Some(ANode::Ret(i)) => Cursor::B {
                        node: self.h.b_next[HEAD],
                        r_pos: self.h.ok[i].ret_pos,
                    },
                    // Unreachable while completed operations remain (their returns are
                    // in the list).
                    Some(ANode::Head) | None => Cursor::Backtrack,
                },
                Cursor::B { node, r_pos } => {
                    let candidate = node
                        .checked_sub(1)
                        .filter(|&j| self.h.unc.get(j).is_some_and(|u| u.call_pos < r_pos));
                    match candidate {
                        Some(j) if self.try_uncertain(j, r_pos)? => Cursor::Start,
                        Some(_) => Cursor::B {
                            node: self.h.b_next[node],
                            r_pos,
                        },
                        None => Cursor::Backtrack,
                    }
                }
                Cursor::Backtrack => {
                    let Some(frame) = self.pop() else {
                        return Ok(false);
                    };
                    match frame.choice {
                        _ if frame.forced => Cursor::Backtrack,
                        Choice::Ok(i) => Cursor::A(self.h.a_next[self.h.ok[i].call_node]),
                        Choice::Unc(j) => Cursor::B {
                            node: self.h.b_next[j + 1],
                            r_pos: frame.r_pos,
                        },
                    }
                }
            };
        }
    }

    /// Whether the current configuration is restricted (see [`Frame::restricted`]).
    fn restricted(&self) -> bool {
        self.stack.last().is_some_and(|f| f.restricted)
    }

    /// A candidate completed Get or failed Cas that agrees with the current state.
    fn agreeing_observer(&mut self) -> Option<usize> {
        let mut node = self.h.a_next[HEAD];
        while let Some(ANode::Call(i)) = self.h.a_kind.get(node).copied() {
            let step = self.h.ok[i].step;
            if step.is_stateless_observer()
                && step.apply(self.state, &mut self.h.interner).is_some()
            {
                return Some(i);
            }
            node = self.h.a_next[node];
        }
        None
    }

    /// Tries to linearize completed operation `i` next; whether it was.
    fn try_ok(&mut self, i: usize, forced: bool) -> Result<bool, Exhausted> {
        let step = self.h.ok[i].step;
        let restricted = self.restricted();
        if restricted && step.is_blind() {
            return Ok(false);
        }
        // Completed Gets and Cas observe the state; Appends pass the restriction on.
        let restricted = restricted && !step.is_observer();
        let Some(next) = step.apply(self.state, &mut self.h.interner) else {
            return Ok(false);
        };
        if restricted && !self.h.viable(next) {
            return Ok(false);
        }
        flip(&mut self.ok_bits, i);
        self.zobrist ^= op_hash(i);
        if !self.visit(next, restricted) {
            flip(&mut self.ok_bits, i);
            self.zobrist ^= op_hash(i);
            return Ok(false);
        }
        self.count()?;
        self.stack.push(Frame {
            choice: Choice::Ok(i),
            saved: self.state,
            r_pos: 0,
            restricted,
            forced,
        });
        self.state = next;
        self.h.lift(i);
        self.remaining -= 1;
        let done = self.h.ok.len() - self.remaining;
        if done > self.best_len {
            self.best_len = done;
            self.best.clear();
            self.best.extend(self.stack.iter().map(|f| f.choice));
        }
        Ok(true)
    }

    /// Tries to linearize uncertain operation `j` next (in a scan bounded by the return
    /// at `r_pos`); whether it was.
    fn try_uncertain(&mut self, j: usize, r_pos: usize) -> Result<bool, Exhausted> {
        let UncOp { step, twin, .. } = self.h.unc[j];
        if (step.is_blind() && self.restricted())
            || twin.is_some_and(|t| !is_set(&self.unc_bits, t))
        {
            return Ok(false);
        }
        let Some(next) = step.apply(self.state, &mut self.h.interner) else {
            return Ok(false);
        };
        if !self.h.viable(next) {
            return Ok(false);
        }
        flip(&mut self.unc_bits, j);
        if !self.visit(next, true) {
            flip(&mut self.unc_bits, j);
            return Ok(false);
        }
        self.count()?;
        self.stack.push(Frame {
            choice: Choice::Unc(j),
            saved: self.state,
            r_pos,
            restricted: true,
            forced: false,
        });
        self.state = next;
        self.h.lift_uncertain(j);
        Ok(true)
    }

    /// Records the configuration made of the current bitsets and `state`; whether it is
    /// new (neither visited nor dominated).
    fn visit(&mut self, state: StateId, restricted: bool) -> bool {
        let hash = self.zobrist ^ state_hash(state);
        self.memo
            .insert(hash, state, &self.ok_bits, &self.unc_bits, restricted)
    }

    /// Counts a new configuration against the budget.
    fn count(&mut self) -> Result<(), Exhausted> {
        self.visited += 1;
        if self.visited > self.budget {
            Err(Exhausted)
        } else {
            Ok(())
        }
    }

    /// Undoes the last choice.
    fn pop(&mut self) -> Option<Frame> {
        let frame = self.stack.pop()?;
        self.state = frame.saved;
        match frame.choice {
            Choice::Ok(i) => {
                self.h.unlift(i);
                flip(&mut self.ok_bits, i);
                self.zobrist ^= op_hash(i);
                self.remaining += 1;
            }
            Choice::Unc(j) => {
                self.h.unlift_uncertain(j);
                flip(&mut self.unc_bits, j);
            }
        }
        Some(frame)
    }
}
