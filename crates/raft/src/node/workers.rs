//! The two workers of a node: the storage writer (group commit: every write batch queued
//! since the last flush goes to disk with one `sync`) and the applier (the application's
//! state machine, in log order, in batches). Each runs on a thread of its own, so the
//! event loop never blocks on I/O — or, for in-memory storage and an applier declared
//! non-blocking, inline on the event loop, saving the thread switches. Either way they
//! report back through one event channel.

use std::io::{BufReader, Read};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::applier::{Applier, ApplierError};
use crate::core::{SnapshotLog, SnapshotWrite, WriteBatch};
use crate::error::StorageError;
use crate::storage::{
    SnapshotReader, SnapshotSource, SnapshotStream, SnapshotWriter, StagedSnapshot, Storage,
};
use crate::types::{ApplyMsg, Entry, EntryKind, Index, SnapshotInfo, Term};

/// Read buffer between a snapshot in storage and the state machine restoring from it.
const RESTORE_BUFFER: usize = 1 << 20;

/// What the workers tell the event loop.
pub(crate) enum WorkerEvent {
    /// Every write batch up to this sequence number is durable.
    Persisted {
        seq: u64,
        entries: usize,
        started: Instant,
        /// How long the batch's closing `sync` took.
        fsync: Duration,
    },
    /// A snapshot the node built is installed in storage; the reader reads it.
    SnapshotSaved(Arc<dyn SnapshotReader>),
    /// A snapshot received from the leader is installed in storage (reported before the
    /// `Persisted` of the write that installed it): restore the state machine from it.
    SnapshotInstalled(Arc<dyn SnapshotReader>),
    /// Storage made a writer for the snapshot the core asked for.
    SnapshotWriter(Box<dyn SnapshotWriter>),
    /// Entries up to `index` are applied; `results` are the application's answers.
    Applied {
        index: Index,
        results: Vec<(Index, Term, Result<Bytes, ApplierError>)>,
        /// The state machine was replaced by a snapshot up to `index`.
        restored: bool,
    },
    /// The state machine streamed its state at `index` into a staged snapshot.
    SnapshotBuilt {
        index: Index,
        staged: StagedSnapshot,
    },
    /// Building or saving a snapshot failed.
    SnapshotFailed(String),
    /// Storage failed: the node must stop (its durable state is unknown).
    StorageFailed(StorageError),
    /// The application failed to apply or restore: the node must stop.
    ApplierFailed(ApplierError),
}

pub(crate) enum StorageJob {
    Write(WriteBatch),
    /// Make a writer for a new snapshot (a temp file), for the applier to stream into.
    NewSnapshotWriter,
    /// Install a snapshot the node built; its log is kept (it covers applied entries,
    /// which storage holds).
    InstallBuilt {
        info: SnapshotInfo,
        staged: StagedSnapshot,
    },
    Compact(Index),
}

pub(crate) enum ApplyJob {
    /// Replace the state machine with the snapshot the reader reads.
    Restore(Arc<dyn SnapshotReader>),
    Apply(Vec<Entry>),
    /// Stream the state machine into the writer.
    BuildSnapshot(Box<dyn SnapshotWriter>),
}

impl std::fmt::Debug for WorkerEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WorkerEvent::Persisted { seq, entries, .. } => f
                .debug_struct("Persisted")
                .field("seq", seq)
                .field("entries", entries)
                .finish_non_exhaustive(),
            WorkerEvent::SnapshotSaved(r) => {
                f.debug_tuple("SnapshotSaved").field(r.info()).finish()
            }
            WorkerEvent::SnapshotInstalled(r) => {
                f.debug_tuple("SnapshotInstalled").field(r.info()).finish()
            }
            WorkerEvent::SnapshotWriter(_) => f.write_str("SnapshotWriter"),
            WorkerEvent::Applied {
                index, restored, ..
            } => f
                .debug_struct("Applied")
                .field("index", index)
                .field("restored", restored)
                .finish_non_exhaustive(),
            WorkerEvent::SnapshotBuilt { index, staged } => f
                .debug_struct("SnapshotBuilt")
                .field("index", index)
                .field("staged", staged)
                .finish(),
            WorkerEvent::SnapshotFailed(reason) => {
                f.debug_tuple("SnapshotFailed").field(reason).finish()
            }
            WorkerEvent::StorageFailed(e) => f.debug_tuple("StorageFailed").field(e).finish(),
            WorkerEvent::ApplierFailed(e) => f.debug_tuple("ApplierFailed").field(e).finish(),
        }
    }
}

