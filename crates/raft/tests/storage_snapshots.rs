//! Streamed snapshots in `FileStorage`: a snapshot received in chunks or written by a
//! writer lives in a temp file until it is installed by rename; open removes leftovers of
//! a crash; chunks are read back at any offset, from a reader that outlives a newer
//! install; the membership of the install's metadata is kept (across a reopen), and files
//! of the format before membership (`RLSNAP01`) still open. `MemStorage` keeps the same
//! contract (the model test compares them).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use raftlock_raft::{
    load_initial_state, Entry, FileStorage, FileStorageOptions, MemStorage, Membership, NodeId,
    NodeInfo, SnapshotInfo, SnapshotLog, SnapshotMeta, SnapshotSource, SnapshotStream, Storage,
    StorageError, SyncPolicy,
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

/// A joint configuration (c is leaving, d joining) with a learner and member info with
/// metadata: every part a snapshot must keep.
fn joint() -> Membership {
    let ids = |s: &str| s.split_whitespace().map(NodeId::from).collect();
    let mut m = Membership::new(ids("a b d"), ids("e"));
    m.outgoing = ids("a b c");
    for (id, port) in [("a", 1), ("b", 2), ("c", 3), ("d", 4), ("e", 5)] {
        m.nodes.insert(
            NodeId::from(id),
            NodeInfo {
                address: format!("10.0.0.{port}:7000"),
                metadata: [
                    ("http".to_string(), format!("10.0.0.{port}:8000")),
                    ("zone".to_string(), format!("z{}", port % 2)),
                ]
                .into(),
            },
        );
    }
    assert!(m.is_joint() && m.validate().is_ok());
    m
}

fn with_membership(mut m: SnapshotMeta, membership: Membership) -> SnapshotMeta {
    m.membership = Some(membership.into());
    m
}

#[test]
fn a_built_snapshot_keeps_its_joint_membership_across_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let data = pattern(50_000);
    let snap = info(with_membership(meta(6, 3), joint()), &data);
    {
        let mut s = open(dir.path());
        s.append(
            &(1..=8)
                .map(|i| Entry::normal(i, 3, "y"))
                .collect::<Vec<_>>(),
        )
        .unwrap();
        let mut w = s.snapshot_writer().unwrap();
        w.write_all(&data).unwrap();
        let staged = w.finish().unwrap();
        s.install_snapshot(&snap, SnapshotSource::Staged(staged), SnapshotLog::Keep)
            .unwrap();
        assert_eq!(s.snapshot_info(), Some(snap.clone()));
        assert_eq!(
            s.snapshot_reader().unwrap().unwrap().info(),
            &snap,
            "a reader checks the file's membership against the installed one"
        );
    }
    let s = open(dir.path());
    let state = load_initial_state(&s).unwrap();
    assert_eq!(state.snapshot, Some(snap.clone()));
    assert_eq!(state.entries.len(), 8, "the log was kept");
    assert_eq!(s.snapshot_meta().unwrap().membership, Some(joint().into()));
    let loaded = s.load_snapshot().unwrap().unwrap();
    assert_eq!((loaded.meta, &loaded.data[..]), (snap.meta, &data[..]));
}

#[test]
fn a_received_snapshot_is_installed_with_the_membership_of_the_install() {
    for file in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let mut s: Box<dyn Storage> = if file {
            Box::new(open(dir.path()))
        } else {
            Box::new(MemStorage::new())
        };
        let data = pattern(10_000);
        // The chunks are written before the install's metadata is final: here they carry
        // none, and what the install says is what the storage keeps.
        receive(s.as_mut(), &meta(12, 2), &data, 999);
        let snap = info(with_membership(meta(12, 2), joint()), &data);
        s.install_snapshot(&snap, SnapshotSource::Received, SnapshotLog::Discard)
            .unwrap();
        assert_eq!(
            s.snapshot_info(),
            Some(snap.clone()),
            "file storage: {file}"
        );
        assert_eq!(
            s.load_snapshot().unwrap().unwrap().meta,
            snap.meta,
            "file storage: {file}"
        );
        if file {
            drop(s);
            let s = open(dir.path());
            assert_eq!(load_initial_state(&s).unwrap().snapshot, Some(snap));
            let mut all = Vec::new();
            SnapshotStream::new(s.snapshot_reader().unwrap().unwrap())
                .read_to_end(&mut all)
                .unwrap();
            assert_eq!(all, data);
        }
    }
}

