//! The runtime's snapshot paths that are not plain jobs.
//!
//! **Sending** ([`ChunkSender`]): the core names each chunk (a [`SnapshotChunk`]: an
//! InstallSnapshot without its bytes, and how many to read), and the bytes come from
//! storage's current snapshot through a [`SnapshotReader`], never from a copy in memory.
//! Reading a file can block, so for storage on disk the reads run on tokio's blocking pool,
//! one batch after another on one task, so chunks leave in the order the core produced
//! them: a follower accepts only the chunk at the offset it expects, and a reordered chunk
//! would wait for the leader's resend. In-memory storage is read on the event loop (a
//! slice of `Bytes`, no copy).
//!
//! **Restoring** ([`ApplyOrder`]): a received snapshot is restored from storage once the
//! write installing it is done, which storage reports with the reader to restore from.
//! Entries after the snapshot must reach the state machine after that restore, but the
//! core may hand them out first: it learns the write is durable from any later write's
//! `Persisted` (cumulative), and a follower's write made inline can report before the
//! storage thread's report of the install. So apply jobs queue behind a restore whose
//! reader has not arrived yet, and leave in order once it has.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::mpsc;

use super::workers::ApplyJob;
use crate::core::SnapshotChunk;
use crate::message::Message;
use crate::network::NetworkManager;
use crate::storage::SnapshotReader;
use crate::types::SnapshotMeta;

/// Apply jobs in the order the core produced them, held behind restores of snapshots that
/// storage has not reported installed yet. Bounded by the core's apply credits
/// (`max_pending_apply_batches`), like the applier's own queue.
#[derive(Default)]
pub(crate) struct ApplyOrder {
    queue: VecDeque<Slot>,
}

enum Slot {
    Job(ApplyJob),
    /// The restore of this snapshot, once storage reports it installed.
    Restore(SnapshotMeta),
}

impl ApplyOrder {
    /// The core asked for the state machine to be restored from `meta` once the write
    /// installing it is done.
    pub(crate) fn await_install(&mut self, meta: SnapshotMeta) {
        self.queue.push_back(Slot::Restore(meta));
    }

    /// `job`, if nothing waits ahead of it; otherwise it waits its turn.
    pub(crate) fn push(&mut self, job: ApplyJob) -> Option<ApplyJob> {
        if self.queue.is_empty() {
            return Some(job);
        }
        self.queue.push_back(Slot::Job(job));
        None
    }

    /// Storage installed the snapshot `reader` reads: its restore takes the place the core
    /// gave it. Returns the jobs that may go now, in order.
    pub(crate) fn installed(&mut self, reader: Arc<dyn SnapshotReader>) -> Vec<ApplyJob> {
        let meta = reader.info().meta.clone();
        let at = self
            .queue
            .iter()
            .position(|s| matches!(s, Slot::Restore(m) if *m == meta));
        match at {
            Some(at) => self.queue[at] = Slot::Job(ApplyJob::Restore(reader)),
            None => {
                // Every install comes with the core's request to restore; restore anyway,
                // so the state machine matches what storage holds.
                tracing::error!(
                    index = meta.last_index,
                    "storage installed a snapshot the core did not ask to restore"
                );
                self.queue.push_back(Slot::Job(ApplyJob::Restore(reader)));
            }
        }
        let mut ready = Vec::new();
        while let Some(Slot::Job(_)) = self.queue.front() {
            if let Some(Slot::Job(job)) = self.queue.pop_front() {
                ready.push(job);
            }
        }
        ready
    }
}

/// Batches of chunks queued for reading before new ones are dropped (a dropped chunk is a
/// lost message: the leader sends it again). The core keeps at most `CHUNK_WINDOW` chunks
/// in flight per follower, so this is only reached when reads fall far behind.
const QUEUE: usize = 64;

/// Reads the bytes of snapshot chunks and sends them.
pub(crate) struct ChunkSender {
    network: Arc<dyn NetworkManager>,
    /// The current snapshot in storage (what the core's chunks name, unless it changed
    /// since they were made).
    reader: Option<Arc<dyn SnapshotReader>>,
    /// Read on the event loop (in-memory storage) instead of the blocking pool.
    inline: bool,
    /// The reading task, started with the first chunk from disk.
    queue: Option<mpsc::Sender<Batch>>,
}

type Batch = (Arc<dyn SnapshotReader>, Vec<SnapshotChunk>);

impl ChunkSender {
    pub(crate) fn new(
        network: Arc<dyn NetworkManager>,
        reader: Option<Arc<dyn SnapshotReader>>,
        inline: bool,
    ) -> Self {
        ChunkSender {
            network,
            reader,
            inline,
            queue: None,
        }
    }

