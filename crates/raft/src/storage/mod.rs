//! Durable state: the [`Storage`] trait and its implementations, [`FileStorage`] (segmented,
//! checksummed, crash-safe files) and [`MemStorage`] (for tests and benchmarks).
//!
//! # Contract
//!
//! A storage holds the hard state (term and vote), the latest snapshot and the log that
//! follows it. The log is a contiguous run of entries `first_index() ..= last_index()`;
//! when it is empty, `last_index()` is the snapshot's index and `first_index()` the one
//! after it.
//!
//! Durability is explicit so that the runtime can do *group commit*: [`Storage::append`]
//! writes entries but does not make them durable; [`Storage::sync`] makes everything
//! written so far durable with one flush. Nothing may be acknowledged to another node
//! before the `sync` that covers it returns. [`Storage::set_hard_state`],
//! [`Storage::truncate_suffix`], [`Storage::install_snapshot`] and
//! [`Storage::save_snapshot`] are durable when they return (they are rare, and ordering
//! them with later appends matters for safety).
//!
//! Snapshots are streamed, never required whole in memory (`snapshot.rs`): a new one is
//! written through a [`SnapshotWriter`] (the node's own) or in chunks with
//! [`Storage::write_snapshot_chunk`] (one received from the leader) into a temporary
//! place, then installed atomically with [`Storage::install_snapshot`]; the current one is
//! read at any offset through a [`SnapshotReader`]. The `Bytes` forms
//! [`Storage::save_snapshot`] and [`Storage::load_snapshot`] are built on these.
//!
//! Every implementation must pass the same model tests (`tests/storage_model.rs`).

mod file;
mod memory;
mod snapshot;

use std::io::{Read, Write};
use std::sync::Arc;

pub use file::{FileStorage, FileStorageOptions, SyncPolicy};
pub use memory::MemStorage;
pub use snapshot::{
    SnapshotReader, SnapshotSource, SnapshotStream, SnapshotWriter, StagedSnapshot,
};

pub use crate::core::SnapshotLog;
use crate::error::StorageError;
use crate::types::{Entry, HardState, Index, Snapshot, SnapshotInfo, SnapshotMeta, Term};

