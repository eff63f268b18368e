//! Unit tests of [`FileStorage`] as a whole: locking, segment rolling, compaction,
//! snapshot keep/discard and the recovery paths that need files arranged by hand.

use std::fs;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::*;

fn opts(segment_size: u64, cache_bytes: usize) -> FileStorageOptions {
    FileStorageOptions {
        sync: SyncPolicy::Always,
        segment_size,
        cache_bytes,
    }
}

fn entry(index: Index, term: Term) -> Entry {
    Entry::normal(index, term, format!("entry-{index}-{term}"))
}

fn entries(lo: Index, hi: Index, term: Term) -> Vec<Entry> {
    (lo..hi).map(|i| entry(i, term)).collect()
}

fn snapshot(last_index: Index, last_term: Term) -> Snapshot {
    Snapshot {
        meta: SnapshotMeta {
            last_index,
            last_term,
        },
        data: Bytes::from(format!("state@{last_index}")),
    }
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    fsutil::list_files(&dir.join(LOG_DIR))
        .unwrap()
        .into_iter()
        .filter(|(n, _)| segment::parse_file_name(n).is_some())
        .map(|(_, p)| p)
        .collect()
}

fn segment_firsts(dir: &Path) -> Vec<Index> {
    segment_files(dir)
        .iter()
        .map(|p| segment::parse_file_name(p.file_name().unwrap().to_str().unwrap()).unwrap())
        .collect()
}

#[test]
fn second_open_is_locked_until_the_first_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let first = FileStorage::open(dir.path(), opts(4096, 1024)).unwrap();
    match FileStorage::open(dir.path(), opts(4096, 1024)) {
        Err(StorageError::Locked { holder, path }) => {
            assert_eq!(holder, Some(std::process::id()));
            assert_eq!(path, dir.path().join(lock::LOCK_FILE));
        }
        other => panic!("expected Locked, got {other:?}"),
    }
    drop(first);
    FileStorage::open(dir.path(), opts(4096, 1024)).unwrap();
}

#[test]
fn oversized_segment_option_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(FileStorageOptions::MAX_SEGMENT_SIZE + 1, 0);
    assert!(matches!(
        FileStorage::open(dir.path(), o),
        Err(StorageError::InvalidRequest(_))
    ));
}

#[test]
fn segments_roll_and_reads_from_disk_and_cache_agree() {
    let dir = tempfile::tempdir().unwrap();
    let all = entries(1, 201, 1);
    {
        let mut s = FileStorage::open(dir.path(), opts(512, 0)).unwrap();
        for chunk in all.chunks(7) {
            s.append(chunk).unwrap();
        }
        s.sync().unwrap();
        assert!(segment_files(dir.path()).len() > 10);
        assert_eq!(s.entries(1, 201, u64::MAX).unwrap(), all);
    }
    for cache in [0, 500, 1 << 20] {
        let s = FileStorage::open(dir.path(), opts(512, cache)).unwrap();
        assert_eq!((s.first_index(), s.last_index()), (1, 200));
        assert_eq!(s.entries(1, 201, u64::MAX).unwrap(), all);
        assert_eq!(s.entries(37, 150, u64::MAX).unwrap(), all[36..149]);
        // The byte cap applies the same rule across the disk/cache boundary.
        let hint = all[179].size_hint() as u64;
        assert_eq!(s.entries(180, 201, hint * 5).unwrap(), all[179..184]);
        assert_eq!(s.entries(180, 201, 0).unwrap(), all[179..180]);
    }
}

#[test]
fn compaction_drops_whole_segments_only_and_never_the_last() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = FileStorage::open(dir.path(), opts(512, 0)).unwrap();
    s.append(&entries(1, 101, 1)).unwrap();
    let firsts = segment_firsts(dir.path());
    assert!(firsts.len() > 3);
    s.save_snapshot(&snapshot(50, 1)).unwrap();
    assert_eq!(s.first_index(), 1, "a matching snapshot keeps the log");
    s.compact(50).unwrap();
    // The first remaining segment is the one holding index 51.
    let expected_first = *firsts.iter().filter(|&&f| f <= 51).max().unwrap();
    assert_eq!(s.first_index(), expected_first);
    assert_eq!(segment_firsts(dir.path())[0], expected_first);
    assert_eq!(s.term(50).unwrap(), 1);
    if expected_first > 1 {
        assert!(
            matches!(s.term(expected_first - 1), Err(StorageError::Compacted { .. }) if expected_first - 1 != 50)
        );
    }
    // Snapshot at the very end: every segment but the last goes.
    s.save_snapshot(&snapshot(100, 1)).unwrap();
    s.compact(100).unwrap();
    assert_eq!(segment_files(dir.path()).len(), 1);
    assert_eq!(s.last_index(), 100);
    assert_eq!(
        s.entries(s.first_index(), 101, u64::MAX).unwrap().len() as u64,
        101 - s.first_index()
    );
    drop(s);
    let mut s = FileStorage::open(dir.path(), opts(512, 0)).unwrap();
    assert_eq!(s.last_index(), 100);
    assert_eq!(s.snapshot_meta().unwrap().last_index, 100);
    assert!(matches!(
        s.compact(101),
        Err(StorageError::InvalidRequest(_))
    ));
}

