//! Code generated from `proto/` by `build.rs`: the client API (`raftlock.v1`) and the
//! replicated log and snapshot formats (`raftlock.log.v1`).

/// `proto/raftlock.proto`: the gRPC client API, service `RaftLock`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod api {
    tonic::include_proto!("raftlock.v1");
}

/// `proto/raftlock_log.proto`: log entries, the applier's answers, snapshots.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod log {
    tonic::include_proto!("raftlock.log.v1");
}
