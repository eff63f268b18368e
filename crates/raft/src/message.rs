//! The messages Raft peers exchange. The core consumes and produces them; transports
//! (gRPC, in-process, the simulator) carry them.

use bytes::Bytes;

use crate::types::{Entry, Index, NodeId, SnapshotMeta, Term};

/// One message between two nodes. Every Raft RPC carries the sender's term (§5.1); a
/// pre-vote request carries the term the sender *would* campaign in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Sender.
    pub from: NodeId,
    /// Recipient.
    pub to: NodeId,
    /// The sender's term (see above for pre-votes).
    pub term: Term,
    /// What the message says.
    pub body: MessageBody,
}

/// The kinds of messages.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MessageBody {
    /// A (pre-)candidate asks for a vote.
    RequestVote(RequestVote),
    /// The answer to [`MessageBody::RequestVote`].
    RequestVoteResponse(RequestVoteResponse),
    /// The leader replicates entries (Raft Figure 2).
    AppendEntries(AppendEntries),
    /// The answer to [`MessageBody::AppendEntries`].
    AppendEntriesResponse(AppendEntriesResponse),
    /// The leader asserts its leadership and advances the follower's commit index.
    Heartbeat(Heartbeat),
    /// The answer to [`MessageBody::Heartbeat`].
    HeartbeatResponse(HeartbeatResponse),
    /// One chunk of the leader's snapshot, for a follower that needs compacted entries
    /// (Raft §7).
    InstallSnapshot(InstallSnapshot),
    /// The answer to [`MessageBody::InstallSnapshot`].
    InstallSnapshotResponse(InstallSnapshotResponse),
    /// A follower asks for a read index.
    ReadIndex(ReadIndexRequest),
    /// The leader's answer.
    ReadIndexResponse(ReadIndexResponse),
    /// The leader hands over leadership: the recipient, which the leader caught up,
    /// campaigns at once without a pre-vote (thesis §3.10).
    TimeoutNow,
}

/// RequestVote arguments (Figure 2), with the PreVote flag (thesis §9.6).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestVote {
    /// A pre-vote: the recipient changes no state and only says whether it would vote.
    pub pre_vote: bool,
    /// Index of the candidate's last log entry (§5.4.1).
    pub last_log_index: Index,
    /// Term of the candidate's last log entry.
    pub last_log_term: Term,
    /// The campaign was started by a leadership transfer (`TimeoutNow`): voters grant it
    /// even though they heard from the leader within the election timeout, since that
    /// leader asked for it and stopped serving lease reads first.
    pub transfer: bool,
}

/// RequestVote results.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestVoteResponse {
    /// Answers a pre-vote request.
    pub pre_vote: bool,
    /// Whether the vote was granted.
    pub granted: bool,
}

/// AppendEntries arguments (Figure 2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppendEntries {
    /// Index of the entry immediately preceding `entries`.
    pub prev_log_index: Index,
    /// Term of that entry.
    pub prev_log_term: Term,
    /// Entries to store (empty for a probe).
    pub entries: Vec<Entry>,
    /// The leader's commit index.
    pub leader_commit: Index,
}

/// Why a follower refused an AppendEntries, so the leader can skip a whole term at a time
/// instead of one entry per round trip.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConflictHint {
    /// Term of the follower's entry at the request's `prev_log_index`, or `None` when the
    /// follower's log is shorter than that.
    pub term: Option<Term>,
    /// First index the follower holds with `term`; when `term` is `None`, the follower's
    /// last index + 1.
    pub index: Index,
}

/// AppendEntries results.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppendEntriesResponse {
    /// Whether the follower's log matched `prev_log_index` / `prev_log_term`.
    pub success: bool,
    /// On success, the index of the last entry the request covered (now durable on the
    /// follower); on rejection, the request's `prev_log_index` (to recognise stale
    /// rejections).
    pub index: Index,
    /// On rejection, where the logs diverge.
    pub conflict: Option<ConflictHint>,
}

/// A leader heartbeat.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Heartbeat {
    /// The leader's commit index, capped at what this follower is known to hold, so a
    /// follower never marks as committed an entry it may not have.
    pub commit: Index,
    /// Number of this heartbeat round; echoed in the answer so that the leader knows which
    /// rounds a majority confirmed (ReadIndex and the lease).
    pub read_seq: u64,
}

/// One chunk of a snapshot. Chunks are sent in order; the follower accepts only the chunk
/// at the offset it expects, so lost, duplicated and reordered chunks are harmless.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstallSnapshot {
    /// Which snapshot this chunk belongs to.
    pub meta: SnapshotMeta,
    /// Byte offset of `data` in the snapshot.
    pub offset: u64,
    /// The chunk.
    pub data: Bytes,
    /// Whether this is the last chunk.
    pub done: bool,
    /// Size of the whole snapshot.
    pub total_size: u64,
    /// CRC32C of the whole snapshot, verified before installing.
    pub checksum: u32,
}

/// The answer to a snapshot chunk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstallSnapshotResponse {
    /// Index of the snapshot the answer is about.
    pub last_index: Index,
    /// The offset the follower expects next (0: start again).
    pub next_offset: u64,
    /// The follower holds the snapshot (installed now or already covered by its log).
    pub installed: bool,
}

/// The answer to a heartbeat.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeartbeatResponse {
    /// The round being answered.
    pub read_seq: u64,
}

/// A follower asks the leader for a read index on behalf of a client (follower reads).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadIndexRequest {
    /// Identifies the request; fresh for every attempt, so a late answer to an earlier
    /// attempt can never satisfy a later one.
    pub id: u64,
}

/// The leader's answer to a [`ReadIndexRequest`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadIndexResponse {
    /// The request answered.
    pub id: u64,
    /// The index to wait for before reading; `None` if the leader could not confirm its
    /// leadership (the read fails).
    pub index: Option<Index>,
}

impl Message {
    /// Short name of the message kind, for traces and metrics.
    pub fn kind(&self) -> &'static str {
        match &self.body {
            MessageBody::RequestVote(r) if r.pre_vote => "PreVote",
            MessageBody::RequestVote(_) => "RequestVote",
            MessageBody::RequestVoteResponse(r) if r.pre_vote => "PreVoteResponse",
            MessageBody::RequestVoteResponse(_) => "RequestVoteResponse",
            MessageBody::AppendEntries(_) => "AppendEntries",
            MessageBody::AppendEntriesResponse(_) => "AppendEntriesResponse",
            MessageBody::Heartbeat(_) => "Heartbeat",
            MessageBody::HeartbeatResponse(_) => "HeartbeatResponse",
            MessageBody::InstallSnapshot(_) => "InstallSnapshot",
            MessageBody::InstallSnapshotResponse(_) => "InstallSnapshotResponse",
            MessageBody::ReadIndex(_) => "ReadIndex",
            MessageBody::ReadIndexResponse(_) => "ReadIndexResponse",
            MessageBody::TimeoutNow => "TimeoutNow",
        }
    }
}
