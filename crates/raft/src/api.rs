//! [`Raft`]: the cheap, cloneable handle applications use (the original's `Raft`
//! interface).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};

use crate::core::Commands;
use crate::error::{Error, Result};
use crate::message::Message;
use crate::node::{self, Command, Observed, Parts, ProposeReply, ResultReply};
use crate::rpc::RpcHandler;
use crate::types::{ApplyMsg, Index, NodeId, RaftStatus, Role, Term};

/// Inbound peer messages queued before the node's event loop takes them.
const INBOUND_CAPACITY: usize = 4096;

/// Parts waiting for `start`.
struct Unstarted {
    parts: Parts,
    commands: mpsc::Receiver<Command>,
    tick_queued: Arc<AtomicBool>,
    inbound: mpsc::Receiver<Message>,
    observed: watch::Sender<Observed>,
}

struct Inner {
    id: NodeId,
    commands: mpsc::Sender<Command>,
    /// A `Tick` is queued and not yet taken; see [`Raft::tick`].
    tick_queued: Arc<AtomicBool>,
    rpc: RpcHandler,
    observed: watch::Receiver<Observed>,
    unstarted: Mutex<Option<Unstarted>>,
    apply_rx: Mutex<Option<mpsc::Receiver<ApplyMsg>>>,
}

/// A handle to a Raft node. Clones share the node. Build one with
/// [`RaftBuilder`](crate::RaftBuilder), then [`Raft::start`] it inside a tokio runtime.
#[derive(Clone)]
pub struct Raft {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Raft {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Raft")
            .field("id", &self.inner.id)
            .finish_non_exhaustive()
    }
}

impl Raft {
    pub(crate) fn new(
        id: NodeId,
        parts: Parts,
        apply_rx: Option<mpsc::Receiver<ApplyMsg>>,
    ) -> Self {
        let (commands, commands_rx) = mpsc::channel(4096);
        let (observed_tx, observed) = watch::channel(Observed::default());
        let members = parts.core.config().peers.iter().map(|p| p.id.clone());
        let (rpc, inbound) =
            RpcHandler::new(id.clone(), members, INBOUND_CAPACITY, parts.metrics.clone());
        let tick_queued = Arc::new(AtomicBool::new(false));
        let unstarted = Unstarted {
            parts,
            commands: commands_rx,
            tick_queued: tick_queued.clone(),
            inbound,
            observed: observed_tx,
        };
        Raft {
            inner: Arc::new(Inner {
                id,
                commands,
                tick_queued,
                rpc,
                observed,
                unstarted: Mutex::new(Some(unstarted)),
                apply_rx: Mutex::new(apply_rx),
            }),
        }
    }

    /// This node's id.
    pub fn id(&self) -> &NodeId {
        &self.inner.id
    }

    /// Starts the node on the current tokio runtime: its event loop, its storage and
    /// applier threads, and its transport. Fails with [`Error::AlreadyStarted`] the second
    /// time.
    pub fn start(&self) -> Result<()> {
        let taken = self
            .inner
            .unstarted
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let Some(u) = taken else {
            return Err(Error::AlreadyStarted { what: "node" });
        };
        let inbound = (self.inner.rpc.clone(), u.inbound);
        node::spawn(u.parts, (u.commands, u.tick_queued), inbound, u.observed)
    }

    /// The entrance for inbound peer RPCs, for a transport of your own: deliver every
    /// message a peer sends to this node through it. (A [`NetworkManager`] gets the same
    /// handler in [`NetworkManager::start`].) Messages delivered before
    /// [`Raft::start`] wait in the node's queue; after [`Raft::stop`] delivery fails with
    /// [`Error::ShuttingDown`].
    ///
    /// [`NetworkManager`]: crate::NetworkManager
    /// [`NetworkManager::start`]: crate::NetworkManager::start
    pub fn rpc_handler(&self) -> RpcHandler {
        self.inner.rpc.clone()
    }

    /// Stops the node gracefully: in-flight writes and applications finish, pending
    /// proposals and reads fail with [`Error::ShuttingDown`], the data directory is
    /// released. Returns once all of that is done.
    pub async fn stop(&self) {
        let (reply, done) = oneshot::channel();
        if self
            .inner
            .commands
            .send(Command::Stop { reply })
            .await
            .is_ok()
        {
            let _ = done.await;
        }
    }

