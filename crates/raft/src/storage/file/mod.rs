//! [`FileStorage`]: durable, crash-safe storage in a data directory.
//!
//! # Layout
//!
//! ```text
//! <dir>/LOCK                                    flock + pid of the holder      (lock.rs)
//! <dir>/hardstate                               term and vote                  (meta.rs)
//! <dir>/log/<first index, 20 digits>.seg        log segments                   (segment.rs)
//! <dir>/log/spare-segment                       a compacted segment to reuse   (log.rs)
//! <dir>/snapshots/<index 20>-<term 20>.snap     the latest snapshot            (snapshot_file.rs)
//! <dir>/snapshots/{build,recv}-<pid>-<n>.tmp    a snapshot being written       (snapshot_file.rs)
//! ```
//!
//! Files being written end in `.tmp` and are deleted on open. The hard state and snapshots
//! are replaced by write-to-temp, fsync, rename, fsync-directory, so they are never torn;
//! a snapshot is streamed into its temp file (built by the node, or received in chunks)
//! and never held whole in memory.
//! The log is append-only; `log.rs` explains the write ordering, the pre-allocation and
//! recycling of segment files (so that an fsync after an append flushes data but no file
//! metadata) and the "synced end" checkpoint each segment header keeps, and `recover.rs`
//! what open accepts, repairs (a torn tail of the last segment, past that checkpoint) and
//! refuses (everything else, above all damage to entries that were synced).
//!
//! In memory, the storage keeps the offset of every record, the terms of the log as runs
//! (`index.rs`) and a bounded cache of the most recent entries, so `term()` never reads the
//! disk and recent `entries()` seldom do.

mod fsutil;
mod index;
mod lock;
mod log;
mod meta;
mod options;
mod recover;
mod segment;
mod snapshot_file;
#[cfg(test)]
mod tests;

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use self::index::{ByteBudget, EntryCache, TermRuns};
use self::lock::DirLock;
use self::log::SegmentLog;
pub use self::options::{FileStorageOptions, SyncPolicy};
use self::snapshot_file::FileWriter;
pub(crate) use self::snapshot_file::StagedFile;
use super::snapshot::{self as stream, Receiving, Staged};
use super::{
    check_append, check_keep, check_range, check_snapshot_membership, check_snapshot_newer,
    SnapshotLog, SnapshotReader, SnapshotSource, SnapshotWriter, Storage,
};
use crate::error::StorageError;
use crate::types::{Entry, HardState, Index, Snapshot, SnapshotInfo, SnapshotMeta, Term};

/// Directory of the log segments inside the data directory.
const LOG_DIR: &str = "log";
/// Directory of the snapshot files inside the data directory.
const SNAPSHOT_DIR: &str = "snapshots";

/// Durable storage in a data directory: segmented, checksummed log files, an atomically
/// replaced hard-state file and checksummed snapshot files.
///
/// Only one `FileStorage` can have a directory open at a time (a second `open`, from this
/// process or another, fails with [`StorageError::Locked`]). After an I/O error on a write
/// path the storage refuses further writes: the state of the files is then unknown (a
/// failed fsync may have dropped data), and reopening recovers from what is on disk.
///
/// ```
/// use raftlock_raft::{Entry, FileStorage, FileStorageOptions, Storage};
/// let dir = tempfile::tempdir().unwrap();
/// let mut s = FileStorage::open(dir.path(), FileStorageOptions::default()).unwrap();
/// s.append(&[Entry::normal(1, 1, "x"), Entry::normal(2, 1, "y")]).unwrap();
/// s.sync().unwrap();
/// drop(s);
/// let s = FileStorage::open(dir.path(), FileStorageOptions::default()).unwrap();
/// assert_eq!(s.entries(1, 3, u64::MAX).unwrap()[1].data, "y");
/// ```
pub struct FileStorage {
    dir: PathBuf,
    options: FileStorageOptions,
    _lock: DirLock,
    hard_state: HardState,
    snapshot: Option<SnapshotInfo>,
    /// The snapshot being received from the leader, in a temp file.
    receiving: Option<Receiving<FileWriter>>,
    log: SegmentLog,
    terms: TermRuns,
    cache: EntryCache,
    /// Set by an I/O error on a write path; see the type's documentation.
    failed: bool,
}

