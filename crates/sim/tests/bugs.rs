//! The simulator must be able to fail: each deliberate protocol bug is caught within a
//! stated number of seeds. Run with `--features bug-injection` (the README's test command
//! uses `--all-features`).

use raftlock_raft::core::InjectedBugs;
use raftlock_sim::{Profile, RunConfig, World};

/// Runs seeds until one reports a violation; returns the seed and the violation.
fn first_failure(bugs: InjectedBugs, profile: Profile, within: u64) -> Option<(u64, String)> {
    (0..within).find_map(|seed| {
        let cfg = RunConfig {
            seed,
            nodes: [3, 5][(seed % 2) as usize],
            profile,
            fault_ms: 3_000,
            trace: false,
        };
        World::with_bugs(cfg, bugs)
            .run()
            .violation
            .map(|v| (seed, v))
    })
}

#[test]
fn catches_commit_of_old_term_entry_by_counting() {
    let bugs = InjectedBugs {
        commit_old_term_by_counting: true,
        ..Default::default()
    };
    let found = first_failure(bugs, Profile::Brutal, 3000);
    assert!(found.is_some(), "not caught within 200 seeds");
    println!("caught: {found:?}");
}

#[test]
fn catches_two_votes_in_one_term() {
    let bugs = InjectedBugs {
        grant_two_votes_per_term: true,
        ..Default::default()
    };
    let found = first_failure(bugs, Profile::Partitions, 200);
    assert!(found.is_some(), "not caught within 200 seeds");
    println!("caught: {found:?}");
}

#[test]
fn catches_acknowledgement_before_durable() {
    let bugs = InjectedBugs {
        ack_before_durable: true,
        ..Default::default()
    };
    let found = first_failure(bugs, Profile::Crashes, 200);
    assert!(found.is_some(), "not caught within 200 seeds");
    println!("caught: {found:?}");
}

#[test]
fn correct_core_passes_the_same_seeds() {
    // The control: without bugs, the seeds the tests above use all pass.
    for profile in [Profile::Brutal, Profile::Partitions, Profile::Crashes] {
        if let Some((seed, v)) = first_failure(InjectedBugs::default(), profile, 60) {
            panic!("seed {seed} ({profile:?}) fails without any injected bug: {v}");
        }
    }
}
