//! Snapshot files `<dir>/snapshots/<last_index, 20 digits>-<last_term, 20 digits>.snap`.
//!
//! Format `RLSNAP02` (written now; little endian):
//!
//! ```text
//! offset  size  field
//!      0     8  magic b"RLSNAP02"
//!      8     8  last index (u64)
//!     16     8  last term (u64)
//!     24     8  data length D (u64)
//!     32     4  CRC32C of the data (u32)
//!     36     4  membership length M (u32; 0 = no membership recorded)
//!     40     4  CRC32C of the membership block (u32; 0 when M = 0)
//!     44     4  CRC32C of bytes 0..44 (u32)
//!     48     D  data
//!   48+D     M  membership block: `Membership::encode` of the configuration at last index
//! ```
//!
//! The membership block follows the data rather than preceding it because its size is
//! known only at install (a built snapshot's writer is created before the configuration is
//! known, and a received snapshot's chunks are written before the install's metadata is
//! final): the data stays at a fixed offset, and install writes the block and the header
//! into the temp file without moving a byte of the data.
//!
//! Format `RLSNAP01` (before membership was replicated; still read, as `membership: None`):
//! a 40-byte header, magic `b"RLSNAP01"`, last index `u64`, last term `u64`, data length
//! `u64`, CRC32C of the data `u32`, CRC32C of the preceding 36 header bytes `u32`; then the
//! data, and nothing after it.
//!
//! A new snapshot is streamed into `<kind>-<pid>-<n>.tmp` in the same directory (a
//! [`FileWriter`]: `build` for one the node builds, `recv` for one received from the
//! leader) behind 48 zero bytes where the header goes, tracking its length and CRC32C as it
//! is written. Finishing it fsyncs the data (on the thread that wrote it, off the storage
//! thread for a built one). Installing it appends the membership block and writes the
//! header in place, both from the metadata given to the install (the authority on the
//! membership), fsyncs, renames the file to its name and fsyncs the directory, so a
//! completed file is never torn and any defect in it is corruption. A temp file is deleted
//! when its writer or staged snapshot is dropped, and by `open` after a crash (a transfer
//! then starts over from offset 0).

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

use super::fsutil::{io_err, list_files, sync_dir, TMP_SUFFIX};
use crate::error::StorageError;
use crate::membership::Membership;
use crate::storage::snapshot::{check_range, SnapshotReader, SnapshotWriter, StagedSnapshot};
use crate::types::{Index, Snapshot, SnapshotInfo, SnapshotMeta, Term};

/// Magic of the first format, which has no membership.
const MAGIC_V1: &[u8; 8] = b"RLSNAP01";
/// Size of a `RLSNAP01` header.
const HEADER_LEN_V1: usize = 40;
/// Magic of the current format.
const MAGIC_V2: &[u8; 8] = b"RLSNAP02";
/// Size of the header before the data in the current format: the room a writer leaves.
pub(super) const HEADER_LEN: usize = 48;
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

/// The membership block of `meta`: empty when it records none.
fn encode_membership(meta: &SnapshotMeta) -> Bytes {
    meta.membership
        .as_deref()
        .map(Membership::encode)
        .unwrap_or_default()
}

/// The `RLSNAP02` header of a snapshot of `meta` with `len` bytes of data whose CRC32C is
/// `crc`, followed by `membership` (from [`encode_membership`]). Refused if the block
/// cannot be described by the header's 32-bit length (no real configuration comes near).
fn encode_header(
    meta: &SnapshotMeta,
    len: u64,
    crc: u32,
    membership: &[u8],
) -> Result<[u8; HEADER_LEN], StorageError> {
    let membership_len = u32::try_from(membership.len()).map_err(|_| {
        StorageError::InvalidRequest(format!(
            "membership of the snapshot at index {} encodes to {} bytes",
            meta.last_index,
            membership.len()
        ))
    })?;
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(MAGIC_V2);
    h[8..16].copy_from_slice(&meta.last_index.to_le_bytes());
    h[16..24].copy_from_slice(&meta.last_term.to_le_bytes());
    h[24..32].copy_from_slice(&len.to_le_bytes());
    h[32..36].copy_from_slice(&crc.to_le_bytes());
    h[36..40].copy_from_slice(&membership_len.to_le_bytes());
    h[40..44].copy_from_slice(&crc32c::crc32c(membership).to_le_bytes());
    let header_crc = crc32c::crc32c(&h[..44]);
    h[44..48].copy_from_slice(&header_crc.to_le_bytes());
    Ok(h)
}