/// Durable storage of a node's Raft state (the original's `storage.Storage`).
///
/// Methods take `&mut self` for writes: the runtime owns the storage from one thread and
/// serializes access. Errors carry the path and offset involved.
pub trait Storage: Send + 'static {
    /// The persisted term and vote (default values on a fresh store).
    fn hard_state(&self) -> HardState;

    /// Persists term and vote; durable when it returns.
    fn set_hard_state(&mut self, state: &HardState) -> Result<(), StorageError>;

    /// First index held in the log (`snapshot index + 1` when nothing was appended since).
    fn first_index(&self) -> Index;

    /// Last index held: the last log entry's, or the snapshot's when the log is empty.
    fn last_index(&self) -> Index;

    /// Term of the entry at `index`. Works for `first_index() - 1` when that is the
    /// snapshot's index, and for index 0 (term 0).
    fn term(&self, index: Index) -> Result<Term, StorageError>;

    /// Entries in `[lo, hi)`, stopping early once `max_bytes` (by [`Entry::size_hint`]) is
    /// reached; at least one entry is returned when the range is not empty.
    /// Fails with [`StorageError::Compacted`] below `first_index()` and
    /// [`StorageError::Unavailable`] past `last_index()`.
    fn entries(&self, lo: Index, hi: Index, max_bytes: u64) -> Result<Vec<Entry>, StorageError>;

    /// Appends entries; the first must have index `last_index() + 1`, the rest must follow
    /// without gaps and with non-decreasing terms. Not durable until [`Storage::sync`].
    fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError>;

    /// [`Storage::append`] of entries the caller gives up, as the runtime does: storage
    /// that keeps entries in memory takes them without copying each one. The default
    /// appends them by reference.
    fn append_owned(&mut self, entries: Vec<Entry>) -> Result<(), StorageError> {
        self.append(&entries)
    }

    /// Removes every entry with index `>= from` (conflicting entries, Raft §5.3); durable
    /// when it returns. `from` must be above the snapshot index.
    fn truncate_suffix(&mut self, from: Index) -> Result<(), StorageError>;

    /// Makes every write so far durable (one flush for a whole batch: group commit).
    fn sync(&mut self) -> Result<(), StorageError>;

    /// The latest snapshot (which log prefix it replaces, its size and checksum), if any.
    fn snapshot_info(&self) -> Option<SnapshotInfo>;

    /// Metadata of the latest snapshot, if any.
    fn snapshot_meta(&self) -> Option<SnapshotMeta> {
        self.snapshot_info().map(|info| info.meta)
    }

    /// A reader of the latest snapshot, if any: chunks to send to followers, and the whole
    /// of it (through [`SnapshotStream`]) to restore the state machine. It keeps reading
    /// that snapshot after a newer one is installed, and can be used from any thread.
    fn snapshot_reader(&self) -> Result<Option<Arc<dyn SnapshotReader>>, StorageError>;

    /// A writer for a new snapshot the node builds: the state machine streams into it (on
    /// its own thread; the writer does not borrow the storage), then
    /// [`SnapshotWriter::finish`] makes it durable and [`Storage::install_snapshot`] with
    /// [`SnapshotSource::Staged`] installs it. `FileStorage` writes a temporary file in the
    /// data directory, deleted if the writer is dropped and by `open` after a crash.
    fn snapshot_writer(&self) -> Result<Box<dyn SnapshotWriter>, StorageError>;

    /// Writes a chunk of the snapshot `meta` received from the leader, at `offset` of its
    /// data, into a temporary place (a `.tmp` file for `FileStorage`). Offset 0 starts the
    /// snapshot anew, dropping whatever was being received; any other offset must follow
    /// the bytes received so far of the same snapshot, or the call is refused with
    /// [`StorageError::InvalidRequest`]. Not durable: [`Storage::install_snapshot`] with
    /// [`SnapshotSource::Received`] makes it so. Nothing received survives a restart.
    fn write_snapshot_chunk(
        &mut self,
        meta: &SnapshotMeta,
        offset: u64,
        data: &[u8],
    ) -> Result<(), StorageError>;

    /// Installs the snapshot `info` describes from `source`, durably, replacing the
    /// previous one, and keeps or discards the log as `log` says (the core's decision:
    /// storage follows it and never guesses). The bytes must have `info`'s size and
    /// checksum. `info.meta` is stored as given, its membership included, whatever the
    /// metadata of the chunks of a received snapshot said; [`Storage::snapshot_info`] (and
    /// after a restart, [`load_initial_state`]) returns it. `FileStorage` writes the
    /// membership and the file's header, fsyncs it, renames it into place and fsyncs the
    /// directory: a crash leaves the old snapshot or the new one.
    ///
    /// With [`SnapshotLog::Keep`] the log must hold the snapshot's last entry with its
    /// term, otherwise the call fails with [`StorageError::SnapshotLogMismatch`]; with
    /// [`SnapshotLog::Discard`] the log restarts right after the snapshot. A snapshot not
    /// newer than the current one, bytes that do not match `info`, a received snapshot
    /// that is not the one being received (by index and term), or a membership that
    /// breaks [`Membership::validate`](crate::membership::Membership::validate) are
    /// refused with [`StorageError::InvalidRequest`]. A refusal leaves the snapshot and the log as they
    /// were (a received snapshot whose bytes do not match is dropped: the transfer starts
    /// over).
    fn install_snapshot(
        &mut self,
        info: &SnapshotInfo,
        source: SnapshotSource,
        log: SnapshotLog,
    ) -> Result<(), StorageError>;

    /// Loads the latest snapshot into memory, if any (for small state machines and tests;
    /// the runtime streams it with [`Storage::snapshot_reader`]). The default reads it
    /// through the reader and checks its checksum.
    fn load_snapshot(&self) -> Result<Option<Snapshot>, StorageError> {
        let Some(reader) = self.snapshot_reader()? else {
            return Ok(None);
        };
        let meta = reader.info().meta.clone();
        let mut data = Vec::new();
        SnapshotStream::new(reader)
            .read_to_end(&mut data)
            .map_err(|e| snapshot::storage_error(e, "read snapshot"))?;
        Ok(Some(Snapshot {
            meta,
            data: data.into(),
        }))
    }

    /// Stores a snapshot held in memory durably and replaces the previous one. If the log
    /// holds the snapshot's last entry with the same term, the log is kept (entries after
    /// it remain valid, Raft §7); otherwise the whole log is discarded. A snapshot not
    /// newer than the current one is refused with [`StorageError::InvalidRequest`].
    ///
    /// For callers that know nothing else about the log; the runtime installs with
    /// [`Storage::install_snapshot`], saying itself what happens to the log. The default
    /// streams the bytes through [`Storage::snapshot_writer`].
    fn save_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), StorageError> {
        let (index, term) = (snapshot.meta.last_index, snapshot.meta.last_term);
        let holds = index >= self.first_index() && self.term(index).ok() == Some(term);
        let log = if holds {
            SnapshotLog::Keep
        } else {
            SnapshotLog::Discard
        };
        let mut writer = self.snapshot_writer()?;
        writer
            .write_all(&snapshot.data)
            .map_err(|e| snapshot::storage_error(e, "write snapshot"))?;
        let staged = writer.finish()?;
        let info = SnapshotInfo {
            meta: snapshot.meta.clone(),
            size: staged.size(),
            checksum: staged.checksum(),
        };
        self.install_snapshot(&info, SnapshotSource::Staged(staged), log)
    }

    /// Allows the storage to drop log entries up to and including `upto`, which must not
    /// exceed the snapshot index. Implementations may keep some (FileStorage drops whole
    /// segments only); `first_index()` tells what remains.
    fn compact(&mut self, upto: Index) -> Result<(), StorageError>;

    /// Whether every write returns in microseconds without blocking (the state is in
    /// memory). The runtime then writes on its event loop instead of handing each batch to
    /// a storage thread, which saves two thread switches per batch. Default `false`: a
    /// storage that touches a disk must keep its fsyncs off the event loop.
    fn is_in_memory(&self) -> bool {
        false
    }
}

