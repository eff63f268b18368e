//! §7 log compaction: snapshot triggering, compaction that keeps a tail of entries,
//! InstallSnapshot in chunks under loss, duplication and reordering, stale snapshots,
//! keeping a matching log suffix, and restart from a snapshot plus a log suffix.

use bytes::Bytes;

use super::harness::*;
use crate::config::Config;
use crate::core::{InitialState, SnapshotLog, SnapshotWrite, CHUNK_WINDOW};
use crate::message::{
    AppendEntries, InstallSnapshot, InstallSnapshotResponse, Message, MessageBody,
};
use crate::types::{Entry, HardState, Role, Snapshot, SnapshotMeta};

fn small_snapshots(c: &mut Config) {
    c.options.snapshot_threshold = 20;
    c.options.log_compaction_min_entries = 5;
    c.tuning.max_snapshot_chunk_size = 16;
}

fn cluster(seed: u64) -> Cluster {
    Cluster::with(3, seed, small_snapshots, |_| InitialState::default())
}

fn propose_n(c: &mut Cluster, leader: usize, n: usize, prefix: &str) {
    for k in 0..n {
        c.propose(leader, &format!("{prefix}{k}"));
        c.deliver_all();
    }
}

fn install_responses(c: &mut Cluster, to: usize) -> Vec<InstallSnapshotResponse> {
    c.take(|m| m.to == id(to) && m.kind() == "InstallSnapshotResponse")
        .into_iter()
        .filter_map(|m| match m.body {
            MessageBody::InstallSnapshotResponse(r) => Some(r),
            _ => None,
        })
        .collect()
}

#[test]
fn snapshot_is_taken_at_the_threshold_and_the_log_keeps_a_tail() {
    let mut c = cluster(1);
    c.elect(1);
    propose_n(&mut c, 1, 30, "x");
    for i in 1..=3 {
        let n = c.node(i);
        let snap = n.snapshot_index();
        assert!(snap >= 20, "node {i}: snapshot at {snap}");
        // Entries after snapshot - log_compaction_min_entries are still in the log.
        assert!(
            n.term_at(snap - 5).is_some(),
            "node {i} keeps 5 entries behind the snapshot"
        );
        assert!(
            n.term_at(snap - 6).is_none(),
            "node {i} dropped the older entries"
        );
        let stored = c.nodes[&id(i)]
            .stored_snapshot
            .as_ref()
            .expect("stored")
            .meta
            .last_index;
        assert_eq!(stored, snap);
        let first_stored = c.nodes[&id(i)].stored_log.first().map(|e| e.index);
        assert_eq!(
            first_stored,
            Some(snap - 4),
            "storage compacted the same prefix"
        );
    }
}

#[test]
fn lagging_follower_catches_up_through_a_snapshot() {
    let mut c = cluster(2);
    c.elect(1);
    c.isolate(3);
    propose_n(&mut c, 1, 60, "y");
    assert!(
        c.node(1).term_at(1).is_none(),
        "the entries node 3 needs were compacted"
    );
    c.heal();
    for _ in 0..20 {
        c.tick(1);
        c.deliver_all();
    }
    assert!(
        c.count_sent("InstallSnapshot") >= 2,
        "sent in several chunks"
    );
    assert_eq!(
        c.applied(3),
        c.applied(1),
        "node 3's state machine equals the leader's"
    );
    assert_eq!(c.log_tail(3), c.log_tail(1));
    assert_eq!(c.node(3).commit_index(), c.node(1).commit_index());
    // Replication continues normally afterwards.
    c.propose(1, "after");
    c.deliver_all();
    assert_eq!(c.applied(3).last().map(String::as_str), Some("after"));
}

