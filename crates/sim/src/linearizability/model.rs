//! The key-value register model: interned states and the step function.
//!
//! A key's state is `Option<String>`. To keep search steps allocation-free, every string
//! is interned once and the state is a small integer ([`StateId`]); `ABSENT` is `None`.
//! Appends produce new strings, so their transitions are cached per (state, suffix).

use std::collections::HashMap;

use super::{KvOp, KvOutcome, KvResult, Operation};

/// An interned key state: [`ABSENT`] or an index into [`Interner`]'s strings (plus one).
pub(super) type StateId = usize;

/// The state of an absent key.
pub(super) const ABSENT: StateId = 0;

/// Interns the strings a key's history mentions or produces.
#[derive(Default)]
pub(super) struct Interner {
    strings: Vec<String>,
    ids: HashMap<String, StateId>,
    appends: HashMap<(StateId, StateId), StateId>,
}

impl Interner {
    /// The state holding `value`.
    pub(super) fn value(&mut self, value: &str) -> StateId {
        if let Some(&id) = self.ids.get(value) {
            return id;
        }
        self.strings.push(value.to_owned());
        let id = self.strings.len();
        self.ids.insert(value.to_owned(), id);
        id
    }

    /// The state `value` (`None`: [`ABSENT`]).
    pub(super) fn state(&mut self, value: Option<&str>) -> StateId {
        value.map_or(ABSENT, |v| self.value(v))
    }

    /// The string a state holds (`None`: absent).
    pub(super) fn get(&self, state: StateId) -> Option<&str> {
        state
            .checked_sub(1)
            .and_then(|i| self.strings.get(i))
            .map(String::as_str)
    }

    /// The state after appending the string of `suffix` to `state`.
    fn append(&mut self, state: StateId, suffix: StateId) -> StateId {
        if let Some(&id) = self.appends.get(&(state, suffix)) {
            return id;
        }
        let mut joined = self.get(state).unwrap_or("").to_owned();
        joined.push_str(self.get(suffix).unwrap_or(""));
        let id = self.value(&joined);
        self.appends.insert((state, suffix), id);
        id
    }
}

/// An operation together with its observed result, as a transition relation on states.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum Step {
    /// Put (completed or uncertain): always allowed, sets the value.
    Put(StateId),
    /// Delete (completed or uncertain): always allowed, removes the key.
    Delete,
    /// Append of the string held by the given state (completed or uncertain).
    Append(StateId),
    /// Completed Get: allowed iff the state equals the value read.
    Get(StateId),
    /// Completed, successful Cas: allowed iff the state equals `from`.
    CasOk {
        /// Expected state.
        from: StateId,
        /// State written.
        to: StateId,
    },
    /// Completed, failed Cas: allowed iff the state differs from `from` and equals
    /// `current`; leaves the state unchanged.
    CasFailed {
        /// Expected state (which must *not* hold).
        from: StateId,
        /// The state the Cas reported.
        current: StateId,
    },
    /// Uncertain Cas: always allowed, swaps iff the state equals `from`.
    CasUncertain {
        /// Expected state.
        from: StateId,
        /// State written if the comparison succeeds.
        to: StateId,
    },
}

