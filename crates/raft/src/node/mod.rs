//! The runtime (the original's `raftNode`): one tokio task owns the [`RaftCore`] and drives
//! it from channels — commands from [`Raft`](crate::Raft) handles, inbound peer messages,
//! ticks, and completions from the storage and applier threads (`workers.rs`) — carrying
//! out each `Ready` as the core's persistence contract says.
//!
//! # Bounded memory, and why nothing deadlocks
//!
//! Every queue the node holds has a bound (the settings are in
//! [`TuningParams`](crate::TuningParams); depths are reported once per tick through
//! [`Metrics::observe_queue_depths`]):
//!
//! - Commands from handles (4096) and inbound peer messages (4096) are bounded channels;
//!   handles wait for room, the [`RpcHandler`] drops a message that finds none (a lost
//!   message, which Raft tolerates).
//! - Proposals: the core refuses them with [`Error::Overloaded`] past
//!   `max_uncommitted_bytes` or `max_unapplied_bytes`, so the log beyond what is applied,
//!   and the proposers waiting for results (`results.rs`), stay bounded.
//! - Apply jobs: the core hands out at most `max_pending_apply_batches` batches of
//!   committed entries before the applier reports them (`RaftCore::on_applied`); besides
//!   those, the applier's queue only ever holds the one snapshot the core asks for at a
//!   time and snapshots to restore.
//! - Storage jobs: while `max_pending_storage_jobs` are queued for the storage thread,
//!   the loop leaves the core's `Ready` undrained (the core merges what arrives meanwhile
//!   into its next write); the thread takes the whole queue in one group commit.
//! - Worker events: a bounded channel. Each job yields a bounded number of reports and
//!   jobs are bounded as above, so the threads' sends find room in practice.
//! - Reads: at most `max_pending_reads` wait; more fail with [`Error::Overloaded`].
//!
//! The job queues are bounded by credits, not by blocking sends: the event loop never
//! sends work it has no credit for, so it never waits for room. That is what rules out
//! deadlock. Only the worker threads ever block, and only on the event channel (and the
//! applier on the application's own `apply_channel`). The loop is the one consumer of
//! that channel, it never blocks on anything but its `select!` (whose worker-event branch
//! is enabled for as long as a thread holds a sender), and it handles reports of inline
//! workers from a queue of its own rather than sending them to itself. So a blocked thread is always unblocked by the
//! loop's next turn, and the loop never waits for a thread. At shutdown the loop closes
//! the event channel before joining the threads, so their last reports cannot block them
//! either.

mod membership;
mod results;
mod snapshots;
mod workers;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::MissedTickBehavior;

use self::membership::Changes;
pub(crate) use self::membership::{Change, ChangeReply};
pub(crate) use self::results::ResultReply;
use self::results::WaitingResults;
use self::snapshots::{ApplyOrder, ChunkSender};
use self::workers::{ApplyJob, ApplyWorker, Outcomes, StorageJob, StorageWorker, WorkerEvent};
use crate::clock::Clock;
use crate::core::{Commands, RaftCore, Ready};
use crate::error::{Error, OverloadReason, Result};
use crate::membership::Membership;
use crate::message::Message;
use crate::metrics::{Metrics, ProposalResult, QueueDepths};
use crate::network::NetworkManager;
use crate::rpc::RpcHandler;
use crate::types::{Index, NodeId, RaftStatus, Role, Term};

/// Requests from [`Raft`](crate::Raft) handles to the event loop.
pub(crate) enum Command {
    Propose {
        data: Commands,
        reply: ProposeReply,
    },
    ReadIndex {
        reply: oneshot::Sender<Result<Index>>,
    },
    Tick,
    Status {
        reply: oneshot::Sender<RaftStatus>,
    },
    ChangeMembership {
        change: Change,
        reply: ChangeReply,
    },
    TransferLeader {
        to: Option<NodeId>,
        reply: oneshot::Sender<Result<NodeId>>,
    },
    Stop {
        reply: oneshot::Sender<()>,
    },
}