/// Where storage jobs run: on a thread of their own (group commit: everything queued
/// since the last flush goes to disk with one `sync`), or inline on the event loop for
/// storage that [`is_in_memory`](Storage::is_in_memory).
///
/// With `RaftBuilder::with_inline_follower_writes`, a node with a storage thread still
/// writes inline while it is not the leader and the thread is idle. A follower has nothing to do while its write is in flight (its answer
/// waits for the `sync`), and handing the write to the thread and the outcome back costs
/// two thread wake-ups on every write's critical path. A leader keeps the thread: its own
/// write overlaps the round trip to the followers, and its loop keeps taking proposals
/// meanwhile.
pub(crate) enum StorageWorker {
    Thread {
        jobs: std_mpsc::Sender<StorageJob>,
        shared: Arc<SharedStorage>,
    },
    Inline(Box<dyn Storage>),
}

/// The storage, shared by the thread and the event loop. Only the event loop submits
/// jobs, so when `queued` is 0 the thread has finished and reported every job, and the
/// lock is free.
pub(crate) struct SharedStorage {
    storage: Mutex<Box<dyn Storage>>,
    /// Jobs handed to the thread and not yet finished.
    queued: AtomicUsize,
}

impl SharedStorage {
    /// Runs `batch` under the lock. A poisoned lock (a panic inside the storage) leaves
    /// the durable state unknown, which is a storage failure too.
    fn run(
        &self,
        batch: Vec<StorageJob>,
        events: &mpsc::UnboundedSender<WorkerEvent>,
        started: Instant,
    ) -> Result<(), StorageError> {
        let mut storage = self.storage.lock().map_err(|_| {
            StorageError::InvalidRequest(
                "the storage panicked during an earlier call; its state is unknown".into(),
            )
        })?;
        run_storage_batch(storage.as_mut(), batch, events, started)
    }
}

impl StorageWorker {
    /// Starts the worker; returns the thread to join at shutdown, if one was started.
    pub(crate) fn start(
        storage: Box<dyn Storage>,
        events: &mpsc::UnboundedSender<WorkerEvent>,
    ) -> std::io::Result<(Self, Option<JoinHandle<()>>)> {
        if storage.is_in_memory() {
            return Ok((StorageWorker::Inline(storage), None));
        }
        let shared = Arc::new(SharedStorage {
            storage: Mutex::new(storage),
            queued: AtomicUsize::new(0),
        });
        let (jobs, rx) = std_mpsc::channel();
        let thread = spawn_storage(Arc::clone(&shared), rx, events.clone())?;
        Ok((StorageWorker::Thread { jobs, shared }, Some(thread)))
    }

    /// Runs `job` inline or queues it for the thread; outcomes arrive as events. With a
    /// thread, `inline_if_idle` runs the job here when the thread has nothing queued, so
    /// jobs stay in order either way.
    pub(crate) fn submit(
        &mut self,
        job: StorageJob,
        events: &mpsc::UnboundedSender<WorkerEvent>,
        inline_if_idle: bool,
    ) {
        let result = match self {
            StorageWorker::Thread { jobs, shared } => {
                if inline_if_idle && shared.queued.load(Ordering::Acquire) == 0 {
                    shared.run(vec![job], events, Instant::now())
                } else {
                    shared.queued.fetch_add(1, Ordering::AcqRel);
                    let _ = jobs.send(job);
                    Ok(())
                }
            }
            StorageWorker::Inline(storage) => {
                run_storage_batch(storage.as_mut(), vec![job], events, Instant::now())
            }
        };
        if let Err(e) = result {
            let _ = events.send(WorkerEvent::StorageFailed(e));
        }
    }
}

/// Runs the storage writer until its job channel closes. The storage is dropped (its data
/// directory released) once both this thread and the event loop have let go of it.
fn spawn_storage(
    shared: Arc<SharedStorage>,
    jobs: std_mpsc::Receiver<StorageJob>,
    events: mpsc::UnboundedSender<WorkerEvent>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("raft-storage".into())
        .spawn(move || {
            while let Ok(first) = jobs.recv() {
                // Group commit: take everything queued, write it all, sync once.
                let started = Instant::now();
                let mut batch = vec![first];
                while let Ok(more) = jobs.try_recv() {
                    batch.push(more);
                }
                let count = batch.len();
                let result = shared.run(batch, &events, started);
                // Only once the outcome is reported: the event loop may then write
                // inline, and its events must come after these.
                shared.queued.fetch_sub(count, Ordering::AcqRel);
                if let Err(e) = result {
                    let _ = events.send(WorkerEvent::StorageFailed(e));
                    return;
                }
            }
        })
}