/// The fixed fields of a header whose own checksum matched, in either format.
struct Fixed {
    /// Size of the header: where the data starts.
    header_len: u64,
    last_index: Index,
    last_term: Term,
    data_len: u64,
    data_crc: u32,
    /// Size of the membership block after the data (always 0 in `RLSNAP01`).
    membership_len: u64,
    membership_crc: u32,
}

/// Decodes the header at the start of `h` (the first bytes of a file, as many as it has
/// up to [`HEADER_LEN`]).
fn decode_fixed(h: &[u8]) -> Result<Fixed, String> {
    let u64_at = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&h[at..at + 8]);
        u64::from_le_bytes(b)
    };
    let u32_at = |at: usize| u32::from_le_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]]);
    let Some(version) = h.get(..8) else {
        return Err(format!("snapshot file is {} bytes", h.len()));
    };
    let header_len = if version == MAGIC_V2 {
        HEADER_LEN
    } else if version == MAGIC_V1 {
        HEADER_LEN_V1
    } else {
        return Err("bad snapshot magic".into());
    };
    if h.len() < header_len {
        return Err(format!(
            "snapshot file is {} bytes, shorter than its {header_len}-byte header",
            h.len()
        ));
    }
    let crc_at = header_len - 4;
    if crc32c::crc32c(&h[..crc_at]) != u32_at(crc_at) {
        return Err("snapshot header checksum mismatch".into());
    }
    let (membership_len, membership_crc) = if header_len == HEADER_LEN {
        (u64::from(u32_at(36)), u32_at(40))
    } else {
        (0, 0)
    };
    Ok(Fixed {
        header_len: header_len as u64,
        last_index: u64_at(8),
        last_term: u64_at(16),
        data_len: u64_at(24),
        data_crc: u32_at(32),
        membership_len,
        membership_crc,
    })
}

/// A verified header: the metadata (with the membership read from its block), where the
/// data starts, the data length and the data's checksum.
struct Header {
    meta: SnapshotMeta,
    data_offset: u64,
    data_len: u64,
    data_crc: u32,
}

fn corruption(path: &Path, offset: u64, reason: impl Into<String>) -> StorageError {
    StorageError::Corruption {
        path: path.to_path_buf(),
        offset,
        reason: reason.into(),
    }
}

