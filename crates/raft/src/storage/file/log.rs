//! The segmented log on disk: the list of segment files with their record offsets, and
//! the operations that change it (append, roll, truncate, compact, discard) or read it.
//!
//! Ordering rules that make crashes safe (with [`SyncPolicy::Always`](super::SyncPolicy)):
//! - a new segment is created as a `.tmp` file holding only its header, fsynced and renamed
//!   into place, so a segment file is never torn at creation;
//! - before a new segment is started, the previous one is fsynced, so only the last
//!   segment can ever have a torn tail (recovery treats damage elsewhere as corruption);
//! - segments are removed one at a time, each removal made durable before the next, newest
//!   first when cutting the end of the log and oldest first when compacting, so that a
//!   crash at any point leaves a contiguous run of segments.
//!
//! Pre-allocation and recycling (with `SyncPolicy::Always` only; without fsyncs they gain
//! nothing). An `fdatasync` after an append that grows the file must also commit the new
//! file size and block allocation to the journal, which on the disk measured costs about
//! 1.7 times as much as one that only overwrites blocks already written and synced. So:
//! - an append that reaches past the written part of the file also writes zeros up to
//!   [`PREALLOC_CHUNK`] further (capped at the segment size), in the same `write`; the
//!   next `fdatasync` pays the metadata once and the appends after it overwrite zeros;
//! - compaction renames the oldest removed segment to [`SPARE_FILE`] (if there is no spare
//!   yet) instead of deleting it, and the next roll renames the spare into place after
//!   writing its new header, so a whole segment's worth of blocks is reused. Its old
//!   records cannot pass as data: a record's checksum is seeded with the first index of
//!   its segment, and a recycled file only ever becomes a segment with a higher first
//!   index than it held (compacted entries lie below every future index);
//! - bytes past a segment's data are therefore zeros or old records of another segment.
//!   Before a segment stops being the last one, an end marker (a zero record length) is
//!   written after its data, so scans of non-last segments stop there; recovery cuts the
//!   last segment after its valid records unless everything after them is zeros (see
//!   `recover.rs`), so leftovers of a torn write never sit behind new appends.
//!
//! # The "synced end" checkpoint
//!
//! Recovery must tell a torn tail (a crash cut the last, unsynced write short: cut it off)
//! from damage to records that were synced and acknowledged (a flipped bit: cutting there
//! would silently lose entries the node promised to keep, and a node that lost them can
//! vote for a candidate missing committed entries). The bytes alone cannot say which: a
//! damaged length field looks like a torn record. So each segment of the current format
//! (`RLWAL002`) records in its header how far its records were synced, and recovery never
//! cuts below that (`segment.rs` has the layout, `recover.rs` the rules).
//!
//! - After each successful `fdatasync` of the last segment, one small `pwrite` stores the
//!   segment's end and next index in the checkpoint slot not holding the current value
//!   (two slots, used alternately, each with its own CRC: a torn slot write leaves the
//!   previous value readable). It is written *after* the fsync and reaches the disk with
//!   the next one (or earlier writeback), so the checkpoint on disk only ever claims data
//!   that an fsync completed; a crash that loses its write leaves it one sync behind,
//!   never ahead. The cost is one small write per sync and no extra fsync (group commit
//!   pays it once per batch), although the fsync that follows also writes the header's
//!   page back. In the window where it lags, records after a damaged one still betray
//!   damage (`recover.rs`); only the very last record of the last sync before a power cut
//!   is then unprotected against a later bit flip. The slots sit in the file's first
//!   sector, which is rewritten on every sync: this relies on what disks promise, that a
//!   write cut by a power loss leaves each sector with its old or its new content; the
//!   other bytes of that sector are rewritten unchanged.
//! - A roll makes the finished segment's checkpoint say "all of it" durably (fsync, write
//!   the checkpoint, fsync again) before the next segment is created: a segment can become
//!   the last one again (a truncation removes its successors) and must not then be
//!   cuttable. Rolls are rare (one per segment size), so the second fsync costs nothing
//!   noticeable.
//! - A truncation that cuts below the checkpoint first lowers it, durably (write, fsync),
//!   and only then cuts the file: a crash in between leaves a checkpoint that claims
//!   nothing the file lacks.
//! - New segments and a recycled spare get a fresh header (both slots: "nothing synced"),
//!   written and fsynced before the file gets its segment name. Old slots of a recycled
//!   file are overwritten, and would not verify anyway: their CRC is seeded with the old
//!   first index.
//! - Open fsyncs what it recovered past the checkpoint and raises the checkpoint to it:
//!   the node now acts on those entries (it may acknowledge them), so they must be durable
//!   and protected like any synced data.
//! - With `SyncPolicy::UnsafeNoSync` the checkpoint is written on each `sync` all the same
//!   and claims what `sync` returned for: a process crash keeps the page cache, so a
//!   shorter log after one is damage and is refused as with fsync. After a machine crash
//!   that policy promises nothing: the checkpoint may have reached the disk without the
//!   data (open then refuses, which is right: acknowledged entries are gone) or not at all.
//! - Segments of the first format (`RLWAL001`, no checkpoint) are still read, and appended
//!   to while they are the last one, under the first format's rules; the next roll starts
//!   a segment of the current format.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::fsutil::{io_err, remove_durably, sync_dir, TMP_SUFFIX};
use super::index::ByteBudget;
use super::segment::{self, Checkpoint, Decoded, RECORD_HEADER_LEN};
use crate::error::StorageError;
use crate::types::{Entry, Index};