    /// Storage's current snapshot changed (a new one was installed).
    pub(crate) fn set_reader(&mut self, reader: Arc<dyn SnapshotReader>) {
        self.reader = Some(reader);
    }

    /// Reads and sends `chunks`. Chunks of a snapshot that is no longer storage's current
    /// one are dropped.
    pub(crate) fn send(&mut self, mut chunks: Vec<SnapshotChunk>) {
        let Some(reader) = self.reader.clone() else {
            tracing::debug!(
                count = chunks.len(),
                "dropping snapshot chunks: storage holds no snapshot yet"
            );
            return;
        };
        let before = chunks.len();
        chunks.retain(|c| {
            c.source()
                .is_some_and(|(meta, _)| *meta == reader.info().meta)
        });
        if chunks.len() < before {
            tracing::debug!(
                dropped = before - chunks.len(),
                "dropping chunks of a snapshot storage no longer holds"
            );
        }
        if chunks.is_empty() {
            return;
        }
        if self.inline {
            self.network.send(read(reader.as_ref(), chunks));
            return;
        }
        let queue = self.queue.get_or_insert_with(|| {
            let (tx, rx) = mpsc::channel(QUEUE);
            tokio::spawn(run(rx, Arc::clone(&self.network)));
            tx
        });
        if queue.try_send((reader, chunks)).is_err() {
            tracing::debug!("snapshot chunk reads fall behind; dropping a batch");
        }
    }
}

/// Reads batch after batch on the blocking pool and sends each, in order. Ends when the
/// node drops its sender.
async fn run(mut batches: mpsc::Receiver<Batch>, network: Arc<dyn NetworkManager>) {
    while let Some((reader, chunks)) = batches.recv().await {
        match tokio::task::spawn_blocking(move || read(reader.as_ref(), chunks)).await {
            Ok(messages) => network.send(messages),
            Err(e) => tracing::error!(error = %e, "reading snapshot chunks failed"),
        }
    }
}

/// The chunks with their bytes; a chunk that cannot be read is dropped (and sent again by
/// the leader's resend, or never if the file stays unreadable: the error is logged).
fn read(reader: &dyn SnapshotReader, chunks: Vec<SnapshotChunk>) -> Vec<Message> {
    chunks
        .into_iter()
        .filter_map(|c| {
            let (_, offset) = c.source()?;
            match reader.read_chunk(offset, c.len) {
                Ok(data) => Some(c.fill(data)),
                Err(e) => {
                    tracing::error!(error = %e, offset, "cannot read a snapshot chunk");
                    None
                }
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{MemStorage, Storage};
    use crate::types::{Entry, Snapshot};

    fn reader(index: u64) -> Arc<dyn SnapshotReader> {
        let mut s = MemStorage::new();
        let snap = Snapshot {
            meta: SnapshotMeta {
                last_index: index,
                last_term: 1,
                membership: None,
            },
            data: bytes::Bytes::from(format!("state at {index}")),
        };
        s.save_snapshot(&snap).unwrap();
        s.snapshot_reader().unwrap().unwrap()
    }

    fn apply(index: u64) -> ApplyJob {
        ApplyJob::Apply(vec![Entry::normal(index, 1, "x")])
    }

    /// What each job is: `R<index>` for a restore, `A<first index>` for entries.
    fn names(jobs: &[ApplyJob]) -> Vec<String> {
        jobs.iter()
            .map(|j| match j {
                ApplyJob::Restore(r) => format!("R{}", r.info().meta.last_index),
                ApplyJob::Apply(e) => format!("A{}", e[0].index),
                ApplyJob::BuildSnapshot(_) => "B".into(),
            })
            .collect()
    }

    #[test]
    fn entries_after_a_snapshot_wait_for_its_restore_even_if_handed_out_first() {
        let mut order = ApplyOrder::default();
        assert!(
            order.push(apply(3)).is_some(),
            "nothing waits: goes at once"
        );
        order.await_install(reader(10).info().meta.clone());
        assert!(order.push(apply(11)).is_none(), "waits behind the restore");
        order.await_install(reader(20).info().meta.clone());
        assert!(order.push(apply(21)).is_none());
        // The second install is reported first: nothing may overtake the first restore.
        assert!(order.installed(reader(20)).is_empty());
        assert_eq!(
            names(&order.installed(reader(10))),
            ["R10", "A11", "R20", "A21"]
        );
        assert!(order.push(apply(22)).is_some(), "nothing waits any more");
        // An install the core never announced is restored all the same.
        assert_eq!(names(&order.installed(reader(30))), ["R30"]);
    }
}
