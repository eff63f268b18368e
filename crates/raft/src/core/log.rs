//! The Raft log as the core sees it (the original's LogManager): every entry after the
//! last compaction point, kept in memory, with a record of which suffix still has to be
//! written to storage and which prefix storage has made durable.
//!
//! Why in memory: the core must stay sans-IO, and keeping the entries since the last
//! compaction lets it build AppendEntries without calling storage. Its size is bounded by
//! the snapshot policy (`snapshot_threshold + log_compaction_min_entries` entries, plus
//! uncommitted ones bounded by `max_uncommitted_bytes`).

use std::collections::VecDeque;

use super::configs::{ConfigAt, ConfigLog};
use crate::membership::Membership;
use crate::types::{Entry, Index, Term};

/// Writes the runtime must make durable, in order: first truncate, then append.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogWrite {
    /// Remove every stored entry with index `>=` this before appending.
    pub truncate_from: Option<Index>,
    /// Entries to append after the truncation.
    pub entries: Vec<Entry>,
}

/// What storage does with its log when it installs a snapshot. The core decides, because
/// only the core knows which of storage's entries are still part of the log: a truncation
/// or entries not yet written sit in the same write batch, and storage looking at its own
/// contents would guess wrong (a log kept that the core dropped, and the next append
/// refused).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapshotLog {
    /// Keep the entries after the snapshot's last index. Storage holds that entry with the
    /// snapshot's term; if it does not, the install fails with
    /// [`StorageError::SnapshotLogMismatch`](crate::StorageError::SnapshotLogMismatch) and
    /// writes nothing.
    Keep,
    /// Discard the whole log: it restarts right after the snapshot.
    Discard,
}

#[derive(Debug)]
pub(crate) struct RaftLog {
    /// Index and term of the entry just before `entries` (the snapshot's, or 0/0).
    offset_index: Index,
    offset_term: Term,
    entries: VecDeque<Entry>,
    /// First index not yet handed to storage.
    unstable_from: Index,
    /// Lowest index storage must truncate from before the next append, if any.
    pending_truncate: Option<Index>,
    /// Highest index known durable in storage (a prefix of this log).
    durable: Index,
    /// Writes handed out but not yet acknowledged: (sequence, last index covered).
    inflight_writes: VecDeque<(u64, Index)>,
    /// The configuration entries of this log and the one in effect.
    pub(crate) configs: ConfigLog,
}

impl RaftLog {
    /// A log recovered from storage: the snapshot point (`offset_index`, `offset_term`)
    /// and the durable entries after it (entries at or below the snapshot point, which
    /// storage may keep until it compacts whole segments, are skipped).
    /// `base` is the configuration at the snapshot point.
    pub(crate) fn new(
        offset_index: Index,
        offset_term: Term,
        entries: Vec<Entry>,
        base: Membership,
    ) -> Self {
        let entries: Vec<Entry> = entries
            .into_iter()
            .skip_while(|e| e.index <= offset_index)
            .collect();
        debug_assert!(entries
            .iter()
            .enumerate()
            .all(|(i, e)| e.index == offset_index + 1 + i as u64));
        let last = offset_index + entries.len() as u64;
        let base = ConfigAt {
            index: offset_index,
            term: offset_term,
            membership: base,
        };
        let configs = ConfigLog::new(base, &entries);
        RaftLog {
            offset_index,
            offset_term,
            entries: entries.into(),
            unstable_from: last + 1,
            pending_truncate: None,
            durable: last,
            inflight_writes: VecDeque::new(),
            configs,
        }
    }

    /// Index and term of the snapshot point the log starts after.
    pub(crate) fn offset(&self) -> (Index, Term) {
        (self.offset_index, self.offset_term)
    }

    pub(crate) fn first_index(&self) -> Index {
        self.offset_index + 1
    }

    pub(crate) fn last_index(&self) -> Index {
        self.offset_index + self.entries.len() as u64
    }

    pub(crate) fn last_term(&self) -> Term {
        self.entries.back().map_or(self.offset_term, |e| e.term)
    }