#[test]
fn snapshot_survives_lost_duplicated_and_reordered_chunks() {
    for seed in 0..20u64 {
        let mut c = cluster(3 + seed);
        c.elect(1);
        c.isolate(3);
        propose_n(&mut c, 1, 60, "z");
        c.heal();
        let mut rng = crate::rand::SeededRand::new(seed);
        for _ in 0..400 {
            c.tick(1);
            // Shuffle, duplicate and drop snapshot traffic; deliver everything else.
            let mut chunks = c.take(|m| {
                matches!(
                    m.body,
                    MessageBody::InstallSnapshot(_) | MessageBody::InstallSnapshotResponse(_)
                )
            });
            c.deliver_all();
            use crate::rand::Rand;
            for k in (1..chunks.len()).rev() {
                let j = rng.gen_range(0, k as u64 + 1) as usize;
                chunks.swap(k, j);
            }
            for m in chunks {
                match rng.gen_range(0, 10) {
                    0..=1 => {} // lost
                    2 => {
                        c.deliver(m.clone());
                        c.deliver(m);
                    }
                    _ => c.deliver(m),
                }
            }
            c.deliver_all();
            if c.applied(3) == c.applied(1) {
                break;
            }
        }
        assert_eq!(c.applied(3), c.applied(1), "seed {seed}");
        assert_eq!(c.log_tail(3), c.log_tail(1), "seed {seed}");
    }
}

#[test]
fn corrupted_snapshot_is_rejected_and_sent_again() {
    let mut c = cluster(4);
    c.elect(1);
    c.isolate(3);
    propose_n(&mut c, 1, 60, "w");
    c.heal();
    let mut corrupted = false;
    for _ in 0..200 {
        c.tick(1);
        // Deliver one message at a time so the first chunk can be damaged in flight.
        while let Some(mut m) = c.queue.pop_front() {
            if let MessageBody::InstallSnapshot(ref mut s) = m.body {
                if !corrupted && !s.data.is_empty() {
                    let mut data = s.data.to_vec();
                    data[0] ^= 0xff;
                    s.data = Bytes::from(data);
                    corrupted = true;
                }
            }
            c.deliver(m);
        }
        if c.applied(3) == c.applied(1) {
            break;
        }
    }
    assert!(corrupted);
    assert_eq!(c.applied(3), c.applied(1), "installed after a clean resend");
}

#[test]
fn stale_install_snapshot_is_ignored() {
    let mut c = cluster(5);
    c.elect(1);
    propose_n(&mut c, 1, 10, "s");
    let before = c.log_tail(2);
    let commit = c.node(2).commit_index();
    let term = c.node(1).term();
    let stale = MessageBody::InstallSnapshot(InstallSnapshot {
        meta: SnapshotMeta {
            last_index: 3,
            last_term: term,
            membership: None,
        },
        offset: 0,
        data: Bytes::from_static(b"old"),
        done: true,
        total_size: 3,
        checksum: crc32c::crc32c(b"old"),
    });
    c.deliver(msg(1, 2, term, stale));
    let r = install_responses(&mut c, 1);
    assert_eq!(r.len(), 1);
    assert!(r[0].installed, "the follower's log already covers it");
    assert_eq!(c.log_tail(2), before, "nothing was replaced");
    assert_eq!(c.node(2).commit_index(), commit);
    assert_eq!(c.node(2).snapshot_index(), 0);
}

fn snapshot_of(index: u64, term: u64, commands: &[&str]) -> Snapshot {
    let data = commands.join("\n");
    Snapshot {
        meta: SnapshotMeta {
            last_index: index,
            last_term: term,
            membership: None,
        },
        data: Bytes::from(data),
    }
}

fn deliver_whole(c: &mut Cluster, to: usize, term: u64, snap: &Snapshot) {
    c.deliver(msg(
        1,
        to,
        term,
        MessageBody::InstallSnapshot(InstallSnapshot {
            meta: snap.meta.clone(),
            offset: 0,
            data: snap.data.clone(),
            done: true,
            total_size: snap.data.len() as u64,
            checksum: crc32c::crc32c(&snap.data),
        }),
    ));
}

