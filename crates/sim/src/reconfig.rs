//! Membership changes during the fault phase: the world asks whichever node leads at the
//! moment for a change drawn from the plan, interleaved with every fault (the node being
//! changed may be partitioned, paused or crashed at any point). Refusals — not the
//! leader, no entry of its term committed yet, a learner that has not caught up, a
//! transfer under way, a change pending — are normal outcomes and only traced; a change
//! accepted while the leader's log holds an uncommitted configuration (or a joint one),
//! or before the leader committed an entry of its term, is a violation.
//!
//! Spare slots boot in join mode (no peers) and are added as learners; a node removed by
//! a committed configuration keeps running (it must be harmless) until a `Wipe` gives its
//! slot an empty disk and a fresh id: ids are never reused.

use std::collections::{BTreeMap, BTreeSet};

use raftlock_raft::{Error, MembershipError, NodeId, NodeInfo, Rand};

use crate::invariants::Violation;
use crate::profile::ReconfigKind;
use crate::world::{World, SIM_ADDRESS};

/// Most voters a change may leave (the sim's cluster sizes stay sane).
const MAX_VOTERS: usize = 7;

/// A change of configuration to ask for.
enum Change {
    Members {
        voters: BTreeSet<NodeId>,
        learners: BTreeSet<NodeId>,
        nodes: BTreeMap<NodeId, NodeInfo>,
    },
    Transfer(NodeId),
}

impl World {
    /// Draws one membership change from the plan and asks the leader for it.
    pub(crate) fn reconfigure(&mut self) -> Result<(), Violation> {
        let kinds = self.plan.reconfig_kinds.clone();
        if kinds.is_empty() {
            return Ok(());
        }
        let kind = kinds[self.rng.gen_range(0, kinds.len() as u64) as usize];
        if kind == ReconfigKind::Wipe {
            return self.wipe_removed();
        }
        let Some(l) = self.current_leader() else {
            self.trace(|| format!("reconfig {kind:?}: no leader"));
            return Ok(());
        };
        if self.nodes[l].paused {
            self.trace(|| format!("reconfig {kind:?}: leader n{l} is paused"));
            return Ok(());
        }
        let Some(change) = self.draw_change(l, kind) else {
            self.trace(|| format!("reconfig {kind:?}: nothing to change"));
            return Ok(());
        };
        self.request(l, kind, change)?;
        if kind == ReconfigKind::SecondChange {
            // Right behind the first: whatever the first's outcome, a second change must
            // be refused while a configuration entry is pending. `request` checks that.
            if let Some(second) = self.draw_change(l, ReconfigKind::RemoveVoter) {
                self.request(l, kind, second)?;
            } else if let Some(second) = self.draw_change(l, ReconfigKind::AddLearner) {
                self.request(l, kind, second)?;
            }
        }
        Ok(())
    }

    /// A change of `kind` for the configuration in effect on leader `l`, or `None` when
    /// there is nothing to do (no learner to promote, too few voters to remove one...).
    fn draw_change(&mut self, l: usize, kind: ReconfigKind) -> Option<Change> {
        use ReconfigKind::*;
        let core = self.nodes[l].core.as_ref()?;
        let m = core.membership().clone();
        let me = core.id().clone();
        let mut voters = m.voters.clone();
        let mut learners = m.learners.clone();
        let mut nodes = BTreeMap::new();
        let others: Vec<NodeId> = voters.iter().filter(|v| **v != me).cloned().collect();
        let all_voters: Vec<NodeId> = voters.iter().cloned().collect();
        let learner_list: Vec<NodeId> = learners.iter().cloned().collect();
        match kind {
            AddLearner | SecondChange => {
                // A running slot that is not a member and was never removed.
                let members = m.members();
                let spare: Vec<usize> = (0..self.nodes.len())
                    .filter(|&s| {
                        !members.contains(&self.ids[s]) && !self.removed_ids.contains(&self.ids[s])
                    })
                    .collect();
                if spare.is_empty() {
                    // SecondChange without a spare: drop a learner, or change nothing but
                    // the learners (re-proposing them) to still exercise the refusal.
                    if kind == SecondChange {
                        if let Some(x) = self.pick(&learner_list) {
                            learners.remove(&x);
                        }
                        return Some(Change::Members {
                            voters,
                            learners,
                            nodes,
                        });
                    }
                    return None;
                }
                let s = spare[self.rng.gen_range(0, spare.len() as u64) as usize];
                let id = self.ids[s].clone();
                learners.insert(id.clone());
                nodes.insert(id, info());
            }
            Promote => {
                let x = self.pick(&learner_list)?;
                if voters.len() >= MAX_VOTERS {
                    return None;
                }
                learners.remove(&x);
                voters.insert(x);
            }
            RemoveVoter => {
                let v = self.pick(&others)?;
                voters.remove(&v);
            }
            RemoveLeader => {
                if voters.len() < 2 || !voters.remove(&me) {
                    return None;
                }
            }
            Replace => {
                let x = self.pick(&learner_list)?;
                let v = self.pick(&all_voters)?;
                learners.remove(&x);
                voters.insert(x);
                voters.remove(&v);
            }
            Demote => {
                if voters.len() < 2 {
                    return None;
                }
                let v = self.pick(&all_voters)?;
                voters.remove(&v);
                learners.insert(v);
            }
            RemoveLearner => {
                let x = self.pick(&learner_list)?;
                learners.remove(&x);
            }
            Transfer | TransferDeaf => return self.pick(&others).map(Change::Transfer),
            Wipe => return None,
        }
        Some(Change::Members {
            voters,
            learners,
            nodes,
        })
    }