    /// Highest index durable in storage.
    pub(crate) fn durable_index(&self) -> Index {
        self.durable
    }

    /// Term of the entry at `index`; `None` if compacted away or beyond the end.
    pub(crate) fn term(&self, index: Index) -> Option<Term> {
        if index == self.offset_index {
            return Some(self.offset_term);
        }
        self.get(index).map(|e| e.term)
    }

    pub(crate) fn get(&self, index: Index) -> Option<&Entry> {
        let pos = index.checked_sub(self.offset_index + 1)?;
        self.entries.get(usize::try_from(pos).ok()?)
    }

    /// Whether the log holds an entry at `index` with `term` (the AppendEntries consistency
    /// check). Index 0 always matches.
    pub(crate) fn matches(&self, index: Index, term: Term) -> bool {
        index == 0 || self.term(index) == Some(term)
    }

    /// §5.4.1: a candidate's log is at least as up-to-date as ours.
    pub(crate) fn is_up_to_date(&self, last_index: Index, last_term: Term) -> bool {
        last_term > self.last_term()
            || (last_term == self.last_term() && last_index >= self.last_index())
    }

    /// First index of the run of entries with the same term as `index`, scanning back no
    /// further than the first held entry.
    pub(crate) fn first_index_of_term_at(&self, index: Index) -> Index {
        let Some(term) = self.term(index) else {
            return index;
        };
        let mut i = index;
        while i > self.first_index() && self.term(i - 1) == Some(term) {
            i -= 1;
        }
        i
    }

    /// Last index whose entry has `term`, if the log holds one.
    pub(crate) fn last_index_of_term(&self, term: Term) -> Option<Index> {
        // Terms never decrease along the log, so scan back from the end and stop early.
        for e in self.entries.iter().rev() {
            if e.term == term {
                return Some(e.index);
            }
            if e.term < term {
                return None;
            }
        }
        (self.offset_term == term && self.offset_index > 0).then_some(self.offset_index)
    }

    /// Up to `max_count` entries from `lo`, stopping once `max_bytes` is exceeded (at least
    /// one entry is returned when `lo` is held).
    pub(crate) fn slice(&self, lo: Index, max_count: usize, max_bytes: usize) -> Vec<Entry> {
        let Some(start) = self.position(lo) else {
            return Vec::new();
        };
        let mut count = (self.entries.len() - start).min(max_count);
        if max_bytes != usize::MAX {
            // Count first, then clone in one tight pass: every entry is cloned into several
            // slices (each follower's request, the storage write, the applier's batch).
            let mut bytes = 0usize;
            let fitting = self.entries.range(start..start + count).position(|e| {
                bytes += e.size_hint();
                bytes > max_bytes
            });
            if let Some(at) = fitting {
                count = at.max(1);
            }
        }
        let end = start + count;
        let (front, back) = self.entries.as_slices();
        let mut out = Vec::with_capacity(count);
        if start < front.len() {
            out.extend_from_slice(&front[start..end.min(front.len())]);
        }
        if end > front.len() {
            out.extend_from_slice(&back[start.saturating_sub(front.len())..end - front.len()]);
        }
        out
    }

    /// Whether the entries from `lo` on fill a request: `max_count` of them, or `max_bytes`.
    pub(crate) fn fills_request(&self, lo: Index, max_count: usize, max_bytes: usize) -> bool {
        let Some(start) = self.position(lo) else {
            return false;
        };
        if self.entries.len() - start >= max_count {
            return true;
        }
        let mut bytes = 0usize;
        self.entries.range(start..).any(|e| {
            bytes += e.size_hint();
            bytes >= max_bytes
        })
    }

    /// Where entry `index` sits in `entries`, if it is held.
    fn position(&self, index: Index) -> Option<usize> {
        let at = usize::try_from(index.checked_sub(self.offset_index + 1)?).ok()?;
        (at < self.entries.len()).then_some(at)
    }

