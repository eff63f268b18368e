//! Linearizable reads without writing to the log: ReadIndex (thesis §6.4), follower reads,
//! and the leader lease (§6.4.1).
//!
//! ReadIndex: the leader serves a read only once it has committed an entry of its term
//! (its no-op); it records its commit index, confirms it is still leader with one
//! heartbeat round acknowledged by a majority, and the read may be served once the state
//! machine has applied that index. Reads that arrive between two `Ready`s share one round,
//! and so do those that arrive while a round is in flight: they go out together in the
//! next round once its answer is in (or with the next heartbeat).
//!
//! Lease: a heartbeat round sent at monotonic clock time `t` and acknowledged by a majority
//! lets the leader answer reads without a round until `t + lease_ticks × tick`, where
//! `lease_ticks = floor((E - 1) × (100 - d) / (100 + d)) - 1` for an election timeout of
//! `E` ticks of `tick = nominal_tick_interval` and a clock drift bound of `d` percent.
//! Why it is safe: every follower that acknowledged the round heard from the leader no
//! earlier than `t` and refuses votes for `E` of its own ticks (at least `E - 1` whole
//! tick intervals of its clock, at least `(E - 1)(1 - d)` real intervals), and any new
//! leader needs one of their votes; the leader's lease lasts at most
//! `lease_ticks × (1 + d)` real intervals, which is shorter by more than a tick.
//!
//! The leader measures its lease with the injected monotonic clock ([`RaftCore::set_now`]),
//! never with its tick count: a leader whose process was paused (GC, SIGSTOP) ticks no more
//! while real time goes on, and a lease counted in ticks would outlive the followers'
//! patience. Followers count ticks, which only makes them more patient when paused. So the
//! runtime must tick every `nominal_tick_interval` of the same clock and never fire missed
//! ticks in a burst (the simulator found a stale lease read when the two disagreed). A node that restarts also refuses votes
//! for its first election timeout, since it may have acknowledged a round before it
//! crashed. Without a clock reading the lease is never used. The assumptions: clock rates
//! differ by at most `d` percent, and CheckQuorum is on.

use std::collections::VecDeque;
use std::time::Duration;

use super::RaftCore;
use crate::error::{Error, Result};
use crate::message::{MessageBody, ReadIndexRequest, ReadIndexResponse};
use crate::types::{Index, NodeId, Role};

/// A read that may be served once the state machine has applied `index`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadState {
    /// The caller's id for the read.
    pub ctx: u64,
    /// Serve the read once the applied index reaches this.
    pub index: Index,
}

/// Why a read could not be served. The read may be retried.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadFailure {
    /// This node lost (or never had) leadership; `leader` is the one it knows of.
    NotLeader {
        /// The known leader, for redirects.
        leader: Option<NodeId>,
    },
    /// The leader could not reach a majority within an election timeout.
    QuorumUnreachable,
    /// A follower got no answer from the leader within an election timeout.
    Timeout,
}

impl From<ReadFailure> for Error {
    fn from(f: ReadFailure) -> Self {
        match f {
            ReadFailure::NotLeader { leader } => Error::NotLeader { leader },
            ReadFailure::QuorumUnreachable => Error::QuorumUnreachable,
            ReadFailure::Timeout => Error::Timeout,
        }
    }
}

/// Who asked for a read the leader is confirming.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Requester {
    Local(u64),
    Remote { from: NodeId, id: u64 },
}

#[derive(Clone, Debug)]
struct PendingRead {
    requester: Requester,
    /// The commit index recorded when the read arrived; `None` while the leader has not
    /// yet committed an entry of its term.
    index: Option<Index>,
    /// The heartbeat round that must be acknowledged by a majority (0: not yet sent).
    seq: u64,
    /// Ticks spent waiting.
    age: u32,
}

