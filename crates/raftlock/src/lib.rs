//! # raftlock
//!
//! RaftLock, a distributed lock service on [`raftlock_raft`].
pub mod machine;
pub mod proto;

pub use machine::{LockMachine, SessionId};
