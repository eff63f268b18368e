//! PreVote (thesis §9.6), CheckQuorum and the leader-liveness rule that makes followers
//! refuse votes, plus the liveness of elections (split votes, stale leaders).

use super::harness::*;
use crate::config::Config;
use crate::core::InitialState;
use crate::message::{MessageBody, RequestVote, RequestVoteResponse};
use crate::types::{HardState, Role, Term};

fn no_pre_vote(c: &mut Config) {
    c.feature_flags.pre_vote_enabled = false;
}

/// Three nodes with CheckQuorum (and the lease, which requires it) off; n1 leads.
fn elected_without_check_quorum(seed: u64) -> Cluster {
    let mut c = Cluster::with(
        3,
        seed,
        |cfg| {
            cfg.feature_flags.check_quorum = false;
            cfg.feature_flags.enable_leader_lease = false;
        },
        |_| InitialState::default(),
    );
    c.elect(1);
    c.deliver_all();
    c
}

/// Node `i`'s process was stopped for `ticks` tick intervals: its clock moves on, it
/// gets no tick.
fn pause(c: &mut Cluster, i: usize, ticks: u32) {
    let node = c.node_mut(i);
    node.clock += node.core.config().options.nominal_tick_interval * ticks;
    let now = node.clock;
    node.core.set_now(now);
}

/// Whether every node agrees on one leader and one term.
fn converged(c: &Cluster) -> bool {
    let leaders = c.leaders();
    if leaders.len() != 1 {
        return false;
    }
    let leader = &c.nodes[&leaders[0]].core;
    c.nodes
        .values()
        .all(|n| n.core.term() == leader.term() && n.core.leader() == Some(&leaders[0]))
}

/// Ticks every node and delivers everything until the cluster has converged on one
/// leader; returns the ticks it took, panicking past `bound`.
fn run_until_converged(c: &mut Cluster, bound: usize) -> usize {
    for t in 1..=bound {
        c.tick_all();
        c.deliver_all();
        if converged(c) {
            return t;
        }
    }
    panic!("no single leader with agreeing terms after {bound} ticks");
}

#[test]
fn pre_vote_does_not_increment_term_until_majority() {
    // n1's log is behind n2's and n3's, so its pre-votes are refused.
    let mut c = Cluster::with(
        3,
        31,
        |_| {},
        |i| InitialState {
            hard_state: HardState {
                term: 1,
                voted_for: None,
            },
            entries: entries_with_terms(if i == 1 { &[1] } else { &[1, 1] }),
            ..Default::default()
        },
    );
    for round in 0..5 {
        c.expire_election_timeout(1);
        assert_eq!(c.node(1).role(), Role::PreCandidate, "round {round}");
        assert_eq!(c.node(1).term(), 1, "a pre-candidate keeps its term");
        let requests: Vec<_> = c.queue.iter().filter(|m| m.kind() == "PreVote").collect();
        assert_eq!(requests.len(), 2);
        assert!(
            requests.iter().all(|m| m.term == 2),
            "pre-votes name the term it would use"
        );
        c.deliver_all();
        assert_eq!(c.node(1).role(), Role::Follower, "refused by a majority");
        for i in 1..=3 {
            assert_eq!(
                c.node(i).term(),
                1,
                "round {round}: node {i}'s term is unchanged"
            );
            assert_eq!(c.node_mut(i).stored_hard_state.term, 1);
        }
    }
    assert_eq!(
        c.count_sent("RequestVote"),
        0,
        "no real election ever started"
    );

    // With equal logs, one granted pre-vote (plus its own) is a majority of three.
    let mut c = Cluster::new(3, 32);
    c.expire_election_timeout(1);
    assert_eq!(
        (c.node(1).role(), c.node(1).term()),
        (Role::PreCandidate, 0)
    );
    let _lost = c.take(|m| m.to == id(3));
    c.deliver_one(); // the pre-vote to n2
    assert_eq!(c.node(1).term(), 0, "still term 0 until the answer arrives");
    assert!(c.queued(2, 1, "PreVoteResponse"));
    c.deliver_one(); // n2's grant
    assert_eq!(c.node(1).role(), Role::Candidate);
    assert_eq!(c.node(1).term(), 1);
    assert_eq!(
        c.node(2).term(),
        0,
        "granting a pre-vote changes nothing on the voter"
    );
}

