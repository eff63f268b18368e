//! The consensus state machine: pure, synchronous and deterministic.
//!
//! [`RaftCore`] owns every piece of protocol state and makes every protocol decision, but
//! performs no I/O, reads no clock and spawns nothing. Its inputs are [`RaftCore::tick`],
//! [`RaftCore::step`] (a message from a peer), [`RaftCore::propose`] and acknowledgements
//! from the runtime ([`RaftCore::on_persisted`], [`RaftCore::on_applied`]). Its output is a
//! [`Ready`] the caller drains with [`RaftCore::ready`].
//!
//! # The persistence contract
//!
//! A `Ready` may carry a [`WriteBatch`] (hard state, truncation, entries). The runtime must
//! execute write batches in order, make each durable, and then call
//! [`RaftCore::on_persisted`] with its sequence number. Messages whose truth depends on
//! state that is not yet durable (a granted vote, a candidate's vote requests, an
//! AppendEntries acknowledgement) are held inside the core until the write they depend on
//! is reported durable, so every message in `Ready::messages` may be sent at once. In
//! particular the leader's AppendEntries go out while its own write is still in flight,
//! and the leader counts its own log towards commit only up to what is durable.
//!
//! The concerns live in one module each: `state` (term, vote, role, commit), `log` (the
//! in-memory log and its durable prefix), `election` (timeouts, PreVote, votes,
//! CheckQuorum), `replication` (AppendEntries, heartbeats, flow control, commit),
//! `progress` / `inflight` (per-follower state) and `quorum` (majority arithmetic).

#[cfg(feature = "bug-injection")]
mod bugs;
mod confchange;
mod configs;
mod election;
mod log;
mod quorum;
mod read;
mod replication;
mod snapshot;
mod state;
mod tracker;
mod transfer;

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;

#[cfg(feature = "bug-injection")]
pub use self::bugs::InjectedBugs;
pub use self::election::ElectionStart;
use self::log::RaftLog;
pub use self::log::{LogWrite, SnapshotLog};
pub use self::read::{ReadFailure, ReadState};
pub use self::snapshot::{SnapshotChunk, SnapshotWrite, CHUNK_WINDOW, DEFAULT_SNAPSHOT_CHUNK};
use self::state::State;
use self::tracker::Tracker;
use crate::config::Config;
use crate::error::{Error, OverloadReason, Result};
use crate::message::{Message, MessageBody};
use crate::rand::Rand;
pub use crate::types::{ElectionReason, InitialState};
use crate::types::{
    Entry, EntryKind, HardState, Index, NodeId, PeerReplicationState, RaftStatus, Role,
    SnapshotInfo, Term,
};

/// Bytes of bookkeeping counted per proposed entry on top of its payload against
/// `max_unapplied_bytes` (the entry in the log, its proposer's waiter), so that empty
/// commands are bounded too.
pub const ENTRY_OVERHEAD: u64 = 256;

/// State the runtime must make durable, in order, before calling
/// [`RaftCore::on_persisted`] with `seq`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteBatch {
    /// Sequence number to acknowledge.
    pub seq: u64,
    /// Writes of a snapshot received from the leader, in order and before everything
    /// else in the batch: chunks into storage's temporary snapshot
    /// ([`Storage::write_snapshot_chunk`](crate::Storage::write_snapshot_chunk)), and the
    /// install of a complete one, keeping or discarding the log as it says
    /// ([`Storage::install_snapshot`](crate::Storage::install_snapshot) with
    /// [`SnapshotSource::Received`](crate::SnapshotSource::Received)).
    pub snapshot: Vec<SnapshotWrite>,
    /// New term and vote, if they changed.
    pub hard_state: Option<HardState>,
    /// Truncation and appends.
    pub log: LogWrite,
}

/// The commands of one proposal ([`RaftCore::propose`]): one, without a `Vec` to
/// allocate, or several at consecutive indices.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Commands {
    /// A single command.
    One(Bytes),
    /// A batch, appended together.
    Many(Vec<Bytes>),
}

impl Commands {
    /// The commands in order.
    pub fn as_slice(&self) -> &[Bytes] {
        match self {
            Commands::One(c) => std::slice::from_ref(c),
            Commands::Many(all) => all,
        }
    }
}

