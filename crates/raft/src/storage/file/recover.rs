//! Recovery of the log on open: scan every segment, verify every record, cut a torn tail
//! off the last segment, and refuse to start on anything else that is wrong.
//!
//! The rules follow from how the log is written (see `log.rs`): only the last segment can
//! have been cut short by a crash, because a segment is fsynced before the next one is
//! created, and nothing below a segment's checkpoint (its "synced end") can have been cut
//! short at all, because the checkpoint only ever claims what an fsync completed. So:
//! - in a segment that is not the last, any bad record is corruption;
//! - in any segment, a bad record or the end of the data below the checkpoint is
//!   corruption: those records were synced and acknowledged, and cutting them would
//!   silently lose entries the node promised to keep (it could then vote for a candidate
//!   missing committed entries);
//! - past the checkpoint of the last segment, a bad record is a torn tail and is truncated
//!   away, unless it passes its checksum (only this segment's writer makes such records)
//!   or a valid record of this segment with a higher index follows it *anywhere* in the
//!   file, not only where its length field says the next record starts (a damaged length
//!   points elsewhere). That covers the window where the checkpoint on disk lags one sync
//!   behind (its write reaches the disk with the next fsync). The price: after a power cut,
//!   a multi-page write that was never synced and whose later pages reached the disk before
//!   an earlier one is refused rather than cut. Refusing loses nothing; cutting acknowledged
//!   entries breaks Raft. (A write whose *first* record header reads as zeros is the end of
//!   the data, as before: one flipped bit cannot zero a length and the checksum beside it.)
//! - the checkpoint must fall on a record boundary with the index it names;
//! - indices must run on without gaps from segment to segment, and terms never decrease;
//! - a segment's data ends at the end of the file or at a zero record header (zeros
//!   written ahead, or the end marker written before the next segment began); what follows
//!   is not read. In the last segment, whatever follows the valid records is cut off unless
//!   it is all zeros, because appends continue there: a leftover record of this segment (a
//!   torn batch whose first page was lost) could otherwise end up right behind new data and
//!   read as part of the log. Old records of a recycled file never verify (see `log.rs`).
//!
//! Segments of the first format (`RLWAL001`) have no checkpoint: for them the rules are
//! those above without the checkpoint, as before it existed.
//!
//! Corruption is never skipped and never returned as data: the error names the file and
//! the offset of the damaged record and tells the operator the way out (stop the node,
//! move its data directory aside, restart it empty so it catches up from the leader; see
//! `docs/RUNNING_A_CLUSTER.md`).

use std::fs::OpenOptions;
use std::io::Read;
use std::path::Path;

use super::fsutil::{io_err, list_files, remove_durably};
use super::index::TermRuns;
use super::log::{Segment, SegmentLog, SPARE_FILE};
use super::segment::{self, Checkpoint, Scan, SEGMENT_HEADER_LEN, V1_HEADER_LEN};
use crate::error::StorageError;
use crate::types::{Index, Term};

/// The operator's way out, appended to every corruption error of the log.
const WAY_OUT: &str = "the node must not start on this log: stop it, move its data \
    directory aside (keep it for diagnosis) or wipe it, and restart the node with an empty \
    data directory while the rest of the cluster is healthy; it then catches up from the \
    leader by snapshot (see docs/RUNNING_A_CLUSTER.md, \"A node refuses to start\")";

fn corruption(path: &Path, offset: u64, reason: impl Into<String>) -> StorageError {
    StorageError::Corruption {
        path: path.to_path_buf(),
        offset,
        reason: format!("{}; {WAY_OUT}", reason.into()),
    }
}

