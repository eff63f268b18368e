//! Linearizability checking for the key-value histories the simulator records.
//!
//! This is a Wing–Gong / Lowe ("WGL") checker with memoization, the algorithm used by
//! [Porcupine](https://github.com/anishathalye/porcupine), specialised to a key-value
//! register model:
//!
//! * **Partitioned by key.** Linearizability is compositional and every operation touches
//!   exactly one key, so each key's sub-history is checked on its own. This turns one
//!   exponential search into many small ones.
//! * **Per key**, the operations become call/return events sorted by time (calls before
//!   returns at equal timestamps, so operations whose intervals merely touch count as
//!   concurrent: `A` happens before `B` only when `A.complete < B.invoke`). A depth-first
//!   search then repeatedly picks an operation whose call precedes the first outstanding
//!   return, applies it to the model, and backtracks when that return cannot be reached.
//!   Visited configurations — the set of linearized operations (a bitset) together with
//!   the model state — are memoized, so no configuration is explored twice.
//! * **Uncertain operations** (timeouts, lost connections) have a call but no return:
//!   they may take effect at any point after their invocation, or never. The search
//!   succeeds as soon as every *completed* operation is linearized, whatever uncertain
//!   operations are left over (those are the dropped ones, or equivalently ones that take
//!   effect after everything observed). Uncertain reads, and uncertain operations invoked
//!   after the key's last completion, cannot matter and are left out up front.
//!
//! On top of plain WGL the search uses reductions that keep it near-linear on realistic
//! histories, each of which preserves whether a linearization exists (see the `search`
//! module): completed candidates are tried before uncertain ones, so an uncertain
//! operation is only linearized when an observation needs it; a completed Get or failed
//! Cas that agrees with the current state is linearized at once, without alternatives;
//! linearizations are searched in a canonical form where every uncertain operation that
//! takes effect is observed before being overwritten; retries with identical effects are
//! used in invocation order; and a configuration is skipped when one with the same
//! completed set and state but a *subset* of its uncertain operations was visited.
//!
//! [`check`] returns the first violating key with an explanation (the longest
//! linearizable prefix found and the operation that could not be placed after it), or
//! [`CheckResult::Unknown`] when a key exceeds the search budget — never
//! [`CheckResult::Linearizable`] without a complete proof.

mod history;
mod memo;
mod model;
mod search;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;

use history::KeyHistory;
use search::KeyOutcome;

/// A key of the key-value store.
pub type Key = String;
/// A value stored under a key.
pub type Value = String;

/// A client operation on one key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum KvOp {
    /// Set the key to `value`.
    Put {
        /// The value written.
        value: Value,
    },
    /// Read the key's current value.
    Get,
    /// Compare-and-swap: set the key to `to` iff its current value equals `from`
    /// (`None` meaning "absent").
    Cas {
        /// The value the key must currently hold (`None`: the key must be absent).
        from: Option<Value>,
        /// The value written if the comparison succeeds.
        to: Value,
    },
    /// Append `suffix` to the current value (an absent key counts as the empty string).
    Append {
        /// The string appended.
        suffix: Value,
    },
    /// Remove the key.
    Delete,
}

/// What the client observed.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum KvOutcome {
    /// Completed with this result (Get → value or None; Put/Append/Delete → Ok; Cas →
    /// swapped bool and, for a failed Cas, the current value).
    Ok(KvResult),
    /// Timed out / connection lost: may or may not have taken effect, at any point after
    /// invoke (it stays "pending forever").
    Uncertain,
}

/// The result a completed operation returned.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum KvResult {
    /// Result of a [`KvOp::Get`]: the value read (`None`: absent).
    Value(Option<Value>),
    /// Result of a [`KvOp::Put`], [`KvOp::Append`] or [`KvOp::Delete`].
    Done,
    /// A [`KvOp::Cas`] whose comparison succeeded and which wrote its `to` value.
    CasOk,
    /// A [`KvOp::Cas`] whose comparison failed; nothing was written.
    CasFailed {
        /// The value the key held when the comparison failed (`None`: absent).
        current: Option<Value>,
    },
}

/// One client operation of a recorded history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation {
    /// The client that issued the operation (only used in explanations).
    pub client: u64,
    /// The key the operation acts on.
    pub key: Key,
    /// The operation.
    pub op: KvOp,
    /// Virtual time at which the client invoked the operation.
    pub invoke: u64,
    /// Virtual time at which the client saw the outcome; ignored when the outcome is
    /// [`KvOutcome::Uncertain`]. Must not be smaller than `invoke` otherwise.
    pub complete: u64,
    /// What the client observed.
    pub outcome: KvOutcome,
}

