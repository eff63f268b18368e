//! [`FileStorage`]: durable, crash-safe storage in a data directory. STUB: being written.

use std::path::{Path, PathBuf};

use super::Storage;
use crate::error::StorageError;
use crate::types::{Entry, HardState, Index, Snapshot, SnapshotMeta, Term};

/// When writes are flushed to the disk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SyncPolicy {
    /// `sync`, hard-state, truncation and snapshot writes call `fdatasync`/`fsync`
    /// (the default; the only policy that survives power loss).
    #[default]
    Always,
    /// Never flush. Survives a process crash but not a machine crash: for tests and
    /// benchmarks only, named so nobody picks it by accident.
    UnsafeNoSync,
}

/// Settings of a [`FileStorage`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileStorageOptions {
    /// When writes are flushed.
    pub sync: SyncPolicy,
    /// A new log segment is started once the current one reaches this size. Default 64 MiB.
    pub segment_size: u64,
    /// Bytes of recent entries kept in memory to serve reads without touching the disk.
    /// Default 16 MiB.
    pub cache_bytes: usize,
}

impl Default for FileStorageOptions {
    fn default() -> Self {
        FileStorageOptions {
            sync: SyncPolicy::Always,
            segment_size: 64 * 1024 * 1024,
            cache_bytes: 16 * 1024 * 1024,
        }
    }
}

/// Durable storage in a data directory.
#[derive(Debug)]
pub struct FileStorage {
    dir: PathBuf,
}

impl FileStorage {
    /// Opens (creating if needed) the data directory and recovers its state.
    pub fn open(dir: impl AsRef<Path>, _options: FileStorageOptions) -> Result<Self, StorageError> {
        Ok(FileStorage {
            dir: dir.as_ref().to_path_buf(),
        })
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Storage for FileStorage {
    fn hard_state(&self) -> HardState {
        todo!()
    }
    fn set_hard_state(&mut self, _state: &HardState) -> Result<(), StorageError> {
        todo!()
    }
    fn first_index(&self) -> Index {
        todo!()
    }
    fn last_index(&self) -> Index {
        todo!()
    }
    fn term(&self, _index: Index) -> Result<Term, StorageError> {
        todo!()
    }
    fn entries(&self, _lo: Index, _hi: Index, _max_bytes: u64) -> Result<Vec<Entry>, StorageError> {
        todo!()
    }
    fn append(&mut self, _entries: &[Entry]) -> Result<(), StorageError> {
        todo!()
    }
    fn truncate_suffix(&mut self, _from: Index) -> Result<(), StorageError> {
        todo!()
    }
    fn sync(&mut self) -> Result<(), StorageError> {
        todo!()
    }
    fn snapshot_meta(&self) -> Option<SnapshotMeta> {
        todo!()
    }
    fn load_snapshot(&self) -> Result<Option<Snapshot>, StorageError> {
        todo!()
    }
    fn save_snapshot(&mut self, _snapshot: &Snapshot) -> Result<(), StorageError> {
        todo!()
    }
    fn compact(&mut self, _upto: Index) -> Result<(), StorageError> {
        todo!()
    }
}
