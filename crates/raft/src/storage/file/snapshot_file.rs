//! Snapshot files `<dir>/snapshots/<last_index, 20 digits>-<last_term, 20 digits>.snap`.
//!
//! Format (little endian): a 40-byte header, magic `b"RLSNAP01"`, last index `u64`, last
//! term `u64`, data length `u64`, CRC32C of the data `u32`, CRC32C of the preceding 36
//! header bytes `u32`; then the data.
//!
//! A new snapshot is streamed into `<kind>-<pid>-<n>.tmp` in the same directory (a
//! [`FileWriter`]: `build` for one the node builds, `recv` for one received from the
//! leader) behind 40 zero bytes where the header goes, tracking its length and CRC32C as it
//! is written. Finishing it fsyncs the data (on the thread that wrote it, off the storage
//! thread for a built one). Installing it writes the header in place, fsyncs, renames the
//! file to its name and fsyncs the directory, so a completed file is never torn and any
//! defect in it is corruption. A temp file is deleted when its writer or staged snapshot is
//! dropped, and by `open` after a crash (a transfer then starts over from offset 0).

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

use super::fsutil::{io_err, list_files, sync_dir, TMP_SUFFIX};
use crate::error::StorageError;
use crate::storage::snapshot::{check_range, SnapshotReader, SnapshotWriter, StagedSnapshot};
use crate::types::{Index, Snapshot, SnapshotInfo, SnapshotMeta, Term};

const MAGIC: &[u8; 8] = b"RLSNAP01";
/// Size of the header before the data.
pub(super) const HEADER_LEN: usize = 40;
/// Data is checksummed in pieces of this size, so verifying a large snapshot on open does
/// not need it all in memory.
const VERIFY_CHUNK: usize = 1 << 20;
/// Buffer of a writer: state machines write in small pieces, chunks from the leader pass
/// through it (they are larger).
const WRITE_BUFFER: usize = 256 * 1024;

/// Numbers temp files process-wide, so a late drop of one storage's staged file can never
/// delete a file of another storage opened since on the same directory.
static NEXT_TEMP: AtomicU64 = AtomicU64::new(0);

/// File name of the snapshot described by `meta`.
pub(super) fn file_name(meta: &SnapshotMeta) -> String {
    format!("{:020}-{:020}.snap", meta.last_index, meta.last_term)
}

/// The `(last_index, last_term)` encoded in a snapshot file name.
pub(super) fn parse_file_name(name: &str) -> Option<(Index, Term)> {
    let stem = name.strip_suffix(".snap")?;
    let (index, term) = stem.split_once('-')?;
    let digits = |s: &str| s.len() == 20 && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(index) || !digits(term) {
        return None;
    }
    Some((index.parse().ok()?, term.parse().ok()?))
}

fn encode_header(meta: &SnapshotMeta, len: u64, crc: u32) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(MAGIC);
    h[8..16].copy_from_slice(&meta.last_index.to_le_bytes());
    h[16..24].copy_from_slice(&meta.last_term.to_le_bytes());
    h[24..32].copy_from_slice(&len.to_le_bytes());
    h[32..36].copy_from_slice(&crc.to_le_bytes());
    let header_crc = crc32c::crc32c(&h[..36]);
    h[36..40].copy_from_slice(&header_crc.to_le_bytes());
    h
}

/// A verified header: the metadata, the data length and the data's checksum.
struct Header {
    meta: SnapshotMeta,
    data_len: u64,
    data_crc: u32,
}

fn decode_header(h: &[u8; HEADER_LEN]) -> Result<Header, String> {
    let u64_at = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&h[at..at + 8]);
        u64::from_le_bytes(b)
    };
    let u32_at = |at: usize| u32::from_le_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]]);
    if crc32c::crc32c(&h[..36]) != u32_at(36) {
        return Err("snapshot header checksum mismatch".into());
    }
    if &h[..8] != MAGIC {
        return Err("bad snapshot magic".into());
    }
    Ok(Header {
        meta: SnapshotMeta {
            last_index: u64_at(8),
            last_term: u64_at(16),
            membership: None,
        },
        data_len: u64_at(24),
        data_crc: u32_at(32),
    })
}

fn corruption(path: &Path, offset: u64, reason: impl Into<String>) -> StorageError {
    StorageError::Corruption {
        path: path.to_path_buf(),
        offset,
        reason: reason.into(),
    }
}

