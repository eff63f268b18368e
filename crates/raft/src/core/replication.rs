//! Log replication (the original's ReplicationManager): AppendEntries and heartbeats out,
//! their handling on followers, flow control per follower, fast backtracking on
//! conflicts, and the commit rule.

use super::RaftCore;
use crate::message::{
    AppendEntries, AppendEntriesResponse, ConflictHint, Heartbeat, HeartbeatResponse, MessageBody,
};
use crate::types::{NodeId, ReplicationMode, Role};

impl RaftCore {
    /// Sends whatever each follower can take now.
    pub(super) fn broadcast_append(&mut self) {
        for peer in self.peers().iter() {
            self.send_append_loop(peer);
        }
    }

    /// Keeps sending to `peer` while its window allows and there are entries to send.
    fn send_append_loop(&mut self, peer: &NodeId) {
        while self.send_append(peer, false) {}
    }

    /// Sends one AppendEntries to `peer` from its next index. With `send_if_empty`, an
    /// empty request is sent too (to carry the commit index or probe). Returns whether a
    /// request carrying entries was sent.
    pub(super) fn send_append(&mut self, peer: &NodeId, send_if_empty: bool) -> bool {
        let max_count = self.config.options.max_log_entries_per_request;
        let max_bytes = self.config.tuning.max_append_bytes;
        let last_index = self.log.last_index();
        let commit = self.state.commit;
        let Some(pr) = self.tracker.progress.get_mut(peer) else {
            return false;
        };
        if pr.is_paused() {
            return false;
        }
        // Entries that are not urgent wait while a request to this follower is in flight,
        // unless a full request is ready: its answer brings them out together. Fewer,
        // larger requests cost every node less per entry (a message, a wake-up and an
        // fsync each) and add no latency when one request at a time keeps up; the
        // pipeline still opens up when it does not. An answer, a commit broadcast or a
        // heartbeat answer sends what waits (`send_if_empty`).
        if !send_if_empty
            && pr.mode == ReplicationMode::Replicate
            && !pr.inflights.is_empty()
            && !self.log.fills_request(pr.next_index, max_count, max_bytes)
        {
            return false;
        }
        let prev_log_index = pr.next_index - 1;
        let Some(prev_log_term) = self.log.term(prev_log_index) else {
            // The entries this follower needs were compacted: send the snapshot.
            self.start_snapshot_transfer(peer);
            return false;
        };
        let entries = if pr.next_index <= last_index {
            // Probing sends one entry at most: the follower's position is unknown and a
            // full batch would likely be wasted.
            let count = if pr.mode == ReplicationMode::Probe {
                1
            } else {
                max_count
            };
            self.log.slice(pr.next_index, count, max_bytes)
        } else {
            Vec::new()
        };
        if entries.is_empty() && !send_if_empty {
            return false;
        }
        let last_sent = entries.last().map(|e| e.index);
        pr.sent(last_sent);
        pr.sent_commit = pr
            .sent_commit
            .max(commit.min(last_sent.unwrap_or(prev_log_index)));
        let body = MessageBody::AppendEntries(AppendEntries {
            prev_log_index,
            prev_log_term,
            entries,
            leader_commit: commit,
        });
        self.send(peer.clone(), body);
        // Probing sends one request and waits; replicating continues while the window allows.
        last_sent.is_some()
            && self
                .tracker
                .progress
                .get(peer)
                .is_some_and(|p| p.mode == ReplicationMode::Replicate)
    }

    pub(super) fn broadcast_heartbeat(&mut self) {
        let read_seq = self.start_read_round();
        for peer in self.peers().iter() {
            let Some(pr) = self.tracker.progress.get_mut(peer) else {
                continue;
            };
            let commit = self.state.commit.min(pr.match_index);
            pr.sent_commit = pr.sent_commit.max(commit);
            self.send(
                peer.clone(),
                MessageBody::Heartbeat(Heartbeat { commit, read_seq }),
            );
        }
    }

