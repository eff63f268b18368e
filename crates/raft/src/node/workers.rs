//! The two workers of a node: the storage writer (group commit: every write batch queued
//! since the last flush goes to disk with one `sync`) and the applier (the application's
//! state machine, in log order, in batches). Each runs on a thread of its own, so the
//! event loop never blocks on I/O — or, for in-memory storage and an applier declared
//! non-blocking, inline on the event loop, saving the thread switches. Either way they
//! report back through one event channel.

use std::sync::mpsc as std_mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::applier::{Applier, ApplierError};
use crate::core::WriteBatch;
use crate::error::StorageError;
use crate::storage::Storage;
use crate::types::{ApplyMsg, Entry, EntryKind, Index, Snapshot, Term};

/// What the workers tell the event loop.
#[derive(Debug)]
pub(crate) enum WorkerEvent {
    /// Every write batch up to this sequence number is durable.
    Persisted {
        seq: u64,
        entries: usize,
        started: Instant,
        /// How long the batch's closing `sync` took.
        fsync: Duration,
    },
    /// A snapshot the node built is durable.
    SnapshotSaved(Snapshot),
    /// Entries up to `index` are applied; `results` are the application's answers.
    Applied {
        index: Index,
        results: Vec<(Index, Term, Result<Bytes, ApplierError>)>,
        /// The state machine was replaced by a snapshot up to `index`.
        restored: bool,
    },
    /// The state machine captured its state at `index`.
    SnapshotBuilt { index: Index, data: Bytes },
    /// Building or saving a snapshot failed.
    SnapshotFailed(String),
    /// Storage failed: the node must stop (its durable state is unknown).
    StorageFailed(StorageError),
    /// The application failed to apply or restore: the node must stop.
    ApplierFailed(ApplierError),
}

pub(crate) enum StorageJob {
    Write(WriteBatch),
    SaveSnapshot(Snapshot),
    Compact(Index),
}

pub(crate) enum ApplyJob {
    Restore(Snapshot),
    Apply(Vec<Entry>),
    BuildSnapshot,
}

/// Where storage jobs run: on a thread of their own (group commit: everything queued
/// since the last flush goes to disk with one `sync`), or inline on the event loop for
/// storage that [`is_in_memory`](Storage::is_in_memory).
pub(crate) enum StorageWorker {
    Thread(std_mpsc::Sender<StorageJob>),
    Inline(Box<dyn Storage>),
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
        let (tx, rx) = std_mpsc::channel();
        let thread = spawn_storage(storage, rx, events.clone())?;
        Ok((StorageWorker::Thread(tx), Some(thread)))
    }

    /// Runs `job` (inline) or queues it (thread); outcomes arrive as events.
    pub(crate) fn submit(&mut self, job: StorageJob, events: &mpsc::UnboundedSender<WorkerEvent>) {
        match self {
            StorageWorker::Thread(tx) => {
                let _ = tx.send(job);
            }
            StorageWorker::Inline(storage) => {
                if let Err(e) =
                    run_storage_batch(storage.as_mut(), vec![job], events, Instant::now())
                {
                    let _ = events.send(WorkerEvent::StorageFailed(e));
                }
            }
        }
    }
}

/// Runs the storage writer until its job channel closes; dropping the storage at the end
/// releases the data directory.
fn spawn_storage(
    mut storage: Box<dyn Storage>,
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
                if let Err(e) = run_storage_batch(storage.as_mut(), batch, &events, started) {
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
    let mut saved = Vec::new();
    for job in batch {
        match job {
            StorageJob::Write(w) => {
                if let Some(snap) = &w.snapshot {
                    storage.save_snapshot(snap)?;
                }
                if let Some(hs) = &w.hard_state {
                    storage.set_hard_state(hs)?;
                }
                if let Some(from) = w.log.truncate_from {
                    storage.truncate_suffix(from)?;
                }
                if !w.log.entries.is_empty() {
                    storage.append(&w.log.entries)?;
                    entries += w.log.entries.len();
                }
                last_seq = Some(w.seq);
            }
            StorageJob::SaveSnapshot(snap) => {
                // A snapshot the node built itself: newer than the stored one unless a
                // leader's snapshot overtook it, which is harmless to skip.
                match storage.save_snapshot(&snap) {
                    Ok(()) => saved.push(snap),
                    Err(StorageError::InvalidRequest(reason)) => {
                        let _ = events.send(WorkerEvent::SnapshotFailed(reason));
                    }
                    Err(e) => return Err(e),
                }
            }
            StorageJob::Compact(upto) => storage.compact(upto)?,
        }
    }
    let sync_started = Instant::now();
    storage.sync()?;
    let fsync = sync_started.elapsed();
    if let Some(seq) = last_seq {
        let _ = events.send(WorkerEvent::Persisted {
            seq,
            entries,
            started,
            fsync,
        });
    }
    for snap in saved {
        let _ = events.send(WorkerEvent::SnapshotSaved(snap));
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
    /// Runs one job; returns `false` once the applier failed (the node must stop).
    fn run(&mut self, job: ApplyJob, events: &mpsc::UnboundedSender<WorkerEvent>) -> bool {
        match job {
            ApplyJob::Restore(snap) => {
                if let Err(e) = self.applier.restore(&snap.meta, &snap.data) {
                    let _ = events.send(WorkerEvent::ApplierFailed(e));
                    return false;
                }
                self.applied = snap.meta.last_index;
                if let Some(tx) = &self.apply_tx {
                    let _ = tx.blocking_send(ApplyMsg::Snapshot {
                        index: snap.meta.last_index,
                        term: snap.meta.last_term,
                        data: snap.data.clone(),
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
            ApplyJob::BuildSnapshot => match self.applier.snapshot() {
                Ok((index, data)) => {
                    let _ = events.send(WorkerEvent::SnapshotBuilt { index, data });
                }
                Err(e) => {
                    let _ = events.send(WorkerEvent::SnapshotFailed(e.to_string()));
                }
            },
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
