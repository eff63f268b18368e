//! Core data types shared by every part of the library: identifiers, log entries, persistent
//! state, roles, status reports and the messages handed to the application.

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// A Raft term: a logical clock that increases with every election (Raft §5.1).
pub type Term = u64;

/// A position in the replicated log. The first entry has index 1; index 0 means "none".
pub type Index = u64;

/// Identifier of a node, such as `node-1` (string ids, as in the original RaftLock).
///
/// Cloning is cheap (a reference-counted string), so ids can travel in every message.
///
/// ```
/// use raftlock_raft::NodeId;
/// let id = NodeId::from("node-1");
/// assert_eq!(id.as_str(), "node-1");
/// assert_eq!(id.to_string(), "node-1");
/// ```
#[derive(Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeId(Arc<str>);

// Equality and order are the text's. Ids cloned from one another (every id a node holds
// comes from its configuration) compare without reading the text: the leader looks its
// peers up by id for every message.
impl PartialEq for NodeId {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0 == other.0
    }
}

impl Eq for NodeId {}

impl Ord for NodeId {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        if Arc::ptr_eq(&self.0, &other.0) {
            std::cmp::Ordering::Equal
        } else {
            self.0.cmp(&other.0)
        }
    }
}

impl PartialOrd for NodeId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl std::hash::Hash for NodeId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

impl NodeId {
    /// Creates an id from anything string-like.
    pub fn new(id: impl AsRef<str>) -> Self {
        NodeId(Arc::from(id.as_ref()))
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for NodeId {
    fn from(s: &str) -> Self {
        NodeId::new(s)
    }
}

impl From<String> for NodeId {
    fn from(s: String) -> Self {
        NodeId(Arc::from(s))
    }
}

impl AsRef<str> for NodeId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for NodeId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

/// What a log entry carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum EntryKind {
    /// An application command, handed to the application once committed.
    Normal,
    /// The empty entry a new leader appends at once so that it can commit entries of its
    /// term (Raft §5.4.2, §8). Never handed to the application.
    Noop,
    /// A cluster membership change (reserved for the membership milestone; its data is the
    /// encoded configuration).
    ConfigChange,
}

impl EntryKind {
    /// The stable one-byte encoding used in storage and on the wire.
    pub fn to_u8(self) -> u8 {
        match self {
            EntryKind::Normal => 0,
            EntryKind::Noop => 1,
            EntryKind::ConfigChange => 2,
        }
    }

    /// Decodes [`EntryKind::to_u8`]; `None` for an unknown code.
    pub fn from_u8(code: u8) -> Option<Self> {
        match code {
            0 => Some(EntryKind::Normal),
            1 => Some(EntryKind::Noop),
            2 => Some(EntryKind::ConfigChange),
            _ => None,
        }
    }
}

/// One entry of the replicated log.
///
/// `data` is a [`Bytes`], so entries are cloned and sliced without copying the payload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Position in the log (1-based).
    pub index: Index,
    /// Term of the leader that created the entry.
    pub term: Term,
    /// What the entry carries.
    pub kind: EntryKind,
    /// The payload (the application's command for [`EntryKind::Normal`]).
    pub data: Bytes,
}

impl Entry {
    /// An application command entry.
    pub fn normal(index: Index, term: Term, data: impl Into<Bytes>) -> Self {
        Entry {
            index,
            term,
            kind: EntryKind::Normal,
            data: data.into(),
        }
    }

    /// A leader's no-op entry.
    pub fn noop(index: Index, term: Term) -> Self {
        Entry {
            index,
            term,
            kind: EntryKind::Noop,
            data: Bytes::new(),
        }
    }

    /// Approximate in-memory and on-wire size, used for byte caps on batches and caches.
    pub fn size_hint(&self) -> usize {
        // index + term + kind + length prefix, plus the payload.
        8 + 8 + 1 + 4 + self.data.len()
    }
}

/// The state Raft must persist before answering RPCs (Figure 2): current term and vote.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HardState {
    /// Latest term this node has seen.
    pub term: Term,
    /// The candidate that received this node's vote in `term`, if any.
    pub voted_for: Option<NodeId>,
}

