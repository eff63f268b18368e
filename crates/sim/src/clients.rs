//! Simulated clients: each issues put / get / compare-and-set / append / delete operations
//! one at a time through the node it believes leads, follows redirects, gives up after a
//! timeout, and records every operation with its invoke and completion times. An
//! operation whose outcome the client cannot know (timeout, crash of the node it waited
//! on) is recorded as *uncertain*.
//!
//! An operation is complete when the node that accepted it applies the entry it was
//! given, at the index and term it was given. If that node applies a different entry at
//! that index, the operation definitely failed (an index holds one committed entry, and
//! entries never move), so it is left out of the history.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use raftlock_raft::{Entry, EntryKind, Error, Index, Rand, Term};

use crate::invariants::Violation;
use crate::kv::Command;
use crate::linearizability::{self, CheckOptions, CheckResult, KvOp, KvOutcome, Operation};
use crate::world::{Event, World, TICK_MS};

/// A client gives up on an operation after this long (20 election timeouts) unless the
/// plan sets a shorter timeout.
pub const CLIENT_TIMEOUT_MS: u64 = 2_000;
/// Clients stop invoking new operations this long before the end of the run, so every
/// operation invoked after healing has time to complete.
const QUIET_BEFORE_END_MS: u64 = CLIENT_TIMEOUT_MS;

#[derive(Debug)]
struct Pending {
    op_id: u64,
    cmd: Command,
    invoke: u64,
    /// Where the operation was accepted: (node, incarnation, index, term).
    placed: Option<(usize, u64, Index, Term)>,
    /// How a Get is served.
    via: ReadVia,
    /// A read accepted by a node: (node, incarnation, read index once known).
    read: Option<(usize, u64, Option<Index>)>,
    /// The node it waited on was removed from the cluster (or wiped): its outcome is
    /// unknown through no fault of liveness.
    decommissioned: bool,
}

/// How a client's Get is served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReadVia {
    /// Through the log, like a write.
    Log,
    /// ReadIndex (or the lease) on the node the client believes leads.
    Leader,
    /// ReadIndex through a random node, which asks the leader.
    AnyNode,
}

#[derive(Debug)]
struct Client {
    /// The node this client believes leads.
    target: usize,
    pending: Option<Pending>,
}

/// All clients and the history they recorded.
#[derive(Debug)]
pub struct Clients {
    clients: Vec<Client>,
    keys: usize,
    next_op: u64,
    history: Vec<Operation>,
    /// Indices at which each operation was applied, on any node.
    applied_at: BTreeMap<u64, BTreeSet<Index>>,
    /// Operations the client saw succeed.
    acked: Vec<u64>,
    /// Operations invoked after healing that did not complete (liveness).
    stuck_after_heal: Vec<String>,
}

impl Clients {
    /// `n` clients over `keys` keys in a cluster of `nodes` nodes.
    /// Clients start spread over the first `nodes` slots (the initial voters).
    pub fn new(n: usize, keys: usize, nodes: usize) -> Self {
        Clients {
            clients: (0..n)
                .map(|c| Client {
                    target: c % nodes,
                    pending: None,
                })
                .collect(),
            keys: keys.max(1),
            next_op: 1,
            history: Vec::new(),
            applied_at: BTreeMap::new(),
            acked: Vec::new(),
            stuck_after_heal: Vec::new(),
        }
    }

    /// Operations that completed.
    pub fn ops_ok(&self) -> u64 {
        self.history
            .iter()
            .filter(|o| matches!(o.outcome, KvOutcome::Ok(_)))
            .count() as u64
    }

    /// Operations recorded as uncertain.
    pub fn ops_uncertain(&self) -> u64 {
        self.history
            .iter()
            .filter(|o| o.outcome == KvOutcome::Uncertain)
            .count() as u64
    }

    /// The history recorded so far.
    pub fn history(&self) -> &[Operation] {
        &self.history
    }
}