/// Where a proposal's outcome goes: once appended (`propose`), or once applied
/// (`propose_and_wait`, `propose_batch_and_wait`: one channel for both a refusal and the
/// applier's results).
pub(crate) enum ProposeReply {
    Appended(oneshot::Sender<Result<(Index, Term)>>),
    Applied(ResultReply),
}

/// What a handle can read without asking the event loop.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    /// Current term.
    pub term: Term,
    /// Current role.
    pub role: Role,
    /// Known leader.
    pub leader: Option<NodeId>,
}

/// Everything the event loop needs, assembled by the builder.
pub(crate) struct Parts {
    pub core: RaftCore,
    pub storage: Box<dyn crate::storage::Storage>,
    pub applier: Box<dyn crate::applier::Applier>,
    pub network: Arc<dyn NetworkManager>,
    pub metrics: Arc<dyn Metrics>,
    pub clock: Arc<dyn Clock>,
    pub external_ticks: bool,
    pub apply_tx: Option<mpsc::Sender<ApplyMsg>>,
    /// Run the applier on the event loop (never together with `apply_tx`).
    pub inline_applier: bool,
    /// Write to storage on the event loop while not leading (see the builder).
    pub inline_follower_writes: bool,
    /// The snapshot in storage at start: the state machine is restored from it, and the
    /// leader reads chunks from it.
    pub restore_on_start: Option<Arc<dyn crate::storage::SnapshotReader>>,
}

use crate::types::ApplyMsg;

/// Starts the node's threads and event loop on the current tokio runtime. Inbound peer
/// messages arrive on `inbound`, fed by `handler` (which the transport gets).
pub(crate) fn spawn(
    parts: Parts,
    commands: (mpsc::Receiver<Command>, Arc<AtomicBool>),
    inbound: (RpcHandler, mpsc::Receiver<Message>),
    observed: watch::Sender<Observed>,
    membership: watch::Sender<Arc<Membership>>,
) -> Result<()> {
    let (handler, inbound_rx) = inbound;
    let (commands, tick_queued) = commands;
    let storage_in_memory = parts.storage.is_in_memory();
    let tuning = &parts.core.config().tuning;
    // Room for the reports of every job the credits allow (one or two each) and a few
    // snapshot jobs: the threads' sends should never have to wait, though they may.
    let event_capacity =
        2 * (tuning.max_pending_storage_jobs + tuning.max_pending_apply_batches) + 16;
    let max_storage_jobs = tuning.max_pending_storage_jobs;
    let max_pending_reads = tuning.max_pending_reads;
    let (events_tx, events_rx) = mpsc::channel(event_capacity);
    let io = |e: std::io::Error| Error::Storage(crate::StorageError::io("spawn thread", "", e));
    let (storage, storage_thread) = StorageWorker::start(parts.storage, &events_tx).map_err(io)?;
    let (mut applier, applier_thread) = ApplyWorker::start(
        parts.applier,
        parts.inline_applier,
        &events_tx,
        parts.apply_tx,
    )
    .map_err(io)?;
    // Only the threads hold senders: once they exit, the channel closes.
    drop(events_tx);
    parts.network.start(handler.clone())?;
    let applied = parts
        .restore_on_start
        .as_ref()
        .map_or(0, |s| s.info().meta.last_index);
    let mut inline = Outcomes::new();
    if let Some(reader) = &parts.restore_on_start {
        applier.submit(ApplyJob::Restore(Arc::clone(reader)), &mut inline);
    }
    let chunks = ChunkSender::new(
        Arc::clone(&parts.network),
        parts.restore_on_start,
        storage_in_memory,
    );
    let result_timeout = parts.core.config().options.apply_entry_timeout;
    let node = Node {
        core: parts.core,
        network: parts.network,
        metrics: parts.metrics,
        clock: parts.clock,
        external_ticks: parts.external_ticks,
        inline_follower_writes: parts.inline_follower_writes,
        tick_queued,
        storage: Some(storage),
        applier: Some(applier),
        inline,
        max_storage_jobs,
        max_pending_reads,
        threads: storage_thread.into_iter().chain(applier_thread).collect(),
        observed,
        rpc: handler,
        membership,
        changes: Changes::new(result_timeout),
        applied,
        waiting_results: WaitingResults::new(result_timeout),
        now: std::time::Duration::ZERO,
        reads: HashMap::new(),
        next_read: 0,
        reads_waiting_apply: Vec::new(),
        snapshot_started: None,
        chunks,
        apply_order: ApplyOrder::default(),
    };
    tokio::spawn(node.run(commands, inbound_rx, events_rx));
    Ok(())
}