/// Reads and checks the header of the snapshot at `path` (whose name promises `meta`).
fn read_header(file: &File, path: &Path, meta: &SnapshotMeta) -> Result<Header, StorageError> {
    let mut h = [0u8; HEADER_LEN];
    let len = file.metadata().map_err(io_err("stat", path))?.len();
    if len < HEADER_LEN as u64 {
        return Err(corruption(path, 0, format!("snapshot file is {len} bytes")));
    }
    file.read_exact_at(&mut h, 0)
        .map_err(io_err("read", path))?;
    let header = decode_header(&h).map_err(|r| corruption(path, 0, r))?;
    if header.meta != *meta {
        return Err(corruption(
            path,
            0,
            format!(
                "snapshot header says index {} term {}, the file name says index {} term {}",
                header.meta.last_index, header.meta.last_term, meta.last_index, meta.last_term
            ),
        ));
    }
    if len - HEADER_LEN as u64 != header.data_len {
        return Err(corruption(
            path,
            HEADER_LEN as u64,
            format!(
                "snapshot data is {} bytes, the header says {}",
                len - HEADER_LEN as u64,
                header.data_len
            ),
        ));
    }
    Ok(header)
}

/// A temporary snapshot file, deleted when dropped unless it was installed.
#[derive(Debug)]
pub(crate) struct StagedFile {
    path: PathBuf,
    sync: bool,
    installed: bool,
}

impl StagedFile {
    /// Where the file is.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The data written into the file (behind the room for the header).
    pub(crate) fn read_data(&self) -> Result<Bytes, StorageError> {
        let all = fs::read(&self.path).map_err(io_err("read", &self.path))?;
        let data = all.get(HEADER_LEN..).unwrap_or_default();
        Ok(Bytes::copy_from_slice(data))
    }
}

impl Drop for StagedFile {
    fn drop(&mut self) {
        if !self.installed {
            if let Err(e) = fs::remove_file(&self.path) {
                tracing::warn!(path = %self.path.display(), error = %e, "could not remove a temporary snapshot file; open removes it");
            }
        }
    }
}

/// Streams a new snapshot into a temporary file of the snapshot directory (see the module
/// docs), tracking its length and CRC32C.
pub(crate) struct FileWriter {
    temp: StagedFile,
    out: BufWriter<File>,
    size: u64,
    crc: u32,
}

impl FileWriter {
    /// Creates `<dir>/<kind>-<pid>-<n>.tmp` with room for the header.
    pub(crate) fn create(dir: &Path, kind: &str, sync: bool) -> Result<Self, StorageError> {
        let n = NEXT_TEMP.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!("{kind}-{}-{n}{TMP_SUFFIX}", std::process::id()));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io_err("create", &path))?;
        let temp = StagedFile {
            path,
            sync,
            installed: false,
        };
        let mut out = BufWriter::with_capacity(WRITE_BUFFER, file);
        out.write_all(&[0u8; HEADER_LEN])
            .map_err(io_err("write", &temp.path))?;
        Ok(FileWriter {
            temp,
            out,
            size: 0,
            crc: 0,
        })
    }

    fn io_error(&self, op: &'static str, e: io::Error) -> io::Error {
        io::Error::other(StorageError::io(op, self.temp.path.clone(), e))
    }
}

impl Write for FileWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = self
            .out
            .write(data)
            .map_err(|e| self.io_error("write", e))?;
        self.crc = crc32c::crc32c_append(self.crc, &data[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush().map_err(|e| self.io_error("write", e))
    }
}

impl SnapshotWriter for FileWriter {
    fn written(&self) -> u64 {
        self.size
    }

    fn finish(self: Box<Self>) -> Result<StagedSnapshot, StorageError> {
        let FileWriter {
            temp,
            out,
            size,
            crc,
        } = *self;
        let file = out
            .into_inner()
            .map_err(|e| StorageError::io("write", temp.path.clone(), e.into_error()))?;
        if temp.sync {
            file.sync_data().map_err(io_err("fsync", &temp.path))?;
        }
        Ok(StagedSnapshot::from_file(temp, size, crc))
    }
}