/// Read bookkeeping of one node.
#[derive(Debug, Default)]
pub(crate) struct Reads {
    /// Leader: reads waiting for their round.
    pending: VecDeque<PendingRead>,
    /// Leader: the last heartbeat round sent, and when (clock) each recent one was sent.
    pub(crate) seq: u64,
    /// Leader: the last round a majority acknowledged in this term (or, before any, the
    /// last round sent when it took office). A later one is in flight.
    confirmed: u64,
    sent_at: VecDeque<(u64, Option<Duration>)>,
    /// Leader: a round must be sent for reads that arrived since the last `Ready`.
    need_round: bool,
    /// Leader: reads may be served without a round until this clock time (exclusive).
    lease_until: Option<Duration>,
    /// Leader: `TimeoutNow` went out in this term, so no lease read is served for the
    /// rest of it, not even once the transfer is abandoned: the target's vote requests
    /// carry the transfer flag that passes the vote guard, and one may still be granted,
    /// late, inside any lease this leader holds or renews (see `transfer`).
    pub(crate) lease_forfeited: bool,
    /// Leader: CheckQuorum on the clock. Past this time it has lost its quorum: two
    /// election timeouts after the latest heartbeat round a majority acknowledged was
    /// sent (at first, after it won its election). Kept as a deadline so that the check
    /// on every proposal is one comparison.
    pub(crate) quorum_deadline: Option<Duration>,
    /// Follower: reads forwarded to the leader: request id → (caller's ctx, age).
    forwarded: Vec<(u64, u64, u32)>,
    pub(crate) next_forward_id: u64,
    /// Output.
    pub(crate) ready: Vec<ReadState>,
    pub(crate) failed: Vec<(u64, ReadFailure)>,
}

impl RaftCore {
    /// Asks for a linearizable read. The answer comes in a later `Ready`: a
    /// [`ReadState`] (serve the read once the state machine has applied its index) or a
    /// [`ReadFailure`] for `ctx`. On a follower the read is forwarded to the leader.
    pub fn read_index(&mut self, ctx: u64) -> Result<()> {
        if !self.config.feature_flags.enable_read_index {
            return Err(Error::Config(crate::error::ConfigError::new(
                "feature_flags.enable_read_index",
                "is off; read through the log instead",
            )));
        }
        match self.state.role {
            Role::Leader => {
                self.leader_read(Requester::Local(ctx));
                Ok(())
            }
            _ => {
                let Some(leader) = self.state.leader.clone() else {
                    return Err(Error::NotLeader { leader: None });
                };
                self.reads.next_forward_id = self.reads.next_forward_id.wrapping_add(1);
                let id = self.reads.next_forward_id;
                self.reads.forwarded.push((id, ctx, 0));
                self.send(leader, MessageBody::ReadIndex(ReadIndexRequest { id }));
                Ok(())
            }
        }
    }

    /// How long a confirmed heartbeat round lets the leader serve reads alone.
    pub(crate) fn lease_duration(&self) -> Duration {
        let ticks = self.config.options.lease_ticks().min(u32::MAX as u64) as u32;
        self.config
            .options
            .nominal_tick_interval
            .saturating_mul(ticks)
    }

    /// Gives the core the current reading of the monotonic clock (the injected `Clock`),
    /// which measures the leader lease. Call it before each input; readings that go
    /// backwards are ignored.
    pub fn set_now(&mut self, now: Duration) {
        if self.clock.is_none_or(|c| now > c) {
            self.clock = Some(now);
        }
    }

    /// Whether the leader has committed an entry of its own term (so its commit index is
    /// at least every index committed by earlier leaders).
    pub(super) fn committed_in_term(&self) -> bool {
        self.log.term(self.state.commit) == Some(self.state.term)
            || self.bug(|b| b.read_before_noop_commit)
    }

    fn lease_valid(&self) -> bool {
        self.config.feature_flags.enable_leader_lease
            && !self.transfer_blocks_lease()
            && matches!((self.clock, self.reads.lease_until), (Some(now), Some(until)) if now < until)
    }

    fn leader_read(&mut self, requester: Requester) {
        let mut read = PendingRead {
            requester,
            index: None,
            seq: 0,
            age: 0,
        };
        if self.committed_in_term() {
            read.index = Some(self.state.commit);
            if self.lease_valid() || self.tracker.is_sole_voter() {
                self.release(read);
                return;
            }
            self.reads.need_round = true;
        }
        self.reads.pending.push_back(read);
    }

