//! Tests of `RaftCore` alone, driven step by step with no threads and no sleeps: the
//! scenarios of the Raft paper section by section, PreVote and CheckQuorum, flow control
//! and proposals. `harness` is the small in-memory cluster they run on.

// Shared with the runtime's unit tests (`node/membership.rs`).
pub(crate) mod harness;

mod backpressure;
mod campaign_while_removed;

mod election;
mod election_reports;
mod flow_control;
mod membership;
mod persistence;
mod prevote_check_quorum;
mod proposals;
mod reads;
mod replication;
mod snapshots;
mod terms;
mod trace;
mod transfer;
mod vote_guard;