impl fmt::Debug for FileStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileStorage")
            .field("dir", &self.dir)
            .field("options", &self.options)
            .field("first_index", &self.log.first())
            .field("last_index", &self.last_index())
            .field("snapshot", &self.snapshot)
            .field("receiving", &self.receiving)
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

impl FileStorage {
    /// Opens (creating if needed) the data directory and recovers its state: deletes
    /// temp files, loads the hard state and the newest snapshot, scans the log (truncating
    /// a torn tail) and drops a log that a snapshot superseded.
    ///
    /// Fails with [`StorageError::Locked`] if the directory is in use, and with
    /// [`StorageError::Corruption`] naming file and offset if data is damaged anywhere a
    /// crash cannot explain, which includes any damage to log entries a `sync` covered:
    /// those are never cut off as a torn tail. The error's text tells the operator the way
    /// out (an empty data directory, caught up from the leader).
    pub fn open(dir: impl AsRef<Path>, options: FileStorageOptions) -> Result<Self, StorageError> {
        if options.segment_size > FileStorageOptions::MAX_SEGMENT_SIZE {
            return Err(StorageError::InvalidRequest(format!(
                "segment_size {} exceeds the maximum {}",
                options.segment_size,
                FileStorageOptions::MAX_SEGMENT_SIZE
            )));
        }
        let dir = dir.as_ref().to_path_buf();
        let sync = options.sync == SyncPolicy::Always;
        let existed = dir.is_dir();
        fs::create_dir_all(&dir).map_err(fsutil::io_err("create directory", &dir))?;
        let lock = DirLock::acquire(&dir)?;
        let log_dir = dir.join(LOG_DIR);
        let snapshot_dir = dir.join(SNAPSHOT_DIR);
        for sub in [&log_dir, &snapshot_dir] {
            fs::create_dir_all(sub).map_err(fsutil::io_err("create directory", sub))?;
        }
        if sync {
            // Make the new directories themselves durable, so files fsynced into them are
            // reachable after a power loss.
            fsutil::sync_dir(&dir)?;
            if !existed {
                if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                    fsutil::sync_dir(parent)?;
                }
            }
        }
        for d in [&dir, &log_dir, &snapshot_dir] {
            fsutil::remove_tmp_files(d)?;
        }
        let hard_state = meta::load(&dir)?;
        let snapshot = snapshot_file::recover(&snapshot_dir)?;
        let (snap_index, snap_term) = snapshot
            .as_ref()
            .map_or((0, 0), |s| (s.meta.last_index, s.meta.last_term));
        let mut terms = TermRuns::default();
        let mut log = recover::recover_log(
            &log_dir,
            sync,
            options.segment_size,
            snap_index + 1,
            &mut terms,
        )?;
        recover::reconcile_with_snapshot(&mut log, &mut terms, snap_index, snap_term)?;
        let mut cache = EntryCache::new(options.cache_bytes);
        let mut recent = Vec::new();
        let start = log.tail_start(options.cache_bytes as u64);
        log.read_entries(
            start,
            log.next(),
            &mut ByteBudget::new(u64::MAX),
            &mut recent,
        )?;
        for entry in recent {
            cache.push(entry);
        }
        Ok(FileStorage {
            dir,
            options,
            _lock: lock,
            hard_state,
            snapshot,
            receiving: None,
            log,
            terms,
            cache,
            failed: false,
        })
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn snapshot_dir(&self) -> PathBuf {
        self.dir.join(SNAPSHOT_DIR)
    }

    fn sync_enabled(&self) -> bool {
        self.options.sync == SyncPolicy::Always
    }

    fn snapshot_index(&self) -> Index {
        self.snapshot.as_ref().map_or(0, |s| s.meta.last_index)
    }

    /// Refuses writes after an earlier write failed (see [`FileStorage`]).
    fn check_usable(&self) -> Result<(), StorageError> {
        if self.failed {
            return Err(StorageError::io(
                "write",
                self.dir.clone(),
                io::Error::other(
                    "an earlier write or fsync failed; reopen the storage to recover \
                     from what is on disk",
                ),
            ));
        }
        Ok(())
    }