impl From<Bytes> for Commands {
    fn from(command: Bytes) -> Self {
        Commands::One(command)
    }
}

impl From<Vec<Bytes>> for Commands {
    fn from(commands: Vec<Bytes>) -> Self {
        Commands::Many(commands)
    }
}

impl WriteBatch {
    /// Whether the batch writes nothing (it still orders the messages that wait on it).
    pub fn is_empty(&self) -> bool {
        self.snapshot.is_empty()
            && self.hard_state.is_none()
            && self.log.truncate_from.is_none()
            && self.log.entries.is_empty()
    }
}

/// The volatile facts an application watches: role, term and leader.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SoftState {
    /// Current role.
    pub role: Role,
    /// Current term.
    pub term: Term,
    /// Known leader of that term.
    pub leader: Option<NodeId>,
}

/// Everything the core asks the runtime to do. Drain it with [`RaftCore::ready`].
#[derive(Clone, Debug, Default)]
pub struct Ready {
    /// State to make durable (see the persistence contract in the module docs).
    pub write: Option<WriteBatch>,
    /// Messages to send now.
    pub messages: Vec<Message>,
    /// Snapshot chunks to send once their bytes are read from storage (see
    /// [`SnapshotChunk`]). Not urgent and never needed for safety: a chunk that is late or
    /// dropped is sent again.
    pub snapshot_chunks: Vec<SnapshotChunk>,
    /// A snapshot to restore the state machine from: the one the write batch of this same
    /// `Ready` installs. Restore it from storage once that write is done, before any
    /// entry handed out afterwards (the core hands out none after the snapshot before that
    /// write is reported durable), then report its index with `on_applied`.
    pub snapshot: Option<SnapshotInfo>,
    /// Committed entries to apply, in order (at most `max_apply_batch_size`). No-op
    /// entries are included so the applied index can advance past them. Report them with
    /// [`RaftCore::on_applied`]: no more are handed out while `max_pending_apply_batches`
    /// batches are unreported.
    pub committed_entries: Vec<Entry>,
    /// Build a snapshot of the state machine (it has applied at least this index): stream
    /// it into a [`Storage::snapshot_writer`](crate::Storage::snapshot_writer), install it
    /// durably (keeping the log), then call [`RaftCore::on_snapshot_built`] with its info
    /// (or `on_snapshot_failed`).
    pub snapshot_request: Option<Index>,
    /// Storage may drop log entries up to this index ([`Storage::compact`](crate::Storage::compact)).
    pub compact_to: Option<Index>,
    /// Reads that may be served once the state machine has applied their index.
    pub read_states: Vec<ReadState>,
    /// Reads that failed, by the caller's id.
    pub failed_reads: Vec<(u64, ReadFailure)>,
    /// Role, term or leader changed since the last `Ready`.
    pub soft_state: Option<SoftState>,
    /// Campaigns this node started since the last `Ready`, in order (for metrics).
    pub elections: Vec<ElectionStart>,
    /// The configuration in effect, when it changed since the last `Ready` (also in the
    /// first `Ready`): a runtime starts links to new members and stops those to removed
    /// ones. It may be uncommitted, and may revert if its entry is truncated.
    pub membership: Option<std::sync::Arc<crate::membership::Membership>>,
}

impl Ready {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.write.is_none()
            && self.messages.is_empty()
            && self.snapshot_chunks.is_empty()
            && self.snapshot.is_none()
            && self.committed_entries.is_empty()
            && self.snapshot_request.is_none()
            && self.compact_to.is_none()
            && self.read_states.is_empty()
            && self.failed_reads.is_empty()
            && self.soft_state.is_none()
            && self.elections.is_empty()
            && self.membership.is_none()
    }
}

#[cfg(feature = "bug-injection")]
type BugSet = InjectedBugs;
/// Stand-in so `RaftCore::bug` type-checks without the feature.
#[cfg(not(feature = "bug-injection"))]
#[derive(Default)]
struct BugSet {
    commit_old_term_by_counting: bool,
    grant_two_votes_per_term: bool,
    ack_before_durable: bool,
    vote_without_log_check: bool,
    read_before_noop_commit: bool,
    guard_follows_known_leader: bool,
    change_before_term_commit: bool,
    two_pending_changes: bool,
    removed_leader_keeps_leading: bool,
    lease_reads_during_transfer: bool,
    snapshot_without_membership: bool,
}

