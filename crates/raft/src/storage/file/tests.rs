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
            membership: None,
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

/// Entries whose records all have the same size, so records written over a recycled or
/// truncated region line up with the old ones: the case where only the checksum seed, the
/// index check or the recovery cut keeps an old record from passing as data.
fn fixed(lo: Index, hi: Index, term: Term) -> Vec<Entry> {
    (lo..hi)
        .map(|i| Entry::normal(i, term, vec![b'a' + (i % 26) as u8; 40]))
        .collect()
}

fn file_len(path: &Path) -> u64 {
    fs::metadata(path).unwrap().len()
}

#[test]
fn appends_write_zeros_ahead_and_a_zero_tail_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let segment_size = 1 << 20;
    let mut s = FileStorage::open(dir.path(), opts(segment_size, 0)).unwrap();
    s.append(&fixed(1, 51, 1)).unwrap();
    s.sync().unwrap();
    let seg = segment_files(dir.path())[0].clone();
    let data_end =
        segment::SEGMENT_HEADER_LEN as u64 + 50 * segment::record_len(&fixed(1, 2, 1)[0]) as u64;
    assert_eq!(
        file_len(&seg),
        segment_size,
        "written ahead to the segment size"
    );
    assert!(fs::read(&seg).unwrap()[data_end as usize..]
        .iter()
        .all(|&b| b == 0));
    // A crash after the sync (or a clean stop) leaves the zero tail: it reads as the end
    // of the log and is kept.
    drop(s);
    let mut s = FileStorage::open(dir.path(), opts(segment_size, 0)).unwrap();
    assert_eq!(s.last_index(), 50);
    assert_eq!(s.entries(1, 51, u64::MAX).unwrap(), fixed(1, 51, 1));
    assert_eq!(file_len(&seg), segment_size, "the zero tail is not cut");
    s.append(&fixed(51, 61, 2)).unwrap();
    s.sync().unwrap();
    drop(s);
    let s = FileStorage::open(dir.path(), opts(segment_size, 0)).unwrap();
    let mut want = fixed(1, 51, 1);
    want.extend(fixed(51, 61, 2));
    assert_eq!(s.entries(1, 61, u64::MAX).unwrap(), want);
    // Without fsync there is nothing to gain: files grow as written.
    let dir = tempfile::tempdir().unwrap();
    let o = FileStorageOptions {
        sync: SyncPolicy::UnsafeNoSync,
        ..opts(segment_size, 0)
    };
    let mut s = FileStorage::open(dir.path(), o).unwrap();
    s.append(&fixed(1, 51, 1)).unwrap();
    assert_eq!(file_len(&segment_files(dir.path())[0]), data_end);
}

