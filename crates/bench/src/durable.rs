//! The `durable` scenario: `inproc` with every node on a `FileStorage` that fsyncs every
//! batch (`SyncPolicy::Always`, default options), in temporary directories on the disk
//! being measured.
//!
//! Next to throughput and latency it reports what the disk did: fsyncs per second and
//! entries per fsync (group commit) of the leader and of the followers, counted through
//! the `Metrics::observe_persist` hook, and the disk's raw `write 4 KiB + fdatasync` rate
//! measured in the same directory in the same run (the `storage` scenario's raw rows).
//! The three nodes share one disk, so their fsyncs compete with each other.

use std::error::Error;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use raftlock_raft::{FileStorage, FileStorageOptions, SyncPolicy};

use crate::inproc::{common_cells, warn_about_failures, COMMON_COLUMNS};
use crate::inproc_cluster::{self, per_sec, LoadArgs, PersistCount, RowResult};
use crate::machine;
use crate::report::{self, Align, Table};
use crate::storage;

/// Options of `raftlock-bench durable`.
#[derive(Debug, Clone, Args)]
pub struct DurableArgs {
    /// Load options.
    #[command(flatten)]
    pub load: LoadArgs,

    /// Directory on the disk to measure. A fresh temporary directory is created inside it
    /// and removed at the end. Default: inside ./target if it exists, else $TMPDIR.
    #[arg(long, value_name = "PATH")]
    pub dir: Option<PathBuf>,

    /// Seconds for each of the two raw disk measurements.
    #[arg(long, value_name = "S", default_value_t = 2.0)]
    pub raw_seconds: f64,
}

/// Runs the scenario and prints the report.
pub fn run(args: &DurableArgs) -> Result<(), Box<dyn Error>> {
    let load = &args.load;
    load.validate()?;
    let raw_seconds = Duration::try_from_secs_f64(args.raw_seconds)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("--raw-seconds: must be positive, got {}", args.raw_seconds))?;
    let tmp = storage::temp_dir(args.dir.as_deref())?;
    let base = tmp.path().to_path_buf();

    machine::print_header();
    machine::print_directory(&base);
    println!(
        "durable: {} nodes in one process, LocalNetwork, FileStorage with an fsync after \
         every batch (default options), empty commands, an applier that does nothing; each \
         client loops propose_and_wait on the leader; {} tokio worker threads; {:.1} s \
         warm-up + {:.1} s measured per row",
        inproc_cluster::NODES,
        load.worker_threads,
        load.warmup,
        load.seconds
    );
    println!();

    let (grow, overwrite) = storage::measure_raw(&base, raw_seconds)?;
    let mut rows = Vec::with_capacity(load.clients.len());
    for &clients in &load.clients {
        eprintln!("measuring {clients} clients ...");
        let row_dir = base.join(format!("clients-{clients}"));
        let row = inproc_cluster::run_row(load, clients, |i| {
            let dir = row_dir.join(format!("node-{}", i + 1));
            let options = FileStorageOptions {
                sync: SyncPolicy::Always,
                ..FileStorageOptions::default()
            };
            FileStorage::open(&dir, options)
                .map_err(|e| format!("opening {}: {e}", dir.display()).into())
        })?;
        rows.push(row);
        std::fs::remove_dir_all(&row_dir)
            .map_err(|e| format!("removing {}: {e}", row_dir.display()))?;
    }

    println!("{}", table(&rows));
    println!("{}", storage::raw_table(&[&grow, &overwrite]));
    for note in [
        "ops/s: proposals applied and answered inside the measured window; a proposal \
         completes once a majority (the leader and one follower) has fsynced it.",
        "p50/p99/p99.9: one propose_and_wait, from the call to the applier's result.",
        "CPU/op: user + system CPU time of the whole process per op; cores: that CPU time \
         over the wall time.",
        "fsyncs/s and entries/fsync: group commits of the leader, and the mean of the two \
         followers (Metrics::observe_persist: one storage sync per call). persist: mean \
         time of one leader group commit (writes + fsync).",
        "The raw rows: one process writing 4 KiB and calling fdatasync in a loop, in the \
         same directory, growing the file or overwriting a pre-written one: the disk's \
         ceiling for one writer. Here three nodes share the disk.",
    ] {
        println!("- {note}");
    }
    warn_about_failures(&rows);

    tmp.close()
        .map_err(|e| format!("removing the benchmark directory {}: {e}", base.display()))?;
    Ok(())
}

/// Fsyncs per second per node and entries per fsync of the group commits of `nodes` nodes
/// that together made `count`.
fn fsync_cells(count: PersistCount, nodes: usize, window: Duration) -> [String; 2] {
    let per_fsync = if count.batches > 0 {
        report::decimal(count.entries as f64 / count.batches as f64)
    } else {
        "-".to_string()
    };
    let per_node = per_sec(count.batches, window) / nodes.max(1) as f64;
    [report::count(per_node), per_fsync]
}

/// The report table.
fn table(rows: &[RowResult]) -> Table {
    let mut columns = COMMON_COLUMNS.to_vec();
    columns.extend([
        ("leader fsyncs/s", Align::Right),
        ("entries/fsync", Align::Right),
        ("persist", Align::Right),
        ("follower fsyncs/s", Align::Right),
        ("entries/fsync", Align::Right),
        ("errors", Align::Right),
    ]);
    let mut t = Table::new(&columns);
    for row in rows {
        let mut cells = common_cells(row);
        let leader = row.persist.get(row.leader).copied().unwrap_or_default();
        cells.extend(fsync_cells(leader, 1, row.window));
        cells.push(
            u32::try_from(leader.batches)
                .ok()
                .filter(|&n| n > 0)
                .map_or_else(|| "-".to_string(), |n| report::duration(leader.busy / n)),
        );
        // The followers' mean: totals over both, per follower.
        let followers: Vec<PersistCount> = row
            .persist
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != row.leader)
            .map(|(_, c)| *c)
            .collect();
        let total = followers
            .iter()
            .fold(PersistCount::default(), |a, c| PersistCount {
                batches: a.batches + c.batches,
                entries: a.entries + c.entries,
                busy: a.busy + c.busy,
            });
        cells.extend(fsync_cells(total, followers.len(), row.window));
        cells.push(row.errors.to_string());
        t.row(cells);
    }
    t
}
