//! §5.3 log replication and §5.4 safety, against the core alone.

use super::harness::*;
use crate::core::InitialState;
use crate::message::{AppendEntries, AppendEntriesResponse, ConflictHint, MessageBody};
use crate::types::{Entry, HardState, Role};

fn append(prev_index: u64, prev_term: u64, entries: Vec<Entry>, commit: u64) -> MessageBody {
    MessageBody::AppendEntries(AppendEntries {
        prev_log_index: prev_index,
        prev_log_term: prev_term,
        entries,
        leader_commit: commit,
    })
}

fn responses_to(c: &mut Cluster, leader: usize) -> Vec<AppendEntriesResponse> {
    c.take(|m| m.to == id(leader) && m.kind() == "AppendEntriesResponse")
        .into_iter()
        .map(|m| match m.body {
            MessageBody::AppendEntriesResponse(r) => r,
            _ => unreachable!(),
        })
        .collect()
}

#[test]
fn leader_replicates_and_commits_on_majority() {
    let mut c = Cluster::new(3, 1);
    c.elect(1);
    c.isolate(3);
    let (index, _) = c.propose(1, "x");
    c.deliver_all();
    assert_eq!(
        c.node(1).commit_index(),
        index,
        "two of three is a majority"
    );
    assert_eq!(c.applied(1), vec!["x"]);
    assert_eq!(
        c.applied(2),
        vec!["x"],
        "the follower applies once it learns the commit"
    );
    assert!(c.applied(3).is_empty());
}

#[test]
fn no_commit_without_majority() {
    let mut c = Cluster::new(3, 1);
    c.elect(1);
    c.isolate(2);
    c.isolate(3);
    let (index, _) = c.propose(1, "x");
    c.deliver_all();
    assert!(c.node(1).commit_index() < index);
    assert!(c.applied(1).is_empty());
}

#[test]
fn leader_commits_preceding_entries_of_older_terms_with_its_own() {
    // n1 holds entries of term 1 that were never committed; once it leads in term 2 its
    // no-op commits them too (§5.3, "this also commits all preceding entries").
    let mut c = Cluster::with(
        3,
        2,
        |_| {},
        |i| InitialState {
            hard_state: HardState {
                term: 1,
                voted_for: None,
            },
            entries: if i == 1 {
                entries_with_terms(&[1, 1])
            } else {
                entries_with_terms(&[1])
            },
            ..Default::default()
        },
    );
    c.elect(1);
    c.deliver_all();
    assert_eq!(c.node(1).commit_index(), 3);
    for i in 1..=3 {
        assert_eq!(c.applied(i), vec!["0", "1"], "node {i}");
    }
}

#[test]
fn follower_rejects_mismatching_prev_entry_with_conflict_hint() {
    let mut c = Cluster::with(
        3,
        3,
        |_| {},
        |_| InitialState {
            hard_state: HardState {
                term: 3,
                voted_for: None,
            },
            entries: entries_with_terms(&[1, 2, 2, 2]),
            ..Default::default()
        },
    );
    // prev entry (4, 3) does not match (4, 2): the hint names term 2 starting at index 2.
    c.deliver(msg(1, 2, 3, append(4, 3, vec![], 0)));
    let r = responses_to(&mut c, 1);
    assert_eq!(r.len(), 1);
    assert!(!r[0].success);
    assert_eq!(
        r[0].conflict,
        Some(ConflictHint {
            term: Some(2),
            index: 2
        })
    );
    // prev beyond the end: the hint is the follower's last index + 1.
    c.deliver(msg(1, 2, 3, append(9, 3, vec![], 0)));
    let r = responses_to(&mut c, 1);
    assert_eq!(
        r[0].conflict,
        Some(ConflictHint {
            term: None,
            index: 5
        })
    );
    assert_eq!(
        c.log_terms(2),
        vec![1, 2, 2, 2],
        "a rejection changes nothing"
    );
}

