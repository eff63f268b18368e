//! Error types. [`Error`] is what the public API returns; [`StorageError`] and
//! [`ConfigError`] carry the context (path, offset, field) needed to act on a failure.

use std::io;
use std::path::PathBuf;

use crate::applier::ApplierError;
use crate::types::{Index, NodeId};

/// Result with the library's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything the Raft API can fail with (the original's `raft/errors.go`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// This node is not the leader. `leader` names the leader it knows of, so a client can
    /// redirect; `None` while no leader is known.
    #[error("raft: node is not the leader (leader: {})", leader.as_ref().map_or("unknown", |l| l.as_str()))]
    NotLeader {
        /// The leader this node knows of in its current term.
        leader: Option<NodeId>,
    },
    /// The operation did not complete in time; its outcome is unknown.
    #[error("raft: operation timed out")]
    Timeout,
    /// The node is stopping or stopped.
    #[error("raft: raft node is shutting down")]
    ShuttingDown,
    /// The node lost leadership before the operation completed, and its outcome is
    /// unknown: the entry may still commit under the next leader, or may be lost. Retry
    /// only what is idempotent (or deduplicated by the application).
    #[error("raft: leadership lost before the operation completed; its outcome is unknown (the entry may still commit under the next leader)")]
    LeadershipLost,
    /// A majority of the cluster could not be reached.
    #[error("raft: quorum unreachable")]
    QuorumUnreachable,
    /// The requested log entries were compacted into a snapshot.
    #[error("raft: required log entries are compacted (requested {requested}, first available {first_available})")]
    Compacted {
        /// The index asked for.
        requested: Index,
        /// The first index still in the log.
        first_available: Index,
    },
    /// The requested item does not exist.
    #[error("raft: item not found: {0}")]
    NotFound(String),
    /// Something that starts once was started a second time (`what` names it: the node,
    /// a transport).
    #[error("raft: {what} already started")]
    AlreadyStarted {
        /// What was started twice.
        what: &'static str,
    },
    /// The application's state machine ([`Applier`](crate::Applier)) failed: as the
    /// answer to a command it applied (the node goes on), or restoring a snapshot (the
    /// node stops: its state machine is not in a known state).
    #[error("raft: {0}")]
    Applier(#[from] ApplierError),
    /// A membership change or leadership transfer was refused (see
    /// [`MembershipError`](crate::MembershipError)); nothing was appended.
    #[error("raft: {0}")]
    Membership(#[from] crate::membership::MembershipError),
    /// A leadership transfer is under way: proposals and membership changes are refused
    /// until `to` leads (then retry there) or the transfer times out. Nothing happened.
    #[error("raft: leadership is being transferred to {to}; retry shortly")]
    TransferInProgress {
        /// The transfer's target.
        to: NodeId,
    },
    /// A proposal is larger than `max_proposal_bytes` allows; nothing was appended.
    #[error("raft: proposal of {size} bytes exceeds the limit of {limit} bytes")]
    ProposalTooLarge {
        /// Size of the rejected proposal.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// A bound on the work this node holds was reached (see [`OverloadReason`]): the
    /// request was refused before anything was appended or queued, so it had no effect.
    /// Retry after a short wait, once the cluster (or this node's state machine) caught
    /// up. Servers answer it as "unavailable, retry later".
    #[error("raft: overloaded: {reason}; retry later")]
    Overloaded {
        /// Which bound was reached.
        reason: OverloadReason,
    },
    /// An inbound peer message was refused (see [`RpcHandler`](crate::RpcHandler)): it
    /// was misaddressed, came from a node that is not a peer, was malformed, or found the
    /// node's inbound queue full. Nothing reached the protocol.
    #[error("raft: peer message rejected: {0}")]
    Rejected(#[from] RejectReason),
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Durable storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Which bound refused a request with [`Error::Overloaded`]. Each names a setting of
/// [`TuningParams`](crate::TuningParams).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OverloadReason {
    /// More bytes are proposed and not yet committed than `max_uncommitted_bytes` allows:
    /// followers (a majority of them) are behind.
    #[error("too many uncommitted bytes ({uncommitted} + {size} > {limit})")]
    UncommittedBytes {
        /// Bytes proposed in this term and not yet committed.
        uncommitted: u64,
        /// Size of the refused proposal.
        size: u64,
        /// `max_uncommitted_bytes`.
        limit: u64,
    },
    /// More bytes are proposed and not yet applied by this node than `max_unapplied_bytes`
    /// allows: this node's state machine is behind the commit index.
    #[error(
        "too many unapplied bytes ({unapplied} + {size} > {limit}); the state machine is behind"
    )]
    UnappliedBytes {
        /// Bytes proposed in this term and not yet applied here, with a fixed per-entry
        /// overhead counted in.
        unapplied: u64,
        /// What the refused proposal would add.
        size: u64,
        /// `max_unapplied_bytes`.
        limit: u64,
    },
    /// `max_pending_reads` reads are already waiting on this node.
    #[error("{pending} reads are already waiting (limit {limit})")]
    PendingReads {
        /// Reads waiting for confirmation or for the state machine.
        pending: usize,
        /// `max_pending_reads`.
        limit: usize,
    },
}

impl OverloadReason {
    /// A short stable name of the case, for metric labels and error bodies:
    /// `uncommitted_bytes`, `unapplied_bytes`, `pending_reads`.
    pub fn label(&self) -> &'static str {
        match self {
            OverloadReason::UncommittedBytes { .. } => "uncommitted_bytes",
            OverloadReason::UnappliedBytes { .. } => "unapplied_bytes",
            OverloadReason::PendingReads { .. } => "pending_reads",
        }
    }
}

