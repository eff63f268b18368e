//! Membership changes on the leader (thesis ch. 4, joint consensus): proposing one,
//! leaving the joint configuration once it commits, stepping down when the committed
//! configuration no longer counts this node, and keeping the tracker in step with the
//! configuration the log holds (see `configs`).
//!
//! Rules, each with its reason:
//! - One change at a time: no new change while the log holds an uncommitted
//!   configuration entry or the configuration is joint (its leave entry is not yet
//!   committed). Two overlapping changes could let two disjoint majorities decide.
//! - No change before the leader has committed an entry of its own term: until then it
//!   may not know the latest committed configuration, and a change based on a stale one
//!   can produce two leaders (Ongaro's 2015 "bug in single-server membership changes").
//! - A change of voters goes through the joint configuration C_old,new; once that
//!   commits, the leader appends C_new by itself. A change of learners alone is simple.
//! - A new voter must have caught up (its match within `max_promotion_lag` entries of
//!   the leader's last index), so that adding it does not stall commit while it copies
//!   the log; add it as a learner first.
//! - A leader that is not a voter of C_new keeps leading (without counting itself) until
//!   C_new commits, then steps down.

use std::collections::{BTreeMap, BTreeSet};

use super::RaftCore;
use crate::error::{Error, Result};
use crate::membership::{Membership, MembershipError, NodeInfo};
use crate::types::{Entry, EntryKind, Index, NodeId, Role, Term};

impl RaftCore {
    /// The configuration in effect (the latest in the log, committed or not).
    pub fn membership(&self) -> &Membership {
        self.tracker.config()
    }

    /// The latest committed configuration.
    pub fn committed_membership(&self) -> &Membership {
        &self.log.configs.at(self.state.commit).membership
    }

    /// Index of the configuration entry in effect (0 for the bootstrap configuration, the
    /// snapshot's index for one that came with a snapshot).
    pub fn membership_index(&self) -> Index {
        self.log.configs.effective().index
    }

    /// Proposes a new configuration of `voters` and `learners` (`nodes` adds or updates
    /// member info). On success returns the index and term of the configuration entry:
    /// the joint one when the voters change (the leader appends the final one itself once
    /// it commits), or the final one when only learners change.
    pub fn change_membership(
        &mut self,
        voters: BTreeSet<NodeId>,
        learners: BTreeSet<NodeId>,
        nodes: BTreeMap<NodeId, NodeInfo>,
    ) -> Result<(Index, Term)> {
        if self.state.role != Role::Leader {
            return Err(Error::NotLeader {
                leader: self.state.leader.clone(),
            });
        }
        if let Some(t) = &self.transfer {
            return Err(Error::TransferInProgress { to: t.to.clone() });
        }
        // Not `committed_in_term`, which the injected read bug bends: each injected bug
        // breaks one rule only.
        let term_committed = self.log.term(self.state.commit) == Some(self.state.term);
        if !term_committed && !self.bug(|b| b.change_before_term_commit) {
            return Err(MembershipError::TermNotCommitted.into());
        }
        if !self.bug(|b| b.two_pending_changes) {
            if let Some(pending) = self.pending_config_index() {
                return Err(MembershipError::ChangePending { index: pending }.into());
            }
        }
        let current = self.tracker.config();
        let current = if current.is_joint() {
            // Only with the injected bug: change from the incoming half.
            current.leave_joint()
        } else {
            current.clone()
        };
        let next = current.change_to(voters, learners, nodes);
        next.validate()?;
        self.check_caught_up(&current.voters, &next.voters)?;
        tracing::info!(from = %current, to = %next, "proposing a membership change");
        Ok(self.append_config(next))
    }

    /// The promotion rule: every voter of `next` that is not one of `current` must have
    /// answered in this term (so its match index is known, not a guess) and hold nearly
    /// the whole log (within `max_promotion_lag` entries), else `NotCaughtUp`. The
    /// runtime asks it too, ahead of its quorum check, so that a voter still catching up
    /// is reported as such.
    pub(crate) fn check_caught_up(
        &self,
        current: &BTreeSet<NodeId>,
        next: &BTreeSet<NodeId>,
    ) -> Result<()> {
        let last = self.log.last_index();
        let max_lag = self.config.tuning.max_promotion_lag;
        for id in next
            .iter()
            .filter(|id| !current.contains(*id) && **id != self.id)
        {
            let matched = self
                .tracker
                .progress
                .get(id)
                .filter(|p| p.last_response_tick.is_some())
                .map(|p| p.match_index);
            if matched.is_none_or(|m| m.saturating_add(max_lag) < last) {
                return Err(MembershipError::NotCaughtUp {
                    id: id.clone(),
                    matched: matched.unwrap_or(0),
                    last,
                }
                .into());
            }
        }
        Ok(())
    }

    /// Index of a configuration entry that is not committed yet, or of a joint
    /// configuration whose leave entry is still to come.
    pub(super) fn pending_config_index(&self) -> Option<Index> {
        let effective = self.log.configs.effective();
        (effective.index > self.state.commit || effective.membership.is_joint())
            .then_some(effective.index)
    }

    fn append_config(&mut self, next: Membership) -> (Index, Term) {
        let index = self.log.last_index() + 1;
        let term = self.state.term;
        self.log.append([Entry {
            index,
            term,
            kind: EntryKind::ConfigChange,
            data: next.encode(),
        }]);
        self.append_pending = true;
        self.refresh_config();
        (index, term)
    }

    /// Brings the tracker in step with the configuration the log holds, after anything
    /// that may have changed it (an append, a truncation, a snapshot).
    pub(super) fn refresh_config(&mut self) {
        let generation = self.log.configs.generation();
        if generation == self.config_generation {
            return;
        }
        self.config_generation = generation;
        let next = self.log.configs.effective().membership.clone();
        tracing::debug!(config = %next, index = self.log.configs.effective().index, "configuration in effect");
        let leader_next = (self.state.role == Role::Leader).then(|| {
            (
                self.log.last_index() + 1,
                self.config.tuning.max_inflight_msgs,
            )
        });
        self.tracker.set_config(next, leader_next);
        self.membership_changed = true;
        if self.state.role == Role::Leader {
            // The lease and read rounds counted acknowledgements of the old configuration;
            // new rounds count the new one.
            self.reads_on_config_change();
            if let Some(t) = &self.transfer {
                if !self.tracker.is_voter(&t.to) {
                    tracing::info!(to = %t.to, "leadership transfer aborted: the target is no longer a voter");
                    self.transfer = None;
                }
            }
            // New members get the log; a leader that left still replicates to the rest.
            self.append_pending = true;
        }
    }

    /// The commit index advanced on the leader: a committed joint configuration is left
    /// by appending its incoming half, and a leader that the committed configuration no
    /// longer counts as a voter steps down.
    pub(super) fn config_on_commit(&mut self) {
        if self.state.role != Role::Leader {
            return;
        }
        let effective = self.log.configs.effective();
        if effective.index > self.state.commit {
            return;
        }
        // Runs at every commit: nothing is cloned unless there is something to do.
        let membership = &effective.membership;
        if membership.is_joint() {
            let next = membership.leave_joint();
            tracing::info!(to = %next, "joint configuration committed; leaving it");
            self.append_config(next);
        } else if !membership.is_voter(&self.id) && !self.bug(|b| b.removed_leader_keeps_leading) {
            tracing::info!(
                term = self.state.term,
                "this leader is not a voter of the committed configuration; stepping down"
            );
            // Followers learn the final commit index from the next leader.
            self.broadcast_commit();
            self.become_follower(self.state.term, None);
        }
    }
}
