//! Recovery of the log on open: scan every segment, verify every record, cut a torn tail
//! off the last segment, and refuse to start on anything else that is wrong.
//!
//! The rules follow from how the log is written (see `log.rs`): only the last segment can
//! have been cut short by a crash, because a segment is fsynced before the next one is
//! created. So:
//! - in a segment that is not the last, any bad record is corruption;
//! - in the last segment, a bad record is a torn tail and is truncated away, unless a valid
//!   record starts right where the bad one claims to end: then good data follows the damage,
//!   which a torn append cannot produce, and it is reported as corruption;
//! - indices must run on without gaps from segment to segment, and terms never decrease;
//! - a segment's data ends at the end of the file or at a zero record length (zeros written
//!   ahead, or the end marker written before the next segment began); what follows is not
//!   read. In the last segment, whatever follows the valid records is cut off unless it is
//!   all zeros, because appends continue there: a leftover record of this segment (a torn
//!   batch whose first page was lost) could otherwise end up right behind new data and
//!   read as part of the log. Old records of a recycled file never verify (see `log.rs`).
//!
//! Corruption is never skipped and never returned as data: the error names the file and
//! the offset of the damaged record, and the operator decides.

use std::fs::OpenOptions;
use std::io::Read;
use std::path::Path;

use super::fsutil::{io_err, list_files, remove_durably};
use super::index::TermRuns;
use super::log::{Segment, SegmentLog, SPARE_FILE};
use super::segment::{self, SEGMENT_HEADER_LEN};
use crate::error::StorageError;
use crate::types::{Index, Term};

fn corruption(path: &Path, offset: u64, reason: impl Into<String>) -> StorageError {
    StorageError::Corruption {
        path: path.to_path_buf(),
        offset,
        reason: reason.into(),
    }
}

/// Scans the segments in `dir`, repairing a torn tail, and returns the log with the terms
/// of its entries recorded in `terms`. `empty_first` is the first index if no segment holds
/// an entry (the snapshot index + 1).
pub(super) fn recover_log(
    dir: &Path,
    sync: bool,
    segment_size: u64,
    empty_first: Index,
    terms: &mut TermRuns,
) -> Result<SegmentLog, StorageError> {
    let files = list_files(dir)?;
    let spare = files
        .iter()
        .find(|(name, _)| name == SPARE_FILE)
        .map(|(_, path)| path.clone());
    let mut found: Vec<_> = files
        .into_iter()
        .filter_map(|(name, path)| Some((segment::parse_file_name(&name)?, path)))
        .collect();
    found.sort();
    let count = found.len();
    let mut segments: Vec<Segment> = Vec::with_capacity(count);
    // One buffer for every segment: a whole segment is read with one call and scanned in
    // memory, which keeps open fast (segments are bounded in size).
    let mut buf = Vec::new();
    let mut prev_term: Term = 0;
    for (n, (first, path)) in found.into_iter().enumerate() {
        let is_last = n + 1 == count;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io_err("open", &path))?;
        buf.clear();
        (&file)
            .read_to_end(&mut buf)
            .map_err(io_err("read", &path))?;
        if let Err(reason) = segment::check_header(&buf, first) {
            // Segments are renamed into place only once their header is durable, so this
            // cannot follow a crash. Still, a last segment with a missing or torn header and
            // no valid first record holds nothing: dropping it loses nothing.
            let holds_record = matches!(
                segment::decode_at(&buf, SEGMENT_HEADER_LEN, first),
                segment::Decoded::Record(_)
            );
            if !is_last || holds_record {
                return Err(corruption(&path, 0, reason));
            }
            tracing::warn!(path = %path.display(), %reason, "removing last segment without a valid header or records");
            drop(file);
            remove_durably(dir, &path, sync)?;
            break;
        }
        if let Some(prev) = segments.last() {
            if prev.next_index() != first {
                return Err(corruption(
                    &path,
                    0,
                    format!(
                        "segment starts at index {first} but the previous segment {} ends \
                         before index {}: the log has a gap",
                        prev.path.display(),
                        prev.next_index()
                    ),
                ));
            }
        }
        let scan = segment::scan(&buf, first, prev_term, |index, term| {
            terms.push(index, term);
        });
        if let Some(bad) = &scan.bad {
            if !is_last {
                return Err(corruption(&path, bad.offset as u64, bad.reason.clone()));
            }
            if bad.valid_record_follows {
                return Err(corruption(
                    &path,
                    bad.offset as u64,
                    format!(
                        "{}; a valid record follows it, so this is damage before the tail, \
                         not a torn write",
                        bad.reason
                    ),
                ));
            }
            tracing::warn!(
                path = %path.display(),
                offset = bad.offset,
                reason = %bad.reason,
                "truncating the log after its last valid record (a torn write, or old \
                 records of a recycled segment file)"
            );
        }
        if scan.offsets.is_empty() && !is_last {
            return Err(corruption(
                &path,
                SEGMENT_HEADER_LEN as u64,
                "segment holds no records but later segments exist",
            ));
        }
        let end = scan.data_end as u64;
        let mut allocated = buf.len() as u64;
        let zero_tail = || {
            buf.get(scan.data_end..)
                .is_some_and(|tail| tail.iter().all(|&b| b == 0))
        };
        if is_last && allocated > end && !zero_tail() {
            // Cut whatever follows the valid records, so later appends never sit in front of
            // stale bytes that a future scan could misread. Zeros written ahead are kept:
            // they hold nothing, and appends overwriting them sync faster.
            file.set_len(end).map_err(io_err("truncate", &path))?;
            if sync {
                file.sync_data().map_err(io_err("fsync", &path))?;
            }
            allocated = end;
        }
        if is_last && scan.offsets.is_empty() {
            drop(file);
            remove_durably(dir, &path, sync)?;
            break;
        }
        prev_term = scan.last_term;
        segments.push(Segment::new(
            first,
            path,
            file,
            scan.offsets,
            end,
            allocated,
        ));
    }
    Ok(SegmentLog::new(
        dir.to_path_buf(),
        sync,
        segment_size,
        segments,
        empty_first,
        spare,
    ))
}

/// Brings a recovered log in line with the snapshot that ends at `(snap_index, snap_term)`
/// (`(0, 0)` without one). The log must hold the snapshot's last entry with its term or
/// start right after it; otherwise a crash hit between the snapshot becoming durable and
/// the log it superseded being deleted, and the deletion is finished now. A log that
/// starts beyond `snap_index + 1` has lost entries nothing else holds: corruption.
pub(super) fn reconcile_with_snapshot(
    log: &mut SegmentLog,
    terms: &mut TermRuns,
    snap_index: Index,
    snap_term: Term,
) -> Result<(), StorageError> {
    if log.is_empty() {
        return Ok(());
    }
    if log.first() > snap_index + 1 {
        return Err(corruption(
            log.first_path().unwrap_or(Path::new("log")),
            0,
            format!(
                "the log starts at index {} but the snapshot ends at {snap_index}: \
                 entries in between are missing",
                log.first()
            ),
        ));
    }
    let follows_snapshot = log.first() == snap_index + 1;
    let holds_snapshot_entry =
        snap_index < log.next() && terms.term_at(snap_index) == Some(snap_term);
    if !follows_snapshot && !holds_snapshot_entry {
        tracing::info!(snap_index, "discarding the log superseded by the snapshot");
        log.discard(snap_index + 1)?;
        terms.clear();
    }
    Ok(())
}