/// Why an inbound peer message was refused. Each case is counted (see
/// [`Metrics::observe_message_rejected`](crate::Metrics::observe_message_rejected)).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RejectReason {
    /// The message is stamped with another cluster's id (checked by transports that carry
    /// one, such as the gRPC transport).
    #[error("it belongs to cluster {cluster_id:?}, not to this one")]
    WrongCluster {
        /// The cluster id the message carried.
        cluster_id: String,
    },
    /// The message is addressed to another node.
    #[error("it is addressed to {to:?}, not to this node")]
    WrongRecipient {
        /// The recipient the message named.
        to: String,
    },
    /// The sender is not a peer of this node (an unknown node, or this node itself).
    #[error("its sender {from:?} is not a peer of this node")]
    UnknownSender {
        /// The sender the message named.
        from: String,
    },
    /// The sender was a member and was removed from the cluster: its id is retired in the
    /// configuration this node holds. A transport that can answer tells the sender (see
    /// [`Raft::removed_channel`](crate::Raft::removed_channel)).
    #[error("its sender {from:?} was removed from the cluster")]
    Removed {
        /// The removed sender.
        from: String,
    },
    /// The message is larger than the transport accepts.
    #[error("it is too large: {0}")]
    Oversized(String),
    /// The message is not well formed (e.g. AppendEntries with entries that do not follow
    /// `prev_log_index`, an unknown entry kind, a snapshot chunk past its total size).
    #[error("it is malformed: {0}")]
    Malformed(String),
    /// The node's inbound queue is full; the message was dropped, as a congested network
    /// would. The sender retries as the protocol does for any lost message.
    #[error("the node's inbound queue is full")]
    QueueFull,
    /// A cluster configuration the message carries does not decode as a
    /// [`Membership`](crate::Membership) or breaks its rules: the data of a `ConfigChange`
    /// entry of an AppendEntries, or the membership of a snapshot. Accepted, it would stop
    /// the node when it applies the entry or installs the snapshot.
    #[error("its configuration at index {index} is malformed: {reason}")]
    BadConfiguration {
        /// Index of the `ConfigChange` entry, or the snapshot's last index.
        index: u64,
        /// What is wrong with it.
        reason: String,
    },
}

impl RejectReason {
    /// A short stable name of the case, for metric labels: `wrong_cluster`,
    /// `wrong_recipient`, `unknown_sender`, `removed`, `oversized`, `malformed`,
    /// `queue_full`, `bad_configuration`.
    pub fn label(&self) -> &'static str {
        match self {
            RejectReason::WrongCluster { .. } => "wrong_cluster",
            RejectReason::WrongRecipient { .. } => "wrong_recipient",
            RejectReason::UnknownSender { .. } => "unknown_sender",
            RejectReason::Removed { .. } => "removed",
            RejectReason::Oversized(_) => "oversized",
            RejectReason::Malformed(_) => "malformed",
            RejectReason::QueueFull => "queue_full",
            RejectReason::BadConfiguration { .. } => "bad_configuration",
        }
    }
}

