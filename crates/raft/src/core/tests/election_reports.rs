//! The core reports every campaign it starts, with its reason, in `Ready::elections`
//! (the runtime turns them into `Metrics::observe_election_start`).

use super::harness::*;
use crate::config::FeatureFlags;
use crate::core::{ElectionReason, ElectionStart, InitialState};
use crate::types::Role;

fn start(term: u64, reason: ElectionReason) -> ElectionStart {
    ElectionStart { term, reason }
}

#[test]
fn with_prevote_a_timeout_starts_a_pre_vote_and_winning_it_the_election() {
    let mut c = Cluster::new(3, 7);
    c.expire_election_timeout(1);
    assert_eq!(c.node(1).role(), Role::PreCandidate);
    assert_eq!(
        c.node_mut(1).elections,
        [start(1, ElectionReason::Timeout)],
        "the pre-vote round asks about term 1 without entering it"
    );
    assert_eq!(c.node(1).term(), 0);
    c.deliver_all();
    assert_eq!(c.node(1).role(), Role::Leader);
    assert_eq!(
        c.node_mut(1).elections,
        [
            start(1, ElectionReason::Timeout),
            start(1, ElectionReason::PreVoteWon)
        ]
    );
    for follower in [2, 3] {
        assert!(c.node_mut(follower).elections.is_empty(), "n{follower}");
    }
}

#[test]
fn without_prevote_a_timeout_starts_the_election_at_once() {
    let mut c = Cluster::with(
        3,
        7,
        |cfg| {
            cfg.feature_flags = FeatureFlags {
                pre_vote_enabled: false,
                check_quorum: false,
                enable_leader_lease: false,
                ..Default::default()
            }
        },
        |_| InitialState::default(),
    );
    c.expire_election_timeout(2);
    assert_eq!(c.node(2).role(), Role::Candidate);
    c.deliver_all();
    assert_eq!(c.node(2).role(), Role::Leader);
    assert_eq!(c.node_mut(2).elections, [start(1, ElectionReason::Timeout)]);
}

#[test]
fn an_isolated_node_reports_each_pre_vote_but_never_enters_a_new_term() {
    let mut c = Cluster::new(3, 11);
    c.isolate(3);
    c.expire_election_timeout(3);
    c.tick_n(3, 60); // at least two more timeouts (each is 10 to 20 ticks)
    c.deliver_all();
    let elections = c.node_mut(3).elections.clone();
    assert!(elections.len() >= 3, "{elections:?}");
    assert!(
        elections
            .iter()
            .all(|e| *e == start(1, ElectionReason::Timeout)),
        "{elections:?}"
    );
    assert_eq!(c.node(3).term(), 0);
}

#[test]
fn a_single_node_reports_both_steps_of_its_immediate_win() {
    let mut c = Cluster::new(1, 3);
    c.expire_election_timeout(1);
    assert_eq!(c.node(1).role(), Role::Leader);
    assert_eq!(
        c.node_mut(1).elections,
        [
            start(1, ElectionReason::Timeout),
            start(1, ElectionReason::PreVoteWon)
        ]
    );
}