/// A node cut off from a healthy leader times out again and again without raising its
/// term; once healed it follows the same leader in the same term and catches up. Run twice:
/// with the isolated node's log as up to date as the others' (only the followers' refusal
/// to vote while their leader is live protects the leader then), and with an entry it
/// missed (which it must catch up on).
#[test]
fn pre_vote_rejoining_node_does_not_disrupt_leader() {
    for propose_while_isolated in [false, true] {
        let case = format!("propose_while_isolated = {propose_while_isolated}");
        let mut c = Cluster::new(3, 33);
        c.elect(1);
        c.deliver_all();
        let term = c.node(1).term();
        let votes_before = c.count_sent("RequestVote");
        c.propose(1, "before");
        c.deliver_all();

        c.isolate(3);
        for _ in 0..100 {
            c.tick_all();
            c.deliver_all();
        }
        if propose_while_isolated {
            c.propose(1, "during");
            c.deliver_all();
        }
        assert!(
            c.sent
                .iter()
                .any(|m| m.from == id(3) && m.kind() == "PreVote"),
            "{case}: n3 did time out"
        );
        assert_eq!(
            c.node(3).term(),
            term,
            "{case}: pre-votes never raise the isolated node's term"
        );

        c.heal();
        // n3's next pre-vote reaches the others before any heartbeat reaches n3.
        let pre_votes = |c: &Cluster| {
            c.sent
                .iter()
                .filter(|m| m.from == id(3) && m.kind() == "PreVote")
                .count()
        };
        let before = pre_votes(&c);
        for _ in 0..100 {
            if pre_votes(&c) > before {
                break;
            }
            c.tick(3);
        }
        assert!(pre_votes(&c) > before, "{case}: n3 campaigns after healing");
        c.deliver_all();
        for _ in 0..30 {
            c.tick_all();
            c.deliver_all();
        }
        for i in 1..=3 {
            assert_eq!(c.node(i).term(), term, "{case}: node {i}");
        }
        assert_eq!(c.node(1).role(), Role::Leader, "{case}");
        assert_eq!(c.node(3).role(), Role::Follower, "{case}");
        assert_eq!(c.node(3).leader(), Some(&id(1)), "{case}");
        assert_eq!(
            c.count_sent("RequestVote"),
            votes_before,
            "{case}: no election happened"
        );
        assert_eq!(c.log_terms(3), c.log_terms(1), "{case}");
        assert_eq!(c.applied(3), c.applied(1), "{case}");
        let expected: &[&str] = if propose_while_isolated {
            &["before", "during"]
        } else {
            &["before"]
        };
        assert_eq!(c.applied(3), expected, "{case}");
    }
}

/// Without PreVote an isolated node raises its term at every timeout. With CheckQuorum on,
/// the healthy nodes ignore its vote requests while their leader is live, but the leader
/// learns the higher term from n3's answer to its heartbeat and steps down. Expected
/// outcome: one more election (which n3, lacking a committed entry, cannot win), after
/// which all nodes agree on one leader and one term, every log matches, and nothing
/// committed is lost.
#[test]
fn without_pre_vote_rejoining_node_with_higher_term_is_handled() {
    let mut c = Cluster::with(3, 34, no_pre_vote, |_| InitialState::default());
    c.elect(1);
    c.propose(1, "a");
    c.deliver_all();
    let term = c.node(1).term();

    c.isolate(3);
    for _ in 0..100 {
        c.tick_all();
        c.deliver_all();
    }
    let isolated_term = c.node(3).term();
    assert!(
        isolated_term > term,
        "without PreVote the isolated node's term grows"
    );
    assert_eq!(c.node(1).role(), Role::Leader);
    assert_eq!(c.node(1).term(), term);
    c.propose(1, "b");
    c.deliver_all();

    c.heal();
    run_until_converged(&mut c, 300);
    let leader = c.leaders()[0].clone();
    assert_ne!(
        leader,
        id(3),
        "n3 lacks the committed entry b and cannot win"
    );
    let leader_core = &c.nodes[&leader].core;
    assert!(
        leader_core.term() >= isolated_term,
        "the higher term was adopted"
    );

    let i: usize = leader.as_ref()[1..].parse().expect("ids are n<i>");
    let (index, _) = c.propose(i, "c");
    c.deliver_all();
    for i in 1..=3 {
        assert!(c.node(i).commit_index() >= index, "node {i}");
        assert_eq!(c.log_terms(i), c.log_terms(1), "node {i}");
        assert_eq!(c.applied(i), vec!["a", "b", "c"], "node {i}");
    }
}

