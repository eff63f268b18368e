//! In-memory indexes over the log: the term of every entry as compact runs, a bounded
//! cache of the most recent entries, and the byte budget that `entries()` applies.

use std::collections::VecDeque;

use crate::types::{Entry, Index, Term};

/// The terms of the log as runs `(first index of the run, term)`.
///
/// Terms change only at elections, so a handful of runs describe millions of entries;
/// storing a term per entry would cost 8 bytes each for nothing.
#[derive(Debug, Default)]
pub(super) struct TermRuns {
    runs: Vec<(Index, Term)>,
}

impl TermRuns {
    /// Records that `index` (the entry after the last one recorded) has `term`.
    pub(super) fn push(&mut self, index: Index, term: Term) {
        match self.runs.last() {
            Some(&(_, t)) if t == term => {}
            _ => self.runs.push((index, term)),
        }
    }

    /// The term of `index`, assuming the caller checked that the log holds it.
    pub(super) fn term_at(&self, index: Index) -> Option<Term> {
        let n = self.runs.partition_point(|&(start, _)| start <= index);
        self.runs.get(n.checked_sub(1)?).map(|&(_, t)| t)
    }

    /// Forgets every index `>= from`.
    pub(super) fn truncate_from(&mut self, from: Index) {
        let n = self.runs.partition_point(|&(start, _)| start < from);
        self.runs.truncate(n);
    }

    /// Forgets the runs that end before `first`, the new first index of the log.
    pub(super) fn drop_below(&mut self, first: Index) {
        let n = self.runs.partition_point(|&(start, _)| start <= first);
        if n > 1 {
            self.runs.drain(..n - 1);
        }
    }

    /// Forgets everything.
    pub(super) fn clear(&mut self) {
        self.runs.clear();
    }
}

/// The most recent entries of the log, up to a byte budget (by [`Entry::size_hint`]).
///
/// Invariant: the cached entries are contiguous and end at the log's last entry, so a read
/// at or above [`EntryCache::first_index`] never touches the disk.
#[derive(Debug)]
pub(super) struct EntryCache {
    entries: VecDeque<Entry>,
    bytes: usize,
    capacity: usize,
}

impl EntryCache {
    /// An empty cache holding at most `capacity` bytes of entries.
    pub(super) fn new(capacity: usize) -> Self {
        EntryCache {
            entries: VecDeque::new(),
            bytes: 0,
            capacity,
        }
    }

    /// Index of the oldest cached entry, `None` when the cache is empty.
    pub(super) fn first_index(&self) -> Option<Index> {
        self.entries.front().map(|e| e.index)
    }

    /// The byte budget of the cache.
    pub(super) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Adds the entry following the last cached one, evicting the oldest as needed.
    pub(super) fn push(&mut self, entry: Entry) {
        debug_assert!(self
            .entries
            .back()
            .is_none_or(|b| b.index + 1 == entry.index));
        self.bytes += entry.size_hint();
        self.entries.push_back(entry);
        while self.bytes > self.capacity {
            let Some(e) = self.entries.pop_front() else {
                break;
            };
            self.bytes -= e.size_hint();
        }
    }

    /// The cached entry at `index`.
    pub(super) fn get(&self, index: Index) -> Option<&Entry> {
        let first = self.first_index()?;
        let slot = usize::try_from(index.checked_sub(first)?).ok()?;
        self.entries.get(slot)
    }

    /// Forgets every entry with index `>= from`.
    pub(super) fn truncate_from(&mut self, from: Index) {
        while self.entries.back().is_some_and(|e| e.index >= from) {
            if let Some(e) = self.entries.pop_back() {
                self.bytes -= e.size_hint();
            }
        }
    }

    /// Forgets every entry with index `< first`.
    pub(super) fn drop_below(&mut self, first: Index) {
        while self.entries.front().is_some_and(|e| e.index < first) {
            if let Some(e) = self.entries.pop_front() {
                self.bytes -= e.size_hint();
            }
        }
    }

    /// Forgets everything.
    pub(super) fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }
}

/// The `max_bytes` rule of [`Storage::entries`](crate::Storage::entries): stop once the
/// total exceeds the budget, but always return at least one entry.
#[derive(Debug)]
pub(super) struct ByteBudget {
    max: u64,
    used: u64,
    taken: usize,
}

impl ByteBudget {
    /// A budget of `max` bytes.
    pub(super) fn new(max: u64) -> Self {
        ByteBudget {
            max,
            used: 0,
            taken: 0,
        }
    }

    /// Whether one more entry of `size` bytes may be taken; counts it if so.
    pub(super) fn admit(&mut self, size: u64) -> bool {
        let used = self.used.saturating_add(size);
        if self.taken > 0 && used > self.max {
            return false;
        }
        self.used = used;
        self.taken += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn term_runs_answer_lookups_and_follow_truncation_and_compaction() {
        let mut runs = TermRuns::default();
        for (i, t) in [(1, 1), (2, 1), (3, 2), (4, 2), (5, 5)] {
            runs.push(i, t);
        }
        assert_eq!(runs.runs.len(), 3);
        let terms: Vec<_> = (1..=5).map(|i| runs.term_at(i).unwrap()).collect();
        assert_eq!(terms, vec![1, 1, 2, 2, 5]);
        assert_eq!(runs.term_at(0), None);
        runs.truncate_from(4);
        assert_eq!(runs.term_at(3), Some(2));
        runs.push(4, 3);
        assert_eq!(runs.term_at(4), Some(3));
        runs.drop_below(4);
        assert_eq!(runs.runs, vec![(4, 3)]);
        runs.truncate_from(3);
        assert!(runs.runs.is_empty());
    }

    #[test]
    fn cache_evicts_oldest_beyond_capacity_and_stays_a_suffix() {
        let e = |i| Entry::normal(i, 1, vec![0u8; 79]); // size_hint 100
        let mut cache = EntryCache::new(250);
        for i in 1..=5 {
            cache.push(e(i));
        }
        assert_eq!(cache.first_index(), Some(4));
        assert_eq!(cache.get(5).unwrap().index, 5);
        assert!(cache.get(3).is_none() && cache.get(6).is_none());
        cache.truncate_from(5);
        assert_eq!((cache.first_index(), cache.bytes), (Some(4), 100));
        cache.drop_below(5);
        assert_eq!((cache.first_index(), cache.bytes), (None, 0));
    }

    #[test]
    fn budget_takes_at_least_one_entry() {
        let mut b = ByteBudget::new(10);
        assert!(b.admit(50));
        assert!(!b.admit(1));
        let mut b = ByteBudget::new(100);
        assert!(b.admit(50) && b.admit(50) && !b.admit(1));
    }
}
