//! # raftlock
//!
//! RaftLock, a distributed lock service on [`raftlock_raft`]: sessions kept alive by
//! their clients, exclusive locks with fencing tokens, fair wait queues with priorities,
//! lock-delay after an expiry, and answers that survive retries. See
//! `crates/raftlock/README.md` for the rules that make it correct.
//!
//! - [`machine`]: the replicated state machine (pure, deterministic);
//! - [`server`]: `raftlock server` — the node, its HTTP/JSON and gRPC APIs;
//! - [`config`]: the server's flags and TOML file;
//! - [`proto`]: the generated gRPC API and log formats.

pub mod config;
pub mod machine;
pub mod proto;
pub mod server;

pub use machine::{LockMachine, SessionId};
