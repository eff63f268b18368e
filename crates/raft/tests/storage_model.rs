//! Model test: random operation sequences run against [`FileStorage`] (with tiny segments
//! and a tiny cache, so segment rolls, whole-segment compaction and disk reads are all
//! exercised) and against [`MemStorage`], the reference; after every step every observable
//! (indices, hard state, snapshot, every term, many entry ranges, every error) must agree.
//! Reopening the `FileStorage` (after a sync) must not change anything.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::Path;

use bytes::Bytes;
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use raftlock_raft::{
    Entry, FileStorage, FileStorageOptions, HardState, Index, MemStorage, NodeId, Snapshot,
    SnapshotInfo, SnapshotLog, SnapshotMeta, SnapshotSource, Storage, StorageError, SyncPolicy,
    Term,
};

#[derive(Debug, Clone)]
enum Op {
    /// Append entries with these data sizes; `bump` raises the term; `gap` makes the batch
    /// start one index too far (both must refuse it).
    Append {
        sizes: Vec<usize>,
        bump: Term,
        gap: bool,
    },
    /// Truncate from a point chosen by `sel`; `invalid` aims at or below the snapshot.
    Truncate {
        sel: u64,
        invalid: bool,
    },
    /// Compact up to a point chosen by `sel` (sometimes beyond the snapshot).
    Compact {
        sel: u64,
    },
    /// Save a snapshot: 0 = at a log index with its term (log kept), 1 = beyond the end,
    /// 2 = at a log index with another term (log discarded), 3 = not newer (refused).
    Snapshot {
        kind: u8,
        sel: u64,
        data: Vec<u8>,
    },
    /// Stream a snapshot (placed as for `Snapshot`) through `snapshot_writer` in pieces of
    /// `piece` bytes and install it; `log`: 0 = keep, 1 = discard, 2 = keep exactly when the
    /// log holds the entry (keeping otherwise must be refused alike).
    Stream {
        kind: u8,
        sel: u64,
        data: Vec<u8>,
        piece: usize,
        log: u8,
    },
    /// Receive a snapshot in chunks of `chunk` bytes and install it (`log` as for
    /// `Stream`); `stray` also sends a chunk at a wrong offset (refused alike), `abandon`
    /// stops before the install (the next transfer starts over).
    Receive {
        kind: u8,
        sel: u64,
        data: Vec<u8>,
        chunk: usize,
        log: u8,
        stray: bool,
        abandon: bool,
    },
    HardState {
        term: Term,
        vote: Option<u8>,
    },
    Sync,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    let size = prop_oneof![6 => 0usize..40, 1 => 0usize..400];
    prop_oneof![
        8 => (vec(size, 0..8), prop_oneof![5 => Just(0u64), 1 => 1u64..3], proptest::bool::weighted(0.05))
            .prop_map(|(sizes, bump, gap)| Op::Append { sizes, bump, gap }),
        2 => (any::<u64>(), proptest::bool::weighted(0.1))
            .prop_map(|(sel, invalid)| Op::Truncate { sel, invalid }),
        2 => any::<u64>().prop_map(|sel| Op::Compact { sel }),
        2 => (0u8..4, any::<u64>(), vec(any::<u8>(), 0..64))
            .prop_map(|(kind, sel, data)| Op::Snapshot { kind, sel, data }),
        2 => (0u8..4, any::<u64>(), vec(any::<u8>(), 0..300), 1usize..100, 0u8..3)
            .prop_map(|(kind, sel, data, piece, log)| Op::Stream { kind, sel, data, piece, log }),
        2 => (
            (0u8..4, any::<u64>(), vec(any::<u8>(), 0..300)),
            (1usize..100, 0u8..3, proptest::bool::weighted(0.2), proptest::bool::weighted(0.2)),
        )
            .prop_map(|((kind, sel, data), (chunk, log, stray, abandon))| Op::Receive {
                kind,
                sel,
                data,
                chunk,
                log,
                stray,
                abandon,
            }),
        1 => (0u64..10, option::of(0u8..3)).prop_map(|(term, vote)| Op::HardState { term, vote }),
        1 => Just(Op::Sync),
        2 => Just(Op::Reopen),
    ]
}

/// Errors compared by kind (and by the indices they report, which are part of the contract).
#[derive(Debug, PartialEq)]
enum ErrKind {
    Compacted(Index, Index),
    Unavailable(Index, Index),
    Invalid,
    LogMismatch(Index, Term, Option<Term>),
}

fn kind<T>(r: Result<T, StorageError>) -> Result<T, ErrKind> {
    r.map_err(|e| match e {
        StorageError::Compacted {
            requested,
            first_available,
        } => ErrKind::Compacted(requested, first_available),
        StorageError::Unavailable {
            requested,
            last_index,
        } => ErrKind::Unavailable(requested, last_index),
        StorageError::InvalidRequest(_) => ErrKind::Invalid,
        StorageError::SnapshotLogMismatch { index, term, held } => {
            ErrKind::LogMismatch(index, term, held)
        }
        other => panic!("unexpected storage error: {other}"),
    })
}

