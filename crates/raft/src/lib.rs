//! # raftlock-raft
//!
//! The Raft consensus library of RaftLock: leader election with randomized timeouts and
//! PreVote, pipelined log replication, snapshots and log compaction, crash recovery from
//! durable file storage, and linearizable reads (ReadIndex and a leader lease).
//!
//! See `docs/ARCHITECTURE.md` for the map. The pieces: [`RaftBuilder`] assembles a node
//! from a [`Config`], a [`Storage`] ([`FileStorage`] or [`MemStorage`]), an [`Applier`]
//! (your state machine) and a [`NetworkManager`] ([`GrpcNetwork`] between processes,
//! feature `grpc`, on by default; [`LocalNetwork`] in one process); [`Raft`] is the handle
//! you use. Underneath, [`RaftCore`] is the
//! sans-IO protocol state machine that the simulator (`raftlock-sim`) tests under faults.
//!
//! A single-node cluster, in one process:
//!
//! ```
//! use bytes::Bytes;
//! use raftlock_raft::{
//!     Applier, ApplierError, Config, Index, LocalNetwork, MemStorage, NodeId, PeerConfig,
//!     RaftBuilder, SnapshotMeta, Term,
//! };
//!
//! /// The state machine: counts the commands it applied.
//! #[derive(Default)]
//! struct Counter(u64);
//!
//! impl Applier for Counter {
//!     fn apply(&mut self, _: Index, _: Term, _: &Bytes) -> Result<Bytes, ApplierError> {
//!         self.0 += 1;
//!         Ok(Bytes::from(self.0.to_string()))
//!     }
//!     fn snapshot(&mut self) -> Result<(Index, Bytes), ApplierError> {
//!         Ok((self.0, Bytes::from(self.0.to_string())))
//!     }
//!     fn restore(&mut self, _: &SnapshotMeta, data: &Bytes) -> Result<(), ApplierError> {
//!         self.0 = String::from_utf8_lossy(data).parse().unwrap_or(0);
//!         Ok(())
//!     }
//! }
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let me = NodeId::from("node-1");
//! let peers = vec![PeerConfig { id: me.clone(), address: "127.0.0.1:8001".into() }];
//! let mut config = Config::new(me.clone(), peers);
//! config.options.nominal_tick_interval = std::time::Duration::from_millis(10);
//! let network = LocalNetwork::new();
//! let node = RaftBuilder::new()
//!     .with_config(config)
//!     .with_storage(MemStorage::new())
//!     .with_applier(Counter::default())
//!     .with_network(network.transport(me))
//!     .build()
//!     .unwrap();
//! node.start().unwrap();
//! while !node.get_state().1 {
//!     tokio::time::sleep(std::time::Duration::from_millis(10)).await; // the election
//! }
//! let result = node.propose_and_wait("SET greeting=hello").await.unwrap();
//! assert_eq!(result, "1"); // what the applier returned
//! node.read_index().await.unwrap(); // a linearizable read may now see the state
//! node.stop().await;
//! # });
//! ```
//!
//! Storage on its own: one fsync makes a whole batch durable (group commit).
//!
//! ```
//! use raftlock_raft::{Entry, FileStorage, FileStorageOptions, HardState, NodeId, Storage};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let mut storage = FileStorage::open(dir.path(), FileStorageOptions::default()).unwrap();
//! storage.set_hard_state(&HardState { term: 1, voted_for: Some(NodeId::from("node-1")) }).unwrap();
//! storage.append(&[Entry::normal(1, 1, "SET greeting=hello")]).unwrap();
//! storage.sync().unwrap();
//! drop(storage);
//!
//! let storage = FileStorage::open(dir.path(), FileStorageOptions::default()).unwrap();
//! assert_eq!(storage.last_index(), 1);
//! assert_eq!(storage.hard_state().term, 1);
//! ```
// Without the `grpc` feature the type is absent; point the crate docs' link at its
// published documentation instead of leaving it dangling.
#![cfg_attr(
    not(feature = "grpc"),
    doc = "[`GrpcNetwork`]: https://docs.rs/raftlock-raft/latest/raftlock_raft/struct.GrpcNetwork.html"
)]

pub mod api;
pub mod applier;
pub mod builder;
pub mod clock;
pub mod config;
pub mod core;
pub mod error;
pub mod membership;
pub mod message;
pub mod metrics;
pub mod network;
mod node;
pub mod rand;
pub mod rpc;
pub mod storage;
#[cfg(test)]
pub(crate) mod testutil;
pub mod types;

pub use self::core::{
    Commands, ElectionStart, InitialState, RaftCore, ReadFailure, ReadState, Ready, SnapshotChunk,
    SnapshotLog, SnapshotWrite, SoftState, WriteBatch,
};
pub use api::Raft;
pub use applier::{Applier, ApplierError};
pub use builder::RaftBuilder;
pub use clock::{Clock, StandardClock};
pub use config::{Config, FeatureFlags, Options, TuningParams, NOMINAL_TICK_INTERVAL};
pub use error::{ConfigError, Error, OverloadReason, RejectReason, Result, StorageError};
pub use membership::{Membership, MembershipError, NodeInfo};
pub use message::{
    AppendEntries, Heartbeat, InstallSnapshot, Message, MessageBody, ReadIndexRequest, RequestVote,
};
#[cfg(feature = "prometheus")]
pub use metrics::PrometheusMetrics;
pub use metrics::{ElectionReason, Metrics, NoOpMetrics, ProposalResult, QueueDepths};
#[cfg(feature = "grpc")]
pub use network::{GrpcNetwork, GrpcOptions};
pub use network::{Inbound, LocalNetwork, LocalTransport, NetworkManager};
pub use node::Observed;
pub use rand::{Rand, SeededRand, StandardRand};
pub use rpc::{RpcHandler, RpcHeader};
pub use storage::{
    load_initial_state, FileStorage, FileStorageOptions, MemStorage, SnapshotReader,
    SnapshotSource, SnapshotStream, SnapshotWriter, StagedSnapshot, Storage, SyncPolicy,
};
pub use types::{
    ApplyMsg, Entry, EntryKind, HardState, Index, NodeId, PeerConfig, PeerReplicationState,
    RaftStatus, ReplicationMode, Role, Snapshot, SnapshotInfo, SnapshotMeta, Term,
};
