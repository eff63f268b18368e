//! Term, vote, role and leader of a node, plus its commit and apply positions (the
//! original's StateManager). Term and vote are persistent: every change marks the hard
//! state dirty so the next `Ready` carries it to storage.

use crate::types::{HardState, Index, NodeId, Role, Term};

#[derive(Debug)]
pub(crate) struct State {
    pub(crate) term: Term,
    pub(crate) voted_for: Option<NodeId>,
    pub(crate) role: Role,
    /// The leader of `term`, when known.
    pub(crate) leader: Option<NodeId>,
    /// Highest index known committed; never decreases.
    pub(crate) commit: Index,
    /// Highest index handed out for application.
    pub(crate) handed_out: Index,
    /// Highest index the runtime reported applied.
    pub(crate) applied: Index,
    /// Term or vote changed since the last `Ready`.
    pub(crate) hard_state_dirty: bool,
}

impl State {
    pub(crate) fn new(hard_state: HardState, applied: Index) -> Self {
        State {
            term: hard_state.term,
            voted_for: hard_state.voted_for,
            role: Role::Follower,
            leader: None,
            commit: applied,
            handed_out: applied,
            applied,
            hard_state_dirty: false,
        }
    }

    pub(crate) fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            voted_for: self.voted_for.clone(),
        }
    }

    /// Moves to a newer term: the vote and the leader belong to the old one.
    pub(crate) fn enter_term(&mut self, term: Term) {
        assert!(
            term > self.term,
            "terms only increase: {} after {}",
            term,
            self.term
        );
        self.term = term;
        self.voted_for = None;
        self.leader = None;
        self.hard_state_dirty = true;
    }

    pub(crate) fn vote_for(&mut self, id: NodeId) {
        assert!(
            self.voted_for.is_none() || self.voted_for.as_ref() == Some(&id),
            "one vote per term"
        );
        if self.voted_for.as_ref() != Some(&id) {
            self.voted_for = Some(id);
            self.hard_state_dirty = true;
        }
    }

    /// Raises the commit index; it never goes backwards (a lower `index` is ignored: it
    /// comes from an older message). What was handed out for application never passes it.
    pub(crate) fn commit_to(&mut self, index: Index) -> bool {
        assert!(
            self.applied <= self.handed_out && self.handed_out <= self.commit,
            "applied {} <= handed out {} <= commit {}",
            self.applied,
            self.handed_out,
            self.commit
        );
        if index > self.commit {
            self.commit = index;
            true
        } else {
            false
        }
    }
}