#[test]
fn a_membership_that_breaks_the_rules_is_refused_before_anything_is_written() {
    for file in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let mut s: Box<dyn Storage> = if file {
            Box::new(open(dir.path()))
        } else {
            Box::new(MemStorage::new())
        };
        // No voters: decoding refuses it, so a file holding it could never be opened.
        let bad = Membership::new([], [NodeId::from("a")]);
        receive(s.as_mut(), &meta(4, 1), b"0123456789", 4);
        let refused = info(with_membership(meta(4, 1), bad), b"0123456789");
        assert!(matches!(
            s.install_snapshot(&refused, SnapshotSource::Received, SnapshotLog::Discard),
            Err(StorageError::InvalidRequest(_))
        ));
        assert_eq!(s.snapshot_info(), None, "file storage: {file}");
        // The received bytes are still there for a correct install.
        let good = info(with_membership(meta(4, 1), joint()), b"0123456789");
        s.install_snapshot(&good, SnapshotSource::Received, SnapshotLog::Discard)
            .unwrap();
        assert_eq!(s.snapshot_info(), Some(good), "file storage: {file}");
    }
}

/// Writes a snapshot file of the first format (`RLSNAP01`: a 40-byte header, then the
/// data) into the data directory `dir` by hand, as the code before membership wrote it.
fn write_rlsnap01(dir: &Path, last_index: u64, last_term: u64, data: &[u8]) -> PathBuf {
    let mut file = Vec::new();
    file.extend_from_slice(b"RLSNAP01");
    file.extend_from_slice(&last_index.to_le_bytes());
    file.extend_from_slice(&last_term.to_le_bytes());
    file.extend_from_slice(&(data.len() as u64).to_le_bytes());
    file.extend_from_slice(&crc32c::crc32c(data).to_le_bytes());
    let header_crc = crc32c::crc32c(&file);
    file.extend_from_slice(&header_crc.to_le_bytes());
    assert_eq!(file.len(), 40);
    file.extend_from_slice(data);
    let snaps = dir.join("snapshots");
    std::fs::create_dir_all(&snaps).unwrap();
    let path = snaps.join(format!("{last_index:020}-{last_term:020}.snap"));
    std::fs::write(&path, file).unwrap();
    path
}

#[test]
fn an_rlsnap01_snapshot_opens_with_no_membership_and_a_new_one_replaces_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = pattern(5_000);
    write_rlsnap01(dir.path(), 9, 3, &data);
    let mut s = open(dir.path());
    let old = info(meta(9, 3), &data);
    assert_eq!(load_initial_state(&s).unwrap().snapshot, Some(old.clone()));
    assert_eq!(s.snapshot_meta().unwrap().membership, None);
    assert_eq!(s.first_index(), 10, "the log starts after the snapshot");
    let reader = s.snapshot_reader().unwrap().unwrap();
    assert_eq!(reader.read_chunk(1234, 100).unwrap(), &data[1234..1334]);
    assert_eq!(s.load_snapshot().unwrap().unwrap().data, data);
    // Entries and a newer snapshot on top: written in the new format, with its membership.
    s.append(
        &(10..=12)
            .map(|i| Entry::normal(i, 3, "z"))
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let newer = info(with_membership(meta(11, 3), joint()), b"newer");
    let mut w = s.snapshot_writer().unwrap();
    w.write_all(b"newer").unwrap();
    let staged = w.finish().unwrap();
    s.install_snapshot(&newer, SnapshotSource::Staged(staged), SnapshotLog::Keep)
        .unwrap();
    assert_eq!(
        reader.read_chunk(0, 10).unwrap(),
        &data[..10],
        "a reader of the old file keeps reading it"
    );
    drop(s);
    let s = open(dir.path());
    assert_eq!(
        files(dir.path()),
        vec![format!("{:020}-{:020}.snap", 11, 3)]
    );
    assert_eq!(s.snapshot_info(), Some(newer));
    let head = std::fs::read(dir.path().join("snapshots").join(&files(dir.path())[0])).unwrap();
    assert_eq!(&head[..8], b"RLSNAP02");
}

#[test]
fn a_damaged_membership_block_fails_open_as_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let data = b"state bytes";
    {
        let mut s = open(dir.path());
        let mut w = s.snapshot_writer().unwrap();
        w.write_all(data).unwrap();
        let staged = w.finish().unwrap();
        let snap = info(with_membership(meta(3, 1), joint()), data);
        s.install_snapshot(&snap, SnapshotSource::Staged(staged), SnapshotLog::Discard)
            .unwrap();
    }
    let path = dir
        .path()
        .join("snapshots")
        .join(format!("{:020}-{:020}.snap", 3, 1));
    let good = std::fs::read(&path).unwrap();
    // The block follows the 48-byte header and the data.
    let block_at = 48 + data.len();
    assert_eq!(&good[block_at..block_at + 4], b"RLMB");
    let mut bad = good.clone();
    bad[block_at + 20] ^= 0x01;
    std::fs::write(&path, &bad).unwrap();
    match FileStorage::open(dir.path(), FileStorageOptions::default()) {
        Err(StorageError::Corruption {
            path: p, offset, ..
        }) => assert_eq!((p, offset), (path.clone(), block_at as u64)),
        other => panic!("expected corruption, got {other:?}"),
    }
    std::fs::write(&path, &good).unwrap();
    assert_eq!(
        open(dir.path()).snapshot_meta().unwrap().membership,
        Some(joint().into())
    );
}