    fn pick(&mut self, from: &[NodeId]) -> Option<NodeId> {
        (!from.is_empty()).then(|| from[self.rng.gen_range(0, from.len() as u64) as usize].clone())
    }

    /// Asks leader `l` for `change` and checks the answer against the rules the core
    /// must enforce.
    fn request(&mut self, l: usize, kind: ReconfigKind, change: Change) -> Result<(), Violation> {
        self.sync_clock(l);
        let Some(core) = self.nodes[l].core.as_mut() else {
            return Ok(());
        };
        let id = core.id().clone();
        let term = core.term();
        // What the leader knows before the call: a configuration entry pending (not
        // committed, or joint), and whether it committed an entry of its term.
        let pending = core.membership_index() > core.commit_index() || core.membership().is_joint();
        let term_committed = core.term_at(core.commit_index()).map(|t| t == term);
        match change {
            Change::Transfer(to) => {
                let result = core.transfer_leader(to.clone());
                self.trace(|| format!("reconfig {kind:?}: {id} transfers to {to}: {result:?}"));
                if kind == ReconfigKind::TransferDeaf && result.is_ok() {
                    // The links into the old leader fail the moment it sends `TimeoutNow`
                    // (see `process`): before, the target's acknowledgements must reach
                    // it for the transfer to proceed.
                    self.deafen_on_timeout_now = Some(l);
                }
            }
            Change::Members {
                voters,
                learners,
                nodes,
            } => {
                let what = format!(
                    "voters {:?} learners {:?}",
                    voters.iter().map(|v| v.as_str()).collect::<Vec<_>>(),
                    learners.iter().map(|v| v.as_str()).collect::<Vec<_>>()
                );
                let result = core.change_membership(voters, learners, nodes);
                self.trace(|| format!("reconfig {kind:?}: {id} (t{term}) -> {what}: {result:?}"));
                match result {
                    Ok((index, _)) if pending => {
                        return Err(Violation(format!(
                            "one change at a time: leader {id} accepted a change ({what}) at {index} while a configuration entry was pending"
                        )));
                    }
                    Ok((index, _)) if term_committed == Some(false) => {
                        return Err(Violation(format!(
                            "membership: leader {id} accepted a change ({what}) at {index} before committing an entry of its term {term}"
                        )));
                    }
                    Ok(_) => {}
                    Err(Error::Membership(MembershipError::ChangePending { .. })) if !pending => {
                        return Err(Violation(format!(
                            "membership: leader {id} refused a change as pending though no configuration entry was pending"
                        )));
                    }
                    Err(_) => {}
                }
            }
        }
        self.process(l)
    }

    /// Wipes a node that a committed configuration removed: its process stops, its disk
    /// is erased, and its slot boots as a fresh node under a new id, in join mode.
    fn wipe_removed(&mut self) -> Result<(), Violation> {
        let (_, config) = self.inv.latest_committed_config();
        let leader_config = self
            .current_leader()
            .and_then(|l| self.nodes[l].core.as_ref())
            .map(|c| c.membership().members())
            .unwrap_or_default();
        let candidates: Vec<usize> = (0..self.nodes.len())
            .filter(|&s| {
                let id = &self.ids[s];
                self.removed_ids.contains(id) && !config.contains(id) && !leader_config.contains(id)
            })
            .collect();
        if candidates.is_empty() {
            self.trace(|| "reconfig Wipe: no removed node".to_string());
            return Ok(());
        }
        let s = candidates[self.rng.gen_range(0, candidates.len() as u64) as usize];
        let old = self.ids[s].clone();
        let new = NodeId::from(format!("n{}", self.next_fresh));
        self.next_fresh += 1;
        self.trace(|| format!("wipe {old} (slot {s}); it rejoins as {new}"));
        self.mix(&[6, s as u64]);
        self.clients_node_removed(s);
        let node = &mut self.nodes[s];
        node.core = None;
        node.disk = Default::default();
        node.disk_busy_until = self.now;
        self.ids[s] = new;
        self.bootstrap[s] = false;
        self.check_durable()?;
        self.boot(s);
        Ok(())
    }
}

fn info() -> NodeInfo {
    NodeInfo {
        address: SIM_ADDRESS.to_string(),
        metadata: BTreeMap::new(),
    }
}