/// Makes `staged` the snapshot `info` describes, in `dir` (the directory it was written
/// in): writes the header, fsyncs, renames the file to its name and fsyncs the directory
/// (both fsyncs skipped without `sync`). Returns the snapshot's path.
pub(super) fn install(
    dir: &Path,
    mut staged: StagedFile,
    info: &SnapshotInfo,
) -> Result<PathBuf, StorageError> {
    if staged.path.parent() != Some(dir) {
        return Err(StorageError::InvalidRequest(format!(
            "snapshot staged in {} cannot be installed into {}",
            staged.path.display(),
            dir.display()
        )));
    }
    let header = encode_header(&info.meta, info.size, info.checksum);
    let file = OpenOptions::new()
        .write(true)
        .open(&staged.path)
        .map_err(io_err("open", &staged.path))?;
    file.write_all_at(&header, 0)
        .map_err(io_err("write", &staged.path))?;
    if staged.sync {
        file.sync_data().map_err(io_err("fsync", &staged.path))?;
    }
    drop(file);
    let path = dir.join(file_name(&info.meta));
    fs::rename(&staged.path, &path).map_err(io_err("rename", &staged.path))?;
    staged.installed = true;
    if staged.sync {
        sync_dir(dir)?;
    }
    Ok(path)
}

/// Writes `snapshot` into `dir` through a [`FileWriter`] and installs it (durably when
/// `sync`); returns its path.
#[cfg(test)]
pub(super) fn write(dir: &Path, snapshot: &Snapshot, sync: bool) -> Result<PathBuf, StorageError> {
    let mut writer = FileWriter::create(dir, "build", sync)?;
    writer
        .write_all(&snapshot.data)
        .map_err(|e| crate::storage::snapshot::storage_error(e, "write snapshot"))?;
    let info = SnapshotInfo {
        meta: snapshot.meta.clone(),
        size: writer.size,
        checksum: writer.crc,
    };
    let FileWriter { temp, out, .. } = writer;
    let file = out
        .into_inner()
        .map_err(|e| StorageError::io("write", temp.path.clone(), e.into_error()))?;
    if sync {
        file.sync_data().map_err(io_err("fsync", &temp.path))?;
    }
    drop(file);
    install(dir, temp, &info)
}

/// Reads an installed snapshot at any offset through a file handle of its own, which keeps
/// reading the same bytes after a newer snapshot is renamed over it or it is deleted.
#[derive(Debug)]
pub(super) struct FileReader {
    file: File,
    path: PathBuf,
    info: SnapshotInfo,
}

/// Opens the snapshot `info` describes in `dir`, checking its header against `info`.
pub(super) fn open_reader(dir: &Path, info: &SnapshotInfo) -> Result<FileReader, StorageError> {
    let path = dir.join(file_name(&info.meta));
    let file = File::open(&path).map_err(io_err("open", &path))?;
    let header = read_header(&file, &path, &info.meta)?;
    if (header.data_len, header.data_crc) != (info.size, info.checksum) {
        return Err(corruption(
            &path,
            0,
            format!(
                "snapshot header says {} bytes with CRC32C {:08x}; {} bytes with {:08x} were installed",
                header.data_len, header.data_crc, info.size, info.checksum
            ),
        ));
    }
    Ok(FileReader {
        file,
        path,
        info: info.clone(),
    })
}

impl SnapshotReader for FileReader {
    fn info(&self) -> &SnapshotInfo {
        &self.info
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), StorageError> {
        check_range(&self.info, offset, buf.len() as u64)?;
        self.file
            .read_exact_at(buf, HEADER_LEN as u64 + offset)
            .map_err(io_err("read", &self.path))
    }
}

/// Reads the whole snapshot described by `meta` from `dir`, verifying both checksums.
pub(super) fn read(dir: &Path, meta: &SnapshotMeta) -> Result<Snapshot, StorageError> {
    let path = dir.join(file_name(meta));
    let file = File::open(&path).map_err(io_err("open", &path))?;
    let header = read_header(&file, &path, meta)?;
    // `read_header` checked the length against the file size, so this cannot be a garbage
    // length asking for an absurd allocation.
    let len = usize::try_from(header.data_len)
        .map_err(|_| corruption(&path, 0, "snapshot too large for memory"))?;
    let mut data = vec![0u8; len];
    file.read_exact_at(&mut data, HEADER_LEN as u64)
        .map_err(io_err("read", &path))?;
    if crc32c::crc32c(&data) != header.data_crc {
        return Err(corruption(
            &path,
            HEADER_LEN as u64,
            "snapshot data checksum mismatch",
        ));
    }
    Ok(Snapshot {
        meta: meta.clone(),
        data: Bytes::from(data),
    })
}

