//! Raft's safety properties (Figure 3), checked incrementally after every step so that a
//! violation is reported at the event that caused it.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use raftlock_raft::{
    Entry, EntryKind, Index, Membership, NodeId, RaftCore, Role, SnapshotMeta, Term,
};

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

/// The voters, outgoing voters and learners of a configuration (member info aside).
fn shape(m: &Membership) -> (&BTreeSet<NodeId>, &BTreeSet<NodeId>, &BTreeSet<NodeId>) {
    (&m.voters, &m.outgoing, &m.learners)
}

/// Whether `holds` is true of a majority of `voters` (an empty set has no majority).
fn majority_of(voters: &BTreeSet<NodeId>, holds: impl Fn(&NodeId) -> bool) -> bool {
    !voters.is_empty() && voters.iter().filter(|id| holds(id)).count() > voters.len() / 2
}

/// Whether `holds` is true of a quorum of `m`: a majority of its voters, and of its
/// outgoing voters too while joint. Learners never count.
pub fn is_quorum(m: &Membership, holds: impl Fn(&NodeId) -> bool) -> bool {
    majority_of(&m.voters, &holds) && (!m.is_joint() || majority_of(&m.outgoing, &holds))
}

/// What the checker remembers across the whole run.
#[derive(Debug, Default)]
pub struct Invariants {
    /// Election Safety: the leader of each term (by id: a slot's id changes when a
    /// removed node is wiped and rejoins).
    leaders: HashMap<Term, NodeId>,
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
    /// Every configuration entry ever written, by (index, term).
    configs: HashMap<(Index, Term), Membership>,
    /// Indices at which some configuration entry was written (to find a log's latest
    /// configuration without scanning the whole log).
    config_indices: BTreeSet<Index>,
    /// Committed configurations by index; index 0 is the bootstrap configuration.
    committed_configs: BTreeMap<Index, Membership>,
    /// The configuration before the bootstrap one is set.
    empty: Membership,
}

