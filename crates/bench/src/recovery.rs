//! The `recovery` scenario: how long a node takes to open a data directory holding a long
//! log, and how much memory that costs.
//!
//! A `FileStorage` directory is filled with `--entries` entries of `--entry-size` bytes
//! (default options, append + sync in batches of `--batch`) and closed. Then, `--repeat`
//! times, a fresh child process (this executable's hidden `recovery-open` subcommand, so
//! that its memory starts clean) times [`FileStorage::open`] and then
//! [`load_initial_state`] (what `RaftBuilder::build` does at start: hard state, snapshot
//! and every log entry), and reports its resident memory (`VmRSS`) before, after each
//! step, and at its peak (`VmHWM`). The page cache is warm unless `--drop-caches`.

use std::error::Error;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Args;
use raftlock_raft::{
    load_initial_state, Entry, FileStorage, FileStorageOptions, HardState, Storage,
};

use crate::raftkv_bin::{disk_usage, mib};
use crate::report::{self, Align, Table};
use crate::{machine, storage};

/// Options of `raftlock-bench recovery`.
#[derive(Debug, Clone, Args)]
pub struct RecoveryArgs {
    /// Log entries in the data directory.
    #[arg(long, value_name = "N", default_value_t = 1_000_000)]
    pub entries: u64,
    /// Payload bytes of each entry.
    #[arg(long, value_name = "BYTES", default_value_t = 128)]
    pub entry_size: usize,
    /// Entries per append + sync while filling the directory.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub batch: usize,
    /// How many times to open it (each in a fresh process).
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub repeat: usize,
    /// Drop the page cache before each open (needs root; affects the whole machine).
    #[arg(long)]
    pub drop_caches: bool,
    /// Directory to work in (a temporary directory is made inside it).
    /// Default: inside ./target if it exists, else $TMPDIR.
    #[arg(long, value_name = "PATH")]
    pub dir: Option<PathBuf>,
}

/// Options of the hidden `recovery-open` subcommand (the child process).
#[derive(Debug, Clone, Args)]
pub struct OpenArgs {
    /// The data directory to open.
    #[arg(long, value_name = "PATH")]
    pub dir: PathBuf,
}

/// Runs the scenario and prints the report.
pub fn run(args: &RecoveryArgs) -> Result<(), Box<dyn Error>> {
    if args.entries == 0 || args.entry_size > 1 << 20 || args.batch == 0 || args.repeat == 0 {
        return Err("--entries, --batch, --repeat: at least 1; --entry-size: at most 1 MiB".into());
    }
    machine::print_header();
    let dir = storage::temp_dir(args.dir.as_deref())?;
    machine::print_directory(dir.path());
    let data = dir.path().join("data");
    let fill = fill(&data, args)?;
    println!(
        "recovery: filled {} with {} entries of {} bytes in {} ({} entries/s), {} in files; \
         page cache {}",
        data.display(),
        report::count(args.entries as f64),
        args.entry_size,
        report::duration(fill),
        report::count(args.entries as f64 / fill.as_secs_f64()),
        mib(disk_usage(&data)),
        if args.drop_caches {
            "dropped before each open"
        } else {
            "warm"
        }
    );
    let exe = std::env::current_exe().map_err(|e| format!("locating this executable: {e}"))?;
    let mut table = Table::new(&[
        ("run", Align::Right),
        ("open", Align::Right),
        ("RSS after open", Align::Right),
        ("load_initial_state", Align::Right),
        ("RSS after load", Align::Right),
        ("peak RSS", Align::Right),
        ("RSS at start", Align::Right),
    ]);
    let mut opens = Vec::new();
    let mut loads = Vec::new();
    for run in 1..=args.repeat {
        if args.drop_caches {
            std::fs::write("/proc/sys/vm/drop_caches", "3")
                .map_err(|e| format!("--drop-caches: writing /proc/sys/vm/drop_caches: {e}"))?;
        }
        let output = Command::new(&exe)
            .arg("recovery-open")
            .arg("--dir")
            .arg(&data)
            .output()
            .map_err(|e| format!("running {} recovery-open: {e}", exe.display()))?;
        let text = String::from_utf8_lossy(&output.stdout);
        if !output.status.success() {
            return Err(format!(
                "recovery-open failed ({}): {}{}",
                output.status,
                text,
                String::from_utf8_lossy(&output.stderr)
            )
            .into());
        }
        let field = |name: &str| -> Result<u64, String> {
            text.split_whitespace()
                .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
                .ok_or_else(|| format!("recovery-open printed no {name}: {text}"))
        };
        let (open, load) = (
            Duration::from_micros(field("open_us")?),
            Duration::from_micros(field("load_us")?),
        );
        if field("entries")? != args.entries {
            return Err(format!("recovery-open loaded the wrong number of entries: {text}").into());
        }
        opens.push(open);
        loads.push(load);
        table.row(vec![
            run.to_string(),
            report::duration(open),
            mib(field("rss_open")?),
            report::duration(load),
            mib(field("rss_load")?),
            mib(field("hwm")?),
            mib(field("rss_start")?),
        ]);
    }
    println!("\n{table}");
    opens.sort_unstable();
    loads.sort_unstable();
    let (open_min, open_median) = (opens[0], opens[opens.len() / 2]);
    println!(
        "open: min {}, median {}; open + load_initial_state: min {}, median {}",
        report::duration(open_min),
        report::duration(open_median),
        report::duration(open_min + loads[0]),
        report::duration(opens[opens.len() / 2] + loads[loads.len() / 2]),
    );
    println!(
        "target (issue 9): open under 0.5 s: {}",
        if open_median < Duration::from_millis(500) {
            "met (median)"
        } else {
            "MISSED (median)"
        }
    );
    Ok(())
}

/// Fills a fresh `FileStorage` at `data`; returns how long it took.
fn fill(data: &Path, args: &RecoveryArgs) -> Result<Duration, Box<dyn Error>> {
    let start = Instant::now();
    let mut storage = FileStorage::open(data, FileStorageOptions::default())?;
    storage.set_hard_state(&HardState {
        term: 1,
        voted_for: None,
    })?;
    let payload = Bytes::from(vec![0xA5; args.entry_size]);
    let mut next = 1;
    let mut batch = Vec::with_capacity(args.batch);
    while next <= args.entries {
        batch.clear();
        let end = (next + args.batch as u64).min(args.entries + 1);
        batch.extend((next..end).map(|i| Entry::normal(i, 1, payload.clone())));
        storage.append(&batch)?;
        storage.sync()?;
        next = end;
    }
    drop(storage);
    Ok(start.elapsed())
}

/// The child process: opens `dir`, loads the initial state, and prints `key=value` pairs
/// (times in µs, memory in bytes) on one line.
pub fn open(args: &OpenArgs) -> Result<(), Box<dyn Error>> {
    let rss = || machine::memory_of(None, "VmRSS").unwrap_or(0);
    let rss_start = rss();
    let start = Instant::now();
    let storage = FileStorage::open(&args.dir, FileStorageOptions::default())?;
    let open = start.elapsed();
    let rss_open = rss();
    let start = Instant::now();
    let state = load_initial_state(&storage)?;
    let load = start.elapsed();
    println!(
        "open_us={} load_us={} entries={} rss_start={rss_start} rss_open={rss_open} \
         rss_load={} hwm={}",
        open.as_micros(),
        load.as_micros(),
        state.entries.len(),
        rss(),
        machine::memory_of(None, "VmHWM").unwrap_or(0),
    );
    drop(state);
    Ok(())
}