    /// The commit index advanced: reads waiting for the leader's first commit in its term
    /// can now record their index.
    pub(super) fn reads_on_commit(&mut self) {
        if self.state.role != Role::Leader || !self.committed_in_term() {
            return;
        }
        let commit = self.state.commit;
        let lease = self.lease_valid() || self.tracker.is_sole_voter();
        let mut waiting = false;
        for r in self.reads.pending.iter_mut().filter(|r| r.index.is_none()) {
            r.index = Some(commit);
            waiting = true;
        }
        if waiting {
            if lease {
                self.release_confirmed(u64::MAX);
            } else {
                self.reads.need_round = true;
            }
        }
    }

    /// Whether reads wait for a round that `ready()` should start now. Reads that arrive
    /// while a round is in flight wait for its answer and then share the next round, as
    /// entries wait for an AppendEntries in flight: under load, one round confirms many
    /// reads instead of one round per `Ready` costing every node a message and a wake-up.
    /// Their index was taken when they arrived and the round they join starts later, so
    /// they stay linearizable. A round whose answers are lost does not hold them up for
    /// long: every heartbeat starts a round that takes them along.
    pub(super) fn reads_need_round(&self) -> bool {
        self.reads.need_round
            && self.state.role == Role::Leader
            && self.reads.seq <= self.reads.confirmed
    }

    /// Called from `ready()`: starts one heartbeat round for the reads that need one.
    pub(super) fn flush_read_round(&mut self) {
        if self.reads_need_round() {
            self.broadcast_heartbeat();
        }
    }

    /// The configuration changed on the leader: the lease was confirmed by a quorum of
    /// the old configuration and is dropped; the next confirmed round renews it under
    /// the new one. Read rounds are counted with the configuration in effect when their
    /// acknowledgements arrive.
    pub(super) fn reads_on_config_change(&mut self) {
        self.reads.lease_until = None;
    }

    /// `TimeoutNow` was sent: voters may now elect the target inside this leader's lease,
    /// so the lease is dropped for good in this term (`lease_valid` checks the transfer).
    pub(super) fn reads_on_transfer(&mut self) {
        self.reads.lease_forfeited = true;
        if !self.bug(|b| b.lease_reads_during_transfer) {
            self.reads.lease_until = None;
        }
    }

    /// The node became leader: no read round of its own is in flight yet.
    pub(super) fn reads_on_taking_office(&mut self) {
        self.reads.lease_forfeited = false;
        self.reads.confirmed = self.reads.seq;
    }

    /// A new heartbeat round is being sent; returns its number. Reads with an index and no
    /// round yet join it.
    pub(super) fn start_read_round(&mut self) -> u64 {
        self.reads.seq += 1;
        let seq = self.reads.seq;
        self.reads.sent_at.push_back((seq, self.clock));
        while self.reads.sent_at.len() > 64 {
            self.reads.sent_at.pop_front();
        }
        for r in self.reads.pending.iter_mut() {
            if r.index.is_some() && r.seq == 0 {
                r.seq = seq;
            }
        }
        // Every read with an index now has a round.
        self.reads.need_round = false;
        seq
    }

    /// A follower acknowledged round `seq`: reads (and the lease) confirmed by a majority
    /// advance.
    pub(super) fn read_round_acked(&mut self, from: &NodeId, seq: u64) {
        let Some(pr) = self.tracker.progress.get_mut(from) else {
            return;
        };
        pr.read_acked = pr.read_acked.max(seq);
        let confirmed = self.tracker.read_confirmed(self.reads.seq);
        if confirmed == 0 {
            return;
        }
        self.reads.confirmed = self.reads.confirmed.max(confirmed);
        let sent = self
            .reads
            .sent_at
            .iter()
            .find(|(s, _)| *s == confirmed)
            .and_then(|(_, at)| *at);
        if let Some(sent) = sent {
            let deadline = sent.saturating_add(self.quorum_timeout());
            self.reads.quorum_deadline = Some(
                self.reads
                    .quorum_deadline
                    .map_or(deadline, |d| d.max(deadline)),
            );
            let until = sent + self.lease_duration();
            self.reads.lease_until = Some(self.reads.lease_until.map_or(until, |u| u.max(until)));
        }
        self.release_confirmed(confirmed);
    }

