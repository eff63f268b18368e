//! The `floor` scenario: the least work a replicated, durable put can be on this machine.
//!
//! `loopback` bounds one client exchange, but a `cluster` put also goes to two followers
//! and is synced on disk. This scenario does what no three-node replicated log can skip,
//! and nothing else: no HTTP parsing, no Raft, no encoding, no apply.
//!
//! - A leader on one tokio worker thread (as `cluster` runs each raftkv node) answers N
//!   client connections (the `loopback` client: one request of a put's size in flight on
//!   each).
//! - It gathers every request that has arrived into one batch of fixed-size entries and
//!   writes the batch in one frame to each of two followers, and to its own storage thread.
//! - Each follower (a thread with blocking sockets, the leanest form) writes the frame into
//!   a pre-written file and calls `fdatasync`, then acknowledges it in 8 bytes.
//! - The storage thread group-commits the leader's copy the same way.
//! - A batch commits when two of the three copies are synced: the fastest majority,
//!   whichever copies those are. Then the leader answers the batch's clients.
//!
//! Every choice is the cheapest one a correct implementation could make here:
//!
//! - overwriting a synced file, so no sync also commits a block allocation;
//! - one write and one sync per batch per node;
//! - one frame per batch per follower, acknowledged in 8 bytes;
//! - commit on the fastest two copies.
//!
//! What it reaches is what `cluster`'s put rows could reach if HTTP, Raft, encoding and
//! the apply cost nothing. Its flags try the other choices that move it: more batches in
//! flight (`--window`, `--min-batch`), a leader that does not sync on the critical path
//! (`--leader-sync false`), more leader threads (`--leader-threads`).

use std::error::Error;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::loopback::{
    self, ExchangeArgs, DEFAULT_VALUE_BYTES, PUT_REQUEST_HEAD_BYTES, PUT_RESPONSE_BYTES,
};
use crate::machine;
use crate::raftkv_bin::runtime;
use crate::report::{self, Align, Table};
use crate::storage::temp_dir;

mod nodes;

use nodes::{Floor, LOG_BYTES};

/// Options of `raftlock-bench floor`.
#[derive(Debug, Clone, Args)]
pub struct FloorArgs {
    /// Clients and sizes, as in `loopback`.
    #[command(flatten)]
    pub exchange: ExchangeArgs,
    /// Measured seconds per row.
    #[arg(long, value_name = "S", default_value_t = 4.0)]
    pub seconds: f64,
    /// Bytes each put adds to every copy of the log (default: a raftkv put command with
    /// its entry header).
    #[arg(long, value_name = "BYTES", default_value_t = PUT_ENTRY_HEAD_BYTES + DEFAULT_VALUE_BYTES)]
    pub entry_bytes: usize,
    /// Batches in flight at once. 1: the next batch leaves when the previous one commits,
    /// which makes batches as large as they can be (raftkv's leader holds entries back the
    /// same way while a request to a follower is in flight).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub window: usize,
    /// With `--window` above 1: requests that must be waiting before a batch leaves while
    /// another is in flight (the first batch in flight takes whatever there is).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub min_batch: usize,
    /// Whether the leader syncs its own copy. `false`: it writes its copy without
    /// `fdatasync`, and a batch commits once both followers have synced it. That is the
    /// best a leader that syncs lazily (Raft thesis §10.2.1) could ever do: it may count
    /// itself only once its copy is durable.
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_sync: bool,
    /// Worker threads of the leader's tokio runtime (1, as `cluster` runs each node).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub leader_threads: usize,
    /// Directory for the three log files (a temporary directory is made inside it).
    /// Default: inside ./target if it exists, else $TMPDIR.
    #[arg(long, value_name = "PATH")]
    pub dir: Option<PathBuf>,
}

impl FloorArgs {
    /// Checks the settings; the message names the flags.
    pub fn validate(&self) -> Result<(), String> {
        let ok = self.exchange.is_valid()
            && (1..=1 << 16).contains(&self.entry_bytes)
            && self.seconds > 0.0
            && self.seconds < 1e6
            && (1..=1024).contains(&self.window)
            && (1..=100_000).contains(&self.min_batch)
            && (1..=64).contains(&self.leader_threads);
        if !ok {
            return Err(
                "floor: --clients 1..10,000 each, --seconds > 0, --request-bytes and \
                        --response-bytes 1..1 MiB, --entry-bytes 1..64 KiB, --window 1..1024, \
                        --min-batch 1..100,000, --leader-threads 1..64"
                    .into(),
            );
        }
        // A batch holds at most one entry per client, and must fit in the log it overwrites.
        let largest_batch =
            self.exchange.clients.iter().max().copied().unwrap_or(0) * self.entry_bytes;
        if largest_batch as u64 > LOG_BYTES / 2 {
            return Err(format!(
                "floor: --clients x --entry-bytes must stay within {} MiB, the half of each \
                 node's log a batch may take",
                (LOG_BYTES / 2) >> 20
            ));
        }
        Ok(())
    }
}

