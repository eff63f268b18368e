//! One key's history prepared for the search: operations, event lists, and the
//! explanations of the verdicts.
//!
//! Completed operations live in a doubly linked list of call and return events sorted by
//! time (list "A"); uncertain operations have no return and live in a second list of
//! calls (list "B"), also in time order. Both lists start with a sentinel head node;
//! linearizing an operation unlinks its events and backtracking relinks them
//! ("dancing links").

use std::collections::HashMap;

use super::model::{Interner, StateId, Step, ABSENT};
use super::{KvOutcome, Operation, ShowValue};

/// End-of-list marker.
pub(super) const NIL: usize = usize::MAX;
/// The sentinel head node of both lists.
pub(super) const HEAD: usize = 0;
/// How many operations an explanation lists at most, per section.
const SHOW: usize = 8;

/// A completed operation.
pub(super) struct OkOp<'a> {
    pub(super) op: &'a Operation,
    pub(super) step: Step,
    /// Node of the call event in list A.
    pub(super) call_node: usize,
    /// Node of the return event in list A.
    pub(super) ret_node: usize,
    /// Position of the call event in the global event order.
    pub(super) call_pos: usize,
    /// Position of the return event in the global event order.
    pub(super) ret_pos: usize,
}

/// An uncertain operation (kept only if it may matter). Its node in list B is its
/// index plus one.
pub(super) struct UncOp<'a> {
    pub(super) op: &'a Operation,
    pub(super) step: Step,
    /// Position of the call event in the global event order.
    pub(super) call_pos: usize,
    /// The closest earlier-invoked uncertain operation with the same step (e.g. a
    /// retried Put). Interchangeable operations are used in invocation order, so this
    /// one is only a candidate once its twin is linearized.
    pub(super) twin: Option<usize>,
}

/// A node of list A.
#[derive(Clone, Copy)]
pub(super) enum ANode {
    Head,
    Call(usize),
    Ret(usize),
}

/// A linearization choice: a completed (index into `ok`) or uncertain (into `unc`) op.
#[derive(Clone, Copy)]
pub(super) enum Choice {
    Ok(usize),
    Unc(usize),
}

/// One key's history, prepared for the search.
pub(super) struct KeyHistory<'a> {
    pub(super) key: &'a str,
    pub(super) interner: Interner,
    /// Completed operations, in call order.
    pub(super) ok: Vec<OkOp<'a>>,
    /// Uncertain operations, in call order.
    pub(super) unc: Vec<UncOp<'a>>,
    /// Uncertain operations that cannot matter (reads, or invoked after every completion).
    ignored: usize,
    /// The states that completed observers require or uncertain Cas swap from.
    targets: Vec<StateId>,
    /// Cache of [`Self::viable`], by state.
    viable: Vec<Option<bool>>,
    pub(super) a_kind: Vec<ANode>,
    pub(super) a_next: Vec<usize>,
    a_prev: Vec<usize>,
    pub(super) b_next: Vec<usize>,
    b_prev: Vec<usize>,
}

