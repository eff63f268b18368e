//! Seed runner: `raftlock-sim --seeds 0..10000 [--nodes N] [--profile NAME] [--fault-ms MS] [--trace]`.
//! Prints a summary and, for each failing seed, the command that replays it with a trace.

use std::process::ExitCode;
use std::time::Instant;

use raftlock_sim::{Profile, RunConfig, World};

struct Args {
    seeds: std::ops::Range<u64>,
    nodes: Option<usize>,
    profile: Option<Profile>,
    fault_ms: u64,
    trace: bool,
    bug: Option<String>,
}

fn parse() -> Result<Args, String> {
    let mut args = Args {
        seeds: 0..100,
        nodes: None,
        profile: None,
        fault_ms: 10_000,
        trace: false,
        bug: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match flag.as_str() {
            "--seeds" => {
                let v = value("--seeds")?;
                let (a, b) = v.split_once("..").ok_or("--seeds takes A..B")?;
                let a: u64 = a.parse().map_err(|_| format!("bad seed {a:?}"))?;
                let b: u64 = b.parse().map_err(|_| format!("bad seed {b:?}"))?;
                args.seeds = a..b;
            }
            "--nodes" => {
                let n: usize = value("--nodes")?.parse().map_err(|_| "bad --nodes")?;
                if n == 0 {
                    return Err("--nodes must be at least 1".into());
                }
                args.nodes = Some(n);
            }
            "--profile" => {
                let v = value("--profile")?;
                args.profile = Some(Profile::parse(&v).ok_or(format!(
                    "unknown profile {v:?} (calm, lossy, partitions, crashes, brutal, leasenoprevote, reconfig)"
                ))?);
            }
            "--fault-ms" => {
                args.fault_ms = value("--fault-ms")?.parse().map_err(|_| "bad --fault-ms")?;
            }
            "--trace" => args.trace = true,
            "--bug" => args.bug = Some(value("--bug")?),
            "--help" | "-h" => {
                return Err("usage: raftlock-sim --seeds A..B [--nodes N] [--profile calm|lossy|partitions|crashes|brutal|leasenoprevote|reconfig] [--fault-ms MS] [--trace] [--bug stale-reads|commit-old-term|two-votes|ack-before-durable|vote-without-log-check|read-before-noop|guard-follows-leader|drift-beyond-bound|change-before-term-commit|two-pending-changes|learners-in-quorum|no-revert-on-truncation|snapshot-without-membership|removed-leader-keeps-leading|lease-reads-during-transfer|deaf-transfers]".into())
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(args)
}

/// The world for one seed, with a deliberate bug when asked (self-tests and replays).
fn build_world(cfg: RunConfig, bug: Option<&str>) -> Result<World, String> {
    match bug {
        None => Ok(World::new(cfg)),
        Some("stale-reads") => Ok(World::with_stale_reads(cfg)),
        Some("drift-beyond-bound") => Ok(World::with_drift_beyond_bound(cfg)),
        // Not a bug: the world `lease-reads-during-transfer` runs in, as a control.
        Some("deaf-transfers") => Ok(World::with_deaf_transfers(cfg)),
        #[cfg(feature = "bug-injection")]
        Some(name) => {
            let mut bugs = raftlock_raft::core::InjectedBugs::default();
            match name {
                "commit-old-term" => bugs.commit_old_term_by_counting = true,
                "two-votes" => bugs.grant_two_votes_per_term = true,
                "ack-before-durable" => bugs.ack_before_durable = true,
                "vote-without-log-check" => bugs.vote_without_log_check = true,
                "read-before-noop" => bugs.read_before_noop_commit = true,
                "guard-follows-leader" => bugs.guard_follows_known_leader = true,
                "change-before-term-commit" => bugs.change_before_term_commit = true,
                "two-pending-changes" => bugs.two_pending_changes = true,
                "learners-in-quorum" => bugs.learners_in_quorum = true,
                "no-revert-on-truncation" => bugs.no_revert_on_truncation = true,
                "snapshot-without-membership" => bugs.snapshot_without_membership = true,
                "removed-leader-keeps-leading" => bugs.removed_leader_keeps_leading = true,
                "lease-reads-during-transfer" => {
                    // Shows only when the old leader cannot hear its successor: the
                    // world of deaf transfers.
                    bugs.lease_reads_during_transfer = true;
                    return Ok(World::with_deaf_transfers(cfg).inject_bugs(bugs));
                }
                other => return Err(format!("unknown bug {other:?}")),
            }
            Ok(World::with_bugs(cfg, bugs))
        }
        #[cfg(not(feature = "bug-injection"))]
        Some(name) => Err(format!(
            "bug {name:?} needs a build with --features bug-injection"
        )),
    }
}

/// Node count for a seed when none is forced: 3, 5 or 7.
fn nodes_for(seed: u64) -> usize {
    [3, 5, 7][((seed / 5) % 3) as usize]
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let start = Instant::now();
    let (mut passed, mut failed, mut events, mut committed) = (0u64, 0u64, 0u64, 0usize);
    let (mut ops_ok, mut ops_uncertain) = (0u64, 0u64);
    for seed in args.seeds.clone() {
        let nodes = args.nodes.unwrap_or_else(|| nodes_for(seed));
        let profile = args.profile.unwrap_or_else(|| Profile::for_seed(seed));
        let cfg = RunConfig {
            seed,
            nodes,
            profile,
            fault_ms: args.fault_ms,
            trace: args.trace,
        };
        let report = match build_world(cfg, args.bug.as_deref()) {
            Ok(world) => world.run(),
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(2);
            }
        };
        events += report.events;
        committed += report.committed;
        ops_ok += report.ops_ok;
        ops_uncertain += report.ops_uncertain;
        match report.violation {
            None => passed += 1,
            Some(v) => {
                failed += 1;
                println!("seed {seed} FAILED ({nodes} nodes, {profile:?}): {v}");
                println!(
                    "  replay: cargo run -p raftlock-sim --release{} -- --seeds {seed}..{} --nodes {nodes} --profile {profile:?} --fault-ms {}{} --trace",
                    if args.bug.as_deref().is_some_and(|b| !["stale-reads", "drift-beyond-bound", "deaf-transfers"].contains(&b)) { " --features bug-injection" } else { "" },
                    seed + 1,
                    args.fault_ms,
                    args.bug.as_deref().map(|b| format!(" --bug {b}")).unwrap_or_default(),
                );
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let total = passed + failed;
    println!(
        "{total} seeds in {secs:.1}s ({:.1} seeds/s, {events} events, {committed} entries committed, {ops_ok} client operations completed and {ops_uncertain} uncertain, all histories checked): {passed} passed, {failed} failed",
        total as f64 / secs.max(1e-9)
    );
    if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
