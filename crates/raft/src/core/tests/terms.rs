//! §5.1: terms. A newer term in any message makes a node adopt it (and follow); a message
//! of an older term is not acted on.

use super::harness::*;
use crate::core::InitialState;
use crate::message::{
    AppendEntries, AppendEntriesResponse, Heartbeat, HeartbeatResponse, MessageBody, RequestVote,
    RequestVoteResponse,
};
use crate::types::{HardState, Role};

fn bodies() -> Vec<(&'static str, MessageBody)> {
    vec![
        (
            "AppendEntries",
            MessageBody::AppendEntries(AppendEntries {
                prev_log_index: 0,
                prev_log_term: 0,
                entries: vec![],
                leader_commit: 0,
            }),
        ),
        (
            "Heartbeat",
            MessageBody::Heartbeat(Heartbeat {
                commit: 0,
                read_seq: 0,
            }),
        ),
        (
            "AppendEntriesResponse",
            MessageBody::AppendEntriesResponse(AppendEntriesResponse {
                success: true,
                index: 0,
                conflict: None,
            }),
        ),
        (
            "HeartbeatResponse",
            MessageBody::HeartbeatResponse(HeartbeatResponse { read_seq: 0 }),
        ),
        (
            "RequestVoteResponse",
            MessageBody::RequestVoteResponse(RequestVoteResponse {
                pre_vote: false,
                granted: false,
            }),
        ),
        (
            "RequestVote",
            MessageBody::RequestVote(RequestVote {
                pre_vote: false,
                last_log_index: 0,
                last_log_term: 0,
                transfer: false,
            }),
        ),
    ]
}

#[test]
fn term_update_from_any_message_with_a_newer_term() {
    for (kind, body) in bodies() {
        for role in [Role::Follower, Role::Candidate, Role::Leader] {
            let mut c = match role {
                Role::Leader => {
                    let mut c = Cluster::new(3, 11);
                    c.elect(1);
                    c
                }
                Role::Candidate => {
                    // Without PreVote the timeout makes a real candidate whose votes are
                    // not delivered.
                    let mut c = Cluster::with(
                        3,
                        11,
                        |cfg| cfg.feature_flags = no_prevote(),
                        |_| InitialState::default(),
                    );
                    c.expire_election_timeout(1);
                    assert_eq!(c.node(1).role(), Role::Candidate);
                    c
                }
                _ => Cluster::new(3, 11),
            };
            let term = c.node(1).term();
            c.queue.clear();
            c.deliver(msg(2, 1, term + 5, body.clone()));
            if kind == "RequestVote" && role == Role::Leader {
                // The exception: a live leader ignores vote requests (see
                // prevote_check_quorum tests); a leaderless node does not.
                assert_eq!((c.node(1).term(), c.node(1).role()), (term, Role::Leader));
                continue;
            }
            assert_eq!(c.node(1).term(), term + 5, "{kind} to a {role:?}");
            assert_eq!(c.node(1).role(), Role::Follower, "{kind} to a {role:?}");
            let expect_leader = matches!(kind, "AppendEntries" | "Heartbeat");
            assert_eq!(
                c.node(1).leader().is_some(),
                expect_leader,
                "{kind} to a {role:?}: the leader is known only from a leader's message"
            );
        }
    }
}

fn no_prevote() -> crate::config::FeatureFlags {
    crate::config::FeatureFlags {
        pre_vote_enabled: false,
        ..Default::default()
    }
}

#[test]
fn stale_term_messages_are_ignored() {
    for (kind, body) in bodies() {
        let mut c = Cluster::with(
            3,
            12,
            |_| {},
            |_| InitialState {
                hard_state: HardState {
                    term: 5,
                    voted_for: None,
                },
                ..Default::default()
            },
        );
        c.deliver(msg(2, 1, 3, body));
        let n = c.node(1);
        assert_eq!(
            (n.term(), n.role(), n.leader()),
            (5, Role::Follower, None),
            "{kind}"
        );
        assert_eq!(n.last_index(), 0, "{kind}");
        // The only possible answer tells the stale sender our term, refusing everything.
        for m in c.take(|_| true) {
            assert_eq!(m.term, 5, "{kind}");
            assert!(
                matches!(m.body, MessageBody::HeartbeatResponse(_))
                    || matches!(
                        m.body,
                        MessageBody::RequestVoteResponse(RequestVoteResponse {
                            granted: false,
                            ..
                        })
                    ),
                "{kind}: unexpected answer {m:?}"
            );
        }
    }
}

#[test]
fn leader_steps_down_on_a_response_with_a_newer_term() {
    let mut c = Cluster::new(3, 13);
    c.elect(1);
    let term = c.node(1).term();
    c.deliver(msg(
        2,
        1,
        term + 1,
        MessageBody::HeartbeatResponse(HeartbeatResponse { read_seq: 0 }),
    ));
    assert_eq!(c.node(1).role(), Role::Follower);
    assert_eq!(c.node(1).term(), term + 1);
    assert_eq!(
        c.node(1).leader(),
        None,
        "a newer term clears the leader hint"
    );
}

#[test]
fn term_change_clears_the_vote_and_leader_hint() {
    let mut c = Cluster::new(3, 14);
    c.elect(1);
    assert_eq!(c.node(2).leader(), Some(&id(1)));
    let term = c.node(2).term();
    c.deliver(msg(
        3,
        2,
        term + 1,
        MessageBody::RequestVoteResponse(RequestVoteResponse {
            pre_vote: false,
            granted: false,
        }),
    ));
    assert_eq!(c.node(2).leader(), None);
    assert_eq!(
        c.node_mut(2).stored_hard_state,
        HardState {
            term: term + 1,
            voted_for: None
        }
    );
}
