//! The hard-state file `<dir>/hardstate`: term and vote, replaced atomically.
//!
//! Format (little endian): magic `b"RLHS"`, version `u8 = 1`, term `u64`, length of the
//! voted-for id `u32` (0 = no vote; node ids are never empty), the id's UTF-8 bytes, then
//! the CRC32C of everything before it. The file is only ever replaced by rename, so it is
//! never torn: any defect is real corruption and is reported at offset 0.

use std::fs;
use std::io;
use std::path::Path;

use super::fsutil::{io_err, write_atomic};
use crate::error::StorageError;
use crate::types::{HardState, NodeId};

/// Name of the hard-state file inside the data directory.
pub(super) const HARD_STATE_FILE: &str = "hardstate";

const MAGIC: &[u8; 4] = b"RLHS";
const VERSION: u8 = 1;
/// magic + version + term + id length.
const FIXED_LEN: usize = 4 + 1 + 8 + 4;

/// Encodes a hard state in the file format.
pub(super) fn encode(state: &HardState) -> Vec<u8> {
    let id = state
        .voted_for
        .as_ref()
        .map_or("", |v| v.as_str())
        .as_bytes();
    let mut buf = Vec::with_capacity(FIXED_LEN + id.len() + 4);
    buf.extend_from_slice(MAGIC);
    buf.push(VERSION);
    buf.extend_from_slice(&state.term.to_le_bytes());
    // Node ids are short strings; one longer than 4 GiB cannot be built in practice, and
    // saturating keeps this infallible (decode would then reject the file, not misread it).
    let len = u32::try_from(id.len()).unwrap_or(u32::MAX);
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(id);
    let crc = crc32c::crc32c(&buf);
    buf.extend_from_slice(&crc.to_le_bytes());
    buf
}

/// Decodes the file format; the error is the reason the bytes are not a valid hard state.
pub(super) fn decode(buf: &[u8]) -> Result<HardState, String> {
    if buf.len() < FIXED_LEN + 4 {
        return Err(format!(
            "hard-state file is {} bytes, at least {} expected",
            buf.len(),
            FIXED_LEN + 4
        ));
    }
    let (body, crc) = buf.split_at(buf.len() - 4);
    let stored = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
    if crc32c::crc32c(body) != stored {
        return Err("hard-state checksum mismatch".into());
    }
    if &body[..4] != MAGIC {
        return Err("bad hard-state magic".into());
    }
    if body[4] != VERSION {
        return Err(format!("unsupported hard-state version {}", body[4]));
    }
    let mut term = [0u8; 8];
    term.copy_from_slice(&body[5..13]);
    let mut len = [0u8; 4];
    len.copy_from_slice(&body[13..17]);
    let id = &body[FIXED_LEN..];
    if usize::try_from(u32::from_le_bytes(len)).ok() != Some(id.len()) {
        return Err("hard-state vote length does not match the file size".into());
    }
    let voted_for = match std::str::from_utf8(id) {
        Ok("") => None,
        Ok(s) => Some(NodeId::from(s)),
        Err(_) => return Err("hard-state vote is not UTF-8".into()),
    };
    Ok(HardState {
        term: u64::from_le_bytes(term),
        voted_for,
    })
}

/// Reads the hard state of `dir`; a missing file is a fresh node (term 0, no vote).
pub(super) fn load(dir: &Path) -> Result<HardState, StorageError> {
    let path = dir.join(HARD_STATE_FILE);
    let buf = match fs::read(&path) {
        Ok(buf) => buf,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(HardState::default()),
        Err(e) => return Err(io_err("read", &path)(e)),
    };
    decode(&buf).map_err(|reason| StorageError::Corruption {
        path,
        offset: 0,
        reason,
    })
}

/// Replaces the hard state of `dir` atomically (durably when `sync`).
pub(super) fn store(dir: &Path, state: &HardState, sync: bool) -> Result<(), StorageError> {
    write_atomic(dir, HARD_STATE_FILE, &[&encode(state)], sync).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_with_and_without_vote() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()).unwrap(), HardState::default());
        for state in [
            HardState {
                term: 7,
                voted_for: Some(NodeId::from("node-2")),
            },
            HardState {
                term: u64::MAX,
                voted_for: None,
            },
        ] {
            store(dir.path(), &state, true).unwrap();
            assert_eq!(load(dir.path()).unwrap(), state);
        }
    }

    #[test]
    fn every_single_byte_flip_and_truncation_is_rejected() {
        let good = encode(&HardState {
            term: 3,
            voted_for: Some(NodeId::from("n1")),
        });
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x40;
            assert!(decode(&bad).is_err(), "flip at {i} accepted");
            assert!(decode(&good[..i]).is_err(), "truncation to {i} accepted");
        }
    }

    #[test]
    fn corrupt_file_is_reported_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(HARD_STATE_FILE), b"RLHS garbage").unwrap();
        match load(dir.path()) {
            Err(StorageError::Corruption { path, offset, .. }) => {
                assert_eq!(path, dir.path().join(HARD_STATE_FILE));
                assert_eq!(offset, 0);
            }
            other => panic!("expected corruption, got {other:?}"),
        }
    }
}
