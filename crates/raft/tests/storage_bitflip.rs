//! Bit flips in a log that was synced: recovery must never cut acknowledged entries as a
//! "torn tail". For every single-bit flip in the length, checksum and payload of every
//! record (in the last segment and in an earlier one) and in the segment headers (magic,
//! first index, the two "synced end" checkpoint slots), reopening must either give back
//! exactly the synced log, data included, or refuse with `Corruption` naming the damaged
//! file and offset. Also: a real torn tail past the checkpoint still recovers to the
//! synced prefix; when the checkpoint lags one sync (its write lost in a power cut), damage
//! to a record of that sync is still refused as long as a later record verifies; and
//! segments written in the first format (`RLWAL001`, no checkpoint) still open.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::{Path, PathBuf};

use raftlock_raft::{Entry, FileStorage, FileStorageOptions, Storage, StorageError, SyncPolicy};

/// Sizes chosen so that the log spans two segments, each written by several syncs.
const SEGMENT_SIZE: u64 = 200;
/// The batches, each followed by a `sync`.
const BATCHES: &[(u64, u64)] = &[(1, 3), (3, 6), (6, 8), (8, 9)];
/// Last index of the synced log.
const LAST: u64 = 8;

fn options(sync: SyncPolicy) -> FileStorageOptions {
    FileStorageOptions {
        sync,
        segment_size: SEGMENT_SIZE,
        cache_bytes: 0,
    }
}

fn entry(i: u64) -> Entry {
    // Lengths vary, so that a length flip rarely lands on another record's boundary.
    Entry::normal(
        i,
        1 + i / 4,
        format!("entry {i}:{}", "x".repeat((i % 3) as usize * 5)),
    )
}

fn entries(lo: u64, hi: u64) -> Vec<Entry> {
    (lo..hi).map(entry).collect()
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

/// Header length by the documented formats: 16 bytes for `RLWAL001`, 80 for `RLWAL002`
/// (magic, first index, two 32-byte checkpoint slots).
fn header_len(bytes: &[u8]) -> usize {
    match &bytes[..8] {
        b"RLWAL001" => 16,
        b"RLWAL002" => 80,
        other => panic!("unknown segment magic {other:?}"),
    }
}

/// A record's place in its file: start, and length of its payload.
#[derive(Clone, Copy, Debug)]
struct Rec {
    start: usize,
    payload: usize,
}

/// The records of a segment file, read with the documented framing
/// `[len u32][crc u32][payload of len bytes]`; a zero length ends the data.
fn records(bytes: &[u8]) -> Vec<Rec> {
    let mut out = Vec::new();
    let mut at = header_len(bytes);
    while at + 8 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        if len == 0 {
            break;
        }
        out.push(Rec {
            start: at,
            payload: len,
        });
        at += 8 + len;
    }
    out
}

/// The files of a log directory, to put back before each trial (open may repair files).
struct Pristine {
    dir: tempfile::TempDir,
    files: Vec<(PathBuf, Vec<u8>)>,
}

impl Pristine {
    fn capture(dir: tempfile::TempDir) -> Self {
        let files = fs::read_dir(dir.path().join("log"))
            .unwrap()
            .map(|e| {
                let p = e.unwrap().path();
                let bytes = fs::read(&p).unwrap();
                (p, bytes)
            })
            .collect();
        Pristine { dir, files }
    }

    fn restore(&self) {
        for e in fs::read_dir(self.dir.path().join("log")).unwrap() {
            fs::remove_file(e.unwrap().path()).unwrap();
        }
        for (p, bytes) in &self.files {
            fs::write(p, bytes).unwrap();
        }
    }

    fn bytes(&self, path: &Path) -> &[u8] {
        &self.files.iter().find(|(p, _)| p == path).unwrap().1
    }
}

/// Writes the synced log of [`BATCHES`]; returns the directory.
fn synced_log(sync: SyncPolicy) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut s = FileStorage::open(dir.path(), options(sync)).unwrap();
    for &(lo, hi) in BATCHES {
        s.append(&entries(lo, hi)).unwrap();
        s.sync().unwrap();
    }
    drop(s);
    dir
}

