//! Snapshot data in and out of storage, streamed, so that no part of a node needs a whole
//! snapshot in memory:
//!
//! - a [`SnapshotWriter`] takes the bytes of a new snapshot (streamed by the state machine,
//!   or received from the leader chunk by chunk) into a temporary place: a `.tmp` file in
//!   the data directory for [`FileStorage`](super::FileStorage);
//! - finishing it makes the bytes durable and leaves a [`StagedSnapshot`], which
//!   [`Storage::install_snapshot`](super::Storage::install_snapshot) turns into the current
//!   snapshot (by rename for `FileStorage`); dropped uninstalled, it deletes itself;
//! - a [`SnapshotReader`] reads an installed snapshot at any offset: chunks for followers,
//!   and the whole of it for the state machine through [`SnapshotStream`], which checks the
//!   size and CRC32C at the end. A reader keeps reading the snapshot it was opened on even
//!   after a newer one replaced it (an open file survives the rename over its name).
//!
//! The in-memory forms (`MemWriter`, `BytesReader`, [`StagedSnapshot::from_bytes`]) back
//! `MemStorage` and the `Bytes` based [`Storage::save_snapshot`](super::Storage::save_snapshot)
//! and [`Storage::load_snapshot`](super::Storage::load_snapshot).

use std::fmt;
use std::io::{self, Read, Write};
use std::sync::Arc;

use bytes::Bytes;

use super::file::StagedFile;
use crate::error::StorageError;
use crate::types::{SnapshotInfo, SnapshotMeta};

/// Reads one stored snapshot at any offset. Cheap to share between threads (the runtime
/// reads chunks off its event loop); it reads the same bytes for as long as it lives, even
/// after storage installed a newer snapshot.
pub trait SnapshotReader: Send + Sync + fmt::Debug {
    /// Which snapshot this is, its size and checksum.
    fn info(&self) -> &SnapshotInfo;

    /// Fills `buf` with the snapshot's bytes from `offset`. A range past the end is refused
    /// with [`StorageError::InvalidRequest`].
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), StorageError>;

    /// The `len` bytes at `offset` (one chunk for a follower).
    fn read_chunk(&self, offset: u64, len: u64) -> Result<Bytes, StorageError> {
        check_range(self.info(), offset, len)?;
        let len = usize::try_from(len)
            .map_err(|_| StorageError::InvalidRequest(format!("chunk of {len} bytes")))?;
        let mut buf = vec![0u8; len];
        self.read_at(offset, &mut buf)?;
        Ok(Bytes::from(buf))
    }
}

/// Refuses a read of `len` bytes at `offset` that does not lie inside the snapshot.
pub(crate) fn check_range(info: &SnapshotInfo, offset: u64, len: u64) -> Result<(), StorageError> {
    match offset.checked_add(len) {
        Some(end) if end <= info.size => Ok(()),
        _ => Err(StorageError::InvalidRequest(format!(
            "read of {len} bytes at offset {offset} of a snapshot of {} bytes",
            info.size
        ))),
    }
}

/// The whole snapshot of a [`SnapshotReader`] as an [`io::Read`], for
/// [`Applier::restore_from`](crate::Applier::restore_from). Reaching the end checks the
/// bytes read against the snapshot's CRC32C: a mismatch is an [`io::ErrorKind::InvalidData`]
/// error instead of the end of the data. Reads go straight to the reader, so wrap it in a
/// [`std::io::BufReader`] for small reads.
#[derive(Debug)]
pub struct SnapshotStream {
    reader: Arc<dyn SnapshotReader>,
    pos: u64,
    crc: u32,
}

impl SnapshotStream {
    /// A stream over the whole snapshot, from its first byte.
    pub fn new(reader: Arc<dyn SnapshotReader>) -> Self {
        SnapshotStream {
            reader,
            pos: 0,
            crc: 0,
        }
    }

    /// Reads whatever the consumer left and checks the checksum, so that a consumer that
    /// stopped early (its format knows its own end) still had every byte verified.
    pub fn finish(mut self) -> io::Result<()> {
        io::copy(&mut self, &mut io::sink()).map(drop)
    }
}