    /// Entries in `[lo, hi]` (both held), for application.
    pub(crate) fn range(&self, lo: Index, hi: Index) -> Vec<Entry> {
        if hi < lo {
            return Vec::new();
        }
        self.slice(lo, (hi - lo + 1) as usize, usize::MAX)
    }

    /// Appends entries that follow the last one (the leader's own proposals).
    pub(crate) fn append(&mut self, entries: impl IntoIterator<Item = Entry>) {
        for e in entries {
            assert_eq!(
                e.index,
                self.last_index() + 1,
                "log append must be contiguous"
            );
            assert!(
                e.term >= self.last_term(),
                "terms never decrease along the log"
            );
            self.configs.appended(&e);
            self.entries.push_back(e);
        }
    }

    /// Merges entries from a leader whose `prev` entry matched: entries already held with
    /// the same term are skipped, the first conflicting one truncates the suffix (§5.3,
    /// AppendEntries receiver rule 3) and the rest are appended. Returns the index the
    /// truncation started at, if one happened.
    pub(crate) fn merge(&mut self, entries: Vec<Entry>) -> Option<Index> {
        // Entries are moved, not cloned: a follower takes in every entry of the log.
        let pos = entries
            .iter()
            .position(|e| self.term(e.index) != Some(e.term))?;
        let first = entries[pos].index;
        let mut truncated = None;
        if self.term(first).is_some() {
            assert!(first > self.offset_index, "never truncate into a snapshot");
            self.truncate_from(first);
            truncated = Some(first);
        }
        self.append(entries.into_iter().skip(pos));
        truncated
    }

    /// Drops every entry with index `>= from` from memory and schedules the same for storage.
    fn truncate_from(&mut self, from: Index) {
        let keep = (from - self.offset_index - 1) as usize;
        self.entries.truncate(keep);
        self.configs.truncated(from);
        if from < self.unstable_from {
            self.pending_truncate = Some(self.pending_truncate.map_or(from, |t| t.min(from)));
            self.unstable_from = from;
        }
        // Entries at `from` and beyond were replaced: whatever storage made durable of them
        // no longer counts, including writes still in flight.
        self.durable = self.durable.min(from - 1);
        for (_, last) in self.inflight_writes.iter_mut() {
            *last = (*last).min(from - 1);
        }
    }

    /// Drops entries up to and including `index` (all durable and covered by a snapshot);
    /// the log then starts after (`index`, its term).
    pub(crate) fn compact_to(&mut self, index: Index) {
        let Some(term) = self.term(index) else {
            return;
        };
        if index <= self.offset_index {
            return;
        }
        debug_assert!(
            index < self.unstable_from,
            "compacting entries not yet written"
        );
        let drop = (index - self.offset_index) as usize;
        self.entries.drain(..drop.min(self.entries.len()));
        self.offset_index = index;
        self.offset_term = term;
        self.configs.compacted(index);
    }

    /// Installs a snapshot ending at (`index`, `term`) (Raft §7) and decides what storage
    /// does with its log, so that afterwards storage holds exactly what this log says:
    ///
    /// - Storage holds the entries handed to it, those below `unstable_from` (writes in
    ///   flight included: storage runs writes in order, so they are done before the install).
    ///   A pending truncation is at or above `unstable_from` (`truncate_from` lowers both
    ///   together), so it never removes one of them. If the log holds (`index`, `term`)
    ///   below `unstable_from`, storage holds it too: [`SnapshotLog::Keep`]. A pending
    ///   truncation is then above `index` and still runs, after the install.
    /// - Otherwise [`SnapshotLog::Discard`]: storage drops its whole log, and with it any
    ///   pending truncation. If the log holds (`index`, `term`) among its unwritten entries,
    ///   the entries after it stay here and are written again after the install.
    ///
    /// In both cases nothing after `index` counts as durable until the write carrying the
    /// install is: the state machine is restored from the snapshot once that write is done,
    /// and no entry after the snapshot may be applied before that restore.
    /// `membership` is the configuration the snapshot carries.
    pub(crate) fn install(
        &mut self,
        index: Index,
        term: Term,
        membership: Membership,
    ) -> SnapshotLog {
        debug_assert!(index > self.offset_index, "install below the log's start");
        let holds = index >= self.offset_index && self.matches(index, term);
        let stored = holds && index < self.unstable_from;
        if holds {
            let drop = (index - self.offset_index) as usize;
            self.entries.drain(..drop.min(self.entries.len()));
        } else {
            self.entries.clear();
        }
        self.durable = self.durable.min(index);
        for (_, last) in self.inflight_writes.iter_mut() {
            *last = (*last).min(index);
        }
        self.offset_index = index;
        self.offset_term = term;
        self.configs.installed(index, term, membership, holds);
        if stored {
            debug_assert!(
                self.pending_truncate.is_none_or(|t| t > index),
                "a pending truncation below unstable_from"
            );
            SnapshotLog::Keep
        } else {
            self.pending_truncate = None;
            self.unstable_from = index + 1;
            SnapshotLog::Discard
        }
    }

