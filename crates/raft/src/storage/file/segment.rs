//! Log segment files: naming, the segment header with its "synced end" checkpoint, record
//! framing, and the scans that recovery uses to find where valid data ends.
//!
//! A segment `<first_index, 20 digits>.seg` starts with a header and is followed by
//! records. Two header formats exist:
//!
//! ```text
//! RLWAL001 (16 bytes, first format):  magic | first index u64
//! RLWAL002 (80 bytes, current):       magic | first index u64 | slot 0 (32) | slot 1 (32)
//! slot:  seq u64 | synced end u64 | synced next index u64 | reserved u32 (0) | crc u32
//!        crc = CRC32C(first index, 8 bytes LE ++ the slot's first 28 bytes)
//! record: [len u32 LE][crc u32 LE][payload: index u64 LE | term u64 LE | kind u8 | data]
//!        crc = CRC32C(first index, 8 bytes LE ++ len, 4 bytes LE ++ payload)
//! ```
//!
//! Seeding the checksums with the segment's first index makes a record (or a slot) left
//! over from another segment (a recycled or renamed file) fail the check instead of
//! passing as data. A zero record header (length and checksum both zero) at a record
//! boundary marks the end of data, so zero-filled space after the last record
//! (pre-allocation) reads as "nothing more"; an 8-byte end marker of zeros closes a segment
//! whose file holds older bytes after its records (a recycled file), so a scan never reads
//! past its data. A zero length with a non-zero checksum field is a damaged record, not an
//! end: one flipped bit can zero a small length, but not the checksum next to it as well.
//!
//! # The checkpoint
//!
//! The checkpoint says how far the segment's records were made durable: every record
//! that starts below `synced end` (and so every index below `synced next index`) was
//! covered by a completed `sync`. Recovery never cuts below it: damage there is
//! corruption, not a torn write. It is kept in two slots written alternately, the one of
//! parity `seq % 2`, and the valid slot with the higher `seq` wins; a torn slot write
//! therefore leaves the previous value readable in the other slot. Why this design and
//! how it is written (after the fsync it describes, never before) is in `log.rs`.

use bytes::Bytes;

use crate::types::{Entry, EntryKind, Index, Term};

/// Magic at the start of a segment file of the current format (with a checkpoint).
pub(super) const SEGMENT_MAGIC: &[u8; 8] = b"RLWAL002";
/// Magic of the first format: a 16-byte header, no checkpoint.
pub(super) const SEGMENT_MAGIC_V1: &[u8; 8] = b"RLWAL001";
/// Size of a first-format header: magic + first index.
pub(super) const V1_HEADER_LEN: usize = 16;
/// Size of one checkpoint slot.
pub(super) const SLOT_LEN: usize = 32;
/// Offset of checkpoint slot 0 (slot 1 follows it).
pub(super) const SLOTS_AT: usize = 16;
/// Size of the current header: magic + first index + two checkpoint slots.
pub(super) const SEGMENT_HEADER_LEN: usize = SLOTS_AT + 2 * SLOT_LEN;
/// Size of a record's `[len][crc]` prefix.
pub(super) const RECORD_HEADER_LEN: usize = 8;
/// Bytes of a payload before the entry's data: index + term + kind.
pub(super) const PAYLOAD_FIXED_LEN: usize = 17;
/// Largest payload accepted. Anything bigger in a file is a torn or corrupt length field,
/// and refusing it up front keeps a garbage length from triggering a huge allocation.
pub(super) const MAX_PAYLOAD_LEN: usize = 256 << 20;

/// File name of the segment whose first entry is `first_index`.
pub(super) fn file_name(first_index: Index) -> String {
    format!("{first_index:020}.seg")
}

/// The first index encoded in a segment file name, `None` if the name is not a segment's.
pub(super) fn parse_file_name(name: &str) -> Option<Index> {
    let digits = name.strip_suffix(".seg")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// How far a segment's records are known to be durable (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Checkpoint {
    /// Sequence number of the write; it picks the slot (`seq % 2`) and orders the two.
    pub seq: u64,
    /// Byte offset up to which the records were synced (a record boundary).
    pub end: u64,
    /// Index one past the last synced record.
    pub next: Index,
}