/// Reads and checks the header of the snapshot at `path`, whose name promises `name`'s
/// index and term (a name carries nothing else, so only those are compared), and reads,
/// checks and decodes its membership block. The data itself is not read.
fn read_header(file: &File, path: &Path, name: &SnapshotMeta) -> Result<Header, StorageError> {
    let len = file.metadata().map_err(io_err("stat", path))?.len();
    let mut h = [0u8; HEADER_LEN];
    // At most HEADER_LEN, so the cast cannot truncate.
    let have = len.min(HEADER_LEN as u64) as usize;
    file.read_exact_at(&mut h[..have], 0)
        .map_err(io_err("read", path))?;
    let fixed = decode_fixed(&h[..have]).map_err(|r| corruption(path, 0, r))?;
    if (fixed.last_index, fixed.last_term) != (name.last_index, name.last_term) {
        return Err(corruption(
            path,
            0,
            format!(
                "snapshot header says index {} term {}, the file name says index {} term {}",
                fixed.last_index, fixed.last_term, name.last_index, name.last_term
            ),
        ));
    }
    // Checked: a header whose checksum matches can still carry absurd lengths if it was
    // written wrong, and they must be an error, not an overflow.
    let membership_at = fixed.header_len.checked_add(fixed.data_len);
    let expected = membership_at.and_then(|at| at.checked_add(fixed.membership_len));
    let Some((membership_at, expected)) = membership_at.zip(expected) else {
        return Err(corruption(path, 0, "snapshot header lengths overflow"));
    };
    if len != expected {
        return Err(corruption(
            path,
            fixed.header_len,
            format!(
                "snapshot file is {len} bytes, the header says {} of header, {} of data and {} of membership",
                fixed.header_len, fixed.data_len, fixed.membership_len
            ),
        ));
    }
    let membership = if fixed.membership_len == 0 {
        None
    } else {
        // The length matched the file's, so this allocation is no larger than the file.
        let n = usize::try_from(fixed.membership_len)
            .map_err(|_| corruption(path, membership_at, "snapshot membership too large"))?;
        let mut block = vec![0u8; n];
        file.read_exact_at(&mut block, membership_at)
            .map_err(io_err("read", path))?;
        if crc32c::crc32c(&block) != fixed.membership_crc {
            return Err(corruption(
                path,
                membership_at,
                "snapshot membership checksum mismatch",
            ));
        }
        let m = Membership::decode(&block).map_err(|e| {
            corruption(
                path,
                membership_at,
                format!("snapshot membership does not decode: {e}"),
            )
        })?;
        Some(std::sync::Arc::new(m))
    };
    Ok(Header {
        meta: SnapshotMeta {
            last_index: fixed.last_index,
            last_term: fixed.last_term,
            membership,
        },
        data_offset: fixed.header_len,
        data_len: fixed.data_len,
        data_crc: fixed.data_crc,
    })
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
/// in): appends the membership block of `info.meta` after the data, writes the header,
/// fsyncs, renames the file to its name and fsyncs the directory (both fsyncs skipped
/// without `sync`). Returns the snapshot's path.
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
    // The membership comes from `info`, never from the chunks' metadata: the install's
    // metadata is the authority on the snapshot it installs.
    let membership = encode_membership(&info.meta);
    let header = encode_header(&info.meta, info.size, info.checksum, &membership)?;
    let data_end = HEADER_LEN as u64 + info.size;
    let file = OpenOptions::new()
        .write(true)
        .open(&staged.path)
        .map_err(io_err("open", &staged.path))?;
    // The file ends exactly where the header says, whatever the temp file held past the
    // data (nothing, unless a writer misbehaved): open checks the length.
    file.set_len(data_end)
        .map_err(io_err("truncate", &staged.path))?;
    file.write_all_at(&membership, data_end)
        .map_err(io_err("write", &staged.path))?;
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
    /// Where the data starts (the header's size, which depends on the format).
    data_offset: u64,
}

/// Opens the snapshot `info` describes in `dir`, checking its header (and membership)
/// against `info`.
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
    // The installed info was written into this file (or read from it on open), so a
    // different membership means the file was replaced behind the storage's back.
    if header.meta.membership != info.meta.membership {
        return Err(corruption(
            &path,
            header.data_offset + header.data_len,
            "snapshot file's membership differs from the one installed",
        ));
    }
    Ok(FileReader {
        file,
        path,
        info: info.clone(),
        data_offset: header.data_offset,
    })
}

impl SnapshotReader for FileReader {
    fn info(&self) -> &SnapshotInfo {
        &self.info
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), StorageError> {
        check_range(&self.info, offset, buf.len() as u64)?;
        self.file
            .read_exact_at(buf, self.data_offset + offset)
            .map_err(io_err("read", &self.path))
    }
}

