//! Corruption: damage that a crash cannot explain must stop `open` with an error naming
//! the file and the offset of the damaged record; it is never skipped or returned as data.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::{Path, PathBuf};

use raftlock_raft::{
    Entry, FileStorage, FileStorageOptions, HardState, NodeId, Snapshot, SnapshotMeta, Storage,
    StorageError, SyncPolicy,
};

fn options() -> FileStorageOptions {
    FileStorageOptions {
        sync: SyncPolicy::UnsafeNoSync,
        segment_size: 400,
        cache_bytes: 1 << 20,
    }
}

fn entries(lo: u64, hi: u64) -> Vec<Entry> {
    (lo..hi)
        .map(|i| Entry::normal(i, 1, format!("data of entry {i}")))
        .collect()
}

/// A directory with 40 entries spread over several segments.
fn populated() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut s = FileStorage::open(dir.path(), options()).unwrap();
    s.append(&entries(1, 41)).unwrap();
    s.sync().unwrap();
    dir
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut segs: Vec<_> = fs::read_dir(dir.join("log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    segs.sort();
    segs
}

/// Offsets of the records of a segment file, read with the documented framing: a header
/// (16 bytes for `RLWAL001`, 80 for `RLWAL002`), then `[len u32][crc u32][payload of len
/// bytes]`.
fn record_offsets(bytes: &[u8]) -> Vec<usize> {
    let mut offsets = Vec::new();
    let mut at = match &bytes[..8] {
        b"RLWAL001" => 16,
        b"RLWAL002" => 80,
        other => panic!("unknown segment magic {other:?}"),
    };
    while at + 8 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        if len == 0 {
            break;
        }
        offsets.push(at);
        at += 8 + len;
    }
    offsets
}

fn flip(path: &Path, offset: usize) {
    let mut bytes = fs::read(path).unwrap();
    bytes[offset] ^= 0x20;
    fs::write(path, bytes).unwrap();
}

fn expect_corruption(dir: &Path, want_path: &Path, want_offset: Option<u64>) {
    match FileStorage::open(dir, options()) {
        Err(StorageError::Corruption {
            path,
            offset,
            reason,
        }) => {
            assert_eq!(path, want_path, "{reason}");
            if let Some(want) = want_offset {
                assert_eq!(offset, want, "{reason}");
            }
        }
        Err(other) => panic!("expected corruption, got {other}"),
        Ok(s) => panic!(
            "expected corruption, opened with last index {}",
            s.last_index()
        ),
    }
}

#[test]
fn flipped_payload_byte_before_the_last_record_of_the_last_segment() {
    let dir = populated();
    let last = segments(dir.path()).pop().unwrap();
    let offsets = record_offsets(&fs::read(&last).unwrap());
    assert!(
        offsets.len() >= 3,
        "need several records in the last segment"
    );
    for &victim in &offsets[..offsets.len() - 1] {
        let dir = populated();
        // A data byte (past len, crc, index, term and kind).
        flip(&last_in(dir.path()), victim + 8 + 17 + 2);
        expect_corruption(dir.path(), &last_in(dir.path()), Some(victim as u64));
    }
}

fn last_in(dir: &Path) -> PathBuf {
    segments(dir).pop().unwrap()
}

#[test]
fn flipped_byte_in_an_earlier_segment_even_in_its_last_record() {
    let probe = populated();
    let segs = segments(probe.path());
    assert!(segs.len() >= 3);
    let offsets = record_offsets(&fs::read(&segs[1]).unwrap());
    for (victim, byte) in [
        (offsets[0], 8 + 17),                 // first record, data
        (offsets[offsets.len() - 1], 8 + 3),  // last record of the segment, index field
        (offsets[offsets.len() - 1], 8 + 16), // its kind byte
    ] {
        let dir = populated();
        let seg = segments(dir.path())[1].clone();
        flip(&seg, victim + byte);
        expect_corruption(dir.path(), &seg, Some(victim as u64));
    }
}

#[test]
fn truncated_earlier_segment_is_corruption_not_a_torn_tail() {
    let dir = populated();
    let seg = segments(dir.path())[0].clone();
    let bytes = fs::read(&seg).unwrap();
    let offsets = record_offsets(&bytes);
    let victim = *offsets.last().unwrap();
    fs::write(&seg, &bytes[..victim + 5]).unwrap();
    expect_corruption(dir.path(), &seg, Some(victim as u64));
}

#[test]
fn corrupted_snapshot_file() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut s = FileStorage::open(dir.path(), options()).unwrap();
        s.append(&entries(1, 11)).unwrap();
        s.save_snapshot(&Snapshot {
            meta: SnapshotMeta {
                last_index: 10,
                last_term: 1,
                membership: None,
            },
            data: vec![7u8; 1000].into(),
        })
        .unwrap();
    }
    let snap = dir
        .path()
        .join("snapshots")
        .join(format!("{:020}-{:020}.snap", 10, 1));
    for offset in [12, 500] {
        flip(&snap, offset); // header field, then data
        expect_corruption(dir.path(), &snap, None);
        flip(&snap, offset);
    }
    FileStorage::open(dir.path(), options()).unwrap();
}

#[test]
fn corrupted_hard_state_file() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut s = FileStorage::open(dir.path(), options()).unwrap();
        s.set_hard_state(&HardState {
            term: 5,
            voted_for: Some(NodeId::from("node-1")),
        })
        .unwrap();
    }
    let hs = dir.path().join("hardstate");
    flip(&hs, 7);
    expect_corruption(dir.path(), &hs, Some(0));
}