    /// Follower side of AppendEntries (Figure 2, receiver implementation).
    pub(super) fn handle_append_entries(&mut self, from: NodeId, req: AppendEntries) {
        match self.state.role {
            Role::Leader => {
                debug_assert!(false, "two leaders in term {}", self.state.term);
                tracing::error!(from = %from, term = self.state.term, "AppendEntries from another leader of my term");
                return;
            }
            Role::Candidate | Role::PreCandidate | Role::Follower => self.accept_leader(&from),
        }

        let commit = self.state.commit;
        let mut req = req;
        if req.prev_log_index < commit {
            // Our log matches every leader up to our commit index: skip the entries below
            // it and continue from there.
            let skip = (commit - req.prev_log_index).min(req.entries.len() as u64) as usize;
            req.entries.drain(..skip);
            if req.entries.is_empty() {
                self.send_after_persist(from, success(commit));
                return;
            }
            req.prev_log_index = commit;
            req.prev_log_term = self.log.term(commit).unwrap_or_default();
        }
        if !self.log.matches(req.prev_log_index, req.prev_log_term) {
            let hint = self.conflict_hint(req.prev_log_index);
            let body = MessageBody::AppendEntriesResponse(AppendEntriesResponse {
                success: false,
                index: req.prev_log_index,
                conflict: Some(hint),
            });
            self.send(from, body);
            return;
        }
        let last_new = req.prev_log_index + req.entries.len() as u64;
        if let Some(truncated) = self.log.merge(req.entries) {
            assert!(
                truncated > commit,
                "a committed entry was truncated at {truncated}"
            );
        }
        self.refresh_config();
        self.state.commit_to(req.leader_commit.min(last_new));
        // The acknowledgement claims the entries are stored: only after they are durable.
        self.send_after_persist(from, success(last_new));
    }

    /// Where our log diverges from a leader's `prev_log_index`.
    fn conflict_hint(&self, prev_log_index: u64) -> ConflictHint {
        if prev_log_index > self.log.last_index() {
            return ConflictHint {
                term: None,
                index: self.log.last_index() + 1,
            };
        }
        ConflictHint {
            term: self.log.term(prev_log_index),
            index: self.log.first_index_of_term_at(prev_log_index),
        }
    }

    /// A follower answered (CheckQuorum and status count it): its progress, if this node
    /// leads and knows the follower.
    pub(super) fn note_response(&mut self, from: &NodeId) -> Option<&mut super::tracker::Progress> {
        if self.state.role != Role::Leader {
            return None;
        }
        let now = self.timers.now;
        let pr = self.tracker.progress.get_mut(from)?;
        pr.recent_active = true;
        pr.last_response_tick = Some(now);
        Some(pr)
    }

    /// Leader side of an AppendEntries answer.
    pub(super) fn handle_append_response(&mut self, from: NodeId, resp: AppendEntriesResponse) {
        let Some(pr) = self.note_response(&from) else {
            return;
        };
        if !resp.success {
            let hinted_next = match resp.conflict {
                Some(ConflictHint {
                    term: Some(term),
                    index,
                }) => {
                    // Skip the follower's whole conflicting term: resume after our last
                    // entry of that term if we have one, else at its first index there.
                    self.log.last_index_of_term(term).map_or(index, |i| i + 1)
                }
                Some(ConflictHint { term: None, index }) => index,
                None => resp.index,
            };
            let Some(pr) = self.tracker.progress.get_mut(&from) else {
                return;
            };
            // A hint without a term says the follower's log ends just before `index`.
            if let Some(ConflictHint { term: None, index }) = resp.conflict {
                let (follower_last, acknowledged) = (index.saturating_sub(1), pr.match_index);
                if pr.lost_entries(resp.index, follower_last) {
                    tracing::warn!(
                        follower = %from,
                        follower_last,
                        acknowledged,
                        "follower lost entries it had acknowledged (restarted with a wiped or damaged data directory); replicating them again"
                    );
                    self.send_append(&from, true);
                    return;
                }
            }
            if pr.maybe_decrease_to(resp.index, hinted_next.max(1)) {
                self.send_append(&from, true);
            }
            return;
        }
        if !pr.maybe_update(resp.index) {
            return;
        }
        match pr.mode {
            ReplicationMode::Probe => pr.become_replicate(),
            ReplicationMode::Replicate => pr.inflights.free_le(resp.index),
            ReplicationMode::Snapshot => {}
        }
        self.maybe_send_timeout_now(&from);
        if self.maybe_commit() {
            self.broadcast_commit();
        } else {
            // A follower that was paused when the commit index last advanced never got it.
            let commit = self.state.commit;
            let bump = self
                .tracker
                .progress
                .get(&from)
                .is_some_and(|p| p.sent_commit < commit.min(p.next_index - 1));
            if self.send_append(&from, bump) {
                self.send_append_loop(&from);
            }
        }
    }

