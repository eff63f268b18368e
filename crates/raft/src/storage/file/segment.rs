//! Log segment files: naming, the segment header, record framing and the scan that
//! recovery uses to find where valid data ends.
//!
//! A segment `<first_index, 20 digits>.seg` starts with a 16-byte header, magic
//! `b"RLWAL001"` and the first index (`u64` LE), followed by records:
//!
//! ```text
//! [len u32 LE][crc u32 LE][payload: index u64 LE | term u64 LE | kind u8 | data]
//! crc = CRC32C(first_index of the segment, 8 bytes LE ++ len, 4 bytes LE ++ payload)
//! ```
//!
//! Seeding the checksum with the segment's first index makes a record left over from
//! another segment (a recycled or renamed file) fail the check instead of passing as data.
//! A zero length at a record boundary marks the end of data, so zero-filled space after the
//! last record (pre-allocation) reads as "nothing more". The same zero length, written as an
//! 8-byte end marker, closes a segment whose file holds older bytes after its records (a
//! recycled file), so a scan never reads past its data.

use bytes::Bytes;

use crate::types::{Entry, EntryKind, Index, Term};

/// Magic at the start of every segment file.
pub(super) const SEGMENT_MAGIC: &[u8; 8] = b"RLWAL001";
/// Size of the segment header: magic + first index.
pub(super) const SEGMENT_HEADER_LEN: usize = 16;
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

/// The header of a segment starting at `first_index`.
pub(super) fn encode_header(first_index: Index) -> [u8; SEGMENT_HEADER_LEN] {
    let mut h = [0u8; SEGMENT_HEADER_LEN];
    h[..8].copy_from_slice(SEGMENT_MAGIC);
    h[8..].copy_from_slice(&first_index.to_le_bytes());
    h
}

