//! Leadership transfer (thesis §3.10): the leader stops taking proposals, catches the
//! target up, and sends it `TimeoutNow`; the target campaigns at once, without a
//! pre-vote, and its vote requests carry the `transfer` flag, which lets voters grant
//! them although they heard from the leader within the election timeout. That bypass is
//! safe for the lease because the leader stops serving lease reads the moment it sends
//! `TimeoutNow`, for the rest of its term (a transfer-flagged vote request may arrive
//! late, after the transfer was abandoned): from then on its reads go through a
//! ReadIndex round, which a voter that moved to the target's term no longer
//! acknowledges. A transfer that has not completed
//! within one election timeout is abandoned and proposals resume.

use super::RaftCore;
use crate::error::{Error, Result};
use crate::membership::MembershipError;
use crate::message::MessageBody;
use crate::types::{ElectionReason, NodeId, Role};

/// A leadership transfer under way on the leader.
#[derive(Debug, Clone)]
pub(crate) struct Transfer {
    /// The node that should lead next.
    pub(crate) to: NodeId,
    /// Ticks since the transfer started.
    pub(crate) elapsed: u32,
    /// `TimeoutNow` was sent: no lease reads any more.
    pub(crate) timeout_now_sent: bool,
}

impl RaftCore {
    /// Hands leadership to voter `to`: proposals and membership changes are refused
    /// ([`Error::TransferInProgress`]) until `to` leads or one election timeout passes.
    /// Refused for a learner, an unknown node or this node itself. Asking again for the
    /// same target is a no-op; asking for another one restarts the transfer toward it.
    pub fn transfer_leader(&mut self, to: NodeId) -> Result<()> {
        if self.state.role != Role::Leader {
            return Err(Error::NotLeader {
                leader: self.state.leader.clone(),
            });
        }
        if to == self.id {
            return Err(MembershipError::BadTransferTarget {
                id: to,
                reason: "it already leads",
            }
            .into());
        }
        if !self.tracker.config().contains(&to) {
            return Err(MembershipError::UnknownNode { id: to }.into());
        }
        if !self.tracker.is_voter(&to) {
            return Err(MembershipError::BadTransferTarget {
                id: to,
                reason: "a learner cannot lead",
            }
            .into());
        }
        if self.transfer.as_ref().is_some_and(|t| t.to == to) {
            return Ok(());
        }
        tracing::info!(term = self.state.term, to = %to, "transferring leadership");
        self.transfer = Some(Transfer {
            to: to.clone(),
            elapsed: 0,
            timeout_now_sent: false,
        });
        self.maybe_send_timeout_now(&to);
        if self.transfer.as_ref().is_some_and(|t| !t.timeout_now_sent) {
            // Catch the target up first; its answers bring the transfer forward.
            self.send_append(&to, false);
        }
        Ok(())
    }

    /// The target of the transfer under way, if any.
    pub fn transfer_target(&self) -> Option<&NodeId> {
        self.transfer.as_ref().map(|t| &t.to)
    }

    /// Sends `TimeoutNow` once the target holds the whole log.
    pub(super) fn maybe_send_timeout_now(&mut self, peer: &NodeId) {
        let Some(t) = &self.transfer else { return };
        if t.to != *peer || t.timeout_now_sent {
            return;
        }
        let caught_up = self
            .tracker
            .progress
            .get(peer)
            .is_some_and(|p| p.match_index >= self.log.last_index());
        if !caught_up {
            return;
        }
        if let Some(t) = self.transfer.as_mut() {
            t.timeout_now_sent = true;
        }
        tracing::info!(to = %peer, "target caught up; sending TimeoutNow");
        // From here on a vote for the target may be granted inside our lease.
        self.reads_on_transfer();
        self.send(peer.clone(), MessageBody::TimeoutNow);
    }

    /// Called on each leader tick: a transfer that takes longer than an election timeout
    /// is abandoned.
    pub(super) fn tick_transfer(&mut self) {
        let timeout = self.config.options.election_tick_count;
        if let Some(t) = self.transfer.as_mut() {
            t.elapsed += 1;
            if t.elapsed >= timeout {
                tracing::info!(to = %t.to, "leadership transfer timed out; taking proposals again");
                self.transfer = None;
            }
        }
    }

    /// Whether lease reads are off because `TimeoutNow` went out in this term. For the
    /// rest of the term, not only while the transfer is under way: after an abandoned
    /// transfer, acknowledgements of heartbeat rounds renewed the lease while the
    /// target's transfer-flagged vote requests could still be granted (simulator, deaf
    /// transfers world, seed 31: the old leader served a stale lease read after its
    /// successor, elected by such a vote, committed a write).
    pub(super) fn transfer_blocks_lease(&self) -> bool {
        self.reads.lease_forfeited && !self.bug(|b| b.lease_reads_during_transfer)
    }

    /// The leader asked this node to take over: campaign at once, skipping PreVote.
    pub(super) fn handle_timeout_now(&mut self, from: NodeId) {
        if self.state.role == Role::Leader || !self.tracker.is_voter(&self.id) {
            tracing::debug!(from = %from, "ignoring TimeoutNow: not a follower that votes");
            return;
        }
        tracing::info!(from = %from, term = self.state.term, "leadership handed over; campaigning now");
        self.become_candidate(ElectionReason::Transfer);
    }
}