impl<'a> KeyHistory<'a> {
    /// Builds the event lists for `ops` (each with its position in the whole history).
    /// `Err` describes a malformed operation.
    pub(super) fn prepare(key: &'a str, ops: &[(usize, &'a Operation)]) -> Result<Self, String> {
        let mut interner = Interner::default();
        let mut oks = Vec::new();
        let mut uncs = Vec::new();
        let mut ignored = 0;
        for &(seq, op) in ops {
            match (Step::from_op(op, &mut interner)?, &op.outcome) {
                (None, _) => ignored += 1,
                (Some(step), KvOutcome::Ok(_)) => oks.push((seq, op, step)),
                (Some(step), KvOutcome::Uncertain) => uncs.push((seq, op, step)),
            }
        }
        // An uncertain operation invoked after the last completion can only take effect
        // after every observation, so it cannot matter.
        let horizon = oks.iter().map(|&(_, op, _)| op.complete).max();
        let before = uncs.len();
        uncs.retain(|&(_, op, _)| horizon.is_some_and(|h| op.invoke <= h));
        ignored += before - uncs.len();

        // Calls sort before returns at equal times (touching intervals are concurrent);
        // ties are broken by position in the history, for determinism.
        oks.sort_by_key(|&(seq, op, _)| (op.invoke, seq));
        uncs.sort_by_key(|&(seq, op, _)| (op.invoke, seq));
        #[derive(Clone, Copy)]
        enum Ev {
            OkCall(usize),
            OkRet(usize),
            UncCall(usize),
        }
        let mut events = Vec::with_capacity(2 * oks.len() + uncs.len());
        for (i, &(seq, op, _)) in oks.iter().enumerate() {
            events.push((op.invoke, 0u8, seq, Ev::OkCall(i)));
            events.push((op.complete, 1u8, seq, Ev::OkRet(i)));
        }
        for (j, &(seq, op, _)) in uncs.iter().enumerate() {
            events.push((op.invoke, 0u8, seq, Ev::UncCall(j)));
        }
        events.sort_by_key(|&(time, kind, seq, _)| (time, kind, seq));

        let mut ok: Vec<OkOp<'a>> = oks
            .iter()
            .map(|&(_, op, step)| OkOp {
                op,
                step,
                call_node: NIL,
                ret_node: NIL,
                call_pos: 0,
                ret_pos: 0,
            })
            .collect();
        let mut unc: Vec<UncOp<'a>> = uncs
            .iter()
            .map(|&(_, op, step)| UncOp {
                op,
                step,
                call_pos: 0,
                twin: None,
            })
            .collect();
        let mut a_kind = vec![ANode::Head];
        for (pos, &(_, _, _, ev)) in events.iter().enumerate() {
            match ev {
                Ev::OkCall(i) => {
                    if let Some(o) = ok.get_mut(i) {
                        o.call_node = a_kind.len();
                        o.call_pos = pos;
                    }
                    a_kind.push(ANode::Call(i));
                }
                Ev::OkRet(i) => {
                    if let Some(o) = ok.get_mut(i) {
                        o.ret_node = a_kind.len();
                        o.ret_pos = pos;
                    }
                    a_kind.push(ANode::Ret(i));
                }
                Ev::UncCall(j) => {
                    if let Some(u) = unc.get_mut(j) {
                        u.call_pos = pos;
                    }
                }
            }
        }

        let mut last_with_step = HashMap::new();
        for (j, u) in unc.iter_mut().enumerate() {
            u.twin = last_with_step.insert(u.step, j);
        }
        let mut targets: Vec<StateId> = ok
            .iter()
            .map(|o| o.step)
            .chain(unc.iter().map(|u| u.step))
            .filter_map(Step::target)
            .collect();
        targets.sort_unstable();
        targets.dedup();

        let (a_next, a_prev) = chain(a_kind.len());
        let (b_next, b_prev) = chain(unc.len() + 1);
        Ok(KeyHistory {
            key,
            interner,
            ok,
            unc,
            ignored,
            targets,
            viable: Vec::new(),
            a_kind,
            a_next,
            a_prev,
            b_next,
            b_prev,
        })
    }

    /// The key this history belongs to.
    pub(super) fn key(&self) -> &'a str {
        self.key
    }

    /// Unlinks completed operation `i`'s call and return events from list A.
    pub(super) fn lift(&mut self, i: usize) {
        let (call, ret) = (self.ok[i].call_node, self.ok[i].ret_node);
        unlink(&mut self.a_next, &mut self.a_prev, call);
        unlink(&mut self.a_next, &mut self.a_prev, ret);
    }

    /// Undoes [`Self::lift`] (in reverse order of the lifts).
    pub(super) fn unlift(&mut self, i: usize) {
        let (call, ret) = (self.ok[i].call_node, self.ok[i].ret_node);
        relink(&mut self.a_next, &mut self.a_prev, ret);
        relink(&mut self.a_next, &mut self.a_prev, call);
    }

    /// Unlinks uncertain operation `j` from list B.
    pub(super) fn lift_uncertain(&mut self, j: usize) {
        unlink(&mut self.b_next, &mut self.b_prev, j + 1);
    }

    /// Undoes [`Self::lift_uncertain`] (in reverse order of the lifts).
    pub(super) fn unlift_uncertain(&mut self, j: usize) {
        relink(&mut self.b_next, &mut self.b_prev, j + 1);
    }

    /// Whether a restricted configuration (see `search::Frame::restricted`) in state `s`
    /// may still reach an observer. Until then only Appends and uncertain Cas happen, so
    /// the value (absent counting as "") must be a prefix of some observer's target or
    /// of an uncertain Cas's `from` value. A necessary condition, cached per state.
    pub(super) fn viable(&mut self, s: StateId) -> bool {
        if let Some(Some(v)) = self.viable.get(s) {
            return *v;
        }
        let v = match self.interner.get(s) {
            None => !self.targets.is_empty(),
            Some(value) => self.targets.iter().any(|&t| {
                self.interner
                    .get(t)
                    .is_some_and(|target| target.starts_with(value))
            }),
        };
        if self.viable.len() <= s {
            self.viable.resize(s + 1, None);
        }
        self.viable[s] = Some(v);
        v
    }

    fn header(&self) -> String {
        let mut s = format!(
            "key {:?}: {} completed and {} uncertain operations",
            self.key,
            self.ok.len(),
            self.unc.len()
        );
        if self.ignored > 0 {
            s.push_str(&format!(
                " (and {} uncertain ones that cannot matter: reads, or invoked after the \
                 last completion)",
                self.ignored
            ));
        }
        s
    }

    /// Reason for [`super::CheckResult::Unknown`] when the budget is exhausted.
    pub(super) fn explain_budget(&self, budget: u64, best_len: usize) -> String {
        format!(
            "{}: search budget of {budget} states exhausted; the longest linearizable prefix \
             found covers {best_len} of {} completed operations",
            self.header(),
            self.ok.len()
        )
    }

    /// Explanation of a violation, from (one of) the longest linearizable prefixes found.
    pub(super) fn explain_violation(&mut self, best: &[Choice]) -> String {
        let mut out = format!("{}: no linearization exists.\n", self.header());
        let mut done_ok = vec![false; self.ok.len()];
        let mut done_unc = vec![false; self.unc.len()];
        let mut state = ABSENT;
        for &c in best {
            let step = match c {
                Choice::Ok(i) => {
                    done_ok[i] = true;
                    self.ok[i].step
                }
                Choice::Unc(j) => {
                    done_unc[j] = true;
                    self.unc[j].step
                }
            };
            state = step.apply(state, &mut self.interner).unwrap_or(state);
        }
        let ok_done = done_ok.iter().filter(|&&d| d).count();
        out.push_str(&format!(
            "Longest linearizable prefix: {ok_done} of {} completed operations",
            self.ok.len()
        ));
        if best.is_empty() {
            out.push_str(".\n");
        } else {
            let skipped = best.len().saturating_sub(SHOW);
            if skipped > 0 {
                out.push_str(&format!(" ({skipped} earlier steps not shown)"));
            }
            out.push_str(", ending with:\n");
            for &c in &best[skipped..] {
                match c {
                    Choice::Ok(i) => out.push_str(&format!("  {}\n", self.ok[i].op)),
                    Choice::Unc(j) => {
                        out.push_str(&format!("  {} (taking effect here)\n", self.unc[j].op))
                    }
                }
            }
        }
        out.push_str(&format!(
            "State after that prefix: {}.\n",
            ShowValue(self.interner.get(state))
        ));

        // The completed operation that returns first among the rest must be next or
        // preceded only by operations invoked before that return.
        let blocking = (0..self.ok.len())
            .filter(|&i| !done_ok[i])
            .min_by_key(|&i| self.ok[i].ret_pos);
        let Some(r) = blocking else {
            return out;
        };
        let blocker = &self.ok[r];
        out.push_str(&format!(
            "This operation must take effect next or soon after, but cannot be placed:\n  {}\n",
            blocker.op
        ));
        if let Some(req) = blocker.step.requirement(&self.interner) {
            out.push_str(&format!("  (it needs {req})\n"));
        }
        let others_ok: Vec<usize> = (0..self.ok.len())
            .filter(|&i| i != r && !done_ok[i] && self.ok[i].call_pos < blocker.ret_pos)
            .collect();
        let others_unc: Vec<usize> = (0..self.unc.len())
            .filter(|&j| !done_unc[j] && self.unc[j].call_pos < blocker.ret_pos)
            .collect();
        if others_ok.is_empty() && others_unc.is_empty() {
            out.push_str("No other operation could take effect before it.\n");
        } else {
            out.push_str(&format!(
                "Operations that could take effect before it ({} completed, {} uncertain), \
                 none of which leads to a linearization:\n",
                others_ok.len(),
                others_unc.len()
            ));
            for &i in others_ok.iter().take(SHOW) {
                out.push_str(&format!("  {}\n", self.ok[i].op));
            }
            for &j in others_unc.iter().take(SHOW) {
                out.push_str(&format!("  {}\n", self.unc[j].op));
            }
            let hidden =
                others_ok.len().saturating_sub(SHOW) + others_unc.len().saturating_sub(SHOW);
            if hidden > 0 {
                out.push_str(&format!("  ... and {hidden} more\n"));
            }
        }
        out
    }
}

/// `next`/`prev` arrays of a list `0 → 1 → … → len-1`, with node 0 the head.
fn chain(len: usize) -> (Vec<usize>, Vec<usize>) {
    let next = (0..len)
        .map(|n| if n + 1 < len { n + 1 } else { NIL })
        .collect();
    let prev = (0..len).map(|n| n.checked_sub(1).unwrap_or(NIL)).collect();
    (next, prev)
}

/// Removes `node` (never the head) from a list, leaving its own links intact.
fn unlink(next: &mut [usize], prev: &mut [usize], node: usize) {
    let (p, n) = (prev[node], next[node]);
    next[p] = n;
    if n != NIL {
        prev[n] = p;
    }
}

/// Puts back a node removed by [`unlink`] (in reverse order of removal).
fn relink(next: &mut [usize], prev: &mut [usize], node: usize) {
    let (p, n) = (prev[node], next[node]);
    next[p] = node;
    if n != NIL {
        prev[n] = node;
    }
}
