//! The `storage` scenario: how fast [`FileStorage`] makes entries durable, next to what the
//! disk itself can do.
//!
//! For each batch size, a fresh `FileStorage` (default options, [`SyncPolicy::Always`])
//! appends entries in batches and calls [`Storage::sync`] after every batch, as the Raft
//! runtime does with group commit. One sync per batch is the cost that matters: a leader
//! acknowledges nothing before it. The latency of a batch is `append + sync`.
//!
//! In the same directory, raw rows measure the disk with plain `std`: `write 4 KiB +
//! fdatasync` on a growing file (every sync also commits file-size metadata) and on a file
//! that was written and synced beforehand (pure data overwrite, the cheapest durable write
//! the disk offers). The ratio of the storage's syncs/s to these rates shows how far the
//! storage is from the disk's limit. A third raw row runs three overwrite writers at once,
//! each on its own file, as the three nodes of a one-machine cluster sync: its latency is
//! what one fsync costs when the others are in flight, the floor of a commit there.

use std::error::Error;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Args;
use raftlock_raft::{Entry, FileStorage, FileStorageOptions, Index, Storage, SyncPolicy};

use crate::machine;
use crate::report::{self, Align, Percentiles, Table};

/// Size of one raw write.
const RAW_BLOCK: usize = 4096;

/// Size of the pre-written file the raw overwrite row cycles through (16 MiB).
const RAW_OVERWRITE_FILE: u64 = 16 * 1024 * 1024;

/// Largest accepted `--entry-size` (64 MiB): a guard against typos filling the disk.
const MAX_ENTRY_SIZE: usize = 64 * 1024 * 1024;

/// Term of every appended entry.
const TERM: u64 = 1;

/// Options of `raftlock-bench storage`.
#[derive(Debug, Clone, Args)]
pub struct StorageArgs {
    /// Directory on the disk to measure. A fresh temporary directory is created inside it
    /// and removed at the end. Default: inside ./target if it exists, else $TMPDIR.
    #[arg(long, value_name = "PATH")]
    pub dir: Option<PathBuf>,

    /// Entries to append per batch-size row (rounded up to whole batches). Without it,
    /// each row runs for --seconds.
    #[arg(long, value_name = "N")]
    pub entries: Option<u64>,

    /// Payload bytes of each entry.
    #[arg(long, value_name = "BYTES", default_value_t = 128)]
    pub entry_size: usize,

    /// Batch sizes to measure: entries per append + sync.
    #[arg(
        long,
        value_name = "LIST",
        value_delimiter = ',',
        default_value = "1,16,256"
    )]
    pub batches: Vec<usize>,

    /// Duration of each row in seconds (raw rows always; storage rows unless --entries).
    #[arg(long, value_name = "S", default_value_t = 3.0)]
    pub seconds: f64,
}

/// When a row stops.
#[derive(Debug, Clone, Copy)]
enum Stop {
    /// After this much time.
    After(Duration),
    /// After at least this many entries.
    Entries(u64),
}

impl Stop {
    /// Whether a row that started at `start` and did `done` entries is finished.
    fn reached(self, start: Instant, done: u64) -> bool {
        match self {
            Stop::After(d) => start.elapsed() >= d,
            Stop::Entries(n) => done >= n,
        }
    }
}

/// The measurements of one row.
#[derive(Debug, Clone)]
pub struct Row {
    /// What was measured.
    scenario: &'static str,
    /// Entries per batch, `None` for raw rows.
    batch: Option<usize>,
    /// Entries (or raw writes) done.
    entries: u64,
    /// Syncs done (one per batch).
    syncs: u64,
    /// Payload bytes written.
    bytes: u64,
    /// Wall time of the whole row.
    elapsed: Duration,
    /// Latency percentiles of one batch (write + sync).
    latency: Option<Percentiles>,
    /// CPU time (user + system) of the writing threads over the row, when readable.
    cpu: Option<Duration>,
}

