//! Snapshots (the original's SnapshotManager): when to take one, log compaction after it,
//! and InstallSnapshot in chunks for followers that need compacted entries (Raft §7).
//!
//! Compaction rule: once a snapshot at index `s` is durable, the log keeps the entries
//! after `s - log_compaction_min_entries`, so a follower that is only slightly behind is
//! still served from the log; a follower that needs anything older gets the snapshot.
//!
//! # Snapshots of any size: the core never holds snapshot bytes
//!
//! A snapshot can be far larger than memory allows, so its bytes live in storage only and
//! the core works with its [`SnapshotInfo`] (metadata, size, CRC32C). Every byte moves
//! between storage and the network through the runtime, in chunks of
//! `max_snapshot_chunk_size` (1 MiB when 0):
//!
//! - **Building.** `Ready::snapshot_request` asks for one. The runtime has the state
//!   machine stream it into a storage-provided writer (a temp file), installs it by rename
//!   and reports its info with [`RaftCore::on_snapshot_built`].
//! - **Sending (leader).** The core decides offsets, the window of at most
//!   [`CHUNK_WINDOW`] chunks ahead of the last acknowledged offset, and resends, as if it
//!   held the bytes; each chunk leaves as a [`SnapshotChunk`] in `Ready::snapshot_chunks`:
//!   an InstallSnapshot without its data and the length to read. The runtime reads
//!   `[offset, offset + len)` of that snapshot from storage (off its event loop), fills the
//!   data in and sends it. A chunk of a snapshot storage no longer holds is dropped: a lost
//!   message, which the protocol survives.
//! - **Receiving (follower).** The follower accepts only the chunk at the offset it
//!   expects and answers with the offset it wants next, so lost, duplicated and reordered
//!   chunks cost a resend, never a corrupt install. It keeps a running CRC32C and size,
//!   not the bytes: each accepted chunk goes into the next [`WriteBatch`](super::WriteBatch)
//!   as a [`SnapshotWrite::Chunk`], ordered with every other write, for storage to append
//!   to its temp file (offset 0 starts a new one). When the size is reached and the
//!   checksum matches, a [`SnapshotWrite::Install`] follows: storage makes the temp file
//!   the snapshot (fsync, rename, directory fsync) and keeps or discards its log as the
//!   core decided ([`SnapshotLog`]). The acknowledgement waits until that write is
//!   durable, and so does the restore of the state machine (`Ready::snapshot`), which
//!   storage streams to it. A checksum failure asks for the snapshot again from offset 0.
//!   A restart loses the temp file (storage removes leftovers on open) and the follower's
//!   state, so its next answer asks for offset 0 and the leader starts over.

use bytes::Bytes;

use super::log::SnapshotLog;
use super::RaftCore;
use crate::message::{InstallSnapshot, InstallSnapshotResponse, Message, MessageBody};
use crate::types::{Index, NodeId, ReplicationMode, SnapshotInfo, SnapshotMeta};

/// Chunk size used when `max_snapshot_chunk_size` is 0: well under gRPC's default 4 MiB
/// message limit.
pub const DEFAULT_SNAPSHOT_CHUNK: usize = 1024 * 1024;
/// Chunks in flight to one follower.
pub const CHUNK_WINDOW: u64 = 4;

/// A snapshot chunk for the runtime to read and send: `message` is an InstallSnapshot
/// complete but for its `data`, which are the `len` bytes at its `offset` of the stored
/// snapshot its `meta` names. Read them (with
/// [`SnapshotReader::read_chunk`](crate::SnapshotReader::read_chunk)), [`fill`](Self::fill)
/// them in, and send the message; if storage no longer holds that snapshot, drop it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotChunk {
    /// The message to send, with empty `data`.
    pub message: Message,
    /// Bytes to read at the message's offset.
    pub len: u64,
}

impl SnapshotChunk {
    /// The snapshot to read from and the offset to read at.
    pub fn source(&self) -> Option<(&SnapshotMeta, u64)> {
        match &self.message.body {
            MessageBody::InstallSnapshot(s) => Some((&s.meta, s.offset)),
            _ => None,
        }
    }