/// Reads everything a node needs to start from `storage`: hard state, the latest snapshot
/// and the log. The runtime restores the application from the snapshot and builds its
/// [`RaftCore`](crate::RaftCore) from the result; committed entries after the snapshot are
/// applied again once the node learns the commit index.
pub fn load_initial_state<S: Storage + ?Sized>(
    storage: &S,
) -> Result<crate::types::InitialState, StorageError> {
    let snapshot = storage.snapshot_info();
    let (first, last) = (storage.first_index(), storage.last_index());
    let entries = if last >= first {
        storage.entries(first, last + 1, u64::MAX)?
    } else {
        Vec::new()
    };
    Ok(crate::types::InitialState {
        hard_state: storage.hard_state(),
        snapshot,
        entries,
    })
}

/// Checks the shape of an append against the log's current last index and term, so that
/// every implementation refuses the same malformed requests before writing anything.
pub(crate) fn check_append(
    last_index: Index,
    last_term: Term,
    entries: &[Entry],
) -> Result<(), StorageError> {
    let mut prev_term = last_term;
    for (expected, e) in (last_index + 1..).zip(entries) {
        if e.index != expected {
            return Err(StorageError::InvalidRequest(format!(
                "append of index {} where {} was expected (no gaps or overwrites; truncate first)",
                e.index, expected
            )));
        }
        if e.term < prev_term {
            return Err(StorageError::InvalidRequest(format!(
                "append of index {} with term {} after term {} (terms never decrease along the log)",
                e.index, e.term, prev_term
            )));
        }
        prev_term = e.term;
    }
    Ok(())
}

/// Refuses a snapshot that is not newer than the current one (at `current`).
pub(crate) fn check_snapshot_newer(index: Index, current: Index) -> Result<(), StorageError> {
    if index <= current {
        return Err(StorageError::InvalidRequest(format!(
            "snapshot at {index} is not newer than the current one at {current}"
        )));
    }
    Ok(())
}

/// Refuses a snapshot whose membership breaks the rules of every configuration
/// ([`Membership::validate`](crate::membership::Membership::validate)). `FileStorage` could
/// not read such a file back (decoding validates), so every storage refuses it up front
/// rather than writing a snapshot that would fail the next open as corruption.
pub(crate) fn check_snapshot_membership(meta: &SnapshotMeta) -> Result<(), StorageError> {
    match &meta.membership {
        Some(m) => m.validate().map_err(|e| {
            StorageError::InvalidRequest(format!(
                "snapshot at index {} carries an invalid membership ({m}): {e}",
                meta.last_index
            ))
        }),
        None => Ok(()),
    }
}

/// Refuses to keep a log that does not hold the snapshot's last entry (`held` is the term
/// the log holds at that index, if any).
pub(crate) fn check_keep(
    meta: &SnapshotMeta,
    log: SnapshotLog,
    held: Option<Term>,
) -> Result<(), StorageError> {
    if log == SnapshotLog::Keep && held != Some(meta.last_term) {
        return Err(StorageError::SnapshotLogMismatch {
            index: meta.last_index,
            term: meta.last_term,
            held,
        });
    }
    Ok(())
}

/// Checks a range read against the held range `[first, last]`; `Ok(false)` for an empty range.
pub(crate) fn check_range(
    lo: Index,
    hi: Index,
    first: Index,
    last: Index,
) -> Result<bool, StorageError> {
    if lo >= hi {
        return Ok(false);
    }
    if lo < first {
        return Err(StorageError::Compacted {
            requested: lo,
            first_available: first,
        });
    }
    if hi > last + 1 {
        return Err(StorageError::Unavailable {
            requested: hi - 1,
            last_index: last,
        });
    }
    Ok(true)
}