    /// Releases, in order, the reads whose round `<= confirmed`.
    fn release_confirmed(&mut self, confirmed: u64) {
        let lease = confirmed == u64::MAX;
        let mut keep = VecDeque::new();
        while let Some(r) = self.reads.pending.pop_front() {
            let ready = r.index.is_some() && (lease || (r.seq != 0 && r.seq <= confirmed));
            if ready {
                self.release(r);
            } else {
                keep.push_back(r);
            }
        }
        self.reads.pending = keep;
    }

    fn release(&mut self, r: PendingRead) {
        let Some(index) = r.index else {
            return;
        };
        match r.requester {
            Requester::Local(ctx) => self.reads.ready.push(ReadState { ctx, index }),
            Requester::Remote { from, id } => {
                let body = MessageBody::ReadIndexResponse(ReadIndexResponse {
                    id,
                    index: Some(index),
                });
                self.send(from, body);
            }
        }
    }

    fn fail(&mut self, requester: Requester, failure: ReadFailure) {
        match requester {
            Requester::Local(ctx) => self.reads.failed.push((ctx, failure)),
            Requester::Remote { from, id } => {
                let body = MessageBody::ReadIndexResponse(ReadIndexResponse { id, index: None });
                self.send(from, body);
            }
        }
    }

    /// Leader side of a follower's read.
    pub(super) fn handle_read_index(&mut self, from: NodeId, req: ReadIndexRequest) {
        let requester = Requester::Remote { from, id: req.id };
        if self.state.role == Role::Leader {
            self.leader_read(requester);
        } else {
            let leader = self.state.leader.clone();
            self.fail(requester, ReadFailure::NotLeader { leader });
        }
    }

    /// Follower side: the leader's answer to a forwarded read.
    pub(super) fn handle_read_index_response(&mut self, resp: ReadIndexResponse) {
        let Some(pos) = self
            .reads
            .forwarded
            .iter()
            .position(|(id, _, _)| *id == resp.id)
        else {
            return; // late or duplicate answer to an attempt that already ended
        };
        let (_, ctx, _) = self.reads.forwarded.remove(pos);
        match resp.index {
            Some(index) => self.reads.ready.push(ReadState { ctx, index }),
            None => {
                let leader = self.state.leader.clone();
                self.reads
                    .failed
                    .push((ctx, ReadFailure::NotLeader { leader }));
            }
        }
    }

    /// Once per tick: reads that waited an election timeout fail, so a read never hangs.
    pub(super) fn tick_reads(&mut self) {
        let limit = self.config.options.election_tick_count;
        let mut expired = Vec::new();
        for r in self.reads.pending.iter_mut() {
            r.age += 1;
            if r.age >= limit {
                expired.push(r.requester.clone());
            }
        }
        self.reads.pending.retain(|r| r.age < limit);
        for requester in expired {
            self.fail(requester, ReadFailure::QuorumUnreachable);
        }
        let mut timed_out = Vec::new();
        for f in self.reads.forwarded.iter_mut() {
            f.2 += 1;
            if f.2 >= limit {
                timed_out.push(f.1);
            }
        }
        self.reads.forwarded.retain(|f| f.2 < limit);
        for ctx in timed_out {
            self.reads.failed.push((ctx, ReadFailure::Timeout));
        }
    }

    /// Leadership ended: every read the leader was confirming fails, and the lease is gone.
    pub(super) fn reads_on_step_down(&mut self) {
        let leader = self.state.leader.clone();
        let pending: Vec<PendingRead> = self.reads.pending.drain(..).collect();
        for r in pending {
            self.fail(
                r.requester,
                ReadFailure::NotLeader {
                    leader: leader.clone(),
                },
            );
        }
        self.reads.lease_until = None;
        self.reads.quorum_deadline = None;
        self.reads.need_round = false;
        self.reads.sent_at.clear();
    }
}
