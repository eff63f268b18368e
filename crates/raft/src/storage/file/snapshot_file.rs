//! Snapshot files `<dir>/snapshots/<last_index, 20 digits>-<last_term, 20 digits>.snap`.
//!
//! Format (little endian): a 40-byte header, magic `b"RLSNAP01"`, last index `u64`, last
//! term `u64`, data length `u64`, CRC32C of the data `u32`, CRC32C of the preceding 36
//! header bytes `u32`; then the data. A snapshot is written to a `.tmp` file, fsynced and
//! renamed, so a completed file is never torn and any defect in it is corruption.

use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::fsutil::{io_err, list_files, write_atomic};
use crate::error::StorageError;
use crate::types::{Index, Snapshot, SnapshotMeta, Term};

const MAGIC: &[u8; 8] = b"RLSNAP01";
/// Size of the header before the data.
pub(super) const HEADER_LEN: usize = 40;
/// Data is checksummed in pieces of this size, so verifying a large snapshot on open does
/// not need it all in memory.
const VERIFY_CHUNK: usize = 1 << 20;

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

fn encode_header(meta: &SnapshotMeta, data: &[u8]) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(MAGIC);
    h[8..16].copy_from_slice(&meta.last_index.to_le_bytes());
    h[16..24].copy_from_slice(&meta.last_term.to_le_bytes());
    h[24..32].copy_from_slice(&(data.len() as u64).to_le_bytes());
    h[32..36].copy_from_slice(&crc32c::crc32c(data).to_le_bytes());
    let crc = crc32c::crc32c(&h[..36]);
    h[36..40].copy_from_slice(&crc.to_le_bytes());
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

/// Writes `snapshot` into `dir` atomically (durably when `sync`) and returns its path.
pub(super) fn write(dir: &Path, snapshot: &Snapshot, sync: bool) -> Result<PathBuf, StorageError> {
    let header = encode_header(&snapshot.meta, &snapshot.data);
    write_atomic(
        dir,
        &file_name(&snapshot.meta),
        &[&header, &snapshot.data],
        sync,
    )
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

/// Checks the snapshot described by `meta` in `dir` without keeping its data in memory.
fn verify(dir: &Path, meta: &SnapshotMeta) -> Result<(), StorageError> {
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
    Ok(())
}

/// Finds the newest snapshot in `dir`, verifies it and deletes older ones (left behind by a
/// crash after a newer snapshot became durable). A defective newest snapshot is an error,
/// never a reason to fall back silently to an older state.
pub(super) fn recover(dir: &Path) -> Result<Option<SnapshotMeta>, StorageError> {
    let mut found: Vec<(SnapshotMeta, PathBuf)> = list_files(dir)?
        .into_iter()
        .filter_map(|(name, path)| {
            let (last_index, last_term) = parse_file_name(&name)?;
            Some((
                SnapshotMeta {
                    last_index,
                    last_term,
                },
                path,
            ))
        })
        .collect();
    found.sort_by_key(|(m, _)| (m.last_index, m.last_term));
    let Some((newest, _)) = found.pop() else {
        return Ok(None);
    };
    verify(dir, &newest)?;
    for (_, older) in found {
        tracing::debug!(path = %older.display(), "removing superseded snapshot");
        fs::remove_file(&older).map_err(io_err("remove", &older))?;
    }
    Ok(Some(newest))
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
        assert_eq!(recover(dir.path()).unwrap(), Some(new.meta.clone()));
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
        };
        assert_eq!(parse_file_name(&file_name(&meta)), Some((12, 3)));
        assert_eq!(parse_file_name("12-3.snap"), None);
        assert_eq!(parse_file_name(&format!("{}.tmp", file_name(&meta))), None);
    }
}