    /// The message with `data` filled in.
    pub fn fill(mut self, data: Bytes) -> Message {
        if let MessageBody::InstallSnapshot(s) = &mut self.message.body {
            s.data = data;
        }
        self.message
    }
}

/// A write of a snapshot received from the leader (in
/// [`WriteBatch::snapshot`](super::WriteBatch::snapshot)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SnapshotWrite {
    /// Bytes at `offset` of the snapshot `meta`, for
    /// [`Storage::write_snapshot_chunk`](crate::Storage::write_snapshot_chunk).
    Chunk {
        /// The snapshot being received.
        meta: SnapshotMeta,
        /// Where `data` goes in it (0 starts it anew).
        offset: u64,
        /// The chunk.
        data: Bytes,
    },
    /// Install the snapshot received (all of it, checked against `info`), keeping or
    /// discarding the log as `log` says, with
    /// [`Storage::install_snapshot`](crate::Storage::install_snapshot) and
    /// [`SnapshotSource::Received`](crate::SnapshotSource::Received).
    Install {
        /// The snapshot, its size and checksum.
        info: SnapshotInfo,
        /// What happens to the log: the core's decision, which storage follows.
        log: SnapshotLog,
    },
}

/// A snapshot being sent to one follower.
#[derive(Debug, Clone)]
pub(crate) struct Transfer {
    pub(crate) meta: SnapshotMeta,
    /// Next offset to send.
    pub(crate) next_offset: u64,
    /// Offset the follower last said it expects.
    pub(crate) acked_offset: u64,
    /// Heartbeat rounds without an answer, to resend lost chunks.
    pub(crate) idle_rounds: u32,
}

/// A snapshot being received from the leader: how far, and the checksum of what was
/// accepted so far (the bytes themselves went to storage).
#[derive(Debug)]
pub(crate) struct Receiving {
    meta: SnapshotMeta,
    checksum: u32,
    total_size: u64,
    received: u64,
    crc: u32,
}

impl RaftCore {
    /// Metadata for a snapshot of the state machine at `index` (which must be applied and
    /// still in the log), for the runtime to label the snapshot it builds.
    pub fn snapshot_meta_at(&self, index: Index) -> Option<SnapshotMeta> {
        // A bootstrap configuration this node only knows from its own peers is left out
        // (see `ConfigLog::base_known`): a receiver falls back to its own peers.
        let membership = (!self.bug(|b| b.snapshot_without_membership))
            .then(|| self.log.configs.replicated_at(index).cloned())
            .flatten()
            .map(std::sync::Arc::new);
        Some(SnapshotMeta {
            last_index: index,
            last_term: self.log.term(index)?,
            membership,
        })
    }

    /// Index of the latest snapshot (0 if none).
    pub fn snapshot_index(&self) -> Index {
        self.snapshot.as_ref().map_or(0, |s| s.meta.last_index)
    }

    /// The latest snapshot: durable, or being installed by a write in flight.
    pub fn snapshot_info(&self) -> Option<&SnapshotInfo> {
        self.snapshot.as_ref()
    }

    /// The runtime built the snapshot asked for by [`Ready::snapshot_request`](super::Ready)
    /// and installed it durably in storage; `info` describes it. The core sends it to
    /// followers from now on and compacts its log.
    pub fn on_snapshot_built(&mut self, info: SnapshotInfo) {
        self.snapshot_in_progress = false;
        let index = info.meta.last_index;
        if index <= self.snapshot_index() || index > self.state.applied {
            return;
        }
        debug_assert_eq!(self.log.term(index), Some(info.meta.last_term));
        self.snapshot = Some(info);
        let compact_to = index.saturating_sub(self.config.options.log_compaction_min_entries);
        if compact_to > self.log.offset().0 {
            self.log.compact_to(compact_to);
            self.pending_compact = Some(compact_to);
        }
    }

    /// Building or saving the requested snapshot failed; another is asked for later.
    pub fn on_snapshot_failed(&mut self) {
        self.snapshot_in_progress = false;
    }