#[test]
fn follower_keeps_the_log_suffix_that_matches_the_snapshot() {
    // Node 2 holds entries 1..=6 of term 1, none committed; the snapshot covers 1..=4.
    let mut c = Cluster::with(3, 6, small_snapshots, |_| InitialState {
        hard_state: HardState {
            term: 1,
            voted_for: None,
        },
        entries: entries_with_terms(&[1, 1, 1, 1, 1, 1]),
        ..Default::default()
    });
    let snap = snapshot_of(4, 1, &["0", "1", "2", "3"]);
    deliver_whole(&mut c, 2, 1, &snap);
    assert_eq!(c.node(2).snapshot_index(), 4);
    assert_eq!(
        c.node(2).last_index(),
        6,
        "entries 5 and 6 follow the snapshot and stay"
    );
    assert_eq!(c.applied(2), vec!["0", "1", "2", "3"]);
    let r = install_responses(&mut c, 1);
    assert!(r[0].installed);
    assert_eq!(
        c.nodes[&id(2)]
            .stored_log
            .iter()
            .map(|e| e.index)
            .collect::<Vec<_>>(),
        vec![5, 6]
    );
}

#[test]
fn follower_discards_a_log_that_conflicts_with_the_snapshot() {
    let mut c = Cluster::with(3, 7, small_snapshots, |_| InitialState {
        hard_state: HardState {
            term: 2,
            voted_for: None,
        },
        entries: entries_with_terms(&[1, 1, 1, 1, 1, 1]),
        ..Default::default()
    });
    let snap = snapshot_of(4, 2, &["a", "b", "c", "d"]);
    deliver_whole(&mut c, 2, 2, &snap);
    assert_eq!(c.node(2).snapshot_index(), 4);
    assert_eq!(c.node(2).last_index(), 4, "the conflicting log is gone");
    assert!(c.nodes[&id(2)].stored_log.is_empty());
    assert_eq!(c.applied(2), vec!["a", "b", "c", "d"]);
}

#[test]
fn snapshot_acknowledgement_waits_until_it_is_durable() {
    let mut c = Cluster::with(3, 8, small_snapshots, |_| InitialState::default());
    c.node_mut(2).hold_writes = true;
    let snap = snapshot_of(4, 1, &["a", "b", "c", "d"]);
    deliver_whole(&mut c, 2, 1, &snap);
    assert!(
        install_responses(&mut c, 1).is_empty(),
        "no acknowledgement before the write"
    );
    c.persist(2);
    let r = install_responses(&mut c, 1);
    assert!(r.len() == 1 && r[0].installed);
    assert_eq!(
        c.nodes[&id(2)]
            .stored_snapshot
            .as_ref()
            .map(|s| s.meta.last_index),
        Some(4)
    );
}

#[test]
fn node_restarts_from_a_snapshot_and_a_log_suffix() {
    // Every node restarts with a snapshot at 20 and entries 16..=25 in storage (storage
    // may keep entries below the snapshot); the new leader commits and the state
    // machines replay only what follows the snapshot.
    let commands: Vec<String> = (0..20).map(|k| format!("c{k}")).collect();
    let refs: Vec<&str> = commands.iter().map(String::as_str).collect();
    let mut c = Cluster::with_snapshots(3, 9, small_snapshots, |_| {
        let initial = InitialState {
            hard_state: HardState {
                term: 1,
                voted_for: None,
            },
            snapshot: None,
            entries: entries_with_terms(&[1; 25])[15..].to_vec(),
        };
        (initial, Some(snapshot_of(20, 1, &refs)))
    });
    for i in 1..=3 {
        assert_eq!(c.node(i).commit_index(), 20, "the snapshot is committed");
        assert_eq!(c.node(i).last_index(), 25);
    }
    c.elect(1);
    c.deliver_all();
    for i in 1..=3 {
        let applied = c.applied(i);
        assert_eq!(
            applied.len(),
            5,
            "node {i} applied only the entries after the snapshot"
        );
        assert_eq!(applied[0], "20");
        assert_eq!(c.node(i).applied_index(), 26);
        assert_eq!(c.node(i).role() == Role::Leader, i == 1);
    }
}

#[test]
fn in_memory_log_stays_bounded_under_sustained_writes() {
    // threshold 20 + 5 kept behind the snapshot: the log never holds much more than that.
    let mut c = cluster(10);
    c.elect(1);
    let mut longest = 0;
    for k in 0..2000 {
        c.propose(1, &format!("m{k}"));
        c.deliver_all();
        for i in 1..=3 {
            let n = c.node(i);
            longest = longest.max(n.last_index() + 1 - n.first_index());
            let stored = c.nodes[&id(i)].stored_log.len() as u64;
            assert!(stored <= 26, "node {i} stores {stored} entries");
        }
    }
    assert!(
        longest <= 20 + 5 + 1,
        "the in-memory log reached {longest} entries"
    );
    assert_eq!(c.applied(2).len(), 2000);
}