/// Decides whether the end of a segment's valid records, as `scan` found it, can be the
/// work of a crash (a torn tail of the last segment, cut by the caller) or is corruption.
fn judge_scan(
    path: &Path,
    buf: &[u8],
    first: Index,
    scan: &Scan,
    checkpoint: Option<Checkpoint>,
    is_last: bool,
) -> Result<(), StorageError> {
    let data_end = scan.data_end as u64;
    let synced_end = checkpoint.map_or(0, |c| c.end);
    let synced = |c: Checkpoint| {
        format!(
            "the segment header records {} bytes (entries up to index {}) as synced, so \
             this is damage to acknowledged entries, not a torn write",
            c.end,
            c.next.saturating_sub(1)
        )
    };
    if let Some(c) = checkpoint.filter(|c| c.end <= data_end) {
        // The checkpoint was written at a record boundary, with the index found there.
        let below = scan.offsets.partition_point(|&o| u64::from(o) < c.end);
        let at_boundary = c.end == data_end
            || scan
                .offsets
                .get(below)
                .is_some_and(|&o| u64::from(o) == c.end);
        if !at_boundary || first + below as u64 != c.next {
            return Err(corruption(
                path,
                c.slot_offset(),
                format!(
                    "the segment header's checkpoint (synced end {}, next index {}) does not \
                     match the records",
                    c.end, c.next
                ),
            ));
        }
    }
    let Some(bad) = &scan.bad else {
        return match checkpoint.filter(|_| data_end < synced_end) {
            Some(c) => Err(corruption(
                path,
                data_end,
                format!("the records end here; {}", synced(c)),
            )),
            None => Ok(()),
        };
    };
    let offset = bad.offset as u64;
    if !is_last {
        return Err(corruption(path, offset, bad.reason.clone()));
    }
    if let Some(c) = checkpoint.filter(|_| offset < synced_end) {
        return Err(corruption(
            path,
            offset,
            format!("{}; {}", bad.reason, synced(c)),
        ));
    }
    if bad.verified {
        return Err(corruption(
            path,
            offset,
            format!(
                "{}; the record passes its checksum, so this segment's writer made it: not a \
                 torn write",
                bad.reason
            ),
        ));
    }
    if let Some((at, index)) =
        segment::find_later_record(buf, bad.offset + 1, first, scan.next_index(first))
    {
        return Err(corruption(
            path,
            offset,
            format!(
                "{}; a valid record (index {index}) follows at offset {at}, so this is damage \
                 before the tail, not a torn write",
                bad.reason
            ),
        ));
    }
    Ok(())
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
        let header = match segment::check_header(&buf, first) {
            Ok(header) => header,
            Err(e) => {
                // Segments are renamed into place only once their header is durable, so this
                // cannot follow a crash. Still, a last segment with a missing or torn header
                // and no valid first record (in either format) holds nothing: dropping it
                // loses nothing.
                let holds_record = [V1_HEADER_LEN, SEGMENT_HEADER_LEN].into_iter().any(|at| {
                    matches!(
                        segment::decode_at(&buf, at, first),
                        segment::Decoded::Record(_)
                    )
                });
                if !is_last || holds_record {
                    return Err(corruption(&path, e.offset, e.reason));
                }
                tracing::warn!(path = %path.display(), reason = %e.reason, "removing last segment without a valid header or records");
                drop(file);
                remove_durably(dir, &path, sync)?;
                break;
            }
        };
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
        let scan = segment::scan(&buf, header.len, first, prev_term, |index, term| {
            terms.push(index, term);
        });
        judge_scan(&path, &buf, first, &scan, header.checkpoint, is_last)?;
        if let Some(bad) = &scan.bad {
            tracing::warn!(
                path = %path.display(),
                offset = bad.offset,
                reason = %bad.reason,
                "truncating the log after its last valid record (a torn write past the \
                 synced end, or old records of a recycled segment file)"
            );
        }
        if scan.offsets.is_empty() && !is_last {
            return Err(corruption(
                &path,
                header.len as u64,
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
            header.checkpoint,
        ));
    }
    // The last segment (also one that became last because an empty successor was dropped)
    // is where the log goes on: what open found in it must be durable and checkpointed.
    if let Some(last) = segments.last_mut() {
        last.settle_recovered(sync)?;
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
