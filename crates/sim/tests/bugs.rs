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

fn assert_caught(name: &str, within: u64, expect: &str, world: impl Fn(u64) -> World) {
    assert_caught_in(name, 0..within, expect, world)
}

fn assert_caught_in(
    name: &str,
    seeds: std::ops::Range<u64>,
    expect: &str,
    world: impl Fn(u64) -> World,
) {
    let found = seeds.clone().find_map(|seed| {
        world(seed)
            .run()
            .violation
            .filter(|v| !v.contains("liveness"))
            .map(|v| (seed, v))
    });
    match found {
        Some((seed, v)) => {
            println!("{name}: caught at seed {seed}: {v}");
            assert!(
                v.contains(expect),
                "{name}: caught by an unexpected check: {v}"
            );
        }
        None => panic!("{name}: not caught in seeds {seeds:?}"),
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

/// A run of the `reconfig` profile with the seed runner's node count for `seed` (3, 5
/// or 7), so that a seed named here replays with
/// `raftlock-sim --profile reconfig --seeds S..S+1 --fault-ms 3000 --bug NAME`.
fn reconfig(seed: u64) -> RunConfig {
    RunConfig {
        seed,
        nodes: [3, 5, 7][((seed / 5) % 3) as usize],
        profile: Profile::Reconfig,
        fault_ms: 3_000,
        trace: false,
    }
}

fn reconfig_bug(
    name: &str,
    seeds: std::ops::Range<u64>,
    expect: &str,
    set: impl Fn(&mut InjectedBugs),
) {
    let mut bugs = InjectedBugs::default();
    set(&mut bugs);
    assert_caught_in(name, seeds, expect, |seed| {
        World::with_bugs(reconfig(seed), bugs)
    });
}

#[test]
fn catches_a_membership_change_before_the_leader_committed_in_its_term() {
    reconfig_bug(
        "change before term commit",
        0..20,
        "before committing an entry of its term",
        |b| b.change_before_term_commit = true,
    );
}

#[test]
fn catches_two_pending_membership_changes() {
    reconfig_bug("two pending changes", 0..20, "one change at a time", |b| {
        b.two_pending_changes = true
    });
}

#[test]
fn catches_learners_counted_in_the_commit_quorum() {
    reconfig_bug("learners in quorum", 0..20, "commit quorum", |b| {
        b.learners_in_quorum = true
    });
}

#[test]
fn catches_a_configuration_kept_after_its_entry_was_truncated() {
    reconfig_bug("no revert on truncation", 0..20, "configuration:", |b| {
        b.no_revert_on_truncation = true
    });
}

#[test]
fn catches_snapshots_that_lose_the_membership() {
    reconfig_bug(
        "snapshot without membership",
        0..20,
        "snapshot membership",
        |b| b.snapshot_without_membership = true,
    );
}

#[test]
fn catches_a_removed_leader_that_keeps_leading() {
    reconfig_bug(
        "removed leader keeps leading",
        0..20,
        "removed leader",
        |b| b.removed_leader_keeps_leading = true,
    );
}

#[test]
fn correct_core_passes_the_reconfig_seeds() {
    // The control for the membership bugs above.
    for seed in 0..20 {
        if let Some(v) = World::new(reconfig(seed)).run().violation {
            panic!("seed {seed} (reconfig) fails without any injected bug: {v}");
        }
    }
}

#[test]
fn catches_lease_reads_served_after_timeout_now() {
    let bugs = InjectedBugs {
        lease_reads_during_transfer: true,
        ..Default::default()
    };
    assert_caught_in(
        "lease reads during transfer",
        0..5,
        "linearizability violated",
        |seed| World::with_deaf_transfers(config(seed, Profile::Calm)).inject_bugs(bugs),
    );
}

#[test]
fn lease_reads_stay_linearizable_with_deaf_transfers() {
    // The control for the test above, and the regression test of the lease forfeited for
    // the rest of the term once `TimeoutNow` went out (seed 31, crashes, failed before).
    for (seed, profile) in [
        (0, Profile::Calm),
        (31, Profile::Crashes),
        (34, Profile::Reconfig),
    ] {
        let world = World::with_deaf_transfers(RunConfig {
            nodes: 3,
            ..config(seed, profile)
        });
        if let Some(v) = world.run().violation {
            panic!("seed {seed} ({profile:?}): {v}");
        }
    }
}
