//! Membership changes, scenario by scenario (thesis ch. 4): joint consensus with automatic
//! leave, learners, removed servers, the refusals that keep one change at a time, and how
//! the configuration follows the log through truncation, restart and snapshots.

use std::collections::{BTreeMap, BTreeSet};

use super::harness::*;
use crate::config::Config;
use crate::error::Error;
use crate::membership::{Membership, MembershipError};
use crate::message::{MessageBody, RequestVote};
use crate::types::{Index, InitialState, Role, Term};

fn set(ids: &[usize]) -> BTreeSet<crate::types::NodeId> {
    ids.iter().map(|i| id(*i)).collect()
}

fn config_of(voters: &[usize], learners: &[usize]) -> Membership {
    Membership::new(set(voters), set(learners))
}

/// Asks leader `leader` for voters and learners; processes its Ready.
fn change(
    c: &mut Cluster,
    leader: usize,
    voters: &[usize],
    learners: &[usize],
) -> crate::error::Result<(Index, Term)> {
    let r = c
        .node_mut(leader)
        .core
        .change_membership(set(voters), set(learners), BTreeMap::new());
    c.process(&id(leader));
    r
}

/// The voters and learners of `m`, without member info (the bootstrap one carries
/// addresses) or retired ids.
fn shape(m: &Membership) -> Membership {
    Membership {
        nodes: BTreeMap::new(),
        retired: BTreeSet::new(),
        ..m.clone()
    }
}

fn committed(c: &Cluster, i: usize) -> Membership {
    shape(c.node(i).committed_membership())
}

fn effective(c: &Cluster, i: usize) -> Membership {
    shape(c.node(i).membership())
}

/// Adds joining node `j` as a learner through leader `leader` and lets it catch up.
fn add_learner(c: &mut Cluster, leader: usize, voters: &[usize], learners: &[usize]) {
    for &j in learners {
        if !c.nodes.contains_key(&id(j)) {
            c.join(j, 100 + j as u64, |_| {});
        }
    }
    change(c, leader, voters, learners).expect("learners added");
    c.deliver_all();
    c.heartbeat_round(leader);
}

#[test]
fn removing_a_follower_goes_through_the_joint_configuration_and_leaves_it() {
    let mut c = Cluster::new(3, 1);
    c.elect(1);
    c.propose(1, "a");
    c.deliver_all();
    let (index, _) = change(&mut c, 1, &[1, 2], &[]).expect("change accepted");
    let joint = effective(&c, 1);
    assert!(joint.is_joint(), "the voters change through C_old,new");
    assert_eq!(
        (joint.voters, joint.outgoing),
        (set(&[1, 2]), set(&[1, 2, 3]))
    );
    c.deliver_all();
    // The joint entry committed and the leader appended C_new on its own, right after.
    assert_eq!(committed(&c, 1), config_of(&[1, 2], &[]));
    assert_eq!(c.node(1).membership_index(), index + 1);
    assert_eq!(committed(&c, 2), config_of(&[1, 2], &[]));
    assert_eq!(c.node(1).committed_membership().retired, set(&[3]));
    // Node 3 is out: the other two commit without it.
    c.isolate(3);
    c.propose(1, "b");
    c.deliver_all();
    assert_eq!(c.applied(2), vec!["a", "b"]);
    // Its id is retired: it cannot come back, not even as a learner.
    assert!(matches!(
        change(&mut c, 1, &[1, 2], &[3]),
        Err(crate::Error::Membership(MembershipError::Retired { .. }))
    ));
    // It never learns C_new (the leader stopped replicating to it when it appended
    // C_new), so it still counts itself a voter and campaigns, but cannot disrupt: the
    // others hear from their leader and refuse its pre-votes (thesis §4.2.3).
    c.heal();
    let term = c.node(1).term();
    for _ in 0..100 {
        c.tick_all();
        c.deliver_all();
    }
    assert_eq!(c.node(1).role(), Role::Leader);
    assert_eq!(c.node(1).term(), term);
    assert_eq!(c.node(2).term(), term);
}