/// The append buffer is kept between batches, unless one huge batch made it bigger than
/// this; then it is released rather than pinned forever.
const KEEP_BUFFER_BYTES: usize = 4 << 20;

/// How far ahead of its data a segment file is written with zeros when an append reaches
/// the end of the written part (`SyncPolicy::Always` only). One such append costs a larger
/// write and an `fdatasync` that commits metadata; the appends that follow overwrite.
pub(super) const PREALLOC_CHUNK: u64 = 1 << 20;

/// Name, in the log directory, of a compacted segment file kept for reuse as the next
/// segment (no `.seg` suffix: it is not part of the log).
pub(super) const SPARE_FILE: &str = "spare-segment";

/// One segment file and the offsets of its records.
#[derive(Debug)]
pub(super) struct Segment {
    /// Index of its first record (also in its name and header).
    pub first_index: Index,
    /// Its path.
    pub path: PathBuf,
    /// Open for reading (`read_at`) and, for the last segment, writing (`write_at`).
    file: File,
    /// Offset of each record; record `i` holds index `first_index + i`.
    offsets: Vec<u32>,
    /// End of the records (where the next record goes).
    end: u64,
    /// Length of the file: bytes in `[end, allocated)` are zeros written ahead or, in a
    /// recycled file, old records that do not verify in this segment.
    allocated: u64,
    /// The checkpoint last written to the header (not necessarily durable yet); `None` for
    /// a segment of the first format, which has none. Never beyond `end`.
    checkpoint: Option<Checkpoint>,
}

impl Segment {
    /// A segment over an open file of `allocated` bytes whose records were found at
    /// `offsets`, ending at `end`, with the checkpoint its header holds.
    pub(super) fn new(
        first_index: Index,
        path: PathBuf,
        file: File,
        offsets: Vec<u32>,
        end: u64,
        allocated: u64,
        checkpoint: Option<Checkpoint>,
    ) -> Self {
        Segment {
            first_index,
            path,
            file,
            offsets,
            end,
            allocated: allocated.max(end),
            checkpoint,
        }
    }