impl Checkpoint {
    /// Offset in the file of the slot this checkpoint is written to.
    pub(super) fn slot_offset(&self) -> u64 {
        (SLOTS_AT + SLOT_LEN * usize::from(self.seq % 2 == 1)) as u64
    }

    /// The checkpoint that follows this one, claiming `end` and `next`.
    pub(super) fn successor(&self, end: u64, next: Index) -> Checkpoint {
        Checkpoint {
            seq: self.seq + 1,
            end,
            next,
        }
    }
}

/// The bytes of the slot holding `checkpoint` in a segment starting at `first_index`.
pub(super) fn encode_slot(first_index: Index, checkpoint: &Checkpoint) -> [u8; SLOT_LEN] {
    let mut slot = [0u8; SLOT_LEN];
    slot[..8].copy_from_slice(&checkpoint.seq.to_le_bytes());
    slot[8..16].copy_from_slice(&checkpoint.end.to_le_bytes());
    slot[16..24].copy_from_slice(&checkpoint.next.to_le_bytes());
    // slot[24..28]: reserved, zero.
    let crc = slot_crc(first_index, &slot[..SLOT_LEN - 4]);
    slot[SLOT_LEN - 4..].copy_from_slice(&crc.to_le_bytes());
    slot
}

fn slot_crc(first_index: Index, body: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&first_index.to_le_bytes()), body)
}

/// The checkpoint in the slot at `slot_at`, if the slot verifies, sits at the place its
/// sequence number calls for, and is sane.
fn decode_slot(header: &[u8], slot_at: usize, first_index: Index) -> Option<Checkpoint> {
    let slot = header.get(slot_at..slot_at + SLOT_LEN)?;
    let crc = read_u32(slot, SLOT_LEN - 4)?;
    if slot_crc(first_index, &slot[..SLOT_LEN - 4]) != crc || read_u32(slot, 24)? != 0 {
        return None;
    }
    let checkpoint = Checkpoint {
        seq: read_u64(slot, 0)?,
        end: read_u64(slot, 8)?,
        next: read_u64(slot, 16)?,
    };
    let sane = checkpoint.seq != 0
        && checkpoint.slot_offset() == slot_at as u64
        && checkpoint.end >= SEGMENT_HEADER_LEN as u64
        && checkpoint.next >= first_index;
    sane.then_some(checkpoint)
}

/// The header of a new segment starting at `first_index`: both slots hold "nothing synced
/// yet" (sequence numbers 1 and 2), so that any one damaged slot leaves a valid one.
pub(super) fn encode_header(first_index: Index) -> [u8; SEGMENT_HEADER_LEN] {
    let mut h = [0u8; SEGMENT_HEADER_LEN];
    h[..8].copy_from_slice(SEGMENT_MAGIC);
    h[8..16].copy_from_slice(&first_index.to_le_bytes());
    for seq in [1, 2] {
        let c = Checkpoint {
            seq,
            end: SEGMENT_HEADER_LEN as u64,
            next: first_index,
        };
        let at = c.slot_offset() as usize;
        h[at..at + SLOT_LEN].copy_from_slice(&encode_slot(first_index, &c));
    }
    h
}

/// The checkpoint a freshly written header holds (the newer of its two slots).
pub(super) fn initial_checkpoint(first_index: Index) -> Checkpoint {
    Checkpoint {
        seq: 2,
        end: SEGMENT_HEADER_LEN as u64,
        next: first_index,
    }
}

/// What a valid segment header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Header {
    /// Where the records start.
    pub len: usize,
    /// The newest valid checkpoint; `None` in the first format, which has none.
    pub checkpoint: Option<Checkpoint>,
}

/// A segment header that cannot be used.
#[derive(Debug)]
pub(super) struct HeaderError {
    /// Offset of the damaged field.
    pub offset: u64,
    /// What is wrong.
    pub reason: String,
}