impl Row {
    /// Builds a row from its counters and latency samples.
    fn new(
        scenario: &'static str,
        batch: Option<usize>,
        entries: u64,
        bytes: u64,
        elapsed: Duration,
        mut latencies: Vec<Duration>,
    ) -> Row {
        Row {
            scenario,
            batch,
            entries,
            syncs: latencies.len() as u64,
            bytes,
            elapsed,
            latency: Percentiles::of(&mut latencies),
            cpu: None,
        }
    }

    /// The row with the CPU time its writing threads used.
    fn with_cpu(mut self, cpu: Option<Duration>) -> Row {
        self.cpu = cpu;
        self
    }

    /// CPU time per sync, for display.
    fn cpu_per_sync(&self) -> String {
        match self.cpu {
            Some(cpu) if self.syncs > 0 => {
                report::micros(cpu / u32::try_from(self.syncs).unwrap_or(u32::MAX))
            }
            _ => "-".into(),
        }
    }

    /// Per-second rate of `n` over the row's duration.
    fn rate(&self, n: u64) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            n as f64 / secs
        } else {
            f64::NAN
        }
    }

    /// Syncs per second.
    pub fn syncs_per_sec(&self) -> f64 {
        self.rate(self.syncs)
    }
}

/// Runs the scenario and prints the report.
pub fn run(args: &StorageArgs) -> Result<(), Box<dyn Error>> {
    validate(args)?;
    let tmp = temp_dir(args.dir.as_deref())?;
    let base = tmp.path();

    machine::print_header();
    machine::print_directory(base);

    let seconds = Duration::try_from_secs_f64(args.seconds)
        .map_err(|e| format!("--seconds {}: {e}", args.seconds))?;
    let stop = args.entries.map_or(Stop::After(seconds), Stop::Entries);
    let per_row = match stop {
        Stop::After(d) => format!("{:.1} s per row", d.as_secs_f64()),
        Stop::Entries(n) => format!(
            "{n} entries per storage row, {:.1} s per raw row",
            args.seconds
        ),
    };
    println!(
        "entries of {} payload bytes, sync after every batch, {per_row}",
        args.entry_size
    );
    println!();

    let (grow, overwrite) = measure_raw(base, seconds)?;
    // Three nodes of a one-machine cluster sync at the same moments: what one fsync then
    // costs is the floor of a commit there.
    eprintln!("measuring raw write {RAW_BLOCK} B + fdatasync, three writers at once ...");
    let together = raw_overwrite(&base.join("raw-overwrite-3"), seconds, 3)?;

    let mut rows = Vec::with_capacity(args.batches.len());
    for &batch in &args.batches {
        eprintln!("measuring FileStorage, batches of {batch} ...");
        rows.push(storage_row(base, batch, args.entry_size, stop)?);
    }

    println!("{}", table(&rows, &grow, &overwrite, &together));
    for note in [
        "entries/s and MB/s: payload bytes (MB = 10^6 B).",
        "fsyncs/s: sync calls, one per batch (raw rows: one fdatasync per 4 KiB write).",
        "p50/p99/p99.9: one append + sync (raw rows: write + fdatasync).",
        "CPU/fsync: user + system CPU time of the writing thread(s) per sync, the append \
         (or write) included; on a VM much of an fsync's cost is CPU, not waiting.",
        "vs raw: the row's fsyncs/s divided by the raw row's. Raw overwrite allocates no \
         blocks and is the disk's ceiling; small batches fill a 4 KiB block over several \
         syncs, so they allocate less often than raw grow and can beat it.",
    ] {
        println!("- {note}");
    }

    let base = base.to_path_buf();
    tmp.close()
        .map_err(|e| format!("removing the benchmark directory {}: {e}", base.display()))?;
    Ok(())
}

