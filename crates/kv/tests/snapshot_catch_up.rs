//! A wiped follower of a large store catches up by a streamed snapshot.
//!
//! A test helper writes the same store of `RAFTKV_SNAPSHOT_MB` MiB (200 by default, the CI
//! variant) as a snapshot into three data directories: far quicker than that many puts
//! through HTTP. Three `raftkv node` processes start on them; then one follower is killed,
//! its data directory wiped, and it is started again empty. The leader's log starts after
//! the snapshot, so the follower can only catch up by InstallSnapshot. The test checks that
//! it does, that its data is the leader's, and that its peak RSS during the install stays
//! below twice its RSS once caught up (the snapshot is streamed through a file, never held
//! in memory whole). It prints the install time and the RSS figures.
//!
//! The 1 GiB figure in docs/BENCHMARKS.md:
//! `RAFTKV_SNAPSHOT_MB=1024 cargo test -p raftlock-kv --test snapshot_catch_up -- --nocapture`.
//!
//! Time is bounded and `LocalCluster`'s drop reaps every process, even on failure.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use raftlock_kv::client::Client;
use raftlock_kv::cluster::{self, LocalCluster};
use raftlock_kv::snapshot;
use raftlock_raft::{FileStorage, FileStorageOptions, HardState, Snapshot, SnapshotMeta, Storage};

/// The index the generated snapshot covers; the cluster's log continues after it.
const SNAPSHOT_INDEX: u64 = 1000;
const VALUE_LEN: usize = 1000;

fn key(i: u64) -> String {
    format!("key-{i:010}")
}

/// A value that differs per key, so a mix-up of keys shows.
fn value(i: u64) -> String {
    let seed = format!("{i:010}-");
    seed.repeat(VALUE_LEN / seed.len() + 1)[..VALUE_LEN].to_string()
}

fn pairs_for(mib: u64) -> u64 {
    (mib << 20) / (key(0).len() + VALUE_LEN + 8) as u64
}

/// The store as raftkv's snapshot format, generated without building the map.
fn generate(count: u64) -> Bytes {
    let mut out = Vec::with_capacity(count as usize * (key(0).len() + VALUE_LEN + 8) + 64);
    let pairs = (0..count).map(|i| (key(i), value(i)));
    snapshot::write(&mut out, SNAPSHOT_INDEX, count, pairs).unwrap();
    Bytes::from(out)
}

fn seed_data_dir(dir: &Path, data: &Bytes) {
    let mut storage = FileStorage::open(dir, FileStorageOptions::default()).unwrap();
    storage
        .set_hard_state(&HardState {
            term: 1,
            voted_for: None,
        })
        .unwrap();
    storage
        .save_snapshot(&Snapshot {
            meta: SnapshotMeta {
                last_index: SNAPSHOT_INDEX,
                last_term: 1,
                membership: None,
            },
            data: data.clone(),
        })
        .unwrap();
}

/// `VmHWM` (peak) and `VmRSS` of a process, in KiB.
fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap()
    };
    (field("VmHWM:"), field("VmRSS:"))
}

async fn applied(c: &LocalCluster, i: usize) -> Option<u64> {
    c.get_json(i, "/status").await?["last_applied"].as_u64()
}