/// Opens the directory and checks that it holds exactly `1..=last` with its data, or that
/// open refused with corruption in `file` at an offset `offset_ok` accepts. Returns
/// whether it refused.
fn open_exact_or_refused(
    dir: &Path,
    sync: SyncPolicy,
    last: u64,
    file: &Path,
    offset_ok: impl Fn(u64) -> bool,
    what: &str,
) -> bool {
    match FileStorage::open(dir, options(sync)) {
        Ok(s) => {
            assert_eq!(s.last_index(), last, "{what}: silently shorter or longer");
            assert_eq!(
                s.entries(1, last + 1, u64::MAX).unwrap(),
                entries(1, last + 1),
                "{what}: data differs"
            );
            false
        }
        Err(StorageError::Corruption {
            path,
            offset,
            reason,
        }) => {
            assert_eq!(path, file, "{what}: wrong file named ({reason})");
            assert!(offset_ok(offset), "{what}: offset {offset} ({reason})");
            assert!(
                reason.contains("data directory"),
                "{what}: the error must tell the operator what to do: {reason}"
            );
            true
        }
        Err(other) => panic!("{what}: expected corruption or success, got {other}"),
    }
}

/// Which bytes of a record are flipped.
#[derive(Clone, Copy, PartialEq)]
enum Fields {
    /// Every bit of the length, checksum and payload.
    All,
    /// The length field only.
    Length,
}

fn flip_every_bit_of_every_record(sync: SyncPolicy, fields: Fields) {
    let pristine = Pristine::capture(synced_log(sync));
    let segs = segments(pristine.dir.path());
    assert_eq!(
        segs.len(),
        2,
        "the test wants a non-last and a last segment"
    );
    let mut refusals = 0;
    for seg in &segs {
        let recs = records(pristine.bytes(seg));
        assert!(recs.len() >= 3, "{}: {recs:?}", seg.display());
        for rec in &recs {
            let span = match fields {
                Fields::All => 8 + rec.payload,
                Fields::Length => 4,
            };
            for byte in rec.start..rec.start + span {
                for bit in 0..8 {
                    pristine.restore();
                    let mut bytes = pristine.bytes(seg).to_vec();
                    bytes[byte] ^= 1 << bit;
                    fs::write(seg, &bytes).unwrap();
                    let what = format!(
                        "{} record at {}: bit {bit} of byte {byte}",
                        seg.display(),
                        rec.start
                    );
                    // A damaged record is refused at its own offset.
                    let refused = open_exact_or_refused(
                        pristine.dir.path(),
                        sync,
                        LAST,
                        seg,
                        |o| o == rec.start as u64,
                        &what,
                    );
                    refusals += usize::from(refused);
                }
            }
        }
    }
    assert!(refusals > 0);
}

#[test]
fn every_bit_flip_in_a_synced_log_is_refused_never_cut() {
    flip_every_bit_of_every_record(SyncPolicy::UnsafeNoSync, Fields::All);
}

#[test]
fn every_length_bit_flip_with_fsync_and_preallocation_is_refused_never_cut() {
    flip_every_bit_of_every_record(SyncPolicy::Always, Fields::Length);
}

#[test]
fn bit_flips_in_segment_headers_lose_nothing() {
    let sync = SyncPolicy::UnsafeNoSync;
    let pristine = Pristine::capture(synced_log(sync));
    for seg in segments(pristine.dir.path()) {
        let len = header_len(pristine.bytes(&seg));
        for byte in 0..len {
            for bit in 0..8 {
                pristine.restore();
                let mut bytes = pristine.bytes(&seg).to_vec();
                bytes[byte] ^= 1 << bit;
                fs::write(&seg, &bytes).unwrap();
                let what = format!("{}: header bit {bit} of byte {byte}", seg.display());
                let refused =
                    open_exact_or_refused(pristine.dir.path(), sync, LAST, &seg, |o| o < 80, &what);
                // One slot of the checkpoint may be damaged: the other still holds a value
                // no higher than the truth, and nothing is lost.
                if byte >= 16 {
                    assert!(!refused, "{what}: a damaged checkpoint slot is not fatal");
                }
            }
        }
    }
}