impl World {
    /// Client `c` invokes a new operation.
    pub(crate) fn client_issue(&mut self, c: usize) -> Result<(), Violation> {
        if self.clients.clients[c].pending.is_some()
            || self.now + QUIET_BEFORE_END_MS > self.end_time()
        {
            return Ok(());
        }
        let op_id = self.clients.next_op;
        self.clients.next_op += 1;
        let key = format!("k{}", self.rng.gen_range(0, self.clients.keys as u64));
        let value = format!("v{op_id}");
        let op = match self.rng.gen_range(0, 10) {
            0..=2 => KvOp::Put { value },
            3..=5 => KvOp::Get,
            6 => KvOp::Cas {
                from: None,
                to: value,
            },
            7 => {
                // Compare against a value a recent operation wrote, so some swaps succeed.
                let back = self.rng.gen_range(1, 10);
                KvOp::Cas {
                    from: Some(format!("v{}", op_id.saturating_sub(back))),
                    to: value,
                }
            }
            8 => KvOp::Append {
                suffix: format!("a{op_id}"),
            },
            _ => KvOp::Delete,
        };
        let via = match (&op, self.plan.read_index, self.rng.gen_range(0, 3)) {
            (KvOp::Get, true, 0) => ReadVia::Leader,
            (KvOp::Get, true, 1) => ReadVia::AnyNode,
            _ => ReadVia::Log,
        };
        // Like a load balancer, clients sometimes start at any node.
        if via == ReadVia::AnyNode || self.rng.gen_range(0, 4) == 0 {
            self.clients.clients[c].target = self.random_target();
        }
        let cmd = Command { op_id, key, op };
        self.clients.clients[c].pending = Some(Pending {
            op_id,
            cmd,
            invoke: self.now,
            placed: None,
            via,
            read: None,
            decommissioned: false,
        });
        let timeout = self.plan.client_timeout_ms;
        self.schedule(timeout, Event::ClientTimeout { client: c, op_id });
        self.client_submit(c, op_id)
    }

    /// Client `c` sends its pending operation to the node it believes leads.
    pub(crate) fn client_submit(&mut self, c: usize, op_id: u64) -> Result<(), Violation> {
        let Some(p) = &self.clients.clients[c].pending else {
            return Ok(());
        };
        if p.op_id != op_id || p.placed.is_some() || p.read.is_some() {
            return Ok(());
        }
        if p.via != ReadVia::Log {
            return self.client_read(c, op_id);
        }
        let data = Bytes::from(p.cmd.encode());
        let target = self.client_target(c);
        self.sync_clock(target);
        let node = &mut self.nodes[target];
        let result = match node.core.as_mut() {
            Some(core) if !node.paused => Some(core.propose(vec![data])),
            _ => None, // connection refused or no answer: try another node
        };
        match result {
            Some(Ok((index, term))) => {
                let incarnation = self.nodes[target].incarnation;
                self.trace(|| {
                    format!(
                        "client {c} op {op_id} accepted by n{target} at index {index}, term {term}"
                    )
                });
                if let Some(p) = self.clients.clients[c].pending.as_mut() {
                    p.placed = Some((target, incarnation, index, term));
                }
                self.process(target)?;
            }
            Some(Err(Error::NotLeader { leader: Some(l) })) => {
                self.clients.clients[c].target = self.follow_hint(&l);
                self.schedule(1, Event::ClientRetry { client: c, op_id });
            }
            Some(Err(Error::Overloaded { .. })) => {
                self.schedule(TICK_MS, Event::ClientRetry { client: c, op_id });
            }
            _ => {
                self.clients.clients[c].target = self.random_target();
                self.schedule(TICK_MS, Event::ClientRetry { client: c, op_id });
            }
        }
        Ok(())
    }

    /// Client `c` asks a node for a linearizable read (ReadIndex, follower read or lease).
    fn client_read(&mut self, c: usize, op_id: u64) -> Result<(), Violation> {
        let target = self.client_target(c);
        let via = self.clients.clients[c].pending.as_ref().map(|p| p.via);
        self.sync_clock(target);
        let node = &mut self.nodes[target];
        let result = match node.core.as_mut() {
            Some(core) if !node.paused => Some(core.read_index(op_id)),
            _ => None,
        };
        match result {
            Some(Ok(())) => {
                let incarnation = self.nodes[target].incarnation;
                if let Some(p) = self.clients.clients[c].pending.as_mut() {
                    p.read = Some((target, incarnation, None));
                }
                self.process(target)?;
            }
            Some(Err(Error::NotLeader { leader: Some(l) })) if via == Some(ReadVia::Leader) => {
                self.clients.clients[c].target = self.follow_hint(&l);
                self.schedule(1, Event::ClientRetry { client: c, op_id });
            }
            _ => {
                self.clients.clients[c].target = self.random_target();
                self.schedule(TICK_MS, Event::ClientRetry { client: c, op_id });
            }
        }
        Ok(())
    }