/// Checks the snapshot described by `meta` in `dir` without keeping its data in memory;
/// returns its size and checksum.
fn verify(dir: &Path, meta: &SnapshotMeta) -> Result<SnapshotInfo, StorageError> {
    let path = dir.join(file_name(meta));
    let file = File::open(&path).map_err(io_err("open", &path))?;
    let header = read_header(&file, &path, meta)?;
    let mut crc = 0u32;
    let mut chunk = vec![0u8; VERIFY_CHUNK];
    let mut at = HEADER_LEN as u64;
    let end = at + header.data_len;
    while at < end {
        let n = usize::try_from(end - at).map_or(VERIFY_CHUNK, |r| r.min(VERIFY_CHUNK));
        let buf = &mut chunk[..n];
        file.read_exact_at(buf, at).map_err(io_err("read", &path))?;
        crc = crc32c::crc32c_append(crc, buf);
        at += n as u64;
    }
    if crc != header.data_crc {
        return Err(corruption(
            &path,
            HEADER_LEN as u64,
            "snapshot data checksum mismatch",
        ));
    }
    Ok(SnapshotInfo {
        meta: header.meta,
        size: header.data_len,
        checksum: header.data_crc,
    })
}

/// Finds the newest snapshot in `dir`, verifies it and deletes older ones (left behind by a
/// crash after a newer snapshot became durable). A defective newest snapshot is an error,
/// never a reason to fall back silently to an older state.
pub(super) fn recover(dir: &Path) -> Result<Option<SnapshotInfo>, StorageError> {
    let mut found: Vec<(SnapshotMeta, PathBuf)> = list_files(dir)?
        .into_iter()
        .filter_map(|(name, path)| {
            let (last_index, last_term) = parse_file_name(&name)?;
            Some((
                SnapshotMeta {
                    last_index,
                    last_term,
                    membership: None,
                },
                path,
            ))
        })
        .collect();
    found.sort_by_key(|(m, _)| (m.last_index, m.last_term));
    let Some((newest, _)) = found.pop() else {
        return Ok(None);
    };
    let info = verify(dir, &newest)?;
    for (_, older) in found {
        tracing::debug!(path = %older.display(), "removing superseded snapshot");
        fs::remove_file(&older).map_err(io_err("remove", &older))?;
    }
    Ok(Some(info))
}

/// Deletes every snapshot file of `dir` other than `keep` (once `keep` is durable).
pub(super) fn remove_others(dir: &Path, keep: &SnapshotMeta) -> Result<(), StorageError> {
    for (name, path) in list_files(dir)? {
        if parse_file_name(&name).is_some_and(|(i, t)| (i, t) != (keep.last_index, keep.last_term))
        {
            fs::remove_file(&path).map_err(io_err("remove", &path))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(i: Index, t: Term, data: &'static [u8]) -> Snapshot {
        Snapshot {
            meta: SnapshotMeta {
                last_index: i,
                last_term: t,
                membership: None,
            },
            data: Bytes::from_static(data),
        }
    }

    #[test]
    fn write_recover_read_round_trip_keeps_only_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(recover(dir.path()).unwrap(), None);
        write(dir.path(), &snap(5, 1, b"old"), true).unwrap();
        let new = snap(9, 2, b"new state");
        write(dir.path(), &new, true).unwrap();
        assert_eq!(recover(dir.path()).unwrap(), Some(SnapshotInfo::of(&new)));
        assert_eq!(list_files(dir.path()).unwrap().len(), 1);
        assert_eq!(read(dir.path(), &new.meta).unwrap(), new);
        let empty = snap(10, 2, b"");
        write(dir.path(), &empty, false).unwrap();
        remove_others(dir.path(), &empty.meta).unwrap();
        assert_eq!(read(dir.path(), &empty.meta).unwrap(), empty);
        assert_eq!(list_files(dir.path()).unwrap().len(), 1);
    }

    #[test]
    fn any_flipped_byte_is_corruption_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let s = snap(3, 1, b"some state bytes");
        let path = write(dir.path(), &s, false).unwrap();
        let good = fs::read(&path).unwrap();
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x01;
            fs::write(&path, &bad).unwrap();
            for result in [
                recover(dir.path()).map(drop),
                read(dir.path(), &s.meta).map(drop),
            ] {
                match result {
                    Err(StorageError::Corruption { path: p, .. }) => assert_eq!(p, path),
                    other => panic!("flip at {i}: expected corruption, got {other:?}"),
                }
            }
        }
    }

    #[test]
    fn names_round_trip() {
        let meta = SnapshotMeta {
            last_index: 12,
            last_term: 3,
            membership: None,
        };
        assert_eq!(parse_file_name(&file_name(&meta)), Some((12, 3)));
        assert_eq!(parse_file_name("12-3.snap"), None);
        assert_eq!(parse_file_name(&format!("{}.tmp", file_name(&meta))), None);
    }
}