/// Measures the raw `write 4 KiB + fdatasync` rate in `base` for `duration` each: on a
/// growing file, then overwriting a pre-written one. Returns `(grow, overwrite)`.
pub fn measure_raw(base: &Path, duration: Duration) -> Result<(Row, Row), Box<dyn Error>> {
    eprintln!("measuring raw write {RAW_BLOCK} B + fdatasync, growing file ...");
    let grow = raw_grow(&base.join("raw-grow.dat"), duration)?;
    eprintln!("measuring raw write {RAW_BLOCK} B + fdatasync, overwriting a synced file ...");
    let overwrite = raw_overwrite(&base.join("raw-overwrite.dat"), duration, 1)?;
    Ok((grow, overwrite))
}

/// A table of raw rows: fsyncs per second and latency percentiles.
pub fn raw_table(rows: &[&Row]) -> Table {
    let mut t = Table::new(&[
        ("disk (same directory)", Align::Left),
        ("fsyncs/s", Align::Right),
        ("p50", Align::Right),
        ("p99", Align::Right),
        ("p99.9", Align::Right),
        ("CPU/fsync", Align::Right),
    ]);
    for row in rows {
        let lat = |f: fn(&Percentiles) -> Duration| {
            row.latency
                .as_ref()
                .map_or_else(|| "-".to_string(), |p| report::duration(f(p)))
        };
        t.row(vec![
            format!("{} + fdatasync", row.scenario),
            report::count(row.syncs_per_sec()),
            lat(|p| p.p50),
            lat(|p| p.p99),
            lat(|p| p.p999),
            row.cpu_per_sync(),
        ]);
    }
    t
}

/// Refuses arguments that cannot give a meaningful run.
fn validate(args: &StorageArgs) -> Result<(), String> {
    if args.batches.is_empty() || args.batches.contains(&0) {
        return Err("--batches: every batch size must be at least 1".into());
    }
    if !(args.seconds.is_finite() && args.seconds > 0.0) {
        return Err(format!(
            "--seconds: must be a positive number, got {}",
            args.seconds
        ));
    }
    if args.entries == Some(0) {
        return Err("--entries: must be at least 1".into());
    }
    if args.entry_size > MAX_ENTRY_SIZE {
        return Err(format!(
            "--entry-size: at most {MAX_ENTRY_SIZE} bytes, got {}",
            args.entry_size
        ));
    }
    Ok(())
}

/// A fresh temporary directory inside `parent`, or inside `./target` (else `$TMPDIR`).
pub fn temp_dir(parent: Option<&Path>) -> Result<tempfile::TempDir, Box<dyn Error>> {
    let mut builder = tempfile::Builder::new();
    builder.prefix("raftlock-bench-");
    let dir = match parent {
        Some(p) => {
            if !p.is_dir() {
                return Err(format!("--dir {}: not an existing directory", p.display()).into());
            }
            builder
                .tempdir_in(p)
                .map_err(|e| format!("creating a directory in {}: {e}", p.display()))?
        }
        None if Path::new("target").is_dir() => builder
            .tempdir_in("target")
            .map_err(|e| format!("creating a directory in ./target: {e}"))?,
        None => builder
            .tempdir()
            .map_err(|e| format!("creating a directory in $TMPDIR: {e}"))?,
    };
    Ok(dir)
}

