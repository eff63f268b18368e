//! Snapshots (the original's SnapshotManager): when to take one, log compaction after it,
//! and InstallSnapshot in chunks for followers that need compacted entries (Raft §7).
//!
//! Compaction rule: once a snapshot at index `s` is durable, the log keeps the entries
//! after `s - log_compaction_min_entries`, so a follower that is only slightly behind is
//! still served from the log; a follower that needs anything older gets the snapshot.
//!
//! Transfer: the leader sends the snapshot in chunks of `max_snapshot_chunk_size` bytes
//! (1 MiB when 0), at most [`CHUNK_WINDOW`] chunks ahead of the last acknowledged offset.
//! The follower accepts only the chunk at the offset it expects and answers with the
//! offset it wants next, so lost, duplicated and reordered chunks cost a resend, never a
//! corrupt install. It checks the CRC32C of the whole snapshot before installing it.

use bytes::{Bytes, BytesMut};

use super::RaftCore;
use crate::message::{InstallSnapshot, InstallSnapshotResponse, MessageBody};
use crate::types::{Index, NodeId, ReplicationMode, Snapshot, SnapshotMeta};

/// Chunk size used when `max_snapshot_chunk_size` is 0: well under gRPC's default 4 MiB
/// message limit.
pub const DEFAULT_SNAPSHOT_CHUNK: usize = 1024 * 1024;
/// Chunks in flight to one follower.
pub const CHUNK_WINDOW: u64 = 4;

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

/// A snapshot being received from the leader.
#[derive(Debug)]
pub(crate) struct Receiving {
    meta: SnapshotMeta,
    checksum: u32,
    total_size: u64,
    buf: BytesMut,
}

impl RaftCore {
    /// Metadata for a snapshot of the state machine at `index` (which must be applied and
    /// still in the log), for the runtime to label the snapshot it builds.
    pub fn snapshot_meta_at(&self, index: Index) -> Option<SnapshotMeta> {
        Some(SnapshotMeta {
            last_index: index,
            last_term: self.log.term(index)?,
        })
    }

    /// Keeps `snapshot` (to send to followers) with its checksum, computed once.
    pub(super) fn hold_snapshot(&mut self, snapshot: Snapshot) {
        self.snapshot_checksum = crc32c::crc32c(&snapshot.data);
        self.snapshot = Some(snapshot);
    }

    /// Index of the latest durable snapshot (0 if none).
    pub fn snapshot_index(&self) -> Index {
        self.snapshot.as_ref().map_or(0, |s| s.meta.last_index)
    }

    /// The runtime built the snapshot asked for by [`Ready::snapshot_request`](super::Ready)
    /// and made it durable. The core keeps it to send to followers and compacts its log.
    pub fn on_snapshot_built(&mut self, snapshot: Snapshot) {
        self.snapshot_in_progress = false;
        let index = snapshot.meta.last_index;
        if index <= self.snapshot_index() || index > self.state.applied {
            return;
        }
        debug_assert_eq!(self.log.term(index), Some(snapshot.meta.last_term));
        self.hold_snapshot(snapshot);
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
        let Some(pr) = self.progress.get_mut(peer) else {
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

    /// Sends chunks to `peer` while its window allows.
    fn send_snapshot_chunks(&mut self, peer: &NodeId) {
        let Some(snapshot) = self.snapshot.clone() else {
            return;
        };
        let chunk = match self.config.tuning.max_snapshot_chunk_size {
            0 => DEFAULT_SNAPSHOT_CHUNK,
            n => n,
        } as u64;
        let total = snapshot.data.len() as u64;
        let checksum = self.snapshot_checksum;
        loop {
            let Some(t) = self
                .progress
                .get_mut(peer)
                .and_then(|p| p.transfer.as_mut())
            else {
                return;
            };
            if t.meta != snapshot.meta {
                // A newer snapshot replaced the one being sent: start it over.
                t.meta = snapshot.meta.clone();
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
            let data: Bytes = snapshot.data.slice(offset as usize..end as usize);
            let body = MessageBody::InstallSnapshot(InstallSnapshot {
                meta: snapshot.meta.clone(),
                offset,
                data,
                done: end == total,
                total_size: total,
                checksum,
            });
            self.send(peer.clone(), body);
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
        for (id, pr) in self.progress.iter_mut() {
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
        let same = self
            .receiving
            .as_ref()
            .is_some_and(|r| r.meta == req.meta && r.checksum == req.checksum);
        if !same {
            if req.offset != 0 {
                self.send(from, answer(0, false));
                return;
            }
            self.receiving = Some(Receiving {
                meta: req.meta.clone(),
                checksum: req.checksum,
                total_size: req.total_size,
                buf: BytesMut::with_capacity(req.total_size.min(64 << 20) as usize),
            });
        }
        let Some(r) = self.receiving.as_mut() else {
            return;
        };
        let expected = r.buf.len() as u64;
        if req.offset != expected {
            self.send(from, answer(expected, false));
            return;
        }
        r.buf.extend_from_slice(&req.data);
        let received = r.buf.len() as u64;
        if !req.done && received < r.total_size {
            self.send(from, answer(received, false));
            return;
        }
        let Some(r) = self.receiving.take() else {
            return;
        };
        let data = r.buf.freeze();
        if data.len() as u64 != r.total_size || crc32c::crc32c(&data) != r.checksum {
            tracing::warn!(index, "snapshot failed its checksum; asking for it again");
            self.send(from, answer(0, false));
            return;
        }
        self.install_snapshot(Snapshot { meta: r.meta, data });
        // The acknowledgement claims the snapshot is stored: only once it is durable.
        self.send_after_persist(from, answer(received, true));
    }

    /// Replaces the state machine and the log prefix with `snapshot`.
    fn install_snapshot(&mut self, snapshot: Snapshot) {
        let meta = snapshot.meta.clone();
        tracing::info!(
            index = meta.last_index,
            term = meta.last_term,
            "installing snapshot"
        );
        let log = self.log.install(meta.last_index, meta.last_term);
        self.state.commit_to(meta.last_index);
        self.state.handed_out = self.state.handed_out.max(meta.last_index);
        self.pending_snapshot_write = Some(super::SnapshotInstall {
            snapshot: snapshot.clone(),
            log,
        });
        self.pending_restore = Some(snapshot.clone());
        self.hold_snapshot(snapshot);
        self.snapshot_in_progress = false;
    }
}
