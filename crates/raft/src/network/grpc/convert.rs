//! Conversion between [`Message`] and the wire [`Envelope`](pb::Envelope). Payloads are
//! [`Bytes`](bytes::Bytes) on both sides, so entry data and snapshot chunks are not copied.

use std::fmt;

use super::proto as pb;
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
    BadMembership(String),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::MissingBody => f.write_str("envelope without a body"),
            DecodeError::UnknownEntryKind(k) => write!(f, "unknown entry kind {k}"),
            DecodeError::MissingSnapshotMeta => f.write_str("snapshot chunk without metadata"),
            DecodeError::BadMembership(e) => write!(f, "snapshot membership: {e}"),
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
                    .as_ref()
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
                        Some(
                            Membership::decode(&meta.membership)
                                .map_err(|e| DecodeError::BadMembership(e.to_string()))?,
                        )
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

    fn all_kinds() -> Vec<MessageBody> {
        vec![
            MessageBody::RequestVote(RequestVote {
                pre_vote: true,
                last_log_index: 7,
                last_log_term: 3,
                transfer: false,
            }),
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
                        data: Bytes::from_static(b"cfg"),
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
}