/// The role a node plays in the current term.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Role {
    /// Passive: answers the leader and candidates.
    #[default]
    Follower,
    /// Asking for pre-votes before starting a real election (PreVote, thesis §9.6); the
    /// term has not been incremented.
    PreCandidate,
    /// Asking for votes in a term it started.
    Candidate,
    /// Replicates its log to the others and serves clients.
    Leader,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Follower => "Follower",
            Role::PreCandidate => "PreCandidate",
            Role::Candidate => "Candidate",
            Role::Leader => "Leader",
        })
    }
}

/// A member of the cluster: its id and the address its peer transport listens on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerConfig {
    /// The member's id.
    pub id: NodeId,
    /// `host:port` of its peer (gRPC) endpoint.
    pub address: String,
}

/// Metadata of a snapshot: the last log entry it covers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMeta {
    /// Index of the last entry the snapshot replaces.
    pub last_index: Index,
    /// Term of that entry.
    pub last_term: Term,
    /// The configuration in effect at `last_index` (the latest configuration entry at or
    /// below it). `None` only in snapshots written before membership was replicated:
    /// their node falls back to its configured peers.
    #[serde(default)]
    /// Shared, so that the per-chunk copies of a snapshot's metadata and the messages
    /// that carry it stay small.
    pub membership: Option<std::sync::Arc<crate::membership::Membership>>,
}

/// A stored snapshot as the protocol sees it: which log prefix it replaces, its size and
/// its checksum. Its bytes stay in storage and are streamed from there (to followers, to
/// the state machine), so no part of the node needs the whole snapshot in memory.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// Which prefix of the log the snapshot replaces.
    pub meta: SnapshotMeta,
    /// Size of the snapshot's data in bytes.
    pub size: u64,
    /// CRC32C of the data.
    pub checksum: u32,
}

impl SnapshotInfo {
    /// The info of a snapshot held in memory.
    pub fn of(snapshot: &Snapshot) -> Self {
        SnapshotInfo {
            meta: snapshot.meta.clone(),
            size: snapshot.data.len() as u64,
            checksum: crc32c::crc32c(&snapshot.data),
        }
    }
}

/// A snapshot of the application's state machine with its metadata.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Which prefix of the log the snapshot replaces.
    pub meta: SnapshotMeta,
    /// The application's serialized state.
    pub data: Bytes,
}

/// How the leader currently replicates to one follower (etcd's progress states).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReplicationMode {
    /// The follower's log position is unknown: one AppendEntries at a time until it matches.
    #[default]
    Probe,
    /// The follower is known to match: AppendEntries are pipelined.
    Replicate,
    /// The follower needs entries the leader compacted: a snapshot is being sent.
    Snapshot,
}

/// The leader's view of one follower, reported in [`RaftStatus::replication`]
/// (the original's `types.PeerState`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerReplicationState {
    /// Next log index to send to the follower.
    pub next_index: Index,
    /// Highest index known to be replicated on the follower.
    pub match_index: Index,
    /// Whether the follower answered within the last election timeout.
    pub is_active: bool,
    /// Time since the follower last answered (measured in ticks, converted with the
    /// nominal tick interval), `None` if it never answered in this term.
    pub last_active_ago: Option<Duration>,
    /// Whether a snapshot is being sent to the follower.
    pub snapshot_in_progress: bool,
    /// Entries the follower lacks: the leader's last index minus `match_index`.
    pub replication_lag: u64,
    /// How the leader currently replicates to it.
    pub mode: ReplicationMode,
    /// AppendEntries requests in flight to it.
    pub inflight: usize,
}

/// A point-in-time report of a node's state, for diagnostics and monitoring.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaftStatus {
    /// This node's id.
    pub id: NodeId,
    /// Its current role.
    pub role: Role,
    /// Its current term.
    pub term: Term,
    /// The leader it knows of in this term.
    pub leader_id: Option<NodeId>,
    /// Index of its last log entry.
    pub last_log_index: Index,
    /// Term of its last log entry.
    pub last_log_term: Term,
    /// Highest index known committed.
    pub commit_index: Index,
    /// Highest index applied to the state machine.
    pub last_applied: Index,
    /// Last index covered by its latest snapshot.
    pub snapshot_index: Index,
    /// Term of that entry.
    pub snapshot_term: Term,
    /// Per-follower replication state; empty unless this node is the leader.
    pub replication: BTreeMap<NodeId, PeerReplicationState>,
    /// The configuration in effect: voters, learners, and each member's address and
    /// metadata (see [`crate::Membership`]).
    pub membership: crate::membership::Membership,
    /// Index of the configuration entry in effect (0 for the bootstrap configuration).
    pub membership_index: Index,
    /// Whether that entry is committed (a change is pending while it is not, or while the
    /// configuration is joint).
    pub membership_committed: bool,
}