/// Reads the whole snapshot at `meta`'s index and term from `dir`, verifying every
/// checksum; its metadata (the membership with it) is the file's.
pub(super) fn read(dir: &Path, meta: &SnapshotMeta) -> Result<Snapshot, StorageError> {
    let path = dir.join(file_name(meta));
    let file = File::open(&path).map_err(io_err("open", &path))?;
    let header = read_header(&file, &path, meta)?;
    // `read_header` checked the length against the file size, so this cannot be a garbage
    // length asking for an absurd allocation.
    let len = usize::try_from(header.data_len)
        .map_err(|_| corruption(&path, 0, "snapshot too large for memory"))?;
    let mut data = vec![0u8; len];
    file.read_exact_at(&mut data, header.data_offset)
        .map_err(io_err("read", &path))?;
    if crc32c::crc32c(&data) != header.data_crc {
        return Err(corruption(
            &path,
            header.data_offset,
            "snapshot data checksum mismatch",
        ));
    }
    Ok(Snapshot {
        meta: header.meta,
        data: Bytes::from(data),
    })
}

/// Checks the snapshot at `meta`'s index and term in `dir` without keeping its data in
/// memory; returns its info, with the membership the file records.
fn verify(dir: &Path, meta: &SnapshotMeta) -> Result<SnapshotInfo, StorageError> {
    let path = dir.join(file_name(meta));
    let file = File::open(&path).map_err(io_err("open", &path))?;
    let header = read_header(&file, &path, meta)?;
    let mut crc = 0u32;
    let mut chunk = vec![0u8; VERIFY_CHUNK];
    let mut at = header.data_offset;
    // `read_header` checked that the data lies inside the file, so this cannot overflow.
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
            header.data_offset,
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
            // A name carries only index and term; `verify` reads the membership.
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
    use crate::membership::NodeInfo;
    use crate::types::NodeId;

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
        for membership in [None, Some(joint())] {
            let dir = tempfile::tempdir().unwrap();
            let mut s = snap(3, 1, b"some state bytes");
            s.meta.membership = membership.map(std::sync::Arc::new);
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
    }

    /// A joint configuration with a learner and member info: every part of the encoding.
    fn joint() -> Membership {
        let ids = |s: &str| s.split_whitespace().map(NodeId::from).collect();
        let mut m = Membership::new(ids("a b d"), ids("e"));
        m.outgoing = ids("a b c");
        m.nodes.insert(
            NodeId::from("a"),
            NodeInfo {
                address: "10.0.0.1:7001".into(),
                metadata: [("http".to_string(), "10.0.0.1:8001".to_string())].into(),
            },
        );
        m.nodes.insert(NodeId::from("e"), NodeInfo::default());
        m
    }

    /// A snapshot file of the first format, written by hand as the old code wrote it.
    fn write_v1(dir: &Path, i: Index, t: Term, data: &[u8]) -> PathBuf {
        let mut h = Vec::with_capacity(HEADER_LEN_V1 + data.len());
        h.extend_from_slice(b"RLSNAP01");
        h.extend_from_slice(&i.to_le_bytes());
        h.extend_from_slice(&t.to_le_bytes());
        h.extend_from_slice(&(data.len() as u64).to_le_bytes());
        h.extend_from_slice(&crc32c::crc32c(data).to_le_bytes());
        let header_crc = crc32c::crc32c(&h);
        h.extend_from_slice(&header_crc.to_le_bytes());
        assert_eq!(h.len(), HEADER_LEN_V1);
        h.extend_from_slice(data);
        let path = dir.join(format!("{i:020}-{t:020}.snap"));
        fs::write(&path, h).unwrap();
        path
    }

    #[test]
    fn the_membership_round_trips_and_sits_after_the_data() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = snap(7, 2, b"state with a joint configuration");
        s.meta.membership = Some(joint().into());
        let path = write(dir.path(), &s, true).unwrap();
        let bytes = fs::read(&path).unwrap();
        assert_eq!(&bytes[..8], MAGIC_V2);
        let block = joint().encode();
        assert_eq!(bytes.len(), HEADER_LEN + s.data.len() + block.len());
        assert_eq!(&bytes[HEADER_LEN..HEADER_LEN + s.data.len()], &s.data[..]);
        assert_eq!(&bytes[HEADER_LEN + s.data.len()..], &block[..]);
        let info = recover(dir.path()).unwrap().unwrap();
        assert_eq!(info, SnapshotInfo::of(&s));
        assert_eq!(read(dir.path(), &s.meta).unwrap(), s);
        // Looked up by name (index and term only), the file supplies the membership.
        let by_name = SnapshotMeta {
            membership: None,
            ..s.meta.clone()
        };
        assert_eq!(read(dir.path(), &by_name).unwrap().meta, s.meta);
        let reader = open_reader(dir.path(), &info).unwrap();
        assert_eq!(reader.read_chunk(6, 4).unwrap(), "with");
        // A reader opened for another membership than the file's is refused.
        let mut other = info.clone();
        other.meta.membership = Some(Membership::new([NodeId::from("z")], []).into());
        assert!(matches!(
            open_reader(dir.path(), &other),
            Err(StorageError::Corruption { .. })
        ));
    }

    #[test]
    fn an_rlsnap01_file_still_opens_without_a_membership() {
        let dir = tempfile::tempdir().unwrap();
        write_v1(dir.path(), 4, 1, b"old");
        let path = write_v1(dir.path(), 9, 3, b"old format state");
        let info = recover(dir.path()).unwrap().unwrap();
        let expected = snap(9, 3, b"old format state");
        assert_eq!(info, SnapshotInfo::of(&expected));
        assert_eq!(info.meta.membership, None);
        assert_eq!(
            list_files(dir.path()).unwrap(),
            vec![(file_name(&info.meta), path.clone())],
            "the older file is removed"
        );
        assert_eq!(read(dir.path(), &info.meta).unwrap(), expected);
        let reader = open_reader(dir.path(), &info).unwrap();
        assert_eq!(
            reader.read_chunk(4, 6).unwrap(),
            "format",
            "data at offset 40"
        );
        // Damage to an old file is corruption too.
        let mut bad = fs::read(&path).unwrap();
        bad[HEADER_LEN_V1 + 2] ^= 0x10;
        fs::write(&path, bad).unwrap();
        assert!(matches!(
            recover(dir.path()),
            Err(StorageError::Corruption { offset, .. }) if offset == HEADER_LEN_V1 as u64
        ));
    }

    #[test]
    fn a_damaged_or_undecodable_membership_block_is_corruption_at_its_offset() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = snap(5, 1, b"0123456789");
        s.meta.membership = Some(joint().into());
        let path = write(dir.path(), &s, false).unwrap();
        let good = fs::read(&path).unwrap();
        let at = HEADER_LEN + s.data.len();
        let expect = |what: &str, reason_has: &str| match recover(dir.path()) {
            Err(StorageError::Corruption {
                path: p,
                offset,
                reason,
            }) => {
                assert_eq!((p, offset), (path.clone(), at as u64), "{what}");
                assert!(reason.contains(reason_has), "{what}: {reason}");
            }
            other => panic!("{what}: expected corruption, got {other:?}"),
        };
        // A flipped bit: the block's checksum no longer matches.
        let mut bad = good.clone();
        bad[at + 6] ^= 0x04;
        fs::write(&path, &bad).unwrap();
        expect("flipped bit", "checksum");
        // A block whose checksums all match but which is no membership (a version this
        // code does not know, say): refused as well, never read as `None`.
        let mut bad = good.clone();
        bad[at + 4] = 99;
        let block_crc = crc32c::crc32c(&bad[at..]);
        bad[40..44].copy_from_slice(&block_crc.to_le_bytes());
        let header_crc = crc32c::crc32c(&bad[..44]);
        bad[44..48].copy_from_slice(&header_crc.to_le_bytes());
        fs::write(&path, &bad).unwrap();
        expect("unknown version", "does not decode");
        // A header that promises more membership than the file holds.
        let mut bad = good.clone();
        bad.truncate(bad.len() - 1);
        fs::write(&path, &bad).unwrap();
        assert!(matches!(
            recover(dir.path()),
            Err(StorageError::Corruption { offset, .. }) if offset == HEADER_LEN as u64
        ));
        fs::write(&path, &good).unwrap();
        assert_eq!(recover(dir.path()).unwrap(), Some(SnapshotInfo::of(&s)));
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