/// Checks a segment header against the first index its file name promises and reads its
/// checkpoint.
pub(super) fn check_header(buf: &[u8], first_index: Index) -> Result<Header, HeaderError> {
    let err = |offset: u64, reason: String| HeaderError { offset, reason };
    let len = match buf.get(..8) {
        Some(m) if m == SEGMENT_MAGIC => SEGMENT_HEADER_LEN,
        Some(m) if m == SEGMENT_MAGIC_V1 => V1_HEADER_LEN,
        Some(_) => return Err(err(0, "bad segment magic".into())),
        None => {
            return Err(err(
                0,
                format!("segment header is {} bytes, too short", buf.len()),
            ))
        }
    };
    if buf.len() < len {
        return Err(err(
            0,
            format!("segment header is {} bytes, {len} expected", buf.len()),
        ));
    }
    match read_u64(buf, 8) {
        Some(i) if i == first_index => {}
        Some(i) => {
            return Err(err(
                8,
                format!("segment header says first index {i} but the file name says {first_index}"),
            ))
        }
        None => return Err(err(8, "segment header is short".into())),
    }
    if len == V1_HEADER_LEN {
        return Ok(Header {
            len,
            checkpoint: None,
        });
    }
    let newest = [SLOTS_AT, SLOTS_AT + SLOT_LEN]
        .into_iter()
        .filter_map(|at| decode_slot(buf, at, first_index))
        .max_by_key(|c| c.seq);
    match newest {
        Some(checkpoint) => Ok(Header {
            len,
            checkpoint: Some(checkpoint),
        }),
        // Each write touches one slot, so a crash never damages both.
        None => Err(err(
            SLOTS_AT as u64,
            "neither checkpoint slot of the segment header is valid".into(),
        )),
    }
}

/// On-disk size of an entry's record.
#[cfg(test)]
pub(super) fn record_len(entry: &Entry) -> usize {
    RECORD_HEADER_LEN + PAYLOAD_FIXED_LEN + entry.data.len()
}

/// [`Entry::size_hint`] of the entry stored in a record of `record_len` bytes, so that byte
/// budgets can be applied from the offset index without reading the record.
pub(super) fn size_hint_of_record(record_len: u64) -> u64 {
    // size_hint = 21 + data, record = 8 + 17 + data.
    record_len.saturating_sub(4)
}

fn record_crc(segment_first: Index, len: u32, payload: &[u8]) -> u32 {
    let crc = crc32c::crc32c(&segment_first.to_le_bytes());
    let crc = crc32c::crc32c_append(crc, &len.to_le_bytes());
    crc32c::crc32c_append(crc, payload)
}

/// Appends the record of `entry` to `buf`. The caller has checked that the data fits
/// [`MAX_PAYLOAD_LEN`].
pub(super) fn encode_record(buf: &mut Vec<u8>, segment_first: Index, entry: &Entry) {
    let start = buf.len();
    let len = u32::try_from(PAYLOAD_FIXED_LEN + entry.data.len()).unwrap_or(u32::MAX);
    debug_assert!(
        len as usize <= MAX_PAYLOAD_LEN,
        "caller must bound entry size"
    );
    buf.extend_from_slice(&[0u8; RECORD_HEADER_LEN]);
    buf.extend_from_slice(&entry.index.to_le_bytes());
    buf.extend_from_slice(&entry.term.to_le_bytes());
    buf.push(entry.kind.to_u8());
    buf.extend_from_slice(&entry.data);
    let crc = record_crc(segment_first, len, &buf[start + RECORD_HEADER_LEN..]);
    buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// A record that passed its checksum, borrowed from the buffer it was decoded from.
#[derive(Debug)]
pub(super) struct RecordView<'a> {
    /// Log index of the entry.
    pub index: Index,
    /// Its term.
    pub term: Term,
    /// Its kind.
    pub kind: EntryKind,
    /// Its data.
    pub data: &'a [u8],
    /// Offset just past the record (where the next one starts).
    pub end: usize,
}

impl RecordView<'_> {
    /// The entry, with its data copied out of the read buffer.
    pub(super) fn to_entry(&self) -> Entry {
        Entry {
            index: self.index,
            term: self.term,
            kind: self.kind,
            data: Bytes::copy_from_slice(self.data),
        }
    }
}

/// What is found at a record boundary.
#[derive(Debug)]
pub(super) enum Decoded<'a> {
    /// End of data: end of the buffer or a zero length.
    End,
    /// A record whose checksum verifies.
    Record(RecordView<'a>),
    /// Something that is not a valid record.
    Bad {
        /// What is wrong.
        reason: String,
    },
}

