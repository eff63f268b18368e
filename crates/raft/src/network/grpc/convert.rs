//! Conversion between [`Message`] and the wire [`Envelope`](pb::Envelope). Payloads are
//! [`Bytes`](bytes::Bytes) on both sides, so entry data and snapshot chunks are not copied.

use std::fmt;

use super::proto as pb;
use crate::error::RejectReason;
use crate::membership::Membership;
use crate::message::{
    AppendEntries, AppendEntriesResponse, ConflictHint, Heartbeat, HeartbeatResponse,
    InstallSnapshot, InstallSnapshotResponse, Message, MessageBody, ReadIndexRequest,
    ReadIndexResponse, RequestVote, RequestVoteResponse,
};
use crate::types::{Entry, EntryKind, NodeId, SnapshotMeta};

/// Why an envelope could not be turned into a [`Message`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum DecodeError {
    /// The envelope carries no body (or one of a kind this version does not know).
    MissingBody,
    /// An entry's kind code is not an [`EntryKind`].
    UnknownEntryKind(u32),
    /// A snapshot chunk without its metadata.
    MissingSnapshotMeta,
    /// A snapshot's membership does not decode.
    BadMembership {
        /// The snapshot's last index.
        index: u64,
        /// Why it does not decode.
        reason: String,
    },
}

impl DecodeError {
    /// How the receiver refuses (and counts) an envelope that failed to decode: an
    /// undecodable membership as a bad configuration, like a `ConfigChange` entry the
    /// handler cannot decode; anything else as malformed.
    pub(crate) fn into_reject_reason(self) -> RejectReason {
        match self {
            DecodeError::BadMembership { index, reason } => {
                RejectReason::BadConfiguration { index, reason }
            }
            other => RejectReason::Malformed(other.to_string()),
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::MissingBody => f.write_str("envelope without a body"),
            DecodeError::UnknownEntryKind(k) => write!(f, "unknown entry kind {k}"),
            DecodeError::MissingSnapshotMeta => f.write_str("snapshot chunk without metadata"),
            DecodeError::BadMembership { index, reason } => {
                write!(f, "membership of the snapshot at index {index}: {reason}")
            }
        }
    }
}

/// Wraps `m` for the wire, stamped with `cluster_id`.
pub(crate) fn to_envelope(cluster_id: &str, m: Message) -> pb::Envelope {
    use pb::envelope::Body;
    let body = match m.body {
        MessageBody::RequestVote(r) => Body::RequestVote(pb::RequestVote {
            pre_vote: r.pre_vote,
            last_log_index: r.last_log_index,
            last_log_term: r.last_log_term,
            transfer: r.transfer,
        }),
        MessageBody::RequestVoteResponse(r) => Body::RequestVoteResponse(pb::RequestVoteResponse {
            pre_vote: r.pre_vote,
            granted: r.granted,
        }),
        MessageBody::AppendEntries(a) => Body::AppendEntries(pb::AppendEntries {
            prev_log_index: a.prev_log_index,
            prev_log_term: a.prev_log_term,
            entries: a
                .entries
                .into_iter()
                .map(|e| pb::Entry {
                    index: e.index,
                    term: e.term,
                    kind: u32::from(e.kind.to_u8()),
                    data: e.data,
                })
                .collect(),
            leader_commit: a.leader_commit,
        }),
        MessageBody::AppendEntriesResponse(r) => {
            Body::AppendEntriesResponse(pb::AppendEntriesResponse {
                success: r.success,
                index: r.index,
                has_conflict: r.conflict.is_some(),
                conflict_term: r.conflict.and_then(|c| c.term),
                conflict_index: r.conflict.map_or(0, |c| c.index),
            })
        }
        MessageBody::Heartbeat(h) => Body::Heartbeat(pb::Heartbeat {
            commit: h.commit,
            read_seq: h.read_seq,
        }),
        MessageBody::HeartbeatResponse(h) => Body::HeartbeatResponse(pb::HeartbeatResponse {
            read_seq: h.read_seq,
        }),
        MessageBody::InstallSnapshot(s) => Body::InstallSnapshot(pb::InstallSnapshot {
            meta: Some(pb::SnapshotMeta {
                last_index: s.meta.last_index,
                last_term: s.meta.last_term,
                membership: s
                    .meta
                    .membership
                    .as_deref()
                    .map(Membership::encode)
                    .unwrap_or_default(),
            }),
            offset: s.offset,
            data: s.data,
            done: s.done,
            total_size: s.total_size,
            checksum: s.checksum,
        }),
        MessageBody::InstallSnapshotResponse(r) => {
            Body::InstallSnapshotResponse(pb::InstallSnapshotResponse {
                last_index: r.last_index,
                next_offset: r.next_offset,
                installed: r.installed,
            })
        }
        MessageBody::ReadIndex(r) => Body::ReadIndex(pb::ReadIndex { id: r.id }),
        MessageBody::ReadIndexResponse(r) => Body::ReadIndexResponse(pb::ReadIndexResponse {
            id: r.id,
            index: r.index,
        }),
        MessageBody::TimeoutNow => Body::TimeoutNow(pb::TimeoutNow {}),
    };
    pb::Envelope {
        cluster_id: cluster_id.to_owned(),
        from: m.from.as_str().to_owned(),
        to: m.to.as_str().to_owned(),
        term: m.term,
        body: Some(body),
    }
}

