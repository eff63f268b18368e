//! The simulated disk of one node: writes become durable only when their (simulated)
//! fsync completes; a crash loses every write that was not durable and, in some runs,
//! leaves a torn prefix of the oldest one — exactly what `FileStorage` can leave behind.
//!
//! Snapshots follow `FileStorage`'s contract too: a snapshot received from the leader is
//! written chunk by chunk, in order, into a temporary file that no crash spares (open
//! deletes it), and becomes the snapshot only by an atomic install; the install keeps or
//! discards the log as the core says, and refuses what a real storage refuses (chunks out
//! of order, bytes that do not match, keeping a log without the snapshot's last entry).
//! Any refusal is reported: it would stop a real node.

use std::collections::VecDeque;

use raftlock_raft::{
    Entry, HardState, Index, InitialState, Rand, Snapshot, SnapshotInfo, SnapshotLog, SnapshotMeta,
    SnapshotWrite, Term, WriteBatch,
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
        // The log is contiguous: find the entry by its offset from the first.
        let Some(first) = self.log.first().map(|e| e.index) else {
            return false;
        };
        index
            .checked_sub(first)
            .and_then(|off| self.log.get(off as usize))
            .is_some_and(|e| e.index == index && e.term == term && matches(e))
    }
}

/// A node's disk: durable state plus writes in flight (in order).
#[derive(Debug, Default)]
pub struct SimDisk {
    /// What a crash would leave.
    pub durable: DurableState,
    pending: VecDeque<WriteBatch>,
    /// The temp file of a snapshot being received: lost on any crash.
    receiving: Option<(SnapshotMeta, Vec<u8>)>,
}

impl SimDisk {
    /// Queues a write; it becomes durable at [`SimDisk::complete`].
    pub fn submit(&mut self, w: WriteBatch) {
        self.pending.push_back(w);
    }

    /// The oldest pending write finished its fsync; returns its sequence number and the
    /// snapshot it installed, if any (the state machine is restored from it before the
    /// core hears that the write is durable).
    pub fn complete(&mut self) -> Result<Option<(u64, Option<Snapshot>)>, String> {
        let Some(w) = self.pending.pop_front() else {
            return Ok(None);
        };
        let installed = self.apply(&w, usize::MAX)?;
        Ok(Some((w.seq, installed)))
    }

    /// Carries out a write batch (its first `entries` entries) as the `Storage` contract
    /// says, in the runtime's order: snapshot chunks and install, hard state, truncation,
    /// append. `Err` when the core asked for something storage refuses.
    fn apply(&mut self, w: &WriteBatch, entries: usize) -> Result<Option<Snapshot>, String> {
        let mut installed = None;
        for write in &w.snapshot {
            match write {
                SnapshotWrite::Chunk { meta, offset, data } => {
                    if *offset == 0 {
                        self.receiving = Some((meta.clone(), Vec::new()));
                    }
                    // Like `FileStorage`, a chunk continues the snapshot of the same
                    // index and term; its membership is the install's business.
                    match self.receiving.as_mut() {
                        Some((m, buf))
                            if same_snapshot(m, meta) && buf.len() as u64 == *offset =>
                        {
                            buf.extend_from_slice(data);
                        }
                        _ => {
                            return Err(format!(
                                "storage refuses a chunk at offset {offset} of snapshot {}/{} that does not continue the one received",
                                meta.last_index, meta.last_term
                            ))
                        }
                    }
                }
                SnapshotWrite::Install { info, log } => {
                    let Some((meta, data)) = self.receiving.take() else {
                        return Err(
                            "storage refuses to install a snapshot it did not receive".into()
                        );
                    };
                    // The install's metadata is kept as given, its membership included
                    // (what `FileStorage` writes into the file), not the chunks'.
                    let snap = Snapshot {
                        meta: info.meta.clone(),
                        data: data.into(),
                    };
                    let received = SnapshotInfo::of(&snap);
                    if !same_snapshot(&meta, &info.meta)
                        || (received.size, received.checksum) != (info.size, info.checksum)
                    {
                        return Err(format!(
                            "storage refuses to install {info:?}: it received {} bytes (CRC32C {:08x}) of snapshot {}/{}",
                            received.size, received.checksum, meta.last_index, meta.last_term
                        ));
                    }
                    if !self.durable.install(&snap, *log)? {
                        return Err(format!(
                            "storage refuses a received snapshot at {} that is not newer than its own",
                            info.meta.last_index
                        ));
                    }
                    installed = Some(snap);
                }
            }
        }
        let d = &mut self.durable;
        if let Some(hs) = &w.hard_state {
            d.hard_state = hs.clone();
        }
        if let Some(from) = w.log.truncate_from {
            d.log.retain(|e| e.index < from);
        }
        for e in w.log.entries.iter().take(entries) {
            if e.index != d.last_index() + 1 {
                return Err(format!(
                    "storage refuses an append of index {} after last index {}",
                    e.index,
                    d.last_index()
                ));
            }
            d.log.push(e.clone());
        }
        Ok(installed)
    }

    /// Loses every pending write and the snapshot being received; with `torn`, the oldest
    /// write is partly done: its snapshot writes, hard state and truncation (each durable
    /// on its own in FileStorage) and a random prefix of its entries. Returns a description
    /// for the trace.
    pub fn crash(&mut self, rng: &mut dyn Rand, torn: bool) -> Result<String, String> {
        let lost = self.pending.len();
        let mut note = format!("lost {lost} pending writes");
        if torn {
            if let Some(w) = self.pending.front() {
                let keep = rng.gen_range(0, w.log.entries.len() as u64 + 1) as usize;
                let w = w.clone();
                self.apply(&w, keep)?;
                note.push_str(&format!(
                    ", torn write kept {keep}/{} entries",
                    w.log.entries.len()
                ));
            }
        }
        self.pending.clear();
        self.receiving = None;
        Ok(note)
    }

    /// What a restarted node recovers: the snapshot's metadata exactly as installed.
    pub fn recover(&self) -> InitialState {
        InitialState {
            hard_state: self.durable.hard_state.clone(),
            snapshot: self.durable.snapshot.as_ref().map(SnapshotInfo::of),
            entries: self.durable.log.clone(),
        }
    }

    /// `len` bytes at `offset` of the durable snapshot `meta`, if that is the snapshot
    /// held (a leader's chunk to send).
    pub fn read_chunk(&self, meta: &SnapshotMeta, offset: u64, len: u64) -> Option<bytes::Bytes> {
        let snap = self
            .durable
            .snapshot
            .as_ref()
            .filter(|s| same_snapshot(&s.meta, meta))?;
        let end = offset.checked_add(len)?;
        (end <= snap.data.len() as u64).then(|| snap.data.slice(offset as usize..end as usize))
    }
}

/// Whether two snapshot metadata name the same snapshot: the same index and term, which is
/// all `FileStorage` matches on (its file names carry nothing else).
fn same_snapshot(a: &SnapshotMeta, b: &SnapshotMeta) -> bool {
    (a.last_index, a.last_term) == (b.last_index, b.last_term)
}