    /// Node `i` answered reads: record their indices, retry the failed ones.
    pub(crate) fn reads_answered(
        &mut self,
        i: usize,
        states: &[raftlock_raft::ReadState],
        failed: &[(u64, raftlock_raft::ReadFailure)],
    ) {
        let incarnation = self.nodes[i].incarnation;
        for c in 0..self.clients.clients.len() {
            let Some(p) = self.clients.clients[c].pending.as_mut() else {
                continue;
            };
            let Some((node, inc, None)) = p.read else {
                continue;
            };
            if (node, inc) != (i, incarnation) {
                continue;
            }
            if let Some(rs) = states.iter().find(|rs| rs.ctx == p.op_id) {
                p.read = Some((node, inc, Some(rs.index)));
            } else if let Some((_, f)) = failed.iter().find(|(ctx, _)| *ctx == p.op_id) {
                // A failed read had no effect: try again, following the leader hint.
                p.read = None;
                let op_id = p.op_id;
                if let raftlock_raft::ReadFailure::NotLeader { leader: Some(l) } = f {
                    let l = l.clone();
                    self.clients.clients[c].target = self.follow_hint(&l);
                }
                self.schedule(TICK_MS, Event::ClientRetry { client: c, op_id });
            }
        }
    }

    /// Completes the reads on node `i` whose index its state machine has reached.
    pub(crate) fn complete_reads(&mut self, i: usize, applied: Index) {
        let incarnation = self.nodes[i].incarnation;
        for c in 0..self.clients.clients.len() {
            let ready = self.clients.clients[c].pending.as_ref().is_some_and(|p| {
                matches!(p.read, Some((node, inc, Some(index))) if (node, inc) == (i, incarnation) && index <= applied)
            });
            if !ready {
                continue;
            }
            if let Some(p) = self.clients.clients[c].pending.take() {
                let value = self.nodes[i].kv.read(&p.cmd.key);
                let (op_id, key) = (p.op_id, p.cmd.key.clone());
                self.trace(|| {
                    format!(
                        "client {c} op {op_id} read {key} at n{i} (applied {applied}) -> {value:?}"
                    )
                });
                self.settle(
                    c,
                    p,
                    KvOutcome::Ok(crate::linearizability::KvResult::Value(value)),
                );
            }
        }
    }

    /// Client `c` gives up waiting for `op_id`.
    pub(crate) fn client_timeout(&mut self, c: usize, op_id: u64) {
        let client = &mut self.clients.clients[c];
        if client.pending.as_ref().is_none_or(|p| p.op_id != op_id) {
            return;
        }
        if let Some(p) = client.pending.take() {
            // The node did not answer: try another one next time.
            self.clients.clients[c].target = self.random_target();
            self.settle(c, p, KvOutcome::Uncertain);
        }
    }

    /// Node `i` crashed: clients waiting on it lose their connection.
    pub(crate) fn clients_lose_node(&mut self, i: usize) {
        for c in 0..self.clients.clients.len() {
            let waiting = self.clients.clients[c].pending.as_ref().is_some_and(|p| {
                p.placed.is_some_and(|(node, ..)| node == i)
                    || p.read.is_some_and(|(node, ..)| node == i)
            });
            if waiting {
                if let Some(p) = self.clients.clients[c].pending.take() {
                    self.settle(c, p, KvOutcome::Uncertain);
                }
            }
        }
    }

    /// Node `i` was removed from the cluster (or wiped): clients waiting on it lose their
    /// connection, and those operations are not held against liveness.
    pub(crate) fn clients_node_removed(&mut self, i: usize) {
        for client in self.clients.clients.iter_mut() {
            if let Some(p) = client.pending.as_mut() {
                let waiting = p.placed.is_some_and(|(node, ..)| node == i)
                    || p.read.is_some_and(|(node, ..)| node == i);
                p.decommissioned |= waiting;
            }
        }
        self.clients_lose_node(i);
    }