/// Election timing of this node, in ticks.
#[derive(Debug)]
struct Timers {
    /// Ticks since the last election reset (heard from the leader, granted a vote, ...);
    /// on a leader, ticks since the last CheckQuorum round.
    election_elapsed: u32,
    /// Drawn from `[election_ticks, 2 × election_ticks)` at every reset.
    randomized_timeout: u32,
    heartbeat_elapsed: u32,
    /// Ticks since this node last heard from a leader (AppendEntries, heartbeat or snapshot
    /// chunk of its current leader); `u32::MAX` when it never did. Only contact with a
    /// leader resets it: adopting a higher term from any other message does not, because
    /// the leader heard last may still hold a lease that counted this node (thesis
    /// §4.2.3, §6.4.1). While it is below the election timeout the node refuses every
    /// vote and pre-vote (see `vote_guard_holds`).
    since_leader_contact: u32,
    /// Monotonic count of ticks, for status reports.
    now: u64,
}

/// The Raft consensus state machine of one node. See the [module docs](self).
pub struct RaftCore {
    id: NodeId,
    config: Config,
    /// The configuration in effect, per-peer progress and vote tallies.
    tracker: Tracker,
    state: State,
    log: RaftLog,
    timers: Timers,
    rand: Box<dyn Rand>,
    /// Sequence number the next write batch gets.
    next_seq: u64,
    /// Highest write batch reported durable.
    persisted_seq: u64,
    /// Messages waiting for the write they depend on: (sequence, message).
    held_messages: Vec<(u64, Message)>,
    outbox: Vec<Message>,
    /// Proposals were appended since the last `Ready`: their AppendEntries go out when it
    /// is built, so that many proposals between two `Ready`s share one message per
    /// follower instead of one each.
    append_pending: bool,
    /// Campaigns started since the last `Ready`.
    elections: Vec<ElectionStart>,
    last_soft_state: SoftState,
    /// Bytes proposed in this leader's term and not yet committed.
    uncommitted_bytes: u64,
    /// Bytes proposed (payload plus [`ENTRY_OVERHEAD`] each) in the term named here and
    /// not yet applied. Scoped by its term rather than reset at role changes: a proposal
    /// in a new term starts it from zero.
    unapplied: (Term, u64),
    /// The last index of each batch of committed entries handed out and not yet reported
    /// applied, oldest first (at most `max_pending_apply_batches`).
    apply_batches: VecDeque<Index>,
    /// The latest snapshot (durable, or installed by a write in flight): what followers
    /// that need compacted entries are sent, read from storage chunk by chunk.
    snapshot: Option<SnapshotInfo>,
    /// A snapshot was requested and not yet reported built.
    snapshot_in_progress: bool,
    /// Log compaction to hand to the runtime.
    pending_compact: Option<Index>,
    /// Chunks and installs of snapshots received from the leader, for the next write.
    pending_snapshot_writes: Vec<SnapshotWrite>,
    /// A received snapshot to restore the state machine from once it is installed.
    pending_restore: Option<SnapshotInfo>,
    /// Chunks to read from storage and send.
    chunks_out: Vec<SnapshotChunk>,
    /// A snapshot being received in chunks.
    receiving: Option<snapshot::Receiving>,
    /// ReadIndex, follower reads and the lease.
    reads: read::Reads,
    /// Latest monotonic clock reading given with `set_now`.
    clock: Option<std::time::Duration>,
    /// The configuration generation the tracker follows (see `configs`).
    config_generation: u64,
    /// The configuration in effect changed since the last `Ready`.
    membership_changed: bool,
    /// A leadership transfer this leader is carrying out.
    transfer: Option<transfer::Transfer>,
    /// Whether the node started from a persisted term with the lease on (only the
    /// injected `guard_follows_known_leader` bug reads it, to reproduce the old rule).
    restarted_with_lease: bool,
    #[cfg(feature = "bug-injection")]
    bugs: InjectedBugs,
}

impl std::fmt::Debug for RaftCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftCore")
            .field("id", &self.id)
            .field("role", &self.state.role)
            .field("term", &self.state.term)
            .field("commit", &self.state.commit)
            .field("last_index", &self.log.last_index())
            .finish_non_exhaustive()
    }
}

