//! Streamed snapshots in `FileStorage`: a snapshot received in chunks or written by a
//! writer lives in a temp file until it is installed by rename; open removes leftovers of
//! a crash; chunks are read back at any offset, from a reader that outlives a newer
//! install. `MemStorage` keeps the same contract (the model test compares them).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::path::Path;

use raftlock_raft::{
    Entry, FileStorage, FileStorageOptions, MemStorage, SnapshotInfo, SnapshotLog, SnapshotMeta,
    SnapshotSource, SnapshotStream, Storage, StorageError, SyncPolicy,
};

fn meta(last_index: u64, last_term: u64) -> SnapshotMeta {
    SnapshotMeta {
        last_index,
        last_term,
        membership: None,
    }
}

fn info(meta: SnapshotMeta, data: &[u8]) -> SnapshotInfo {
    SnapshotInfo {
        meta,
        size: data.len() as u64,
        checksum: crc32c::crc32c(data),
    }
}

/// Data that differs at every offset, so a chunk read from the wrong place shows.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

fn open(dir: &Path) -> FileStorage {
    FileStorage::open(dir, FileStorageOptions::default()).unwrap()
}

fn receive(s: &mut dyn Storage, m: &SnapshotMeta, data: &[u8], chunk: usize) {
    for (k, piece) in data.chunks(chunk).enumerate() {
        s.write_snapshot_chunk(m, (k * chunk) as u64, piece)
            .unwrap();
    }
}

#[test]
fn a_received_snapshot_is_a_temp_file_until_installed_by_rename() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(dir.path());
    s.append(
        &(1..=10)
            .map(|i| Entry::normal(i, 1, "x"))
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let data = pattern(10_000);
    let m = meta(12, 2);
    receive(&mut s, &m, &data, 999);
    let tmp = files(dir.path());
    assert_eq!(tmp.len(), 1);
    assert!(
        tmp[0].starts_with("recv-") && tmp[0].ends_with(".tmp"),
        "{tmp:?}"
    );
    s.install_snapshot(
        &info(m.clone(), &data),
        SnapshotSource::Received,
        SnapshotLog::Discard,
    )
    .unwrap();
    assert_eq!(
        files(dir.path()),
        vec![format!("{:020}-{:020}.snap", 12, 2)],
        "renamed into place, nothing left behind"
    );
    assert_eq!((s.first_index(), s.last_index()), (13, 12));
    let reader = s.snapshot_reader().unwrap().unwrap();
    assert_eq!(reader.info(), &info(m.clone(), &data));
    for (offset, len) in [
        (0u64, 1u64),
        (0, 10_000),
        (4321, 1000),
        (9_999, 1),
        (10_000, 0),
    ] {
        let chunk = reader.read_chunk(offset, len).unwrap();
        assert_eq!(&chunk[..], &data[offset as usize..(offset + len) as usize]);
    }
    assert!(matches!(
        reader.read_chunk(9_999, 2),
        Err(StorageError::InvalidRequest(_))
    ));
    drop(s);
    let s = open(dir.path());
    assert_eq!(s.snapshot_info(), Some(info(m, &data)));
    let mut all = Vec::new();
    SnapshotStream::new(s.snapshot_reader().unwrap().unwrap())
        .read_to_end(&mut all)
        .unwrap();
    assert_eq!(all, data);
}

