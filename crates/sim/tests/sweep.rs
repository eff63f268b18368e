//! The bounded simulator sweep that runs in CI, and the determinism check.

use raftlock_sim::{run, Profile, RunConfig};

fn config(seed: u64, nodes: usize, profile: Profile) -> RunConfig {
    RunConfig {
        seed,
        nodes,
        profile,
        fault_ms: 3_000,
        trace: false,
    }
}

#[test]
fn same_seed_same_trace() {
    for profile in Profile::ALL {
        let a = run(config(42, 5, profile));
        let b = run(config(42, 5, profile));
        assert_eq!(a.trace_hash, b.trace_hash, "{profile:?}");
        assert_eq!(a.events, b.events, "{profile:?}");
        let c = run(config(43, 5, profile));
        assert_ne!(
            a.trace_hash, c.trace_hash,
            "{profile:?}: different seeds should differ"
        );
    }
}

#[test]
fn bounded_sweep_of_every_profile_and_size() {
    let seeds: u64 = std::env::var("RAFTLOCK_SIM_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let mut failures = Vec::new();
    let mut committed = 0;
    for seed in 0..seeds {
        let nodes = [3, 5, 7][(seed % 3) as usize];
        let profile = Profile::ALL[((seed / 3) % Profile::ALL.len() as u64) as usize];
        let report = run(config(seed, nodes, profile));
        committed += report.committed;
        if let Some(v) = report.violation {
            failures.push(format!(
                "seed {seed} ({nodes} nodes, {profile:?}): {v}\n  replay: cargo run -p raftlock-sim --release -- --seeds {seed}..{} --nodes {nodes} --profile {profile:?} --fault-ms 3000 --trace",
                seed + 1
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failing seeds:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(
        committed > seeds as usize * 10,
        "the runs must make progress ({committed} entries committed)"
    );
}

#[test]
fn runs_record_substantial_histories() {
    let report = run(config(3, 3, Profile::Lossy));
    assert_eq!(report.violation, None);
    assert!(
        report.ops_ok > 100,
        "only {} operations completed",
        report.ops_ok
    );
}

/// Seeds that once failed, replayed with the settings that found them. A change to the
/// core can shift a run's random draws so that its seed no longer reaches the moment that
/// failed; the core tests named below pin each mechanism regardless.
#[test]
fn seeds_that_found_bugs_stay_fixed() {
    // A leader paused for 1.2 s resumed as the network healed and took a proposal before
    // the newer term reached it, so an operation invoked after healing ended uncertain.
    // Fixed by CheckQuorum on the clock before each proposal (core test
    // `a_resumed_leader_past_two_election_timeouts_steps_down_before_proposing`).
    let report = run(RunConfig {
        fault_ms: 10_000,
        ..config(20_000, 5, Profile::Crashes)
    });
    assert_eq!(report.violation, None);
    // A follower's ReadIndex answered after the follower restarted matched a new read,
    // because request numbers restarted from zero: a stale read. Fixed by numbering from
    // a random start in each process (core test
    // `a_late_answer_for_the_previous_process_cannot_serve_a_read_after_a_restart`).
    let report = run(RunConfig {
        fault_ms: 10_000,
        ..config(114_039, 3, Profile::Brutal)
    });
    assert_eq!(report.violation, None);
}
