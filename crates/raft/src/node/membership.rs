//! Membership at run time: turning an operator's request (add a learner, promote,
//! remove, set, transfer leadership) into the core's `change_membership` or
//! `transfer_leader` against the configuration in effect, and answering the caller once
//! the change has committed — both entries of a joint change, so the caller sees the final
//! configuration.
//!
//! Bounded: one change at a time is accepted by the core, so at most a handful of callers
//! wait here; each waits at most `apply_entry_timeout`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

use crate::core::RaftCore;
use crate::error::{Error, Result};
use crate::membership::{Membership, MembershipError, NodeInfo};
use crate::types::{Index, NodeId, Role, Term};

/// A membership change as the caller asks for it; the target configuration is computed
/// on the event loop from the one in effect, so two callers never race on a stale copy.
#[derive(Debug)]
pub(crate) enum Change {
    /// Add `id` as a learner with its address and metadata (or update its info).
    AddLearner { id: NodeId, info: NodeInfo },
    /// Make learner `id` a voter.
    Promote { id: NodeId, force: bool },
    /// Remove `id`, voter or learner.
    Remove { id: NodeId, force: bool },
    /// Replace the info (address, metadata) of these members; voters and learners stay.
    SetInfo { nodes: BTreeMap<NodeId, NodeInfo> },
    /// Exactly these voters and learners.
    Set {
        voters: BTreeSet<NodeId>,
        learners: BTreeSet<NodeId>,
        force: bool,
    },
}

/// The answer to a change: the configuration in effect once it committed.
pub(crate) type ChangeReply = oneshot::Sender<Result<Arc<Membership>>>;

/// A caller waiting for its change to commit.
struct Waiter {
    /// The change's (first) configuration entry, or for a request that asked for what a
    /// pending change already does, that change's latest entry.
    index: Index,
    /// The term of that entry: another term at `index` means the entry was replaced.
    entry_term: Term,
    /// The term this node led when it accepted the request: the answer needs a leader
    /// of that term to see the change commit (or the outcome is unknown).
    leader_term: Term,
    /// When it was accepted, for `apply_entry_timeout`.
    since: Duration,
    reply: ChangeReply,
}

/// Callers waiting for their membership change to commit.
pub(crate) struct Changes {
    waiting: Vec<Waiter>,
    timeout: Duration,
}

/// What a change resolves to before the core sees it.
enum Plan {
    /// Nothing to do: the configuration already is what was asked.
    Done,
    /// Propose these voters, learners and member info.
    Propose {
        voters: BTreeSet<NodeId>,
        learners: BTreeSet<NodeId>,
        nodes: BTreeMap<NodeId, NodeInfo>,
        check_quorum: bool,
    },
}

impl Changes {
    pub(crate) fn new(timeout: Duration) -> Self {
        Changes {
            waiting: Vec::new(),
            timeout,
        }
    }

    /// Proposes `change` on `core`; the caller is answered now if it was refused or is a
    /// no-op, else once it commits (see [`Changes::settle`]).
    pub(crate) fn start(
        &mut self,
        core: &mut RaftCore,
        change: Change,
        now: Duration,
        reply: ChangeReply,
    ) {
        let outcome = plan(core, change).and_then(|plan| match plan {
            Plan::Done => Ok(None),
            Plan::Propose {
                voters,
                learners,
                nodes,
                check_quorum,
            } => {
                if check_quorum {
                    // The catch-up rule first: a voter that is still catching up is what
                    // `add_voter` waits for, and it is often also the voter not heard
                    // from yet, which the quorum check would report instead.
                    core.check_caught_up(&core.membership().voters, &voters)?;
                    quorum_check(core, &voters)?;
                }
                core.change_membership(voters, learners, nodes).map(Some)
            }
        });
        match outcome {
            Ok(Some((index, term))) => self.waiting.push(Waiter {
                index,
                entry_term: term,
                leader_term: term,
                since: now,
                reply,
            }),
            // Already what was asked, but possibly by a change that has not committed
            // yet (a retry after `Timeout`, a second caller): answer once it has, as for
            // the change itself.
            Ok(None) => match pending_change(core) {
                Some((index, entry_term)) => self.waiting.push(Waiter {
                    index,
                    entry_term,
                    leader_term: core.term(),
                    since: now,
                    reply,
                }),
                None => {
                    let _ = reply.send(Ok(Arc::new(core.membership().clone())));
                }
            },
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        }
    }