    /// Writes `checkpoint` into its header slot: one small `pwrite`, durable with the
    /// segment's next fsync.
    fn write_checkpoint(&mut self, checkpoint: Checkpoint) -> Result<(), StorageError> {
        assert!(
            checkpoint.end <= self.end,
            "a checkpoint never claims more than the segment holds"
        );
        let slot = segment::encode_slot(self.first_index, &checkpoint);
        self.file
            .write_all_at(&slot, checkpoint.slot_offset())
            .map_err(io_err("write checkpoint", &self.path))?;
        self.checkpoint = Some(checkpoint);
        Ok(())
    }

    /// Records that every record written so far is durable. Call only once that is true:
    /// after an fsync of the segment that followed its last write (or, without fsyncs,
    /// once `sync` returns). No-op for the first format or when nothing changed.
    fn checkpoint_synced(&mut self) -> Result<(), StorageError> {
        let Some(current) = self.checkpoint else {
            return Ok(());
        };
        let next = self.next_index();
        if current.end == self.end && current.next == next {
            return Ok(());
        }
        self.write_checkpoint(current.successor(self.end, next))
    }

    /// Called by recovery on the last segment: makes what open recovered durable and, in
    /// the current format, raises the checkpoint to it durably, because the node will act
    /// on those entries as if synced (see the module docs).
    pub(super) fn settle_recovered(&mut self, sync: bool) -> Result<(), StorageError> {
        let covered = self
            .checkpoint
            .is_some_and(|c| c.end == self.end && c.next == self.next_index());
        if covered {
            return Ok(());
        }
        if sync {
            self.file.sync_data().map_err(io_err("fsync", &self.path))?;
        }
        if self.checkpoint.is_some() {
            self.checkpoint_synced()?;
            if sync {
                self.file.sync_data().map_err(io_err("fsync", &self.path))?;
            }
        }
        Ok(())
    }

    /// The checkpoint last written, for tests.
    #[cfg(test)]
    pub(super) fn checkpoint(&self) -> Option<Checkpoint> {
        self.checkpoint
    }

    /// Index one past its last record.
    pub(super) fn next_index(&self) -> Index {
        self.first_index + self.offsets.len() as u64
    }

    /// Byte range of the record in `slot`.
    fn bounds(&self, slot: usize) -> Option<(u64, u64)> {
        let start = u64::from(*self.offsets.get(slot)?);
        let end = self
            .offsets
            .get(slot + 1)
            .map_or(self.end, |&o| u64::from(o));
        Some((start, end))
    }
}

/// The log's segments and the range of indices `[first, next)` they hold.
#[derive(Debug)]
pub(super) struct SegmentLog {
    dir: PathBuf,
    sync: bool,
    segment_size: u64,
    /// Contiguous: each segment's first index is the previous one's next index. Every
    /// segment holds at least one record, except the last one between its creation and the
    /// write that follows it.
    segments: Vec<Segment>,
    first: Index,
    next: Index,
    /// The last segment has writes not yet flushed to the disk.
    dirty: bool,
    /// Encoding buffer reused across appends: one `write` per batch per segment.
    buf: Vec<u8>,
    /// A compacted segment file waiting to be reused by the next roll ([`SPARE_FILE`]).
    spare: Option<PathBuf>,
}

impl SegmentLog {
    /// A log over recovered `segments`; `empty_first` is its first index if there are none;
    /// `spare` is a recycled file found in the directory.
    pub(super) fn new(
        dir: PathBuf,
        sync: bool,
        segment_size: u64,
        segments: Vec<Segment>,
        empty_first: Index,
        spare: Option<PathBuf>,
    ) -> Self {
        let first = segments.first().map_or(empty_first, |s| s.first_index);
        let next = segments.last().map_or(empty_first, Segment::next_index);
        SegmentLog {
            dir,
            sync,
            segment_size,
            segments,
            first,
            next,
            dirty: false,
            buf: Vec::new(),
            spare,
        }
    }