#[test]
fn follower_deletes_conflicting_suffix_and_appends() {
    let mut c = Cluster::with(
        3,
        3,
        |_| {},
        |_| InitialState {
            hard_state: HardState {
                term: 3,
                voted_for: None,
            },
            entries: entries_with_terms(&[1, 2, 2, 2]),
            ..Default::default()
        },
    );
    let new = vec![
        Entry::normal(3, 3, "a"),
        Entry::normal(4, 3, "b"),
        Entry::normal(5, 3, "c"),
    ];
    c.deliver(msg(1, 2, 3, append(2, 2, new, 0)));
    let r = responses_to(&mut c, 1);
    assert!(r[0].success);
    assert_eq!(r[0].index, 5);
    assert_eq!(c.log_terms(2), vec![1, 2, 3, 3, 3]);
    let stored: Vec<u64> = c.node_mut(2).stored_log.iter().map(|e| e.term).collect();
    assert_eq!(
        stored,
        vec![1, 2, 3, 3, 3],
        "storage was truncated and rewritten too"
    );
}

#[test]
fn follower_applies_up_to_leader_commit_but_not_beyond_its_log() {
    let mut c = Cluster::new(3, 4);
    let entries = vec![Entry::normal(1, 1, "a"), Entry::normal(2, 1, "b")];
    c.deliver(msg(1, 2, 1, append(0, 0, entries, 1)));
    assert_eq!(c.node(2).commit_index(), 1);
    assert_eq!(c.applied(2), vec!["a"]);
    // A later commit index beyond what this request carried is capped at its last entry.
    c.deliver(msg(1, 2, 1, append(2, 1, vec![], 9)));
    assert_eq!(c.node(2).commit_index(), 2);
    assert_eq!(c.applied(2), vec!["a", "b"]);
}

#[test]
fn duplicate_append_entries_are_idempotent() {
    let mut c = Cluster::new(3, 5);
    let req = append(
        0,
        0,
        vec![Entry::normal(1, 1, "a"), Entry::normal(2, 1, "b")],
        0,
    );
    c.deliver(msg(1, 2, 1, req.clone()));
    c.deliver(msg(
        1,
        2,
        1,
        append(2, 1, vec![Entry::normal(3, 1, "c")], 0),
    ));
    // A delayed duplicate of the first request must not truncate entry 3.
    c.deliver(msg(1, 2, 1, req));
    assert_eq!(c.log_terms(2), vec![1, 1, 1]);
}

/// The six follower logs of Figure 7, for a leader whose log has terms
/// 1 1 1 4 4 5 5 6 6 6 and which leads term 8.
#[test]
fn figure_7_all_six_follower_logs_are_repaired() {
    let leader_terms = [1, 1, 1, 4, 4, 5, 5, 6, 6, 6];
    let followers: [(&str, &[u64]); 6] = [
        ("a", &[1, 1, 1, 4, 4, 5, 5, 6, 6]),
        ("b", &[1, 1, 1, 4]),
        ("c", &[1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6]),
        ("d", &[1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7]),
        ("e", &[1, 1, 1, 4, 4, 4, 4]),
        ("f", &[1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3]),
    ];
    for (case, follower) in followers {
        // Node 1 is the leader (term 7, about to win term 8), node 2 the follower of the
        // figure, node 3 a follower with the leader's log so that node 1 can be elected.
        let mut c = Cluster::with(
            3,
            7,
            |_| {},
            |i| InitialState {
                hard_state: HardState {
                    term: 7,
                    voted_for: None,
                },
                entries: entries_with_terms(if i == 2 { follower } else { &leader_terms }),
                ..Default::default()
            },
        );
        c.partition(1, 2);
        c.elect(1);
        c.heal();
        assert_eq!(c.node(1).term(), 8, "case {case}");
        // Heartbeats make node 1 probe node 2 until their logs match.
        for _ in 0..3 {
            c.tick(1);
            c.deliver_all();
        }
        let mut expected = leader_terms.to_vec();
        expected.push(8);
        assert_eq!(
            c.log_terms(2),
            expected,
            "case ({case}): the follower's log equals the leader's"
        );
        assert_eq!(c.node(2).commit_index(), 11, "case ({case})");
    }
}

#[test]
fn figure_8_old_term_entry_not_committed_by_counting() {
    assert!(
        figure_8_commit_index(|_| {}) < 2,
        "an entry of term 2 must not be committed by counting replicas in term 4"
    );
}

/// The directed test above must be able to fail: with the rule broken on purpose, the same
/// scenario commits the old entry. (The randomized simulator did not reach this scenario in
/// 60 000 seeds, so this directed test is what guards the rule.)
#[cfg(feature = "bug-injection")]
#[test]
fn figure_8_scenario_detects_commit_by_counting() {
    let commit = figure_8_commit_index(|c| {
        c.node_mut(1).core.inject_bugs(crate::core::InjectedBugs {
            commit_old_term_by_counting: true,
            ..Default::default()
        })
    });
    assert_eq!(commit, 2);
}