#[test]
fn snapshot_keeps_a_matching_log_and_discards_a_conflicting_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = FileStorage::open(dir.path(), opts(512, 256)).unwrap();
    s.append(&entries(1, 41, 2)).unwrap();
    s.save_snapshot(&snapshot(20, 2)).unwrap();
    assert_eq!((s.first_index(), s.last_index()), (1, 40));
    s.save_snapshot(&snapshot(30, 3)).unwrap();
    assert_eq!((s.first_index(), s.last_index()), (31, 30));
    assert!(segment_files(dir.path()).is_empty());
    assert_eq!(s.term(30).unwrap(), 3);
    assert!(matches!(
        s.save_snapshot(&snapshot(30, 3)),
        Err(StorageError::InvalidRequest(_))
    ));
    s.append(&entries(31, 36, 3)).unwrap();
    assert_eq!(segment_firsts(dir.path())[0], 31);
    let files = fsutil::list_files(&dir.path().join(SNAPSHOT_DIR)).unwrap();
    assert_eq!(files.len(), 1, "older snapshots are removed");
    drop(s);
    let s = FileStorage::open(dir.path(), opts(512, 256)).unwrap();
    assert_eq!((s.first_index(), s.last_index()), (31, 35));
    assert_eq!(s.load_snapshot().unwrap().unwrap(), snapshot(30, 3));
    assert_eq!(s.entries(31, 36, u64::MAX).unwrap(), entries(31, 36, 3));
}

#[test]
fn crash_between_snapshot_and_log_discard_is_finished_on_open() {
    // The snapshot file lands, the superseded log is still there: open must discard it.
    let dir = tempfile::tempdir().unwrap();
    {
        let mut s = FileStorage::open(dir.path(), opts(512, 0)).unwrap();
        s.append(&entries(1, 41, 1)).unwrap();
        s.sync().unwrap();
    }
    let snaps = dir.path().join(SNAPSHOT_DIR);
    snapshot_file::write(&snaps, &snapshot(20, 5), true).unwrap();
    let s = FileStorage::open(dir.path(), opts(512, 0)).unwrap();
    assert_eq!((s.first_index(), s.last_index()), (21, 20));
    assert!(segment_files(dir.path()).is_empty());
    drop(s);

    // A snapshot beyond the end of the log also supersedes it.
    let dir = tempfile::tempdir().unwrap();
    {
        let mut s = FileStorage::open(dir.path(), opts(512, 0)).unwrap();
        s.append(&entries(1, 11, 1)).unwrap();
    }
    let snaps = dir.path().join(SNAPSHOT_DIR);
    snapshot_file::write(&snaps, &snapshot(15, 1), true).unwrap();
    let s = FileStorage::open(dir.path(), opts(512, 0)).unwrap();
    assert_eq!((s.first_index(), s.last_index()), (16, 15));
    drop(s);

    // A matching snapshot keeps the log.
    let dir = tempfile::tempdir().unwrap();
    {
        let mut s = FileStorage::open(dir.path(), opts(512, 0)).unwrap();
        s.append(&entries(1, 11, 1)).unwrap();
    }
    snapshot_file::write(&dir.path().join(SNAPSHOT_DIR), &snapshot(5, 1), true).unwrap();
    let s = FileStorage::open(dir.path(), opts(512, 0)).unwrap();
    assert_eq!((s.first_index(), s.last_index()), (1, 10));
}

#[test]
fn a_gap_between_snapshot_and_log_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut s = FileStorage::open(dir.path(), opts(256, 0)).unwrap();
        s.append(&entries(1, 41, 1)).unwrap();
    }
    let first = segment_files(dir.path())[0].clone();
    fs::remove_file(&first).unwrap();
    match FileStorage::open(dir.path(), opts(256, 0)) {
        Err(StorageError::Corruption { path, offset, .. }) => {
            assert_eq!(path, segment_files(dir.path())[0]);
            assert_eq!(offset, 0);
        }
        other => panic!("expected corruption, got {other:?}"),
    }
}