#[test]
fn torn_write_inside_a_preallocated_segment() {
    let pristine = tempfile::tempdir().unwrap();
    let segment_size = 1 << 16;
    {
        let mut s = FileStorage::open(pristine.path(), opts(segment_size, 0)).unwrap();
        s.append(&fixed(1, 21, 1)).unwrap();
        s.sync().unwrap();
        // The last batch is never synced: only such a write can be torn by a crash.
        s.append(&fixed(21, 26, 1)).unwrap();
    }
    let name = segment_files(pristine.path())[0]
        .file_name()
        .unwrap()
        .to_owned();
    let bytes = fs::read(pristine.path().join(LOG_DIR).join(&name)).unwrap();
    assert_eq!(bytes.len() as u64, segment_size);
    let rec = segment::record_len(&fixed(1, 2, 1)[0]);
    let at = |i: u64| segment::SEGMENT_HEADER_LEN + (i as usize - 1) * rec;
    let reopen = |damaged: &[u8], what: &str| {
        let work = tempfile::tempdir().unwrap();
        fs::create_dir_all(work.path().join(LOG_DIR)).unwrap();
        let seg = work.path().join(LOG_DIR).join(&name);
        fs::write(&seg, damaged).unwrap();
        let s = FileStorage::open(work.path(), opts(segment_size, 0))
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        (work, s, seg)
    };

    // The last batch cut short at any byte, zeros after it (pre-allocated space that the
    // write did not reach): the complete records before the cut survive.
    for cut in (at(21)..=at(26)).step_by(7) {
        let mut damaged = bytes.clone();
        damaged[cut..].fill(0);
        let complete = ((cut - segment::SEGMENT_HEADER_LEN) / rec) as u64;
        let (_work, s, _) = reopen(&damaged, &format!("cut at {cut}"));
        assert_eq!(s.last_index(), complete, "cut at {cut}");
        assert_eq!(
            s.entries(1, complete + 1, u64::MAX).unwrap(),
            fixed(1, complete + 1, 1)
        );
    }

    // The first page of the last batch was lost but later ones reached the disk: record 21
    // reads as zeros (end of data) and records 22..25 of this very segment follow it.
    // Recovery must cut them off: a new record 21 of the same size ends exactly where the
    // old record 22 starts, and that one would verify.
    let mut damaged = bytes.clone();
    damaged[at(21)..at(22)].fill(0);
    let (work, mut s, seg) = reopen(&damaged, "lost first page");
    assert_eq!(s.last_index(), 20);
    assert_eq!(
        file_len(&seg),
        at(21) as u64,
        "leftover records are cut off"
    );
    s.append(&fixed(21, 22, 1)).unwrap();
    s.sync().unwrap();
    drop(s);
    let s = FileStorage::open(work.path(), opts(segment_size, 0)).unwrap();
    assert_eq!(s.last_index(), 21, "old records 22..25 must not come back");
    drop(s);

    // Garbage in the pre-allocated space after intact records: not a torn record of ours,
    // but not zeros either; it is cut, the records stay.
    let mut damaged = bytes.clone();
    damaged[at(26) + 100..at(26) + 110].fill(0xEE);
    let (_work, s, seg) = reopen(&damaged, "garbage in the zero tail");
    assert_eq!(s.last_index(), 25);
    assert_eq!(file_len(&seg), at(26) as u64);
}

#[test]
fn the_same_damage_below_the_synced_end_is_refused() {
    // As in `torn_write_inside_a_preallocated_segment`, but the last batch was synced: its
    // records are acknowledged, and a lost first page there is damage, not a torn write.
    let dir = tempfile::tempdir().unwrap();
    let segment_size = 1 << 16;
    {
        let mut s = FileStorage::open(dir.path(), opts(segment_size, 0)).unwrap();
        s.append(&fixed(1, 21, 1)).unwrap();
        s.sync().unwrap();
        s.append(&fixed(21, 26, 1)).unwrap();
        s.sync().unwrap();
    }
    let seg = segment_files(dir.path())[0].clone();
    let rec = segment::record_len(&fixed(1, 2, 1)[0]);
    let at = |i: u64| segment::SEGMENT_HEADER_LEN + (i as usize - 1) * rec;
    let mut bytes = fs::read(&seg).unwrap();
    bytes[at(25)..].fill(0);
    fs::write(&seg, &bytes).unwrap();
    match FileStorage::open(dir.path(), opts(segment_size, 0)) {
        Err(StorageError::Corruption { path, offset, .. }) => {
            assert_eq!((path, offset), (seg, at(25) as u64));
        }
        other => panic!("expected corruption, got {other:?}"),
    }
}