fn options(cache_bytes: usize, sync: SyncPolicy) -> FileStorageOptions {
    FileStorageOptions {
        sync,
        segment_size: 512,
        cache_bytes,
    }
}

fn data(index: Index, term: Term, size: usize) -> Bytes {
    let seed = format!("{index}/{term}:");
    seed.bytes().cycle().take(size).collect::<Vec<u8>>().into()
}

/// Compares everything observable. `probe` varies the byte caps tried.
fn check(file: &FileStorage, mem: &MemStorage, probe: u64) {
    assert_eq!(file.first_index(), mem.first_index(), "first_index");
    assert_eq!(file.last_index(), mem.last_index(), "last_index");
    assert_eq!(file.hard_state(), mem.hard_state(), "hard_state");
    assert_eq!(file.snapshot_meta(), mem.snapshot_meta(), "snapshot_meta");
    assert_eq!(file.snapshot_info(), mem.snapshot_info(), "snapshot_info");
    assert_eq!(file.load_snapshot().unwrap(), mem.load_snapshot().unwrap());
    if let Some(info) = mem.snapshot_info() {
        let (f, m) = (
            file.snapshot_reader().unwrap().unwrap(),
            mem.snapshot_reader().unwrap().unwrap(),
        );
        assert_eq!(f.info(), m.info());
        let size = info.size;
        for (offset, len) in [(0, size), (probe % (size + 1), 0), (size / 3, size / 2)] {
            assert_eq!(
                f.read_chunk(offset, len).unwrap(),
                m.read_chunk(offset, len).unwrap(),
                "chunk at {offset} of {len} bytes"
            );
        }
        assert_eq!(
            kind(f.read_chunk(size, 1)),
            kind(m.read_chunk(size, 1)),
            "past the end"
        );
    }
    let (first, last) = (mem.first_index(), mem.last_index());
    for i in 0..=last + 2 {
        assert_eq!(kind(file.term(i)), kind(mem.term(i)), "term({i})");
    }
    let both = |lo: Index, hi: Index, max: u64| {
        assert_eq!(
            kind(file.entries(lo, hi, max)),
            kind(mem.entries(lo, hi, max)),
            "entries({lo}, {hi}, {max})"
        );
    };
    let cap = probe % 700;
    for lo in first.saturating_sub(1)..=last + 1 {
        both(lo, last + 1, u64::MAX);
        both(lo, lo + 1, u64::MAX);
        both(lo, last + 2, u64::MAX);
        both(lo, last + 1, cap);
        both(lo, lo + 3, cap / 3);
    }
    for hi in first..=last + 2 {
        both(first, hi, u64::MAX);
    }
    both(last + 1, last + 1, 0);
}

/// Where a snapshot goes, by `kind`: 0 = at a log index with its term, 1 = beyond the end,
/// 2 = at a log index with another term, 3 = not newer than the current one.
fn place_snapshot(mem: &MemStorage, kind: u8, sel: u64) -> SnapshotMeta {
    let snap = mem.snapshot_meta().unwrap_or_default();
    let last = mem.last_index();
    let last_term = mem.term(last).unwrap();
    let lo = snap.last_index.max(mem.first_index().saturating_sub(1)) + 1;
    // Often the very last entry: compaction then empties all but the last segment.
    let in_log = (lo <= last).then(|| {
        if sel.is_multiple_of(3) {
            last
        } else {
            lo + sel % (last - lo + 1)
        }
    });
    let (last_index, last_term) = match (kind, in_log) {
        (0, Some(i)) => (i, mem.term(i).unwrap()),
        (2, Some(i)) => (i, mem.term(i).unwrap() + 1),
        (3, _) => (sel % (snap.last_index + 1), 1),
        _ => (last + 1 + sel % 4, last_term + sel % 2),
    };
    SnapshotMeta {
        last_index,
        last_term,
        membership: None,
    }
}

/// 0 = keep, 1 = discard, 2 = keep exactly when the log holds the snapshot's last entry.
fn snapshot_log(mem: &MemStorage, meta: &SnapshotMeta, log: u8) -> SnapshotLog {
    let holds = meta.last_index >= mem.first_index()
        && mem.term(meta.last_index).ok() == Some(meta.last_term);
    match log {
        0 => SnapshotLog::Keep,
        1 => SnapshotLog::Discard,
        _ if holds => SnapshotLog::Keep,
        _ => SnapshotLog::Discard,
    }
}

fn info_of(meta: &SnapshotMeta, data: &[u8]) -> SnapshotInfo {
    SnapshotInfo {
        meta: meta.clone(),
        size: data.len() as u64,
        checksum: crc32c::crc32c(data),
    }
}