#[test]
fn a_missing_middle_segment_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut s = FileStorage::open(dir.path(), opts(256, 0)).unwrap();
        s.append(&entries(1, 41, 1)).unwrap();
    }
    let files = segment_files(dir.path());
    assert!(files.len() >= 3);
    fs::remove_file(&files[1]).unwrap();
    match FileStorage::open(dir.path(), opts(256, 0)) {
        Err(StorageError::Corruption { path, .. }) => assert_eq!(path, files[2]),
        other => panic!("expected corruption, got {other:?}"),
    }
}

#[test]
fn truncation_across_segments_is_durable_and_appends_continue() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = FileStorage::open(dir.path(), opts(300, 300)).unwrap();
    s.append(&entries(1, 61, 1)).unwrap();
    let firsts = segment_firsts(dir.path());
    let boundary = firsts[2];
    // Cut exactly at a segment boundary, then in the middle of a segment.
    s.truncate_suffix(boundary).unwrap();
    assert_eq!(segment_firsts(dir.path()), firsts[..2]);
    assert_eq!(s.last_index(), boundary - 1);
    s.truncate_suffix(boundary - 2).unwrap();
    assert_eq!(s.last_index(), boundary - 3);
    s.truncate_suffix(1000).unwrap(); // beyond the end: nothing to do
    s.append(&entries(boundary - 2, boundary + 20, 4)).unwrap();
    drop(s);
    let s = FileStorage::open(dir.path(), opts(300, 300)).unwrap();
    let mut want = entries(1, boundary - 2, 1);
    want.extend(entries(boundary - 2, boundary + 20, 4));
    assert_eq!(s.entries(1, boundary + 20, u64::MAX).unwrap(), want);
    assert_eq!(s.term(boundary - 3).unwrap(), 1);
    assert_eq!(s.term(boundary - 2).unwrap(), 4);
    drop(s);
    // Truncating everything leaves an empty log that restarts at the same index.
    let mut s = FileStorage::open(dir.path(), opts(300, 300)).unwrap();
    s.truncate_suffix(1).unwrap();
    assert!(segment_files(dir.path()).is_empty());
    assert_eq!((s.first_index(), s.last_index()), (1, 0));
    assert!(matches!(s.term(1), Err(StorageError::Unavailable { .. })));
}

#[test]
fn headerless_last_segment_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut s = FileStorage::open(dir.path(), opts(4096, 0)).unwrap();
        s.append(&entries(1, 6, 1)).unwrap();
    }
    let stray = dir.path().join(LOG_DIR).join(segment::file_name(6));
    fs::write(&stray, b"RLWAL").unwrap();
    let mut s = FileStorage::open(dir.path(), opts(4096, 0)).unwrap();
    assert_eq!(s.last_index(), 5);
    assert!(!stray.exists());
    s.append(&entries(6, 8, 1)).unwrap();
    assert_eq!(s.entries(1, 8, u64::MAX).unwrap().len(), 7);
}

#[test]
fn damaged_header_in_front_of_valid_records_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut s = FileStorage::open(dir.path(), opts(4096, 0)).unwrap();
        s.append(&entries(1, 6, 1)).unwrap();
    }
    let seg = segment_files(dir.path())[0].clone();
    let mut bytes = fs::read(&seg).unwrap();
    bytes[3] ^= 0xff;
    fs::write(&seg, &bytes).unwrap();
    match FileStorage::open(dir.path(), opts(4096, 0)) {
        Err(StorageError::Corruption { path, offset, .. }) => {
            assert_eq!((path, offset), (seg, 0));
        }
        other => panic!("expected corruption, got {other:?}"),
    }
}

#[test]
fn hard_state_survives_reopen_and_unsafe_no_sync_still_writes() {
    let dir = tempfile::tempdir().unwrap();
    let hs = HardState {
        term: 9,
        voted_for: Some("node-3".into()),
    };
    {
        let o = FileStorageOptions {
            sync: SyncPolicy::UnsafeNoSync,
            ..opts(4096, 0)
        };
        let mut s = FileStorage::open(dir.path(), o).unwrap();
        s.set_hard_state(&hs).unwrap();
        s.append(&entries(1, 3, 9)).unwrap();
        s.sync().unwrap();
    }
    let s = FileStorage::open(dir.path(), FileStorageOptions::default()).unwrap();
    assert_eq!(s.hard_state(), hs);
    assert_eq!(s.last_index(), 2);
}

#[test]
fn oversized_entries_are_refused_before_writing() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = FileStorage::open(dir.path(), opts(4096, 0)).unwrap();
    let big = Entry::normal(2, 1, vec![0u8; segment::MAX_PAYLOAD_LEN]);
    let r = s.append(&[entry(1, 1), big]);
    assert!(matches!(r, Err(StorageError::InvalidRequest(_))));
    assert_eq!(s.last_index(), 0);
    assert!(segment_files(dir.path()).is_empty());
}
