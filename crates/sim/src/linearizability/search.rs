//! The WGL depth-first search over one key's history.
//!
//! Completed operations live in a doubly linked list of call and return events sorted by
//! time (list "A"); uncertain operations have no return and live in a second list of
//! calls (list "B"). At each configuration the candidates are the operations whose call
//! precedes the first outstanding return `R` in A: first the completed ones (scanning A up
//! to `R`), then the uncertain ones invoked before `R` (scanning B). Linearizing a
//! candidate unlinks its events ("lift"), pushes a frame and restarts the scan; reaching
//! the end of the candidates pops a frame, relinks its events and resumes the scan after
//! the operation it had chosen. Success is reached when no completed operation is left.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use super::model::{Interner, StateId, Step, ABSENT};
use super::{KvOutcome, Operation, ShowValue};

/// End-of-list marker.
const NIL: usize = usize::MAX;
/// The sentinel head node of both lists.
const HEAD: usize = 0;
/// How many operations an explanation lists at most, per section.
const SHOW: usize = 8;

/// Verdict for one key.
pub(super) enum KeyOutcome {
    Linearizable,
    Violation(String),
    Unknown(String),
}

/// A completed operation.
struct OkOp<'a> {
    op: &'a Operation,
    step: Step,
    call_node: usize,
    ret_node: usize,
    /// Position of the return event in the global event order.
    ret_pos: usize,
    /// Position of the call event in the global event order.
    call_pos: usize,
}

/// An uncertain operation (kept only if it may matter).
struct UncOp<'a> {
    op: &'a Operation,
    step: Step,
    call_pos: usize,
    /// The closest earlier-invoked uncertain operation with the same step (e.g. a
    /// retried Put). Interchangeable operations are used in invocation order, so this
    /// one is only a candidate once its twin is linearized.
    twin: Option<usize>,
}

/// A node of list A.
#[derive(Clone, Copy)]
enum ANode {
    Head,
    Call(usize),
    Ret(usize),
}

/// A linearization choice: a completed (index into `ok`) or uncertain (into `unc`) op.
#[derive(Clone, Copy)]
enum Choice {
    Ok(usize),
    Unc(usize),
}

/// A backtracking frame: the choice made, the state before it, for uncertain choices
/// the position of the return bounding that scan, and whether the configuration reached
/// is restricted (see [`is_restricted`]).
struct Frame {
    choice: Choice,
    saved: StateId,
    r_pos: usize,
    restricted: bool,
}

/// Where the candidate scan is.
#[derive(Clone, Copy)]
enum Cursor {
    /// Scanning completed calls in list A.
    A(usize),
    /// Scanning uncertain calls in list B invoked before event position `r_pos`.
    B { node: usize, r_pos: usize },
}

/// One key's history, prepared for the search.
pub(super) struct KeyHistory<'a> {
    key: &'a str,
    interner: Interner,
    ok: Vec<OkOp<'a>>,
    unc: Vec<UncOp<'a>>,
    /// Uncertain operations that cannot matter (reads, or invoked after every completion).
    ignored: usize,
    /// The states that completed observers require or uncertain Cas swap from.
    targets: Vec<StateId>,
    /// Cache of [`Self::viable`], by state.
    viable: Vec<Option<bool>>,
    a_kind: Vec<ANode>,
    a_next: Vec<usize>,
    a_prev: Vec<usize>,
    b_next: Vec<usize>,
    b_prev: Vec<usize>,
}

impl<'a> KeyHistory<'a> {
    /// Builds the event lists for `ops` (with their positions in the whole history).
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
                ret_pos: 0,
                call_pos: 0,
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