    /// Answers every waiter whose change committed (with its final configuration),
    /// lost its entry or its leader (`LeadershipLost`: the outcome is unknown), or waited
    /// longer than `apply_entry_timeout`.
    pub(crate) fn settle(&mut self, core: &RaftCore, now: Duration) {
        if self.waiting.is_empty() {
            return;
        }
        let effective = core.membership_index();
        let done = core.commit_index() >= effective && !core.membership().is_joint();
        let timeout = self.timeout;
        for w in std::mem::take(&mut self.waiting) {
            // Whether the waiter's entry is gone: truncated, or replaced by another
            // leader's. Checked before `done`: a committed configuration at a later index
            // says nothing about this change once its entry was replaced in the same
            // batch of messages (a step-down, the truncation and the new leader's commit
            // all before this runs). An entry compacted away was committed.
            let lost = w.index > core.last_index()
                || core.term_at(w.index).is_some_and(|t| t != w.entry_term);
            let outcome = if lost {
                Some(Err(Error::LeadershipLost))
            } else if done && effective >= w.index {
                Some(Ok(Arc::new(core.membership().clone())))
            } else if core.term() != w.leader_term || core.role() != Role::Leader {
                Some(Err(Error::LeadershipLost))
            } else if now.saturating_sub(w.since) >= timeout {
                Some(Err(Error::Timeout))
            } else {
                None
            };
            match outcome {
                Some(result) => {
                    let _ = w.reply.send(result);
                }
                None if w.reply.is_closed() => {}
                None => self.waiting.push(w),
            }
        }
    }

    /// Fails every waiter (at shutdown).
    pub(crate) fn fail_all(&mut self) {
        for w in self.waiting.drain(..) {
            let _ = w.reply.send(Err(Error::ShuttingDown));
        }
    }
}

/// The configuration `change` asks for, from the one in effect.
fn plan(core: &RaftCore, change: Change) -> Result<Plan> {
    if core.role() != Role::Leader {
        return Err(Error::NotLeader {
            leader: core.leader().cloned(),
        });
    }
    let current = core.membership();
    let mut voters = current.voters.clone();
    let mut learners = current.learners.clone();
    let mut nodes = BTreeMap::new();
    let check_quorum = match change {
        Change::AddLearner { id, info } => {
            if current.retired.contains(&id) {
                return Err(MembershipError::Retired { id }.into());
            }
            if current.is_voter(&id) {
                return Err(MembershipError::AlreadyVoter { id }.into());
            }
            if current.learners.contains(&id) && current.nodes.get(&id) == Some(&info) {
                return Ok(Plan::Done);
            }
            learners.insert(id.clone());
            nodes.insert(id, info);
            false
        }
        Change::Promote { id, force } => {
            if current.voters.contains(&id) && !current.is_joint() {
                return Ok(Plan::Done);
            }
            if !current.contains(&id) {
                return Err(MembershipError::UnknownNode { id }.into());
            }
            learners.remove(&id);
            voters.insert(id);
            !force
        }
        Change::Remove { id, force } => {
            if current.retired.contains(&id) && !current.contains(&id) {
                return Ok(Plan::Done);
            }
            if !current.contains(&id) {
                return Err(MembershipError::UnknownNode { id }.into());
            }
            let was_voter = voters.remove(&id);
            learners.remove(&id);
            was_voter && !force
        }
        Change::SetInfo { nodes: info } => {
            if let Some(id) = info.keys().find(|id| !current.contains(id)) {
                return Err(MembershipError::UnknownNode { id: id.clone() }.into());
            }
            if info.iter().all(|(id, i)| current.nodes.get(id) == Some(i)) {
                return Ok(Plan::Done);
            }
            nodes = info;
            false
        }
        Change::Set {
            voters: v,
            learners: l,
            force,
        } => {
            if v == voters && l == learners && !current.is_joint() {
                return Ok(Plan::Done);
            }
            let changes_voters = v != voters;
            voters = v;
            learners = l;
            changes_voters && !force
        }
    };
    Ok(Plan::Propose {
        voters,
        learners,
        nodes,
        check_quorum,
    })
}

