//! The simulated disk of one node: writes become durable only when their (simulated)
//! fsync completes; a crash loses every write that was not durable and, in some runs,
//! leaves a torn prefix of the oldest one — exactly what `FileStorage` can leave behind.

use std::collections::VecDeque;

use raftlock_raft::{
    Entry, HardState, Index, InitialState, Rand, Snapshot, SnapshotLog, Term, WriteBatch,
};

/// What survives a crash.
#[derive(Clone, Debug, Default)]
pub struct DurableState {
    /// Persisted term and vote.
    pub hard_state: HardState,
    /// The latest snapshot.
    pub snapshot: Option<Snapshot>,
    /// Persisted log, contiguous; it may start at or below the snapshot's index.
    pub log: Vec<Entry>,
}

impl DurableState {
    /// Carries out a write batch (its first `entries` entries) as the `Storage` contract
    /// says; `Err` when the core asked for something storage refuses, which stops a real
    /// node: an install that keeps a log not holding the snapshot's last entry, or an
    /// append that does not follow the log.
    fn apply(&mut self, w: &WriteBatch, entries: usize) -> Result<(), String> {
        if let Some(install) = &w.snapshot {
            self.install(&install.snapshot, install.log)?;
        }
        if let Some(hs) = &w.hard_state {
            self.hard_state = hs.clone();
        }
        if let Some(from) = w.log.truncate_from {
            self.log.retain(|e| e.index < from);
        }
        for e in w.log.entries.iter().take(entries) {
            if e.index != self.last_index() + 1 {
                return Err(format!(
                    "storage refuses an append of index {} after last index {}",
                    e.index,
                    self.last_index()
                ));
            }
            self.log.push(e.clone());
        }
        Ok(())
    }

    /// Index of the last entry held (the snapshot's when the log is empty).
    pub fn last_index(&self) -> Index {
        self.log
            .last()
            .map(|e| e.index)
            .or(self.snapshot.as_ref().map(|s| s.meta.last_index))
            .unwrap_or(0)
    }

    /// Installs a snapshot as `Storage::install_snapshot` does: one not newer than the
    /// current is skipped (`Ok(false)`); `log` keeps or discards the log, and keeping a log
    /// that does not hold the snapshot's last entry is refused.
    pub fn install(&mut self, snap: &Snapshot, log: SnapshotLog) -> Result<bool, String> {
        let (index, term) = (snap.meta.last_index, snap.meta.last_term);
        if self
            .snapshot
            .as_ref()
            .is_some_and(|s| s.meta.last_index >= index)
        {
            return Ok(false);
        }
        match log {
            SnapshotLog::Keep => {
                if !self.log.iter().any(|e| e.index == index && e.term == term) {
                    return Err(format!(
                        "storage told to keep a log that does not hold ({index}, {term})"
                    ));
                }
            }
            SnapshotLog::Discard => self.log.clear(),
        }
        self.snapshot = Some(snap.clone());
        Ok(true)
    }

    /// Whether the entry (index, term) is durable here, in the log or under the snapshot.
    pub fn holds(&self, index: Index, term: Term, matches: impl Fn(&Entry) -> bool) -> bool {
        if self
            .snapshot
            .as_ref()
            .is_some_and(|s| index <= s.meta.last_index)
        {
            return true;
        }
        self.log
            .iter()
            .any(|e| e.index == index && e.term == term && matches(e))
    }
}

/// A node's disk: durable state plus writes in flight (in order).
#[derive(Debug, Default)]
pub struct SimDisk {
    /// What a crash would leave.
    pub durable: DurableState,
    pending: VecDeque<WriteBatch>,
}

impl SimDisk {
    /// Queues a write; it becomes durable at [`SimDisk::complete`].
    pub fn submit(&mut self, w: WriteBatch) {
        self.pending.push_back(w);
    }

    /// The oldest pending write finished its fsync; returns its sequence number.
    pub fn complete(&mut self) -> Result<Option<u64>, String> {
        let Some(w) = self.pending.pop_front() else {
            return Ok(None);
        };
        self.durable.apply(&w, usize::MAX)?;
        Ok(Some(w.seq))
    }

    /// Loses every pending write; with `torn`, the oldest one is partly written: its hard
    /// state and truncation (each durable on its own in FileStorage) and a random prefix of
    /// its entries. Returns a description for the trace.
    pub fn crash(&mut self, rng: &mut dyn Rand, torn: bool) -> Result<String, String> {
        let lost = self.pending.len();
        let mut note = format!("lost {lost} pending writes");
        if torn {
            if let Some(w) = self.pending.front() {
                let keep = rng.gen_range(0, w.log.entries.len() as u64 + 1) as usize;
                let w = w.clone();
                self.durable.apply(&w, keep)?;
                note.push_str(&format!(
                    ", torn write kept {keep}/{} entries",
                    w.log.entries.len()
                ));
            }
        }
        self.pending.clear();
        Ok(note)
    }

    /// What a restarted node recovers.
    pub fn recover(&self) -> InitialState {
        InitialState {
            hard_state: self.durable.hard_state.clone(),
            snapshot: self.durable.snapshot.clone(),
            entries: self.durable.log.clone(),
        }
    }
}