    /// Spreads a new commit index: every follower that can take a request gets one, so
    /// followers apply (and serve follower reads) without waiting for a heartbeat.
    pub(super) fn broadcast_commit(&mut self) {
        for peer in self.peers().iter() {
            if self.send_append(peer, true) {
                self.send_append_loop(peer);
            }
        }
    }

    /// A message from the leader of our term: follow it and restart the election timer.
    pub(super) fn accept_leader(&mut self, from: &NodeId) {
        if self.state.role != Role::Follower {
            // Someone won this term: §5.2, a (pre-)candidate steps down.
            self.become_follower(self.state.term, Some(from.clone()));
        }
        self.state.leader = Some(from.clone());
        self.timers.election_elapsed = 0;
        self.timers.since_leader_contact = 0;
    }

    pub(super) fn handle_heartbeat(&mut self, from: NodeId, hb: Heartbeat) {
        self.accept_leader(&from);
        // The leader caps the commit index at what it knows we hold; our log can also be
        // shorter if we lost a write in a crash, so cap at our last index as well.
        let commit = hb.commit.min(self.log.last_index());
        self.state.commit_to(commit);
        let answer = HeartbeatResponse {
            read_seq: hb.read_seq,
        };
        self.send(from, MessageBody::HeartbeatResponse(answer));
    }

    pub(super) fn handle_heartbeat_response(&mut self, from: NodeId, resp: HeartbeatResponse) {
        if self.state.role != Role::Leader {
            return;
        }
        self.read_round_acked(&from, resp.read_seq);
        let last = self.log.last_index();
        let Some(pr) = self.note_response(&from) else {
            return;
        };
        pr.probe_sent = false;
        if pr.mode == ReplicationMode::Replicate && pr.inflights.full() {
            // A response was probably lost: free a slot so replication can continue.
            pr.inflights.free_first();
        }
        if pr.match_index < last {
            self.send_append(&from, true);
            self.send_append_loop(&from);
        }
    }

    /// Advances the commit index to the highest index stored on a majority, counting this
    /// leader only up to its durable index, and only for an entry of the current term
    /// (§5.4.2, Figure 8). Returns whether it advanced.
    pub(super) fn maybe_commit(&mut self) -> bool {
        let candidate = self.tracker.committed(self.log.durable_index());
        let current_term = self.log.term(candidate) == Some(self.state.term)
            || self.bug(|b| b.commit_old_term_by_counting);
        if candidate <= self.state.commit || !current_term {
            return false;
        }
        let old = self.state.commit;
        self.state.commit_to(candidate);
        self.reads_on_commit();
        self.config_on_commit();
        let released: u64 = ((old + 1)..=candidate)
            .filter_map(|i| self.log.get(i))
            .filter(|e| e.term == self.state.term)
            .map(|e| e.data.len() as u64)
            .sum();
        self.uncommitted_bytes = self.uncommitted_bytes.saturating_sub(released);
        true
    }
}

fn success(index: u64) -> MessageBody {
    MessageBody::AppendEntriesResponse(AppendEntriesResponse {
        success: true,
        index,
        conflict: None,
    })
}
