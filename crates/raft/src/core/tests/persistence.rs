//! The persistence contract: messages whose truth depends on state not yet durable (a
//! granted vote, a candidate's vote requests, an AppendEntries acknowledgement) leave only
//! once the write they depend on is reported durable; the leader counts its own log only
//! up to its durable index; nothing is applied before it is durable.

use super::harness::*;
use crate::core::InitialState;
use crate::message::MessageBody;
use crate::types::{HardState, Role};

fn no_pre_vote(c: &mut crate::config::Config) {
    c.feature_flags.pre_vote_enabled = false;
}

#[test]
fn vote_is_not_granted_before_it_is_durable() {
    let mut c = Cluster::with(3, 21, no_pre_vote, |_| InitialState::default());
    c.node_mut(2).hold_writes = true;
    c.expire_election_timeout(1);
    let requests = c.take(|m| m.kind() == "RequestVote");
    assert_eq!(requests.len(), 2);
    let to_n2 = requests.into_iter().find(|m| m.to == id(2)).unwrap();
    c.deliver(to_n2);
    assert_eq!(c.node(2).term(), 1, "the term is adopted in memory");
    assert!(
        !c.queued(2, 1, "RequestVoteResponse"),
        "a vote must not leave before it is durable"
    );
    assert_eq!(c.node_mut(2).stored_hard_state, HardState::default());
    c.deliver_all();
    assert_eq!(
        c.node(1).role(),
        Role::Candidate,
        "n1 cannot count a vote it never got"
    );

    c.persist(2);
    assert_eq!(
        c.node_mut(2).stored_hard_state,
        HardState {
            term: 1,
            voted_for: Some(id(1))
        }
    );
    let answers = c.take(|m| m.kind() == "RequestVoteResponse");
    assert_eq!(answers.len(), 1);
    assert_eq!(
        answers[0].body,
        MessageBody::RequestVoteResponse(crate::message::RequestVoteResponse {
            pre_vote: false,
            granted: true
        })
    );
    c.deliver(answers.into_iter().next().unwrap());
    assert_eq!(c.node(1).role(), Role::Leader);
}

/// PreVote is off so the candidate's RequestVote messages are visible directly.
#[test]
fn candidate_sends_vote_requests_only_after_its_term_and_vote_are_durable() {
    let mut c = Cluster::with(3, 22, no_pre_vote, |_| InitialState::default());
    c.node_mut(1).hold_writes = true;
    c.expire_election_timeout(1);
    assert_eq!(c.node(1).role(), Role::Candidate);
    assert_eq!(c.node(1).term(), 1);
    assert_eq!(
        c.count_sent("RequestVote"),
        0,
        "vote requests wait for the term and self-vote"
    );
    assert_eq!(c.node_mut(1).stored_hard_state, HardState::default());

    c.persist(1);
    assert_eq!(
        c.node_mut(1).stored_hard_state,
        HardState {
            term: 1,
            voted_for: Some(id(1))
        }
    );
    assert_eq!(c.count_sent("RequestVote"), 2);
    c.deliver_all();
    assert_eq!(c.node(1).role(), Role::Leader);
}

#[test]
fn append_ack_is_not_sent_before_entries_are_durable() {
    let mut c = Cluster::new(3, 23);
    c.elect(1);
    c.deliver_all();
    c.node_mut(2).hold_writes = true;
    let acks_before = c.append_responses_from(2).len();
    let (index, _) = c.propose(1, "x");
    c.deliver_all();
    assert_eq!(
        c.node(2).last_index(),
        index,
        "the entry reached n2's in-memory log"
    );
    assert!(c.node(2).durable_index() < index);
    assert!(c.node_mut(2).stored_log.iter().all(|e| e.index < index));
    assert_eq!(
        c.append_responses_from(2).len(),
        acks_before,
        "no acknowledgement before the entry is durable"
    );
    assert!(c.progress(1, 2).match_index < index);

    // A duplicate of the request arriving while the write is still pending is not
    // acknowledged early either.
    let dup = c
        .sent
        .iter()
        .rev()
        .find(|m| {
            m.to == id(2)
                && matches!(&m.body, MessageBody::AppendEntries(a) if a.entries.iter().any(|e| e.index == index))
        })
        .cloned()
        .expect("the entry was sent to n2");
    c.deliver(dup);
    assert_eq!(c.append_responses_from(2).len(), acks_before);

    c.persist(2);
    let acks = c.append_responses_from(2);
    assert!(acks.len() > acks_before);
    assert!(acks[acks_before..]
        .iter()
        .all(|r| r.success && r.index <= index));
    assert!(acks[acks_before..].iter().any(|r| r.index == index));
    c.deliver_all();
    assert_eq!(c.progress(1, 2).match_index, index);
}

