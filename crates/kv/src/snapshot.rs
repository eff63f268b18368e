//! raftkv's snapshot format: written and read as a stream, so that a store of any size is
//! snapshotted and restored without a second copy of it in memory.
//!
//! ```text
//! magic "RKVSNAP1" | applied u64 | count u64 | count × (key_len u32 | key | value_len u32 | value)
//! ```
//!
//! Integers are little-endian; keys and values are UTF-8. The snapshot file as a whole is
//! covered by the Raft library's size and CRC32C check, so the format carries no checksum
//! of its own; it checks its own shape (magic, lengths, count, nothing after the last
//! pair). Stores written by earlier versions snapshotted as JSON (`{"applied":…,"data":{…}}`);
//! [`read`] still accepts that form.

use std::collections::BTreeMap;
use std::io::{self, BufReader, BufWriter, Read, Write};

use crate::store::KvState;

/// First bytes of a binary snapshot.
pub const MAGIC: &[u8; 8] = b"RKVSNAP1";

/// Longest key or value accepted when reading (a corrupt length must not allocate
/// gigabytes): far above what the HTTP API lets a client store.
const MAX_FIELD: u32 = 256 << 20;

/// Why a snapshot could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotFormatError {
    /// The underlying reader or writer failed.
    #[error("snapshot i/o: {0}")]
    Io(#[from] io::Error),
    /// The bytes are not a snapshot of this format.
    #[error("malformed snapshot: {0}")]
    Malformed(String),
}

/// Writes `pairs` (`count` of them, in any order) as a snapshot at `applied`, streaming.
pub fn write<K: AsRef<str>, V: AsRef<str>>(
    out: &mut dyn Write,
    applied: u64,
    count: u64,
    pairs: impl Iterator<Item = (K, V)>,
) -> Result<(), SnapshotFormatError> {
    let mut out = BufWriter::with_capacity(1 << 20, out);
    out.write_all(MAGIC)?;
    out.write_all(&applied.to_le_bytes())?;
    out.write_all(&count.to_le_bytes())?;
    let mut written = 0u64;
    for (key, value) in pairs {
        write_field(&mut out, key.as_ref())?;
        write_field(&mut out, value.as_ref())?;
        written += 1;
    }
    if written != count {
        return Err(SnapshotFormatError::Malformed(format!(
            "announced {count} pairs, wrote {written}"
        )));
    }
    out.flush()?;
    Ok(())
}

fn write_field(out: &mut impl Write, field: &str) -> Result<(), SnapshotFormatError> {
    let len = u32::try_from(field.len())
        .ok()
        .filter(|l| *l <= MAX_FIELD)
        .ok_or_else(|| {
            SnapshotFormatError::Malformed(format!("a field of {} bytes", field.len()))
        })?;
    out.write_all(&len.to_le_bytes())?;
    out.write_all(field.as_bytes())?;
    Ok(())
}

/// Reads a snapshot (binary, or the JSON of earlier versions) into a fresh state.
pub fn read(input: &mut dyn Read) -> Result<KvState, SnapshotFormatError> {
    let mut input = BufReader::with_capacity(1 << 20, input);
    let mut magic = [0u8; 8];
    let got = read_up_to(&mut input, &mut magic)?;
    if got > 0 && magic[0] == b'{' {
        let mut json = magic[..got].to_vec();
        input.read_to_end(&mut json)?;
        return serde_json::from_slice(&json)
            .map_err(|e| SnapshotFormatError::Malformed(format!("legacy JSON snapshot: {e}")));
    }
    if got != magic.len() || &magic != MAGIC {
        return Err(SnapshotFormatError::Malformed(
            "not a raftkv snapshot (bad magic)".into(),
        ));
    }
    let applied = read_u64(&mut input)?;
    let count = read_u64(&mut input)?;
    let mut data = BTreeMap::new();
    for n in 0..count {
        let key = read_field(&mut input).map_err(|e| at_pair(e, n))?;
        let value = read_field(&mut input).map_err(|e| at_pair(e, n))?;
        data.insert(key, value);
    }
    let mut extra = [0u8; 1];
    if read_up_to(&mut input, &mut extra)? != 0 {
        return Err(SnapshotFormatError::Malformed(format!(
            "bytes after the last of {count} pairs"
        )));
    }
    Ok(KvState { applied, data })
}

fn at_pair(e: SnapshotFormatError, n: u64) -> SnapshotFormatError {
    match e {
        SnapshotFormatError::Io(io) if io.kind() == io::ErrorKind::UnexpectedEof => {
            SnapshotFormatError::Malformed(format!("cut short in pair {n}"))
        }
        SnapshotFormatError::Malformed(m) => {
            SnapshotFormatError::Malformed(format!("pair {n}: {m}"))
        }
        other => other,
    }
}

/// Fills `buf` as far as the input allows; returns how many bytes were read.
fn read_up_to(input: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

fn read_u64(input: &mut impl Read) -> Result<u64, SnapshotFormatError> {
    let mut b = [0u8; 8];
    input.read_exact(&mut b).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            SnapshotFormatError::Malformed("header cut short".into())
        } else {
            e.into()
        }
    })?;
    Ok(u64::from_le_bytes(b))
}

fn read_field(input: &mut impl Read) -> Result<String, SnapshotFormatError> {
    let mut b = [0u8; 4];
    input.read_exact(&mut b)?;
    let len = u32::from_le_bytes(b);
    if len > MAX_FIELD {
        return Err(SnapshotFormatError::Malformed(format!(
            "a field of {len} bytes"
        )));
    }
    let mut field = vec![0u8; len as usize];
    input.read_exact(&mut field)?;
    String::from_utf8(field)
        .map_err(|_| SnapshotFormatError::Malformed("a field that is not UTF-8".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(n: usize) -> KvState {
        KvState {
            applied: 42,
            data: (0..n)
                .map(|i| (format!("key-{i}"), "v".repeat(i % 7)))
                .collect(),
        }
    }

    fn encode(s: &KvState) -> Vec<u8> {
        let mut out = Vec::new();
        write(
            &mut out,
            s.applied,
            s.data.len() as u64,
            s.data.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        )
        .unwrap();
        out
    }

    #[test]
    fn round_trips_and_reads_the_legacy_json_form() {
        for n in [0, 1, 1000] {
            let s = state(n);
            let back = read(&mut encode(&s).as_slice()).unwrap();
            assert_eq!((back.applied, &back.data), (s.applied, &s.data));
            let json = serde_json::to_vec(&s).unwrap();
            let back = read(&mut json.as_slice()).unwrap();
            assert_eq!(back.data, s.data);
        }
    }

    #[test]
    fn every_truncation_and_trailing_garbage_is_refused() {
        let bytes = encode(&state(20));
        for cut in 0..bytes.len() {
            assert!(read(&mut &bytes[..cut]).is_err(), "cut at {cut} accepted");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(read(&mut longer.as_slice()).is_err());
        let mut huge = bytes[..24].to_vec();
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        let e = read(&mut huge.as_slice()).unwrap_err().to_string();
        assert!(e.contains("bytes"), "{e}");
    }

    #[test]
    fn a_wrong_count_is_refused_when_writing() {
        let mut out = Vec::new();
        let e = write(&mut out, 1, 2, [("a", "b")].into_iter()).unwrap_err();
        assert!(e.to_string().contains("announced 2"), "{e}");
    }
}