/// Checks a segment header against the first index its file name promises.
pub(super) fn check_header(buf: &[u8], first_index: Index) -> Result<(), String> {
    let Some(header) = buf.get(..SEGMENT_HEADER_LEN) else {
        return Err(format!(
            "segment header is {} bytes, {SEGMENT_HEADER_LEN} expected",
            buf.len()
        ));
    };
    if &header[..8] != SEGMENT_MAGIC {
        return Err("bad segment magic".into());
    }
    match read_u64(header, 8) {
        Some(i) if i == first_index => Ok(()),
        Some(i) => Err(format!(
            "segment header says first index {i} but the file name says {first_index}"
        )),
        None => Err("segment header is short".into()),
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
        /// Where the record would end according to its length field, when that length is
        /// plausible; used to tell a torn tail from corruption followed by valid records.
        claimed_end: Option<usize>,
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
            claimed_end: None,
        };
    };
    if len == 0 {
        return Decoded::End;
    }
    let payload_len = len as usize;
    let start = at + RECORD_HEADER_LEN;
    if payload_len > MAX_PAYLOAD_LEN {
        return Decoded::Bad {
            reason: format!("record length {len} exceeds the maximum {MAX_PAYLOAD_LEN}"),
            claimed_end: None,
        };
    }
    let end = start + payload_len;
    if payload_len < PAYLOAD_FIXED_LEN {
        return Decoded::Bad {
            reason: format!("record length {len} is below the minimum {PAYLOAD_FIXED_LEN}"),
            claimed_end: Some(end),
        };
    }
    let Some(payload) = buf.get(start..end) else {
        return Decoded::Bad {
            reason: format!(
                "record of {len} bytes extends past the end of the file ({} bytes)",
                buf.len()
            ),
            claimed_end: None,
        };
    };
    if record_crc(segment_first, len, payload) != crc {
        return Decoded::Bad {
            reason: "record checksum mismatch".into(),
            claimed_end: Some(end),
        };
    }
    let (Some(index), Some(term), Some(&code)) =
        (read_u64(payload, 0), read_u64(payload, 8), payload.get(16))
    else {
        return Decoded::Bad {
            reason: "record payload is short".into(),
            claimed_end: Some(end),
        };
    };
    let Some(kind) = EntryKind::from_u8(code) else {
        return Decoded::Bad {
            reason: format!("unknown entry kind {code}"),
            claimed_end: Some(end),
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
    /// A record with a valid checksum starts where this one claims to end: the damage is
    /// followed by good data, so it cannot be a torn tail.
    pub valid_record_follows: bool,
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

/// Walks the records of a whole segment file (header included), checking each checksum,
/// that indices run `segment_first, segment_first + 1, ...` and that terms never go below
/// `prev_term` or each other. Calls `on_record(index, term)` for each valid record and stops
/// at the first record that is not valid; the caller decides whether that is a torn tail
/// or corruption.
pub(super) fn scan(
    buf: &[u8],
    segment_first: Index,
    prev_term: Term,
    mut on_record: impl FnMut(Index, Term),
) -> Scan {
    let mut offsets = Vec::new();
    let mut at = SEGMENT_HEADER_LEN;
    let mut expected = segment_first;
    let mut last_term = prev_term;
    let problem = loop {
        let (reason, claimed_end) = match decode_at(buf, at, segment_first) {
            Decoded::End => break None,
            Decoded::Bad {
                reason,
                claimed_end,
            } => (reason, claimed_end),
            Decoded::Record(r) if r.index != expected => (
                format!(
                    "record holds index {} where {expected} was expected",
                    r.index
                ),
                Some(r.end),
            ),
            Decoded::Record(r) if r.term < last_term => (
                format!(
                    "record {} has term {} after term {last_term}",
                    r.index, r.term
                ),
                Some(r.end),
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
                Err(_) => ("record offset beyond 4 GiB".to_string(), None),
            },
        };
        break Some((reason, claimed_end));
    };
    let bad = problem.map(|(reason, claimed_end)| BadRecord {
        offset: at,
        reason,
        valid_record_follows: claimed_end.is_some_and(|end| {
            end < buf.len() && matches!(decode_at(buf, end, segment_first), Decoded::Record(_))
        }),
    });
    Scan {
        offsets,
        data_end: at,
        last_term,
        bad,
    }
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
        let scan = scan(&buf, 5, 0, |i, t| seen.push((i, t)));
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
        let scan = scan(&buf, 1, 0, |_, _| {});
        assert!(scan.bad.is_none());
        assert_eq!((scan.offsets.len(), scan.data_end), (2, end));
    }

    #[test]
    fn zero_bytes_shorter_than_a_header_end_the_data() {
        let mut buf = segment(1, &entries(1, 1));
        let end = buf.len();
        buf.extend_from_slice(&[0u8; 5]);
        let s = scan(&buf, 1, 0, |_, _| {});
        assert!(s.bad.is_none());
        assert_eq!((s.offsets.len(), s.data_end), (1, end));
        // Non-zero leftovers of that length are a torn header.
        buf[end + 2] = 7;
        assert!(scan(&buf, 1, 0, |_, _| {}).bad.is_some());
    }

    #[test]
    fn records_of_a_recycled_file_do_not_verify_in_the_new_segment() {
        // A file that held segment 1 is reused for segment 40: its old records, complete
        // and well formed, must read as "not a record" under the new segment's seed.
        let old = segment(1, &entries(1, 5));
        let mut reused = old.clone();
        reused[..SEGMENT_HEADER_LEN].copy_from_slice(&encode_header(40));
        let s = scan(&reused, 40, 0, |_, _| {});
        assert!(s.offsets.is_empty());
        let bad = s.bad.expect("stale record must not verify");
        assert!(!bad.valid_record_follows);
        assert!(bad.reason.contains("checksum"), "{}", bad.reason);
    }

    #[test]
    fn torn_tail_and_corruption_before_valid_record_are_told_apart() {
        let buf = segment(1, &entries(1, 3));
        let last = {
            let s = scan(&buf, 1, 0, |_, _| {});
            s.offsets[2] as usize
        };
        // Cut anywhere inside the last record: a bad record with nothing valid after it.
        for cut in last + 1..buf.len() {
            let s = scan(&buf[..cut], 1, 0, |_, _| {});
            let bad = s.bad.expect("torn record must be reported");
            assert_eq!((bad.offset, bad.valid_record_follows), (last, false));
            assert_eq!(s.offsets.len(), 2);
        }
        // A flipped payload byte in the middle record: valid record right after it.
        let mut corrupt = buf.clone();
        let second = scan(&buf, 1, 0, |_, _| {}).offsets[1] as usize;
        corrupt[second + RECORD_HEADER_LEN + 3] ^= 1;
        let bad = scan(&corrupt, 1, 0, |_, _| {}).bad.unwrap();
        assert_eq!((bad.offset, bad.valid_record_follows), (second, true));
    }

    #[test]
    fn wrong_index_and_decreasing_term_stop_the_scan() {
        let mut es = entries(1, 3);
        es[1].index = 9;
        let s = scan(&segment(1, &es), 1, 0, |_, _| {});
        assert!(s.bad.unwrap().reason.contains("index 9"));
        let es = vec![Entry::normal(1, 3, "a"), Entry::normal(2, 2, "b")];
        let s = scan(&segment(1, &es), 1, 0, |_, _| {});
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
            Decoded::Bad {
                claimed_end: None,
                ..
            }
        ));
    }

    #[test]
    fn header_must_match_the_name() {
        let h = encode_header(7);
        assert!(check_header(&h, 7).is_ok());
        assert!(check_header(&h, 8).is_err());
        assert!(check_header(&h[..10], 7).is_err());
        assert!(check_header(&[0u8; 16], 7).is_err());
    }
}
