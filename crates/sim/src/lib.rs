//! # raftlock-sim
//!
//! A deterministic simulator that runs the real [`raftlock_raft::RaftCore`] under a seeded
//! schedule of faults — message loss, duplication, reordering, partitions (symmetric,
//! one-way, partial), pauses, crashes that lose unsynced writes or tear the last one,
//! restarts and tick skew — and checks Raft's safety properties after every step, then
//! liveness once the faults stop. Every run is a pure function of its seed.
//!
//! ```
//! use raftlock_sim::{run, Profile, RunConfig};
//! let report = run(RunConfig { seed: 7, nodes: 3, profile: Profile::Brutal, fault_ms: 2_000, trace: false });
//! assert_eq!(report.violation, None);
//! ```

pub mod clients;
pub mod disk;
mod faults;
pub mod invariants;
pub mod kv;
pub mod linearizability;
pub mod network;
pub mod profile;
mod reconfig;
pub mod world;

pub use profile::Profile;
pub use world::{RunConfig, RunReport, World};

/// Runs one seeded simulation.
pub fn run(cfg: RunConfig) -> RunReport {
    World::new(cfg).run()
}
