//! A snapshot install and a truncation in one write batch, carried out by `FileStorage`
//! and `MemStorage` exactly as the core asks: afterwards storage holds the core's log, so
//! the next append is accepted (the core decides whether the log is kept; storage never
//! guesses from its own contents).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use raftlock_raft::{
    load_initial_state, AppendEntries, Config, Entry, FileStorage, FileStorageOptions, HardState,
    Index, InstallSnapshot, MemStorage, Message, MessageBody, NodeId, PeerConfig, RaftCore,
    SeededRand, SnapshotInfo, SnapshotSource, SnapshotWrite, StagedSnapshot, Storage, SyncPolicy,
    Term, WriteBatch,
};

fn config() -> Config {
    let peers = (1..=3)
        .map(|i| PeerConfig {
            id: NodeId::from(format!("n{i}")),
            address: format!("127.0.0.1:{}", 7000 + i),
        })
        .collect();
    Config::new("n2", peers)
}

fn msg(from: usize, term: Term, body: MessageBody) -> Message {
    Message {
        from: NodeId::from(format!("n{from}")),
        to: NodeId::from("n2"),
        term,
        body,
    }
}

fn append(prev: (Index, Term), entries: &[(Index, Term)], commit: Index) -> MessageBody {
    MessageBody::AppendEntries(AppendEntries {
        prev_log_index: prev.0,
        prev_log_term: prev.1,
        entries: entries
            .iter()
            .map(|&(i, t)| Entry::normal(i, t, format!("{i}")))
            .collect(),
        leader_commit: commit,
    })
}

fn snapshot(index: Index, term: Term, data: &'static [u8]) -> MessageBody {
    MessageBody::InstallSnapshot(InstallSnapshot {
        meta: raftlock_raft::SnapshotMeta {
            last_index: index,
            last_term: term,
            membership: None,
        },
        offset: 0,
        data: Bytes::from_static(data),
        done: true,
        total_size: data.len() as u64,
        checksum: crc32c::crc32c(data),
    })
}

/// Carries out a write batch in the runtime's order: snapshot chunks and install, hard
/// state, truncation, append, one sync.
fn write(storage: &mut dyn Storage, w: &WriteBatch) {
    for write in &w.snapshot {
        match write {
            SnapshotWrite::Chunk { meta, offset, data } => {
                storage.write_snapshot_chunk(meta, *offset, data).unwrap();
            }
            SnapshotWrite::Install { info, log } => storage
                .install_snapshot(info, SnapshotSource::Received, *log)
                .unwrap(),
        }
    }
    if let Some(hs) = &w.hard_state {
        storage.set_hard_state(hs).unwrap();
    }
    if let Some(from) = w.log.truncate_from {
        storage.truncate_suffix(from).unwrap();
    }
    storage.append(&w.log.entries).unwrap();
    storage.sync().unwrap();
}

/// Drains every `Ready` of `core` into `storage` (writes durable at once, entries and
/// snapshots applied at once).
fn drain(core: &mut RaftCore, storage: &mut dyn Storage) {
    while core.has_ready() {
        let rd = core.ready();
        if let Some(w) = &rd.write {
            write(storage, w);
            core.on_persisted(w.seq);
        }
        if let Some(snap) = &rd.snapshot {
            core.on_applied(snap.meta.last_index);
        }
        if let Some(last) = rd.committed_entries.last() {
            core.on_applied(last.index);
        }
    }
}

/// (index, term) of every entry storage holds after its snapshot.
fn stored_tail(storage: &dyn Storage) -> Vec<(Index, Term)> {
    let snap = storage.snapshot_meta().map_or(0, |m| m.last_index);
    (snap + 1..=storage.last_index())
        .map(|i| (i, storage.term(i).unwrap()))
        .collect()
}

fn core_tail(core: &RaftCore) -> Vec<(Index, Term)> {
    (core.snapshot_index() + 1..=core.last_index())
        .map(|i| (i, core.term_at(i).unwrap()))
        .collect()
}

