//! §5.2 leader election and §5.4.1 the election restriction, against the core alone.

use std::collections::BTreeSet;

use super::harness::*;
use crate::config::FeatureFlags;
use crate::core::{InitialState, RaftCore};
use crate::message::{MessageBody, RequestVote, RequestVoteResponse};
use crate::rand::SeededRand;
use crate::types::{HardState, Role};

fn classic() -> FeatureFlags {
    // Plain Raft of the paper: no PreVote, no CheckQuorum (and so no lease).
    FeatureFlags {
        pre_vote_enabled: false,
        check_quorum: false,
        enable_leader_lease: false,
        ..Default::default()
    }
}

fn classic_cluster(n: usize, seed: u64) -> Cluster {
    Cluster::with(
        n,
        seed,
        |c| c.feature_flags = classic(),
        |_| InitialState::default(),
    )
}

fn vote_request(index: u64, term: u64) -> MessageBody {
    MessageBody::RequestVote(RequestVote {
        pre_vote: false,
        last_log_index: index,
        last_log_term: term,
        transfer: false,
    })
}

fn vote_answer(granted: bool) -> MessageBody {
    MessageBody::RequestVoteResponse(RequestVoteResponse {
        pre_vote: false,
        granted,
    })
}

fn granted_votes(c: &mut Cluster, to: usize) -> Vec<bool> {
    c.take(|m| m.to == id(to) && m.kind() == "RequestVoteResponse")
        .into_iter()
        .map(|m| {
            matches!(
                m.body,
                MessageBody::RequestVoteResponse(RequestVoteResponse { granted: true, .. })
            )
        })
        .collect()
}

#[test]
fn nodes_start_as_followers_without_a_leader() {
    let c = Cluster::new(3, 1);
    for i in 1..=3 {
        assert_eq!(c.node(i).role(), Role::Follower);
        assert_eq!(c.node(i).leader(), None);
        assert_eq!(c.node(i).term(), 0);
    }
}

#[test]
fn leader_sends_heartbeats_every_heartbeat_interval() {
    let mut c = Cluster::with(
        3,
        2,
        |cfg| cfg.options.heartbeat_tick_count = 2,
        |_| InitialState::default(),
    );
    c.elect(1);
    c.queue.clear();
    c.tick(1);
    assert!(c.take(|m| m.kind() == "Heartbeat").is_empty(), "not yet");
    c.tick(1);
    let beats = c.take(|m| m.kind() == "Heartbeat");
    let to: BTreeSet<_> = beats.iter().map(|m| m.to.clone()).collect();
    assert_eq!(to, [id(2), id(3)].into_iter().collect());
}

#[test]
fn follower_times_out_and_starts_an_election() {
    let mut c = classic_cluster(3, 3);
    c.expire_election_timeout(1);
    let n = c.node(1);
    assert_eq!((n.role(), n.term()), (Role::Candidate, 1));
    assert_eq!(
        c.node_mut(1).stored_hard_state,
        HardState {
            term: 1,
            voted_for: Some(id(1))
        }
    );
    let reqs = c.take(|m| m.kind() == "RequestVote");
    assert_eq!(reqs.len(), 2, "one request to each peer");
    assert!(reqs.iter().all(|m| m.term == 1));
}

#[test]
fn candidate_times_out_and_starts_a_new_election() {
    let mut c = classic_cluster(3, 4);
    c.expire_election_timeout(1);
    c.queue.clear(); // its requests are lost
    for _ in 0..40 {
        c.tick(1);
    }
    assert_eq!(c.node(1).role(), Role::Candidate);
    assert!(c.node(1).term() >= 2, "a new election in a new term");
    assert!(!c
        .take(|m| m.kind() == "RequestVote" && m.term >= 2)
        .is_empty());
}

#[test]
fn election_outcomes_for_one_three_and_five_nodes() {
    // (nodes, granted answers, refused answers, expected role)
    let cases = [
        (1, 0, 0, Role::Leader),
        (3, 1, 0, Role::Leader),
        (3, 0, 1, Role::Candidate),
        (3, 0, 2, Role::Follower),
        (5, 2, 0, Role::Leader),
        (5, 1, 1, Role::Candidate),
        (5, 1, 3, Role::Follower),
        (5, 0, 2, Role::Candidate),
    ];
    for (n, granted, refused, expected) in cases {
        let mut c = classic_cluster(n, 5);
        c.expire_election_timeout(1);
        c.queue.clear();
        let term = c.node(1).term();
        for k in 0..granted {
            c.deliver(msg(2 + k, 1, term, vote_answer(true)));
        }
        for k in 0..refused {
            c.deliver(msg(2 + granted + k, 1, term, vote_answer(false)));
        }
        assert_eq!(
            c.node(1).role(),
            expected,
            "{n} nodes, {granted} granted, {refused} refused"
        );
    }
}

#[test]
fn single_node_cluster_elects_itself_at_once() {
    for flags in [classic(), FeatureFlags::default()] {
        let mut c = Cluster::with(
            1,
            6,
            |cfg| cfg.feature_flags = flags.clone(),
            |_| InitialState::default(),
        );
        c.expire_election_timeout(1);
        assert_eq!(c.node(1).role(), Role::Leader, "{flags:?}");
        let (index, _) = c.propose(1, "x");
        assert_eq!(
            c.node(1).commit_index(),
            index,
            "commits alone once durable"
        );
        assert_eq!(c.applied(1), vec!["x"]);
    }
}

