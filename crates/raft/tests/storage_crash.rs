//! Crash test: a child process appends and syncs batches, printing `durable <index>` after
//! each sync returns; the parent SIGKILLs it at a seeded-random moment (mid-append,
//! mid-fsync, mid-segment-roll), reopens the directory and checks that every index reported
//! durable is there with the right term and data, and that the log is a contiguous prefix
//! of what was written. The child is this test binary itself, re-executed with an
//! environment variable, so no extra binary is needed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use raftlock_raft::{Entry, FileStorage, FileStorageOptions, Storage, SyncPolicy};

const CHILD_ENV: &str = "RAFTLOCK_CRASH_CHILD";
const TEST_NAME: &str = "killed_writer_loses_nothing_it_reported_durable";
const ROUNDS: u64 = 20;
/// Bound on waiting for one line from the child; a hung child fails the test.
const LINE_TIMEOUT: Duration = Duration::from_secs(30);

/// Term of entry `i`: derived from the index so any process can check it.
fn term_of(i: u64) -> u64 {
    1 + i / 97
}

/// Data of entry `i`: sizes from 0 to 1 KiB so batches span several pages and a kill can
/// land inside one `write`.
fn data_of(i: u64) -> Vec<u8> {
    let len = (i.wrapping_mul(2_654_435_761) % 1024) as usize;
    (0..len).map(|k| (i as usize + k * 31) as u8).collect()
}

/// splitmix64: a small seeded generator, so every run makes the same choices.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn options(segment_size: u64) -> FileStorageOptions {
    FileStorageOptions {
        sync: SyncPolicy::Always,
        segment_size,
        cache_bytes: 64 * 1024,
    }
}

/// The child: append batches forever, reporting each one once `sync` returns.
fn child_main(spec: &str) -> ! {
    let mut parts = spec.split('|');
    let dir = parts.next().unwrap();
    let segment_size: u64 = parts.next().unwrap().parse().unwrap();
    let batch: u64 = parts.next().unwrap().parse().unwrap();
    let mut s = FileStorage::open(dir, options(segment_size)).unwrap();
    let mut next = s.last_index() + 1;
    let mut out = std::io::stdout().lock();
    loop {
        let entries: Vec<Entry> = (next..next + batch)
            .map(|i| Entry::normal(i, term_of(i), data_of(i)))
            .collect();
        s.append(&entries).unwrap();
        s.sync().unwrap();
        next += batch;
        writeln!(out, "durable {}", next - 1).unwrap();
        out.flush().unwrap();
    }
}

/// Kills and reaps the child whatever happens, so a failing test leaves no process behind.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn check_log(dir: &Path, durable: u64, round: u64) -> u64 {
    let s = FileStorage::open(dir, options(1 << 20)).unwrap();
    let last = s.last_index();
    assert!(
        last >= durable,
        "round {round}: index {durable} was reported durable but the log ends at {last}"
    );
    assert_eq!(s.first_index(), 1, "round {round}");
    let mut want = 1;
    while want <= last {
        let got = s.entries(want, last + 1, 1 << 20).unwrap();
        for e in got {
            assert_eq!(e.index, want, "round {round}: log is not contiguous");
            assert_eq!(e.term, term_of(want), "round {round}: term of {want}");
            assert_eq!(e.data, data_of(want), "round {round}: data of {want}");
            want += 1;
        }
    }
    last
}

#[test]
fn killed_writer_loses_nothing_it_reported_durable() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        child_main(&spec);
    }
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(0x5eed_cafe);
    let mut durable = 0;
    for round in 0..ROUNDS {
        // Small segments make kills land during segment rolls too (not too small: every
        // segment holds an open file, and the log grows over the rounds).
        let segment_size = [8_000, 32_000, 128_000, 1 << 20][rng.below(4) as usize];
        let batch = 1 + rng.below(40);
        let kill_after = 1 + rng.below(30);
        let spec = format!("{}|{segment_size}|{batch}", dir.path().display());
        let child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, spec)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut guard = ChildGuard(child);
        let stdout = guard.0.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut reported = 0;
        while reported < kill_after {
            let line = rx
                .recv_timeout(LINE_TIMEOUT)
                .unwrap_or_else(|e| panic!("round {round}: no report from the child: {e}"));
            // The test harness of the child prints its own lines too.
            if let Some(index) = line.strip_prefix("durable ") {
                durable = index.parse().unwrap();
                reported += 1;
            }
        }
        // SIGKILL: no destructor, no flush; whatever the child was doing is cut short.
        drop(guard);
        drop(rx);
        reader.join().unwrap();
        let last = check_log(dir.path(), durable, round);
        durable = durable.max(last);
    }
}