/// The configuration entry a change still waits on, with its term: the one in effect
/// while it is not committed, or while it is joint (the leader appends the final one
/// once it commits).
fn pending_change(core: &RaftCore) -> Option<(Index, Term)> {
    let index = core.membership_index();
    let pending = index > core.commit_index() || core.membership().is_joint();
    if !pending {
        return None;
    }
    core.term_at(index).map(|term| (index, term))
}

/// Refuses a change of voters that would leave the new configuration, or the current one
/// (the joint phase needs both), without a quorum of voters the leader heard from within
/// an election timeout: such a change could not commit, and the cluster would stall in
/// the joint configuration.
fn quorum_check(core: &RaftCore, next_voters: &BTreeSet<NodeId>) -> Result<()> {
    let status = core.status();
    let options = &core.config().options;
    let window = options
        .nominal_tick_interval
        .saturating_mul(options.election_tick_count);
    let reachable = |id: &NodeId| {
        *id == status.id
            || status
                .replication
                .get(id)
                .and_then(|p| p.last_active_ago)
                .is_some_and(|ago| ago <= window)
    };
    for voters in [&core.membership().voters, next_voters] {
        let up = voters.iter().filter(|id| reachable(id)).count();
        let needed = voters.len() / 2 + 1;
        if up < needed {
            return Err(MembershipError::WouldLoseQuorum {
                voters: voters.len(),
                reachable: up,
                needed,
            }
            .into());
        }
    }
    Ok(())
}

