//! The runtime (the original's `raftNode`): one tokio task owns the [`RaftCore`] and drives
//! it from channels — commands from [`Raft`](crate::Raft) handles, inbound peer messages,
//! ticks, and completions from the storage and applier threads (`workers.rs`) — carrying
//! out each `Ready` as the core's persistence contract says.

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

pub(crate) use self::results::ResultReply;
use self::results::WaitingResults;
use self::snapshots::ChunkSender;
use self::workers::{ApplyJob, ApplyWorker, StorageJob, StorageWorker, WorkerEvent};
use crate::clock::Clock;
use crate::core::{Commands, RaftCore, Ready};
use crate::error::{Error, Result};
use crate::message::Message;
use crate::metrics::{Metrics, ProposalResult};
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
) -> Result<()> {
    let (handler, inbound_rx) = inbound;
    let (commands, tick_queued) = commands;
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let storage_in_memory = parts.storage.is_in_memory();
    let io = |e: std::io::Error| Error::Storage(crate::StorageError::io("spawn thread", "", e));
    let (storage, storage_thread) = StorageWorker::start(parts.storage, &events_tx).map_err(io)?;
    let (mut applier, applier_thread) = ApplyWorker::start(
        parts.applier,
        parts.inline_applier,
        &events_tx,
        parts.apply_tx,
    )
    .map_err(io)?;
    parts.network.start(handler)?;
    let applied = parts
        .restore_on_start
        .as_ref()
        .map_or(0, |s| s.info().meta.last_index);
    if let Some(reader) = &parts.restore_on_start {
        applier.submit(ApplyJob::Restore(Arc::clone(reader)), &events_tx);
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
        events_tx,
        threads: storage_thread.into_iter().chain(applier_thread).collect(),
        observed,
        applied,
        waiting_results: WaitingResults::new(result_timeout),
        now: std::time::Duration::ZERO,
        reads: HashMap::new(),
        next_read: 0,
        reads_waiting_apply: Vec::new(),
        snapshot_started: None,
        chunks,
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
    /// Where inline workers report (threads hold clones).
    events_tx: mpsc::UnboundedSender<WorkerEvent>,
    threads: Vec<JoinHandle<()>>,
    observed: watch::Sender<Observed>,
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
}

impl Node {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut inbound: mpsc::Receiver<Message>,
        mut events: mpsc::UnboundedReceiver<WorkerEvent>,
    ) {
        let interval = self.core.config().options.nominal_tick_interval;
        let mut ticker = tokio::time::interval(interval);
        // Missed ticks are not fired in a burst: followers count ticks to refuse votes, and
        // a burst would shorten their patience below the leader's lease.
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut stop_reply = None;
        loop {
            let input = tokio::select! {
                cmd = commands.recv() => Input::Command(cmd),
                Some(m) = inbound.recv() => Input::Message(m),
                Some(ev) = events.recv() => Input::Worker(ev),
                _ = ticker.tick(), if !self.external_ticks => Input::Tick,
            };
            // Read the clock after the wait, so the lease is judged at the time of the input.
            self.now = self.clock.now();
            self.core.set_now(self.now);
            match input {
                Input::Command(Some(Command::Stop { reply })) => {
                    stop_reply = Some(reply);
                    break;
                }
                Input::Command(Some(cmd)) => self.handle_command(cmd),
                Input::Command(None) => break,
                Input::Message(m) => {
                    self.core.step(m);
                    // Drain what else arrived, so one Ready carries the whole batch.
                    while let Ok(m) = inbound.try_recv() {
                        self.core.step(m);
                    }
                }
                Input::Worker(ev) => {
                    if let Err(e) = self.handle_event(ev) {
                        tracing::error!(error = %e, "node stops after a fatal error");
                        break;
                    }
                }
                Input::Tick => self.tick(),
            }
            while let Ok(cmd) = commands.try_recv() {
                match cmd {
                    Command::Stop { reply } => {
                        stop_reply = Some(reply);
                        break;
                    }
                    cmd => self.handle_command(cmd),
                }
            }
            if let Err(e) = self.settle(&mut events) {
                tracing::error!(error = %e, "node stops after a fatal error");
                break;
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

    fn handle_command(&mut self, cmd: Command) {
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
                self.tick();
            }
            Command::Status { reply } => {
                let mut status = self.core.status();
                status.last_applied = self.applied;
                let _ = reply.send(status);
            }
            Command::Stop { .. } => {}
        }
    }

    /// One tick of logical time; on the leader, reports how far each follower lags (once
    /// per tick, so the cost does not grow with traffic).
    fn tick(&mut self) {
        self.core.tick();
        // Once per tick, so a proposer waits at most one tick longer than
        // `apply_entry_timeout`; a timer per proposal would cost more than the proposal.
        self.waiting_results.expire(self.now);
        if self.core.role() == Role::Leader {
            let last = self.core.last_index();
            for (peer, matched) in self.core.peer_match_indexes() {
                self.metrics
                    .observe_peer_lag(peer, matched, last.saturating_sub(matched));
            }
        }
    }

    fn handle_event(&mut self, ev: WorkerEvent) -> Result<()> {
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
                // Before the write's `Persisted`: entries after the snapshot are handed to
                // the applier only after this restore.
                self.chunks.set_reader(Arc::clone(&reader));
                self.send_to_applier(ApplyJob::Restore(reader));
            }
            WorkerEvent::SnapshotFailed(reason) => {
                tracing::warn!(%reason, "snapshot failed; another is taken later");
                self.snapshot_started = None;
                self.core.on_snapshot_failed();
            }
            WorkerEvent::StorageFailed(e) => return Err(Error::Storage(e)),
            WorkerEvent::ApplierFailed(e) => return Err(Error::NotFound(e.to_string())),
        }
        Ok(())
    }

    /// Carries out every `Ready` and handles the completions already reported, round after
    /// round: inline workers report at once, so one input usually settles here without
    /// another trip through `select!`. Bounded, so that a stream of completions from the
    /// worker threads cannot starve commands and peer messages.
    fn settle(&mut self, events: &mut mpsc::UnboundedReceiver<WorkerEvent>) -> Result<()> {
        const MAX_ROUNDS: usize = 16;
        for _ in 0..MAX_ROUNDS {
            self.drain_ready();
            let mut handled = false;
            while let Ok(ev) = events.try_recv() {
                self.handle_event(ev)?;
                handled = true;
            }
            if !handled {
                break;
            }
        }
        self.drain_ready();
        Ok(())
    }

    /// Carries out every `Ready` the core has.
    fn drain_ready(&mut self) {
        while self.core.has_ready() {
            let rd = self.core.ready();
            self.carry_out(rd);
        }
    }

    fn carry_out(&mut self, rd: Ready) {
        for e in &rd.elections {
            self.metrics.observe_election_start(e.term, e.reason);
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
        // `rd.snapshot` (a received snapshot to restore) is carried out when storage
        // reports the write that installs it (`WorkerEvent::SnapshotInstalled`).
        if !rd.committed_entries.is_empty() {
            if let Some(last) = rd.committed_entries.last() {
                self.metrics.observe_commit_index(last.index);
            }
            self.send_to_applier(ApplyJob::Apply(rd.committed_entries));
        }
        if rd.snapshot_request.is_some() {
            // Storage makes a temp file to write into; the applier streams the state
            // machine into it (`WorkerEvent::SnapshotWriter`).
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
            w.submit(job, &self.events_tx, inline_if_idle);
        }
    }

    fn send_to_applier(&mut self, job: ApplyJob) {
        if let Some(w) = &mut self.applier {
            w.submit(job, &self.events_tx);
        }
    }

    /// Graceful stop: pending proposals and reads fail with `ShuttingDown`, queued writes
    /// and applications finish, the threads end (dropping the storage releases its
    /// directory lock), and the transport stops.
    async fn shutdown(mut self, mut events: mpsc::UnboundedReceiver<WorkerEvent>) {
        self.network.stop();
        self.waiting_results.fail_all(|| Error::ShuttingDown);
        for (_, (reply, _)) in self.reads.drain() {
            let _ = reply.send(Err(Error::ShuttingDown));
        }
        for (_, reply, _) in self.reads_waiting_apply.drain(..) {
            let _ = reply.send(Err(Error::ShuttingDown));
        }
        // Closing the job channels lets each worker finish its queue and exit; inline
        // storage is dropped here, releasing its directory.
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
