//! # raftlock-kv
//!
//! `raftkv`, the seed's Quick Start made a real program: a replicated key-value server on
//! [`raftlock_raft`], with a client HTTP API, a one-command 3-node demo and client
//! subcommands. The pieces are a library too, so that tests and benchmarks drive real
//! processes with the same code the binary uses:
//!
//! - [`command`]: the log entry format; [`store`]: the state machine (the seed's
//!   `KeyValueStore`); [`snapshot`]: its streaming snapshot format;
//! - [`config`]: `raftkv node` flags and TOML file; [`server`]: the node and its HTTP API;
//! - [`client`]: a leader-finding HTTP client; [`cluster`]: node processes on loopback;
//!   [`demo`]: `raftkv demo`.

pub mod client;
pub mod cluster;
pub mod command;
pub mod config;
pub mod demo;
pub mod server;
pub mod snapshot;
pub mod store;