    /// The slot a leader hint names, or a random member when no slot runs under that id
    /// any more.
    fn follow_hint(&mut self, leader: &raftlock_raft::NodeId) -> usize {
        match self.index_of(leader) {
            Some(i) => i,
            None => self.random_target(),
        }
    }

    /// The node client `c` sends to: its current target, unless the latest committed
    /// configuration removed it (a load balancer stops routing to a decommissioned node;
    /// one that was removed stops receiving the log and would hold reads forever), in
    /// which case a random member.
    fn client_target(&mut self, c: usize) -> usize {
        let target = self.clients.clients[c].target;
        if self.removed_ids.contains(&self.ids[target]) {
            let next = self.random_target();
            self.clients.clients[c].target = next;
            return next;
        }
        target
    }

    /// Applies a committed entry to node `i`'s state machine and completes the client
    /// operation waiting for it there.
    pub(crate) fn apply_to_kv(&mut self, i: usize, e: &Entry) -> Result<(), Violation> {
        // A no-op can take the index an operation was accepted at, too.
        let applied = if e.kind == EntryKind::Normal {
            let Some(cmd) = Command::decode(&e.data) else {
                return Err(Violation(format!(
                    "node {i} applied an undecodable entry at {}",
                    e.index
                )));
            };
            let result = self.nodes[i].kv.apply(&cmd);
            self.clients
                .applied_at
                .entry(cmd.op_id)
                .or_default()
                .insert(e.index);
            Some((cmd.op_id, result))
        } else {
            None
        };
        let incarnation = self.nodes[i].incarnation;
        for c in 0..self.clients.clients.len() {
            let Some(p) = &self.clients.clients[c].pending else {
                continue;
            };
            let Some((node, inc, index, term)) = p.placed else {
                continue;
            };
            if (node, inc, index) != (i, incarnation, e.index) {
                continue;
            }
            let Some(p) = self.clients.clients[c].pending.take() else {
                continue;
            };
            match &applied {
                Some((op_id, result)) if e.term == term && *op_id == p.op_id => {
                    self.settle(c, p, KvOutcome::Ok(result.clone()));
                }
                _ => {
                    // Another entry took the index: this operation can never be applied.
                    let op_id = p.op_id;
                    self.trace(|| {
                        format!("op {op_id} failed: index {index} went to another entry")
                    });
                    let think = self.rng.gen_range(0, 20);
                    self.schedule(think, Event::ClientIssue(c));
                }
            }
        }
        Ok(())
    }

    /// Node `i` replaced its state machine with a snapshot up to `index`: operations
    /// waiting there for an entry at or below it will never see their entry applied one by
    /// one, so their outcome is unknown.
    ///
    /// Unless the entry committed at that index is known and of another term: then the
    /// operation's entry was overwritten and definitely failed, as when another entry is
    /// applied at its index (a stale leader that accepted it learns of its successor by
    /// the snapshot). Found by seed 1249 (3 nodes, crashes): an operation invoked as the
    /// network healed went to a leader unpaused at that moment.
    pub(crate) fn clients_skip_to(&mut self, i: usize, index: Index) {
        for c in 0..self.clients.clients.len() {
            let placed = self.clients.clients[c]
                .pending
                .as_ref()
                .and_then(|p| p.placed)
                .filter(|&(node, _, at, _)| node == i && at <= index);
            let Some((_, _, at, term)) = placed else {
                continue;
            };
            let Some(p) = self.clients.clients[c].pending.take() else {
                continue;
            };
            if self.inv.committed_term(at).is_some_and(|t| t != term) {
                let op_id = p.op_id;
                self.trace(|| format!("op {op_id} failed: index {at} went to another entry"));
                let think = self.rng.gen_range(0, 20);
                self.schedule(think, Event::ClientIssue(c));
            } else {
                self.settle(c, p, KvOutcome::Uncertain);
            }
        }
    }

