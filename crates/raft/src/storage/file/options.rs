//! Settings of a [`FileStorage`](super::FileStorage).

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

/// Settings of a [`FileStorage`](super::FileStorage).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileStorageOptions {
    /// When writes are flushed.
    pub sync: SyncPolicy,
    /// A new log segment is started once the current one reaches this size. Default 64 MiB,
    /// at most [`FileStorageOptions::MAX_SEGMENT_SIZE`]. Compaction removes whole
    /// segments, so this is also the granularity at which disk space is given back.
    /// With [`SyncPolicy::Always`] the log's files are written with zeros ahead of their
    /// data (1 MiB at a time, up to this size) and one compacted segment file is kept for
    /// reuse, so that each fsync flushes data only; the log then takes up to one segment
    /// more disk space than its entries need.
    pub segment_size: u64,
    /// Bytes of recent entries kept in memory to serve reads without touching the disk.
    /// Default 16 MiB.
    pub cache_bytes: usize,
}

impl FileStorageOptions {
    /// Largest accepted [`FileStorageOptions::segment_size`] (1 GiB): record offsets are
    /// kept as `u32`, and a segment may exceed its nominal size by one record (at most
    /// 256 MiB).
    pub const MAX_SEGMENT_SIZE: u64 = 1 << 30;
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