    /// The checkpoint of the last segment, for tests.
    #[cfg(test)]
    pub(super) fn last_checkpoint(&self) -> Option<Checkpoint> {
        self.segments.last().and_then(Segment::checkpoint)
    }

    /// Whether a recycled segment file is waiting for the next roll.
    #[cfg(test)]
    pub(super) fn has_spare(&self) -> bool {
        self.spare.is_some()
    }

    /// First index held (equal to [`SegmentLog::next`] when empty).
    pub(super) fn first(&self) -> Index {
        self.first
    }

    /// Index one past the last one held.
    pub(super) fn next(&self) -> Index {
        self.next
    }

    /// Whether the log holds no entry.
    pub(super) fn is_empty(&self) -> bool {
        self.first == self.next
    }

    /// Path of the first segment, if any (for error messages).
    pub(super) fn first_path(&self) -> Option<&Path> {
        self.segments.first().map(|s| s.path.as_path())
    }

    /// Appends entries that the caller has validated (contiguous from [`SegmentLog::next`],
    /// each small enough for a record). Each segment receives the batch's records in one
    /// write. On error, [`SegmentLog::next`] tells how many entries made it to the files.
    pub(super) fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        let result = self.append_with(&mut buf, entries);
        if buf.capacity() <= KEEP_BUFFER_BYTES {
            self.buf = buf;
        }
        result
    }

    fn append_with(&mut self, buf: &mut Vec<u8>, entries: &[Entry]) -> Result<(), StorageError> {
        let mut pending = 0;
        for entry in entries {
            let roll = self.segments.last().is_none_or(|s| {
                // Never roll away from an empty segment: segments are never empty otherwise.
                !s.offsets.is_empty() && s.end + buf.len() as u64 >= self.segment_size
            });
            if roll {
                self.flush(buf, &mut pending)?;
                self.roll(entry.index)?;
            }
            let Some(seg) = self.segments.last_mut() else {
                return Err(StorageError::InvalidRequest("no active segment".into()));
            };
            let offset = u32::try_from(seg.end + buf.len() as u64).map_err(|_| {
                StorageError::InvalidRequest(format!(
                    "entry {} does not fit in a segment (offset beyond 4 GiB)",
                    entry.index
                ))
            })?;
            seg.offsets.push(offset);
            segment::encode_record(buf, seg.first_index, entry);
            pending += 1;
        }
        self.flush(buf, &mut pending)
    }

    /// Writes the encoded `pending` records in `buf` to the last segment, with zeros
    /// written ahead of them when they reach past the written part of the file.
    fn flush(&mut self, buf: &mut Vec<u8>, pending: &mut usize) -> Result<(), StorageError> {
        let count = std::mem::take(pending);
        if buf.is_empty() {
            return Ok(());
        }
        let (preallocate, segment_size) = (self.sync, self.segment_size);
        let Some(seg) = self.segments.last_mut() else {
            return Ok(());
        };
        let data_end = seg.end + buf.len() as u64;
        let mut allocated = seg.allocated.max(data_end);
        if preallocate && data_end > seg.allocated {
            allocated = seg
                .allocated
                .saturating_add(PREALLOC_CHUNK)
                .min(segment_size)
                .max(data_end);
            let zeros = usize::try_from(allocated - data_end).unwrap_or(0);
            buf.resize(buf.len() + zeros, 0);
        }
        let written = seg.file.write_all_at(buf, seg.end);
        buf.clear();
        if let Err(e) = written {
            // Forget the records that may not be on disk; the next write overwrites them.
            seg.offsets
                .truncate(seg.offsets.len().saturating_sub(count));
            return Err(StorageError::io("write", seg.path.clone(), e));
        }
        seg.end = data_end;
        seg.allocated = allocated;
        self.next += count as u64;
        self.dirty = true;
        Ok(())
    }

    /// Starts a new segment at `first_index` after closing the current one with an end
    /// marker and making it durable. Reuses the spare file if there is one.
    fn roll(&mut self, first_index: Index) -> Result<(), StorageError> {
        self.end_last_segment()?;
        self.sync()?;
        self.seal_last_segment()?;
        let name = segment::file_name(first_index);
        let path = self.dir.join(&name);
        let spare = if self.sync { self.spare.take() } else { None };
        let (file, allocated) = match spare {
            Some(spare) => self.reuse_spare(&spare, first_index, &path)?,
            None => {
                let tmp = self.dir.join(format!("{name}{TMP_SUFFIX}"));
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(&tmp)
                    .map_err(io_err("create", &tmp))?;
                file.write_all_at(&segment::encode_header(first_index), 0)
                    .map_err(io_err("write", &tmp))?;
                if self.sync {
                    file.sync_data().map_err(io_err("fsync", &tmp))?;
                }
                std::fs::rename(&tmp, &path).map_err(io_err("rename", &tmp))?;
                (file, 0)
            }
        };
        if self.sync {
            sync_dir(&self.dir)?;
        }
        if self.segments.is_empty() {
            self.first = first_index;
        }
        let end = segment::SEGMENT_HEADER_LEN as u64;
        self.segments.push(Segment::new(
            first_index,
            path,
            file,
            Vec::new(),
            end,
            allocated,
            Some(segment::initial_checkpoint(first_index)),
        ));
        Ok(())
    }

    /// Makes the last segment's checkpoint say "all of it", durably, before the segment
    /// stops being the last one (it is not fsynced again after that). Its data is already
    /// durable: the caller has just synced it.
    fn seal_last_segment(&mut self) -> Result<(), StorageError> {
        let sync = self.sync;
        let Some(seg) = self.segments.last_mut() else {
            return Ok(());
        };
        if seg.checkpoint.is_none() {
            return Ok(());
        }
        seg.checkpoint_synced()?;
        if sync {
            seg.file.sync_data().map_err(io_err("fsync", &seg.path))?;
        }
        Ok(())
    }

    /// Turns the spare file into the segment starting at `first_index` (at `path`): its
    /// header is overwritten and made durable before the rename gives it the segment's
    /// name, so a crash leaves either the spare or a segment with a valid header. Returns
    /// the open file and its length. The directory fsync is the caller's.
    fn reuse_spare(
        &self,
        spare: &Path,
        first_index: Index,
        path: &Path,
    ) -> Result<(File, u64), StorageError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(spare)
            .map_err(io_err("open", spare))?;
        file.write_all_at(&segment::encode_header(first_index), 0)
            .map_err(io_err("write", spare))?;
        file.sync_data().map_err(io_err("fsync", spare))?;
        let len = file.metadata().map_err(io_err("stat", spare))?.len();
        std::fs::rename(spare, path).map_err(io_err("rename", spare))?;
        tracing::debug!(path = %path.display(), bytes = len, "reusing a recycled segment file");
        Ok((file, len))
    }

    /// Writes an end marker after the last segment's data if its file holds anything past
    /// it (zeros written ahead, or old records of a recycled file), so that once the
    /// segment is no longer the last one, recovery reads exactly its records. The caller
    /// syncs.
    fn end_last_segment(&mut self) -> Result<(), StorageError> {
        let Some(seg) = self.segments.last_mut() else {
            return Ok(());
        };
        if seg.allocated > seg.end {
            seg.file
                .write_all_at(&[0u8; RECORD_HEADER_LEN], seg.end)
                .map_err(io_err("write", &seg.path))?;
            seg.allocated = seg.allocated.max(seg.end + RECORD_HEADER_LEN as u64);
            self.dirty = true;
        }
        Ok(())
    }

    /// Makes every write so far durable (no fsync under `UnsafeNoSync`), then records
    /// that in the last segment's checkpoint. Only the last segment can hold unflushed
    /// writes: older ones were flushed when the next began.
    pub(super) fn sync(&mut self) -> Result<(), StorageError> {
        if self.dirty {
            if let Some(seg) = self.segments.last_mut() {
                if self.sync {
                    seg.file.sync_data().map_err(io_err("fsync", &seg.path))?;
                }
                // Only after the fsync: the checkpoint must never claim unsynced data.
                seg.checkpoint_synced()?;
            }
        }
        self.dirty = false;
        Ok(())
    }

    /// Removes every entry `>= from`, durably. Below the first index everything goes and
    /// the log restarts at `from`.
    pub(super) fn truncate_from(&mut self, from: Index) -> Result<(), StorageError> {
        if from >= self.next {
            return Ok(());
        }
        if from <= self.first {
            self.remove_newest_while(|_| true)?;
            self.first = from;
            self.next = from;
            return Ok(());
        }
        self.remove_newest_while(|s| s.first_index >= from)?;
        if let Some(seg) = self.segments.last_mut() {
            let slot = usize::try_from(from - seg.first_index).unwrap_or(usize::MAX);
            if let Some(&offset) = seg.offsets.get(slot) {
                let offset = u64::from(offset);
                if let Some(current) = seg.checkpoint.filter(|c| c.end > offset) {
                    // Lower the checkpoint durably before cutting: a crash between the two
                    // must not leave a checkpoint that claims records the file lacks.
                    seg.write_checkpoint(current.successor(offset, from))?;
                    if self.sync {
                        seg.file.sync_data().map_err(io_err("fsync", &seg.path))?;
                    }
                }
                // Cut the file, not just the index: the records after the cut carry this
                // segment's checksum seed, and one that new records happened to end in
                // front of would read as data. Appends write zeros ahead again.
                seg.file
                    .set_len(offset)
                    .map_err(io_err("truncate", &seg.path))?;
                if self.sync {
                    seg.file.sync_data().map_err(io_err("fsync", &seg.path))?;
                }
                seg.offsets.truncate(slot);
                seg.end = offset;
                seg.allocated = offset;
            }
        }
        // The remaining data was flushed by the truncation or when its successor began.
        self.dirty = false;
        self.next = from;
        Ok(())
    }

    /// Deletes whole segments whose entries are all `<= upto`, never the last segment.
    /// With `SyncPolicy::Always` the first one removed becomes the spare file when there
    /// is none: every later segment starts above `upto`, so its records never verify there.
    pub(super) fn compact(&mut self, upto: Index) -> Result<(), StorageError> {
        while self.segments.len() > 1 && self.segments[0].next_index() <= upto.saturating_add(1) {
            let path = &self.segments[0].path;
            if self.sync && self.spare.is_none() {
                let spare = self.dir.join(SPARE_FILE);
                std::fs::rename(path, &spare).map_err(io_err("rename", path))?;
                sync_dir(&self.dir)?;
                self.spare = Some(spare);
            } else {
                remove_durably(&self.dir, path, self.sync)?;
            }
            self.segments.remove(0);
            self.first = self.segments[0].first_index;
        }
        Ok(())
    }

    /// Deletes every segment; the log restarts empty at `first`.
    pub(super) fn discard(&mut self, first: Index) -> Result<(), StorageError> {
        self.remove_newest_while(|_| true)?;
        self.first = first;
        self.next = first;
        self.dirty = false;
        Ok(())
    }

    /// Removes segments from the end while `pred` holds, each removal durable before the
    /// next, so that what survives a crash is always a prefix of the log.
    fn remove_newest_while(&mut self, pred: impl Fn(&Segment) -> bool) -> Result<(), StorageError> {
        while let Some(seg) = self.segments.last() {
            if !pred(seg) {
                break;
            }
            remove_durably(&self.dir, &seg.path, self.sync)?;
            self.segments.pop();
            self.next = self.segments.last().map_or(self.first, Segment::next_index);
        }
        Ok(())
    }

    /// Position of the segment holding `index`.
    fn segment_of(&self, index: Index) -> Option<usize> {
        let n = self.segments.partition_point(|s| s.first_index <= index);
        n.checked_sub(1)
            .filter(|&k| self.segments.get(k).is_some_and(|s| index < s.next_index()))
    }

    /// Reads entries `[lo, hi)` (which the log holds) into `out`, one read per segment,
    /// admitting each through `budget` before reading it. Returns `true` if the budget
    /// stopped the read early.
    pub(super) fn read_entries(
        &self,
        lo: Index,
        hi: Index,
        budget: &mut ByteBudget,
        out: &mut Vec<Entry>,
    ) -> Result<bool, StorageError> {
        let mut index = lo;
        while index < hi {
            let Some(seg) = self.segment_of(index).and_then(|k| self.segments.get(k)) else {
                return Err(StorageError::Unavailable {
                    requested: index,
                    last_index: self.next.saturating_sub(1),
                });
            };
            let first_slot = usize::try_from(index - seg.first_index).unwrap_or(usize::MAX);
            let stop = hi.min(seg.next_index());
            let (mut start, mut end, mut count, mut exhausted) = (0, 0, 0usize, false);
            while index + (count as u64) < stop {
                let Some((s, e)) = seg.bounds(first_slot + count) else {
                    break;
                };
                if !budget.admit(segment::size_hint_of_record(e - s)) {
                    exhausted = true;
                    break;
                }
                if count == 0 {
                    start = s;
                }
                end = e;
                count += 1;
            }
            if count > 0 {
                read_records(seg, index, count, start, end, out)?;
            }
            if exhausted {
                return Ok(true);
            }
            if count == 0 {
                // The offset index lacks an entry the log claims to hold: never return a
                // result with a hole in it.
                return Err(StorageError::Unavailable {
                    requested: index,
                    last_index: self.next.saturating_sub(1),
                });
            }
            index += count as u64;
        }
        Ok(false)
    }

    /// The lowest index from which the entries to the end fit in `budget` bytes (by
    /// [`Entry::size_hint`]); [`SegmentLog::next`] if not even the last one fits.
    pub(super) fn tail_start(&self, budget: u64) -> Index {
        let mut used = 0u64;
        let mut start = self.next;
        for seg in self.segments.iter().rev() {
            for slot in (0..seg.offsets.len()).rev() {
                let Some((s, e)) = seg.bounds(slot) else {
                    return start;
                };
                used = used.saturating_add(segment::size_hint_of_record(e - s));
                if used > budget {
                    return start;
                }
                start = seg.first_index + slot as u64;
            }
        }
        start
    }
}

/// Reads the `count` records of `seg` that start with `index` and occupy `[start, end)`,
/// checking each again: the disk may have changed since it was scanned at open.
fn read_records(
    seg: &Segment,
    index: Index,
    count: usize,
    start: u64,
    end: u64,
    out: &mut Vec<Entry>,
) -> Result<(), StorageError> {
    let len = usize::try_from(end - start).unwrap_or(usize::MAX);
    let mut buf = vec![0u8; len];
    seg.file
        .read_exact_at(&mut buf, start)
        .map_err(io_err("read", &seg.path))?;
    let mut at = 0;
    for expected in index..index + count as u64 {
        let reason = match segment::decode_at(&buf, at, seg.first_index) {
            Decoded::Record(r) if r.index == expected => {
                out.push(r.to_entry());
                at = r.end;
                continue;
            }
            Decoded::Record(r) => format!(
                "record holds index {} where {expected} was expected",
                r.index
            ),
            Decoded::Bad { reason, .. } => reason,
            Decoded::End => "record missing (end of data)".into(),
        };
        return Err(StorageError::Corruption {
            path: seg.path.clone(),
            offset: start + at as u64,
            reason,
        });
    }
    Ok(())
}
