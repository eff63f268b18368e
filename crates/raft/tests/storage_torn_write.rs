//! Torn writes: a crash can leave the last record of the log half-written (a process killed
//! inside `write`, or a machine crash before the data reached the disk). Whatever prefix of
//! the last record survives, open must recover exactly the records before it, and the log
//! must keep working. Leftover temp files of interrupted atomic writes must be ignored.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::{Path, PathBuf};

use raftlock_raft::{
    Entry, FileStorage, FileStorageOptions, HardState, NodeId, Snapshot, SnapshotMeta, Storage,
    SyncPolicy,
};

const N: u64 = 12;

fn options(segment_size: u64) -> FileStorageOptions {
    FileStorageOptions {
        sync: SyncPolicy::UnsafeNoSync,
        segment_size,
        cache_bytes: 1 << 20,
    }
}

fn entry(i: u64) -> Entry {
    Entry::normal(
        i,
        1 + i / 5,
        format!("payload of entry {i}").repeat(1 + (i % 3) as usize),
    )
}

fn entries(lo: u64, hi: u64) -> Vec<Entry> {
    (lo..hi).map(entry).collect()
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else if e.file_name() != "LOCK" {
            fs::copy(e.path(), target).unwrap();
        }
    }
}

fn last_segment(dir: &Path) -> PathBuf {
    let mut segs: Vec<_> = fs::read_dir(dir.join("log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    segs.sort();
    segs.pop().unwrap()
}

/// Writes N entries, the last one after the last sync, then damages that record every
/// possible way: cut at each byte, or zero-filled from each byte on (what a machine crash
/// before writeback leaves). Only a record that no completed sync covered can be torn by
/// a crash; damage to synced records is refused (`storage_bitflip.rs`).
fn torn_last_record(segment_size: u64) {
    let pristine = tempfile::tempdir().unwrap();
    {
        let mut s = FileStorage::open(pristine.path(), options(segment_size)).unwrap();
        s.set_hard_state(&HardState {
            term: 3,
            voted_for: Some(NodeId::from("n1")),
        })
        .unwrap();
        s.append(&entries(1, N)).unwrap();
        s.sync().unwrap();
        s.append(&entries(N, N + 1)).unwrap();
    }
    let seg_name = last_segment(pristine.path())
        .file_name()
        .unwrap()
        .to_owned();
    let bytes = fs::read(last_segment(pristine.path())).unwrap();
    let last_len = 8 + 17 + entry(N).data.len();
    let last_start = bytes.len() - last_len;
    // When the last record is alone in its segment, also cut into the segment header
    // (80 bytes in the current format).
    assert_eq!(&bytes[..8], b"RLWAL002");
    let from = if last_start == 80 { 0 } else { last_start };
    for cut in from..=bytes.len() {
        for zero_fill in [false, true] {
            if zero_fill && cut == bytes.len() {
                continue;
            }
            let work = tempfile::tempdir().unwrap();
            copy_dir(pristine.path(), work.path());
            let seg = work.path().join("log").join(&seg_name);
            let mut damaged = bytes[..cut].to_vec();
            if zero_fill {
                damaged.resize(bytes.len(), 0);
            }
            fs::write(&seg, &damaged).unwrap();

            let intact = cut == bytes.len();
            let expected_last = if intact { N } else { N - 1 };
            let what = format!("segment_size {segment_size}, cut at {cut}, zero fill {zero_fill}");
            let mut s = FileStorage::open(work.path(), options(segment_size))
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(s.last_index(), expected_last, "{what}");
            assert_eq!(
                s.entries(1, expected_last + 1, u64::MAX).unwrap(),
                entries(1, expected_last + 1),
                "{what}"
            );
            assert_eq!(s.hard_state().term, 3);
            // The log keeps working after the repair, across another reopen.
            let more = entries(expected_last + 1, N + 4);
            s.append(&more).unwrap();
            s.sync().unwrap();
            drop(s);
            let s = FileStorage::open(work.path(), options(segment_size)).unwrap();
            assert_eq!(s.last_index(), N + 3, "{what}");
            assert_eq!(
                s.entries(1, N + 4, u64::MAX).unwrap(),
                entries(1, N + 4),
                "{what}"
            );
        }
    }
}

#[test]
fn torn_last_record_in_a_single_segment_is_truncated() {
    torn_last_record(1 << 20);
}

#[test]
fn torn_last_record_after_segment_rolls_is_truncated() {
    torn_last_record(200);
}

#[test]
fn torn_last_record_alone_in_its_segment_is_truncated() {
    // Tiny segments: every record starts a segment of its own.
    torn_last_record(1);
}

#[test]
fn leftover_temp_files_are_ignored_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let hs = HardState {
        term: 4,
        voted_for: Some(NodeId::from("n2")),
    };
    let snap = Snapshot {
        meta: SnapshotMeta {
            last_index: 3,
            last_term: 1,
            membership: None,
        },
        data: "state".into(),
    };
    {
        let mut s = FileStorage::open(dir.path(), options(4096)).unwrap();
        s.append(&entries(1, 6)).unwrap();
        s.set_hard_state(&hs).unwrap();
        s.save_snapshot(&snap).unwrap();
        s.sync().unwrap();
    }
    // Interrupted writes of a newer hard state, snapshot and segment.
    let tmps = [
        dir.path().join("hardstate.tmp"),
        dir.path()
            .join("snapshots")
            .join(format!("{:020}-{:020}.snap.tmp", 5, 1)),
        dir.path().join("log").join(format!("{:020}.seg.tmp", 6)),
    ];
    for t in &tmps {
        fs::write(t, b"half written garbage").unwrap();
    }
    let s = FileStorage::open(dir.path(), options(4096)).unwrap();
    assert_eq!(s.hard_state(), hs);
    assert_eq!(s.load_snapshot().unwrap(), Some(snap));
    assert_eq!(s.entries(1, 6, u64::MAX).unwrap(), entries(1, 6));
    for t in &tmps {
        assert!(!t.exists(), "{} left behind", t.display());
    }
}
