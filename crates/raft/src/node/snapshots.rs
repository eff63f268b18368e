//! The runtime's side of sending snapshots: the core names each chunk (a
//! [`SnapshotChunk`]: an InstallSnapshot without its bytes, and how many to read), and
//! the bytes come from storage's current snapshot through a [`SnapshotReader`], never from
//! a copy in memory.
//!
//! Reading a file can block, so for storage on disk the reads run on tokio's blocking pool,
//! one batch after another on one task, so chunks leave in the order the core produced
//! them: a follower accepts only the chunk at the offset it expects, and a reordered chunk
//! would wait for the leader's resend. In-memory storage is read on the event loop (a
//! slice of `Bytes`, no copy).

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::core::SnapshotChunk;
use crate::message::Message;
use crate::network::NetworkManager;
use crate::storage::SnapshotReader;

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