#[test]
fn a_removed_leader_leads_until_c_new_commits_then_steps_down() {
    let mut c = Cluster::new(3, 2);
    c.elect(1);
    c.deliver_all();
    change(&mut c, 1, &[2, 3], &[]).expect("change accepted");
    // Deliver everything but the answers to the C_new entry: the joint configuration
    // commits, C_new is appended, and the leader still leads without counting itself.
    let c_new_index = c.node(1).last_index() + 1;
    let held = c.deliver_all_except(
        |m| matches!(&m.body, MessageBody::AppendEntriesResponse(r) if r.index >= c_new_index),
    );
    assert_eq!(c.node(1).role(), Role::Leader);
    assert_eq!(effective(&c, 1), config_of(&[2, 3], &[]));
    assert!(c.node(1).commit_index() < c_new_index);
    assert!(!held.is_empty());
    for m in held {
        c.deliver(m);
    }
    c.deliver_all();
    assert_eq!(
        c.node(1).role(),
        Role::Follower,
        "stepped down once C_new committed"
    );
    let campaigns = c.nodes[&id(1)].elections.len();
    assert_eq!(committed(&c, 2), config_of(&[2, 3], &[]));
    // The remaining voters elect a leader (once their guard lapses) and go on.
    let l = c.await_leader(&[2, 3]);
    c.propose(l, "after");
    c.deliver_all();
    assert_eq!(c.applied(3), vec!["after"]);
    assert_eq!(
        c.nodes[&id(1)].elections.len(),
        campaigns,
        "node 1 never campaigned again"
    );
}

#[test]
fn two_of_three_voters_are_replaced() {
    let mut c = Cluster::new(3, 3);
    c.elect(1);
    c.propose(1, "a");
    c.deliver_all();
    add_learner(&mut c, 1, &[1, 2, 3], &[4, 5]);
    assert_eq!(c.applied(4), vec!["a"], "the learners caught up");
    change(&mut c, 1, &[1, 4, 5], &[]).expect("promotion of caught-up learners");
    c.deliver_all();
    assert_eq!(committed(&c, 1), config_of(&[1, 4, 5], &[]));
    // The old voters are gone: the new ones commit alone.
    c.isolate(2);
    c.isolate(3);
    c.propose(1, "b");
    c.deliver_all();
    assert_eq!(c.applied(5), vec!["a", "b"]);
}

#[test]
fn a_node_added_while_partitioned_is_promoted_only_once_caught_up() {
    let mut c = Cluster::new(3, 4);
    c.elect(1);
    for i in 0..5 {
        c.propose(1, &format!("e{i}"));
    }
    c.deliver_all();
    c.join(4, 44, |_| {});
    c.isolate(4);
    // Adding a learner needs only the voters.
    change(&mut c, 1, &[1, 2, 3], &[4]).expect("learner added");
    c.deliver_all();
    assert_eq!(committed(&c, 1), config_of(&[1, 2, 3], &[4]));
    let err = change(&mut c, 1, &[1, 2, 3, 4], &[]).unwrap_err();
    assert!(
        matches!(err, Error::Membership(MembershipError::NotCaughtUp { .. })),
        "{err}"
    );
    c.heal();
    c.heartbeat_round(1);
    c.deliver_all();
    assert_eq!(c.applied(4).len(), 5);
    change(&mut c, 1, &[1, 2, 3, 4], &[]).expect("caught up now");
    c.deliver_all();
    assert_eq!(committed(&c, 4), config_of(&[1, 2, 3, 4], &[]));
}

#[test]
fn the_leader_demoted_during_the_joint_phase_hands_over_without_a_stall() {
    let mut c = Cluster::new(3, 5);
    c.elect(1);
    add_learner(&mut c, 1, &[1, 2, 3], &[4]);
    // Node 1 becomes a learner: an outgoing voter and incoming learner while joint.
    change(&mut c, 1, &[2, 3, 4], &[1]).expect("change accepted");
    let joint = effective(&c, 1);
    assert!(joint.is_joint() && joint.outgoing.contains(&id(1)) && joint.learners.contains(&id(1)));
    c.deliver_all();
    // The leader left the joint configuration by itself, saw C_new commit and stepped down.
    assert_eq!(committed(&c, 2), config_of(&[2, 3, 4], &[1]));
    assert_eq!(c.node(1).role(), Role::Follower);
    // A new leader comes from the new voters within an election timeout or two, and the
    // demoted node keeps receiving the log as a learner.
    let l = c.await_leader(&[2, 3, 4]);
    assert_eq!(c.leaders(), vec![id(l)]);
    c.propose(l, "x");
    c.deliver_all();
    assert_eq!(c.applied(1), vec!["x"], "the learner still applies");
}