#[test]
fn replication_continues_while_a_snapshot_is_being_built() {
    let mut c = cluster(11);
    for i in 1..=3 {
        c.node_mut(i).defer_snapshots = true;
    }
    c.elect(1);
    propose_n(&mut c, 1, 25, "h");
    assert!(
        c.nodes[&id(1)].deferred_snapshot.is_some(),
        "a snapshot was requested"
    );
    let commit = c.node(1).commit_index();
    propose_n(&mut c, 1, 25, "more");
    assert_eq!(
        c.node(1).commit_index(),
        commit + 25,
        "commits go on while it is built"
    );
    assert_eq!(
        c.node(1).snapshot_index(),
        0,
        "nothing compacted before it is durable"
    );
    c.finish_snapshot(1);
    let snap = c.node(1).snapshot_index();
    assert!(
        snap >= 20 && snap <= commit,
        "the snapshot covers what was applied when it was asked for"
    );
    assert_eq!(c.applied(1).len(), 50);
}

#[test]
fn every_node_restarts_and_keeps_all_committed_data() {
    let mut c = cluster(12);
    c.elect(1);
    propose_n(&mut c, 1, 47, "p");
    let before = c.applied(1);
    for i in 1..=3 {
        c.restart(i, 100 + i as u64);
    }
    for _ in 0..60 {
        c.tick_all();
        c.deliver_all();
    }
    assert_eq!(c.leaders().len(), 1);
    for i in 1..=3 {
        assert_eq!(
            c.applied(i),
            before,
            "node {i} recovered every committed command"
        );
    }
}

/// Node 2 at term 1 with entries 1..=10 of term 1, all durable; nothing committed.
fn follower_with_ten_entries(seed: u64) -> Cluster {
    Cluster::with(3, seed, small_snapshots, |_| InitialState {
        hard_state: HardState {
            term: 1,
            voted_for: None,
        },
        entries: entries_with_terms(&[1; 10]),
        ..Default::default()
    })
}

fn append(prev: (u64, u64), entries: &[(u64, u64)], commit: u64) -> MessageBody {
    MessageBody::AppendEntries(AppendEntries {
        prev_log_index: prev.0,
        prev_log_term: prev.1,
        entries: entries
            .iter()
            .map(|&(i, t)| Entry::normal(i, t, format!("{i}")))
            .collect(),
        leader_commit: commit,
    })
}

fn whole(snap: &Snapshot) -> MessageBody {
    MessageBody::InstallSnapshot(InstallSnapshot {
        meta: snap.meta.clone(),
        offset: 0,
        data: snap.data.clone(),
        done: true,
        total_size: snap.data.len() as u64,
        checksum: crc32c::crc32c(&snap.data),
    })
}

/// Steps every message into node `to`'s core before its next `Ready`, as the runtime does
/// with what arrived together, then drains that `Ready`.
fn step_together(c: &mut Cluster, to: usize, messages: Vec<Message>) {
    for m in messages {
        c.node_mut(to).core.step(m);
    }
    c.process(&id(to));
}

fn stored_terms(c: &Cluster, i: usize) -> Vec<(u64, u64)> {
    c.nodes[&id(i)]
        .stored_log
        .iter()
        .map(|e| (e.index, e.term))
        .collect()
}