/// A configuration setting that breaks a rule. `field` is the path of the setting as it
/// appears in the TOML file (e.g. `options.election_tick_count`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {field}: {rule}")]
pub struct ConfigError {
    /// The offending setting.
    pub field: String,
    /// The rule it breaks, in words.
    pub rule: String,
}

impl ConfigError {
    /// A rule violation for `field`.
    pub fn new(field: impl Into<String>, rule: impl Into<String>) -> Self {
        ConfigError {
            field: field.into(),
            rule: rule.into(),
        }
    }
}

/// A failure of durable storage, with the file and offset involved where there is one.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// An I/O call failed.
    #[error("storage: {op} {}: {source}", path.display())]
    Io {
        /// What was being done (`open`, `write`, `fsync`, ...).
        op: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// Data on disk failed its checksum or is malformed somewhere other than a torn tail.
    /// It is never skipped or returned as data.
    #[error("storage: corruption in {} at offset {offset}: {reason}", path.display())]
    Corruption {
        /// The damaged file.
        path: PathBuf,
        /// Byte offset of the damaged record in that file.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// Another process (or another open handle) holds the data directory's lock.
    #[error("storage: data directory {} is locked by {}", path.display(), holder.map_or_else(|| "another process".to_string(), |p| format!("process {p}")))]
    Locked {
        /// The lock file.
        path: PathBuf,
        /// The pid recorded by the holder, when readable.
        holder: Option<u32>,
    },
    /// The requested entries were compacted away.
    #[error("storage: index {requested} is compacted (first available {first_available})")]
    Compacted {
        /// The index asked for.
        requested: Index,
        /// The first index still stored.
        first_available: Index,
    },
    /// The requested entries are beyond the end of the log.
    #[error("storage: index {requested} is beyond the last index {last_index}")]
    Unavailable {
        /// The index asked for.
        requested: Index,
        /// The last stored index.
        last_index: Index,
    },
    /// The caller broke the storage contract (e.g. a gap in appended indices). Nothing was
    /// written.
    #[error("storage: invalid request: {0}")]
    InvalidRequest(String),
    /// A snapshot install was told to keep the log after the snapshot
    /// ([`SnapshotLog::Keep`](crate::SnapshotLog::Keep)), but the log does not hold the
    /// snapshot's last entry with its term: the caller's view of storage is wrong, and
    /// keeping or dropping the log would silently diverge from it. Nothing was written.
    #[error("storage: told to keep the log after a snapshot at index {index} term {term}, but the log holds {}", held.map_or_else(|| "no entry there".to_string(), |t| format!("term {t} there")))]
    SnapshotLogMismatch {
        /// The snapshot's last index.
        index: Index,
        /// The snapshot's last term.
        term: crate::types::Term,
        /// The term of the entry the log holds at `index`, if any.
        held: Option<crate::types::Term>,
    },
}

impl StorageError {
    /// Wraps an I/O error with the operation and path it concerns.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        StorageError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

impl From<StorageError> for io::Error {
    fn from(e: StorageError) -> Self {
        io::Error::other(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_leader_names_the_leader_for_redirects() {
        let e = Error::NotLeader {
            leader: Some(NodeId::from("node-2")),
        };
        assert_eq!(
            e.to_string(),
            "raft: node is not the leader (leader: node-2)"
        );
        let e = Error::NotLeader { leader: None };
        assert!(e.to_string().contains("unknown"));
    }

    #[test]
    fn rejections_say_why() {
        let e = Error::from(RejectReason::UnknownSender {
            from: "node-9".into(),
        });
        assert_eq!(
            e.to_string(),
            "raft: peer message rejected: its sender \"node-9\" is not a peer of this node"
        );
        assert_eq!(RejectReason::QueueFull.label(), "queue_full");
    }

    #[test]
    fn corruption_names_file_and_offset() {
        let e = StorageError::Corruption {
            path: PathBuf::from("/d/log/1.seg"),
            offset: 4096,
            reason: "checksum mismatch".into(),
        };
        let text = e.to_string();
        assert!(
            text.contains("/d/log/1.seg") && text.contains("4096"),
            "{text}"
        );
    }
}