fn entry_kind(code: u32) -> Result<EntryKind, DecodeError> {
    u8::try_from(code)
        .ok()
        .and_then(EntryKind::from_u8)
        .ok_or(DecodeError::UnknownEntryKind(code))
}

/// Unwraps the body of `env` (its header is checked by the caller) into a [`Message`]
/// from `from` to `to`.
pub(crate) fn from_envelope(
    env: pb::Envelope,
    from: NodeId,
    to: NodeId,
) -> Result<Message, DecodeError> {
    use pb::envelope::Body;
    let body = match env.body.ok_or(DecodeError::MissingBody)? {
        Body::RequestVote(r) => MessageBody::RequestVote(RequestVote {
            pre_vote: r.pre_vote,
            last_log_index: r.last_log_index,
            last_log_term: r.last_log_term,
            transfer: r.transfer,
        }),
        Body::RequestVoteResponse(r) => MessageBody::RequestVoteResponse(RequestVoteResponse {
            pre_vote: r.pre_vote,
            granted: r.granted,
        }),
        Body::AppendEntries(a) => MessageBody::AppendEntries(AppendEntries {
            prev_log_index: a.prev_log_index,
            prev_log_term: a.prev_log_term,
            entries: a
                .entries
                .into_iter()
                .map(|e| {
                    Ok(Entry {
                        index: e.index,
                        term: e.term,
                        kind: entry_kind(e.kind)?,
                        data: e.data,
                    })
                })
                .collect::<Result<_, DecodeError>>()?,
            leader_commit: a.leader_commit,
        }),
        Body::AppendEntriesResponse(r) => {
            MessageBody::AppendEntriesResponse(AppendEntriesResponse {
                success: r.success,
                index: r.index,
                conflict: r.has_conflict.then_some(ConflictHint {
                    term: r.conflict_term,
                    index: r.conflict_index,
                }),
            })
        }
        Body::Heartbeat(h) => MessageBody::Heartbeat(Heartbeat {
            commit: h.commit,
            read_seq: h.read_seq,
        }),
        Body::HeartbeatResponse(h) => MessageBody::HeartbeatResponse(HeartbeatResponse {
            read_seq: h.read_seq,
        }),
        Body::InstallSnapshot(s) => {
            let meta = s.meta.ok_or(DecodeError::MissingSnapshotMeta)?;
            MessageBody::InstallSnapshot(InstallSnapshot {
                meta: SnapshotMeta {
                    last_index: meta.last_index,
                    last_term: meta.last_term,
                    membership: if meta.membership.is_empty() {
                        None
                    } else {
                        Some(std::sync::Arc::new(
                            Membership::decode(&meta.membership).map_err(|e| {
                                DecodeError::BadMembership {
                                    index: meta.last_index,
                                    reason: e.to_string(),
                                }
                            })?,
                        ))
                    },
                },
                offset: s.offset,
                data: s.data,
                done: s.done,
                total_size: s.total_size,
                checksum: s.checksum,
            })
        }
        Body::InstallSnapshotResponse(r) => {
            MessageBody::InstallSnapshotResponse(InstallSnapshotResponse {
                last_index: r.last_index,
                next_offset: r.next_offset,
                installed: r.installed,
            })
        }
        Body::ReadIndex(r) => MessageBody::ReadIndex(ReadIndexRequest { id: r.id }),
        Body::ReadIndexResponse(r) => MessageBody::ReadIndexResponse(ReadIndexResponse {
            id: r.id,
            index: r.index,
        }),
        Body::TimeoutNow(_) => MessageBody::TimeoutNow,
    };
    Ok(Message {
        from,
        to,
        term: env.term,
        body,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use bytes::Bytes;

    use super::*;
    use crate::membership::NodeInfo;

    /// A joint configuration with a learner and member info: every field of the encoding.
    fn joint() -> Membership {
        let ids = |s: &str| s.split_whitespace().map(NodeId::from).collect();
        let mut m = Membership::new(ids("node-1 node-2 node-4"), ids("node-5"));
        m.outgoing = ids("node-1 node-2 node-3");
        m.nodes.insert(
            NodeId::from("node-4"),
            NodeInfo {
                address: "10.0.0.4:7000".into(),
                metadata: [("http".to_string(), "10.0.0.4:8000".to_string())].into(),
            },
        );
        m
    }

    fn all_kinds() -> Vec<MessageBody> {
        vec![
            MessageBody::RequestVote(RequestVote {
                pre_vote: true,
                last_log_index: 7,
                last_log_term: 3,
                transfer: false,
            }),
            MessageBody::RequestVote(RequestVote {
                pre_vote: false,
                last_log_index: 7,
                last_log_term: 3,
                transfer: true,
            }),
            MessageBody::TimeoutNow,
            MessageBody::RequestVoteResponse(RequestVoteResponse {
                pre_vote: false,
                granted: true,
            }),
            MessageBody::AppendEntries(AppendEntries {
                prev_log_index: 4,
                prev_log_term: 2,
                entries: vec![
                    Entry::noop(5, 3),
                    Entry::normal(6, 3, "SET a=1"),
                    Entry {
                        index: 7,
                        term: 3,
                        kind: EntryKind::ConfigChange,
                        data: joint().encode(),
                    },
                ],
                leader_commit: 4,
            }),
            MessageBody::AppendEntries(AppendEntries {
                prev_log_index: 0,
                prev_log_term: 0,
                entries: vec![],
                leader_commit: 0,
            }),
            MessageBody::AppendEntriesResponse(AppendEntriesResponse {
                success: true,
                index: 9,
                conflict: None,
            }),
            MessageBody::AppendEntriesResponse(AppendEntriesResponse {
                success: false,
                index: 9,
                conflict: Some(ConflictHint {
                    term: Some(2),
                    index: 3,
                }),
            }),
            MessageBody::AppendEntriesResponse(AppendEntriesResponse {
                success: false,
                index: 9,
                conflict: Some(ConflictHint {
                    term: None,
                    index: 0,
                }),
            }),
            MessageBody::Heartbeat(Heartbeat {
                commit: 3,
                read_seq: 11,
            }),
            MessageBody::HeartbeatResponse(HeartbeatResponse { read_seq: 11 }),
            MessageBody::InstallSnapshot(InstallSnapshot {
                meta: SnapshotMeta {
                    last_index: 100,
                    last_term: 4,
                    membership: None,
                },
                offset: 1 << 20,
                data: Bytes::from(vec![7u8; 1000]),
                done: true,
                total_size: (1 << 20) + 1000,
                checksum: 0xdead_beef,
            }),
            MessageBody::InstallSnapshot(InstallSnapshot {
                meta: SnapshotMeta {
                    last_index: 200,
                    last_term: 5,
                    membership: Some(joint().into()),
                },
                offset: 0,
                data: Bytes::from_static(b"first chunk"),
                done: false,
                total_size: 1 << 30,
                checksum: 7,
            }),
            MessageBody::InstallSnapshotResponse(InstallSnapshotResponse {
                last_index: 100,
                next_offset: 0,
                installed: false,
            }),
            MessageBody::ReadIndex(ReadIndexRequest { id: 42 }),
            MessageBody::ReadIndexResponse(ReadIndexResponse {
                id: 42,
                index: Some(17),
            }),
            MessageBody::ReadIndexResponse(ReadIndexResponse {
                id: 43,
                index: None,
            }),
        ]
    }

    #[test]
    fn every_message_kind_round_trips_through_protobuf() {
        use prost::Message as _;
        for body in all_kinds() {
            let m = Message {
                from: NodeId::from("node-1"),
                to: NodeId::from("node-2"),
                term: 5,
                body,
            };
            let env = to_envelope("c1", m.clone());
            assert_eq!(env.cluster_id, "c1");
            let wire = env.encode_to_vec();
            let decoded = pb::Envelope::decode(wire.as_slice()).unwrap();
            let back = from_envelope(decoded, m.from.clone(), m.to.clone()).unwrap();
            assert_eq!(back, m);
        }
    }

    #[test]
    fn unknown_entry_kind_and_missing_parts_are_errors() {
        let mut env = to_envelope(
            "c1",
            Message {
                from: NodeId::from("a"),
                to: NodeId::from("b"),
                term: 1,
                body: MessageBody::AppendEntries(AppendEntries {
                    prev_log_index: 0,
                    prev_log_term: 0,
                    entries: vec![Entry::normal(1, 1, "x")],
                    leader_commit: 0,
                }),
            },
        );
        if let Some(pb::envelope::Body::AppendEntries(a)) = env.body.as_mut() {
            a.entries[0].kind = 300;
        }
        let (a, b) = (NodeId::from("a"), NodeId::from("b"));
        assert_eq!(
            from_envelope(env.clone(), a.clone(), b.clone()),
            Err(DecodeError::UnknownEntryKind(300))
        );
        env.body = None;
        assert_eq!(
            from_envelope(env.clone(), a.clone(), b.clone()),
            Err(DecodeError::MissingBody)
        );
        env.body = Some(pb::envelope::Body::InstallSnapshot(
            pb::InstallSnapshot::default(),
        ));
        assert_eq!(
            from_envelope(env, a, b),
            Err(DecodeError::MissingSnapshotMeta)
        );
    }

    #[test]
    fn the_new_kinds_and_fields_reach_the_wire() {
        let m = |body| Message {
            from: NodeId::from("node-1"),
            to: NodeId::from("node-2"),
            term: 9,
            body,
        };
        let env = to_envelope("c1", m(MessageBody::TimeoutNow));
        assert!(matches!(env.body, Some(pb::envelope::Body::TimeoutNow(_))));
        let vote = RequestVote {
            pre_vote: false,
            last_log_index: 1,
            last_log_term: 1,
            transfer: true,
        };
        match to_envelope("c1", m(MessageBody::RequestVote(vote))).body {
            Some(pb::envelope::Body::RequestVote(r)) => assert!(r.transfer),
            other => panic!("expected a vote request, got {other:?}"),
        }
        let chunk = InstallSnapshot {
            meta: SnapshotMeta {
                last_index: 3,
                last_term: 1,
                membership: Some(joint().into()),
            },
            offset: 0,
            data: Bytes::new(),
            done: false,
            total_size: 10,
            checksum: 0,
        };
        match to_envelope("c1", m(MessageBody::InstallSnapshot(chunk))).body {
            Some(pb::envelope::Body::InstallSnapshot(s)) => {
                let meta = s.meta.unwrap();
                assert_eq!(Membership::decode(&meta.membership).unwrap(), joint());
            }
            other => panic!("expected a snapshot chunk, got {other:?}"),
        }
    }

    #[test]
    fn a_snapshot_membership_that_does_not_decode_is_a_bad_configuration() {
        let chunk = |membership: Bytes| pb::Envelope {
            cluster_id: "c1".into(),
            from: "a".into(),
            to: "b".into(),
            term: 2,
            body: Some(pb::envelope::Body::InstallSnapshot(pb::InstallSnapshot {
                meta: Some(pb::SnapshotMeta {
                    last_index: 12,
                    last_term: 2,
                    membership,
                }),
                offset: 0,
                data: Bytes::from_static(b"x"),
                done: true,
                total_size: 1,
                checksum: crc32c::crc32c(b"x"),
            })),
        };
        let (a, b) = (NodeId::from("a"), NodeId::from("b"));
        let mut truncated = joint().encode().to_vec();
        truncated.pop();
        for bad in [
            Bytes::from_static(b"\x00"),
            Bytes::from(truncated),
            Membership::new([], [NodeId::from("x")]).encode(),
        ] {
            let err = from_envelope(chunk(bad.clone()), a.clone(), b.clone()).unwrap_err();
            assert!(
                matches!(&err, DecodeError::BadMembership { index: 12, .. }),
                "{bad:?}: {err:?}"
            );
            assert!(matches!(
                err.into_reject_reason(),
                RejectReason::BadConfiguration { index: 12, .. }
            ));
        }
        // Empty is "no membership": a snapshot from before membership was replicated.
        match from_envelope(chunk(Bytes::new()), a, b).unwrap().body {
            MessageBody::InstallSnapshot(s) => assert_eq!(s.meta.membership, None),
            other => panic!("expected a snapshot chunk, got {other:?}"),
        }
        assert!(matches!(
            DecodeError::MissingBody.into_reject_reason(),
            RejectReason::Malformed(_)
        ));
    }
}
