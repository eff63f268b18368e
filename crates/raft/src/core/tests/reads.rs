//! §6 linearizable reads: ReadIndex, follower reads, the leader lease, and the failures
//! that must be reported instead of a stale answer.

use super::harness::*;
use crate::config::{Config, FeatureFlags};
use crate::core::{InitialState, RaftCore, ReadFailure, ReadState};
use crate::message::{MessageBody, RequestVote, RequestVoteResponse};
use crate::rand::SeededRand;
use crate::types::{HardState, Role};

fn no_lease(c: &mut Config) {
    c.feature_flags.enable_leader_lease = false;
}

fn reads(c: &Cluster, i: usize) -> Vec<ReadState> {
    c.nodes[&id(i)].read_states.clone()
}

fn failures(c: &Cluster, i: usize) -> Vec<(u64, ReadFailure)> {
    c.nodes[&id(i)].failed_reads.clone()
}

#[test]
fn new_leader_serves_reads_only_after_committing_its_noop() {
    let mut c = Cluster::with(3, 1, no_lease, |_| InitialState::default());
    // Votes are delivered, every AppendEntries held: the no-op does not commit.
    c.elect_without_commit(1);
    c.read(1, 7);
    let held = c.deliver_all_except(|m| m.kind() == "AppendEntries");
    assert!(reads(&c, 1).is_empty(), "no read before the no-op commits");
    for m in held {
        c.deliver(m);
    }
    c.deliver_all();
    let noop = c.node(1).commit_index();
    assert_eq!(c.node(1).term_at(noop), Some(c.node(1).term()));
    assert_eq!(
        reads(&c, 1),
        vec![ReadState {
            ctx: 7,
            index: noop
        }]
    );
}

#[test]
fn read_index_is_released_only_after_a_majority_confirms_leadership() {
    let mut c = Cluster::with(3, 2, no_lease, |_| InitialState::default());
    c.elect(1);
    c.propose(1, "a");
    c.deliver_all();
    let commit = c.node(1).commit_index();
    c.queue.clear();
    c.read(1, 1);
    let beats = c.take(|m| m.kind() == "Heartbeat");
    assert_eq!(beats.len(), 2, "the read started a round");
    assert!(reads(&c, 1).is_empty(), "not before a majority answered");
    c.deliver(beats[0].clone());
    assert!(
        reads(&c, 1).is_empty(),
        "the follower's answer has not arrived yet"
    );
    let answers = c.take(|m| m.kind() == "HeartbeatResponse");
    assert_eq!(answers.len(), 1);
    c.deliver(answers[0].clone());
    assert_eq!(
        reads(&c, 1),
        vec![ReadState {
            ctx: 1,
            index: commit
        }],
        "one answer + the leader = majority"
    );
}

#[test]
fn concurrent_reads_share_one_round() {
    let mut c = Cluster::with(5, 3, no_lease, |_| InitialState::default());
    c.elect(1);
    c.deliver_all();
    let before = c.count_sent("Heartbeat");
    for ctx in 0..10 {
        c.node_mut(1).core.read_index(ctx).expect("leader");
    }
    c.process(&id(1));
    assert_eq!(
        c.count_sent("Heartbeat") - before,
        4,
        "one round to the 4 followers for 10 reads"
    );
    c.deliver_all();
    assert_eq!(reads(&c, 1).len(), 10);
}

/// A 3-node cluster whose leader (node 1) has sent the round of read 1; returns the
/// round's heartbeats, taken out of the queue.
fn read_round_in_flight(seed: u64) -> (Cluster, Vec<crate::message::Message>) {
    let mut c = Cluster::with(3, seed, no_lease, |_| InitialState::default());
    c.elect(1);
    c.deliver_all();
    c.queue.clear();
    c.read(1, 1);
    let round = c.take(|m| m.kind() == "Heartbeat");
    assert_eq!(round.len(), 2, "the first read starts a round");
    (c, round)
}

#[test]
fn reads_arriving_while_a_round_is_in_flight_share_the_next_one() {
    let (mut c, first) = read_round_in_flight(4);
    for ctx in 2..6 {
        c.read(1, ctx);
    }
    assert!(
        c.take(|m| m.kind() == "Heartbeat").is_empty(),
        "no second round while the first is in flight"
    );
    for m in first {
        c.deliver(m);
    }
    let answers = c.take(|m| m.kind() == "HeartbeatResponse");
    for m in answers {
        c.deliver(m);
    }
    assert_eq!(
        reads(&c, 1).iter().map(|r| r.ctx).collect::<Vec<_>>(),
        vec![1],
        "the first round confirms only the read that was in it"
    );
    let second = c.take(|m| m.kind() == "Heartbeat");
    assert_eq!(
        second.len(),
        2,
        "its answer starts one round for the four that waited"
    );
    for m in second {
        c.deliver(m);
    }
    c.deliver_all();
    let mut served: Vec<u64> = reads(&c, 1).iter().map(|r| r.ctx).collect();
    served.sort_unstable();
    assert_eq!(served, vec![1, 2, 3, 4, 5]);
}