#[test]
fn install_after_a_truncating_append_in_the_same_batch_discards_the_stored_log() {
    // An old leader (term 2) replaces entry 4 onwards; a newer one (term 3) sends a
    // snapshot at (7, 1), which the core's log no longer holds but storage still does. The
    // core discards its log; storage must too, or it keeps 8..=10 and refuses the next
    // append at 8.
    let mut c = follower_with_ten_entries(20);
    let snap = snapshot_of(7, 1, &["a", "b", "c", "d", "e", "f", "g"]);
    step_together(
        &mut c,
        2,
        vec![
            msg(1, 2, 2, append((3, 1), &[(4, 2)], 0)),
            msg(3, 2, 3, whole(&snap)),
        ],
    );
    assert_eq!(c.node(2).snapshot_index(), 7);
    assert_eq!(
        c.node(2).last_index(),
        7,
        "the core's log ends at the snapshot"
    );
    assert_eq!(stored_terms(&c, 2), vec![], "storage discarded its log too");
    c.deliver(msg(3, 2, 3, append((7, 1), &[(8, 1), (9, 3)], 9)));
    assert_eq!(c.log_tail(2), vec![(8, 1), (9, 3)]);
    assert_eq!(
        stored_terms(&c, 2),
        c.log_tail(2),
        "storage holds the core's log"
    );
    assert_eq!(
        c.applied(2),
        vec!["a", "b", "c", "d", "e", "f", "g", "8", "9"]
    );
}

#[test]
fn install_keeps_the_stored_log_under_a_pending_truncation_above_the_snapshot() {
    // The truncation at 9 sits above the snapshot at (7, 1): the log up to 8 is kept, the
    // truncation runs after the install, then the new entry 9.
    let mut c = follower_with_ten_entries(21);
    let snap = snapshot_of(7, 1, &["a", "b", "c", "d", "e", "f", "g"]);
    step_together(
        &mut c,
        2,
        vec![
            msg(1, 2, 2, append((8, 1), &[(9, 2)], 0)),
            msg(3, 2, 3, whole(&snap)),
        ],
    );
    assert_eq!(c.log_tail(2), vec![(8, 1), (9, 2)]);
    let stored: Vec<(u64, u64)> = stored_terms(&c, 2)
        .into_iter()
        .filter(|(i, _)| *i > 7)
        .collect();
    assert_eq!(stored, c.log_tail(2));
    c.deliver(msg(3, 2, 3, append((9, 2), &[(10, 3)], 10)));
    assert_eq!(c.log_tail(2), vec![(8, 1), (9, 2), (10, 3)]);
    assert_eq!(c.node(2).applied_index(), 10);
}

#[test]
fn install_of_an_entry_not_yet_written_discards_and_rewrites_what_follows() {
    // Node 2 stores 1..=3; entries 4..=8 arrive with the snapshot at (6, 1) in one batch.
    // Storage does not hold 6, so it discards its log; 7 and 8 are written after it.
    let mut c = Cluster::with(3, 22, small_snapshots, |_| InitialState {
        hard_state: HardState {
            term: 1,
            voted_for: None,
        },
        entries: entries_with_terms(&[1; 3]),
        ..Default::default()
    });
    let snap = snapshot_of(6, 1, &["a", "b", "c", "d", "e", "f"]);
    let entries: Vec<(u64, u64)> = (4..=8).map(|i| (i, 1)).collect();
    step_together(
        &mut c,
        2,
        vec![
            msg(1, 2, 1, append((3, 1), &entries, 0)),
            msg(1, 2, 1, whole(&snap)),
        ],
    );
    assert_eq!(c.log_tail(2), vec![(7, 1), (8, 1)]);
    assert_eq!(stored_terms(&c, 2), vec![(7, 1), (8, 1)]);
}

#[test]
fn install_while_the_log_write_is_in_flight_keeps_what_it_writes() {
    // Entries 4..=8 were handed to storage but are not durable yet when the snapshot at
    // (6, 1) arrives: storage runs writes in order, so it holds 6 at the install.
    let mut c = Cluster::with(3, 23, small_snapshots, |_| InitialState {
        hard_state: HardState {
            term: 1,
            voted_for: None,
        },
        entries: entries_with_terms(&[1; 3]),
        ..Default::default()
    });
    c.node_mut(2).hold_writes = true;
    let entries: Vec<(u64, u64)> = (4..=8).map(|i| (i, 1)).collect();
    c.deliver(msg(1, 2, 1, append((3, 1), &entries, 0)));
    let snap = snapshot_of(6, 1, &["a", "b", "c", "d", "e", "f"]);
    c.deliver(msg(1, 2, 1, whole(&snap)));
    assert!(
        c.nodes[&id(2)]
            .pending_writes
            .back()
            .is_some_and(|w| w.snapshot.iter().any(|s| matches!(
                s,
                SnapshotWrite::Install {
                    log: SnapshotLog::Keep,
                    ..
                }
            ))),
        "the install keeps the log written before it"
    );
    c.persist(2);
    assert_eq!(c.log_tail(2), vec![(7, 1), (8, 1)]);
    let stored: Vec<(u64, u64)> = stored_terms(&c, 2)
        .into_iter()
        .filter(|(i, _)| *i > 6)
        .collect();
    assert_eq!(stored, vec![(7, 1), (8, 1)]);
}