impl RaftCore {
    /// Builds the core of node `config.id` from what storage recovered. The node starts as
    /// a follower; `rand` draws its election timeouts.
    pub fn new(config: Config, initial: InitialState, rand: Box<dyn Rand>) -> Result<Self> {
        config.validate()?;
        let (snap_index, snap_term) = initial
            .snapshot
            .as_ref()
            .map_or((0, 0), |s| (s.meta.last_index, s.meta.last_term));
        // The snapshot's membership, or the bootstrap peers for a node that has none (a
        // new cluster, a joining node, or a snapshot written before membership was
        // replicated); then every configuration entry in the log after it.
        let replicated = initial
            .snapshot
            .as_ref()
            .and_then(|s| s.meta.membership.as_deref().cloned());
        let base_known = replicated.is_some();
        let base =
            replicated.unwrap_or_else(|| crate::membership::Membership::from_peers(&config.peers));
        let mut log = RaftLog::new(snap_index, snap_term, initial.entries, base);
        log.configs.base_known = base_known;
        let membership = log.configs.effective().membership.clone();
        let config_generation = log.configs.generation();
        let restarted = initial.hard_state.term > 0;
        let state = State::new(initial.hard_state, snap_index);
        let last_soft_state = SoftState {
            role: Role::Follower,
            term: state.term,
            leader: None,
        };
        let mut core = RaftCore {
            id: config.id.clone(),
            tracker: Tracker::new(config.id.clone(), membership),
            state,
            log,
            timers: Timers {
                election_elapsed: 0,
                randomized_timeout: 0,
                heartbeat_elapsed: 0,
                since_leader_contact: u32::MAX,
                now: 0,
            },
            rand,
            next_seq: 1,
            persisted_seq: 0,
            held_messages: Vec::new(),
            outbox: Vec::new(),
            append_pending: false,
            elections: Vec::new(),
            last_soft_state,
            uncommitted_bytes: 0,
            unapplied: (0, 0),
            apply_batches: VecDeque::new(),
            snapshot: initial.snapshot,
            snapshot_in_progress: false,
            pending_compact: None,
            pending_snapshot_writes: Vec::new(),
            pending_restore: None,
            chunks_out: Vec::new(),
            receiving: None,
            reads: read::Reads::default(),
            clock: None,
            restarted_with_lease: false,
            config_generation,
            membership_changed: true,
            transfer: None,
            #[cfg(feature = "bug-injection")]
            bugs: InjectedBugs::default(),
            config,
        };
        core.restarted_with_lease = restarted && core.config.feature_flags.enable_leader_lease;
        if core.restarted_with_lease {
            // Before the crash this node may have acknowledged a leader whose lease is
            // still running: it refuses votes for its first election timeout, as if it had
            // just heard from that leader.
            core.timers.since_leader_contact = 0;
        }
        core.reset_election_timer();
        // Reads a follower forwards are numbered from a random start. The leader may answer
        // a read forwarded by this node's previous process after a restart (the answer sat
        // in a queue while the node was down), and numbers that restarted from zero would
        // match that late answer to a new read, serving it at an old index: a stale read
        // (found by the simulator, seed 114039, 3 nodes, profile brutal).
        core.reads.next_forward_id = core.rand.next_u64() >> 1;
        Ok(core)
    }

    /// Lets a freshly built core vote at once even though it restarted with a term (tests
    /// that build nodes in a mid-history state and elect one by ticking it alone).
    #[cfg(test)]
    pub(crate) fn skip_restart_vote_guard(&mut self) {
        self.timers.since_leader_contact = u32::MAX;
        self.restarted_with_lease = false;
    }

    /// Turns on deliberate protocol bugs (simulator self-tests only).
    #[cfg(feature = "bug-injection")]
    pub fn inject_bugs(&mut self, bugs: InjectedBugs) {
        self.bugs = bugs;
        self.log.configs.keep_on_truncate = bugs.no_revert_on_truncation;
        self.tracker
            .count_learners_as_voters(bugs.learners_in_quorum);
    }