#[test]
fn reads_behind_a_round_whose_answers_are_lost_go_with_the_next_heartbeat() {
    let (mut c, _lost) = read_round_in_flight(5);
    c.read(1, 2);
    assert!(c.take(|m| m.kind() == "Heartbeat").is_empty());
    // The first round never arrives; the next heartbeat carries both reads.
    c.heartbeat_round(1);
    let mut served: Vec<u64> = reads(&c, 1).iter().map(|r| r.ctx).collect();
    served.sort_unstable();
    assert_eq!(served, vec![1, 2]);
}

#[test]
fn lease_serves_reads_without_a_round_and_expires() {
    let mut c = Cluster::new(3, 4);
    c.elect(1);
    c.tick(1); // a heartbeat round, acknowledged
    c.deliver_all();
    let before = c.count_sent("Heartbeat");
    c.read(1, 1);
    assert_eq!(reads(&c, 1).len(), 1, "served at once under the lease");
    assert_eq!(c.count_sent("Heartbeat"), before, "without a round");
    // Cut the leader off: after the lease runs out a read needs a round that cannot
    // complete, and it fails within an election timeout.
    c.isolate(1);
    let lease = c.node(1).config().options.lease_ticks();
    for _ in 0..=lease {
        c.tick(1);
        c.deliver_all();
    }
    c.read(1, 2);
    assert_eq!(reads(&c, 1).len(), 1, "no stale lease read after expiry");
    for _ in 0..10 {
        c.tick(1);
        c.deliver_all();
    }
    assert_eq!(failures(&c, 1), vec![(2, ReadFailure::QuorumUnreachable)]);
}

#[test]
fn lease_is_not_renewed_by_a_single_followers_acknowledgement() {
    let mut c = Cluster::new(5, 5);
    c.elect(1);
    c.deliver_all();
    // Only n2 keeps answering; the lease runs out and is not renewed.
    for peer in 3..=5 {
        c.partition(1, peer);
    }
    let lease = c.node(1).config().options.lease_ticks();
    for _ in 0..=lease + 1 {
        c.tick(1);
        c.deliver_all();
    }
    assert_eq!(
        c.node(1).role(),
        Role::Leader,
        "still leader (CheckQuorum has not fired yet)"
    );
    c.read(1, 9);
    c.deliver_all();
    assert!(reads(&c, 1).is_empty(), "two of five is not a majority");
}

#[test]
fn isolated_leader_read_fails_with_quorum_unreachable_in_bounded_time() {
    let mut c = Cluster::with(3, 6, no_lease, |_| InitialState::default());
    c.elect(1);
    c.isolate(1);
    c.read(1, 3);
    let mut ticks = 0;
    while failures(&c, 1).is_empty() {
        c.tick(1);
        c.deliver_all();
        ticks += 1;
        assert!(ticks <= 10, "the read hangs");
    }
    assert!(reads(&c, 1).is_empty());
    let f = failures(&c, 1);
    assert!(
        matches!(
            f[0],
            (3, ReadFailure::QuorumUnreachable) | (3, ReadFailure::NotLeader { .. })
        ),
        "{f:?}"
    );
}

#[test]
fn deposed_leader_fails_pending_reads_with_not_leader() {
    let mut c = Cluster::with(3, 7, no_lease, |_| InitialState::default());
    c.elect(1);
    c.isolate(1);
    c.read(1, 4);
    let term = c.node(1).term();
    // A newer term reaches it: it steps down and the read fails at once.
    c.heal();
    c.deliver(msg(
        2,
        1,
        term + 1,
        MessageBody::RequestVoteResponse(RequestVoteResponse {
            pre_vote: false,
            granted: false,
        }),
    ));
    assert_eq!(c.node(1).role(), Role::Follower);
    assert_eq!(
        failures(&c, 1),
        vec![(4, ReadFailure::NotLeader { leader: None })]
    );
    // And a follower that knows no leader refuses at once.
    assert!(c.node_mut(1).core.read_index(5).is_err());
}

#[test]
fn follower_read_asks_the_leader_and_returns_its_index() {
    let mut c = Cluster::with(3, 8, no_lease, |_| InitialState::default());
    c.elect(1);
    c.propose(1, "x");
    c.deliver_all();
    c.read(2, 11);
    c.deliver_all();
    let commit = c.node(1).commit_index();
    assert_eq!(
        reads(&c, 2),
        vec![ReadState {
            ctx: 11,
            index: commit
        }]
    );
    assert!(c.node(2).applied_index() >= commit);
}