impl Read for SnapshotStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let info = self.reader.info();
        let left = info.size - self.pos;
        if left == 0 {
            if self.crc != info.checksum {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "snapshot at index {} failed its checksum (CRC32C {:08x}, expected {:08x})",
                        info.meta.last_index, self.crc, info.checksum
                    ),
                ));
            }
            return Ok(0);
        }
        let n = usize::try_from(left).map_or(buf.len(), |left| left.min(buf.len()));
        if n == 0 {
            return Ok(0);
        }
        let buf = &mut buf[..n];
        self.reader.read_at(self.pos, buf)?;
        self.crc = crc32c::crc32c_append(self.crc, buf);
        self.pos += n as u64;
        Ok(n)
    }
}

/// Takes the bytes of a new snapshot, as an [`io::Write`], into a temporary place that
/// storage can install. Independent of the storage that made it, so a state machine can
/// stream into it on its own thread while storage goes on writing the log. Dropped before
/// [`finish`](SnapshotWriter::finish), it deletes what it wrote.
pub trait SnapshotWriter: Write + Send {
    /// Bytes written so far.
    fn written(&self) -> u64;

    /// Makes the written bytes durable (an fsync of the temporary file) and hands them over
    /// for [`Storage::install_snapshot`](super::Storage::install_snapshot).
    fn finish(self: Box<Self>) -> Result<StagedSnapshot, StorageError>;
}

/// A finished, durable snapshot that is not installed yet: what a [`SnapshotWriter`] leaves.
/// Dropped without being installed, it deletes itself.
pub struct StagedSnapshot {
    size: u64,
    checksum: u32,
    pub(crate) body: Staged,
}

/// Where the bytes of a staged snapshot are.
pub(crate) enum Staged {
    Memory(Bytes),
    File(StagedFile),
}

impl StagedSnapshot {
    /// A snapshot staged in memory (storage that keeps nothing on disk, or a caller that
    /// has the bytes already); every storage accepts it.
    pub fn from_bytes(data: Bytes) -> Self {
        StagedSnapshot {
            size: data.len() as u64,
            checksum: crc32c::crc32c(&data),
            body: Staged::Memory(data),
        }
    }

    /// A snapshot staged in a file of `FileStorage`'s.
    pub(crate) fn from_file(file: StagedFile, size: u64, checksum: u32) -> Self {
        StagedSnapshot {
            size,
            checksum,
            body: Staged::File(file),
        }
    }

    /// Size of the data in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// CRC32C of the data.
    pub fn checksum(&self) -> u32 {
        self.checksum
    }

    /// Refuses to install these bytes as the snapshot `info` describes unless their size
    /// and checksum are the ones expected.
    pub(crate) fn check(&self, info: &SnapshotInfo) -> Result<(), StorageError> {
        if (self.size, self.checksum) != (info.size, info.checksum) {
            return Err(StorageError::InvalidRequest(format!(
                "snapshot at index {} has {} bytes with CRC32C {:08x}; the install expects {} bytes with {:08x}",
                info.meta.last_index, self.size, self.checksum, info.size, info.checksum
            )));
        }
        Ok(())
    }
}

impl fmt::Debug for StagedSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let place = match &self.body {
            Staged::Memory(_) => "memory".to_string(),
            Staged::File(file) => file.path().display().to_string(),
        };
        f.debug_struct("StagedSnapshot")
            .field("size", &self.size)
            .field("checksum", &self.checksum)
            .field("in", &place)
            .finish()
    }
}

/// Where the bytes of a snapshot to install come from.
#[derive(Debug)]
pub enum SnapshotSource {
    /// The snapshot received from the leader through
    /// [`Storage::write_snapshot_chunk`](super::Storage::write_snapshot_chunk).
    Received,
    /// A snapshot written through a [`SnapshotWriter`] (the node's own).
    Staged(StagedSnapshot),
}

/// A [`SnapshotWriter`] into memory. The checksum is kept up as bytes arrive, so that it
/// costs nothing more at the end (where an in-memory storage runs on the event loop).
#[derive(Debug, Default, Clone)]
pub(crate) struct MemWriter {
    buf: Vec<u8>,
    crc: u32,
}

