//! The vote guard that keeps a leader lease sound (thesis §4.2.3, §6.4.1): a node that
//! heard from a leader within the election timeout refuses votes and pre-votes of every
//! term, whatever else moved its term, with PreVote on or off.

use super::harness::*;
use crate::config::Config;
use crate::core::{InitialState, ReadState};
use crate::message::{Heartbeat, Message, MessageBody, RequestVote};
use crate::types::{HardState, Role};

fn no_pre_vote(c: &mut Config) {
    c.feature_flags.pre_vote_enabled = false;
}

/// Three nodes that all stored entry 1 of term 1, which n2 led: a heartbeat n2 sent to n3
/// in that term can still be in flight.
fn after_n2_led_term_1(tune: impl Fn(&mut Config)) -> Cluster {
    Cluster::with(3, 71, tune, |_| InitialState {
        hard_state: HardState {
            term: 1,
            voted_for: Some(id(2)),
        },
        entries: entries_with_terms(&[1]),
        ..Default::default()
    })
}

fn stale_heartbeat_from_n2_to_n3() -> Message {
    msg(
        2,
        3,
        1,
        MessageBody::Heartbeat(Heartbeat {
            commit: 1,
            read_seq: 0,
        }),
    )
}

fn vote_request(from: usize, to: usize, term: u64, pre_vote: bool) -> Message {
    msg(
        from,
        to,
        term,
        MessageBody::RequestVote(RequestVote {
            pre_vote,
            last_log_index: 10,
            last_log_term: term,
            transfer: false,
        }),
    )
}

fn granted_votes(c: &Cluster, from: usize) -> usize {
    c.sent
        .iter()
        .filter(|m| m.from == id(from))
        .filter(|m| matches!(&m.body, MessageBody::RequestVoteResponse(r) if r.granted))
        .count()
}

/// The sequence from the review: with the lease on and PreVote off, n1 leads term 2 and
/// holds a lease that counted n2. n3, cut off from n1, campaigns into term 3. n2's stale
/// term-1 heartbeat reaches n3, n3 answers in term 3, and n2 adopts term 3 knowing no
/// leader in it. n3's vote request for term 3 (or any later term) must still be refused:
/// n2 heard from n1 moments ago, and with n2's vote n3 would commit writes that n1's lease
/// reads do not see.
#[test]
fn a_term_adopted_from_a_stale_leaders_exchange_does_not_release_the_guard() {
    let mut c = after_n2_led_term_1(no_pre_vote);
    c.elect(1);
    c.deliver_all();
    assert_eq!(c.node(1).term(), 2);
    c.tick(1); // a heartbeat round that n2 and n3 acknowledge: the lease starts
    c.deliver_all();
    c.read(1, 1);
    let served = |c: &Cluster| -> Vec<ReadState> { c.nodes[&id(1)].read_states.clone() };
    assert_eq!(served(&c).len(), 1, "n1 serves reads from its lease");

    c.partition(1, 3);
    c.expire_election_timeout(3);
    assert_eq!((c.node(3).role(), c.node(3).term()), (Role::Candidate, 3));
    let requests = c.take(|m| m.from == id(3) && m.kind() == "RequestVote");
    let to_n2: Vec<Message> = requests.into_iter().filter(|m| m.to == id(2)).collect();
    assert_eq!(to_n2.len(), 1);

    // The straggler reaches n3, whose answer moves n2 to term 3 with no leader.
    c.deliver(stale_heartbeat_from_n2_to_n3());
    let answers = c.take(|m| m.from == id(3) && m.to == id(2));
    assert!(!answers.is_empty(), "n3 tells the stale leader its term");
    for m in answers {
        c.deliver(m);
    }
    assert_eq!(c.node(2).term(), 3);
    assert_eq!(c.node(2).leader(), None);

    // n3's vote request of term 3 arrives: refused.
    let before = granted_votes(&c, 2);
    for m in to_n2 {
        c.deliver(m);
    }
    // And a retry in term 4 (n3 timed out again): refused too.
    c.deliver(vote_request(3, 2, 4, false));
    c.deliver_all();
    assert_eq!(granted_votes(&c, 2), before, "n2 granted no vote");
    assert_ne!(c.node(3).role(), Role::Leader);
    assert_eq!(c.node_mut(2).stored_hard_state.voted_for, None);

    // Once an election timeout has passed on n2 without a leader, it votes again.
    for _ in 0..c.node(2).config().options.election_tick_count {
        c.tick(2);
        c.take(|m| m.from == id(2));
    }
    c.deliver(vote_request(3, 2, 5, false));
    assert_eq!(granted_votes(&c, 2), before + 1, "the guard lapses in time");
}

/// The same with PreVote on: a pre-vote for the term after one adopted from a non-vote
/// message is refused as long as the guard holds.
#[test]
fn pre_votes_are_refused_while_the_guard_holds_even_without_a_known_leader() {
    let mut c = after_n2_led_term_1(|_| {});
    c.elect(1);
    c.deliver_all();
    c.tick(1);
    c.deliver_all();
    // n2 learns of term 5 from a non-vote message (n3's answer to a stale heartbeat).
    c.deliver(msg(
        3,
        2,
        5,
        MessageBody::HeartbeatResponse(Default::default()),
    ));
    assert_eq!(c.node(2).term(), 5);
    assert_eq!(c.node(2).leader(), None);
    let before = granted_votes(&c, 2);
    c.deliver(vote_request(3, 2, 6, true));
    c.deliver(vote_request(3, 2, 5, true));
    assert_eq!(granted_votes(&c, 2), before, "no pre-vote granted");
    assert_eq!(c.node(2).term(), 5, "a pre-vote changes no term");
}

/// A node whose vote was already cast repeats it (the candidate may have lost the answer),
/// even once it hears from that candidate as leader.
#[test]
fn a_vote_already_cast_is_repeated_while_the_guard_holds() {
    let mut c = Cluster::with(3, 72, no_pre_vote, |_| InitialState::default());
    c.elect(1);
    c.deliver_all();
    let term = c.node(1).term();
    let before = granted_votes(&c, 2);
    c.deliver(vote_request(1, 2, term, false));
    assert_eq!(granted_votes(&c, 2), before + 1);
}