    /// Whether the injected bug selected by `which` is on; always false in real builds.
    #[allow(unused_variables)]
    fn bug(&self, which: fn(&BugSet) -> bool) -> bool {
        #[cfg(feature = "bug-injection")]
        {
            which(&self.bugs)
        }
        #[cfg(not(feature = "bug-injection"))]
        {
            false
        }
    }

    /// This node's id.
    pub fn id(&self) -> &NodeId {
        &self.id
    }

    /// Current term.
    pub fn term(&self) -> Term {
        self.state.term
    }

    /// Current role.
    pub fn role(&self) -> Role {
        self.state.role
    }

    /// The leader this node knows of in its term.
    pub fn leader(&self) -> Option<&NodeId> {
        self.state.leader.as_ref()
    }

    /// Highest index known committed.
    pub fn commit_index(&self) -> Index {
        self.state.commit
    }

    /// First index held in the in-memory log (entries before it are compacted into the
    /// snapshot).
    pub fn first_index(&self) -> Index {
        self.log.first_index()
    }

    /// Last index of the log (durable or not).
    pub fn last_index(&self) -> Index {
        self.log.last_index()
    }

    /// Highest index durable in this node's storage.
    pub fn durable_index(&self) -> Index {
        self.log.durable_index()
    }

    /// The entry at `index`, if the in-memory log holds it.
    pub fn entry(&self, index: Index) -> Option<&Entry> {
        self.log.get(index)
    }

    /// Term of the entry at `index`, if the log holds it (or it is the snapshot point).
    pub fn term_at(&self, index: Index) -> Option<Term> {
        self.log.term(index)
    }