impl Default for NodeId {
    fn default() -> Self {
        NodeId::new("")
    }
}

/// What the node hands to the application through its apply channel, in log order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApplyMsg {
    /// A committed command (the original's `CommandValid`).
    Command {
        /// Its log index.
        index: Index,
        /// Its term.
        term: Term,
        /// The command as proposed.
        data: Bytes,
    },
    /// The state machine was replaced by a snapshot (the original's `SnapshotValid`). Its
    /// bytes went to [`Applier::restore_from`](crate::Applier::restore_from), streamed
    /// from storage, and are not repeated here (a snapshot can be larger than memory).
    Snapshot {
        /// Last index the snapshot covers.
        index: Index,
        /// Term of that entry.
        term: Term,
        /// Size of the snapshot's data in bytes.
        size: u64,
    },
}

/// Why this node started campaigning.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ElectionReason {
    /// The election timeout expired without word from a leader. With PreVote on this
    /// starts a pre-vote round; without it, a real election.
    Timeout,
    /// A majority granted this node's pre-votes, so it starts the real election.
    PreVoteWon,
    /// The leader handed leadership over (`TimeoutNow`): a real election at once.
    Transfer,
}

impl ElectionReason {
    /// A short stable name, for metric labels: `timeout`, `pre_vote_won`, `transfer`.
    pub fn label(self) -> &'static str {
        match self {
            ElectionReason::Timeout => "timeout",
            ElectionReason::PreVoteWon => "pre_vote_won",
            ElectionReason::Transfer => "transfer",
        }
    }
}

/// What a node recovered from storage, to build its core from.
#[derive(Clone, Debug, Default)]
pub struct InitialState {
    /// Persisted term and vote.
    pub hard_state: HardState,
    /// The latest snapshot ([`Storage::snapshot_info`](crate::Storage::snapshot_info));
    /// the application's state machine has been restored from it. The core sends it to
    /// followers that need compacted entries (its bytes stay in storage).
    pub snapshot: Option<SnapshotInfo>,
    /// The durable log entries; entries at or below the snapshot's index are skipped.
    pub entries: Vec<Entry>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_compare_by_text_whether_or_not_they_share_storage() {
        use std::collections::hash_map::DefaultHasher;
        use std::hash::{Hash, Hasher};
        let hash = |id: &NodeId| {
            let mut h = DefaultHasher::new();
            id.hash(&mut h);
            h.finish()
        };
        let a = NodeId::from("node-2");
        let shared = a.clone();
        let separate = NodeId::from("node-2");
        let other = NodeId::from("node-10");
        assert_eq!(a, shared);
        assert_eq!(a, separate);
        assert_eq!(a.cmp(&separate), std::cmp::Ordering::Equal);
        assert_eq!(hash(&a), hash(&separate));
        assert_ne!(a, other);
        // Text order, not numeric: "node-10" < "node-2".
        assert!(other < a);
        assert_eq!(a.partial_cmp(&other), Some(std::cmp::Ordering::Greater));
        let map: std::collections::BTreeMap<NodeId, u8> = [(a, 1), (other, 2)].into();
        assert_eq!(map.get(&NodeId::from("node-2")), Some(&1));
    }

    #[test]
    fn entry_kind_codes_round_trip_and_reject_unknown() {
        for kind in [EntryKind::Normal, EntryKind::Noop, EntryKind::ConfigChange] {
            assert_eq!(EntryKind::from_u8(kind.to_u8()), Some(kind));
        }
        assert_eq!(EntryKind::from_u8(3), None);
    }

    #[test]
    fn node_id_orders_and_borrows_as_str() {
        let mut ids = [NodeId::from("node-2"), NodeId::from("node-1")];
        ids.sort();
        assert_eq!(ids[0].as_str(), "node-1");
        let map: BTreeMap<NodeId, u8> = [(NodeId::from("a"), 1)].into_iter().collect();
        assert_eq!(map.get("a"), Some(&1));
    }
}