impl Step {
    /// Translates an operation. `Ok(None)` means the operation can be ignored (an
    /// uncertain Get has no effect and no observation). `Err` describes a malformed
    /// operation.
    pub(super) fn from_op(op: &Operation, interner: &mut Interner) -> Result<Option<Step>, String> {
        let step = match (&op.op, &op.outcome) {
            (KvOp::Get, KvOutcome::Uncertain) => return Ok(None),
            (KvOp::Put { value }, KvOutcome::Uncertain | KvOutcome::Ok(KvResult::Done)) => {
                Step::Put(interner.value(value))
            }
            (KvOp::Delete, KvOutcome::Uncertain | KvOutcome::Ok(KvResult::Done)) => Step::Delete,
            (KvOp::Append { suffix }, KvOutcome::Uncertain | KvOutcome::Ok(KvResult::Done)) => {
                Step::Append(interner.value(suffix))
            }
            (KvOp::Get, KvOutcome::Ok(KvResult::Value(v))) => {
                Step::Get(interner.state(v.as_deref()))
            }
            (KvOp::Cas { from, to }, KvOutcome::Uncertain) => Step::CasUncertain {
                from: interner.state(from.as_deref()),
                to: interner.value(to),
            },
            (KvOp::Cas { from, to }, KvOutcome::Ok(KvResult::CasOk)) => Step::CasOk {
                from: interner.state(from.as_deref()),
                to: interner.value(to),
            },
            (KvOp::Cas { from, .. }, KvOutcome::Ok(KvResult::CasFailed { current })) => {
                Step::CasFailed {
                    from: interner.state(from.as_deref()),
                    current: interner.state(current.as_deref()),
                }
            }
            (_, KvOutcome::Ok(_)) => {
                return Err(format!(
                    "malformed history: the result does not fit the operation: {op}"
                ))
            }
        };
        if matches!(op.outcome, KvOutcome::Ok(_)) && op.complete < op.invoke {
            return Err(format!(
                "malformed history: operation completes before it is invoked: {op}"
            ));
        }
        Ok(Some(step))
    }

    /// The state after applying the step to `state`, or `None` if the observed result
    /// is impossible from `state`.
    pub(super) fn apply(self, state: StateId, interner: &mut Interner) -> Option<StateId> {
        match self {
            Step::Put(v) => Some(v),
            Step::Delete => Some(ABSENT),
            Step::Append(suffix) => Some(interner.append(state, suffix)),
            Step::Get(expected) => (state == expected).then_some(state),
            Step::CasOk { from, to } => (state == from).then_some(to),
            Step::CasFailed { from, current } => {
                (state != from && state == current).then_some(state)
            }
            Step::CasUncertain { from, to } => Some(if state == from { to } else { state }),
        }
    }

    /// Whether the step ignores the state it is applied to (Put and Delete).
    pub(super) fn is_blind(self) -> bool {
        matches!(self, Step::Put(_) | Step::Delete)
    }

    /// The state a completed observer requires, or the state an uncertain Cas swaps
    /// from: the values a chain of state-dependent steps may have to arrive at.
    pub(super) fn target(self) -> Option<StateId> {
        match self {
            Step::Get(v) => Some(v),
            Step::CasOk { from, .. } | Step::CasUncertain { from, .. } => Some(from),
            Step::CasFailed { current, .. } => Some(current),
            Step::Put(_) | Step::Delete | Step::Append(_) => None,
        }
    }

    /// Whether the step is only allowed in some states (a completed Get or Cas).
    pub(super) fn is_observer(self) -> bool {
        matches!(
            self,
            Step::Get(_) | Step::CasOk { .. } | Step::CasFailed { .. }
        )
    }

    /// Whether the step is an observer that leaves the state unchanged (a completed Get
    /// or failed Cas).
    pub(super) fn is_stateless_observer(self) -> bool {
        matches!(self, Step::Get(_) | Step::CasFailed { .. })
    }

    /// What the step needs of the state to be allowed, if anything (for explanations).
    pub(super) fn requirement(self, interner: &Interner) -> Option<String> {
        let show = |s| super::ShowValue(interner.get(s)).to_string();
        match self {
            Step::Get(expected) => Some(format!("the value to be {}", show(expected))),
            Step::CasOk { from, .. } => Some(format!("the value to be {}", show(from))),
            Step::CasFailed { from, current } if from == current => Some(format!(
                "the value to be {} and, at the same time, not {}",
                show(current),
                show(from)
            )),
            Step::CasFailed { current, .. } => Some(format!("the value to be {}", show(current))),
            Step::Put(_) | Step::Delete | Step::Append(_) | Step::CasUncertain { .. } => None,
        }
    }
}