#[test]
fn a_removed_node_with_a_higher_term_does_not_disrupt() {
    let mut c = Cluster::with(
        3,
        6,
        |cfg: &mut Config| cfg.feature_flags.pre_vote_enabled = false,
        |_| InitialState::default(),
    );
    c.elect(1);
    change(&mut c, 1, &[1, 2], &[]).expect("change accepted");
    c.deliver_all();
    let term = c.node(1).term();
    // Node 3 no longer hears from the leader and asks for votes in a much higher term.
    for to in [1, 2] {
        let body = MessageBody::RequestVote(RequestVote {
            pre_vote: false,
            last_log_index: 100,
            last_log_term: term + 5,
            transfer: false,
        });
        c.deliver(msg(3, to, term + 5, body));
    }
    c.deliver_all();
    assert_eq!(c.node(1).role(), Role::Leader);
    assert_eq!(c.node(1).term(), term);
    assert_eq!(c.node(2).term(), term);
}

#[test]
fn a_change_before_the_leaders_first_commit_is_refused() {
    let mut c = Cluster::new(3, 7);
    // Votes are delivered, every AppendEntries held: the no-op does not commit.
    c.elect_without_commit(1);
    let err = change(&mut c, 1, &[1, 2], &[]).unwrap_err();
    assert!(
        matches!(err, Error::Membership(MembershipError::TermNotCommitted)),
        "{err}"
    );
    c.deliver_all();
    change(&mut c, 1, &[1, 2], &[]).expect("accepted once the no-op committed");
}

#[test]
fn a_second_change_is_refused_while_one_is_pending() {
    let mut c = Cluster::new(3, 8);
    c.elect(1);
    c.join(4, 48, |_| {});
    let (index, _) = change(&mut c, 1, &[1, 2, 3], &[4]).expect("first change");
    let err = change(&mut c, 1, &[1, 2], &[]).unwrap_err();
    assert!(
        matches!(err, Error::Membership(MembershipError::ChangePending { index: i }) if i == index),
        "{err}"
    );
    c.deliver_all();
    // Committed: the next change is accepted, and while it is joint, still one at a time.
    change(&mut c, 1, &[1, 2], &[4]).expect("second change");
    let err = change(&mut c, 1, &[1, 2, 3], &[]).unwrap_err();
    assert!(matches!(
        err,
        Error::Membership(MembershipError::ChangePending { .. })
    ));
    c.deliver_all();
    assert_eq!(committed(&c, 1), config_of(&[1, 2], &[4]));
    // A configuration without voters is refused outright.
    let err = change(&mut c, 1, &[], &[4]).unwrap_err();
    assert!(matches!(err, Error::Membership(MembershipError::NoVoters)));
}

#[test]
fn truncating_a_configuration_entry_reverts_to_the_previous_configuration() {
    let mut c = Cluster::new(3, 9);
    c.elect(1);
    c.deliver_all();
    let original = effective(&c, 1);
    // The leader appends a change nobody receives.
    c.isolate(1);
    change(&mut c, 1, &[1, 2], &[]).expect("change accepted");
    c.deliver_all();
    assert!(effective(&c, 1).is_joint(), "in effect as soon as appended");
    // The others elect a leader, which writes over that index.
    let l = c.await_leader(&[2, 3]);
    c.propose(l, "x");
    c.deliver_all();
    c.heal();
    c.heartbeat_round(l);
    c.deliver_all();
    assert_eq!(c.node(1).role(), Role::Follower);
    assert_eq!(effective(&c, 1), original, "the truncated change is undone");
    assert_eq!(c.applied(1), vec!["x"]);
}