fn run_storage_batch(
    storage: &mut dyn Storage,
    batch: Vec<StorageJob>,
    events: &mpsc::UnboundedSender<WorkerEvent>,
    started: Instant,
) -> Result<(), StorageError> {
    let mut last_seq = None;
    let mut entries = 0;
    // Reported after the sync: received snapshots installed (before `Persisted`, so that
    // the state machine is restored before entries after them are applied) and snapshots
    // built (after it), or why building one failed.
    let mut installed = Vec::new();
    let mut outcomes = Vec::new();
    // Consecutive writes' entries are contiguous, so they go to the storage as one append
    // (one write syscall for the whole group). Anything else flushes them first to keep
    // the jobs' order.
    let mut pending: Vec<Entry> = Vec::new();
    let flush = |storage: &mut dyn Storage, pending: &mut Vec<Entry>| {
        if pending.is_empty() {
            return Ok(());
        }
        storage.append_owned(std::mem::take(pending))
    };
    for job in batch {
        match job {
            StorageJob::Write(mut w) => {
                if !w.snapshot.is_empty() || w.hard_state.is_some() || w.log.truncate_from.is_some()
                {
                    flush(storage, &mut pending)?;
                }
                let mut install = None;
                for write in std::mem::take(&mut w.snapshot) {
                    match write {
                        SnapshotWrite::Chunk { meta, offset, data } => {
                            storage.write_snapshot_chunk(&meta, offset, &data)?;
                        }
                        SnapshotWrite::Install { info, log } => {
                            storage.install_snapshot(&info, SnapshotSource::Received, log)?;
                            install = Some(info);
                        }
                    }
                }
                if install.is_some() {
                    // Only the last install of a batch needs restoring: it replaces the
                    // state the earlier ones would have restored.
                    let reader = storage.snapshot_reader()?.ok_or_else(|| {
                        StorageError::InvalidRequest("an installed snapshot is missing".into())
                    })?;
                    installed.push(reader);
                }
                if let Some(hs) = &w.hard_state {
                    storage.set_hard_state(hs)?;
                }
                if let Some(from) = w.log.truncate_from {
                    storage.truncate_suffix(from)?;
                }
                entries += w.log.entries.len();
                if pending.is_empty() {
                    pending = std::mem::take(&mut w.log.entries);
                } else {
                    pending.append(&mut w.log.entries);
                }
                last_seq = Some(w.seq);
            }
            StorageJob::NewSnapshotWriter => match storage.snapshot_writer() {
                Ok(writer) => outcomes.push(WorkerEvent::SnapshotWriter(writer)),
                Err(e) => outcomes.push(WorkerEvent::SnapshotFailed(e.to_string())),
            },
            StorageJob::InstallBuilt { info, staged } => {
                flush(storage, &mut pending)?;
                // Newer than the stored one unless a leader's snapshot overtook it, which
                // is harmless to skip.
                let source = SnapshotSource::Staged(staged);
                match storage.install_snapshot(&info, source, SnapshotLog::Keep) {
                    Ok(()) => match storage.snapshot_reader()? {
                        Some(reader) => outcomes.push(WorkerEvent::SnapshotSaved(reader)),
                        None => {
                            return Err(StorageError::InvalidRequest(
                                "an installed snapshot is missing".into(),
                            ))
                        }
                    },
                    Err(StorageError::InvalidRequest(reason)) => {
                        outcomes.push(WorkerEvent::SnapshotFailed(reason));
                    }
                    Err(e) => return Err(e),
                }
            }
            StorageJob::Compact(upto) => {
                flush(storage, &mut pending)?;
                storage.compact(upto)?;
            }
        }
    }
    flush(storage, &mut pending)?;
    let sync_started = Instant::now();
    storage.sync()?;
    let fsync = sync_started.elapsed();
    for reader in installed {
        let _ = events.send(WorkerEvent::SnapshotInstalled(reader));
    }
    if let Some(seq) = last_seq {
        let _ = events.send(WorkerEvent::Persisted {
            seq,
            entries,
            started,
            fsync,
        });
    }
    for outcome in outcomes {
        let _ = events.send(outcome);
    }
    Ok(())
}

/// The application's state machine and what it has applied.
pub(crate) struct ApplierRunner {
    applier: Box<dyn Applier>,
    applied: Index,
    apply_tx: Option<mpsc::Sender<ApplyMsg>>,
}

