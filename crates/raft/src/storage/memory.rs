//! [`MemStorage`]: the [`Storage`] contract in memory, for tests and benchmarks.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;

use super::snapshot::{self, BytesReader, MemWriter, Receiving};
use super::{
    check_append, check_keep, check_range, check_snapshot_membership, check_snapshot_newer,
    SnapshotLog, SnapshotReader, SnapshotSource, SnapshotWriter, Storage,
};
use crate::error::StorageError;
use crate::types::{Entry, HardState, Index, SnapshotInfo, SnapshotMeta, Term};

/// Storage that keeps everything in memory. `sync` is free and nothing survives the process.
///
/// ```
/// use raftlock_raft::{Entry, MemStorage, Storage};
/// let mut s = MemStorage::new();
/// s.append(&[Entry::normal(1, 1, "x"), Entry::normal(2, 1, "y")]).unwrap();
/// s.sync().unwrap();
/// assert_eq!(s.last_index(), 2);
/// assert_eq!(s.entries(1, 3, u64::MAX).unwrap().len(), 2);
/// ```
#[derive(Debug, Default, Clone)]
pub struct MemStorage {
    hard_state: HardState,
    /// The latest snapshot and its bytes.
    snapshot: Option<(SnapshotInfo, Bytes)>,
    /// The snapshot being received from the leader.
    receiving: Option<Receiving<MemWriter>>,
    /// Entries `first_index ..`; `first_index` is tracked separately so an empty log still
    /// knows where it starts.
    log: VecDeque<Entry>,
    first_index: Index,
}

impl MemStorage {
    /// An empty store.
    pub fn new() -> Self {
        MemStorage {
            first_index: 1,
            ..Default::default()
        }
    }

    fn snapshot_index(&self) -> Index {
        self.snapshot.as_ref().map_or(0, |(s, _)| s.meta.last_index)
    }

    fn slot(&self, index: Index) -> Option<&Entry> {
        let offset = index.checked_sub(self.first_index)?;
        self.log.get(usize::try_from(offset).ok()?)
    }
}

impl Storage for MemStorage {
    fn hard_state(&self) -> HardState {
        self.hard_state.clone()
    }

    fn set_hard_state(&mut self, state: &HardState) -> Result<(), StorageError> {
        self.hard_state = state.clone();
        Ok(())
    }

    fn first_index(&self) -> Index {
        self.first_index
    }

    fn last_index(&self) -> Index {
        self.first_index + self.log.len() as u64 - 1
    }

    fn term(&self, index: Index) -> Result<Term, StorageError> {
        if index == 0 {
            return Ok(0);
        }
        if let Some((snap, _)) = &self.snapshot {
            if index == snap.meta.last_index {
                return Ok(snap.meta.last_term);
            }
        }
        if let Some(e) = self.slot(index) {
            return Ok(e.term);
        }
        if index < self.first_index {
            Err(StorageError::Compacted {
                requested: index,
                first_available: self.first_index,
            })
        } else {
            Err(StorageError::Unavailable {
                requested: index,
                last_index: self.last_index(),
            })
        }
    }

    fn entries(&self, lo: Index, hi: Index, max_bytes: u64) -> Result<Vec<Entry>, StorageError> {
        if !check_range(lo, hi, self.first_index, self.last_index())? {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        let mut bytes = 0u64;
        for index in lo..hi {
            let Some(e) = self.slot(index) else { break };
            bytes += e.size_hint() as u64;
            if !out.is_empty() && bytes > max_bytes {
                break;
            }
            out.push(e.clone());
        }
        Ok(out)
    }

    fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        let last = self.last_index();
        check_append(last, self.term(last)?, entries)?;
        self.log.extend(entries.iter().cloned());
        Ok(())
    }

    fn append_owned(&mut self, entries: Vec<Entry>) -> Result<(), StorageError> {
        let last = self.last_index();
        check_append(last, self.term(last)?, &entries)?;
        self.log.extend(entries);
        Ok(())
    }

    fn truncate_suffix(&mut self, from: Index) -> Result<(), StorageError> {
        if from <= self.snapshot_index() {
            return Err(StorageError::InvalidRequest(format!(
                "truncate from {from} would cut into the snapshot at {}",
                self.snapshot_index()
            )));
        }
        if from < self.first_index {
            self.log.clear();
            self.first_index = from;
            return Ok(());
        }
        let keep = usize::try_from(from - self.first_index).unwrap_or(usize::MAX);
        self.log.truncate(keep);
        Ok(())
    }