#[test]
fn open_removes_the_temp_files_of_an_interrupted_transfer_and_build() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(dir.path());
    let m = meta(5, 1);
    s.write_snapshot_chunk(&m, 0, b"first half").unwrap();
    let mut w = s.snapshot_writer().unwrap();
    w.write_all(b"half built").unwrap();
    w.flush().unwrap();
    let temps = files(dir.path());
    assert_eq!(temps.len(), 2, "both temp files exist: {temps:?}");
    // A crash: no destructor runs. The writer is leaked; the storage must be dropped to
    // release its directory lock, so what it would delete is copied aside first.
    std::mem::forget(w);
    let snaps = dir.path().join("snapshots");
    for name in &temps {
        std::fs::copy(snaps.join(name), snaps.join(format!("crashed-{name}"))).unwrap();
    }
    drop(s);
    assert_eq!(files(dir.path()).len(), 3);
    let mut s = FileStorage::open(
        dir.path(),
        FileStorageOptions {
            sync: SyncPolicy::Always,
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("reopen after the crash: {e}"));
    assert!(files(dir.path()).is_empty(), "{:?}", files(dir.path()));
    assert_eq!(s.snapshot_info(), None);
    // The transfer starts over from offset 0: a later offset is refused.
    assert!(matches!(
        s.write_snapshot_chunk(&m, 10, b"second half"),
        Err(StorageError::InvalidRequest(_))
    ));
    s.write_snapshot_chunk(&m, 0, b"whole").unwrap();
    s.install_snapshot(
        &info(m, b"whole"),
        SnapshotSource::Received,
        SnapshotLog::Discard,
    )
    .unwrap();
    assert_eq!(s.load_snapshot().unwrap().unwrap().data, "whole");
}

#[test]
fn a_built_snapshot_is_streamed_then_installed_and_a_dropped_writer_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(dir.path());
    s.append(
        &(1..=8)
            .map(|i| Entry::normal(i, 3, "y"))
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let abandoned = s.snapshot_writer().unwrap();
    drop(abandoned);
    assert!(
        files(dir.path()).is_empty(),
        "a dropped writer deletes its file"
    );
    let data = pattern(300_000);
    let mut w = s.snapshot_writer().unwrap();
    for piece in data.chunks(17) {
        w.write_all(piece).unwrap();
    }
    assert_eq!(w.written(), data.len() as u64);
    let staged = w.finish().unwrap();
    assert_eq!(staged.checksum(), crc32c::crc32c(&data));
    let snap = info(meta(6, 3), &data);
    // A reader of the old (no) snapshot, then of the new one, which outlives a newer one.
    s.install_snapshot(&snap, SnapshotSource::Staged(staged), SnapshotLog::Keep)
        .unwrap();
    assert_eq!((s.first_index(), s.last_index()), (1, 8), "the log is kept");
    let old = s.snapshot_reader().unwrap().unwrap();
    let newer = info(meta(8, 3), b"newer");
    let mut w = s.snapshot_writer().unwrap();
    w.write_all(b"newer").unwrap();
    let staged = w.finish().unwrap();
    s.install_snapshot(&newer, SnapshotSource::Staged(staged), SnapshotLog::Keep)
        .unwrap();
    assert_eq!(files(dir.path()), vec![format!("{:020}-{:020}.snap", 8, 3)]);
    assert_eq!(
        old.read_chunk(1000, 5000).unwrap(),
        &data[1000..6000],
        "an open reader keeps reading its snapshot"
    );
    assert_eq!(s.load_snapshot().unwrap().unwrap().data, "newer");
}

#[test]
fn an_install_whose_bytes_do_not_match_is_refused_and_changes_nothing() {
    for file in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let mut s: Box<dyn Storage> = if file {
            Box::new(open(dir.path()))
        } else {
            Box::new(MemStorage::new())
        };
        let m = meta(4, 1);
        receive(s.as_mut(), &m, b"0123456789", 4);
        let mut wrong = info(m.clone(), b"0123456789");
        wrong.checksum ^= 1;
        assert!(matches!(
            s.install_snapshot(&wrong, SnapshotSource::Received, SnapshotLog::Discard),
            Err(StorageError::InvalidRequest(_))
        ));
        assert_eq!(s.snapshot_info(), None);
        // Not the snapshot being received.
        s.write_snapshot_chunk(&m, 0, b"abc").unwrap();
        assert!(matches!(
            s.install_snapshot(
                &info(meta(5, 1), b"abc"),
                SnapshotSource::Received,
                SnapshotLog::Discard
            ),
            Err(StorageError::InvalidRequest(_))
        ));
        assert_eq!(s.snapshot_info(), None, "file storage: {file}");
        if file {
            assert!(files(dir.path()).is_empty(), "{:?}", files(dir.path()));
        }
    }
}