/// The voter to hand leadership to when the caller names none: the one with the longest
/// log among those heard from recently (it can be caught up soonest).
pub(crate) fn pick_transfer_target(core: &RaftCore) -> Result<NodeId> {
    if core.role() != Role::Leader {
        return Err(Error::NotLeader {
            leader: core.leader().cloned(),
        });
    }
    let status = core.status();
    core.membership()
        .voters
        .iter()
        .filter(|id| **id != status.id)
        .filter_map(|id| {
            let p = status.replication.get(id)?;
            Some((
                p.is_active || p.last_active_ago.is_some(),
                p.match_index,
                id,
            ))
        })
        .max()
        .map(|(_, _, id)| id.clone())
        .ok_or_else(|| {
            MembershipError::BadTransferTarget {
                id: status.id.clone(),
                reason: "no other voter to hand leadership to",
            }
            .into()
        })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use tokio::sync::oneshot::error::TryRecvError;

    use super::*;
    use crate::core::tests::harness::{id, Cluster};
    use crate::message::{AppendEntries, Message, MessageBody};
    use crate::types::InitialState;

    /// Three cores whose leader keeps leading alone when cut off (no CheckQuorum), so a
    /// change it accepted stays pending for as long as the test wants.
    fn cluster() -> Cluster {
        Cluster::with(
            3,
            11,
            |c| {
                c.feature_flags.check_quorum = false;
                c.feature_flags.enable_leader_lease = false;
            },
            |_| InitialState::default(),
        )
    }

    fn add_learner(j: usize) -> Change {
        Change::AddLearner {
            id: id(j),
            info: NodeInfo::from(format!("127.0.0.1:{}", 9000 + j)),
        }
    }

    fn ids(list: &[usize]) -> BTreeSet<NodeId> {
        list.iter().map(|&i| id(i)).collect()
    }

    /// Starts `change` on node `i` as the event loop does, and drains its Ready.
    fn start(
        c: &mut Cluster,
        changes: &mut Changes,
        i: usize,
        change: Change,
    ) -> oneshot::Receiver<Result<Arc<Membership>>> {
        let (tx, rx) = oneshot::channel();
        changes.start(&mut c.node_mut(i).core, change, Duration::ZERO, tx);
        c.process(&id(i));
        changes.settle(c.node(i), Duration::ZERO);
        rx
    }

    #[test]
    fn a_change_whose_entry_another_leader_replaced_fails_though_a_later_one_committed() {
        let mut c = cluster();
        c.elect(1);
        c.isolate(1);
        let mut changes = Changes::new(Duration::from_secs(5));
        let mut rx = start(&mut c, &mut changes, 1, add_learner(9));
        let index = c.node(1).membership_index();
        assert!(matches!(rx.try_recv(), Err(TryRecvError::Empty)), "pending");

        // Nodes 2 and 3 elect a leader, which commits a change of its own over that index.
        let l = c.await_leader(&[2, 3]);
        let mut nodes = BTreeMap::new();
        nodes.insert(id(8), NodeInfo::from("127.0.0.1:9008"));
        let (theirs, _) = c
            .node_mut(l)
            .core
            .change_membership(ids(&[1, 2, 3]), ids(&[8]), nodes)
            .unwrap();
        c.process(&id(l));
        c.deliver_all();
        assert!(theirs > index && c.node(l).commit_index() >= theirs);
        changes.settle(c.node(1), Duration::ZERO);
        assert!(
            matches!(rx.try_recv(), Err(TryRecvError::Empty)),
            "node 1 still leads"
        );

        // One message of the new leader (it may send any suffix it holds) brings node 1
        // its term, the entries that replace the change's, and their commit, all before
        // the event loop settles its waiters.
        let leader = c.node(l);
        let prev = index - 1;
        let entries = (index..=leader.last_index())
            .map(|i| leader.entry(i).unwrap().clone())
            .collect();
        let m = Message {
            from: id(l),
            to: id(1),
            term: leader.term(),
            body: MessageBody::AppendEntries(AppendEntries {
                prev_log_index: prev,
                prev_log_term: leader.term_at(prev).unwrap(),
                entries,
                leader_commit: leader.commit_index(),
            }),
        };
        c.heal();
        c.node_mut(1).core.step(m);
        c.process(&id(1));
        let node = c.node(1);
        assert_eq!(node.role(), Role::Follower);
        assert_eq!(node.membership_index(), theirs);
        assert!(
            node.commit_index() >= theirs,
            "the later configuration committed"
        );
        assert!(!node.membership().contains(&id(9)), "the change was lost");
        changes.settle(c.node(1), Duration::ZERO);
        match rx.try_recv() {
            Ok(Err(Error::LeadershipLost)) => {}
            other => panic!("expected LeadershipLost, got {other:?}"),
        }
    }

    #[test]
    fn a_request_a_pending_change_already_makes_is_answered_once_that_commits() {
        let mut c = cluster();
        c.elect(1);
        c.isolate(1);
        let mut changes = Changes::new(Duration::from_secs(5));
        let mut first = start(&mut c, &mut changes, 1, add_learner(9));
        let mut again = start(&mut c, &mut changes, 1, add_learner(9));
        assert!(c.node(1).membership().is_learner(&id(9)));
        assert!(c.node(1).commit_index() < c.node(1).membership_index());
        assert!(matches!(first.try_recv(), Err(TryRecvError::Empty)));
        assert!(
            matches!(again.try_recv(), Err(TryRecvError::Empty)),
            "not answered before the change it relies on commits"
        );
        c.heal();
        for _ in 0..50 {
            if c.node(1).commit_index() >= c.node(1).membership_index() {
                break;
            }
            c.tick(1);
            c.deliver_all();
        }
        changes.settle(c.node(1), Duration::ZERO);
        for rx in [&mut first, &mut again] {
            let m = rx.try_recv().unwrap().unwrap();
            assert!(m.is_learner(&id(9)), "{m}");
        }
    }

    #[test]
    fn a_new_voter_still_catching_up_is_reported_so_before_the_quorum_check() {
        // One voter growing to two: the joining node, cut off, has never answered. The
        // promotion could not commit without it, but what the caller waits for is its
        // catch-up (`add_voter` retries `NotCaughtUp` only).
        let mut c = Cluster::new(1, 5);
        c.join(2, 6, |_| {});
        c.elect(1);
        c.partition(1, 2);
        let mut changes = Changes::new(Duration::from_secs(5));
        let mut added = start(&mut c, &mut changes, 1, add_learner(2));
        assert!(added.try_recv().unwrap().unwrap().is_learner(&id(2)));
        let mut promoted = start(
            &mut c,
            &mut changes,
            1,
            Change::Promote {
                id: id(2),
                force: false,
            },
        );
        match promoted.try_recv() {
            Ok(Err(Error::Membership(MembershipError::NotCaughtUp { id: who, .. }))) => {
                assert_eq!(who, id(2))
            }
            other => panic!("expected NotCaughtUp, got {other:?}"),
        }
    }
}