#[test]
fn three_and_five_node_clusters_elect_exactly_one_leader() {
    for n in [3, 5] {
        for seed in 0..20 {
            let mut c = Cluster::new(n, seed);
            for _ in 0..100 {
                c.tick_all();
                c.deliver_all();
                if !c.leaders().is_empty() {
                    break;
                }
            }
            let leaders = c.leaders();
            assert_eq!(leaders.len(), 1, "{n} nodes, seed {seed}");
            let term = c.nodes[&leaders[0]].core.term();
            for node in c.nodes.values() {
                assert_eq!(node.core.term(), term);
                assert_eq!(node.core.leader(), Some(&leaders[0]));
            }
        }
    }
}

#[test]
fn one_vote_per_term() {
    let mut c = classic_cluster(3, 7);
    c.deliver(msg(2, 1, 1, vote_request(0, 0)));
    assert_eq!(granted_votes(&mut c, 2), vec![true]);
    c.deliver(msg(3, 1, 1, vote_request(0, 0)));
    assert_eq!(
        granted_votes(&mut c, 3),
        vec![false],
        "already voted for n2 in term 1"
    );
    // The same candidate asking again (a retry) gets the vote again.
    c.deliver(msg(2, 1, 1, vote_request(0, 0)));
    assert_eq!(granted_votes(&mut c, 2), vec![true]);
    assert_eq!(c.node_mut(1).stored_hard_state.voted_for, Some(id(2)));
}

#[test]
fn vote_survives_restart_through_the_hard_state() {
    // A node that voted in term 1 and restarted still refuses another candidate.
    let mut c = Cluster::with(
        3,
        8,
        |cfg| cfg.feature_flags = classic(),
        |_| InitialState {
            hard_state: HardState {
                term: 1,
                voted_for: Some(id(2)),
            },
            ..Default::default()
        },
    );
    c.deliver(msg(3, 1, 1, vote_request(0, 0)));
    assert_eq!(granted_votes(&mut c, 3), vec![false]);
}

#[test]
fn candidate_steps_down_on_append_entries_of_its_term() {
    let mut c = classic_cluster(3, 9);
    c.expire_election_timeout(1);
    let term = c.node(1).term();
    c.queue.clear();
    c.deliver(msg(
        2,
        1,
        term,
        MessageBody::AppendEntries(crate::message::AppendEntries {
            prev_log_index: 0,
            prev_log_term: 0,
            entries: vec![],
            leader_commit: 0,
        }),
    ));
    let n = c.node(1);
    assert_eq!(
        (n.role(), n.term(), n.leader()),
        (Role::Follower, term, Some(&id(2)))
    );
}

#[test]
fn election_timeouts_are_randomized_over_the_whole_range_and_rarely_collide() {
    let timeout_of = |seed: u64| {
        let mut core = RaftCore::new(
            config(3, 1),
            InitialState::default(),
            Box::new(SeededRand::new(seed)),
        )
        .expect("valid");
        let mut ticks = 0;
        while core.role() == Role::Follower {
            core.tick();
            ticks += 1;
        }
        ticks
    };
    let samples: Vec<u32> = (0..1000).map(timeout_of).collect();
    let seen: BTreeSet<u32> = samples.iter().copied().collect();
    assert_eq!(
        seen,
        (10..20).collect(),
        "every value of [election, 2 × election) occurs"
    );
    let collisions = samples.chunks(2).filter(|p| p[0] == p[1]).count();
    assert!(
        collisions < 500 / 5,
        "two nodes drew the same timeout {collisions} times in 500"
    );
}

#[test]
fn vote_request_carries_last_log_index_and_term() {
    let mut c = Cluster::with(
        3,
        10,
        |cfg| cfg.feature_flags = classic(),
        |_| InitialState {
            hard_state: HardState {
                term: 4,
                voted_for: None,
            },
            entries: entries_with_terms(&[1, 3, 4]),
            ..Default::default()
        },
    );
    c.expire_election_timeout(1);
    for m in c.take(|m| m.kind() == "RequestVote") {
        assert_eq!(m.term, 5);
        assert_eq!(m.body, vote_request(3, 4));
    }
}

#[test]
fn voter_refuses_a_less_up_to_date_candidate() {
    // Voter log: terms [1, 2, 2] (last index 3, last term 2).
    let cases = [
        (3, 2, true, "same last entry"),
        (4, 2, true, "longer log, same last term"),
        (1, 3, true, "shorter log, newer last term"),
        (2, 2, false, "shorter log, same last term"),
        (9, 1, false, "longer log, older last term"),
        (0, 0, false, "empty log"),
    ];
    for (index, term, expect, why) in cases {
        let mut c = Cluster::with(
            3,
            11,
            |cfg| cfg.feature_flags = classic(),
            |_| InitialState {
                hard_state: HardState {
                    term: 2,
                    voted_for: None,
                },
                entries: entries_with_terms(&[1, 2, 2]),
                ..Default::default()
            },
        );
        c.deliver(msg(2, 1, 3, vote_request(index, term)));
        assert_eq!(granted_votes(&mut c, 2), vec![expect], "{why}");
        assert_eq!(
            c.node(1).term(),
            3,
            "{why}: the newer term is adopted either way"
        );
    }
}