/// A RequestVote (or pre-vote) of a higher term reaching a follower that heard from its
/// leader within the election timeout is ignored; once that follower has not heard from
/// the leader for an election timeout, the same request is granted.
#[test]
fn followers_refuse_votes_while_leader_is_live() {
    let mut c = Cluster::new(3, 35);
    c.elect(1);
    c.deliver_all();
    let term = c.node(1).term();
    let last_log_index = c.node(3).last_index();
    let last_log_term = c.node(3).term_at(last_log_index).unwrap();
    let request = |pre_vote| {
        msg(
            3,
            2,
            term + 1,
            MessageBody::RequestVote(RequestVote {
                pre_vote,
                last_log_index,
                last_log_term,
                transfer: false,
            }),
        )
    };

    c.deliver(request(false));
    c.deliver(request(true));
    assert_eq!(
        c.node(2).term(),
        term,
        "the vote request's term was not adopted"
    );
    assert_eq!(c.node(2).leader(), Some(&id(1)));
    assert!(!c.queued(2, 3, "RequestVoteResponse"));
    assert!(!c.queued(2, 3, "PreVoteResponse"));
    assert_ne!(c.node_mut(2).stored_hard_state.voted_for, Some(id(3)));

    c.isolate(1);
    let election_ticks = c.node(2).config().options.election_tick_count;
    c.tick_n(2, election_ticks);
    c.deliver(request(false));
    assert_eq!(c.node(2).term(), term + 1);
    let granted = c.queue.iter().any(|m| {
        m.from == id(2)
            && m.to == id(3)
            && m.body
                == MessageBody::RequestVoteResponse(RequestVoteResponse {
                    pre_vote: false,
                    granted: true,
                })
    });
    assert!(
        granted,
        "after an election timeout without the leader the vote is granted"
    );
}

#[test]
fn check_quorum_isolated_leader_steps_down() {
    let mut c = Cluster::new(3, 36);
    c.elect(1);
    c.deliver_all();
    let term = c.node(1).term();
    c.isolate(1);
    let election_ticks = c.node(1).config().options.election_tick_count;
    let mut stepped_down_after = None;
    for t in 1..=2 * election_ticks {
        c.tick(1);
        if c.node(1).role() != Role::Leader {
            stepped_down_after = Some(t);
            break;
        }
    }
    assert!(
        stepped_down_after.is_some(),
        "still leader after {} ticks without a quorum",
        2 * election_ticks
    );
    assert_eq!(c.node(1).role(), Role::Follower);
    assert_eq!(
        c.node(1).term(),
        term,
        "stepping down does not start a term"
    );
    assert_eq!(c.node(1).leader(), None);

    for _ in 0..300 {
        c.tick(2);
        c.tick(3);
        c.deliver_all();
        if !c.leaders().is_empty() {
            break;
        }
    }
    let leaders = c.leaders();
    assert_eq!(leaders.len(), 1, "the majority side elects a leader");
    assert_ne!(leaders[0], id(1));
    assert!(c.nodes[&leaders[0]].core.term() > term);
}

/// The contrast: with CheckQuorum (and the lease that requires it) off, an isolated leader
/// keeps its role indefinitely while the others elect a leader of a newer term.
#[test]
fn check_quorum_off_leader_keeps_role_when_isolated() {
    let mut c = elected_without_check_quorum(37);
    let term = c.node(1).term();
    c.isolate(1);
    let election_ticks = c.node(1).config().options.election_tick_count;
    for _ in 0..10 * election_ticks {
        c.tick_all();
        c.deliver_all();
    }
    assert_eq!(
        c.node(1).role(),
        Role::Leader,
        "without CheckQuorum nothing deposes it"
    );
    assert_eq!(c.node(1).term(), term);
    let leaders = c.leaders();
    assert_eq!(
        leaders.len(),
        2,
        "two leaders, of different terms: {leaders:?}"
    );
    let other = leaders.iter().find(|l| **l != id(1)).unwrap();
    assert!(c.nodes[other].core.term() > term);
}

/// A leader whose process was stopped: its clock moved on, its ticks did not. On its
/// first proposal after two election timeouts of clock time with no majority-acknowledged
/// heartbeat, it steps down and refuses (the client is redirected, not left uncertain).
/// Found by the simulator (seed 20000, profile crashes): a leader paused for 1.2 s took a
/// proposal the instant it resumed, before the messages of the newer term reached it.
#[test]
fn a_resumed_leader_past_two_election_timeouts_steps_down_before_proposing() {
    let mut c = Cluster::new(3, 38);
    c.elect(1);
    c.deliver_all();
    // Ordinary operation: heartbeats answered for many election timeouts, proposals accepted.
    let election_ticks = c.node(1).config().options.election_tick_count;
    for _ in 0..5 * election_ticks {
        c.tick_all();
        c.deliver_all();
    }
    assert!(c.try_propose(1, &["before the pause"]).is_ok());
    c.deliver_all();
    let term = c.node(1).term();
    // Exactly two election timeouts since the last acknowledged round: still the leader.
    pause(&mut c, 1, 2 * election_ticks - 1);
    assert!(c.try_propose(1, &["at the bound"]).is_ok());
    assert_eq!(c.node(1).role(), Role::Leader);
    // Beyond them: it steps down without a new term and names no leader.
    pause(&mut c, 1, 2);
    let log_before = c.log_tail(1);
    let r = c.try_propose(1, &["after the pause"]);
    assert!(
        matches!(r, Err(crate::error::Error::NotLeader { leader: None })),
        "{r:?}"
    );
    assert_eq!(c.node(1).role(), Role::Follower);
    assert_eq!(c.node(1).term(), term);
    assert_eq!(
        c.log_tail(1),
        log_before,
        "the refused command is not in the log"
    );
}