/// What a crash leaves past the last sync: entries 9 and 10 appended but not synced, cut
/// at every byte (and, as after a power cut in pre-allocated space, zero-filled after the
/// cut). The synced prefix, and the complete unsynced records before the cut, come back.
fn torn_unsynced_tail(sync: SyncPolicy) {
    let dir = tempfile::tempdir().unwrap();
    let mut s = FileStorage::open(dir.path(), options(sync)).unwrap();
    for &(lo, hi) in BATCHES {
        s.append(&entries(lo, hi)).unwrap();
        s.sync().unwrap();
    }
    let last_seg = segments(dir.path()).pop().unwrap();
    let synced_end = records(&fs::read(&last_seg).unwrap())
        .last()
        .map(|r| r.start + 8 + r.payload)
        .unwrap();
    s.append(&entries(9, 11)).unwrap();
    drop(s);
    let pristine = Pristine::capture(dir);
    let last_seg = segments(pristine.dir.path()).pop().unwrap();
    let full = pristine.bytes(&last_seg).to_vec();
    let recs = records(&full);
    let data_end = recs.last().map(|r| r.start + 8 + r.payload).unwrap();
    for cut in synced_end..=data_end {
        for zero_fill in [false, true] {
            pristine.restore();
            let mut bytes = full[..cut].to_vec();
            if zero_fill {
                bytes.resize(full.len(), 0);
            }
            fs::write(&last_seg, &bytes).unwrap();
            let complete = recs
                .iter()
                .filter(|r| r.start + 8 + r.payload <= cut)
                .count() as u64;
            let first_in_seg = LAST + 2 - recs.len() as u64 + 1;
            let want = first_in_seg + complete - 1;
            assert!(want >= LAST);
            let what = format!("cut at {cut}, zero fill {zero_fill}");
            let mut s = FileStorage::open(pristine.dir.path(), options(sync))
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(s.last_index(), want, "{what}");
            assert_eq!(
                s.entries(1, want + 1, u64::MAX).unwrap(),
                entries(1, want + 1),
                "{what}"
            );
            // The log goes on from there, and a reopen keeps it.
            s.append(&entries(want + 1, 13)).unwrap();
            s.sync().unwrap();
            drop(s);
            let s = FileStorage::open(pristine.dir.path(), options(sync)).unwrap();
            assert_eq!(
                s.entries(1, 13, u64::MAX).unwrap(),
                entries(1, 13),
                "{what}"
            );
        }
    }
}

#[test]
fn torn_tail_past_the_checkpoint_recovers_the_synced_prefix() {
    torn_unsynced_tail(SyncPolicy::UnsafeNoSync);
}

#[test]
fn torn_tail_past_the_checkpoint_recovers_the_synced_prefix_with_fsync() {
    torn_unsynced_tail(SyncPolicy::Always);
}