/// With n3 cut off, the leader's own copy is needed for a majority: the entry is
/// acknowledged by n2, but commits only once the leader's write is durable.
#[test]
fn leader_counts_itself_only_up_to_durable_index() {
    let mut c = Cluster::new(3, 24);
    c.elect(1);
    c.deliver_all();
    c.isolate(3);
    c.node_mut(1).hold_writes = true;
    let (index, _) = c.propose(1, "x");
    c.deliver_all();
    assert_eq!(
        c.progress(1, 2).match_index,
        index,
        "the leader replicates before its own write is durable"
    );
    assert!(c.node(1).durable_index() < index);
    assert!(
        c.node(1).commit_index() < index,
        "n2 alone is not a majority"
    );
    assert!(c.applied(1).is_empty());

    c.persist(1);
    assert_eq!(c.node(1).commit_index(), index);
    assert_eq!(c.applied(1), vec!["x"]);
    c.heartbeat_round(1);
    assert_eq!(c.node(2).commit_index(), index);
    assert_eq!(c.applied(2), vec!["x"]);
}

/// Same setting: when the leader's own write is the last one the majority needed, the
/// commit index it reaches in `on_persisted` is sent to the followers at once, not one
/// heartbeat later.
#[test]
fn commit_reached_on_leader_persist_is_sent_to_followers_at_once() {
    let mut c = Cluster::new(3, 24);
    c.elect(1);
    c.deliver_all();
    c.isolate(3);
    c.node_mut(1).hold_writes = true;
    let (index, _) = c.propose(1, "x");
    c.deliver_all();
    assert!(c.node(1).commit_index() < index);
    c.persist(1);
    assert_eq!(c.node(1).commit_index(), index);
    c.deliver_all();
    assert_eq!(
        c.node(2).commit_index(),
        index,
        "n2 learns the commit without a heartbeat"
    );
    assert_eq!(c.applied(2), vec!["x"]);
}

#[test]
fn single_node_cluster_commits_only_after_persist() {
    let mut c = Cluster::new(1, 25);
    c.node_mut(1).hold_writes = true;
    c.expire_election_timeout(1);
    assert_eq!(c.node(1).role(), Role::Leader, "a single node wins at once");
    assert_eq!(c.node(1).commit_index(), 0, "its no-op is not durable yet");
    let (index, _) = c.propose(1, "x");
    assert_eq!(index, 2);
    assert_eq!(c.node(1).commit_index(), 0);
    assert!(c.applied(1).is_empty());

    c.persist(1);
    assert_eq!(c.node(1).commit_index(), 2);
    assert_eq!(c.applied(1), vec!["x"]);
    assert_eq!(c.node_mut(1).stored_log.len(), 2);
}

/// A follower whose writes are slow learns a commit index beyond its durable index; the
/// committed entries are handed out for application only once they are durable there.
#[test]
fn follower_applies_only_durable_committed_entries() {
    let mut c = Cluster::new(3, 26);
    c.elect(1);
    c.deliver_all();
    c.node_mut(2).hold_writes = true;
    c.propose(1, "a");
    let (index, _) = c.propose(1, "b");
    c.deliver_all();
    assert_eq!(c.node(1).commit_index(), index, "committed through n3");
    // Precondition: the commit index reached n2 (on the empty AppendEntries that spreads it).
    assert_eq!(c.node(2).commit_index(), index);
    assert!(c.node(2).durable_index() < index);
    assert!(
        c.applied(2).is_empty(),
        "nothing applied before it is durable"
    );
    assert!(c.node(2).applied_index() < index);

    c.persist(2);
    assert_eq!(c.applied(2), vec!["a", "b"]);
    assert_eq!(c.node(2).applied_index(), index);
}
