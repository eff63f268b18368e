//! The `inproc` scenario: the library's own overhead, with nothing else in the way.
//!
//! Three nodes in one process on a `LocalNetwork` (no serialization), `MemStorage` (no
//! fsync), an applier that does nothing, empty commands; N concurrent clients each loop
//! "propose on the leader and await the applied result" (see [`crate::inproc_cluster`]).
//!
//! This is the setup of openraft's `benchmarks/minimal` (3 nodes in one process, direct
//! calls, in-memory log, zero-byte entries, clients looping `client_write`), whose numbers
//! on this 2-core machine (2 worker threads) issue 9 records; they are printed next to
//! ours with the target of issue 9: at least 1.5× openraft at every client count, and 2×
//! at one client. Like that benchmark (`max_payload_entries: 1024`), an AppendEntries
//! carries up to 1024 entries here (`--max-entries-per-request`).

use std::error::Error;

use clap::Args;
use raftlock_raft::MemStorage;

use crate::inproc_cluster::{self, LoadArgs, RowResult};
use crate::machine;
use crate::report::{self, Align, Table};

/// Options of `raftlock-bench inproc`.
#[derive(Debug, Clone, Args)]
pub struct InprocArgs {
    /// Load options.
    #[command(flatten)]
    pub load: LoadArgs,
}

/// openraft `benchmarks/minimal` on this machine (2 worker threads), from issue 9: client
/// count, the measured range of ops/s (low, high), and the factor our target requires.
const OPENRAFT: &[(usize, f64, f64, f64)] = &[
    (1, 18_000.0, 18_000.0, 2.0),
    (64, 550_000.0, 550_000.0, 1.5),
    (256, 900_000.0, 1_200_000.0, 1.5),
    (1024, 1_200_000.0, 1_500_000.0, 1.5),
];

/// The openraft reference for `clients`: `(low, high, factor)`.
fn reference(clients: usize) -> Option<(f64, f64, f64)> {
    OPENRAFT
        .iter()
        .find(|(c, ..)| *c == clients)
        .map(|&(_, low, high, factor)| (low, high, factor))
}

/// Runs the scenario and prints the report.
pub fn run(args: &InprocArgs) -> Result<(), Box<dyn Error>> {
    let load = &args.load;
    load.validate()?;
    machine::print_header();
    println!(
        "inproc: {} nodes in one process, LocalNetwork, MemStorage (no fsync), empty \
         commands, an applier that does nothing; each client loops propose_and_wait on the \
         leader; {} tokio worker threads; up to {} entries per AppendEntries; {:.1} s \
         warm-up + {:.1} s measured per row",
        inproc_cluster::NODES,
        load.worker_threads,
        load.max_entries_per_request,
        load.warmup,
        load.seconds
    );
    println!(
        "reference: openraft benchmarks/minimal on this machine (2 worker threads): 18k \
         ops/s at 1 client, 0.55M at 64, 0.9-1.2M at 256, 1.2-1.5M at 1024. Target (issue \
         9): 1.5x openraft at every client count (the upper end of its range), 2x at 1 client"
    );
    println!();

    let mut rows = Vec::with_capacity(load.clients.len());
    for &clients in &load.clients {
        eprintln!("measuring {clients} clients ...");
        rows.push(inproc_cluster::run_row(load, clients, |_| {
            Ok(MemStorage::new())
        })?);
    }
    println!("{}", table(&rows));
    for note in [
        "ops/s: proposals applied and answered inside the measured window.",
        "p50/p99/p99.9: one propose_and_wait, from the call to the applier's result.",
        "CPU/op: user + system CPU time of the whole process (3 nodes and the clients) over \
         the window, per op; cores: that CPU time over the wall time (this machine has no \
         more cores than the header says).",
        "entries/write: the followers' mean entries per storage write, one write per \
         AppendEntries carrying entries (how well replication batches).",
        "openraft: the range it measured; target: 1.5x (2x at 1 client) its upper end; \
         vs target: our ops/s over the target.",
    ] {
        println!("- {note}");
    }
    warn_about_failures(&rows);
    Ok(())
}

/// Mentions rows with errors or a leader change, which make their numbers suspect.
pub fn warn_about_failures(rows: &[RowResult]) {
    for row in rows {
        if row.errors > 0 || row.leader_changed {
            println!(
                "- WARNING: {} clients: {} failed proposals{}; the row is not a clean \
                 measurement",
                row.clients,
                row.errors,
                if row.leader_changed {
                    ", and the leader changed"
                } else {
                    ""
                }
            );
        }
    }
}

/// The report table.
fn table(rows: &[RowResult]) -> Table {
    let mut columns = COMMON_COLUMNS.to_vec();
    columns.extend([
        ("errors", Align::Right),
        ("entries/write", Align::Right),
        ("openraft ops/s", Align::Right),
        ("target ops/s", Align::Right),
        ("vs target", Align::Right),
    ]);
    let mut t = Table::new(&columns);
    for row in rows {
        let mut cells = common_cells(row);
        cells.push(row.errors.to_string());
        cells.push(follower_batching(row));
        match reference(row.clients) {
            Some((low, high, factor)) => {
                let target = high * factor;
                cells.push(if low == high {
                    report::count(low)
                } else {
                    format!("{}-{}", report::count(low), report::count(high))
                });
                cells.push(report::count(target));
                cells.push(format!("{:.2}×", row.ops_per_sec() / target));
            }
            None => cells.extend(["-".to_string(), "-".to_string(), "-".to_string()]),
        }
        t.row(cells);
    }
    t
}

/// The followers' mean entries per storage write: with `MemStorage` one write per
/// AppendEntries carrying entries, so this is how well replication batches.
fn follower_batching(row: &RowResult) -> String {
    let (entries, batches) = row
        .persist
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != row.leader)
        .fold((0, 0), |(e, b), (_, c)| (e + c.entries, b + c.batches));
    if batches == 0 {
        "-".into()
    } else {
        report::decimal(entries as f64 / batches as f64)
    }
}

/// The columns every in-process table starts with; [`common_cells`] fills them.
pub const COMMON_COLUMNS: [(&str, Align); 7] = [
    ("clients", Align::Right),
    ("ops/s", Align::Right),
    ("p50", Align::Right),
    ("p99", Align::Right),
    ("p99.9", Align::Right),
    ("CPU/op", Align::Right),
    ("cores", Align::Right),
];

/// The cells every in-process table starts with: clients, ops/s, p50, p99, p99.9, CPU/op,
/// cores.
pub fn common_cells(row: &RowResult) -> Vec<String> {
    let lat = |f: fn(&report::Percentiles) -> std::time::Duration| {
        row.latency
            .as_ref()
            .map_or_else(|| "-".to_string(), |p| report::duration(f(p)))
    };
    vec![
        row.clients.to_string(),
        report::count(row.ops_per_sec()),
        lat(|p| p.p50),
        lat(|p| p.p99),
        lat(|p| p.p999),
        row.cpu_per_op()
            .map_or_else(|| "-".to_string(), report::micros),
        row.cores_busy()
            .map_or_else(|| "-".to_string(), |c| format!("{c:.2}")),
    ]
}