impl ApplierRunner {
    /// Streams the snapshot into the state machine, then reads whatever it left so that
    /// every byte is checked against the snapshot's CRC32C. A mismatch found only after
    /// the state machine took the bytes leaves it in an unknown state: the node must stop.
    fn restore(&mut self, reader: Arc<dyn SnapshotReader>) -> Result<(), ApplierError> {
        let meta = reader.info().meta.clone();
        let mut input = BufReader::with_capacity(RESTORE_BUFFER, SnapshotStream::new(reader));
        self.applier.restore_from(&meta, &mut input)?;
        std::io::copy(&mut input.by_ref(), &mut std::io::sink()).map_err(|e| {
            ApplierError(format!(
                "snapshot at index {} could not be read to its end: {e}",
                meta.last_index
            ))
        })?;
        Ok(())
    }

    /// Runs one job; returns `false` once the applier failed (the node must stop).
    fn run(&mut self, job: ApplyJob, events: &mpsc::UnboundedSender<WorkerEvent>) -> bool {
        match job {
            ApplyJob::Restore(reader) => {
                let info = reader.info().clone();
                if let Err(e) = self.restore(reader) {
                    let _ = events.send(WorkerEvent::ApplierFailed(e));
                    return false;
                }
                self.applied = info.meta.last_index;
                if let Some(tx) = &self.apply_tx {
                    let _ = tx.blocking_send(ApplyMsg::Snapshot {
                        index: info.meta.last_index,
                        term: info.meta.last_term,
                        size: info.size,
                    });
                }
                let _ = events.send(WorkerEvent::Applied {
                    index: self.applied,
                    results: Vec::new(),
                    restored: true,
                });
            }
            ApplyJob::Apply(entries) => {
                let mut results = Vec::with_capacity(entries.len());
                for e in &entries {
                    if e.kind == EntryKind::Normal {
                        let result = self.applier.apply(e.index, e.term, &e.data);
                        if let Some(tx) = &self.apply_tx {
                            let _ = tx.blocking_send(ApplyMsg::Command {
                                index: e.index,
                                term: e.term,
                                data: e.data.clone(),
                            });
                        }
                        results.push((e.index, e.term, result));
                    }
                    self.applied = e.index;
                }
                let _ = events.send(WorkerEvent::Applied {
                    index: self.applied,
                    results,
                    restored: false,
                });
            }
            ApplyJob::BuildSnapshot(mut writer) => {
                let built = self
                    .applier
                    .snapshot_to(&mut *writer)
                    .map_err(|e| e.to_string())
                    .and_then(|index| {
                        let staged = writer.finish().map_err(|e| e.to_string())?;
                        Ok(WorkerEvent::SnapshotBuilt { index, staged })
                    });
                let _ = events.send(built.unwrap_or_else(WorkerEvent::SnapshotFailed));
            }
        }
        true
    }
}

/// Where the applier runs: on a thread of its own, or inline on the event loop (see
/// [`RaftBuilder::with_inline_applier`](crate::RaftBuilder::with_inline_applier)).
pub(crate) enum ApplyWorker {
    Thread(std_mpsc::Sender<ApplyJob>),
    /// `None` once the applier failed.
    Inline(Option<ApplierRunner>),
}

impl ApplyWorker {
    /// Starts the worker; returns the thread to join at shutdown, if one was started.
    /// An `apply_tx` (whose backpressure blocks) always gets a thread.
    pub(crate) fn start(
        applier: Box<dyn Applier>,
        inline: bool,
        events: &mpsc::UnboundedSender<WorkerEvent>,
        apply_tx: Option<mpsc::Sender<ApplyMsg>>,
    ) -> std::io::Result<(Self, Option<JoinHandle<()>>)> {
        let runner = ApplierRunner {
            applier,
            applied: 0,
            apply_tx,
        };
        if inline && runner.apply_tx.is_none() {
            return Ok((ApplyWorker::Inline(Some(runner)), None));
        }
        let (tx, rx) = std_mpsc::channel();
        let events = events.clone();
        let thread = std::thread::Builder::new()
            .name("raft-applier".into())
            .spawn(move || {
                let mut runner = runner;
                while let Ok(job) = rx.recv() {
                    if !runner.run(job, &events) {
                        return;
                    }
                }
            })?;
        Ok((ApplyWorker::Thread(tx), Some(thread)))
    }

