//! Proposals: where they are accepted, how a batch is laid out in the log and on the
//! wire, the size limits, and how committed entries are handed to the application.

use super::harness::*;
use crate::core::InitialState;
use crate::error::{Error, OverloadReason};
use crate::types::{EntryKind, Role};

fn commands(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("cmd-{i}")).collect()
}

fn as_strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn proposal_on_follower_returns_not_leader_with_leader_hint() {
    let mut c = Cluster::new(3, 41);
    let r = c.try_propose(2, &["x"]);
    assert!(matches!(r, Err(Error::NotLeader { leader: None })), "{r:?}");

    c.elect(1);
    c.deliver_all();
    let last = c.node(2).last_index();
    let r = c.try_propose(2, &["x"]);
    match r {
        Err(Error::NotLeader { leader }) => assert_eq!(leader, Some(id(1))),
        other => panic!("expected NotLeader, got {other:?}"),
    }
    assert_eq!(
        c.node(2).last_index(),
        last,
        "nothing appended on the follower"
    );
    assert!(c.queue.is_empty(), "nothing sent");

    // A node campaigning knows no leader.
    c.isolate(3);
    c.expire_election_timeout(3);
    assert_ne!(c.node(3).role(), Role::Follower);
    let r = c.try_propose(3, &["x"]);
    assert!(matches!(r, Err(Error::NotLeader { leader: None })), "{r:?}");
}

/// Ten commands proposed together take consecutive indices in the leader's term, go to
/// storage in one write batch and to each follower in one AppendEntries.
#[test]
fn batch_of_commands_becomes_one_append() {
    let mut c = Cluster::new(3, 42);
    c.elect(1);
    c.deliver_all();
    let last = c.node(1).last_index();
    let term = c.node(1).term();
    let skip = [c.appends_sent_to(2).len(), c.appends_sent_to(3).len()];
    c.node_mut(1).hold_writes = true;

    let cmds = commands(10);
    let (first, t) = c.try_propose(1, &as_strs(&cmds)).unwrap();
    assert_eq!((first, t), (last + 1, term));
    for (k, cmd) in cmds.iter().enumerate() {
        let e = c.node(1).entry(first + k as u64).expect("appended");
        assert_eq!((e.term, e.kind), (term, EntryKind::Normal));
        assert_eq!(&e.data[..], cmd.as_bytes());
    }
    assert_eq!(c.node(1).last_index(), first + 9);

    let writes = &c.node_mut(1).pending_writes;
    assert_eq!(writes.len(), 1, "one write batch");
    let indices: Vec<u64> = writes[0].log.entries.iter().map(|e| e.index).collect();
    assert_eq!(indices, (first..first + 10).collect::<Vec<_>>());

    for (k, follower) in [2, 3].into_iter().enumerate() {
        let appends: Vec<_> = c
            .appends_sent_to(follower)
            .into_iter()
            .skip(skip[k])
            .filter(|a| !a.entries.is_empty())
            .collect();
        assert_eq!(appends.len(), 1, "one AppendEntries to node {follower}");
        assert_eq!(appends[0].entries.len(), 10);
        assert_eq!(appends[0].prev_log_index, last);
    }

    c.persist(1);
    c.deliver_all();
    for i in 1..=3 {
        assert_eq!(c.applied(i), cmds, "node {i}");
    }
}

#[test]
fn proposal_larger_than_limit_is_refused_and_nothing_appended() {
    let mut c = Cluster::with(
        3,
        43,
        |cfg| cfg.tuning.max_proposal_bytes = 100,
        |_| InitialState::default(),
    );
    c.elect(1);
    c.deliver_all();
    let last = c.node(1).last_index();
    let sent = c.sent.len();

    let too_big = "x".repeat(101);
    let r = c.try_propose(1, &["small", too_big.as_str()]);
    assert!(
        matches!(
            r,
            Err(Error::ProposalTooLarge {
                size: 101,
                limit: 100
            })
        ),
        "{r:?}"
    );
    assert_eq!(
        c.node(1).last_index(),
        last,
        "no part of the batch was appended"
    );
    assert_eq!(c.sent.len(), sent, "nothing sent");

    let at_limit = "y".repeat(100);
    let (index, _) = c.try_propose(1, &[at_limit.as_str()]).unwrap();
    assert_eq!(index, last + 1);
    c.deliver_all();
    assert_eq!(c.applied(2), vec![at_limit]);
}