    /// Runs the search, exploring at most `budget` configurations.
    pub(super) fn check(mut self, budget: u64) -> KeyOutcome {
        let n_ok = self.ok.len();
        if n_ok == 0 {
            return KeyOutcome::Linearizable;
        }
        let mut ok_bits = vec![0u64; n_ok.div_ceil(64)];
        let mut unc_bits = vec![0u64; self.unc.len().div_ceil(64)];
        let mut zobrist = 0u64;
        let mut memo = Memo::default();
        let mut state = ABSENT;
        memo.insert(
            zobrist ^ state_hash(state),
            state,
            &ok_bits,
            &unc_bits,
            false,
        );
        let mut visited = 0u64;
        let mut remaining = n_ok;
        let mut stack: Vec<Frame> = Vec::new();
        let mut best: Vec<Choice> = Vec::new();
        let mut best_len = 0;
        let mut cursor = Cursor::A(self.a_next[HEAD]);

        loop {
            match cursor {
                Cursor::A(node) => match self.a_kind.get(node).copied() {
                    Some(ANode::Call(i)) => {
                        cursor = Cursor::A(self.a_next[node]);
                        let step = self.ok[i].step;
                        let restricted = is_restricted(&stack);
                        if step.is_blind() && restricted {
                            continue;
                        }
                        // Completed reads and Cas observe the state; Appends pass the
                        // restriction on.
                        let restricted = restricted && !step.is_observer();
                        let Some(next) = step.apply(state, &mut self.interner) else {
                            continue;
                        };
                        if restricted && !self.viable(next) {
                            continue;
                        }
                        flip(&mut ok_bits, i);
                        zobrist ^= op_hash(i);
                        let hash = zobrist ^ state_hash(next);
                        if !memo.insert(hash, next, &ok_bits, &unc_bits, restricted) {
                            flip(&mut ok_bits, i);
                            zobrist ^= op_hash(i);
                            continue;
                        }
                        visited += 1;
                        if visited > budget {
                            return KeyOutcome::Unknown(self.explain_budget(budget, best_len));
                        }
                        stack.push(Frame {
                            choice: Choice::Ok(i),
                            saved: state,
                            r_pos: 0,
                            restricted,
                        });
                        state = next;
                        self.lift(i);
                        remaining -= 1;
                        if remaining == 0 {
                            return KeyOutcome::Linearizable;
                        }
                        if n_ok - remaining > best_len {
                            best_len = n_ok - remaining;
                            best.clear();
                            best.extend(stack.iter().map(|f| f.choice));
                        }
                        cursor = Cursor::A(self.a_next[HEAD]);
                    }
                    Some(ANode::Ret(i)) => {
                        cursor = Cursor::B {
                            node: self.b_next[HEAD],
                            r_pos: self.ok[i].ret_pos,
                        };
                    }
                    // Unreachable while completed operations remain (their returns are
                    // in the list); end the scan conservatively.
                    Some(ANode::Head) | None => {
                        cursor = Cursor::B {
                            node: NIL,
                            r_pos: 0,
                        };
                    }
                },
                Cursor::B { node, r_pos } => {
                    let candidate = node
                        .checked_sub(1)
                        .filter(|&j| self.unc.get(j).is_some_and(|u| u.call_pos < r_pos));
                    if let Some(j) = candidate {
                        cursor = Cursor::B {
                            node: self.b_next[node],
                            r_pos,
                        };
                        let UncOp { step, twin, .. } = self.unc[j];
                        if (step.is_blind() && is_restricted(&stack))
                            || twin.is_some_and(|t| !is_set(&unc_bits, t))
                        {
                            continue;
                        }
                        let Some(next) = step.apply(state, &mut self.interner) else {
                            continue;
                        };
                        if !self.viable(next) {
                            continue;
                        }
                        flip(&mut unc_bits, j);
                        let hash = zobrist ^ state_hash(next);
                        if !memo.insert(hash, next, &ok_bits, &unc_bits, true) {
                            flip(&mut unc_bits, j);
                            continue;
                        }
                        visited += 1;
                        if visited > budget {
                            return KeyOutcome::Unknown(self.explain_budget(budget, best_len));
                        }
                        stack.push(Frame {
                            choice: Choice::Unc(j),
                            saved: state,
                            r_pos,
                            restricted: true,
                        });
                        state = next;
                        unlink(&mut self.b_next, &mut self.b_prev, node);
                        cursor = Cursor::A(self.a_next[HEAD]);
                        continue;
                    }
                    // No candidate left: backtrack.
                    let Some(frame) = stack.pop() else {
                        return KeyOutcome::Violation(self.explain_violation(&best));
                    };
                    state = frame.saved;
                    match frame.choice {
                        Choice::Ok(i) => {
                            self.unlift(i);
                            flip(&mut ok_bits, i);
                            zobrist ^= op_hash(i);
                            remaining += 1;
                            cursor = Cursor::A(self.a_next[self.ok[i].call_node]);
                        }
                        Choice::Unc(j) => {
                            relink(&mut self.b_next, &mut self.b_prev, j + 1);
                            flip(&mut unc_bits, j);
                            cursor = Cursor::B {
                                node: self.b_next[j + 1],
                                r_pos: frame.r_pos,
                            };
                        }
                    }
                }
            }
        }
    }