impl Write for MemWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        self.crc = crc32c::crc32c_append(self.crc, data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl SnapshotWriter for MemWriter {
    fn written(&self) -> u64 {
        self.buf.len() as u64
    }

    fn finish(self: Box<Self>) -> Result<StagedSnapshot, StorageError> {
        let MemWriter { buf, crc } = *self;
        Ok(StagedSnapshot {
            size: buf.len() as u64,
            checksum: crc,
            body: Staged::Memory(Bytes::from(buf)),
        })
    }
}

/// A [`SnapshotReader`] over bytes in memory.
#[derive(Debug)]
pub(crate) struct BytesReader {
    info: SnapshotInfo,
    data: Bytes,
}

impl BytesReader {
    pub(crate) fn new(info: SnapshotInfo, data: Bytes) -> Self {
        debug_assert_eq!(info.size, data.len() as u64);
        BytesReader { info, data }
    }
}

impl SnapshotReader for BytesReader {
    fn info(&self) -> &SnapshotInfo {
        &self.info
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), StorageError> {
        check_range(&self.info, offset, buf.len() as u64)?;
        // In range, so both fit in usize: the data is in memory.
        let at = offset as usize;
        buf.copy_from_slice(&self.data[at..at + buf.len()]);
        Ok(())
    }

    fn read_chunk(&self, offset: u64, len: u64) -> Result<Bytes, StorageError> {
        check_range(&self.info, offset, len)?;
        Ok(self.data.slice(offset as usize..(offset + len) as usize))
    }
}

/// The snapshot being received from the leader: its chunks go to a writer in order.
#[derive(Clone)]
pub(crate) struct Receiving<W> {
    meta: SnapshotMeta,
    writer: W,
}

impl<W: SnapshotWriter> fmt::Debug for Receiving<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receiving")
            .field("meta", &self.meta)
            .field("written", &self.writer.written())
            .finish()
    }
}

/// Whether `a` and `b` describe the same snapshot: the same index and term. The membership
/// is not compared: it is a property of the log at that index, and the one a received
/// snapshot is installed with is the install's (see [`take_received`]).
fn same_snapshot(a: &SnapshotMeta, b: &SnapshotMeta) -> bool {
    (a.last_index, a.last_term) == (b.last_index, b.last_term)
}

/// Writes a chunk of the snapshot `meta` at `offset` into `slot`: offset 0 starts the
/// snapshot anew (in a writer from `new_writer`, dropping whatever was being received);
/// any other offset must continue the same snapshot (same index and term) exactly where it
/// stands. The core sends chunks only in that order, so anything else is refused.
pub(crate) fn receive_chunk<W: SnapshotWriter>(
    slot: &mut Option<Receiving<W>>,
    meta: &SnapshotMeta,
    offset: u64,
    data: &[u8],
    new_writer: impl FnOnce() -> Result<W, StorageError>,
) -> Result<(), StorageError> {
    if offset == 0 {
        *slot = None;
        *slot = Some(Receiving {
            meta: meta.clone(),
            writer: new_writer()?,
        });
    }
    let written = slot
        .as_ref()
        .filter(|r| same_snapshot(&r.meta, meta))
        .map(|r| r.writer.written());
    let Some(r) = slot.as_mut().filter(|_| written == Some(offset)) else {
        return Err(StorageError::InvalidRequest(format!(
            "chunk at offset {offset} of the snapshot at index {} term {}, where {} was expected",
            meta.last_index,
            meta.last_term,
            written.map_or_else(|| "offset 0".to_string(), |w| format!("offset {w}"))
        )));
    };
    r.writer
        .write_all(data)
        .map_err(|e| storage_error(e, "write snapshot chunk"))
}