/// Figure 8 (c): S1 leads term 4 with entry (2, term 2) replicated to a majority but not
/// its no-op. Returns S1's commit index; it must not reach 2, since (2, 2) can still be
/// overwritten by S5's (2, 3).
fn figure_8_commit_index(setup: impl Fn(&mut Cluster)) -> u64 {
    let mut c = Cluster::with(
        5,
        8,
        |_| {},
        |i| InitialState {
            hard_state: HardState {
                term: 3,
                voted_for: None,
            },
            entries: match i {
                1..=3 => entries_with_terms(&[1, 2]),
                4 => entries_with_terms(&[1]),
                _ => entries_with_terms(&[1, 3]),
            },
            ..Default::default()
        },
    );
    setup(&mut c);
    // S1 wins term 4 but only its no-op's AppendEntries to S2 and S3 arrive after a crash
    // would have happened: hold back every AppendEntries so nothing of term 4 replicates.
    c.expire_election_timeout(1);
    loop {
        let votes = c.take(|m| m.kind() != "AppendEntries");
        if votes.is_empty() {
            break;
        }
        for m in votes {
            c.deliver(m);
        }
    }
    assert_eq!(c.node(1).role(), Role::Leader);
    assert_eq!(c.node(1).term(), 4);
    let appends = c.take(|_| true);
    // Deliver to S2 and S3 only the part that carries (2, 2), i.e. strip the no-op: the
    // followers then hold (2, 2) and acknowledge index 2.
    for m in appends {
        if let MessageBody::AppendEntries(mut a) = m.body.clone() {
            a.entries.retain(|e| e.index <= 2);
            let mut m = m;
            m.body = MessageBody::AppendEntries(a);
            if m.to == id(2) || m.to == id(3) {
                c.deliver(m);
            }
        }
    }
    let acks = c.take(|m| m.kind() == "AppendEntriesResponse");
    assert!(!acks.is_empty());
    for m in acks {
        c.deliver(m);
    }
    c.node(1).commit_index()
}

#[test]
fn commit_index_never_decreases() {
    let mut c = Cluster::new(3, 9);
    c.elect(1);
    c.propose(1, "a");
    c.deliver_all();
    let committed = c.node(2).commit_index();
    // A delayed heartbeat carrying an older commit index must not lower it.
    c.deliver(msg(
        1,
        2,
        c.node(1).term(),
        MessageBody::Heartbeat(crate::message::Heartbeat {
            commit: 0,
            read_seq: 0,
        }),
    ));
    assert_eq!(c.node(2).commit_index(), committed);
}

/// Wipes node `i`'s storage and restarts it empty (an operator replaced its data
/// directory).
fn wipe(c: &mut Cluster, i: usize) {
    let node = c.node_mut(i);
    node.stored_log.clear();
    node.stored_snapshot = None;
    node.stored_hard_state = HardState::default();
    c.restart(i, 99);
}

#[test]
fn a_follower_that_lost_its_log_is_caught_up_again() {
    for compacted in [false, true] {
        let mut c = Cluster::with(
            3,
            81,
            |cfg| {
                if compacted {
                    cfg.options.snapshot_threshold = 3;
                    cfg.options.log_compaction_min_entries = 0;
                }
            },
            |_| InitialState::default(),
        );
        c.elect(1);
        c.deliver_all();
        for k in 0..5 {
            c.propose(1, &format!("before-{k}"));
            c.deliver_all();
        }
        assert_eq!(c.applied(3), c.applied(1));
        wipe(&mut c, 3);
        // The leader's heartbeats reach it; the next write shows it holds nothing.
        c.heartbeat_round(1);
        c.propose(1, "after");
        for _ in 0..20 {
            c.tick_all();
            c.deliver_all();
        }
        assert_eq!(c.node(1).role(), Role::Leader, "compacted={compacted}");
        assert_eq!(
            c.applied(3),
            c.applied(1),
            "compacted={compacted}: the wiped follower holds everything again"
        );
        assert_eq!(c.progress(1, 3).match_index, c.node(1).last_index());
    }
}