#[test]
fn a_restart_rebuilds_the_membership_from_the_log() {
    let mut c = Cluster::new(3, 10);
    c.elect(1);
    add_learner(&mut c, 1, &[1, 2, 3], &[4]);
    change(&mut c, 1, &[1, 2, 4], &[3]).expect("change accepted");
    c.deliver_all();
    let before = effective(&c, 2);
    assert_eq!(before, config_of(&[1, 2, 4], &[3]));
    c.restart(2, 77);
    assert_eq!(effective(&c, 2), before);
    c.restart(4, 78);
    assert_eq!(
        effective(&c, 4),
        before,
        "a joined node rebuilds without any peers"
    );
}

#[test]
fn a_snapshot_install_brings_the_membership_with_it() {
    let compact = |cfg: &mut Config| {
        cfg.options.snapshot_threshold = 20;
        cfg.options.log_compaction_min_entries = 5;
    };
    let mut c = Cluster::with(3, 11, compact, |_| InitialState::default());
    c.elect(1);
    add_learner(&mut c, 1, &[1, 2, 3], &[4]);
    change(&mut c, 1, &[1, 2, 4], &[3]).expect("change accepted");
    c.deliver_all();
    for i in 0..40 {
        c.propose(1, &format!("e{i}"));
        c.deliver_all();
    }
    assert!(c.node(1).snapshot_index() > 10, "the leader compacted");
    let meta = c.nodes[&id(1)]
        .stored_snapshot
        .as_ref()
        .expect("snapshot")
        .meta
        .clone();
    assert_eq!(
        meta.membership.as_deref().map(shape),
        Some(config_of(&[1, 2, 4], &[3]))
    );
    // A new learner joins with nothing: it can only get there by snapshot.
    c.join(5, 55, compact);
    change(&mut c, 1, &[1, 2, 4], &[3, 5]).expect("learner added");
    c.deliver_all();
    c.heartbeat_round(1);
    c.deliver_all();
    assert!(c.node(5).snapshot_index() > 0, "caught up by snapshot");
    assert_eq!(effective(&c, 5), config_of(&[1, 2, 4], &[3, 5]));
    c.restart(5, 56);
    assert_eq!(effective(&c, 5), config_of(&[1, 2, 4], &[3, 5]));
}

#[test]
fn one_voter_grows_to_two_and_shrinks_back() {
    let mut c = Cluster::new(1, 12);
    c.elect(1);
    c.propose(1, "a");
    c.deliver_all();
    add_learner(&mut c, 1, &[1], &[2]);
    change(&mut c, 1, &[1, 2], &[]).expect("promotion");
    c.deliver_all();
    assert_eq!(committed(&c, 2), config_of(&[1, 2], &[]));
    // Two voters: nothing commits without node 2.
    c.isolate(2);
    let (i, _) = c.propose(1, "b");
    c.deliver_all();
    assert!(c.node(1).commit_index() < i);
    c.heal();
    c.heartbeat_round(1);
    c.deliver_all();
    assert!(c.node(1).commit_index() >= i);
    change(&mut c, 1, &[1], &[]).expect("removal");
    c.deliver_all();
    assert_eq!(committed(&c, 1), config_of(&[1], &[]));
    c.isolate(2);
    let (i, _) = c.propose(1, "c");
    c.deliver_all();
    assert!(
        c.node(1).commit_index() >= i,
        "one voter commits alone again"
    );
}

#[test]
fn learners_never_count_toward_commit() {
    let mut c = Cluster::new(3, 13);
    c.elect(1);
    add_learner(&mut c, 1, &[1, 2, 3], &[4, 5]);
    // With both followers cut off, two learners acknowledging is not a quorum.
    c.partition(1, 2);
    c.partition(1, 3);
    let (i, _) = c.propose(1, "x");
    c.deliver_all();
    assert!(c.node(4).last_index() >= i, "the learner has the entry");
    assert!(c.node(1).commit_index() < i, "but it does not count");
    // And a learner never campaigns.
    c.tick_n(4, 100);
    assert_eq!(c.node(4).role(), Role::Follower);
    assert!(c.nodes[&id(4)].elections.is_empty());
}