#[test]
fn checkpoints_follow_syncs_rolls_truncations_and_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let rec = segment::record_len(&fixed(1, 2, 1)[0]) as u64;
    let at = |i: u64| segment::SEGMENT_HEADER_LEN as u64 + (i - 1) * rec;
    let synced = |s: &FileStorage| s.log.last_checkpoint().map(|c| (c.end, c.next));
    let mut s = FileStorage::open(dir.path(), opts(1 << 16, 0)).unwrap();
    s.append(&fixed(1, 11, 1)).unwrap();
    // Written but not synced: the checkpoint still says "nothing".
    assert_eq!(synced(&s), Some((at(1), 1)));
    s.sync().unwrap();
    assert_eq!(synced(&s), Some((at(11), 11)));
    // A truncation below it lowers it.
    s.truncate_suffix(6).unwrap();
    assert_eq!(synced(&s), Some((at(6), 6)));
    s.append(&fixed(6, 9, 2)).unwrap();
    drop(s);
    // Open takes what it recovered past the checkpoint as the log: it is recorded.
    let s = FileStorage::open(dir.path(), opts(1 << 16, 0)).unwrap();
    assert_eq!(s.last_index(), 8);
    assert_eq!(synced(&s), Some((at(9), 9)));
    drop(s);
    // A rolled segment's checkpoint covers all of it, in its file.
    let mut s = FileStorage::open(dir.path(), opts(400, 0)).unwrap();
    s.append(&fixed(9, 30, 2)).unwrap();
    s.sync().unwrap();
    drop(s);
    for path in segment_files(dir.path()) {
        let bytes = fs::read(&path).unwrap();
        let first = segment::parse_file_name(path.file_name().unwrap().to_str().unwrap()).unwrap();
        let header = segment::check_header(&bytes, first).unwrap();
        let scan = segment::scan(&bytes, header.len, first, 0, |_, _| {});
        let c = header.checkpoint.unwrap();
        assert_eq!(
            (c.end, c.next),
            (scan.data_end as u64, scan.next_index(first)),
            "{}",
            path.display()
        );
    }
}

#[test]
fn truncation_inside_a_preallocated_segment_leaves_no_old_records() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = FileStorage::open(dir.path(), opts(1 << 16, 0)).unwrap();
    s.append(&fixed(1, 31, 1)).unwrap();
    s.sync().unwrap();
    s.truncate_suffix(11).unwrap();
    // Same sizes and term: the new record 11 ends where the old record 12 began.
    s.append(&fixed(11, 12, 1)).unwrap();
    s.sync().unwrap();
    drop(s);
    let mut s = FileStorage::open(dir.path(), opts(1 << 16, 0)).unwrap();
    assert_eq!(s.last_index(), 11);
    s.append(&fixed(12, 15, 2)).unwrap();
    s.sync().unwrap();
    drop(s);
    let s = FileStorage::open(dir.path(), opts(1 << 16, 0)).unwrap();
    let mut want = fixed(1, 12, 1);
    want.extend(fixed(12, 15, 2));
    assert_eq!(s.entries(1, 15, u64::MAX).unwrap(), want);
}

/// Appends entries from `lo` until the log holds `hi - 1`, in batches of 5, with syncs.
fn append_fixed(s: &mut FileStorage, lo: Index, hi: Index, term: Term) {
    for chunk in fixed(lo, hi, term).chunks(5) {
        s.append(chunk).unwrap();
        s.sync().unwrap();
    }
}

/// The segment file that is the same file (inode) as `ino`.
fn segment_with_inode(dir: &Path, ino: u64) -> Option<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    segment_files(dir)
        .into_iter()
        .find(|p| fs::metadata(p).unwrap().ino() == ino)
}

/// Appends one entry at a time until the spare file has become a segment, then `more`
/// entries; returns the next index.
fn append_into_spare(s: &mut FileStorage, mut next: Index, more: u64, term: Term) -> Index {
    while s.log.has_spare() {
        append_fixed(s, next, next + 1, term);
        next += 1;
        assert!(next < 10_000, "the spare is never used");
    }
    append_fixed(s, next, next + more, term);
    next + more
}