fn read_u32(buf: &[u8], at: usize) -> Option<u32> {
    let b = buf.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn read_u64(buf: &[u8], at: usize) -> Option<u64> {
    let b = buf.get(at..at.checked_add(8)?)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    Some(u64::from_le_bytes(a))
}

/// Decodes the record at offset `at` of a segment's bytes.
pub(super) fn decode_at(buf: &[u8], at: usize, segment_first: Index) -> Decoded<'_> {
    let remaining = buf.len().saturating_sub(at);
    if remaining == 0 {
        return Decoded::End;
    }
    let (Some(len), Some(crc)) = (read_u32(buf, at), read_u32(buf, at + 4)) else {
        if buf
            .get(at..)
            .is_some_and(|rest| rest.iter().all(|&b| b == 0))
        {
            // Fewer zero bytes than a record header: zero-filled space, as after a zero
            // length.
            return Decoded::End;
        }
        return Decoded::Bad {
            reason: format!("partial record header ({remaining} of {RECORD_HEADER_LEN} bytes)"),
        };
    };
    if len == 0 {
        if crc == 0 {
            return Decoded::End;
        }
        return Decoded::Bad {
            reason: format!(
                "record length is zero but its checksum field is not ({crc:#010x}): a damaged \
                 length, not the end of the data"
            ),
        };
    }
    let payload_len = len as usize;
    let start = at + RECORD_HEADER_LEN;
    if payload_len > MAX_PAYLOAD_LEN {
        return Decoded::Bad {
            reason: format!("record length {len} exceeds the maximum {MAX_PAYLOAD_LEN}"),
        };
    }
    let end = start + payload_len;
    if payload_len < PAYLOAD_FIXED_LEN {
        return Decoded::Bad {
            reason: format!("record length {len} is below the minimum {PAYLOAD_FIXED_LEN}"),
        };
    }
    let Some(payload) = buf.get(start..end) else {
        return Decoded::Bad {
            reason: format!(
                "record of {len} bytes extends past the end of the file ({} bytes)",
                buf.len()
            ),
        };
    };
    if record_crc(segment_first, len, payload) != crc {
        return Decoded::Bad {
            reason: "record checksum mismatch".into(),
        };
    }
    let (Some(index), Some(term), Some(&code)) =
        (read_u64(payload, 0), read_u64(payload, 8), payload.get(16))
    else {
        return Decoded::Bad {
            reason: "record payload is short".into(),
        };
    };
    let Some(kind) = EntryKind::from_u8(code) else {
        return Decoded::Bad {
            reason: format!("unknown entry kind {code}"),
        };
    };
    Decoded::Record(RecordView {
        index,
        term,
        kind,
        data: &payload[PAYLOAD_FIXED_LEN..],
        end,
    })
}

/// The first invalid record met by [`scan`].
#[derive(Debug)]
pub(super) struct BadRecord {
    /// Offset of the record in the file.
    pub offset: usize,
    /// What is wrong with it.
    pub reason: String,
    /// The record passes its checksum (its index or term is out of place): only a writer
    /// of this very segment can have produced it, so it is no torn write.
    pub verified: bool,
}

/// Result of scanning one segment's bytes.
#[derive(Debug)]
pub(super) struct Scan {
    /// Offset of every valid record, in order (the first has index `segment_first`).
    pub offsets: Vec<u32>,
    /// Where valid data ends (the first bad record, end marker or end of file).
    pub data_end: usize,
    /// The term of the last valid record, or the `prev_term` given when there is none.
    pub last_term: Term,
    /// The first bad record, if scanning stopped at one.
    pub bad: Option<BadRecord>,
}

impl Scan {
    /// Index one past the last valid record.
    pub(super) fn next_index(&self, segment_first: Index) -> Index {
        segment_first + self.offsets.len() as u64
    }
}