    /// Runs `job` (inline) or queues it (thread); outcomes arrive as events.
    pub(crate) fn submit(&mut self, job: ApplyJob, events: &mpsc::UnboundedSender<WorkerEvent>) {
        match self {
            ApplyWorker::Thread(tx) => {
                let _ = tx.send(job);
            }
            ApplyWorker::Inline(runner) => {
                if let Some(r) = runner {
                    if !r.run(job, events) {
                        *runner = None;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::LogWrite;
    use crate::storage::MemStorage;
    use crate::types::HardState;

    /// A `MemStorage` that counts its `append` calls.
    struct Counting {
        inner: MemStorage,
        appends: usize,
    }

    impl Storage for Counting {
        fn hard_state(&self) -> HardState {
            self.inner.hard_state()
        }
        fn set_hard_state(&mut self, state: &HardState) -> Result<(), StorageError> {
            self.inner.set_hard_state(state)
        }
        fn first_index(&self) -> Index {
            self.inner.first_index()
        }
        fn last_index(&self) -> Index {
            self.inner.last_index()
        }
        fn term(&self, index: Index) -> Result<Term, StorageError> {
            self.inner.term(index)
        }
        fn entries(&self, lo: Index, hi: Index, max: u64) -> Result<Vec<Entry>, StorageError> {
            self.inner.entries(lo, hi, max)
        }
        fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
            self.appends += 1;
            self.inner.append(entries)
        }
        fn truncate_suffix(&mut self, from: Index) -> Result<(), StorageError> {
            self.inner.truncate_suffix(from)
        }
        fn sync(&mut self) -> Result<(), StorageError> {
            self.inner.sync()
        }
        fn snapshot_info(&self) -> Option<SnapshotInfo> {
            self.inner.snapshot_info()
        }
        fn snapshot_reader(
            &self,
        ) -> Result<Option<std::sync::Arc<dyn crate::storage::SnapshotReader>>, StorageError>
        {
            self.inner.snapshot_reader()
        }
        fn snapshot_writer(&self) -> Result<Box<dyn crate::storage::SnapshotWriter>, StorageError> {
            self.inner.snapshot_writer()
        }
        fn write_snapshot_chunk(
            &mut self,
            meta: &crate::types::SnapshotMeta,
            offset: u64,
            data: &[u8],
        ) -> Result<(), StorageError> {
            self.inner.write_snapshot_chunk(meta, offset, data)
        }
        fn install_snapshot(
            &mut self,
            info: &SnapshotInfo,
            source: SnapshotSource,
            log: crate::core::SnapshotLog,
        ) -> Result<(), StorageError> {
            self.inner.install_snapshot(info, source, log)
        }
        fn compact(&mut self, upto: Index) -> Result<(), StorageError> {
            self.inner.compact(upto)
        }
    }

    fn write(seq: u64, truncate_from: Option<Index>, entries: &[(Index, Term)]) -> StorageJob {
        StorageJob::Write(WriteBatch {
            seq,
            snapshot: Vec::new(),
            hard_state: None,
            log: LogWrite {
                truncate_from,
                entries: entries
                    .iter()
                    .map(|&(i, t)| Entry::normal(i, t, format!("e{i}t{t}")))
                    .collect(),
            },
        })
    }

    #[test]
    fn consecutive_writes_go_down_as_one_append_and_a_truncation_keeps_its_place() {
        let mut s = Counting {
            inner: MemStorage::new(),
            appends: 0,
        };
        let (tx, mut rx) = mpsc::unbounded_channel();
        let batch = vec![
            write(1, None, &[(1, 1), (2, 1)]),
            write(2, None, &[(3, 1)]),
            write(3, None, &[(4, 1), (5, 1)]),
            // A new leader's entries replace 4 and 5: what was pending goes down first.
            write(4, Some(4), &[(4, 2)]),
            write(5, None, &[(5, 2)]),
        ];
        run_storage_batch(&mut s, batch, &tx, Instant::now()).unwrap();
        assert_eq!(s.appends, 2, "one append before the truncation, one after");
        let terms: Vec<(Index, Term)> = s
            .entries(1, 6, u64::MAX)
            .unwrap()
            .iter()
            .map(|e| (e.index, e.term))
            .collect();
        assert_eq!(terms, vec![(1, 1), (2, 1), (3, 1), (4, 2), (5, 2)]);
        match rx.try_recv() {
            Ok(WorkerEvent::Persisted { seq, entries, .. }) => {
                assert_eq!((seq, entries), (5, 7));
            }
            _ => panic!("expected one Persisted event for the whole batch"),
        }
    }
}