impl Invariants {
    /// Election Safety: at most one leader per term.
    pub fn on_leader(&mut self, node: usize, core: &RaftCore) -> Result<(), Violation> {
        let term = core.term();
        match self.leaders.insert(term, core.id().clone()) {
            Some(other) if other != *core.id() => {
                return Err(Violation(format!(
                    "election safety: nodes {other} and {} (slot {node}) both lead term {term}",
                    core.id()
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
            if e.kind == EntryKind::ConfigChange {
                self.on_config_written(node, core, e)?;
            }
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
    ///
    /// A leader's commit is also checked against its configuration: the entry at `to`
    /// must be durable (`holds(id, index, term, hash)`) on a quorum of the configuration
    /// in effect on the leader — a majority of its voters, and of the outgoing voters
    /// while joint; learners never count. That configuration, not the one in effect at
    /// the entry's index, is the right one: entries appended after a joint
    /// configuration and committed once the leader appended C_new are committed by a
    /// majority of C_new alone, which thesis §4.3 allows once C_old,new is committed.
    /// Newly committed configuration entries must extend the chain of committed
    /// configurations (see [`Invariants::valid_step`]).
    pub fn on_commit(
        &mut self,
        node: usize,
        core: &RaftCore,
        from: Index,
        to: Index,
        holds: impl Fn(&NodeId, Index, Term, u64) -> bool,
    ) -> Result<(), Violation> {
        if core.role() == Role::Leader && to >= core.first_index() {
            if let Some(e) = core.entry(to) {
                let h = entry_hash(e);
                let m = core.membership();
                if !is_quorum(m, |id| holds(id, to, e.term, h)) {
                    let holders: Vec<NodeId> = m
                        .members()
                        .into_iter()
                        .filter(|id| holds(id, to, e.term, h))
                        .collect();
                    return Err(Violation(format!(
                        "commit quorum: leader {} committed entry {to} (term {}), which is durable only on {holders:?}, not on a quorum of voters of its configuration {m} (learners or non-voters counted?)",
                        core.id(),
                        e.term
                    )));
                }
            }
        }
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
                    if e.kind == EntryKind::ConfigChange {
                        self.on_config_committed(index, e.term)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// The term of the entry known committed at `index`, if any.
    pub fn committed_term(&self, index: Index) -> Option<Term> {
        self.committed.get(&index).map(|&(t, ..)| t)
    }

    /// Whether `id` is a member of some committed configuration.
    pub fn was_committed_member(&self, id: &NodeId) -> bool {
        self.committed_configs.values().any(|m| m.contains(id))
    }

    /// Sets the bootstrap configuration (committed at index 0).
    pub fn set_bootstrap(&mut self, m: Membership) {
        self.committed_configs.insert(0, m);
    }

    /// The latest committed configuration and its index.
    pub fn latest_committed_config(&self) -> (Index, &Membership) {
        self.committed_configs
            .iter()
            .next_back()
            .map_or((0, &self.empty), |(i, m)| (*i, m))
    }

    /// A configuration entry was written: remember it, and check that a leader appends
    /// one only once it has committed an entry of its own term (until then it may not
    /// know the latest committed configuration: Ongaro's single-server change bug, and
    /// the rule the core states for joint consensus too).
    fn on_config_written(
        &mut self,
        node: usize,
        core: &RaftCore,
        e: &Entry,
    ) -> Result<(), Violation> {
        let Ok(m) = Membership::decode(&e.data) else {
            return Err(Violation(format!(
                "node {node} wrote configuration entry {} (term {}) that does not decode",
                e.index, e.term
            )));
        };
        self.config_indices.insert(e.index);
        self.configs.entry((e.index, e.term)).or_insert(m);
        let own = core.role() == Role::Leader && e.term == core.term();
        let commit_term = core.term_at(core.commit_index());
        if own && commit_term.is_some_and(|t| t != core.term()) {
            return Err(Violation(format!(
                "membership: leader {} appended configuration entry {} in term {} before committing an entry of its term (commit index {}, of term {commit_term:?})",
                core.id(),
                e.index,
                e.term,
                core.commit_index()
            )));
        }
        Ok(())
    }

    /// A snapshot at `meta.last_index` must carry the configuration committed at that
    /// index, or nothing if that is still the bootstrap configuration (which no log holds,
    /// so a node that joined does not know it).
    pub fn check_snapshot_meta(&self, node: usize, meta: &SnapshotMeta) -> Result<(), Violation> {
        let index = meta.last_index;
        let replicated = self.committed_configs.range(1..=index).next_back();
        let ok = match (&meta.membership, replicated) {
            (None, None) => true,
            (Some(m), Some((_, c))) => shape(m) == shape(c),
            (Some(m), None) => self
                .committed_configs
                .get(&0)
                .is_some_and(|c| shape(m) == shape(c)),
            (None, Some(_)) => false,
        };
        if ok {
            return Ok(());
        }
        Err(Violation(format!(
            "snapshot membership: node {node} built a snapshot at {index} carrying {:?}, but the configuration committed there is {}",
            meta.membership.as_deref().map(|m| m.to_string()),
            replicated.map_or("the bootstrap one".to_string(), |(i, c)| format!("{c} (at {i})"))
        )))
    }

    /// The configurations one committed configuration may be followed by: a change of
    /// learners alone (same voters, simple), entering the joint configuration from a
    /// simple one (its outgoing half is the old voters), or leaving a joint one (its
    /// incoming half and learners, simple).
    pub fn valid_step(prev: &Membership, next: &Membership) -> bool {
        match (prev.is_joint(), next.is_joint()) {
            (false, false) => prev.voters == next.voters,
            (false, true) => next.outgoing == prev.voters,
            (true, false) => next.voters == prev.voters && next.learners == prev.learners,
            (true, true) => false,
        }
    }

    fn on_config_committed(&mut self, index: Index, term: Term) -> Result<(), Violation> {
        let Some(m) = self.configs.get(&(index, term)).cloned() else {
            return Ok(()); // undecodable: reported when written
        };
        let prev = self.committed_configs.range(..index).next_back();
        if let Some((pi, p)) = prev {
            if !Self::valid_step(p, &m) {
                return Err(Violation(format!(
                    "configuration chain: committed configuration {m} at {index} does not follow from the committed {p} at {pi}"
                )));
            }
        }
        if let Some((ni, n)) = self.committed_configs.range(index + 1..).next() {
            if !Self::valid_step(&m, n) {
                return Err(Violation(format!(
                    "configuration chain: committed configuration {n} at {ni} does not follow from the committed {m} at {index}"
                )));
            }
        }
        self.committed_configs.insert(index, m);
        Ok(())
    }

    /// Checks one node's configuration state after it stepped:
    /// - the configuration in effect is the one its log says: the latest configuration
    ///   entry in its log, else the committed configuration at its log's start (what its
    ///   snapshot must carry), else `bootstrap` (its configured peers) for a log that
    ///   starts at 1. This is what catches a configuration kept after its entry was
    ///   truncated, and a snapshot that lost its membership;
    /// - a leader is a voter of its configuration, except in the window thesis §4.2.2
    ///   allows: a leader that appended a C_new without itself keeps leading (without
    ///   counting itself) until that entry commits, and must step down at that moment;
    ///   so a non-voter leader's configuration entry must be uncommitted;
    /// - a leader's log holds at most one uncommitted configuration entry.
    pub fn check_node(
        &self,
        node: usize,
        core: &RaftCore,
        bootstrap: &Membership,
    ) -> Result<(), Violation> {
        let (first, last) = (core.first_index(), core.last_index());
        let from_log = self
            .config_indices
            .range(first..=last.max(first))
            .rev()
            .filter(|&&i| i <= last)
            .find_map(|&i| {
                let e = core.entry(i)?;
                (e.kind == EntryKind::ConfigChange)
                    .then(|| self.configs.get(&(i, e.term)))
                    .flatten()
            });
        let expected = match from_log {
            Some(m) => m,
            None if first <= 1 => bootstrap,
            // Below the first committed configuration entry the configuration is the
            // bootstrap one, which is in no log: a node knows it from its own peers, or
            // not at all (a joined node, whose peers are empty).
            None => match self.committed_configs.range(1..first).next_back() {
                Some((_, m)) => m,
                None => bootstrap,
            },
        };
        let actual = core.membership();
        if shape(actual) != shape(expected) {
            return Err(Violation(format!(
                "configuration: node {} (slot {node}) has {actual} in effect, but its log ({first}..={last}) says {expected}",
                core.id()
            )));
        }
        if core.role() != Role::Leader {
            return Ok(());
        }
        if !actual.is_voter(core.id()) && core.membership_index() <= core.commit_index() {
            return Err(Violation(format!(
                "removed leader: {} leads term {} though its committed configuration {actual} (index {}) does not count it as a voter",
                core.id(),
                core.term(),
                core.membership_index()
            )));
        }
        // Committed as far as anyone knows: a new leader may not have heard yet that an
        // entry in its log committed under its predecessor.
        let commit = core.commit_index().max(self.max_committed());
        let uncommitted: Vec<Index> = self
            .config_indices
            .range(commit + 1..)
            .filter(|&&i| i <= last)
            .filter(|&&i| {
                core.entry(i)
                    .is_some_and(|e| e.kind == EntryKind::ConfigChange)
            })
            .copied()
            .collect();
        if uncommitted.len() > 1 {
            return Err(Violation(format!(
                "one change at a time: leader {} holds uncommitted configuration entries at {uncommitted:?}",
                core.id()
            )));
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

    /// Durability: every committed entry is durable (in its log or covered by its
    /// snapshot) on a majority of the voters of the latest committed configuration (its
    /// incoming half while joint). Entries up to that configuration's index are held
    /// there because committing it took a quorum of it; later entries were committed by a
    /// quorum of it or of a joint configuration built on it (whose outgoing half it is),
    /// or, when it is joint, by a majority of its incoming half alone (after C_new was
    /// appended). `holds(id, index, term, hash)` reads the disks.
    pub fn check_durable_quorum(
        &self,
        holds: impl Fn(&NodeId, Index, Term, u64) -> bool,
    ) -> Result<(), Violation> {
        let (ci, config) = self.latest_committed_config();
        let voters = &config.voters;
        for (&index, &(term, h, _)) in &self.committed {
            if !majority_of(voters, |id| holds(id, index, term, h)) {
                let holders = voters.iter().filter(|id| holds(id, index, term, h)).count();
                return Err(Violation(format!(
                    "durability: committed entry {index} (term {term}) is durable on {holders} of the {} voters of the latest committed configuration {config} (at {ci}), fewer than a majority",
                    voters.len()
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
