//! # raftlock
//!
//! RaftLock, a distributed lock service on [`raftlock_raft`]: sessions kept alive by
//! their clients, exclusive locks with fencing tokens, fair wait queues with priorities,
//! lock-delay after an expiry, and answers that survive retries. See
//! `crates/raftlock/README.md` for the rules that make it correct.
//!
//! - [`machine`]: the replicated state machine (pure, deterministic);
//! - [`server`]: `raftlock server` — the node, its HTTP/JSON and gRPC APIs;
//! - [`client`]: the Rust client — leader following, retries with request ids, a
//!   session kept alive in the background, [`LockGuard`] with its fencing token;
//! - [`config`]: the server's flags and TOML file;
//! - [`cli`]: the `raftlock` command line (server, lock, one-shot commands, demo);
//! - [`cluster`]: server processes on loopback for the demo and tests;
//! - [`proto`]: the generated gRPC API and log formats.

pub mod cli;
pub mod client;
pub mod cluster;
pub mod config;
pub mod machine;
pub mod proto;
pub mod server;

pub use client::{
    AcquireResult, Acquired, Client, ClientError, ClientOptions, LockGuard, NotAcquired,
};
pub use machine::{LockMachine, SessionId};
