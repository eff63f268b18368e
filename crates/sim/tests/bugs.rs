//! The simulator must be able to fail: each deliberate bug is caught by the invariant it
//! breaks (liveness failures do not count) within a stated number of seeds. Run with
//! `--features bug-injection` (the README's test command uses `--all-features`).
//!
//! Replay any of them with the seed runner, e.g.
//! `cargo run -p raftlock-sim --release --features bug-injection -- --seeds 0..300 --profile crashes --fault-ms 3000 --bug two-votes`.

use raftlock_raft::core::InjectedBugs;
use raftlock_sim::{Profile, RunConfig, World};

fn config(seed: u64, profile: Profile) -> RunConfig {
    RunConfig {
        seed,
        nodes: [3, 5][(seed % 2) as usize],
        profile,
        fault_ms: 3_000,
        trace: false,
    }
}

/// The first seed below `within` whose run reports a safety violation, with the violation.
fn first_safety_violation(within: u64, world: impl Fn(u64) -> World) -> Option<(u64, String)> {
    (0..within).find_map(|seed| {
        world(seed)
            .run()
            .violation
            .filter(|v| !v.contains("liveness"))
            .map(|v| (seed, v))
    })
}

fn assert_caught(name: &str, within: u64, expect: &str, world: impl Fn(u64) -> World) {
    match first_safety_violation(within, world) {
        Some((seed, v)) => {
            println!("{name}: caught at seed {seed}: {v}");
            assert!(
                v.contains(expect),
                "{name}: caught by an unexpected check: {v}"
            );
        }
        None => panic!("{name}: not caught within {within} seeds"),
    }
}

#[test]
fn catches_two_votes_in_one_term() {
    let bugs = InjectedBugs {
        grant_two_votes_per_term: true,
        ..Default::default()
    };
    assert_caught("two votes per term", 100, "election safety", |seed| {
        World::with_bugs(config(seed, Profile::Partitions), bugs)
    });
}

#[test]
fn catches_acknowledgement_before_durable() {
    let bugs = InjectedBugs {
        ack_before_durable: true,
        ..Default::default()
    };
    assert_caught("ack before durable", 100, "durab", |seed| {
        World::with_bugs(config(seed, Profile::Crashes), bugs)
    });
}

#[test]
fn catches_votes_for_candidates_with_stale_logs() {
    let bugs = InjectedBugs {
        vote_without_log_check: true,
        ..Default::default()
    };
    assert_caught(
        "vote without log check",
        100,
        "leader completeness",
        |seed| World::with_bugs(config(seed, Profile::Brutal), bugs),
    );
}

#[test]
fn catches_stale_reads_in_the_client_history() {
    // The Raft invariants all hold; only the linearizability check can see this one.
    assert_caught("stale reads", 20, "linearizability violated", |seed| {
        World::with_stale_reads(config(seed, Profile::Calm))
    });
}

#[test]
fn correct_core_passes_the_same_seeds() {
    // The control: without bugs, the seeds the tests above use all pass.
    for profile in [
        Profile::Partitions,
        Profile::Crashes,
        Profile::Brutal,
        Profile::Calm,
    ] {
        for seed in 0..100 {
            if let Some(v) = World::new(config(seed, profile)).run().violation {
                panic!("seed {seed} ({profile:?}) fails without any injected bug: {v}");
            }
        }
    }
}

#[test]
fn catches_reads_served_before_the_new_leaders_noop_commits() {
    let bugs = InjectedBugs {
        read_before_noop_commit: true,
        ..Default::default()
    };
    assert_caught(
        "read before no-op commit",
        300,
        "linearizability violated",
        |seed| World::with_bugs(config(seed, Profile::Crashes), bugs),
    );
}

#[test]
fn catches_stale_lease_reads_when_clocks_drift_beyond_the_bound() {
    assert_caught(
        "drift beyond the lease bound",
        300,
        "linearizability violated",
        |seed| World::with_drift_beyond_bound(config(seed, Profile::Partitions)),
    );
}

#[test]
fn lease_reads_stay_linearizable_when_drift_is_within_the_bound() {
    // The control for the test above: the same adversary, but the leader's clock is only
    // 10% slower than the others' and the nodes are configured for 11%.
    for seed in 0..100 {
        let world = World::with_adversarial_clocks(config(seed, Profile::Partitions), 21, 19, 11);
        if let Some(v) = world.run().violation {
            panic!("seed {seed}: {v}");
        }
    }
}
