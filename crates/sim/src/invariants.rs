//! Raft's safety properties (Figure 3), checked incrementally after every step so that a
//! violation is reported at the event that caused it.

use std::collections::{BTreeMap, HashMap};

use raftlock_raft::{Entry, Index, RaftCore, Term};

use crate::disk::DurableState;

/// A broken invariant, with what was seen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation(pub String);

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// FNV-1a of an entry's identity and payload.
pub fn entry_hash(e: &Entry) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h ^= *b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    eat(&e.index.to_le_bytes());
    eat(&e.term.to_le_bytes());
    eat(&[e.kind.to_u8()]);
    eat(&e.data);
    h
}

/// What the checker remembers across the whole run.
#[derive(Debug, Default)]
pub struct Invariants {
    /// Election Safety: the leader of each term.
    leaders: HashMap<Term, usize>,
    /// Log Matching: every entry ever written, by (index, term): its hash and the term of
    /// the entry before it in the log it was written to.
    entries: HashMap<(Index, Term), (u64, Term)>,
    /// Every entry known committed, by index: its term, hash, and the lowest term in
    /// which a node was seen to know it committed.
    committed: BTreeMap<Index, (Term, u64, Term)>,
    /// State Machine Safety: what was applied at each index.
    applied: BTreeMap<Index, u64>,
    /// Hash of the state machine after each index at which a snapshot was taken.
    states: HashMap<Index, u64>,
}

impl Invariants {
    /// Election Safety: at most one leader per term.
    pub fn on_leader(&mut self, node: usize, core: &RaftCore) -> Result<(), Violation> {
        let term = core.term();
        match self.leaders.insert(term, node) {
            Some(other) if other != node => {
                return Err(Violation(format!(
                    "election safety: nodes {other} and {node} both lead term {term}"
                )))
            }
            _ => {}
        }
        // Leader Completeness: a leader holds every entry committed in an earlier term.
        // (An entry committed in term 5 need not be in the log of a leader of term 3 that
        // a slow network lets win later in real time.)
        for (&index, &(t, h, seen_in)) in &self.committed {
            // Entries below the log's start are covered by its snapshot (checked by
            // `on_state_at`).
            if seen_in >= term || index < core.first_index() {
                continue;
            }
            match core.entry(index) {
                Some(e) if e.term == t && entry_hash(e) == h => {}
                other => {
                    return Err(Violation(format!(
                        "leader completeness: node {node}, leader of term {term}, lacks committed entry {index} (term {t}); it holds {:?}",
                        other.map(|e| (e.index, e.term))
                    )))
                }
            }
        }
        Ok(())
    }

    /// Log Matching: entries written by `node` agree with every other copy of the same
    /// (index, term), including what precedes them.
    pub fn on_written(
        &mut self,
        node: usize,
        core: &RaftCore,
        written: &[Entry],
    ) -> Result<(), Violation> {
        for e in written {
            let prev_term = if e.index == 1 {
                0
            } else {
                core.term_at(e.index - 1).unwrap_or(0)
            };
            let h = entry_hash(e);
            if let Some(&(h0, p0)) = self.entries.get(&(e.index, e.term)) {
                if h0 != h || p0 != prev_term {
                    return Err(Violation(format!(
                        "log matching: node {node} wrote entry ({}, term {}) that differs from another copy (payload equal: {}, previous term {} vs {})",
                        e.index, e.term, h0 == h, prev_term, p0
                    )));
                }
            } else {
                self.entries.insert((e.index, e.term), (h, prev_term));
            }
        }
        Ok(())
    }

    /// Records entries `from..=to` of `node`'s log as committed; two different entries
    /// committed at one index is a safety violation.
    pub fn on_commit(
        &mut self,
        node: usize,
        core: &RaftCore,
        from: Index,
        to: Index,
    ) -> Result<(), Violation> {
        // Entries under the snapshot are not in the log; `on_state_at` covers them.
        for index in from.max(core.first_index())..=to {
            let Some(e) = core.entry(index) else {
                return Err(Violation(format!(
                    "node {node} reports commit index {to} but lacks entry {index}"
                )));
            };
            let h = entry_hash(e);
            match self.committed.get_mut(&index) {
                Some(&mut (t, h0, _)) if t != e.term || h0 != h => {
                    return Err(Violation(format!(
                        "committed entry changed: index {index} committed as term {t}, node {node} committed term {}",
                        e.term
                    )))
                }
                Some(known) => known.2 = known.2.min(core.term()),
                None => {
                    self.committed.insert(index, (e.term, h, core.term()));
                }
            }
        }
        Ok(())
    }

    /// State Machine Safety: no two nodes apply different entries at one index.
    pub fn on_apply(&mut self, node: usize, e: &Entry) -> Result<(), Violation> {
        let h = entry_hash(e);
        match self.applied.get(&e.index) {
            Some(&h0) if h0 != h => Err(Violation(format!(
                "state machine safety: node {node} applied a different entry at index {} (term {})",
                e.index, e.term
            ))),
            Some(_) => Ok(()),
            None => {
                self.applied.insert(e.index, h);
                Ok(())
            }
        }
    }

    /// Durability: every committed entry is durable on a majority (in its log or covered
    /// by its snapshot).
    pub fn check_durable_majority(&self, disks: &[&DurableState]) -> Result<(), Violation> {
        let majority = disks.len() / 2 + 1;
        for (&index, &(term, h, _)) in &self.committed {
            let holders = disks
                .iter()
                .filter(|d| d.holds(index, term, |e| entry_hash(e) == h))
                .count();
            if holders < majority {
                return Err(Violation(format!(
                    "durability: committed entry {index} (term {term}) is durable on {holders} nodes, fewer than a majority ({majority})"
                )));
            }
        }
        Ok(())
    }

    /// State machine safety across snapshots: every node's state machine after index
    /// `index` (built, restored or reached by applying) has the same contents.
    pub fn on_state_at(
        &mut self,
        node: usize,
        index: Index,
        state_hash: u64,
    ) -> Result<(), Violation> {
        match self.states.get(&index) {
            Some(&h) if h != state_hash => Err(Violation(format!(
                "state machine safety: node {node}'s state after index {index} differs from another node's"
            ))),
            Some(_) => Ok(()),
            None => {
                self.states.insert(index, state_hash);
                Ok(())
            }
        }
    }

    /// Whether some node recorded its state after `index` (so others must compare).
    pub fn has_state_at(&self, index: Index) -> bool {
        self.states.contains_key(&index)
    }

    /// Highest index known committed.
    pub fn max_committed(&self) -> Index {
        self.committed.keys().next_back().copied().unwrap_or(0)
    }

    /// Number of entries known committed.
    pub fn committed_count(&self) -> usize {
        self.committed.len()
    }
}