fn chunk_of(m: &Message) -> Option<&InstallSnapshot> {
    match &m.body {
        MessageBody::InstallSnapshot(s) => Some(s),
        _ => None,
    }
}

/// Node 1 leads, node 3 lagged behind a compacted log; returns once the leader has begun
/// a transfer to node 3 (its first chunks are queued, not delivered).
fn transfer_started(seed: u64) -> Cluster {
    let mut c = cluster(seed);
    c.elect(1);
    c.isolate(3);
    propose_n(&mut c, 1, 60, "t");
    c.heal();
    for _ in 0..50 {
        c.tick(1);
        let held = c.deliver_all_except(|m| is_kind(m, "InstallSnapshot"));
        if !held.is_empty() {
            c.queue.extend(held);
            return c;
        }
    }
    panic!("the leader never started sending its snapshot");
}

#[test]
fn the_leader_names_chunks_and_storage_supplies_their_bytes() {
    let mut c = transfer_started(30);
    let info = c
        .node(1)
        .snapshot_info()
        .cloned()
        .expect("the leader holds a snapshot");
    let stored = c.nodes[&id(1)].stored_snapshot.clone().expect("stored");
    let chunks = c.nodes[&id(1)].chunks.clone();
    assert_eq!(chunks.len(), CHUNK_WINDOW as usize, "a window of chunks");
    let mut expect = 0u64;
    for chunk in &chunks {
        let s = chunk_of(&chunk.message).expect("an InstallSnapshot");
        assert!(s.data.is_empty(), "the core puts no bytes in a chunk");
        assert_eq!(s.offset, expect);
        assert_eq!(chunk.len, 16.min(info.size - s.offset));
        assert_eq!((s.total_size, s.checksum), (info.size, info.checksum));
        expect += chunk.len;
    }
    // What goes out carries the stored bytes at those offsets.
    for m in c.queue.iter().filter_map(chunk_of) {
        let at = m.offset as usize;
        assert_eq!(m.data, stored.data.slice(at..at + m.data.len()));
    }
    for _ in 0..100 {
        c.tick(1);
        c.deliver_all();
        if c.applied(3) == c.applied(1) {
            break;
        }
    }
    assert_eq!(c.applied(3), c.applied(1));
    assert_eq!(c.nodes[&id(3)].stored_snapshot, Some(stored));
}

#[test]
fn a_lost_chunk_is_sent_again_from_the_acknowledged_offset() {
    let mut c = transfer_started(31);
    // The first chunk is lost; the follower refuses the next ones (not at offset 0).
    let mut first = c.take(|m| is_kind(m, "InstallSnapshot"));
    let lost = first.remove(0);
    assert_eq!(chunk_of(&lost).map(|s| s.offset), Some(0));
    for m in first {
        c.deliver(m);
    }
    c.deliver_all();
    assert!(c.nodes[&id(3)].receiving.is_none(), "nothing accepted");
    let sent_before = c.nodes[&id(1)].chunks.len();
    let mut resent = false;
    for _ in 0..100 {
        c.tick(1);
        c.deliver_all();
        resent |= c.nodes[&id(1)].chunks[sent_before..]
            .iter()
            .any(|ch| ch.source().is_some_and(|(_, offset)| offset == 0));
        if c.applied(3) == c.applied(1) {
            break;
        }
    }
    assert!(resent, "offset 0 was sent again");
    assert_eq!(c.applied(3), c.applied(1), "installed after the resend");
}

