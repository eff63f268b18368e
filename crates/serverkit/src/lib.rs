//! # raftlock-serverkit
//!
//! What every server process built on [`raftlock_raft`] shares, so that `raftkv` and
//! `raftlock` run, configure and test the same way:
//!
//! - [`settings`]: the node's flags and the equivalent TOML file (id, peers, data
//!   directory, timing), mapped to the library's [`Config`](raftlock_raft::Config), and
//!   the list of each member's client address that redirects name;
//! - [`http`]: JSON answers and errors of the HTTP APIs (status, `Location`,
//!   `Retry-After`);
//! - [`signals`]: graceful shutdown on SIGINT / SIGTERM or the parent's death, logging
//!   of leader changes, tracing set-up;
//! - [`members`]: membership at run time — the admin routes (`/v1/members`,
//!   `/v1/leader/transfer`), members' client addresses from the replicated metadata,
//!   joining a running cluster, refusing a removed node, handing leadership over on
//!   SIGTERM; [`admin`]: the `member` and `leader` commands over those routes;
//! - [`cluster`]: a local cluster of node processes on loopback for demos, process-level
//!   tests and benchmarks, every process reaped on drop.

pub mod admin;
pub mod cluster;
pub mod http;
pub mod members;
pub mod settings;
pub mod signals;