/// One `FileStorage` row: batches of `batch` entries, `append + sync` each, then a reopen
/// that checks every entry is there.
fn storage_row(
    base: &Path,
    batch: usize,
    entry_size: usize,
    stop: Stop,
) -> Result<Row, Box<dyn Error>> {
    let dir = base.join(format!("storage-batch-{batch}"));
    let options = FileStorageOptions {
        sync: SyncPolicy::Always,
        ..FileStorageOptions::default()
    };
    let mut storage = FileStorage::open(&dir, options.clone())?;
    let payload = Bytes::from(vec![0xA5; entry_size]);
    let first: Index = storage.last_index() + 1;
    let mut next = first;
    let mut entries = Vec::with_capacity(batch);
    let mut latencies = Vec::new();
    let cpu_before = machine::thread_cpu_time();
    let start = Instant::now();
    while !stop.reached(start, next - first) {
        entries.clear();
        entries.extend(
            (next..)
                .take(batch)
                .map(|i| Entry::normal(i, TERM, payload.clone())),
        );
        let t = Instant::now();
        storage.append(&entries)?;
        storage.sync()?;
        latencies.push(t.elapsed());
        next += entries.len() as u64;
    }
    let elapsed = start.elapsed();
    let cpu = cpu_used(cpu_before);
    drop(storage);

    let done = next - first;
    let reopened = FileStorage::open(&dir, options)?;
    if reopened.last_index() != next - 1 {
        return Err(format!(
            "{}: after appending and syncing up to index {}, reopening found last index {}",
            dir.display(),
            next - 1,
            reopened.last_index()
        )
        .into());
    }
    drop(reopened);
    fs::remove_dir_all(&dir).map_err(|e| format!("removing {}: {e}", dir.display()))?;

    let bytes = done * entry_size as u64;
    Ok(Row::new("FileStorage", Some(batch), done, bytes, elapsed, latencies).with_cpu(cpu))
}

/// Raw `write 4 KiB + fdatasync` appending to a file that grows with every write.
fn raw_grow(path: &Path, duration: Duration) -> Result<Row, Box<dyn Error>> {
    let io = |op: &str, e: std::io::Error| format!("{op} {}: {e}", path.display());
    let mut file = File::create(path).map_err(|e| io("create", e))?;
    let block = [0xA5u8; RAW_BLOCK];
    let mut latencies = Vec::new();
    let cpu_before = machine::thread_cpu_time();
    let start = Instant::now();
    while start.elapsed() < duration {
        let t = Instant::now();
        file.write_all(&block).map_err(|e| io("write", e))?;
        file.sync_data().map_err(|e| io("fdatasync", e))?;
        latencies.push(t.elapsed());
    }
    let elapsed = start.elapsed();
    let cpu = cpu_used(cpu_before);
    drop(file);
    fs::remove_file(path).map_err(|e| io("remove", e))?;
    let writes = latencies.len() as u64;
    Ok(Row::new(
        "raw grow 4 KiB",
        None,
        writes,
        writes * RAW_BLOCK as u64,
        elapsed,
        latencies,
    )
    .with_cpu(cpu))
}

/// Raw `write 4 KiB + fdatasync` cycling over a file that was fully written and synced
/// first, so no write allocates blocks or changes the file size. With `writers` > 1, that
/// many threads do it at once, each on its own file (as the nodes of a one-machine cluster
/// do): the latencies are those of every fsync, the rate the sum.
fn raw_overwrite(path: &Path, duration: Duration, writers: usize) -> Result<Row, Box<dyn Error>> {
    let paths: Vec<PathBuf> = (0..writers)
        .map(|w| path.with_extension(format!("{w}.dat")))
        .collect();
    let start = Instant::now();
    type Outcome = Result<(u64, Vec<Duration>, Option<Duration>), String>;
    let results: Vec<Outcome> = std::thread::scope(|scope| {
        let threads: Vec<_> = paths
            .iter()
            .map(|p| scope.spawn(move || overwrite_loop(p, duration)))
            .collect();
        threads
            .into_iter()
            .map(|t| {
                t.join()
                    .unwrap_or_else(|_| Err("a raw writer panicked".into()))
            })
            .collect()
    });
    let elapsed = start.elapsed();
    let (mut n, mut latencies, mut cpu) = (0, Vec::new(), Some(Duration::ZERO));
    for r in results {
        let (done, lat, used) = r?;
        n += done;
        latencies.extend(lat);
        cpu = cpu.zip(used).map(|(a, b)| a + b);
    }
    Ok(Row::new(
        if writers == 1 {
            "raw overwrite 4 KiB"
        } else {
            "raw overwrite 4 KiB, 3 writers at once"
        },
        None,
        n,
        n * RAW_BLOCK as u64,
        elapsed,
        latencies,
    )
    .with_cpu(cpu))
}