/// One input of the event loop.
enum Input {
    Command(Option<Command>),
    Message(Message),
    Worker(WorkerEvent),
    Tick,
}

struct Node {
    core: RaftCore,
    network: Arc<dyn NetworkManager>,
    metrics: Arc<dyn Metrics>,
    clock: Arc<dyn Clock>,
    external_ticks: bool,
    /// Write to storage on this loop while not leading (`with_inline_follower_writes`).
    inline_follower_writes: bool,
    /// Cleared when a queued `Tick` command is taken (see `Raft::tick`).
    tick_queued: Arc<AtomicBool>,
    /// `None` once stopping: closing a thread's queue lets it finish and exit.
    storage: Option<StorageWorker>,
    applier: Option<ApplyWorker>,
    /// Reports of the workers that run inline, handled before the loop waits again.
    inline: Outcomes,
    /// `max_pending_storage_jobs`: the storage thread's credits.
    max_storage_jobs: usize,
    /// `max_pending_reads`.
    max_pending_reads: usize,
    threads: Vec<JoinHandle<()>>,
    observed: watch::Sender<Observed>,
    /// The node's inbound entrance: its members follow the configuration in effect.
    rpc: RpcHandler,
    /// The configuration in effect, for handles.
    membership: watch::Sender<Arc<Membership>>,
    /// Callers waiting for their membership change to commit.
    changes: Changes,
    /// Highest index the applier reported applied.
    applied: Index,
    /// Proposers waiting for the applier's results.
    waiting_results: WaitingResults,
    /// The clock's reading at the current input.
    now: std::time::Duration,
    /// Reads asked of the core: ctx → (reply, started).
    reads: HashMap<u64, (oneshot::Sender<Result<Index>>, Instant)>,
    next_read: u64,
    /// Reads that are safe once the applied index reaches theirs.
    reads_waiting_apply: Vec<(Index, oneshot::Sender<Result<Index>>, Instant)>,
    snapshot_started: Option<Instant>,
    /// Reads the chunks of snapshots sent to followers from storage and sends them.
    chunks: ChunkSender,
    /// Apply jobs held behind the restore of a received snapshot not yet installed.
    apply_order: ApplyOrder,
}