    /// Whether a restricted configuration in state `s` may still reach an observer
    /// (see [`is_restricted`]). Until then only Appends and uncertain Cas happen, so the
    /// value (absent counting as "") must be a prefix of some observer's target or of
    /// an uncertain Cas's `from` value — a necessary condition, cached per state.
    fn viable(&mut self, s: StateId) -> bool {
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

    /// Unlinks completed operation `i`'s call and return events.
    fn lift(&mut self, i: usize) {
        let (call, ret) = (self.ok[i].call_node, self.ok[i].ret_node);
        unlink(&mut self.a_next, &mut self.a_prev, call);
        unlink(&mut self.a_next, &mut self.a_prev, ret);
    }

    /// Undoes [`Self::lift`] (must be called in reverse order of the lifts).
    fn unlift(&mut self, i: usize) {
        let (call, ret) = (self.ok[i].call_node, self.ok[i].ret_node);
        relink(&mut self.a_next, &mut self.a_prev, ret);
        relink(&mut self.a_next, &mut self.a_prev, call);
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
                " ({} more uncertain ones ignored: reads, or invoked after the last completion)",
                self.ignored
            ));
        }
        s
    }

    fn explain_budget(&self, budget: u64, best_len: usize) -> String {
        format!(
            "{}: search budget of {budget} states exhausted; the longest linearizable prefix \
             found covers {best_len} of {} completed operations",
            self.header(),
            self.ok.len()
        )
    }

    /// Describes the failure from (one of) the longest linearizable prefixes found.
    fn explain_violation(&mut self, best: &[Choice]) -> String {
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

        let blocking = (0..self.ok.len())
            .filter(|&i| !done_ok[i])
            .min_by_key(|&i| self.ok[i].ret_pos);
        let Some(r) = blocking else {
            return out;
        };
        let blocker = &self.ok[r];
        out.push_str(&format!(
            "This operation must take effect next or sooner, but cannot be placed:\n  {}\n",
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
                "Other operations that could take effect before it ({} completed, {} uncertain), \
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

/// Whether the current configuration is *restricted*: it may not continue with a blind
/// write (Put or Delete).
///
/// Linearizations are searched in a canonical form in which the effect of every
/// linearized uncertain operation is observed — by a completed Get or Cas — before it is
/// overwritten by a blind write. Any linearization can be brought into that form by
/// dropping the uncertain operations that break it: between such an operation and the
/// overwrite only Appends and uncertain operations happen, whose results do not depend
/// on the state, and the states from the overwrite on are unchanged. So after an
/// uncertain operation the configuration is restricted until a completed Get or Cas, and
/// restricted configurations must be able to reach one ([`KeyHistory::viable`]).
fn is_restricted(stack: &[Frame]) -> bool {
    stack.last().is_some_and(|f| f.restricted)
}

/// Whether bit `i` is set.
fn is_set(bits: &[u64], i: usize) -> bool {
    bits[i / 64] & (1 << (i % 64)) != 0
}

/// Toggles bit `i`.
fn flip(bits: &mut [u64], i: usize) {
    bits[i / 64] ^= 1 << (i % 64);
}

/// SplitMix64 finalizer: a bijective 64-bit mixer.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Zobrist key of completed operation `i`; a set's hash is the XOR of its members'.
fn op_hash(i: usize) -> u64 {
    mix64((i as u64).wrapping_mul(2).wrapping_add(1))
}

/// Hash contribution of a model state.
fn state_hash(s: StateId) -> u64 {
    mix64(
        (s as u64)
            .wrapping_mul(2)
            .wrapping_add(0x5851_f42d_4c95_7f2e),
    )
}

/// A hasher for keys that already are well-mixed `u64` hashes.
#[derive(Default)]
struct PreHashed(u64);

impl Hasher for PreHashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// A bitset of completed operations stored compactly: linearized sets are nearly
/// prefixes of the call order, so `lead` counts the leading all-ones words and `rest` is
/// the remainder without trailing zero words.
fn compress(bits: &[u64]) -> (usize, &[u64]) {
    let lead = bits.iter().take_while(|&&w| w == u64::MAX).count();
    let rest = &bits[lead..];
    let len = rest.iter().rposition(|&w| w != 0).map_or(0, |p| p + 1);
    (lead, &rest[..len])
}

/// `bits` without trailing zero words.
fn trim(bits: &[u64]) -> &[u64] {
    &bits[..bits.iter().rposition(|&w| w != 0).map_or(0, |p| p + 1)]
}

/// Whether `a ⊆ b`.
fn is_subset(a: &[u64], b: &[u64]) -> bool {
    a.iter()
        .enumerate()
        .all(|(i, &w)| w & !b.get(i).copied().unwrap_or(0) == 0)
}

/// Configurations with the same completed set and state.
struct Slot {
    state: StateId,
    lead: usize,
    rest: Box<[u64]>,
    /// Antichain (under ⊆) of the uncertain sets visited with this completed set and
    /// state, reached by a completed operation (or the root): no restriction on what
    /// comes next.
    free: Vec<Box<[u64]>>,
    /// The same for restricted configurations, which cannot continue with a blind write
    /// (see [`is_restricted`]).
    restricted: Vec<Box<[u64]>>,
}

/// The set of visited configurations, keyed by the hash of (completed set, state).
#[derive(Default)]
struct Memo {
    map: HashMap<u64, Vec<Slot>, BuildHasherDefault<PreHashed>>,
}

impl Memo {
    /// Records a configuration (`restricted`: see [`is_restricted`]);
    /// returns `false` if it was already visited or is dominated by a visited one.
    ///
    /// A visited configuration with the same completed set and state dominates when its
    /// uncertain set is a subset (leaving uncertain operations out never removes options:
    /// they have no return and may be dropped) and it is no more restricted. Every
    /// continuation of the dominated configuration is also one of the dominating one, so
    /// if that one failed (or is still being explored) nothing is lost.
    fn insert(
        &mut self,
        hash: u64,
        state: StateId,
        ok_bits: &[u64],
        unc_bits: &[u64],
        restricted: bool,
    ) -> bool {
        let (lead, rest) = compress(ok_bits);
        let unc = trim(unc_bits);
        let bucket = self.map.entry(hash).or_default();
        let found = bucket
            .iter_mut()
            .find(|s| s.state == state && s.lead == lead && *s.rest == *rest);
        let Some(slot) = found else {
            let mut slot = Slot {
                state,
                lead,
                rest: rest.into(),
                free: Vec::new(),
                restricted: Vec::new(),
            };
            if restricted {
                slot.restricted.push(unc.into());
            } else {
                slot.free.push(unc.into());
            }
            bucket.push(slot);
            return true;
        };
        let dominated = |sets: &[Box<[u64]>]| sets.iter().any(|t| is_subset(t, unc));
        if dominated(&slot.free) || (restricted && dominated(&slot.restricted)) {
            return false;
        }
        slot.restricted.retain(|t| !is_subset(unc, t));
        if restricted {
            slot.restricted.push(unc.into());
        } else {
            slot.free.retain(|t| !is_subset(unc, t));
            slot.free.push(unc.into());
        }
        true
    }
}