fn run(ops: Vec<Op>, cache_bytes: usize, sync: SyncPolicy, dir: &Path) {
    let mut file = Some(FileStorage::open(dir, options(cache_bytes, sync)).unwrap());
    let mut mem = MemStorage::new();
    for (step, op) in ops.into_iter().enumerate() {
        let f = file.as_mut().unwrap();
        let last = mem.last_index();
        let last_term = mem.term(last).unwrap();
        let snap = mem.snapshot_meta().unwrap_or_default();
        match op {
            Op::Append { sizes, bump, gap } => {
                let start = last + 1 + u64::from(gap);
                let term = last_term + bump;
                let batch: Vec<Entry> = sizes
                    .iter()
                    .zip(start..)
                    .map(|(&size, i)| Entry::normal(i, term, data(i, term, size)))
                    .collect();
                assert_eq!(kind(f.append(&batch)), kind(mem.append(&batch)));
            }
            Op::Truncate { sel, invalid } => {
                let from = if invalid {
                    sel % (snap.last_index + 1)
                } else {
                    snap.last_index + 1 + sel % (last - snap.last_index + 2)
                };
                assert_eq!(
                    kind(f.truncate_suffix(from)),
                    kind(mem.truncate_suffix(from))
                );
            }
            Op::Compact { sel } => {
                let upto = match sel % 4 {
                    0 | 1 => snap.last_index,
                    2 => snap.last_index + 1, // refused
                    _ => (sel >> 2) % (snap.last_index + 1),
                };
                let r = kind(f.compact(upto));
                if r.is_ok() {
                    // FileStorage drops whole segments only: let the model drop the same.
                    mem.compact(f.first_index() - 1).unwrap();
                } else {
                    assert_eq!(r, kind(mem.compact(upto)));
                }
            }
            Op::Snapshot { kind: k, sel, data } => {
                let s = Snapshot {
                    meta: place_snapshot(&mem, k, sel),
                    data: data.into(),
                };
                assert_eq!(kind(f.save_snapshot(&s)), kind(mem.save_snapshot(&s)));
            }
            Op::Stream {
                kind: k,
                sel,
                data,
                piece,
                log,
            } => {
                let meta = place_snapshot(&mem, k, sel);
                let log = snapshot_log(&mem, &meta, log);
                let info = info_of(&meta, &data);
                let mut results = Vec::new();
                for s in [f as &mut dyn Storage, &mut mem] {
                    let mut w = s.snapshot_writer().unwrap();
                    for p in data.chunks(piece) {
                        w.write_all(p).unwrap();
                    }
                    assert_eq!(w.written(), data.len() as u64);
                    let staged = w.finish().unwrap();
                    results.push(kind(s.install_snapshot(
                        &info,
                        SnapshotSource::Staged(staged),
                        log,
                    )));
                }
                assert_eq!(results[0], results[1], "install of a streamed snapshot");
            }
            Op::Receive {
                kind: k,
                sel,
                data,
                chunk,
                log,
                stray,
                abandon,
            } => {
                let meta = place_snapshot(&mem, k, sel);
                let log = snapshot_log(&mem, &meta, log);
                let info = info_of(&meta, &data);
                let mut results = Vec::new();
                for s in [f as &mut dyn Storage, &mut mem] {
                    let mut offset = 0u64;
                    s.write_snapshot_chunk(&meta, 0, &[]).unwrap();
                    for p in data.chunks(chunk) {
                        s.write_snapshot_chunk(&meta, offset, p).unwrap();
                        offset += p.len() as u64;
                        if stray {
                            // A chunk that does not continue the transfer is refused.
                            assert_eq!(
                                kind(s.write_snapshot_chunk(&meta, offset + 1, b"x")),
                                Err(ErrKind::Invalid)
                            );
                        }
                    }
                    if !abandon {
                        results.push(kind(s.install_snapshot(
                            &info,
                            SnapshotSource::Received,
                            log,
                        )));
                    }
                }
                if !abandon {
                    assert_eq!(results[0], results[1], "install of a received snapshot");
                }
            }
            Op::HardState { term, vote } => {
                let hs = HardState {
                    term,
                    voted_for: vote.map(|v| NodeId::from(format!("node-{v}"))),
                };
                f.set_hard_state(&hs).unwrap();
                mem.set_hard_state(&hs).unwrap();
            }
            Op::Sync => f.sync().unwrap(),
            Op::Reopen => {
                f.sync().unwrap();
                drop(file.take());
                file = Some(FileStorage::open(dir, options(cache_bytes, sync)).unwrap());
            }
        }
        check(file.as_ref().unwrap(), &mem, step as u64 * 97 + 13);
    }
    // Whatever the sequence, a final reopen sees the same state.
    file.as_mut().unwrap().sync().unwrap();
    drop(file.take());
    let f = FileStorage::open(dir, options(cache_bytes, sync)).unwrap();
    check(&f, &mem, 1);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn file_storage_behaves_like_mem_storage(
        ops in vec(op(), 1..40),
        cache_bytes in prop_oneof![Just(0usize), Just(300), Just(1 << 20)],
        // The model never crashes the machine, so fsync changes nothing it can see; it runs
        // in a quarter of the cases to cover those code paths without slowing the rest.
        sync in prop_oneof![3 => Just(SyncPolicy::UnsafeNoSync), 1 => Just(SyncPolicy::Always)],
    ) {
        let dir = tempfile::tempdir().unwrap();
        run(ops, cache_bytes, sync, dir.path());
    }
}