/// Verdict of [`check`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckResult {
    /// Every key's history has a linearization.
    Linearizable,
    /// Some key's history has no linearization.
    Violation {
        /// The (first, in key order) key whose history is not linearizable.
        key: Key,
        /// Human-readable account: the longest linearizable prefix found and the
        /// operation that could not be placed after it.
        explanation: String,
    },
    /// The checker could not decide: a key's search exceeded
    /// [`CheckOptions::max_states_per_key`], or the history is malformed (an operation
    /// whose result does not fit its kind, or that completes before it is invoked).
    /// Callers must not treat this as a pass.
    Unknown {
        /// The key that could not be decided.
        key: Key,
        /// Why.
        reason: String,
    },
}

impl CheckResult {
    /// Whether the verdict is [`CheckResult::Linearizable`].
    pub fn is_linearizable(&self) -> bool {
        matches!(self, CheckResult::Linearizable)
    }
}

/// Tuning for [`check`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckOptions {
    /// Search budget: the most search configurations explored for one key. A key that
    /// needs more makes the result [`CheckResult::Unknown`], never
    /// [`CheckResult::Linearizable`].
    pub max_states_per_key: u64,
}

impl Default for CheckOptions {
    /// One million configurations per key.
    fn default() -> Self {
        CheckOptions {
            max_states_per_key: 1_000_000,
        }
    }
}

/// Checks whether `history` is linearizable with respect to a key-value store in which
/// every key starts absent.
///
/// Keys are checked independently, in ascending order. The first violating key is
/// reported; otherwise the first undecided key (budget exceeded or malformed history) is
/// reported as [`CheckResult::Unknown`]; otherwise the history is linearizable.
pub fn check(history: &[Operation], options: &CheckOptions) -> CheckResult {
    let mut by_key: BTreeMap<&str, Vec<(usize, &Operation)>> = BTreeMap::new();
    for (seq, op) in history.iter().enumerate() {
        by_key.entry(op.key.as_str()).or_default().push((seq, op));
    }

    let mut prepared = Vec::with_capacity(by_key.len());
    for (key, ops) in &by_key {
        match KeyHistory::prepare(key, ops) {
            Ok(h) => prepared.push(h),
            Err(reason) => {
                return CheckResult::Unknown {
                    key: (*key).to_owned(),
                    reason,
                }
            }
        }
    }

    let mut first_unknown = None;
    for h in prepared {
        let key = h.key().to_owned();
        match search::check(h, options.max_states_per_key) {
            KeyOutcome::Linearizable => {}
            KeyOutcome::Violation(explanation) => {
                return CheckResult::Violation { key, explanation }
            }
            KeyOutcome::Unknown(reason) => {
                if first_unknown.is_none() {
                    first_unknown = Some(CheckResult::Unknown { key, reason });
                }
            }
        }
    }
    first_unknown.unwrap_or(CheckResult::Linearizable)
}

/// Formats an optional value as `"v"` or `absent`.
pub(crate) struct ShowValue<'a>(pub(crate) Option<&'a str>);

impl fmt::Display for ShowValue<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(v) => write!(f, "{v:?}"),
            None => f.write_str("absent"),
        }
    }
}

impl fmt::Display for KvOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KvOp::Put { value } => write!(f, "Put({value:?})"),
            KvOp::Get => f.write_str("Get"),
            KvOp::Cas { from, to } => {
                write!(f, "Cas({} -> {to:?})", ShowValue(from.as_deref()))
            }
            KvOp::Append { suffix } => write!(f, "Append({suffix:?})"),
            KvOp::Delete => f.write_str("Delete"),
        }
    }
}

impl fmt::Display for KvResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KvResult::Value(v) => write!(f, "{}", ShowValue(v.as_deref())),
            KvResult::Done => f.write_str("ok"),
            KvResult::CasOk => f.write_str("swapped"),
            KvResult::CasFailed { current } => {
                write!(f, "not swapped, current {}", ShowValue(current.as_deref()))
            }
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "client {} {}[{:?}] ", self.client, self.op, self.key)?;
        match &self.outcome {
            KvOutcome::Ok(result) => write!(
                f,
                "-> {result} (invoked {}, completed {})",
                self.invoke, self.complete
            ),
            KvOutcome::Uncertain => write!(f, "-> uncertain (invoked {})", self.invoke),
        }
    }
}