/// Walks the records of a whole segment file whose header is `header_len` bytes, checking
/// each checksum, that indices run `segment_first, segment_first + 1, ...` and that terms
/// never go below `prev_term` or each other. Calls `on_record(index, term)` for each valid
/// record and stops at the first record that is not valid; the caller decides whether that
/// is a torn tail or corruption.
pub(super) fn scan(
    buf: &[u8],
    header_len: usize,
    segment_first: Index,
    prev_term: Term,
    mut on_record: impl FnMut(Index, Term),
) -> Scan {
    let mut offsets = Vec::new();
    let mut at = header_len;
    let mut expected = segment_first;
    let mut last_term = prev_term;
    let problem = loop {
        let (reason, verified) = match decode_at(buf, at, segment_first) {
            Decoded::End => break None,
            Decoded::Bad { reason, .. } => (reason, false),
            Decoded::Record(r) if r.index != expected => (
                format!(
                    "record holds index {} where {expected} was expected",
                    r.index
                ),
                true,
            ),
            Decoded::Record(r) if r.term < last_term => (
                format!(
                    "record {} has term {} after term {last_term}",
                    r.index, r.term
                ),
                true,
            ),
            Decoded::Record(r) => match u32::try_from(at) {
                Ok(offset) => {
                    offsets.push(offset);
                    on_record(r.index, r.term);
                    last_term = r.term;
                    expected += 1;
                    at = r.end;
                    continue;
                }
                Err(_) => ("record offset beyond 4 GiB".to_string(), false),
            },
        };
        break Some((reason, verified));
    };
    let bad = problem.map(|(reason, verified)| BadRecord {
        offset: at,
        reason,
        verified,
    });
    Scan {
        offsets,
        data_end: at,
        last_term,
        bad,
    }
}