/// The checkpoint is written after each fsync and reaches the disk with the next one, so a
/// power cut right after a sync can leave it one sync behind. Damage to a record of that
/// last synced batch is then past the checkpoint; the records after it still show that it
/// is not a torn write, wherever they start (a damaged length no longer points at them).
#[test]
fn damage_followed_by_valid_records_is_refused_even_past_a_lagging_checkpoint() {
    let sync = SyncPolicy::UnsafeNoSync;
    let dir = tempfile::tempdir().unwrap();
    let mut s = FileStorage::open(dir.path(), options(sync)).unwrap();
    s.append(&entries(1, 6)).unwrap();
    s.sync().unwrap();
    let last_seg = segments(dir.path()).pop().unwrap();
    let old_header = fs::read(&last_seg).unwrap()[..80].to_vec();
    s.append(&entries(6, 9)).unwrap();
    s.sync().unwrap();
    drop(s);
    // The last sync's checkpoint write is lost.
    let mut bytes = fs::read(&last_seg).unwrap();
    assert_eq!(&bytes[..8], b"RLWAL002");
    bytes[..80].copy_from_slice(&old_header);
    fs::write(&last_seg, &bytes).unwrap();
    let pristine = Pristine::capture(dir);
    let recs = records(&bytes);
    // Every record of the last batch but the very last one has a successor that verifies.
    let n = recs.len();
    for rec in &recs[n - 3..n - 1] {
        for byte in rec.start..rec.start + 8 + rec.payload {
            for bit in 0..8 {
                pristine.restore();
                let mut damaged = bytes.clone();
                damaged[byte] ^= 1 << bit;
                fs::write(&last_seg, &damaged).unwrap();
                let what = format!("record at {}: bit {bit} of byte {byte}", rec.start);
                match FileStorage::open(pristine.dir.path(), options(sync)) {
                    Err(StorageError::Corruption { path, offset, .. }) => {
                        assert_eq!(
                            (path, offset),
                            (last_seg.clone(), rec.start as u64),
                            "{what}"
                        );
                    }
                    Err(other) => panic!("{what}: {other}"),
                    Ok(s) => panic!("{what}: opened with last index {}", s.last_index()),
                }
            }
        }
    }
}

/// A record in the first format: CRC32C seeded with the segment's first index.
fn v1_record(buf: &mut Vec<u8>, first: u64, e: &Entry) {
    let mut payload = Vec::new();
    payload.extend_from_slice(&e.index.to_le_bytes());
    payload.extend_from_slice(&e.term.to_le_bytes());
    payload.push(0); // EntryKind::Normal
    payload.extend_from_slice(&e.data);
    let len = payload.len() as u32;
    let crc = crc32c::crc32c(&first.to_le_bytes());
    let crc = crc32c::crc32c_append(crc, &len.to_le_bytes());
    let crc = crc32c::crc32c_append(crc, &payload);
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(&crc.to_le_bytes());
    buf.extend_from_slice(&payload);
}

fn v1_segment(first: u64, es: &[Entry]) -> Vec<u8> {
    let mut buf = b"RLWAL001".to_vec();
    buf.extend_from_slice(&first.to_le_bytes());
    for e in es {
        v1_record(&mut buf, first, e);
    }
    buf
}

#[test]
fn segments_of_the_first_format_still_open_and_the_log_goes_on() {
    for sync in [SyncPolicy::UnsafeNoSync, SyncPolicy::Always] {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        fs::create_dir_all(&log).unwrap();
        fs::write(
            log.join(format!("{:020}.seg", 1)),
            v1_segment(1, &entries(1, 5)),
        )
        .unwrap();
        let last = log.join(format!("{:020}.seg", 5));
        let mut bytes = v1_segment(5, &entries(5, 8));
        // A torn tail of the old format is still cut off.
        bytes.extend_from_slice(&v1_segment(5, &entries(8, 9))[16..30]);
        fs::write(&last, &bytes).unwrap();
        let mut s = FileStorage::open(dir.path(), options(sync)).unwrap();
        assert_eq!(s.last_index(), 7);
        assert_eq!(s.entries(1, 8, u64::MAX).unwrap(), entries(1, 8));
        // Appends continue in the old segment, then roll into segments of the new format.
        s.append(&entries(8, 20)).unwrap();
        s.sync().unwrap();
        drop(s);
        let s = FileStorage::open(dir.path(), options(sync)).unwrap();
        assert_eq!(s.entries(1, 20, u64::MAX).unwrap(), entries(1, 20));
        let segs = segments(dir.path());
        assert_eq!(&fs::read(&segs[1]).unwrap()[..8], b"RLWAL001");
        assert_eq!(&fs::read(segs.last().unwrap()).unwrap()[..8], b"RLWAL002");
    }
}