/// Runs the scenario and prints the report.
pub fn run(args: &FloorArgs) -> Result<(), Box<dyn Error>> {
    args.validate()?;
    machine::print_header();
    let dir = temp_dir(args.dir.as_deref())?;
    machine::print_directory(dir.path());
    println!(
        "floor: a leader on {} tokio worker thread(s), N clients with one {}-byte request in \
         flight each ({} bytes back); each batch of what has arrived goes as {} bytes per \
         entry to two follower threads (blocking sockets) and the leader's storage thread, \
         each of which overwrites a synced file and fdatasyncs it; a batch commits on the \
         first two copies synced (leader syncs: {}); {} batch(es) in flight (a further one \
         once {} wait); clients on 2 worker threads; 0.5 s warm-up + {:.1} s per row",
        args.leader_threads,
        args.exchange.request_bytes,
        args.exchange.response_bytes,
        args.entry_bytes,
        args.leader_sync,
        args.window,
        args.min_batch,
        args.seconds
    );
    let rows = measure(args, dir.path(), |row| {
        println!("done: {}", row.cells.join(" | "));
    })?;
    let mut table = Table::new(&[
        ("clients", Align::Right),
        ("puts/s", Align::Right),
        ("p50", Align::Right),
        ("p99", Align::Right),
        ("p99.9", Align::Right),
        ("CPU/put", Align::Right),
        ("cores", Align::Right),
        ("entries/batch", Align::Right),
        ("fsyncs/s per node", Align::Right),
    ]);
    for row in &rows {
        table.row(row.cells.clone());
    }
    println!("\n{table}");
    println!(
        "\nCPU/put and cores: this whole process (clients, leader, followers, storage), \
         without the kernel's block-device workers."
    );
    for row in &rows {
        println!("{}", verdict(row.clients, row.rate, row.p50));
    }
    Ok(())
}

/// One measured row of the floor.
pub struct FloorRow {
    /// Concurrent clients.
    pub clients: usize,
    /// Puts per second.
    pub rate: f64,
    /// Median latency, if any put completed.
    pub p50: Option<Duration>,
    /// The row as printed: clients, rate, p50, p99, p99.9, CPU/put, cores, entries per
    /// batch, fsyncs/s per node.
    pub cells: Vec<String>,
}

/// Settings of the floor that matches a `cluster` run with `value_size`-byte values and
/// 8-byte keys: the same bytes on the wire and in each log entry.
pub fn matching_cluster(clients: &[usize], seconds: f64, value_size: usize) -> FloorArgs {
    FloorArgs {
        exchange: ExchangeArgs {
            clients: clients.to_vec(),
            request_bytes: PUT_REQUEST_HEAD_BYTES + value_size,
            response_bytes: PUT_RESPONSE_BYTES,
        },
        seconds,
        entry_bytes: PUT_ENTRY_HEAD_BYTES + value_size,
        window: 1,
        min_batch: 1,
        leader_sync: true,
        leader_threads: 1,
        dir: None,
    }
}

/// The bytes of a raftkv put's log entry besides its value (command JSON and entry head).
const PUT_ENTRY_HEAD_BYTES: usize = 44;

/// Starts the floor's nodes in `dir`, measures a row per client count (calling `done`
/// after each), and stops them.
pub fn measure(
    args: &FloorArgs,
    dir: &std::path::Path,
    mut done: impl FnMut(&FloorRow),
) -> Result<Vec<FloorRow>, Box<dyn Error>> {
    args.validate()?;
    let cluster = Floor::start(dir, args)?;
    let client_rt = runtime(2)?;
    let mut rows = Vec::new();
    for &clients in &args.exchange.clients {
        let mut marks = Vec::with_capacity(2);
        let run = loopback::measure_exchanges(
            &client_rt,
            cluster.addr,
            &args.exchange,
            clients,
            args.seconds,
            || marks.push(cluster.counts()),
        )?;
        let Ok([counts0, counts1]) = <[_; 2]>::try_from(marks) else {
            return Err("floor: the measured window was not marked twice".into());
        };
        let (mut latencies, elapsed) = (run.latencies, run.elapsed);
        let (cpu0, cpu1) = (run.cpu0, run.cpu1);
        let p50 = report::Percentiles::of(&mut latencies).map(|p| p.p50);
        let rate = latencies.len() as f64 / elapsed.as_secs_f64();
        let mut cells = loopback::cells(clients.to_string(), latencies, elapsed, cpu0, cpu1);
        let (batches, entries, fsyncs) = (
            counts1.batches.saturating_sub(counts0.batches),
            counts1.entries.saturating_sub(counts0.entries),
            counts1.fsyncs.saturating_sub(counts0.fsyncs),
        );
        cells.push(if batches > 0 {
            report::decimal(entries as f64 / batches as f64)
        } else {
            "-".into()
        });
        // Per node that syncs: the followers, and the leader unless --leader-sync false.
        let syncing = if args.leader_sync { 3.0 } else { 2.0 };
        cells.push(report::count(
            fsyncs as f64 / syncing / elapsed.as_secs_f64(),
        ));
        let row = FloorRow {
            clients,
            rate,
            p50,
            cells,
        };
        done(&row);
        rows.push(row);
    }
    drop(client_rt);
    cluster.stop()?;
    Ok(rows)
}

/// How a row compares with issue 9's `cluster` put targets.
fn verdict(clients: usize, rate: f64, p50: Option<Duration>) -> String {
    match (clients, p50) {
        (1, Some(p50)) => format!(
            "floor, 1 client: p50 {} against the cluster target of p50 < 300 µs",
            report::duration(p50)
        ),
        (64, _) => format!(
            "floor, 64 clients: {} puts/s against the cluster target of 60,000",
            report::count(rate)
        ),
        _ => format!("floor, {clients} clients: {} puts/s", report::count(rate)),
    }
}