    fn sync(&mut self) -> Result<(), StorageError> {
        Ok(())
    }

    fn snapshot_info(&self) -> Option<SnapshotInfo> {
        self.snapshot.as_ref().map(|(info, _)| info.clone())
    }

    fn snapshot_reader(&self) -> Result<Option<Arc<dyn SnapshotReader>>, StorageError> {
        Ok(self.snapshot.as_ref().map(|(info, data)| {
            Arc::new(BytesReader::new(info.clone(), data.clone())) as Arc<dyn SnapshotReader>
        }))
    }

    fn snapshot_writer(&self) -> Result<Box<dyn SnapshotWriter>, StorageError> {
        Ok(Box::<MemWriter>::default())
    }

    fn write_snapshot_chunk(
        &mut self,
        meta: &SnapshotMeta,
        offset: u64,
        data: &[u8],
    ) -> Result<(), StorageError> {
        snapshot::receive_chunk(&mut self.receiving, meta, offset, data, || {
            Ok(MemWriter::default())
        })
    }

    fn install_snapshot(
        &mut self,
        info: &SnapshotInfo,
        source: SnapshotSource,
        log: SnapshotLog,
    ) -> Result<(), StorageError> {
        let meta = &info.meta;
        check_snapshot_newer(meta.last_index, self.snapshot_index())?;
        check_snapshot_membership(meta)?;
        let held = self.slot(meta.last_index).map(|e| e.term);
        check_keep(meta, log, held)?;
        let staged = match source {
            SnapshotSource::Received => snapshot::take_received(&mut self.receiving, info)?,
            SnapshotSource::Staged(staged) => {
                staged.check(info)?;
                staged
            }
        };
        let data = snapshot::staged_bytes(staged)?;
        if log == SnapshotLog::Discard {
            self.log.clear();
            self.first_index = meta.last_index + 1;
        }
        self.snapshot = Some((info.clone(), data));
        Ok(())
    }

    fn compact(&mut self, upto: Index) -> Result<(), StorageError> {
        if upto > self.snapshot_index() {
            return Err(StorageError::InvalidRequest(format!(
                "compact up to {upto} beyond the snapshot at {}",
                self.snapshot_index()
            )));
        }
        while self.first_index <= upto && !self.log.is_empty() {
            self.log.pop_front();
            self.first_index += 1;
        }
        Ok(())
    }

    fn is_in_memory(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Snapshot;

    #[test]
    fn rejects_gaps_and_decreasing_terms_without_writing() {
        let mut s = MemStorage::new();
        s.append(&[Entry::normal(1, 2, "a")]).unwrap();
        assert!(s.append(&[Entry::normal(3, 2, "c")]).is_err());
        assert!(s.append(&[Entry::normal(2, 1, "b")]).is_err());
        assert!(s.append_owned(vec![Entry::normal(3, 2, "c")]).is_err());
        assert!(s.append_owned(vec![Entry::normal(2, 1, "b")]).is_err());
        assert_eq!(s.last_index(), 1);
        s.append_owned(vec![Entry::normal(2, 2, "b"), Entry::normal(3, 3, "c")])
            .unwrap();
        assert_eq!(s.last_index(), 3);
        assert_eq!(s.entries(2, 4, u64::MAX).unwrap()[1].data, "c");
    }

    #[test]
    fn snapshot_keeps_matching_suffix_and_discards_conflicting_log() {
        let mut s = MemStorage::new();
        let entries: Vec<_> = (1..=5).map(|i| Entry::normal(i, 1, "x")).collect();
        s.append(&entries).unwrap();
        let snap = |i, t| Snapshot {
            meta: SnapshotMeta {
                last_index: i,
                last_term: t,
                membership: None,
            },
            data: Default::default(),
        };
        s.save_snapshot(&snap(3, 1)).unwrap();
        assert_eq!((s.first_index(), s.last_index()), (1, 5));
        s.save_snapshot(&snap(4, 2)).unwrap();
        assert_eq!((s.first_index(), s.last_index()), (5, 4));
        assert_eq!(s.term(4).unwrap(), 2);
        assert!(s.save_snapshot(&snap(4, 2)).is_err());
    }
}