#[test]
fn late_answer_to_an_earlier_attempt_cannot_satisfy_a_retry() {
    let mut c = Cluster::with(3, 9, no_lease, |_| InitialState::default());
    c.elect(1);
    c.deliver_all();
    c.read(2, 21);
    let first = c.take(|m| m.kind() == "ReadIndex");
    assert_eq!(first.len(), 1);
    // The attempt times out on the follower.
    for _ in 0..10 {
        c.tick(2);
    }
    c.take(|m| m.kind() == "PreVote" || m.kind() == "RequestVote");
    assert_eq!(failures(&c, 2), vec![(21, ReadFailure::Timeout)]);
    // A write commits, then the client retries with the same ctx.
    c.propose(1, "w");
    c.deliver_all();
    let commit = c.node(1).commit_index();
    c.read(2, 21);
    // The first attempt's answer arrives late: it must not complete the retry.
    for m in first {
        c.deliver(m);
    }
    let late = c.take(|m| m.kind() == "ReadIndexResponse" && m.to == id(2));
    let mut retry_done = false;
    for m in late {
        c.deliver(m);
        retry_done |= !reads(&c, 2).is_empty();
    }
    assert!(
        !retry_done || reads(&c, 2)[0].index >= commit,
        "stale index for the retry"
    );
    c.deliver_all();
    let r = reads(&c, 2);
    assert_eq!(r.len(), 1, "one answer for the retry: {r:?}");
    assert!(r[0].index >= commit, "the retry sees the write: {r:?}");
}

/// The leader answers a read the follower forwarded before it crashed; the answer arrives
/// after the follower restarted and forwarded a new read. Request numbers start afresh in
/// each process, randomly, so the late answer cannot serve the new read at its old index.
/// Found by the simulator (seed 114039, 3 nodes, profile brutal): the numbers restarted
/// from zero and the new read returned a value overwritten long before.
#[test]
fn a_late_answer_for_the_previous_process_cannot_serve_a_read_after_a_restart() {
    let mut c = Cluster::with(3, 41, no_lease, |_| InitialState::default());
    c.elect(1);
    c.deliver_all();
    // n2 forwards a read; the leader answers it, but the answer is held in a queue.
    c.read(2, 31);
    let late = c.deliver_all_except(|m| m.kind() == "ReadIndexResponse" && m.to == id(2));
    assert_eq!(late.len(), 1);
    let MessageBody::ReadIndexResponse(answer) = &late[0].body else {
        unreachable!("taken by kind");
    };
    let stale_index = answer.index;
    // Writes commit meanwhile; n2 crashes, restarts as a new process and reads again.
    for w in ["w1", "w2", "w3"] {
        c.propose(1, w);
        c.deliver_all();
    }
    let commit = c.node(1).commit_index();
    assert!(stale_index.is_some_and(|i| i < commit));
    c.restart(2, 4242);
    c.heartbeat_round(1);
    c.read(2, 31);
    let fresh = c.take(|m| m.kind() == "ReadIndex" && m.from == id(2));
    assert_eq!(fresh.len(), 1);
    // The late answer arrives first: it must not complete the new read.
    for m in late {
        c.deliver(m);
    }
    assert!(
        reads(&c, 2).is_empty(),
        "served from the previous process's answer: {:?}",
        reads(&c, 2)
    );
    for m in fresh {
        c.deliver(m);
    }
    c.deliver_all();
    let r = reads(&c, 2);
    assert_eq!(r.len(), 1, "{r:?}");
    assert!(r[0].index >= commit, "the new read sees the writes: {r:?}");
}

#[test]
fn restarted_node_refuses_votes_for_one_election_timeout() {
    let cfg = config(3, 1);
    let initial = InitialState {
        hard_state: HardState {
            term: 3,
            voted_for: None,
        },
        ..Default::default()
    };
    let mut core = RaftCore::new(cfg, initial, Box::new(SeededRand::new(1))).expect("valid");
    let vote = |term| crate::message::Message {
        from: id(2),
        to: id(1),
        term,
        body: MessageBody::RequestVote(RequestVote {
            pre_vote: false,
            last_log_index: 0,
            last_log_term: 0,
            transfer: false,
        }),
    };
    core.step(vote(4));
    assert_eq!(
        core.term(),
        3,
        "ignored: it may have acknowledged a leader's lease before crashing"
    );
    for _ in 0..10 {
        core.tick();
    }
    core.step(vote(5));
    assert_eq!(core.term(), 5, "after one election timeout it votes again");
}

#[test]
fn reads_are_refused_when_read_index_is_off() {
    let flags = FeatureFlags {
        enable_read_index: false,
        enable_leader_lease: false,
        ..Default::default()
    };
    let mut c = Cluster::with(
        3,
        10,
        |c| c.feature_flags = flags.clone(),
        |_| InitialState::default(),
    );
    c.elect(1);
    assert!(c.node_mut(1).core.read_index(1).is_err());
}

#[test]
fn lease_expires_across_a_process_pause() {
    // A leader frozen for a while ticks no more, but its clock goes on: after the pause its
    // lease is over even though it counted no ticks, so it needs a round before reading.
    let mut c = Cluster::new(3, 11);
    c.elect(1);
    c.tick(1);
    c.deliver_all();
    c.read(1, 1);
    assert_eq!(reads(&c, 1).len(), 1, "lease read before the pause");
    let node = c.node_mut(1);
    node.clock += std::time::Duration::from_secs(2);
    let now = node.clock;
    node.core.set_now(now);
    c.isolate(1);
    c.read(1, 2);
    c.deliver_all();
    assert_eq!(reads(&c, 1).len(), 1, "no lease read after the pause");
}