    /// Whether `snapshot_threshold` entries were applied past the last snapshot and no
    /// snapshot is being built.
    pub(super) fn snapshot_due(&self) -> bool {
        let threshold = self.config.options.snapshot_threshold;
        threshold > 0
            && !self.snapshot_in_progress
            && self.state.applied >= self.snapshot_index() + threshold
    }

    /// Asks for a snapshot when one is due.
    pub(super) fn maybe_request_snapshot(&mut self) -> Option<Index> {
        if !self.snapshot_due() {
            return None;
        }
        self.snapshot_in_progress = true;
        Some(self.state.applied)
    }

    /// Starts sending the snapshot to `peer`, whose next entry was compacted.
    pub(super) fn start_snapshot_transfer(&mut self, peer: &NodeId) {
        let Some(meta) = self.snapshot.as_ref().map(|s| s.meta.clone()) else {
            tracing::error!(peer = %peer, "follower needs compacted entries but no snapshot is held");
            return;
        };
        let Some(pr) = self.tracker.progress.get_mut(peer) else {
            return;
        };
        pr.mode = ReplicationMode::Snapshot;
        pr.inflights.reset();
        pr.transfer = Some(Transfer {
            meta,
            next_offset: 0,
            acked_offset: 0,
            idle_rounds: 0,
        });
        self.send_snapshot_chunks(peer);
    }

    /// Sends chunks to `peer` while its window allows: as [`SnapshotChunk`]s, which the
    /// runtime fills from storage.
    fn send_snapshot_chunks(&mut self, peer: &NodeId) {
        let Some(info) = self.snapshot.clone() else {
            return;
        };
        let chunk = match self.config.tuning.max_snapshot_chunk_size {
            0 => DEFAULT_SNAPSHOT_CHUNK,
            n => n,
        } as u64;
        let total = info.size;
        loop {
            let Some(t) = self
                .tracker
                .progress
                .get_mut(peer)
                .and_then(|p| p.transfer.as_mut())
            else {
                return;
            };
            if t.meta != info.meta {
                // A newer snapshot replaced the one being sent: start it over.
                t.meta = info.meta.clone();
                t.next_offset = 0;
                t.acked_offset = 0;
            }
            let in_window = t.next_offset < t.acked_offset + CHUNK_WINDOW * chunk;
            let more = t.next_offset < total || (total == 0 && t.next_offset == 0);
            if !in_window || !more {
                return;
            }
            let offset = t.next_offset;
            let end = (offset + chunk).min(total);
            t.next_offset = end.max(offset + 1).min(total.max(1));
            let body = MessageBody::InstallSnapshot(InstallSnapshot {
                meta: info.meta.clone(),
                offset,
                data: Bytes::new(),
                done: end == total,
                total_size: total,
                checksum: info.checksum,
            });
            let message = self.message(peer.clone(), body);
            self.chunks_out.push(SnapshotChunk {
                message,
                len: end - offset,
            });
            if total == 0 {
                return;
            }
        }
    }

    /// Leader side: a follower answered a chunk.
    pub(super) fn handle_install_snapshot_response(
        &mut self,
        from: NodeId,
        resp: InstallSnapshotResponse,
    ) {
        let Some(pr) = self.note_response(&from) else {
            return;
        };
        if pr.mode != ReplicationMode::Snapshot {
            return;
        }
        let Some(t) = pr.transfer.as_mut() else {
            return;
        };
        if resp.last_index != t.meta.last_index {
            return; // about another snapshot
        }
        t.idle_rounds = 0;
        if resp.installed {
            pr.transfer = None;
            pr.match_index = pr.match_index.max(resp.last_index);
            pr.become_probe();
            // A raised match index is counted like any other acknowledgement. The snapshot
            // is at most this leader's commit index when it was built, so today this
            // cannot move commit; it keeps every path that raises a match index alike.
            if self.maybe_commit() {
                self.broadcast_commit();
            }
            self.send_append(&from, true);
            return;
        }
        if resp.next_offset < t.acked_offset {
            // The follower lost what it had (it restarted, or the checksum failed).
            t.next_offset = resp.next_offset;
        }
        t.acked_offset = resp.next_offset;
        t.next_offset = t.next_offset.max(t.acked_offset);
        self.send_snapshot_chunks(&from);
    }