#[test]
fn compacted_segment_is_recycled_and_its_old_records_are_never_replayed() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let spare = dir.path().join(LOG_DIR).join(log::SPARE_FILE);
    let big = 8192;
    let mut s = FileStorage::open(dir.path(), opts(big, 0)).unwrap();
    append_fixed(&mut s, 1, 601, 1);
    let firsts = segment_firsts(dir.path());
    assert!(firsts.len() >= 3, "{firsts:?}");
    let upto = firsts[1] - 1;
    s.save_snapshot(&snapshot(upto, 1)).unwrap();
    s.compact(upto).unwrap();
    // The compacted segment became the spare instead of being deleted.
    assert!(s.log.has_spare());
    assert_eq!(segment_firsts(dir.path())[0], firsts[1]);
    let spare_len = file_len(&spare);
    let spare_ino = fs::metadata(&spare).unwrap().ino();
    assert!(spare_len >= big, "a full segment: {spare_len}");
    drop(s);

    // Reopen with smaller segments: the recycled file is much larger than the data the new
    // segment receives, so old records of the first segment follow the new ones in the
    // same file. More appends roll again, leaving the recycled segment in the middle of
    // the log, closed by an end marker.
    let small = 1024;
    let mut s = FileStorage::open(dir.path(), opts(small, 0)).unwrap();
    assert!(s.log.has_spare(), "the spare is found again on open");
    let next = append_into_spare(&mut s, 601, 30, 2);
    assert!(!spare.exists());
    let recycled = segment_with_inode(dir.path(), spare_ino).expect("spare renamed into place");
    assert_eq!(file_len(&recycled), spare_len, "renamed, not rewritten");
    assert_ne!(segment_files(dir.path()).last(), Some(&recycled));
    drop(s);
    let s = FileStorage::open(dir.path(), opts(small, 0)).unwrap();
    assert_eq!((s.first_index(), s.last_index()), (firsts[1], next - 1));
    let mut want = fixed(firsts[1], 601, 1);
    want.extend(fixed(601, next, 2));
    assert_eq!(s.entries(firsts[1], next, u64::MAX).unwrap(), want);
    assert_eq!(
        file_len(&recycled),
        spare_len,
        "a middle segment is left as it is"
    );
    drop(s);

    // A recycled segment that is the last one when the process stops: old records follow
    // its new data directly; open stops at them and cuts them off.
    let dir = tempfile::tempdir().unwrap();
    let mut s = FileStorage::open(dir.path(), opts(big, 0)).unwrap();
    append_fixed(&mut s, 1, 601, 1);
    let last_first = *segment_firsts(dir.path()).last().unwrap();
    s.save_snapshot(&snapshot(last_first - 1, 1)).unwrap();
    s.compact(last_first - 1).unwrap();
    let spare = dir.path().join(LOG_DIR).join(log::SPARE_FILE);
    let spare_ino = fs::metadata(&spare).unwrap().ino();
    drop(s);
    let mut s = FileStorage::open(dir.path(), opts(small, 0)).unwrap();
    let next = append_into_spare(&mut s, 601, 2, 2);
    let recycled = segment_with_inode(dir.path(), spare_ino).unwrap();
    assert_eq!(segment_files(dir.path()).last(), Some(&recycled));
    assert!(file_len(&recycled) >= big);
    drop(s);
    let s = FileStorage::open(dir.path(), opts(small, 0)).unwrap();
    assert_eq!(s.last_index(), next - 1);
    assert_eq!(s.entries(601, next, u64::MAX).unwrap(), fixed(601, next, 2));
    assert!(file_len(&recycled) < big, "the old records were cut off");
}

#[test]
fn a_crash_before_the_recycled_segment_gets_records_loses_nothing() {
    // Roll into the spare, then "crash" before any record lands in it: the new segment
    // holds a header and old records only, and is dropped on open.
    let dir = tempfile::tempdir().unwrap();
    let mut s = FileStorage::open(dir.path(), opts(2048, 0)).unwrap();
    append_fixed(&mut s, 1, 101, 1);
    let firsts = segment_firsts(dir.path());
    s.save_snapshot(&snapshot(firsts[1] - 1, 1)).unwrap();
    s.compact(firsts[1] - 1).unwrap();
    drop(s);
    let spare = dir.path().join(LOG_DIR).join(log::SPARE_FILE);
    let next = dir.path().join(LOG_DIR).join(segment::file_name(101));
    let mut bytes = fs::read(&spare).unwrap();
    bytes[..segment::SEGMENT_HEADER_LEN].copy_from_slice(&segment::encode_header(101));
    fs::write(&next, &bytes).unwrap();
    fs::remove_file(&spare).unwrap();
    let mut s = FileStorage::open(dir.path(), opts(2048, 0)).unwrap();
    assert_eq!(s.last_index(), 100);
    assert!(!next.exists());
    append_fixed(&mut s, 101, 111, 1);
    drop(s);
    let s = FileStorage::open(dir.path(), opts(2048, 0)).unwrap();
    assert_eq!(s.last_index(), 110);
}
