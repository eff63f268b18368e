//! [`Raft`]: the cheap, cloneable handle applications use (the original's `Raft`
//! interface).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};

use std::collections::BTreeSet;
use std::time::Duration;

use crate::core::Commands;
use crate::error::{Error, Result};
use crate::membership::{Membership, MembershipError, NodeInfo};
use crate::message::Message;
use crate::node::{self, Change, Command, Observed, Parts, ProposeReply, ResultReply};
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
    membership: watch::Sender<Arc<Membership>>,
}

struct Inner {
    id: NodeId,
    commands: mpsc::Sender<Command>,
    /// A `Tick` is queued and not yet taken; see [`Raft::tick`].
    tick_queued: Arc<AtomicBool>,
    rpc: RpcHandler,
    observed: watch::Receiver<Observed>,
    membership: watch::Receiver<Arc<Membership>>,
    /// One tick and the election timeout, for the waits of membership calls.
    tick: Duration,
    election_timeout: Duration,
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
        let (membership_tx, membership) = watch::channel(Arc::new(parts.core.membership().clone()));
        let options = &parts.core.config().options;
        let tick = options.nominal_tick_interval;
        let election_timeout = tick.saturating_mul(options.election_tick_count);
        let members = parts.core.membership().members();
        let (rpc, inbound) =
            RpcHandler::new(id.clone(), members, INBOUND_CAPACITY, parts.metrics.clone());
        let tick_queued = Arc::new(AtomicBool::new(false));
        let unstarted = Unstarted {
            parts,
            commands: commands_rx,
            tick_queued: tick_queued.clone(),
            inbound,
            observed: observed_tx,
            membership: membership_tx,
        };
        Raft {
            inner: Arc::new(Inner {
                id,
                commands,
                tick_queued,
                rpc,
                observed,
                membership,
                tick,
                election_timeout,
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
        node::spawn(
            u.parts,
            (u.commands, u.tick_queued),
            inbound,
            u.observed,
            u.membership,
        )
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

    /// The configuration in effect on this node: the latest in its log, committed or not
    /// (see [`RaftStatus::membership_committed`]), with each member's address and
    /// metadata. A node that is joining and has not heard from the cluster yet has an
    /// empty one.
    ///
    /// Like [`Raft::get_state`], it is read without asking the event loop: it changes
    /// when the node carries out the change (and updates its inbound check and
    /// transport), so it may trail [`Raft::status`], which asks the loop, by one turn
    /// of it.
    pub fn membership(&self) -> Arc<Membership> {
        self.inner.membership.borrow().clone()
    }

    /// Watches the configuration in effect (as [`Raft::membership`] reads it); the
    /// receiver always sees the latest one.
    pub fn membership_channel(&self) -> watch::Receiver<Arc<Membership>> {
        self.inner.membership.clone()
    }

    /// Watches whether a member told this node that it was removed from the cluster:
    /// `Some(member)` once one refused this node's messages because the configuration it
    /// holds retires this node's id (reported by transports that can answer, such as the
    /// gRPC transport). A removed node is otherwise never told — the leader stops
    /// replicating to it — so an application should stop it when this fires: its id can
    /// never be a member again.
    pub fn removed_channel(&self) -> watch::Receiver<Option<NodeId>> {
        self.inner.rpc.removed_channel()
    }

    async fn change(&self, change: Change) -> Result<Arc<Membership>> {
        self.ask(|reply| Command::ChangeMembership { change, reply })
            .await?
    }

    /// Adds node `id` as a learner: it receives the log (by snapshot first, if the log
    /// was compacted) but never votes. `info` is its peer address, or a [`NodeInfo`] with
    /// metadata too; the configuration carries both to every member, whose transports
    /// then reach it. Returns once the configuration that adds it has committed.
    ///
    /// Adding a learner again with the same info changes nothing; with other info it
    /// updates the info. Fails with [`Error::NotLeader`] off the leader,
    /// [`MembershipError::ChangePending`] while another change is under way,
    /// [`MembershipError::TermNotCommitted`] right after an election (retry shortly),
    /// [`MembershipError::AlreadyVoter`], [`MembershipError::Retired`] for the id of a
    /// removed node (ids are never reused), [`Error::TransferInProgress`], and
    /// [`Error::LeadershipLost`] or [`Error::Timeout`] when the outcome is unknown.
    pub async fn add_learner(
        &self,
        id: impl Into<NodeId>,
        info: impl Into<NodeInfo>,
    ) -> Result<Arc<Membership>> {
        self.change(Change::AddLearner {
            id: id.into(),
            info: info.into(),
        })
        .await
    }

    /// Makes learner `id` a voter, through the joint configuration; returns once the
    /// final configuration has committed. The learner must have caught up (its log within
    /// `max_promotion_lag` entries of the leader's), else [`MembershipError::NotCaughtUp`];
    /// [`Raft::add_voter`] waits for that. Refused with
    /// [`MembershipError::WouldLoseQuorum`] when the current or the new voters lack a
    /// quorum that the leader heard from within an election timeout, unless `force`.
    /// Other errors as for [`Raft::add_learner`]; a voter already is a no-op.
    pub async fn promote(&self, id: impl Into<NodeId>, force: bool) -> Result<Arc<Membership>> {
        self.change(Change::Promote {
            id: id.into(),
            force,
        })
        .await
    }

    /// Adds node `id` as a voter the safe way: as a learner first (unless it is one),
    /// then, once it has caught up, promotes it. Waits at most `catch_up` for the catch-up
    /// (then [`MembershipError::NotCaughtUp`]; the node stays a learner).
    pub async fn add_voter(
        &self,
        id: impl Into<NodeId>,
        info: impl Into<NodeInfo>,
        catch_up: Duration,
    ) -> Result<Arc<Membership>> {
        let id = id.into();
        let info = info.into();
        let current = self.membership();
        if !current.is_voter(&id)
            && (!current.contains(&id) || current.nodes.get(&id) != Some(&info))
        {
            self.add_learner(id.clone(), info).await?;
        }
        let deadline = tokio::time::Instant::now() + catch_up;
        loop {
            match self.promote(id.clone(), false).await {
                Err(Error::Membership(MembershipError::NotCaughtUp { .. }))
                    if tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(self.inner.tick).await;
                }
                outcome => return outcome,
            }
        }
    }

    /// Removes node `id`, voter or learner; returns once the configuration without it has
    /// committed (a voter leaves through the joint configuration). Removing the leader
    /// itself works: it leads until the change commits, then steps down and the others
    /// elect a leader. The id is retired: it can never be a member again. Refused with
    /// [`MembershipError::WouldLoseQuorum`] as for [`Raft::promote`] unless `force`;
    /// [`MembershipError::UnknownNode`] for a node that is not a member (removing one
    /// already removed is a no-op).
    pub async fn remove_member(
        &self,
        id: impl Into<NodeId>,
        force: bool,
    ) -> Result<Arc<Membership>> {
        self.change(Change::Remove {
            id: id.into(),
            force,
        })
        .await
    }

    /// Replaces the address and metadata of members (a server publishing its client
    /// address, a member that moved to another peer address); voters and learners stay as
    /// they are, so no joint phase is needed. Returns once the configuration carrying the
    /// new info has committed; a no-op if nothing differs. Fails with
    /// [`MembershipError::UnknownNode`] for a non-member, otherwise as
    /// [`Raft::add_learner`].
    pub async fn update_member_info(
        &self,
        nodes: impl IntoIterator<Item = (NodeId, NodeInfo)>,
    ) -> Result<Arc<Membership>> {
        self.change(Change::SetInfo {
            nodes: nodes.into_iter().collect(),
        })
        .await
    }

    /// Sets the configuration to exactly `voters` and `learners` (members must have been
    /// added with their address before, with [`Raft::add_learner`], for a transport that
    /// dials peers to reach them); returns once the final configuration has committed.
    /// New voters must have caught up; the quorum check of [`Raft::promote`] applies
    /// unless `force`.
    pub async fn change_membership(
        &self,
        voters: impl IntoIterator<Item = NodeId>,
        learners: impl IntoIterator<Item = NodeId>,
        force: bool,
    ) -> Result<Arc<Membership>> {
        self.change(Change::Set {
            voters: voters.into_iter().collect::<BTreeSet<_>>(),
            learners: learners.into_iter().collect::<BTreeSet<_>>(),
            force,
        })
        .await
    }

    /// Hands leadership from this node (the leader) to voter `to`, or with `None` to the
    /// most up-to-date voter it heard from recently, and returns the new leader once this
    /// node knows it. No election timeout passes: the target is caught up and told to
    /// campaign at once, so clients see a pause of about one round trip plus an fsync.
    /// Proposals are refused ([`Error::TransferInProgress`]) meanwhile.
    ///
    /// Fails with [`Error::NotLeader`], [`MembershipError::BadTransferTarget`] (a learner,
    /// this node, or no other voter), [`MembershipError::UnknownNode`], and
    /// [`Error::Timeout`] if no other leader emerged within two election timeouts (the
    /// transfer was abandoned after one; this node may still lead).
    pub async fn transfer_leader(&self, to: Option<NodeId>) -> Result<NodeId> {
        let mut observed = self.inner.observed.clone();
        let term = observed.borrow().term;
        self.ask(|reply| Command::TransferLeader { to, reply })
            .await??;
        let me = self.inner.id.clone();
        let wait = async move {
            let o = observed
                .wait_for(|o| o.term > term && o.leader.as_ref().is_some_and(|l| *l != me))
                .await
                .map_err(|_| Error::ShuttingDown)?;
            o.leader.clone().ok_or(Error::Timeout)
        };
        tokio::time::timeout(self.inner.election_timeout * 2, wait)
            .await
            .map_err(|_| Error::Timeout)?
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