/// The first record at or after byte `from` that passes its checksum in this segment and
/// holds an index of at least `min_index`, starting at *any* byte offset: a damaged length
/// field no longer says where the next record starts, so every offset is tried. Returns its
/// offset and index.
///
/// This is what tells damage from a torn write past the checkpoint: a torn write of this
/// segment's writer leaves nothing valid behind its damage except, after a power cut, the
/// later pages of an unsynced write that reached the disk before an earlier one; damage to
/// records that were synced leaves the records after them intact. Old records of a recycled
/// file never verify here (their checksums are seeded with another, lower first index, and
/// their indices are lower still). Cheap checks of the length and index fields come first,
/// so that the checksum is computed only where a record of this segment could start.
pub(super) fn find_later_record(
    buf: &[u8],
    from: usize,
    segment_first: Index,
    min_index: Index,
) -> Option<(usize, Index)> {
    let min_record = RECORD_HEADER_LEN + PAYLOAD_FIXED_LEN;
    let room = buf.len().checked_sub(from)?;
    // No more records than fit in the rest of the file.
    let max_index = min_index.saturating_add((room / min_record) as u64);
    let last_start = buf.len().checked_sub(min_record)?;
    (from..=last_start).find_map(|at| {
        let len = read_u32(buf, at)? as usize;
        if !(PAYLOAD_FIXED_LEN..=MAX_PAYLOAD_LEN).contains(&len)
            || at + RECORD_HEADER_LEN + len > buf.len()
        {
            return None;
        }
        let index = read_u64(buf, at + RECORD_HEADER_LEN)?;
        if index < min_index || index > max_index {
            return None;
        }
        match decode_at(buf, at, segment_first) {
            Decoded::Record(r) if r.index == index => Some((at, index)),
            _ => None,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(first: Index, entries: &[Entry]) -> Vec<u8> {
        let mut buf = encode_header(first).to_vec();
        for e in entries {
            encode_record(&mut buf, first, e);
        }
        buf
    }

    fn entries(first: Index, n: u64) -> Vec<Entry> {
        (first..first + n)
            .map(|i| Entry::normal(i, 2, format!("data-{i}")))
            .collect()
    }

    #[test]
    fn names_round_trip_and_reject_strangers() {
        assert_eq!(file_name(42), "00000000000000000042.seg");
        assert_eq!(parse_file_name(&file_name(u64::MAX)), Some(u64::MAX));
        assert_eq!(parse_file_name("42.seg"), None);
        assert_eq!(parse_file_name("0000000000000000004x.seg"), None);
        assert_eq!(parse_file_name("00000000000000000042.seg.tmp"), None);
    }

    #[test]
    fn records_round_trip_with_every_kind_and_empty_data() {
        let es = vec![
            Entry::normal(5, 1, "hello"),
            Entry::noop(6, 2),
            Entry {
                index: 7,
                term: 2,
                kind: EntryKind::ConfigChange,
                data: Bytes::from_static(b"cfg"),
            },
        ];
        let buf = segment(5, &es);
        let mut seen = Vec::new();
        let scan = scan(&buf, SEGMENT_HEADER_LEN, 5, 0, |i, t| seen.push((i, t)));
        assert!(scan.bad.is_none());
        assert_eq!(scan.data_end, buf.len());
        assert_eq!(seen, vec![(5, 1), (6, 2), (7, 2)]);
        for (e, &off) in es.iter().zip(&scan.offsets) {
            match decode_at(&buf, off as usize, 5) {
                Decoded::Record(r) => {
                    assert_eq!(&r.to_entry(), e);
                    assert_eq!(r.end - off as usize, record_len(e));
                    assert_eq!(
                        size_hint_of_record(record_len(e) as u64),
                        e.size_hint() as u64
                    );
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn checksum_is_seeded_with_the_segment_first_index() {
        let buf = segment(1, &entries(1, 1));
        // The same bytes under another segment's first index do not verify.
        assert!(matches!(
            decode_at(&buf, SEGMENT_HEADER_LEN, 2),
            Decoded::Bad { .. }
        ));
    }

    #[test]
    fn zero_length_ends_the_data() {
        let mut buf = segment(1, &entries(1, 2));
        let end = buf.len();
        buf.extend_from_slice(&[0u8; 64]);
        let scan = scan(&buf, SEGMENT_HEADER_LEN, 1, 0, |_, _| {});
        assert!(scan.bad.is_none());
        assert_eq!((scan.offsets.len(), scan.data_end), (2, end));
    }

    #[test]
    fn zero_bytes_shorter_than_a_header_end_the_data() {
        let mut buf = segment(1, &entries(1, 1));
        let end = buf.len();
        buf.extend_from_slice(&[0u8; 5]);
        let s = scan(&buf, SEGMENT_HEADER_LEN, 1, 0, |_, _| {});
        assert!(s.bad.is_none());
        assert_eq!((s.offsets.len(), s.data_end), (1, end));
        // Non-zero leftovers of that length are a torn header.
        buf[end + 2] = 7;
        assert!(scan(&buf, SEGMENT_HEADER_LEN, 1, 0, |_, _| {})
            .bad
            .is_some());
    }

    #[test]
    fn records_of_a_recycled_file_do_not_verify_in_the_new_segment() {
        // A file that held segment 1 is reused for segment 40: its old records, complete
        // and well formed, must read as "not a record" under the new segment's seed.
        let old = segment(1, &entries(1, 5));
        let mut reused = old.clone();
        reused[..SEGMENT_HEADER_LEN].copy_from_slice(&encode_header(40));
        let s = scan(&reused, SEGMENT_HEADER_LEN, 40, 0, |_, _| {});
        assert!(s.offsets.is_empty());
        let bad = s.bad.expect("stale record must not verify");
        assert!(!bad.verified);
        assert!(bad.reason.contains("checksum"), "{}", bad.reason);
        assert_eq!(find_later_record(&reused, bad.offset, 40, 40), None);
    }

    #[test]
    fn a_later_valid_record_is_found_wherever_it_starts() {
        let buf = segment(1, &entries(1, 3));
        let offsets = scan(&buf, SEGMENT_HEADER_LEN, 1, 0, |_, _| {}).offsets;
        let last = offsets[2] as usize;
        // Cut anywhere inside the last record: a bad record with nothing valid after it.
        for cut in last + 1..buf.len() {
            let s = scan(&buf[..cut], SEGMENT_HEADER_LEN, 1, 0, |_, _| {});
            let bad = s.bad.expect("torn record must be reported");
            assert_eq!(bad.offset, last);
            assert_eq!(find_later_record(&buf[..cut], bad.offset + 1, 1, 3), None);
            assert_eq!(s.offsets.len(), 2);
        }
        // Every bit of the middle record's length flipped: whatever it now claims, the
        // record after it is found.
        let second = offsets[1] as usize;
        for bit in 0..32 {
            let mut corrupt = buf.clone();
            corrupt[second + bit / 8] ^= 1 << (bit % 8);
            let s = scan(&corrupt, SEGMENT_HEADER_LEN, 1, 0, |_, _| {});
            let bad = s.bad.expect("damaged length must be reported");
            assert_eq!(bad.offset, second, "bit {bit}");
            assert_eq!(
                find_later_record(&corrupt, bad.offset + 1, 1, 2),
                Some((last, 3)),
                "bit {bit}"
            );
        }
    }

    #[test]
    fn a_zeroed_length_is_damage_and_a_zero_header_is_the_end() {
        let buf = segment(1, &entries(1, 2));
        let second = scan(&buf, SEGMENT_HEADER_LEN, 1, 0, |_, _| {}).offsets[1] as usize;
        let mut zero_len = buf.clone();
        zero_len[second..second + 4].fill(0);
        let s = scan(&zero_len, SEGMENT_HEADER_LEN, 1, 0, |_, _| {});
        assert!(s.bad.unwrap().reason.contains("length is zero"));
        let mut zero_header = buf.clone();
        zero_header[second..second + RECORD_HEADER_LEN].fill(0);
        let s = scan(&zero_header, SEGMENT_HEADER_LEN, 1, 0, |_, _| {});
        assert!(s.bad.is_none());
        assert_eq!(s.data_end, second);
    }

    #[test]
    fn wrong_index_and_decreasing_term_stop_the_scan() {
        let mut es = entries(1, 3);
        es[1].index = 9;
        let s = scan(&segment(1, &es), SEGMENT_HEADER_LEN, 1, 0, |_, _| {});
        assert!(s.bad.unwrap().reason.contains("index 9"));
        let es = vec![Entry::normal(1, 3, "a"), Entry::normal(2, 2, "b")];
        let s = scan(&segment(1, &es), SEGMENT_HEADER_LEN, 1, 0, |_, _| {});
        assert_eq!(s.offsets.len(), 1);
        assert!(s.bad.unwrap().reason.contains("term 2 after term 3"));
    }

    #[test]
    fn absurd_lengths_are_rejected_without_allocating() {
        let mut buf = encode_header(1).to_vec();
        buf.extend_from_slice(&u32::MAX.to_le_bytes());
        buf.extend_from_slice(&[0u8; 4]);
        assert!(matches!(
            decode_at(&buf, SEGMENT_HEADER_LEN, 1),
            Decoded::Bad { .. }
        ));
    }

    #[test]
    fn header_must_match_the_name() {
        let h = encode_header(7);
        assert_eq!(
            check_header(&h, 7).unwrap(),
            Header {
                len: SEGMENT_HEADER_LEN,
                checkpoint: Some(initial_checkpoint(7)),
            }
        );
        assert_eq!(check_header(&h, 8).unwrap_err().offset, 8);
        assert!(check_header(&h[..10], 7).is_err());
        assert!(check_header(&h[..SEGMENT_HEADER_LEN - 1], 7).is_err());
        assert!(check_header(&[0u8; SEGMENT_HEADER_LEN], 7).is_err());
        let mut v1 = SEGMENT_MAGIC_V1.to_vec();
        v1.extend_from_slice(&7u64.to_le_bytes());
        assert_eq!(
            check_header(&v1, 7).unwrap(),
            Header {
                len: V1_HEADER_LEN,
                checkpoint: None,
            }
        );
    }

    #[test]
    fn the_newest_valid_slot_wins_and_one_damaged_slot_is_survived() {
        let mut h = encode_header(7).to_vec();
        let c3 = initial_checkpoint(7).successor(200, 12);
        let at = c3.slot_offset() as usize;
        h[at..at + SLOT_LEN].copy_from_slice(&encode_slot(7, &c3));
        assert_eq!(check_header(&h, 7).unwrap().checkpoint, Some(c3));
        // Any flipped bit in the newest slot: the previous value comes back.
        for bit in 0..SLOT_LEN * 8 {
            let mut damaged = h.clone();
            damaged[at + bit / 8] ^= 1 << (bit % 8);
            let c = check_header(&damaged, 7).unwrap().checkpoint.unwrap();
            assert_eq!(c, initial_checkpoint(7), "bit {bit}");
        }
        // A slot of another segment (a recycled file) does not verify.
        assert_eq!(check_header(&h, 8).unwrap_err().offset, 8);
        let mut other = h.clone();
        other[at..at + SLOT_LEN].copy_from_slice(&encode_slot(9, &c3));
        assert_eq!(
            check_header(&other, 7).unwrap().checkpoint,
            Some(initial_checkpoint(7))
        );
        // Both slots damaged: no checkpoint to trust.
        let mut both = h.clone();
        both[SLOTS_AT] ^= 1;
        both[SLOTS_AT + SLOT_LEN] ^= 1;
        assert_eq!(check_header(&both, 7).unwrap_err().offset, SLOTS_AT as u64);
    }
}