/// Storage starts at term 1 with entries 1..=10 of term 1. In one batch an old leader
/// (term 2) replaces entry 4 onwards and a newer one (term 3) sends a snapshot at (7, 1):
/// the core no longer holds 7 and discards its log, and storage, which still holds it,
/// must discard too. Then the new leader's entries 8 and 9 must be accepted.
fn truncating_append_and_install_in_one_batch(storage: &mut dyn Storage) {
    storage
        .set_hard_state(&HardState {
            term: 1,
            voted_for: None,
        })
        .unwrap();
    let entries: Vec<Entry> = (1..=10).map(|i| Entry::normal(i, 1, "old")).collect();
    storage.append(&entries).unwrap();
    storage.sync().unwrap();
    let initial = load_initial_state(&*storage).unwrap();
    let mut core = RaftCore::new(config(), initial, Box::new(SeededRand::new(1))).unwrap();
    core.step(msg(1, 2, append((3, 1), &[(4, 2)], 0)));
    core.step(msg(3, 3, snapshot(7, 1, b"state at 7")));
    drain(&mut core, storage);
    assert_eq!(core.last_index(), 7);
    assert_eq!(stored_tail(storage), core_tail(&core));
    core.step(msg(3, 3, append((7, 1), &[(8, 1), (9, 3)], 9)));
    drain(&mut core, storage);
    assert_eq!(core_tail(&core), vec![(8, 1), (9, 3)]);
    assert_eq!(stored_tail(storage), core_tail(&core));
    assert_eq!(core.applied_index(), 9);
}

#[test]
fn mem_storage_follows_the_core_through_a_truncation_and_an_install_in_one_batch() {
    truncating_append_and_install_in_one_batch(&mut MemStorage::new());
}

#[test]
fn file_storage_follows_the_core_through_a_truncation_and_an_install_in_one_batch() {
    let dir = tempfile::tempdir().unwrap();
    let opts = FileStorageOptions {
        sync: SyncPolicy::UnsafeNoSync,
        ..Default::default()
    };
    let mut s = FileStorage::open(dir.path(), opts.clone()).unwrap();
    truncating_append_and_install_in_one_batch(&mut s);
    let before = stored_tail(&s);
    drop(s);
    let s = FileStorage::open(dir.path(), opts).unwrap();
    assert_eq!(stored_tail(&s), before, "the same after a reopen");
}

/// Told to keep a log that does not hold the snapshot's last entry, storage refuses with a
/// typed error and changes nothing.
fn keep_without_the_entry_is_refused(storage: &mut dyn Storage) {
    let entries: Vec<Entry> = (1..=5).map(|i| Entry::normal(i, 1, "x")).collect();
    storage.append(&entries).unwrap();
    storage.sync().unwrap();
    let snap = |index, term| raftlock_raft::Snapshot {
        meta: raftlock_raft::SnapshotMeta {
            last_index: index,
            last_term: term,
            membership: None,
        },
        data: Bytes::from_static(b"s"),
    };
    for (index, term, held) in [(4, 2, Some(1)), (7, 1, None)] {
        let s = snap(index, term);
        let staged = SnapshotSource::Staged(StagedSnapshot::from_bytes(s.data.clone()));
        let keep = raftlock_raft::SnapshotLog::Keep;
        match storage.install_snapshot(&SnapshotInfo::of(&s), staged, keep) {
            Err(raftlock_raft::StorageError::SnapshotLogMismatch {
                index: i,
                term: t,
                held: h,
            }) => assert_eq!((i, t, h), (index, term, held)),
            other => panic!("expected SnapshotLogMismatch, got {other:?}"),
        }
        assert_eq!(storage.snapshot_meta(), None, "nothing installed");
        assert_eq!((storage.first_index(), storage.last_index()), (1, 5));
    }
}

#[test]
fn mem_storage_refuses_to_keep_a_log_without_the_snapshot_entry() {
    keep_without_the_entry_is_refused(&mut MemStorage::new());
}

#[test]
fn file_storage_refuses_to_keep_a_log_without_the_snapshot_entry() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = FileStorage::open(dir.path(), FileStorageOptions::default()).unwrap();
    keep_without_the_entry_is_refused(&mut s);
}