    /// Advances the node's logical clock by one tick, for nodes built with
    /// [`RaftBuilder::with_external_ticks`](crate::RaftBuilder::with_external_ticks). Tick
    /// every `nominal_tick_interval`: the leader lease assumes it.
    ///
    /// Ticks given while the node is busy count once: at most one is queued. A node that
    /// stalled must not take a burst of ticks when it resumes, since followers count ticks
    /// to refuse votes and a burst would end their patience early, below the leader's
    /// lease (the built-in ticker skips missed ticks for the same reason).
    pub fn tick(&self) {
        let flag = &self.inner.tick_queued;
        if !flag.swap(true, Ordering::AcqRel)
            && self.inner.commands.try_send(Command::Tick).is_err()
        {
            flag.store(false, Ordering::Release);
        }
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T> {
        let (reply, rx) = oneshot::channel();
        // `try_send` first: with room in the queue (the common case) it skips building
        // and polling the permit future; tokio's semaphore never lets it jump callers
        // already waiting for room.
        match self.inner.commands.try_send(make(reply)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(command)) => self
                .inner
                .commands
                .send(command)
                .await
                .map_err(|_| Error::ShuttingDown)?,
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(Error::ShuttingDown),
        }
        rx.await.map_err(|_| Error::ShuttingDown)
    }

    /// Proposes a command. On the leader it is appended to the log and its index and term
    /// are returned (it is not committed yet); elsewhere it fails with
    /// [`Error::NotLeader`] naming the leader. A leader whose followers or state machine
    /// are too far behind refuses it at once with [`Error::Overloaded`] (nothing was
    /// appended: retry later).
    pub async fn propose(&self, command: impl Into<Bytes>) -> Result<(Index, Term)> {
        let data = command.into();
        self.ask(|reply| Command::Propose {
            data: Commands::One(data),
            reply: ProposeReply::Appended(reply),
        })
        .await?
    }

    /// Proposes a command and waits until the application applied it; returns what the
    /// [`Applier`](crate::Applier) returned ([`Error::Applier`] if it returned an error).
    /// Fails as [`Raft::propose`] does before anything is appended; afterwards with
    /// [`Error::LeadershipLost`] as soon as the leader steps down before the entry
    /// committed, or if another entry took its place, and with [`Error::Timeout`] once
    /// `apply_entry_timeout` has passed since it was appended (checked every tick). After
    /// `LeadershipLost` and `Timeout` the outcome is unknown: the entry may still commit
    /// under the next leader, so retry only idempotently. An entry that committed before
    /// the step-down is still answered with its result.
    pub async fn propose_and_wait(&self, command: impl Into<Bytes>) -> Result<Bytes> {
        let data = command.into();
        self.ask(|reply| Command::Propose {
            data: Commands::One(data),
            reply: ProposeReply::Applied(ResultReply::One(reply)),
        })
        .await?
    }

    /// Proposes several commands at once and waits until the application applied them
    /// all: they take consecutive log indices in one term, so either all of them are
    /// appended or none is, and the call costs one round through the node instead of one
    /// per command. Returns the [`Applier`](crate::Applier)'s answer to each, in order.
    /// Fails as [`Raft::propose_and_wait`] does, for the whole batch; a batch whose total
    /// size exceeds `max_uncommitted_bytes` (or `max_unapplied_bytes`) is refused with
    /// [`Error::Overloaded`] unless nothing else is pending.
    pub async fn propose_batch_and_wait(
        &self,
        commands: impl IntoIterator<Item = impl Into<Bytes>>,
    ) -> Result<Vec<Result<Bytes>>> {
        let data: Vec<Bytes> = commands.into_iter().map(Into::into).collect();
        if data.is_empty() {
            return Ok(Vec::new());
        }
        self.ask(|reply| Command::Propose {
            data: Commands::Many(data),
            reply: ProposeReply::Applied(ResultReply::Many(reply)),
        })
        .await?
    }

    /// A linearizable read: returns an index once this node's state machine has applied
    /// it and no write that completed before the call is missing from it. Read the
    /// application's state after this returns. Works on followers (they ask the leader).
    /// Fails at once with [`Error::Overloaded`] while `max_pending_reads` reads wait on
    /// this node.
    pub async fn read_index(&self) -> Result<Index> {
        self.ask(|reply| Command::ReadIndex { reply }).await?
    }

    /// A report of the node's state.
    pub async fn status(&self) -> Result<RaftStatus> {
        self.ask(|reply| Command::Status { reply }).await
    }

    /// The current term and whether this node believes it is the leader.
    pub fn get_state(&self) -> (Term, bool) {
        let o = self.inner.observed.borrow();
        (o.term, o.role == Role::Leader)
    }

    /// The leader this node knows of.
    pub fn leader(&self) -> Option<NodeId> {
        self.inner.observed.borrow().leader.clone()
    }

    /// Watches role, term and leader; the receiver always sees the latest value.
    pub fn leader_change_channel(&self) -> watch::Receiver<Observed> {
        self.inner.observed.clone()
    }

    /// Every applied command and installed snapshot, in order, if the node was built with
    /// [`RaftBuilder::with_apply_channel`](crate::RaftBuilder::with_apply_channel). A slow
    /// reader slows application (backpressure); nothing is dropped. Returns `None` after
    /// the first call.
    pub fn apply_channel(&self) -> Option<mpsc::Receiver<ApplyMsg>> {
        self.inner
            .apply_rx
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}