    /// Once per heartbeat: transfers that heard nothing for a while resend from the last
    /// acknowledged offset (a chunk or its answer was lost).
    pub(super) fn tick_snapshot_transfers(&mut self) {
        let patience = (self.config.options.election_tick_count
            / self.config.options.heartbeat_tick_count.max(1))
        .max(2);
        let mut resend = Vec::new();
        for (id, pr) in self.tracker.progress.iter_mut() {
            if let Some(t) = pr.transfer.as_mut() {
                t.idle_rounds += 1;
                if t.idle_rounds >= patience {
                    t.idle_rounds = 0;
                    t.next_offset = t.acked_offset;
                    resend.push(id.clone());
                }
            }
        }
        for id in resend {
            self.send_snapshot_chunks(&id);
        }
    }

    /// Follower side: a chunk of the leader's snapshot.
    pub(super) fn handle_install_snapshot(&mut self, from: NodeId, req: InstallSnapshot) {
        self.accept_leader(&from);
        let index = req.meta.last_index;
        let answer = |next_offset, installed| {
            MessageBody::InstallSnapshotResponse(InstallSnapshotResponse {
                last_index: index,
                next_offset,
                installed,
            })
        };
        if index <= self.state.commit {
            // Our log already covers it (a stale or duplicate snapshot): nothing to install.
            self.receiving = None;
            self.send_after_persist(from, answer(0, true));
            return;
        }
        let same = self.receiving.as_ref().is_some_and(|r| {
            (&r.meta, r.checksum, r.total_size) == (&req.meta, req.checksum, req.total_size)
        });
        if !same {
            if req.offset != 0 {
                self.send(from, answer(0, false));
                return;
            }
            self.receiving = Some(Receiving {
                meta: req.meta.clone(),
                checksum: req.checksum,
                total_size: req.total_size,
                received: 0,
                crc: 0,
            });
        }
        let Some(r) = self.receiving.as_mut() else {
            return;
        };
        if req.offset != r.received {
            let expected = r.received;
            self.send(from, answer(expected, false));
            return;
        }
        r.received += req.data.len() as u64;
        r.crc = crc32c::crc32c_append(r.crc, &req.data);
        let received = r.received;
        // The bytes go to storage, in order with every other write; the core keeps none.
        self.pending_snapshot_writes.push(SnapshotWrite::Chunk {
            meta: req.meta,
            offset: req.offset,
            data: req.data,
        });
        if !req.done && received < r.total_size {
            self.send(from, answer(received, false));
            return;
        }
        let Some(r) = self.receiving.take() else {
            return;
        };
        if r.received != r.total_size || r.crc != r.checksum {
            tracing::warn!(index, "snapshot failed its checksum; asking for it again");
            self.send(from, answer(0, false));
            return;
        }
        self.install_snapshot(SnapshotInfo {
            meta: r.meta,
            size: r.total_size,
            checksum: r.checksum,
        });
        // The acknowledgement claims the snapshot is stored: only once it is durable.
        self.send_after_persist(from, answer(received, true));
    }

    /// Replaces the state machine and the log prefix with the snapshot just received.
    fn install_snapshot(&mut self, info: SnapshotInfo) {
        let meta = info.meta.clone();
        tracing::info!(
            index = meta.last_index,
            term = meta.last_term,
            size = info.size,
            "installing snapshot"
        );
        // A snapshot without membership predates replicated membership: its cluster's
        // configuration is the bootstrap one.
        let membership = meta
            .membership
            .as_deref()
            .cloned()
            .unwrap_or_else(|| crate::membership::Membership::from_peers(&self.config.peers));
        let log = self
            .log
            .install(meta.last_index, meta.last_term, membership);
        self.log.configs.base_known = meta.membership.is_some();
        self.refresh_config();
        self.state.commit_to(meta.last_index);
        self.state.handed_out = self.state.handed_out.max(meta.last_index);
        self.pending_snapshot_writes.push(SnapshotWrite::Install {
            info: info.clone(),
            log,
        });
        self.pending_restore = Some(info.clone());
        self.snapshot = Some(info);
        self.snapshot_in_progress = false;
    }
}