    /// On the leader, each follower and its match index (the highest index known to be
    /// replicated to it); nothing on other nodes. Cheap: no allocation.
    pub fn peer_match_indexes(&self) -> impl Iterator<Item = (&NodeId, Index)> + '_ {
        self.tracker
            .progress
            .iter()
            .map(|(id, p)| (id, p.match_index))
    }

    /// On the leader, the payload bytes proposed in its term and not yet committed
    /// (what `max_uncommitted_bytes` bounds); 0 elsewhere.
    pub fn uncommitted_bytes(&self) -> u64 {
        if self.state.role == Role::Leader {
            self.uncommitted_bytes
        } else {
            0
        }
    }

    /// On the leader, the bytes proposed in its term and not yet applied, with
    /// [`ENTRY_OVERHEAD`] counted per entry (what `max_unapplied_bytes` bounds); 0
    /// elsewhere.
    pub fn unapplied_bytes(&self) -> u64 {
        if self.state.role == Role::Leader && self.unapplied.0 == self.state.term {
            self.unapplied.1
        } else {
            0
        }
    }

    /// Batches of committed entries handed out in a `Ready` and not yet reported applied
    /// (at most `max_pending_apply_batches`).
    pub fn pending_apply_batches(&self) -> usize {
        self.apply_batches.len()
    }

    /// The configuration the core runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Advances logical time by one tick: elections, heartbeats and CheckQuorum are driven
    /// from here.
    pub fn tick(&mut self) {
        self.timers.now += 1;
        self.timers.since_leader_contact = self.timers.since_leader_contact.saturating_add(1);
        self.tick_reads();
        match self.state.role {
            Role::Leader => self.tick_leader(),
            _ => self.tick_election(),
        }
    }

    /// Handles a message from a peer. Messages from unknown nodes or addressed to another
    /// node are dropped. The message must be well formed (entries that follow
    /// `prev_log_index`, snapshot chunks within their size): a runtime takes peer messages
    /// through an [`RpcHandler`](crate::RpcHandler), which refuses any that is not.
    pub fn step(&mut self, m: Message) {
        // Messages from nodes outside the configuration are handled: a joining node
        // follows a leader it has not heard of yet, a learner answers a candidate that
        // was promoted without its knowing, and a leader hears the new members it added.
        // What a non-member can do is limited by the rules, not the sender check: only
        // voters campaign or count in a tally, and the vote guard keeps a removed server
        // from disrupting a live leader.
        if m.to != self.id || m.from == self.id {
            tracing::debug!(from = %m.from, to = %m.to, kind = m.kind(), "dropping misaddressed message");
            return;
        }
        if !self.step_term(&m) {
            return;
        }
        match m.body {
            MessageBody::RequestVote(req) => self.handle_request_vote(m.from, m.term, req),
            MessageBody::RequestVoteResponse(resp) => {
                self.handle_vote_response(m.from, m.term, resp)
            }
            MessageBody::AppendEntries(req) => self.handle_append_entries(m.from, req),
            MessageBody::AppendEntriesResponse(resp) => self.handle_append_response(m.from, resp),
            MessageBody::Heartbeat(hb) => self.handle_heartbeat(m.from, hb),
            MessageBody::HeartbeatResponse(resp) => self.handle_heartbeat_response(m.from, resp),
            MessageBody::InstallSnapshot(req) => self.handle_install_snapshot(m.from, req),
            MessageBody::InstallSnapshotResponse(resp) => {
                self.handle_install_snapshot_response(m.from, resp)
            }
            MessageBody::ReadIndex(req) => self.handle_read_index(m.from, req),
            MessageBody::ReadIndexResponse(resp) => self.handle_read_index_response(resp),
            MessageBody::TimeoutNow => self.handle_timeout_now(m.from),
        }
    }

    /// Proposes commands as one batch (a `Vec<Bytes>`, or one `Bytes`, which costs no
    /// allocation). On the leader they are appended at consecutive indices starting at the
    /// returned index, in the returned term; elsewhere the call fails with
    /// [`Error::NotLeader`] naming the known leader.
    pub fn propose(&mut self, commands: impl Into<Commands>) -> Result<(Index, Term)> {
        let commands = commands.into();
        if self.state.role != Role::Leader {
            return Err(Error::NotLeader {
                leader: self.state.leader.clone(),
            });
        }
        if let Some(t) = &self.transfer {
            return Err(Error::TransferInProgress { to: t.to.clone() });
        }
        if self.quorum_contact_lost() {
            tracing::info!(
                term = self.state.term,
                "leader has not heard from a quorum in two election timeouts; stepping down"
            );
            self.become_follower(self.state.term, None);
            return Err(Error::NotLeader { leader: None });
        }
        let limit = self.config.tuning.max_proposal_bytes;
        let mut size = 0u64;
        for c in commands.as_slice() {
            if c.len() > limit {
                return Err(Error::ProposalTooLarge {
                    size: c.len(),
                    limit,
                });
            }
            size += c.len() as u64;
        }
        let term = self.state.term;
        if self.unapplied.0 != term {
            self.unapplied = (term, 0);
        }
        let cost = size + ENTRY_OVERHEAD * commands.as_slice().len() as u64;
        // An empty backlog always admits one batch, so a batch larger than a cap cannot
        // wedge the leader.
        if let Some(limit) = self.config.tuning.max_uncommitted_bytes {
            if self.uncommitted_bytes > 0 && self.uncommitted_bytes + size > limit {
                return Err(Error::Overloaded {
                    reason: OverloadReason::UncommittedBytes {
                        uncommitted: self.uncommitted_bytes,
                        size,
                        limit,
                    },
                });
            }
        }
        if let Some(limit) = self.config.tuning.max_unapplied_bytes {
            let unapplied = self.unapplied.1;
            if unapplied > 0 && unapplied + cost > limit {
                return Err(Error::Overloaded {
                    reason: OverloadReason::UnappliedBytes {
                        unapplied,
                        size: cost,
                        limit,
                    },
                });
            }
        }
        let first = self.log.last_index() + 1;
        self.uncommitted_bytes += size;
        self.unapplied.1 += cost;
        match commands {
            Commands::One(data) => self
                .log
                .append(std::iter::once(Entry::normal(first, term, data))),
            Commands::Many(all) => self.log.append(
                all.into_iter()
                    .enumerate()
                    .map(|(i, data)| Entry::normal(first + i as u64, term, data)),
            ),
        }
        self.append_pending = true;
        Ok((first, term))
    }

    /// The runtime made every write batch up to `seq` durable.
    pub fn on_persisted(&mut self, seq: u64) {
        if seq <= self.persisted_seq {
            return;
        }
        assert!(
            seq < self.next_seq,
            "acknowledged write {seq} but only {} were handed out",
            self.next_seq - 1
        );
        self.persisted_seq = seq;
        let advanced = self.log.persisted(seq);
        let held = std::mem::take(&mut self.held_messages);
        for (s, m) in held {
            if s <= seq {
                self.outbox.push(m);
            } else {
                self.held_messages.push((s, m));
            }
        }
        if advanced && self.state.role == Role::Leader && self.maybe_commit() {
            self.broadcast_commit();
        }
    }

    /// The application has applied every entry up to `index`: the batches handed out up
    /// to it no longer count against `max_pending_apply_batches`, and this leader's own
    /// proposals up to it no longer against `max_unapplied_bytes`.
    pub fn on_applied(&mut self, index: Index) {
        assert!(
            index <= self.state.handed_out,
            "applied {index}, an entry never handed out (handed out up to {})",
            self.state.handed_out
        );
        let before = self.state.applied;
        self.state.applied = before.max(index.min(self.state.handed_out));
        while self
            .apply_batches
            .front()
            .is_some_and(|&last| last <= self.state.applied)
        {
            self.apply_batches.pop_front();
        }
        if self.unapplied.1 > 0 {
            // Only this term's normal entries were counted; the ones a snapshot skipped
            // are not in the log and cannot be this leader's (it never installs one).
            let (term, _) = self.unapplied;
            let lo = (before + 1).max(self.log.first_index());
            let hi = self.state.applied.min(self.log.last_index());
            let released: u64 = (lo..=hi)
                .filter_map(|i| self.log.get(i))
                .filter(|e| e.term == term && e.kind == EntryKind::Normal)
                .map(|e| e.data.len() as u64 + ENTRY_OVERHEAD)
                .sum();
            self.unapplied.1 = self.unapplied.1.saturating_sub(released);
        }
    }

    /// Highest index the runtime reported applied.
    pub fn applied_index(&self) -> Index {
        self.state.applied
    }

    /// Whether [`RaftCore::ready`] has anything to return.
    pub fn has_ready(&self) -> bool {
        self.append_pending
            || self.membership_changed
            || !self.outbox.is_empty()
            || !self.elections.is_empty()
            || self.state.hard_state_dirty
            || self.log.has_unstable()
            || !self.pending_snapshot_writes.is_empty()
            || self.pending_restore.is_some()
            || !self.chunks_out.is_empty()
            || self.pending_compact.is_some()
            || !self.reads.ready.is_empty()
            || !self.reads.failed.is_empty()
            || self.reads_need_round()
            || self.snapshot_due()
            || self.next_to_apply().is_some()
            || self.soft_state_changed()
    }

    /// Drains everything the runtime has to do.
    pub fn ready(&mut self) -> Ready {
        let mut rd = Ready::default();
        if self.has_unwritten_state() {
            let seq = self.next_seq;
            self.next_seq += 1;
            let hard_state = self.state.hard_state_dirty.then(|| self.state.hard_state());
            self.state.hard_state_dirty = false;
            rd.write = Some(WriteBatch {
                seq,
                snapshot: std::mem::take(&mut self.pending_snapshot_writes),
                hard_state,
                log: self.log.take_write(seq),
            });
        }
        // A leader that stepped down since proposing sends nothing: its successor decides
        // what happens to those entries.
        if std::mem::take(&mut self.append_pending) && self.state.role == Role::Leader {
            self.broadcast_append();
        }
        self.flush_read_round();
        rd.messages = std::mem::take(&mut self.outbox);
        rd.snapshot_chunks = std::mem::take(&mut self.chunks_out);
        if std::mem::take(&mut self.membership_changed) {
            rd.membership = Some(std::sync::Arc::new(self.tracker.config().clone()));
        }
        rd.elections = std::mem::take(&mut self.elections);
        rd.read_states = std::mem::take(&mut self.reads.ready);
        rd.failed_reads = std::mem::take(&mut self.reads.failed);
        rd.snapshot = self.pending_restore.take();
        rd.compact_to = self.pending_compact.take();
        rd.snapshot_request = self.maybe_request_snapshot();
        if let Some((lo, hi)) = self.next_to_apply() {
            rd.committed_entries = self.log.range(lo, hi);
            self.state.handed_out = hi;
            self.apply_batches.push_back(hi);
        }
        if self.soft_state_changed() {
            let soft = self.soft_state();
            self.last_soft_state = soft.clone();
            rd.soft_state = Some(soft);
        }
        rd
    }

    /// A report of this node's state.
    pub fn status(&self) -> RaftStatus {
        let tick = self.config.options.nominal_tick_interval;
        let replication = if self.state.role == Role::Leader {
            let last = self.log.last_index();
            self.tracker
                .progress
                .iter()
                .map(|(id, p)| {
                    let state = PeerReplicationState {
                        next_index: p.next_index,
                        match_index: p.match_index,
                        is_active: p.recent_active,
                        last_active_ago: p.last_response_tick.map(|t| {
                            tick.saturating_mul((self.timers.now - t).min(u32::MAX as u64) as u32)
                        }),
                        snapshot_in_progress: p.mode == crate::types::ReplicationMode::Snapshot,
                        replication_lag: last.saturating_sub(p.match_index),
                        mode: p.mode,
                        inflight: p.inflights.len(),
                    };
                    (id.clone(), state)
                })
                .collect()
        } else {
            BTreeMap::new()
        };
        let (snapshot_index, snapshot_term) = self
            .snapshot
            .as_ref()
            .map_or((0, 0), |s| (s.meta.last_index, s.meta.last_term));
        RaftStatus {
            id: self.id.clone(),
            role: self.state.role,
            term: self.state.term,
            leader_id: self.state.leader.clone(),
            last_log_index: self.log.last_index(),
            last_log_term: self.log.last_term(),
            commit_index: self.state.commit,
            last_applied: self.state.applied,
            snapshot_index,
            snapshot_term,
            replication,
            membership: self.tracker.config().clone(),
            membership_index: self.membership_index(),
            membership_committed: self.membership_index() <= self.state.commit,
        }
    }

    fn soft_state(&self) -> SoftState {
        SoftState {
            role: self.state.role,
            term: self.state.term,
            leader: self.state.leader.clone(),
        }
    }

    /// Whether role, term or leader changed since the last `Ready` (compared in place:
    /// `has_ready` runs several times per input).
    fn soft_state_changed(&self) -> bool {
        let last = &self.last_soft_state;
        self.state.role != last.role
            || self.state.term != last.term
            || self.state.leader != last.leader
    }

    /// The next range of entries to hand out for application: committed and durable here,
    /// and only while fewer than `max_pending_apply_batches` batches wait for the state
    /// machine (a slow one then holds back hand-out, never commit).
    fn next_to_apply(&self) -> Option<(Index, Index)> {
        if self.apply_batches.len() >= self.config.tuning.max_pending_apply_batches {
            return None;
        }
        let ceiling = self.state.commit.min(self.log.durable_index());
        if ceiling <= self.state.handed_out {
            return None;
        }
        let lo = self.state.handed_out + 1;
        let max = self.config.tuning.max_apply_batch_size as u64;
        Some((lo, ceiling.min(lo + max - 1)))
    }

    /// Queues a message that can be sent at once.
    fn send(&mut self, to: NodeId, body: MessageBody) {
        let m = self.message(to, body);
        self.outbox.push(m);
    }

    /// Queues a message that may only be sent once everything written so far, including
    /// state changed since the last `Ready`, is durable.
    fn send_after_persist(&mut self, to: NodeId, body: MessageBody) {
        let m = self.message(to, body);
        if self.bug(|b| b.ack_before_durable) {
            self.outbox.push(m);
            return;
        }
        let seq = if self.has_unwritten_state() {
            self.next_seq
        } else {
            self.next_seq - 1
        };
        if seq <= self.persisted_seq {
            self.outbox.push(m);
        } else {
            self.held_messages.push((seq, m));
        }
    }

    /// Whether state changed that the next write batch must carry.
    fn has_unwritten_state(&self) -> bool {
        self.state.hard_state_dirty
            || self.log.has_unstable()
            || !self.pending_snapshot_writes.is_empty()
    }

    fn message(&self, to: NodeId, body: MessageBody) -> Message {
        Message {
            from: self.id.clone(),
            to,
            term: self.state.term,
            body,
        }
    }

    /// The members other than this node: whom a leader replicates to (a shared list,
    /// so iterating it does not borrow the core).
    fn peers(&self) -> std::sync::Arc<[NodeId]> {
        self.tracker.peers()
    }
}

#[cfg(test)]
pub(crate) mod tests;
