//! The handler's checks, one case each, without a node.

use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::*;
use crate::membership::Membership;
use crate::message::{AppendEntriesResponse, HeartbeatResponse};
use crate::types::{Entry, EntryKind, SnapshotMeta};

#[derive(Default)]
struct Rejections(Mutex<Vec<&'static str>>);

impl Metrics for Rejections {
    fn observe_message_rejected(&self, reason: &RejectReason) {
        self.0.lock().unwrap().push(reason.label());
    }
}

fn handler(capacity: usize) -> (RpcHandler, mpsc::Receiver<Message>, Arc<Rejections>) {
    let metrics = Arc::new(Rejections::default());
    let members = ["n1", "n2", "n3"].map(NodeId::from);
    let (h, rx) = RpcHandler::new(NodeId::from("n1"), members, capacity, metrics.clone());
    (h, rx, metrics)
}

fn from_n2(term: Term) -> RpcHeader {
    RpcHeader::new("n2", "n1", term)
}

fn append(prev: (u64, u64), entries: &[(u64, u64)]) -> AppendEntries {
    AppendEntries {
        prev_log_index: prev.0,
        prev_log_term: prev.1,
        entries: entries
            .iter()
            .map(|&(i, t)| Entry::normal(i, t, "x"))
            .collect(),
        leader_commit: 0,
    }
}

fn chunk(offset: u64, len: usize, total: u64, done: bool) -> InstallSnapshot {
    InstallSnapshot {
        meta: SnapshotMeta {
            last_index: 5,
            last_term: 2,
            membership: None,
        },
        offset,
        data: Bytes::from(vec![7u8; len]),
        done,
        total_size: total,
        checksum: 0,
    }
}

fn reason(r: Result<()>) -> RejectReason {
    match r {
        Err(Error::Rejected(reason)) => reason,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[test]
fn well_formed_requests_and_answers_are_queued_in_order() {
    let (h, mut rx, metrics) = handler(16);
    h.append_entries(from_n2(3), append((4, 2), &[(5, 2), (6, 3)]))
        .unwrap();
    h.install_snapshot(from_n2(3), chunk(0, 10, 10, true))
        .unwrap();
    h.heartbeat(from_n2(3), Heartbeat::default()).unwrap();
    h.read_index(from_n2(3), ReadIndexRequest { id: 1 })
        .unwrap();
    h.deliver(Message {
        from: NodeId::from("n3"),
        to: NodeId::from("n1"),
        term: 3,
        body: MessageBody::AppendEntriesResponse(AppendEntriesResponse {
            success: true,
            index: 2,
            conflict: None,
        }),
    })
    .unwrap();
    let kinds: Vec<&str> = std::iter::from_fn(|| rx.try_recv().ok())
        .map(|m| m.kind())
        .collect();
    assert_eq!(
        kinds,
        [
            "AppendEntries",
            "InstallSnapshot",
            "Heartbeat",
            "ReadIndex",
            "AppendEntriesResponse"
        ]
    );
    assert_eq!((h.rejected_messages(), h.dropped_messages()), (0, 0));
    assert!(metrics.0.lock().unwrap().is_empty());
}

#[test]
fn misaddressed_and_foreign_messages_are_refused_and_counted() {
    let (h, mut rx, metrics) = handler(16);
    let vote = RequestVote {
        pre_vote: false,
        last_log_index: 0,
        last_log_term: 0,
        transfer: false,
    };
    let to_n3 = RpcHeader::new("n2", "n3", 1);
    assert_eq!(
        reason(h.request_vote(to_n3, vote.clone())),
        RejectReason::WrongRecipient { to: "n3".into() }
    );
    let from_stranger = RpcHeader::new("n9", "n1", 1);
    assert_eq!(
        reason(h.request_vote(from_stranger, vote.clone())),
        RejectReason::UnknownSender { from: "n9".into() }
    );
    let from_itself = RpcHeader::new("n1", "n1", 1);
    assert!(matches!(
        reason(h.request_vote(from_itself, vote)),
        RejectReason::UnknownSender { .. }
    ));
    assert!(rx.try_recv().is_err(), "nothing reached the node");
    assert_eq!(h.rejected_messages(), 3);
    assert_eq!(
        *metrics.0.lock().unwrap(),
        ["wrong_recipient", "unknown_sender", "unknown_sender"]
    );
}

#[test]
fn malformed_bodies_are_refused_with_what_is_wrong() {
    let (h, mut rx, _) = handler(16);
    let cases = [
        // A gap after prev_log_index.
        h.append_entries(from_n2(3), append((4, 2), &[(6, 2)])),
        // Indices not consecutive.
        h.append_entries(from_n2(3), append((0, 0), &[(1, 1), (3, 1)])),
        // Terms going backwards, and newer than the leader's.
        h.append_entries(from_n2(3), append((0, 0), &[(1, 2), (2, 1)])),
        h.append_entries(from_n2(3), append((0, 0), &[(1, 4)])),
        h.append_entries(from_n2(3), append((1, 4), &[])),
        // Indices that overflow.
        h.append_entries(from_n2(3), append((u64::MAX, 1), &[(0, 1)])),
        // Snapshot chunks past the end, or a last chunk that ends early.
        h.install_snapshot(from_n2(3), chunk(8, 4, 10, false)),
        h.install_snapshot(from_n2(3), chunk(u64::MAX, 4, 10, false)),
        h.install_snapshot(from_n2(3), chunk(0, 4, 10, true)),
        h.install_snapshot(from_n2(1), chunk(0, 10, 10, true)),
        // A vote request whose log is newer than its term.
        h.request_vote(
            from_n2(1),
            RequestVote {
                pre_vote: true,
                last_log_index: 3,
                last_log_term: 2,
                transfer: false,
            },
        ),
    ];
    for (k, case) in cases.into_iter().enumerate() {
        match reason(case) {
            RejectReason::Malformed(why) => assert!(!why.is_empty(), "case {k}"),
            other => panic!("case {k}: expected Malformed, got {other:?}"),
        }
    }
    assert!(rx.try_recv().is_err(), "nothing reached the node");
    assert_eq!(h.rejected_messages(), 11);
}

#[test]
fn a_full_queue_drops_and_counts_without_blocking() {
    let (h, _rx, metrics) = handler(1);
    h.heartbeat(from_n2(1), Heartbeat::default()).unwrap();
    assert_eq!(
        reason(h.heartbeat(from_n2(1), Heartbeat::default())),
        RejectReason::QueueFull
    );
    assert_eq!((h.rejected_messages(), h.dropped_messages()), (0, 1));
    assert_eq!(*metrics.0.lock().unwrap(), ["queue_full"]);
}

#[test]
fn a_stopped_node_is_reported_as_shutting_down() {
    let (h, rx, _) = handler(4);
    drop(rx);
    let answer = Message {
        from: NodeId::from("n2"),
        to: NodeId::from("n1"),
        term: 1,
        body: MessageBody::HeartbeatResponse(HeartbeatResponse::default()),
    };
    assert!(matches!(h.deliver(answer), Err(Error::ShuttingDown)));
    assert_eq!(h.rejected_messages(), 0);
}

#[test]
fn peers_are_shared_ids_and_exclude_the_node_itself() {
    let (h, _rx, _) = handler(1);
    assert_eq!(h.peer("n2"), Some(NodeId::from("n2")));
    assert_eq!(h.peer("n1"), None);
    assert_eq!(h.peer("n9"), None);
    assert_eq!(h.id().as_str(), "n1");
}

#[test]
fn members_follow_the_configuration_and_leaders_are_heard_before_they_are_known() {
    let (h, mut rx, _) = handler(16);
    let vote = RequestVote {
        pre_vote: true,
        last_log_index: 0,
        last_log_term: 0,
        transfer: false,
    };
    // A leader this node's log does not name yet: its replication is heard, so that a
    // joining node can learn the configuration from it; its vote requests are not.
    let stranger = RpcHeader::new("n9", "n1", 5);
    h.heartbeat(stranger.clone(), Heartbeat::default()).unwrap();
    h.append_entries(stranger.clone(), append((0, 0), &[(1, 5)]))
        .unwrap();
    assert_eq!(
        reason(h.request_vote(stranger.clone(), vote.clone())),
        RejectReason::UnknownSender { from: "n9".into() }
    );
    // A node never hears itself, whatever the message.
    assert!(matches!(
        reason(h.heartbeat(RpcHeader::new("n1", "n1", 5), Heartbeat::default())),
        RejectReason::UnknownSender { .. }
    ));
    // n9 joins and n2 leaves.
    h.set_members(["n1", "n3", "n9"].map(NodeId::from));
    h.request_vote(stranger, vote.clone()).unwrap();
    assert_eq!(
        reason(h.request_vote(from_n2(5), vote.clone())),
        RejectReason::UnknownSender { from: "n2".into() }
    );
    assert_eq!(h.peer("n9"), Some(NodeId::from("n9")));
    assert_eq!(h.peer("n2"), None);
    // Once its id is retired, a removed node's requests are refused as such, so that a
    // transport can tell it; being told is recorded once.
    h.set_retired([NodeId::from("n2")]);
    assert_eq!(
        reason(h.request_vote(from_n2(6), vote.clone())),
        RejectReason::Removed { from: "n2".into() }
    );
    let told = h.removed_channel();
    assert!(told.borrow().is_none());
    h.removed_by(NodeId::from("n3"));
    h.removed_by(NodeId::from("n9"));
    assert_eq!(*told.borrow(), Some(NodeId::from("n3")));
    assert_eq!(std::iter::from_fn(|| rx.try_recv().ok()).count(), 3);
}

#[test]
fn a_snapshot_of_any_size_is_accepted_in_chunks() {
    // Only the chunk must fit in a message; the snapshot it belongs to may be of any size
    // (here 1 TiB, a chunk near its end and its last one).
    let (h, mut rx, _) = handler(16);
    let tib = 1u64 << 40;
    h.install_snapshot(from_n2(3), chunk(tib - (2 << 20), 1 << 20, tib, false))
        .unwrap();
    h.install_snapshot(from_n2(3), chunk(tib - 10, 10, tib, true))
        .unwrap();
    assert_eq!(std::iter::from_fn(|| rx.try_recv().ok()).count(), 2);
    assert_eq!(h.rejected_messages(), 0);
}

fn config_entry(index: u64, term: u64, data: impl Into<Bytes>) -> Entry {
    Entry {
        index,
        term,
        kind: EntryKind::ConfigChange,
        data: data.into(),
    }
}

#[test]
fn a_config_entry_that_does_not_decode_is_refused_and_counted() {
    let (h, mut rx, metrics) = handler(16);
    let good = Membership::new(["n1", "n2", "n3", "n4"].map(NodeId::from), []);
    let mut garbled = good.encode().to_vec();
    garbled.truncate(garbled.len() - 1);
    let mut unknown_version = good.encode().to_vec();
    unknown_version[4] = 9;
    let cases: [(&str, Bytes); 4] = [
        ("not a configuration", Bytes::from_static(b"add n4")),
        ("truncated", garbled.into()),
        ("unknown version", unknown_version.into()),
        // Decodes, but breaks the rules (no voter): decoding refuses it too.
        (
            "no voter",
            Membership::new([], [NodeId::from("n4")]).encode(),
        ),
    ];
    for (what, data) in cases {
        let a = AppendEntries {
            prev_log_index: 4,
            prev_log_term: 2,
            entries: vec![Entry::normal(5, 2, "x"), config_entry(6, 3, data)],
            leader_commit: 0,
        };
        match reason(h.append_entries(from_n2(3), a)) {
            RejectReason::BadConfiguration { index, reason } => {
                assert_eq!(index, 6, "{what}");
                assert!(reason.contains("ConfigChange"), "{what}: {reason}");
            }
            other => panic!("{what}: expected BadConfiguration, got {other:?}"),
        }
    }
    assert!(rx.try_recv().is_err(), "nothing reached the node");
    assert_eq!(h.rejected_messages(), 4);
    assert_eq!(*metrics.0.lock().unwrap(), ["bad_configuration"; 4]);
    // A configuration entry that decodes passes, and so does a normal entry whatever its
    // data (only ConfigChange entries carry a configuration).
    let a = AppendEntries {
        prev_log_index: 4,
        prev_log_term: 2,
        entries: vec![
            Entry::normal(5, 2, "RLMB"),
            config_entry(6, 3, good.encode()),
        ],
        leader_commit: 0,
    };
    h.append_entries(from_n2(3), a).unwrap();
    assert_eq!(rx.try_recv().unwrap().kind(), "AppendEntries");
    assert_eq!(h.rejected_messages(), 4);
}

#[test]
fn a_snapshot_chunk_with_a_membership_that_breaks_the_rules_is_refused() {
    let (h, mut rx, metrics) = handler(16);
    let mut bad = chunk(0, 10, 10, true);
    bad.meta.membership = Some(Membership::new([NodeId::from("n1")], [NodeId::from("n1")]).into());
    assert!(matches!(
        reason(h.install_snapshot(from_n2(3), bad)),
        RejectReason::BadConfiguration { index: 5, .. }
    ));
    let mut good = chunk(0, 10, 10, true);
    good.meta.membership = Some(Membership::new(["n1", "n2"].map(NodeId::from), []).into());
    h.install_snapshot(from_n2(3), good.clone()).unwrap();
    match rx.try_recv().unwrap().body {
        MessageBody::InstallSnapshot(s) => assert_eq!(s, good),
        other => panic!("expected the chunk, got {other:?}"),
    }
    assert_eq!(*metrics.0.lock().unwrap(), ["bad_configuration"]);
}

#[test]
fn timeout_now_is_delivered_from_a_peer_only() {
    let (h, mut rx, metrics) = handler(16);
    h.timeout_now(from_n2(4)).unwrap();
    let m = rx.try_recv().unwrap();
    assert_eq!(
        (m.from.as_str(), m.to.as_str(), m.term, m.body),
        ("n2", "n1", 4, MessageBody::TimeoutNow)
    );
    assert_eq!(
        reason(h.timeout_now(RpcHeader::new("n9", "n1", 4))),
        RejectReason::UnknownSender { from: "n9".into() }
    );
    assert_eq!(
        reason(h.timeout_now(RpcHeader::new("n2", "n3", 4))),
        RejectReason::WrongRecipient { to: "n3".into() }
    );
    assert!(rx.try_recv().is_err());
    assert_eq!(
        *metrics.0.lock().unwrap(),
        ["unknown_sender", "wrong_recipient"]
    );
}
