//! Seed runner: `raftlock-sim --seeds 0..10000 [--nodes N] [--profile NAME] [--fault-ms MS] [--trace]`.
//! Prints a summary and, for each failing seed, the command that replays it with a trace.

use std::process::ExitCode;
use std::time::Instant;

use raftlock_sim::{run, Profile, RunConfig};

struct Args {
    seeds: std::ops::Range<u64>,
    nodes: Option<usize>,
    profile: Option<Profile>,
    fault_ms: u64,
    trace: bool,
}

fn parse() -> Result<Args, String> {
    let mut args = Args {
        seeds: 0..100,
        nodes: None,
        profile: None,
        fault_ms: 10_000,
        trace: false,
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
                    "unknown profile {v:?} (calm, lossy, partitions, crashes, brutal)"
                ))?);
            }
            "--fault-ms" => {
                args.fault_ms = value("--fault-ms")?.parse().map_err(|_| "bad --fault-ms")?;
            }
            "--trace" => args.trace = true,
            "--help" | "-h" => {
                return Err("usage: raftlock-sim --seeds A..B [--nodes N] [--profile calm|lossy|partitions|crashes|brutal] [--fault-ms MS] [--trace]".into())
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(args)
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
    for seed in args.seeds.clone() {
        let nodes = args.nodes.unwrap_or_else(|| nodes_for(seed));
        let profile = args.profile.unwrap_or_else(|| Profile::for_seed(seed));
        let report = run(RunConfig {
            seed,
            nodes,
            profile,
            fault_ms: args.fault_ms,
            trace: args.trace,
        });
        events += report.events;
        committed += report.committed;
        match report.violation {
            None => passed += 1,
            Some(v) => {
                failed += 1;
                println!("seed {seed} FAILED ({nodes} nodes, {profile:?}): {v}");
                println!(
                    "  replay: cargo run -p raftlock-sim --release -- --seeds {seed}..{} --nodes {nodes} --profile {profile:?} --fault-ms {} --trace",
                    seed + 1,
                    args.fault_ms
                );
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let total = passed + failed;
    println!(
        "{total} seeds in {secs:.1}s ({:.1} seeds/s, {events} events, {committed} entries committed): {passed} passed, {failed} failed",
        total as f64 / secs.max(1e-9)
    );
    if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
