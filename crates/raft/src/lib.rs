//! # raftlock-raft
//!
//! The Raft consensus library of RaftLock: leader election with randomized timeouts and
//! PreVote, pipelined log replication, snapshots and log compaction, crash recovery from
//! durable file storage, and linearizable reads (ReadIndex and a leader lease).
//!
//! This crate is being built issue by issue; see `docs/ARCHITECTURE.md` for the map. What
//! exists today: the core [`types`], [`Config`] with validation and TOML loading, [`Error`],
//! durable [`storage`] ([`FileStorage`], [`MemStorage`]) and the sans-IO consensus state
//! machine [`RaftCore`] (elections with PreVote and CheckQuorum, pipelined replication,
//! commit, snapshots with chunked InstallSnapshot, ReadIndex, follower reads and a leader
//! lease). The tokio runtime, the public `Raft` handle and the gRPC transport come next.
//!
//! ```
//! use raftlock_raft::{Entry, FileStorage, FileStorageOptions, HardState, NodeId, Storage};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let mut storage = FileStorage::open(dir.path(), FileStorageOptions::default()).unwrap();
//! storage.set_hard_state(&HardState { term: 1, voted_for: Some(NodeId::from("node-1")) }).unwrap();
//! storage.append(&[Entry::normal(1, 1, "SET greeting=hello")]).unwrap();
//! storage.sync().unwrap(); // one fsync makes the whole batch durable
//! drop(storage);
//!
//! let storage = FileStorage::open(dir.path(), FileStorageOptions::default()).unwrap();
//! assert_eq!(storage.last_index(), 1);
//! assert_eq!(storage.hard_state().term, 1);
//! ```

pub mod config;
pub mod core;
pub mod error;
pub mod message;
pub mod rand;
pub mod storage;
pub mod types;

pub use self::core::{
    InitialState, RaftCore, ReadFailure, ReadState, Ready, SoftState, WriteBatch,
};
pub use config::{Config, FeatureFlags, Options, TuningParams, NOMINAL_TICK_INTERVAL};
pub use error::{ConfigError, Error, Result, StorageError};
pub use message::Message;
pub use rand::{Rand, SeededRand, StandardRand};
pub use storage::{
    load_initial_state, FileStorage, FileStorageOptions, MemStorage, Storage, SyncPolicy,
};
pub use types::{
    ApplyMsg, Entry, EntryKind, HardState, Index, NodeId, PeerConfig, PeerReplicationState,
    RaftStatus, ReplicationMode, Role, Snapshot, SnapshotMeta, Term,
};