async fn get_stale(c: &LocalCluster, i: usize, k: &str) -> Option<String> {
    let url = format!("http://{}/kv/{k}?stale=true", c.nodes()[i].http);
    let response = reqwest::get(url).await.ok()?;
    if !response.status().is_success() {
        return None;
    }
    response.text().await.ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_follower_catches_up_by_a_streamed_snapshot() {
    let mib: u64 = std::env::var("RAFTKV_SNAPSHOT_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let count = pairs_for(mib);
    // Generous bounds: a debug build on a busy 2-core machine.
    let bound = Duration::from_secs(60 + mib / 2);
    let tmp = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let data = generate(count);
    let size = data.len();
    for i in 1..=3 {
        seed_data_dir(&tmp.path().join(format!("node-{i}")), &data);
    }
    drop(data);
    println!(
        "generated {count} keys, a {:.1} MiB snapshot, in three data directories in {:.1} s",
        size as f64 / (1 << 20) as f64,
        started.elapsed().as_secs_f64()
    );

    let args: Vec<String> = ["--snapshot-threshold", "1000000"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut c = cluster::start(
        Path::new(env!("CARGO_BIN_EXE_raftkv")),
        tmp.path(),
        3,
        &args,
    )
    .unwrap();
    let leader = c
        .wait_for_leader(bound)
        .await
        .unwrap_or_else(|| panic!("no leader: {}", c.log_tail(0, 20)));
    let follower = (leader + 1) % 3;
    let last = key(count - 1);
    assert_eq!(
        get_stale(&c, leader, &last).await.as_deref(),
        Some(value(count - 1).as_str()),
        "the leader restored the generated store"
    );

    c.kill(follower).unwrap();
    std::fs::remove_dir_all(&c.nodes()[follower].data_dir).unwrap();
    let target = c.wait_all_applied(bound).await.expect("the others applied");
    assert!(target > SNAPSHOT_INDEX);
    let install_started = Instant::now();
    c.restart(follower).unwrap();
    let pid = c.nodes()[follower].pid().unwrap();
    // The leader learns that the follower lost its log from the answer to its next
    // AppendEntries (heartbeats carry no log position): write once the follower is up.
    let client = Client::new(&c.endpoints(), Duration::from_secs(5)).unwrap();
    let mut target = target;
    while install_started.elapsed() < bound {
        if c.get_json(follower, "/status").await.is_some() {
            target = client.put("after-wipe", "yes").await.unwrap();
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut caught_up = false;
    while install_started.elapsed() < bound {
        if applied(&c, follower).await.is_some_and(|a| a >= target) {
            caught_up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let install = install_started.elapsed();
    if !caught_up {
        println!("statuses: {:#?}", c.statuses().await);
    }
    assert!(
        caught_up,
        "the wiped follower did not catch up within {bound:?}:\n{}\nleader:\n{}",
        c.log_tail(follower, 3000),
        c.log_tail(leader, 3000)
    );
    let (peak_kib, _) = rss_kib(pid);
    // Steady state: what the caught-up follower holds once the install's buffers are gone.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, steady_kib) = rss_kib(pid);
    println!(
        "wiped follower installed {:.1} MiB in {:.2} s; peak RSS {:.1} MiB, steady RSS {:.1} MiB ({:.2}x)",
        size as f64 / (1 << 20) as f64,
        install.as_secs_f64(),
        peak_kib as f64 / 1024.0,
        steady_kib as f64 / 1024.0,
        peak_kib as f64 / steady_kib as f64
    );
    assert_eq!(
        get_stale(&c, follower, "after-wipe").await.as_deref(),
        Some("yes")
    );
    for i in [0, count / 2, count - 1] {
        assert_eq!(
            get_stale(&c, follower, &key(i)).await.as_deref(),
            Some(value(i).as_str()),
            "key {i} on the follower"
        );
    }
    // The install may hold the store being built and small buffers, never a second copy
    // of the snapshot: the store takes about 1.1 times the snapshot's size in memory, a
    // process holding the snapshot as well would need more than twice it.
    let size_kib = size as u64 / 1024;
    assert!(
        peak_kib < size_kib * 3 / 2 + 64 * 1024,
        "peak RSS {peak_kib} KiB during the install of a {size_kib} KiB snapshot: a copy of it was held in memory"
    );
    assert!(
        peak_kib < 2 * steady_kib,
        "peak RSS {peak_kib} KiB during the install is not below twice the steady {steady_kib} KiB"
    );
    c.shutdown(Duration::from_secs(5)).unwrap();
}