    /// Whether there are writes not yet handed to the runtime.
    pub(crate) fn has_unstable(&self) -> bool {
        self.pending_truncate.is_some() || self.unstable_from <= self.last_index()
    }

    /// Hands the pending writes to the runtime under sequence number `seq`.
    pub(crate) fn take_write(&mut self, seq: u64) -> LogWrite {
        let entries = self.range(self.unstable_from, self.last_index());
        let write = LogWrite {
            truncate_from: self.pending_truncate.take(),
            entries,
        };
        self.unstable_from = self.last_index() + 1;
        self.inflight_writes.push_back((seq, self.last_index()));
        write
    }

    /// Storage made every write up to sequence `seq` durable; returns whether the durable
    /// index advanced.
    pub(crate) fn persisted(&mut self, seq: u64) -> bool {
        let before = self.durable;
        while let Some(&(s, last)) = self.inflight_writes.front() {
            if s > seq {
                break;
            }
            self.inflight_writes.pop_front();
            self.durable = self.durable.max(last);
        }
        self.durable > before
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_with_terms(terms: &[Term]) -> RaftLog {
        let entries = terms
            .iter()
            .enumerate()
            .map(|(i, t)| Entry::normal(i as u64 + 1, *t, ""))
            .collect();
        RaftLog::new(0, 0, entries, Membership::default())
    }

    #[test]
    fn merge_skips_matching_and_truncates_conflicts() {
        let mut log = log_with_terms(&[1, 1, 2, 2]);
        assert_eq!(
            log.merge(vec![Entry::normal(2, 1, ""), Entry::normal(3, 2, "")]),
            None
        );
        assert_eq!(log.last_index(), 4);
        assert_eq!(log.merge(vec![Entry::normal(3, 3, "")]), Some(3));
        assert_eq!(log.last_index(), 3);
        assert_eq!(log.term(3), Some(3));
        assert_eq!(log.durable_index(), 2);
        let w = log.take_write(1);
        assert_eq!(w.truncate_from, Some(3));
        assert_eq!(w.entries.len(), 1);
    }

    #[test]
    fn durable_index_follows_acknowledged_writes_and_truncations() {
        let mut log = log_with_terms(&[]);
        log.append([Entry::normal(1, 1, ""), Entry::normal(2, 1, "")]);
        let _ = log.take_write(1);
        log.append([Entry::normal(3, 1, "")]);
        let _ = log.take_write(2);
        assert_eq!(log.durable_index(), 0);
        assert!(log.persisted(1));
        assert_eq!(log.durable_index(), 2);
        // A conflict replaces index 3 while write 2 (which held the old index 3) is in flight.
        assert_eq!(log.merge(vec![Entry::normal(3, 2, "")]), Some(3));
        let w = log.take_write(3);
        assert_eq!(w.truncate_from, Some(3));
        assert!(!log.persisted(2));
        assert_eq!(log.durable_index(), 2);
        assert!(log.persisted(3));
        assert_eq!(log.durable_index(), 3);
    }

    #[test]
    fn install_keeps_the_stored_log_only_when_storage_holds_the_snapshot_entry() {
        // Handed to storage and matching: kept, and a truncation above it still runs.
        let mut log = log_with_terms(&[1, 1, 1, 1, 1, 1]);
        assert_eq!(log.merge(vec![Entry::normal(6, 2, "")]), Some(6));
        assert_eq!(log.install(4, 1, Membership::default()), SnapshotLog::Keep);
        let w = log.take_write(1);
        assert_eq!(w.truncate_from, Some(6));
        assert_eq!(w.entries.len(), 1);
        // A truncation at or below the snapshot: the core's log lost it, storage has not.
        let mut log = log_with_terms(&[1, 1, 1, 1, 1, 1]);
        assert_eq!(log.merge(vec![Entry::normal(3, 2, "")]), Some(3));
        assert_eq!(
            log.install(5, 1, Membership::default()),
            SnapshotLog::Discard
        );
        assert_eq!(log.last_index(), 5);
        let w = log.take_write(1);
        assert_eq!((w.truncate_from, w.entries.len()), (None, 0));
        // Matching but not yet written: discarded, and what follows is written again.
        let mut log = log_with_terms(&[1, 1]);
        log.append([Entry::normal(3, 1, ""), Entry::normal(4, 1, "")]);
        assert_eq!(
            log.install(3, 1, Membership::default()),
            SnapshotLog::Discard
        );
        let w = log.take_write(1);
        assert_eq!(
            w.entries.iter().map(|e| e.index).collect::<Vec<_>>(),
            vec![4]
        );
        // Nothing after the snapshot counts as durable before the install's write.
        assert_eq!(log.durable_index(), 2);
        assert!(log.persisted(1));
        assert_eq!(log.durable_index(), 4);
    }

    #[test]
    fn term_lookups_and_up_to_date_check() {
        let log = log_with_terms(&[1, 1, 2, 2, 2, 4]);
        assert_eq!(log.first_index_of_term_at(5), 3);
        assert_eq!(log.last_index_of_term(2), Some(5));
        assert_eq!(log.last_index_of_term(3), None);
        assert!(log.is_up_to_date(6, 4));
        assert!(log.is_up_to_date(1, 5));
        assert!(!log.is_up_to_date(9, 3));
        assert!(!log.is_up_to_date(5, 4));
    }

    #[test]
    fn slices_respect_count_and_bytes_across_the_ring_buffer_wrap() {
        // Compacting the front and appending again makes the VecDeque wrap around, so
        // slices must be stitched from its two halves.
        let mut log = RaftLog::new(0, 0, Vec::new(), Membership::default());
        let entry = |i: u64| Entry::normal(i, 1, vec![b'x'; (i % 5) as usize]);
        log.append((1..=12).map(entry));
        let _ = log.take_write(1);
        log.compact_to(8);
        log.append((13..=20).map(entry));
        assert!(
            !log.entries.as_slices().1.is_empty(),
            "the test needs a wrap"
        );
        let held: Vec<Entry> = (9..=20).map(entry).collect();
        for lo in 9..=20u64 {
            for max_count in [1usize, 3, 7, 100] {
                for max_bytes in [0usize, 30, 60, usize::MAX] {
                    // The rule, entry by entry: stop before the entry that exceeds
                    // max_bytes, but always return at least one.
                    let mut want = Vec::new();
                    let mut bytes = 0;
                    for e in held.iter().filter(|e| e.index >= lo).take(max_count) {
                        bytes += e.size_hint();
                        if !want.is_empty() && bytes > max_bytes {
                            break;
                        }
                        want.push(e.clone());
                    }
                    assert_eq!(
                        log.slice(lo, max_count, max_bytes),
                        want,
                        "lo {lo}, max_count {max_count}, max_bytes {max_bytes}"
                    );
                }
            }
        }
        assert!(log.slice(8, 10, usize::MAX).is_empty(), "compacted");
        assert!(log.slice(21, 10, usize::MAX).is_empty(), "beyond the end");
        assert_eq!(log.range(15, 20).len(), 6);
    }
}