/// With CheckQuorum off, the clock does not depose a leader either.
#[test]
fn without_check_quorum_a_resumed_leader_keeps_proposing() {
    let mut c = elected_without_check_quorum(39);
    let election_ticks = c.node(1).config().options.election_tick_count;
    pause(&mut c, 1, 10 * election_ticks);
    assert!(c.try_propose(1, &["after the pause"]).is_ok());
    assert_eq!(c.node(1).role(), Role::Leader);
}

/// Five nodes, PreVote off; n1, n2 and n3 time out together and the votes of n4 and n5
/// are split between n1 and n2, so term 1 has no leader. Randomized timeouts then settle
/// on exactly one leader with every term in agreement.
#[test]
fn dueling_candidates_resolve() {
    let mut c = Cluster::with(5, 38, no_pre_vote, |_| InitialState::default());
    for i in 1..=3 {
        c.expire_election_timeout(i);
        assert_eq!(c.node(i).role(), Role::Candidate);
    }
    let first =
        c.take(|m| (m.from == id(1) && m.to == id(4)) || (m.from == id(2) && m.to == id(5)));
    assert_eq!(first.len(), 2);
    for m in first {
        c.deliver(m);
    }
    c.deliver_all();
    assert!(
        c.leaders().is_empty(),
        "the vote was split: {:?}",
        c.leaders()
    );
    for i in 1..=5 {
        assert_eq!(c.node(i).term(), 1, "node {i}");
    }

    let ticks = run_until_converged(&mut c, 500);
    let leader = c.leaders()[0].clone();
    let term: Term = c.nodes[&leader].core.term();
    assert!(term >= 2);
    // Stable: further ticks change neither the leader nor the term.
    for _ in 0..50 {
        c.tick_all();
        c.deliver_all();
    }
    assert_eq!(
        c.leaders(),
        vec![leader.clone()],
        "resolved after {ticks} ticks but did not stay"
    );
    assert_eq!(c.nodes[&leader].core.term(), term);
}

/// n1 leads term `t`, is cut off, and (never ticking, so CheckQuorum never fires) still
/// believes it leads while n2 and n3 elect a leader of a newer term. Returns the cluster
/// healed, and the newer term.
fn deposed_leader(seed: u64) -> (Cluster, Term) {
    let mut c = Cluster::new(3, seed);
    c.elect(1);
    c.deliver_all();
    let old = c.node(1).term();
    c.isolate(1);
    for _ in 0..300 {
        c.tick(2);
        c.tick(3);
        c.deliver_all();
        if c.node(2).role() == Role::Leader || c.node(3).role() == Role::Leader {
            break;
        }
    }
    let new = c.node(2).term();
    assert!(new > old);
    assert_eq!(c.node(1).role(), Role::Leader);
    assert_eq!(c.node(1).term(), old);
    c.heal();
    (c, new)
}

/// A deposed leader that sends heartbeats or AppendEntries in its old term is answered
/// with the newer term and becomes a follower; its uncommitted entry is discarded.
#[test]
fn stale_leader_with_lower_term_steps_down_on_response() {
    // Through a heartbeat.
    let (mut c, new) = deposed_leader(39);
    let heartbeat_ticks = c.node(1).config().options.heartbeat_tick_count;
    c.tick_n(1, heartbeat_ticks);
    assert!(c
        .queue
        .iter()
        .any(|m| m.from == id(1) && m.kind() == "Heartbeat"));
    c.deliver_all();
    assert_eq!(c.node(1).role(), Role::Follower);
    assert_eq!(c.node(1).term(), new);

    // Through an AppendEntries carrying a proposal.
    let (mut c, new) = deposed_leader(40);
    c.propose(1, "stale");
    assert!(c
        .queue
        .iter()
        .any(|m| m.from == id(1) && m.kind() == "AppendEntries"));
    c.deliver_all();
    assert_eq!(c.node(1).role(), Role::Follower);
    assert_eq!(c.node(1).term(), new);
    let leader = if c.node(2).role() == Role::Leader {
        2
    } else {
        3
    };
    c.propose(leader, "fresh");
    for _ in 0..3 {
        c.heartbeat_round(leader);
    }
    for i in 1..=3 {
        assert_eq!(c.log_terms(i), c.log_terms(leader), "node {i}");
        assert_eq!(
            c.applied(i),
            vec!["fresh"],
            "node {i}: the stale entry never applies"
        );
    }
}