    /// Marks the storage failed if `result` is an I/O error.
    fn note<T>(&mut self, result: Result<T, StorageError>) -> Result<T, StorageError> {
        if let Err(StorageError::Io { .. }) = &result {
            self.failed = true;
        }
        result
    }

    /// Brings the term runs and the cache in line with what the log now holds.
    fn trim_indexes(&mut self) {
        if self.log.is_empty() {
            self.terms.clear();
            self.cache.clear();
            return;
        }
        self.terms.truncate_from(self.log.next());
        self.terms.drop_below(self.log.first());
        self.cache.truncate_from(self.log.next());
        self.cache.drop_below(self.log.first());
    }

    /// Term of the log entry at `index`, if the log holds one.
    fn held_term(&self, index: Index) -> Option<Term> {
        (index >= self.log.first() && index < self.log.next())
            .then(|| self.terms.term_at(index))
            .flatten()
    }
}

impl Storage for FileStorage {
    fn hard_state(&self) -> HardState {
        self.hard_state.clone()
    }

    fn set_hard_state(&mut self, state: &HardState) -> Result<(), StorageError> {
        self.check_usable()?;
        if *state == self.hard_state {
            return Ok(()); // already durable
        }
        let result = meta::store(&self.dir, state, self.sync_enabled());
        self.note(result)?;
        self.hard_state = state.clone();
        Ok(())
    }

    fn first_index(&self) -> Index {
        self.log.first()
    }

    fn last_index(&self) -> Index {
        self.log.next().saturating_sub(1)
    }

    fn term(&self, index: Index) -> Result<Term, StorageError> {
        if index == 0 {
            return Ok(0);
        }
        if let Some(snap) = &self.snapshot {
            if index == snap.meta.last_index {
                return Ok(snap.meta.last_term);
            }
        }
        if index < self.log.first() {
            return Err(StorageError::Compacted {
                requested: index,
                first_available: self.log.first(),
            });
        }
        match self.terms.term_at(index) {
            Some(term) if index < self.log.next() => Ok(term),
            _ => Err(StorageError::Unavailable {
                requested: index,
                last_index: self.last_index(),
            }),
        }
    }

    fn entries(&self, lo: Index, hi: Index, max_bytes: u64) -> Result<Vec<Entry>, StorageError> {
        if !check_range(lo, hi, self.log.first(), self.last_index())? {
            return Ok(Vec::new());
        }
        let mut out = Vec::with_capacity(usize::try_from(hi - lo).unwrap_or(0).min(1024));
        let mut budget = ByteBudget::new(max_bytes);
        // The cache holds a suffix of the log: below it, read the segment files.
        let cached_from = self.cache.first_index().unwrap_or(self.log.next());
        if lo < cached_from
            && self
                .log
                .read_entries(lo, hi.min(cached_from), &mut budget, &mut out)?
        {
            return Ok(out);
        }
        for index in lo.max(cached_from)..hi {
            let Some(entry) = self.cache.get(index) else {
                debug_assert!(false, "entry cache is not a suffix of the log");
                break;
            };
            if !budget.admit(entry.size_hint() as u64) {
                break;
            }
            out.push(entry.clone());
        }
        Ok(out)
    }

    fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        self.check_usable()?;
        let last = self.last_index();
        check_append(last, self.term(last)?, entries)?;
        let limit = segment::MAX_PAYLOAD_LEN - segment::PAYLOAD_FIXED_LEN;
        if let Some(e) = entries.iter().find(|e| e.data.len() > limit) {
            return Err(StorageError::InvalidRequest(format!(
                "entry {} carries {} bytes; the limit is {limit}",
                e.index,
                e.data.len()
            )));
        }
        let before = self.log.next();
        let result = self.log.append(entries);
        // Index what reached the files, all of it unless the write failed part-way.
        let written = usize::try_from(self.log.next() - before).unwrap_or(usize::MAX);
        for entry in entries.iter().take(written) {
            self.terms.push(entry.index, entry.term);
            if self.cache.capacity() > 0 {
                self.cache.push(entry.clone());
            }
        }
        self.note(result)
    }

    fn truncate_suffix(&mut self, from: Index) -> Result<(), StorageError> {
        self.check_usable()?;
        if from <= self.snapshot_index() {
            return Err(StorageError::InvalidRequest(format!(
                "truncate from {from} would cut into the snapshot at {}",
                self.snapshot_index()
            )));
        }
        let result = self.log.truncate_from(from);
        self.trim_indexes();
        self.note(result)
    }

    fn sync(&mut self) -> Result<(), StorageError> {
        self.check_usable()?;
        let result = self.log.sync();
        self.note(result)
    }

    fn snapshot_info(&self) -> Option<SnapshotInfo> {
        self.snapshot.clone()
    }

    fn snapshot_reader(&self) -> Result<Option<Arc<dyn SnapshotReader>>, StorageError> {
        let Some(info) = &self.snapshot else {
            return Ok(None);
        };
        let reader = snapshot_file::open_reader(&self.snapshot_dir(), info)?;
        Ok(Some(Arc::new(reader)))
    }

    fn snapshot_writer(&self) -> Result<Box<dyn SnapshotWriter>, StorageError> {
        self.check_usable()?;
        let writer = FileWriter::create(&self.snapshot_dir(), "build", self.sync_enabled())?;
        Ok(Box::new(writer))
    }

    fn write_snapshot_chunk(
        &mut self,
        meta: &SnapshotMeta,
        offset: u64,
        data: &[u8],
    ) -> Result<(), StorageError> {
        self.check_usable()?;
        let (dir, sync) = (self.snapshot_dir(), self.sync_enabled());
        let result = stream::receive_chunk(&mut self.receiving, meta, offset, data, || {
            FileWriter::create(&dir, "recv", sync)
        });
        self.note(result)
    }

    fn load_snapshot(&self) -> Result<Option<Snapshot>, StorageError> {
        match &self.snapshot {
            None => Ok(None),
            Some(info) => snapshot_file::read(&self.snapshot_dir(), &info.meta).map(Some),
        }
    }

    fn install_snapshot(
        &mut self,
        info: &SnapshotInfo,
        source: SnapshotSource,
        log: SnapshotLog,
    ) -> Result<(), StorageError> {
        self.check_usable()?;
        let meta = &info.meta;
        check_snapshot_newer(meta.last_index, self.snapshot_index())?;
        check_snapshot_membership(meta)?;
        check_keep(meta, log, self.held_term(meta.last_index))?;
        let dir = self.snapshot_dir();
        let staged = match source {
            SnapshotSource::Received => {
                let result = stream::take_received(&mut self.receiving, info);
                self.note(result)?
            }
            SnapshotSource::Staged(staged) => {
                staged.check(info)?;
                staged
            }
        };
        let file = match staged.body {
            Staged::File(file) => file,
            Staged::Memory(data) => {
                let mut writer = Box::new(FileWriter::create(&dir, "build", self.sync_enabled())?);
                let written = std::io::Write::write_all(&mut writer, &data)
                    .map_err(|e| stream::storage_error(e, "write snapshot"));
                self.note(written)?;
                let staged = writer.finish();
                match self.note(staged)?.body {
                    Staged::File(file) => file,
                    Staged::Memory(_) => {
                        return Err(StorageError::InvalidRequest(
                            "a file writer staged a snapshot in memory".into(),
                        ))
                    }
                }
            }
        };
        let result = snapshot_file::install(&dir, file, info);
        self.note(result)?;
        // The snapshot is durable: from here on it is the state, whatever happens next.
        self.snapshot = Some(info.clone());
        if log == SnapshotLog::Discard {
            let result = self.log.discard(meta.last_index + 1);
            self.trim_indexes();
            self.note(result)?;
        }
        if let Err(e) = snapshot_file::remove_others(&dir, meta) {
            // Harmless: open keeps the newest snapshot and deletes the others.
            tracing::warn!(error = %e, "could not remove superseded snapshots");
        }
        Ok(())
    }

    fn compact(&mut self, upto: Index) -> Result<(), StorageError> {
        self.check_usable()?;
        if upto > self.snapshot_index() {
            return Err(StorageError::InvalidRequest(format!(
                "compact up to {upto} beyond the snapshot at {}",
                self.snapshot_index()
            )));
        }
        let result = self.log.compact(upto);
        self.trim_indexes();
        self.note(result)
    }
}