/// With a 30-byte cap on uncommitted bytes (and 10-byte proposals), the leader cut off
/// from its followers accepts three proposals, then refuses with `Overloaded` until the
/// entries commit.
#[test]
fn uncommitted_bytes_cap_refuses_until_commit() {
    let mut c = Cluster::with(
        3,
        44,
        |cfg| {
            cfg.tuning.max_proposal_bytes = 10;
            cfg.tuning.max_uncommitted_bytes = Some(30);
        },
        |_| InitialState::default(),
    );
    c.elect(1);
    c.deliver_all();
    c.isolate(2);
    c.isolate(3);
    let ten = "0123456789";
    for _ in 0..3 {
        c.try_propose(1, &[ten]).unwrap();
    }
    c.deliver_all();
    let last = c.node(1).last_index();
    let r = c.try_propose(1, &[ten]);
    assert!(
        matches!(
            r,
            Err(Error::Overloaded {
                reason: OverloadReason::UncommittedBytes {
                    uncommitted: 30,
                    size: 10,
                    limit: 30
                }
            })
        ),
        "{r:?}"
    );
    let r = c.try_propose(1, &["1"]);
    assert!(
        matches!(r, Err(Error::Overloaded { .. })),
        "even one byte over is refused: {r:?}"
    );
    assert_eq!(c.node(1).last_index(), last, "nothing appended");

    c.heal();
    for _ in 0..3 {
        if c.node(1).commit_index() == last {
            break;
        }
        c.heartbeat_round(1);
    }
    assert_eq!(c.node(1).commit_index(), last);
    c.try_propose(1, &[ten])
        .expect("accepted once the backlog committed");
    c.deliver_all();
    assert_eq!(c.applied(2), vec![ten; 4]);

    // With nothing uncommitted, one batch above the cap is still admitted (so a batch can
    // never wedge the leader); the next one is refused.
    c.try_propose(1, &[ten; 4])
        .expect("an empty backlog admits one batch");
    assert!(matches!(
        c.try_propose(1, &[ten]),
        Err(Error::Overloaded { .. })
    ));
}

#[test]
fn committed_entries_handed_out_in_batches_of_max_apply_batch_size() {
    let mut c = Cluster::with(
        3,
        45,
        |cfg| cfg.tuning.max_apply_batch_size = 3,
        |_| InitialState::default(),
    );
    c.elect(1);
    c.deliver_all();
    let cmds = commands(10);
    c.try_propose(1, &as_strs(&cmds)).unwrap();
    c.deliver_all();
    for i in 1..=3 {
        let batches = &c.node_mut(i).apply_batches;
        assert!(batches.iter().all(|b| *b <= 3), "node {i}: {batches:?}");
        assert!(
            batches.contains(&3),
            "node {i}: batches were filled: {batches:?}"
        );
        assert_eq!(
            batches.iter().sum::<usize>(),
            11,
            "node {i}: the no-op and 10 commands"
        );
        assert_eq!(c.applied(i), cmds, "node {i}: applied in proposal order");
        assert_eq!(c.node(i).applied_index(), 11);
    }
}

/// The leader's no-op is handed out with the committed entries (so the applied index
/// passes it) but as an `EntryKind::Noop`, never as an application command.
#[test]
fn noop_entries_are_not_applied_as_commands() {
    let mut c = Cluster::new(3, 46);
    c.elect(1);
    // A heartbeat round so that every follower knows the no-op committed (see
    // flow_control::follower_answering_after_commit_learns_commit_index_at_once).
    c.heartbeat_round(1);
    for i in 1..=3 {
        assert_eq!(
            c.node(i).entry(1).map(|e| e.kind),
            Some(EntryKind::Noop),
            "node {i}"
        );
        assert_eq!(
            c.node_mut(i).apply_batches,
            vec![1],
            "node {i}: the no-op was handed out"
        );
        assert_eq!(c.node(i).applied_index(), 1, "node {i}");
        assert!(c.applied(i).is_empty(), "node {i}");
    }
    c.propose(1, "x");
    c.deliver_all();
    for i in 1..=3 {
        assert_eq!(c.applied(i), vec!["x"], "node {i}");
        assert_eq!(c.node(i).applied_index(), 2, "node {i}");
    }
}