#[test]
fn a_follower_restarted_mid_transfer_gets_the_snapshot_from_offset_zero() {
    let mut c = transfer_started(32);
    // Two chunks arrive (the rest of the window is lost), then node 3 crashes: its temp
    // file and its progress are gone.
    let chunks = c.take(|m| is_kind(m, "InstallSnapshot"));
    for m in chunks.into_iter().take(2) {
        c.deliver(m);
    }
    let received = c.nodes[&id(3)].receiving.as_ref().map(|(_, b)| b.len());
    assert_eq!(received, Some(32), "two chunks reached storage's temp file");
    c.restart(3, 77);
    assert!(c.nodes[&id(3)].receiving.is_none());
    let zeros_before = c.nodes[&id(1)]
        .chunks
        .iter()
        .filter(|ch| ch.source().is_some_and(|(_, o)| o == 0))
        .count();
    for _ in 0..200 {
        c.tick(1);
        c.tick(3);
        c.deliver_all();
        if c.applied(3) == c.applied(1) {
            break;
        }
    }
    let zeros = c.nodes[&id(1)]
        .chunks
        .iter()
        .filter(|ch| ch.source().is_some_and(|(_, o)| o == 0))
        .count();
    assert!(zeros > zeros_before, "the transfer started over");
    assert_eq!(c.applied(3), c.applied(1));
    assert_eq!(
        c.nodes[&id(3)].stored_snapshot,
        c.nodes[&id(1)].stored_snapshot
    );
}

#[test]
fn a_checksum_failure_asks_for_the_snapshot_again_and_installs_nothing() {
    let mut c = transfer_started(33);
    let info = c.node(1).snapshot_info().cloned().expect("held");
    let mut damaged = false;
    let mut judged = false;
    for _ in 0..200 {
        c.tick(1);
        // One message at a time, so the first chunk can be damaged in flight and the
        // follower's answer to the last chunk of that transfer seen.
        while let Some(mut m) = c.queue.pop_front() {
            let last_of_damaged = match &mut m.body {
                MessageBody::InstallSnapshot(s) => {
                    if !damaged && s.offset == 0 {
                        let mut data = s.data.to_vec();
                        data[0] ^= 0xff;
                        s.data = Bytes::from(data);
                        damaged = true;
                    }
                    damaged && !judged && s.done
                }
                _ => false,
            };
            c.deliver(m);
            if last_of_damaged && c.node(3).snapshot_index() == 0 {
                judged = true;
                let answer = c
                    .queue
                    .iter()
                    .rev()
                    .find_map(|m| match &m.body {
                        MessageBody::InstallSnapshotResponse(r) if m.from == id(3) => {
                            Some(r.clone())
                        }
                        _ => None,
                    })
                    .expect("the follower answered");
                assert_eq!(
                    (answer.next_offset, answer.installed),
                    (0, false),
                    "asks again from offset 0"
                );
                assert!(
                    c.nodes[&id(3)].stored_snapshot.is_none(),
                    "nothing installed"
                );
            }
        }
        if c.applied(3) == c.applied(1) {
            break;
        }
    }
    assert!(damaged && judged);
    assert_eq!(
        c.node(3).snapshot_info(),
        Some(&info),
        "installed after a clean resend"
    );
    assert_eq!(c.applied(3), c.applied(1));
}

#[test]
fn the_state_machine_is_restored_only_once_the_install_is_durable() {
    let mut c = follower_with_ten_entries(34);
    c.node_mut(2).hold_writes = true;
    let snap = snapshot_of(7, 1, &["a", "b", "c", "d", "e", "f", "g"]);
    step_together(
        &mut c,
        2,
        vec![
            msg(3, 2, 3, whole(&snap)),
            msg(3, 2, 3, append((7, 1), &[(8, 1), (9, 3)], 9)),
        ],
    );
    assert!(
        c.applied(2).is_empty(),
        "no restore before the install is durable"
    );
    assert_eq!(c.node(2).applied_index(), 0);
    assert!(
        c.nodes[&id(2)].apply_batches.is_empty(),
        "no entry after the snapshot is handed out before the restore"
    );
    c.persist(2);
    // Entry 8 of term 1 was already stored ("7"), so the leader's copy is skipped.
    assert_eq!(
        c.applied(2),
        vec!["a", "b", "c", "d", "e", "f", "g", "7", "9"]
    );
}