impl Node {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut inbound: mpsc::Receiver<Message>,
        mut events: mpsc::Receiver<WorkerEvent>,
    ) {
        let interval = self.core.config().options.nominal_tick_interval;
        let mut ticker = tokio::time::interval(interval);
        // Missed ticks are not fired in a burst: followers count ticks to refuse votes, and
        // a burst would shorten their patience below the leader's lease.
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut stop_reply = None;
        let mut worked_inline = false;
        loop {
            // After a turn whose inline workers reported, let the tasks this turn woke
            // (proposers answered, peers sent to) run before waiting: otherwise the first
            // new command wakes the loop at once (tokio runs a woken task next, from its
            // LIFO slot), and each turn carries one proposal instead of a batch. Before
            // the inline queue, the inline workers' sends to the loop's own event channel
            // had this effect; without it 64 clients in one process ran at 40%.
            if std::mem::take(&mut worked_inline) {
                tokio::task::yield_now().await;
            }
            // What inline workers reported comes first: nothing would wake the loop for it.
            let input = match self.inline.pop_front() {
                Some(ev) => Input::Worker(ev),
                None => tokio::select! {
                    cmd = commands.recv() => Input::Command(cmd),
                    Some(m) = inbound.recv() => Input::Message(m),
                    Some(ev) = events.recv() => Input::Worker(ev),
                    _ = ticker.tick(), if !self.external_ticks => Input::Tick,
                },
            };
            self.read_clock();
            match input {
                Input::Command(Some(Command::Stop { reply })) => {
                    stop_reply = Some(reply);
                    break;
                }
                Input::Command(Some(cmd)) => self.handle_command(cmd, events.len()),
                Input::Command(None) => break,
                Input::Message(m) => {
                    self.core.step(m);
                    // Drain what else arrived, so one Ready carries the whole batch.
                    while let Ok(m) = inbound.try_recv() {
                        self.read_clock();
                        self.core.step(m);
                    }
                }
                Input::Worker(ev) => {
                    if let Err(e) = self.handle_event(ev) {
                        tracing::error!(error = %e, "node stops after a fatal error");
                        break;
                    }
                }
                Input::Tick => self.tick(events.len()),
            }
            while let Ok(cmd) = commands.try_recv() {
                match cmd {
                    Command::Stop { reply } => {
                        stop_reply = Some(reply);
                        break;
                    }
                    cmd => self.handle_command(cmd, events.len()),
                }
            }
            match self.settle(&mut events) {
                Ok(inline) => worked_inline = inline,
                Err(e) => {
                    tracing::error!(error = %e, "node stops after a fatal error");
                    break;
                }
            }
            if stop_reply.is_some() {
                break;
            }
        }
        // From here on, delivering a peer message fails with `ShuttingDown`.
        inbound.close();
        self.shutdown(events).await;
        if let Some(reply) = stop_reply {
            let _ = reply.send(());
        }
    }

    /// Reads the clock and gives it to the core. Called before every input, not once per
    /// wake-up: the lease is judged by the reading the core holds, and a reading taken
    /// before a long batch would let a read be served from a lease that ran out during it.
    /// A reading costs tens of nanoseconds.
    fn read_clock(&mut self) {
        self.now = self.clock.now();
        self.core.set_now(self.now);
    }

    /// Handles one command; `events` is the depth of the worker-event channel (for the
    /// metrics of a tick).
    fn handle_command(&mut self, cmd: Command, events: usize) {
        // A drained command may come long after the wake-up: reads and proposals judge the
        // lease and CheckQuorum by the clock now.
        self.read_clock();
        match cmd {
            Command::Propose { data, reply } => {
                let count = data.as_slice().len();
                let outcome = self.core.propose(data);
                self.metrics.observe_proposal(match &outcome {
                    Ok(_) => ProposalResult::Accepted,
                    Err(Error::NotLeader { .. }) => ProposalResult::NotLeader,
                    Err(Error::ProposalTooLarge { .. }) => ProposalResult::TooLarge,
                    Err(Error::Overloaded { .. }) => ProposalResult::Overloaded,
                    Err(_) => ProposalResult::Refused,
                });
                match (outcome, reply) {
                    (outcome, ProposeReply::Appended(reply)) => {
                        let _ = reply.send(outcome);
                    }
                    (Ok((first, term)), ProposeReply::Applied(reply)) => {
                        self.waiting_results
                            .insert(first, count, term, self.now, reply);
                    }
                    (Err(e), ProposeReply::Applied(reply)) => reply.fail(e),
                }
            }
            Command::ReadIndex { reply } => {
                let pending = self.reads.len() + self.reads_waiting_apply.len();
                if pending >= self.max_pending_reads {
                    let _ = reply.send(Err(Error::Overloaded {
                        reason: OverloadReason::PendingReads {
                            pending,
                            limit: self.max_pending_reads,
                        },
                    }));
                    return;
                }
                self.next_read += 1;
                let ctx = self.next_read;
                match self.core.read_index(ctx) {
                    Ok(()) => {
                        self.reads.insert(ctx, (reply, Instant::now()));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            Command::Tick => {
                // Cleared first: a tick given from here on is queued again, not lost.
                self.tick_queued.store(false, Ordering::Release);
                self.tick(events);
            }
            Command::Status { reply } => {
                let mut status = self.core.status();
                status.last_applied = self.applied;
                let _ = reply.send(status);
            }
            Command::ChangeMembership { change, reply } => {
                self.changes.start(&mut self.core, change, self.now, reply);
            }
            Command::TransferLeader { to, reply } => {
                let outcome = match to {
                    Some(to) => Ok(to),
                    None => membership::pick_transfer_target(&self.core),
                }
                .and_then(|to| self.core.transfer_leader(to.clone()).map(|()| to));
                let _ = reply.send(outcome);
            }
            Command::Stop { .. } => {}
        }
    }

    /// One tick of logical time; reports the queues' depths and, on the leader, how far
    /// each follower lags (once per tick, so the cost does not grow with traffic).
    fn tick(&mut self, events: usize) {
        self.core.tick();
        self.changes.settle(&self.core, self.now);
        // Once per tick, so a proposer waits at most one tick longer than
        // `apply_entry_timeout`; a timer per proposal would cost more than the proposal.
        self.waiting_results.expire(self.now);
        self.metrics.observe_queue_depths(&QueueDepths {
            apply_batches: self.core.pending_apply_batches(),
            storage_jobs: self.storage.as_ref().map_or(0, StorageWorker::queued),
            worker_events: events,
            uncommitted_bytes: self.core.uncommitted_bytes(),
            unapplied_bytes: self.core.unapplied_bytes(),
            waiting_proposals: self.waiting_results.len(),
            pending_reads: self.reads.len() + self.reads_waiting_apply.len(),
        });
        if self.core.role() == Role::Leader {
            let last = self.core.last_index();
            for (peer, matched) in self.core.peer_match_indexes() {
                self.metrics
                    .observe_peer_lag(peer, matched, last.saturating_sub(matched));
            }
        }
    }

    fn handle_event(&mut self, ev: WorkerEvent) -> Result<()> {
        // A durable write can commit entries and release reads under the lease.
        self.read_clock();
        match ev {
            WorkerEvent::Persisted {
                seq,
                entries,
                started,
                fsync,
            } => {
                self.metrics.observe_persist(entries, started.elapsed());
                self.metrics.observe_fsync(fsync);
                self.core.on_persisted(seq);
            }
            // Its only purpose was to wake the loop: the storage queue has room again.
            WorkerEvent::StorageIdle => {}
            WorkerEvent::Applied {
                index,
                results,
                restored,
            } => {
                self.applied = self.applied.max(index);
                self.core.on_applied(index);
                self.metrics.observe_applied_index(index);
                self.waiting_results.on_applied(index, results, restored);
                self.release_reads();
            }
            WorkerEvent::SnapshotWriter(writer) => {
                // The applier streams the state machine into storage's temp file.
                self.send_to_applier(ApplyJob::BuildSnapshot(writer));
            }
            WorkerEvent::SnapshotBuilt { index, staged } => {
                match self.core.snapshot_meta_at(index) {
                    Some(meta) => {
                        let info = crate::types::SnapshotInfo {
                            meta,
                            size: staged.size(),
                            checksum: staged.checksum(),
                        };
                        self.send_to_storage(StorageJob::InstallBuilt { info, staged });
                    }
                    // Dropping the staged snapshot deletes its temp file.
                    None => self.core.on_snapshot_failed(),
                }
            }
            WorkerEvent::SnapshotSaved(reader) => {
                let info = reader.info().clone();
                if let Some(started) = self.snapshot_started.take() {
                    self.metrics
                        .observe_snapshot(info.meta.last_index, started.elapsed());
                }
                self.chunks.set_reader(reader);
                self.core.on_snapshot_built(info);
            }
            WorkerEvent::SnapshotInstalled(reader) => {
                self.chunks.set_reader(Arc::clone(&reader));
                for job in self.apply_order.installed(reader) {
                    self.submit_to_applier(job);
                }
            }
            WorkerEvent::SnapshotFailed(reason) => {
                tracing::warn!(%reason, "snapshot failed; another is taken later");
                self.snapshot_started = None;
                self.core.on_snapshot_failed();
            }
            WorkerEvent::StorageFailed(e) => return Err(Error::Storage(e)),
            WorkerEvent::ApplierFailed(e) => return Err(Error::Applier(e)),
        }
        Ok(())
    }

    /// Carries out every `Ready` and handles the completions already reported, round after
    /// round: inline workers report at once, so one input usually settles here without
    /// another trip through `select!`. Bounded, so that a stream of completions from the
    /// worker threads cannot starve commands and peer messages. Returns whether inline
    /// workers reported (the loop then yields before it waits again, see `run`).
    fn settle(&mut self, events: &mut mpsc::Receiver<WorkerEvent>) -> Result<bool> {
        const MAX_ROUNDS: usize = 16;
        let mut inline = false;
        for _ in 0..MAX_ROUNDS {
            self.drain_ready();
            let mut handled = false;
            while let Some(ev) = self.inline.pop_front() {
                self.handle_event(ev)?;
                handled = true;
                inline = true;
            }
            while let Ok(ev) = events.try_recv() {
                self.handle_event(ev)?;
                handled = true;
            }
            if !handled {
                break;
            }
        }
        self.drain_ready();
        Ok(inline)
    }

    /// Carries out every `Ready` the core has, unless the storage thread has no credit
    /// left: then the `Ready` waits in the core (which merges later changes into it) until
    /// the thread reports its group commit, which frees every credit at once.
    fn drain_ready(&mut self) {
        while self.core.has_ready() && !self.storage_full() {
            let rd = self.core.ready();
            self.carry_out(rd);
        }
        self.changes.settle(&self.core, self.now);
    }

    /// Whether `max_pending_storage_jobs` jobs are queued for the storage thread.
    fn storage_full(&self) -> bool {
        self.storage
            .as_ref()
            .is_some_and(|w| w.queued() >= self.max_storage_jobs)
    }

    fn carry_out(&mut self, rd: Ready) {
        for e in &rd.elections {
            self.metrics.observe_election_start(e.term, e.reason);
        }
        if let Some(m) = rd.membership {
            self.on_membership(m);
        }
        if let Some(w) = rd.write {
            self.send_to_storage(StorageJob::Write(w));
        }
        // The leader's AppendEntries go out while its own write is in flight; messages that
        // need durable state were held by the core until it was.
        if !rd.messages.is_empty() {
            self.network.send(rd.messages);
        }
        if !rd.snapshot_chunks.is_empty() {
            self.chunks.send(rd.snapshot_chunks);
        }
        if let Some(info) = rd.snapshot {
            // Restored from storage once the write above installs it: storage reports it
            // with the reader (`WorkerEvent::SnapshotInstalled`); apply jobs wait behind.
            self.apply_order.await_install(info.meta);
        }
        if !rd.committed_entries.is_empty() {
            if let Some(last) = rd.committed_entries.last() {
                self.metrics.observe_commit_index(last.index);
            }
            self.send_to_applier(ApplyJob::Apply(rd.committed_entries));
        }
        if rd.snapshot_request.is_some() {
            // Storage makes a temp file to write into (`WorkerEvent::SnapshotWriter`).
            self.snapshot_started = Some(Instant::now());
            self.send_to_storage(StorageJob::NewSnapshotWriter);
        }
        if let Some(upto) = rd.compact_to {
            self.send_to_storage(StorageJob::Compact(upto));
        }
        for rs in rd.read_states {
            if let Some((reply, started)) = self.reads.remove(&rs.ctx) {
                self.reads_waiting_apply.push((rs.index, reply, started));
            }
        }
        for (ctx, failure) in rd.failed_reads {
            if let Some((reply, _)) = self.reads.remove(&ctx) {
                let _ = reply.send(Err(failure.into()));
            }
        }
        self.release_reads();
        if let Some(soft) = rd.soft_state {
            // Proposals of a term this node no longer leads fail at once if they had not
            // committed: their fate is the next leader's, and waiting tells no more.
            let leading = (soft.role == Role::Leader).then_some(soft.term);
            self.waiting_results
                .fail_uncommitted(self.core.commit_index(), leading);
            self.metrics.observe_term(soft.term);
            self.metrics.observe_role(soft.role);
            if self.observed.borrow().leader != soft.leader {
                self.metrics
                    .observe_leader_change(soft.leader.as_ref(), soft.term);
            }
            let _ = self.observed.send(Observed {
                term: soft.term,
                role: soft.role,
                leader: soft.leader,
            });
        }
    }

    /// The configuration in effect changed (appended, truncated, installed): the
    /// inbound check and the transport's links follow it.
    fn on_membership(&mut self, m: Arc<Membership>) {
        tracing::info!(node = %self.core.id(), membership = %m, "configuration in effect");
        self.rpc.set_members(m.members());
        self.rpc.set_retired(m.retired.iter().cloned());
        self.network.set_peers(&m.peer_configs());
        self.membership.send_replace(m);
    }

    fn release_reads(&mut self) {
        let applied = self.applied;
        let mut still = Vec::new();
        for (index, reply, started) in std::mem::take(&mut self.reads_waiting_apply) {
            if index <= applied {
                self.metrics.observe_read_index(started.elapsed());
                let _ = reply.send(Ok(index));
            } else {
                still.push((index, reply, started));
            }
        }
        self.reads_waiting_apply = still;
    }

    fn send_to_storage(&mut self, job: StorageJob) {
        let inline_if_idle = self.inline_follower_writes && self.core.role() != Role::Leader;
        if let Some(w) = &mut self.storage {
            w.submit(job, &mut self.inline, inline_if_idle);
        }
    }

    /// Hands `job` to the applier in the core's order (behind a pending restore).
    fn send_to_applier(&mut self, job: ApplyJob) {
        if let Some(job) = self.apply_order.push(job) {
            self.submit_to_applier(job);
        }
    }

    fn submit_to_applier(&mut self, job: ApplyJob) {
        if let Some(w) = &mut self.applier {
            w.submit(job, &mut self.inline);
        }
    }

    /// Graceful stop: pending proposals and reads fail with `ShuttingDown`, queued writes
    /// and applications finish, the threads end (dropping the storage releases its
    /// directory lock), and the transport stops.
    async fn shutdown(mut self, mut events: mpsc::Receiver<WorkerEvent>) {
        self.network.stop();
        self.waiting_results.fail_all(|| Error::ShuttingDown);
        self.changes.fail_all();
        for (_, (reply, _)) in self.reads.drain() {
            let _ = reply.send(Err(Error::ShuttingDown));
        }
        for (_, reply, _) in self.reads_waiting_apply.drain(..) {
            let _ = reply.send(Err(Error::ShuttingDown));
        }
        // Closing the job channels lets each worker finish its queue and exit; inline
        // storage is dropped here, releasing its directory. Closing the event channel
        // first means no report can block a thread that is being joined.
        events.close();
        self.inline.clear();
        self.storage = None;
        self.applier = None;
        let threads = std::mem::take(&mut self.threads);
        let joined = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        });
        let _ = joined.await;
        while events.try_recv().is_ok() {}
        let _ = self.observed.send(Observed::default());
    }
}