    /// Records the outcome of an operation and lets the client move on.
    fn settle(&mut self, c: usize, p: Pending, outcome: KvOutcome) {
        if p.placed.is_none() && p.read.is_none() {
            // Every attempt was refused before reaching a log: nothing can have happened.
            let think = self.rng.gen_range(0, 20);
            self.schedule(think, Event::ClientIssue(c));
            return;
        }
        // Liveness is only asked of clients patient enough to outlast an election.
        let patient = self.plan.client_timeout_ms >= CLIENT_TIMEOUT_MS;
        if outcome == KvOutcome::Uncertain
            && !p.decommissioned
            && patient
            && self.healed
            && p.invoke >= self.liveness_from()
        {
            self.clients.stuck_after_heal.push(format!(
                "op {} of client {c} invoked at {}ms",
                p.op_id, p.invoke
            ));
        }
        self.trace(|| format!("client {c} op {} {:?} -> {outcome:?}", p.op_id, p.cmd.op));
        if matches!(outcome, KvOutcome::Ok(_)) && p.placed.is_some() {
            // Went through the log (reads served by ReadIndex are not log entries).
            self.clients.acked.push(p.op_id);
        }
        self.clients.history.push(Operation {
            client: c as u64,
            key: p.cmd.key,
            op: p.cmd.op,
            invoke: p.invoke,
            complete: self.now,
            outcome,
        });
        let think = self.rng.gen_range(0, 20);
        self.schedule(think, Event::ClientIssue(c));
    }

    /// Operations invoked from this time on must complete. With PreVote on, that is the
    /// moment the network heals. Without it, a node that campaigned alone through the
    /// partition comes back with a higher term and deposes the leader once (thesis §9.6,
    /// the disruption PreVote exists to prevent): an operation in flight then may be lost
    /// with that leader's uncommitted entries, and its client gives up. Old and new vote
    /// guard alike fail seeds 4169 (7 nodes) and 12803 (5 nodes) of `LeaseNoPreVote` that
    /// way. The check then starts once that disruption is over: an election timeout for
    /// the leader to hear of the term, another for the guards, one election.
    fn liveness_from(&self) -> u64 {
        let disruption = if self.plan.pre_vote { 0 } else { 1_000 };
        self.cfg.fault_ms + disruption
    }

    /// At the end: pending operations become uncertain; then liveness of clients after
    /// healing, exactly-once application, and linearizability of the history.
    pub(crate) fn finish_clients(&mut self) -> Result<(), Violation> {
        for c in 0..self.clients.clients.len() {
            if let Some(p) = self.clients.clients[c].pending.take() {
                let patient = self.plan.client_timeout_ms >= CLIENT_TIMEOUT_MS;
                if patient && p.invoke >= self.liveness_from() {
                    self.clients.stuck_after_heal.push(format!(
                        "op {} of client {c} invoked at {}ms",
                        p.op_id, p.invoke
                    ));
                }
                self.settle(c, p, KvOutcome::Uncertain);
            }
        }
        if let Some(first) = self.clients.stuck_after_heal.first() {
            return Err(Violation(format!(
                "liveness: {} operations invoked after healing did not complete within {CLIENT_TIMEOUT_MS}ms, e.g. {first}",
                self.clients.stuck_after_heal.len()
            )));
        }
        for (op_id, indices) in &self.clients.applied_at {
            if indices.len() > 1 {
                return Err(Violation(format!(
                    "exactly once: operation {op_id} was applied at indices {indices:?}"
                )));
            }
        }
        for op_id in &self.clients.acked {
            if self
                .clients
                .applied_at
                .get(op_id)
                .is_none_or(|s| s.len() != 1)
            {
                return Err(Violation(format!(
                    "exactly once: acknowledged operation {op_id} was never applied"
                )));
            }
        }
        match linearizability::check(&self.clients.history, &CheckOptions::default()) {
            CheckResult::Linearizable => Ok(()),
            CheckResult::Violation { key, explanation } => Err(Violation(format!(
                "linearizability violated on key {key}: {explanation}"
            ))),
            CheckResult::Unknown { key, reason } => Err(Violation(format!(
                "linearizability unknown on key {key} (treated as failure): {reason}"
            ))),
        }
    }
}