/// One raw overwrite writer: pre-writes and syncs `path`, then times `write + fdatasync`
/// for `duration`, and removes the file.
fn overwrite_loop(
    path: &Path,
    duration: Duration,
) -> Result<(u64, Vec<Duration>, Option<Duration>), String> {
    let io = |op: &str, e: std::io::Error| format!("{op} {}: {e}", path.display());
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| io("create", e))?;
    let block = [0xA5u8; RAW_BLOCK];
    let blocks = RAW_OVERWRITE_FILE / RAW_BLOCK as u64;
    for _ in 0..blocks {
        file.write_all(&block).map_err(|e| io("pre-write", e))?;
    }
    file.sync_all().map_err(|e| io("fsync", e))?;

    let mut latencies = Vec::new();
    let mut n: u64 = 0;
    let cpu_before = machine::thread_cpu_time();
    let start = Instant::now();
    while start.elapsed() < duration {
        let offset = (n % blocks) * RAW_BLOCK as u64;
        let t = Instant::now();
        file.write_all_at(&block, offset)
            .map_err(|e| io("write", e))?;
        file.sync_data().map_err(|e| io("fdatasync", e))?;
        latencies.push(t.elapsed());
        n += 1;
    }
    let cpu = cpu_used(cpu_before);
    drop(file);
    fs::remove_file(path).map_err(|e| io("remove", e))?;
    Ok((n, latencies, cpu))
}

/// CPU time the calling thread used since `before` was read.
fn cpu_used(before: Option<Duration>) -> Option<Duration> {
    before
        .zip(machine::thread_cpu_time())
        .map(|(a, b)| b.saturating_sub(a))
}

/// The report table: storage rows with their ratio to both raw rows, then the raw rows.
fn table(rows: &[Row], grow: &Row, overwrite: &Row, together: &Row) -> Table {
    let mut t = Table::new(&[
        ("scenario", Align::Left),
        ("batch", Align::Right),
        ("entries/s", Align::Right),
        ("fsyncs/s", Align::Right),
        ("MB/s", Align::Right),
        ("p50", Align::Right),
        ("p99", Align::Right),
        ("p99.9", Align::Right),
        ("CPU/fsync", Align::Right),
        ("vs raw grow", Align::Right),
        ("vs raw overwrite", Align::Right),
    ]);
    let ratio = |row: &Row, raw: &Row| {
        let r = row.syncs_per_sec() / raw.syncs_per_sec();
        if r.is_finite() {
            format!("{r:.2}×")
        } else {
            "-".to_string()
        }
    };
    let cells = |row: &Row, vs_grow: String, vs_overwrite: String| {
        let lat = |f: fn(&Percentiles) -> Duration| {
            row.latency
                .as_ref()
                .map_or_else(|| "-".to_string(), |p| report::duration(f(p)))
        };
        vec![
            row.scenario.to_string(),
            row.batch.map_or_else(|| "-".to_string(), |b| b.to_string()),
            if row.batch.is_some() {
                report::count(row.rate(row.entries))
            } else {
                "-".to_string()
            },
            report::count(row.syncs_per_sec()),
            report::decimal(row.rate(row.bytes) / 1e6),
            lat(|p| p.p50),
            lat(|p| p.p99),
            lat(|p| p.p999),
            row.cpu_per_sync(),
            vs_grow,
            vs_overwrite,
        ]
    };
    for row in rows {
        t.row(cells(row, ratio(row, grow), ratio(row, overwrite)));
    }
    for raw in [grow, overwrite, together] {
        t.row(cells(raw, "-".into(), "-".into()));
    }
    t
}