/// Finishes the received snapshot `info` describes; refused unless it is the one being
/// received (index and term) and every byte of it was received (its size and checksum).
/// The chunks' metadata is dropped here: the caller installs with `info.meta`, whose
/// membership is the authority.
pub(crate) fn take_received<W: SnapshotWriter + 'static>(
    slot: &mut Option<Receiving<W>>,
    info: &SnapshotInfo,
) -> Result<StagedSnapshot, StorageError> {
    let Some(r) = slot.take() else {
        return Err(StorageError::InvalidRequest(format!(
            "install of a received snapshot at index {} but none is being received",
            info.meta.last_index
        )));
    };
    if !same_snapshot(&r.meta, &info.meta) {
        return Err(StorageError::InvalidRequest(format!(
            "install of a received snapshot at index {} term {}, but the one received is at index {} term {}",
            info.meta.last_index, info.meta.last_term, r.meta.last_index, r.meta.last_term
        )));
    }
    let staged = Box::new(r.writer).finish()?;
    staged.check(info)?;
    Ok(staged)
}

/// The bytes of a staged snapshot, read back into memory (storage that keeps snapshots in
/// memory, given one staged in a file).
pub(crate) fn staged_bytes(staged: StagedSnapshot) -> Result<Bytes, StorageError> {
    match staged.body {
        Staged::Memory(data) => Ok(data),
        Staged::File(file) => file.read_data(),
    }
}

/// The [`StorageError`] inside an I/O error from a writer (file writers wrap theirs with
/// path and operation), or a new one.
pub(crate) fn storage_error(e: io::Error, op: &'static str) -> StorageError {
    match e.into_inner().map(|inner| inner.downcast::<StorageError>()) {
        Some(Ok(inner)) => *inner,
        Some(Err(other)) => StorageError::io(op, "", io::Error::other(other)),
        None => StorageError::io(op, "", io::Error::other("I/O error")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(data: &'static [u8]) -> Arc<dyn SnapshotReader> {
        let info = SnapshotInfo {
            meta: SnapshotMeta {
                last_index: 3,
                last_term: 1,
                membership: None,
            },
            size: data.len() as u64,
            checksum: crc32c::crc32c(data),
        };
        Arc::new(BytesReader::new(info, Bytes::from_static(data)))
    }

    #[test]
    fn stream_reads_everything_and_checks_the_checksum_at_the_end() {
        let r = reader(b"hello snapshot");
        let mut out = Vec::new();
        SnapshotStream::new(r.clone())
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, b"hello snapshot");
        assert_eq!(r.read_chunk(6, 8).unwrap(), "snapshot");
        assert!(r.read_chunk(6, 9).is_err(), "past the end");
        let mut bad = r.info().clone();
        bad.checksum ^= 1;
        let bad: Arc<dyn SnapshotReader> =
            Arc::new(BytesReader::new(bad, Bytes::from_static(b"hello snapshot")));
        let mut stream = SnapshotStream::new(bad.clone());
        let mut first = [0u8; 5];
        stream.read_exact(&mut first).unwrap();
        let err = stream.finish().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn chunks_must_arrive_in_order_and_offset_zero_starts_over() {
        let meta = SnapshotMeta {
            last_index: 9,
            last_term: 2,
            membership: None,
        };
        let other = SnapshotMeta {
            last_index: 10,
            last_term: 2,
            membership: None,
        };
        let mut slot = None;
        let new = || Ok(MemWriter::default());
        assert!(receive_chunk(&mut slot, &meta, 3, b"abc", new).is_err());
        receive_chunk(&mut slot, &meta, 0, b"abc", new).unwrap();
        assert!(receive_chunk(&mut slot, &meta, 2, b"x", new).is_err());
        assert!(receive_chunk(&mut slot, &other, 3, b"x", new).is_err());
        receive_chunk(&mut slot, &meta, 3, b"def", new).unwrap();
        receive_chunk(&mut slot, &meta, 0, b"new", new).unwrap();
        let info = SnapshotInfo {
            meta: meta.clone(),
            size: 3,
            checksum: crc32c::crc32c(b"new"),
        };
        let mut wrong = info.clone();
        wrong.size = 6;
        let mut kept = None;
        receive_chunk(&mut kept, &meta, 0, b"new", new).unwrap();
        assert!(take_received(&mut kept, &wrong).is_err(), "size checked");
        let staged = take_received(&mut slot, &info).unwrap();
        assert_eq!(staged_bytes(staged).unwrap(), "new");
        assert!(take_received(&mut slot, &info).is_err(), "taken once");
    }
}
