//! A small in-memory cluster of cores: a message queue that can be delivered, dropped,
//! reordered or cut per link, storage that persists every write at once (unless told to
//! hold writes), and a record of what each node applied.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;

use crate::config::Config;
use crate::core::{InitialState, RaftCore, SnapshotLog, SnapshotWrite, WriteBatch};
use crate::message::{Message, MessageBody};
use crate::rand::SeededRand;
use crate::types::{
    Entry, EntryKind, HardState, Index, NodeId, PeerConfig, Role, Snapshot, SnapshotInfo, Term,
};

/// The harness's state machine is the list of applied commands; a snapshot stores it one
/// command per line.
pub fn encode_applied(applied: &[Entry]) -> Bytes {
    let lines: Vec<&[u8]> = applied.iter().map(|e| e.data.as_ref()).collect();
    Bytes::from(lines.join(&b'\n'))
}

pub fn decode_applied(data: &[u8]) -> Vec<Entry> {
    if data.is_empty() {
        return Vec::new();
    }
    data.split(|b| *b == b'\n')
        .map(|line| Entry::normal(0, 0, Bytes::copy_from_slice(line)))
        .collect()
}

pub fn id(i: usize) -> NodeId {
    NodeId::from(format!("n{i}"))
}

pub fn config(n: usize, me: usize) -> Config {
    let peers = (1..=n)
        .map(|i| PeerConfig {
            id: id(i),
            address: format!("127.0.0.1:{}", 9000 + i),
        })
        .collect();
    Config::new(id(me), peers)
}

/// Entries with the given terms at indices 1, 2, ...
pub fn entries_with_terms(terms: &[Term]) -> Vec<Entry> {
    terms
        .iter()
        .enumerate()
        .map(|(i, t)| Entry::normal(i as u64 + 1, *t, format!("{i}")))
        .collect()
}

pub struct Node {
    pub core: RaftCore,
    /// What storage holds durably: the log and hard state as written.
    pub stored_log: Vec<Entry>,
    pub stored_hard_state: HardState,
    pub stored_snapshot: Option<Snapshot>,
    /// The snapshot being received: what storage's temp file holds (lost on a crash).
    pub receiving: Option<(crate::types::SnapshotMeta, Vec<u8>)>,
    /// A received snapshot to restore once the write installing it is done.
    pub restore: Option<SnapshotInfo>,
    /// Write batches not yet made durable (only when `hold_writes` is set).
    pub pending_writes: VecDeque<WriteBatch>,
    pub hold_writes: bool,
    /// Snapshots requested are built but only reported with `finish_snapshot`.
    pub defer_snapshots: bool,
    /// This node's monotonic clock, advanced one interval per tick.
    pub clock: std::time::Duration,
    /// Reads answered and failed, in order.
    pub read_states: Vec<crate::core::ReadState>,
    pub failed_reads: Vec<(u64, crate::core::ReadFailure)>,
    pub deferred_snapshot: Option<Snapshot>,
    /// Normal entries applied, in order.
    pub applied: Vec<Entry>,
    /// Size of every batch of committed entries handed out.
    pub apply_batches: Vec<usize>,
    /// Campaigns the node reported starting, in order.
    pub elections: Vec<crate::core::ElectionStart>,
    /// Every snapshot chunk the core asked to send, as it asked (without bytes).
    pub chunks: Vec<crate::core::SnapshotChunk>,
}

impl Node {
    /// A node that stored what is given and has done nothing else yet.
    fn new(
        core: RaftCore,
        stored_log: Vec<Entry>,
        stored_hard_state: HardState,
        stored_snapshot: Option<Snapshot>,
    ) -> Self {
        Node {
            core,
            stored_log,
            stored_hard_state,
            stored_snapshot,
            receiving: None,
            restore: None,
            pending_writes: VecDeque::new(),
            hold_writes: false,
            defer_snapshots: false,
            clock: std::time::Duration::ZERO,
            read_states: Vec::new(),
            failed_reads: Vec::new(),
            deferred_snapshot: None,
            applied: Vec::new(),
            apply_batches: Vec::new(),
            elections: Vec::new(),
            chunks: Vec::new(),
        }
    }
}

pub struct Cluster {
    pub nodes: BTreeMap<NodeId, Node>,
    /// Messages sent and not yet delivered.
    pub queue: VecDeque<Message>,
    /// Directed links that drop everything.
    pub cut: BTreeSet<(NodeId, NodeId)>,
    /// Every message ever sent, for assertions on traffic.
    pub sent: Vec<Message>,
    /// When set, `process` describes every `Ready` it drains here, one line per item
    /// (see `trace.rs`), so golden-file traces see exactly what the cores produced.
    pub trace: Option<Vec<String>>,
}

impl Cluster {
    /// `n` nodes with default configuration, election timeouts drawn from `seed`.
    pub fn new(n: usize, seed: u64) -> Self {
        Self::with(n, seed, |_| {}, |_| InitialState::default())
    }

    /// `n` nodes; `tune` adjusts each config, `initial` gives each node's recovered state.
    pub fn with(
        n: usize,
        seed: u64,
        tune: impl Fn(&mut Config),
        initial: impl Fn(usize) -> InitialState,
    ) -> Self {
        Self::with_snapshots(n, seed, tune, |i| (initial(i), None))
    }

    /// [`Cluster::with`], where each node may also start from a stored snapshot (its
    /// info goes into the initial state).
    pub fn with_snapshots(
        n: usize,
        seed: u64,
        tune: impl Fn(&mut Config),
        initial: impl Fn(usize) -> (InitialState, Option<Snapshot>),
    ) -> Self {
        let mut nodes = BTreeMap::new();
        for i in 1..=n {
            let mut c = config(n, i);
            tune(&mut c);
            let (mut init, stored_snapshot) = initial(i);
            init.snapshot = stored_snapshot.as_ref().map(SnapshotInfo::of);
            let stored_log = init.entries.clone();
            let stored_hard_state = init.hard_state.clone();
            let mut core =
                RaftCore::new(c, init, Box::new(SeededRand::new(seed * 1000 + i as u64)))
                    .expect("valid config");
            // These clusters start mid-history by construction; tests of the restart
            // guard build their cores directly.
            core.skip_restart_vote_guard();
            core.set_now(std::time::Duration::ZERO);
            nodes.insert(
                id(i),
                Node::new(core, stored_log, stored_hard_state, stored_snapshot),
            );
        }
        Cluster {
            nodes,
            queue: VecDeque::new(),
            cut: BTreeSet::new(),
            sent: Vec::new(),
            trace: None,
        }
    }

    /// Adds node `i` as a joining node: empty storage and no peers (it learns the
    /// membership from a leader). `tune` adjusts its config.
    pub fn join(&mut self, i: usize, seed: u64, tune: impl Fn(&mut Config)) {
        let mut c = Config::new(id(i), Vec::new());
        tune(&mut c);
        let mut core = RaftCore::new(c, InitialState::default(), Box::new(SeededRand::new(seed)))
            .expect("valid config");
        core.set_now(std::time::Duration::ZERO);
        let node = Node::new(core, Vec::new(), HardState::default(), None);
        self.nodes.insert(id(i), node);
    }

    pub fn node(&self, i: usize) -> &RaftCore {
        &self.nodes[&id(i)].core
    }

    pub fn node_mut(&mut self, i: usize) -> &mut Node {
        self.nodes.get_mut(&id(i)).expect("node exists")
    }

    /// Drains a node's Ready: persists (or holds) its write, queues its messages, applies.
    pub fn process(&mut self, who: &NodeId) {
        loop {
            let node = self.nodes.get_mut(who).expect("node exists");
            if !node.core.has_ready() {
                break;
            }
            let rd = node.core.ready();
            if let Some(trace) = self.trace.as_mut() {
                trace.extend(super::trace::describe_ready(&node.core, &rd));
            }
            if let Some(info) = &rd.snapshot {
                // Restored once the write installing it is done (`flush_writes`).
                node.restore = Some(info.clone());
            }
            if let Some(w) = rd.write {
                node.pending_writes.push_back(w);
            }
            if !node.hold_writes {
                Self::flush_writes(node);
            }
            // Chunks are read from the stored snapshot; one of a snapshot no longer stored
            // is dropped, as the runtime does.
            node.chunks.extend(rd.snapshot_chunks.iter().cloned());
            let chunks: Vec<Message> = rd
                .snapshot_chunks
                .into_iter()
                .filter_map(|c| {
                    let (meta, offset) = c.source()?;
                    let stored = node.stored_snapshot.as_ref().filter(|s| s.meta == *meta)?;
                    let data = stored
                        .data
                        .slice(offset as usize..(offset + c.len) as usize);
                    Some(c.fill(data))
                })
                .collect();
            for m in rd.messages.into_iter().chain(chunks) {
                self.sent.push(m.clone());
                self.queue.push_back(m);
            }
            let node = self.nodes.get_mut(who).expect("node exists");
            node.elections.extend(rd.elections);
            node.read_states.extend(rd.read_states);
            node.failed_reads.extend(rd.failed_reads);
            if let Some(upto) = rd.compact_to {
                node.stored_log.retain(|e| e.index > upto);
            }
            if !rd.committed_entries.is_empty() {
                node.apply_batches.push(rd.committed_entries.len());
                let last = rd.committed_entries.last().map(|e| e.index).unwrap_or(0);
                node.applied.extend(
                    rd.committed_entries
                        .into_iter()
                        .filter(|e| e.kind == EntryKind::Normal),
                );
                node.core.on_applied(last);
            }
            if rd.snapshot_request.is_some() {
                let applied = node.core.applied_index();
                let meta = node
                    .core
                    .snapshot_meta_at(applied)
                    .expect("applied entry is in the log");
                let snap = Snapshot {
                    meta,
                    data: encode_applied(&node.applied),
                };
                if node.defer_snapshots {
                    node.deferred_snapshot = Some(snap);
                } else {
                    node.core.on_snapshot_built(SnapshotInfo::of(&snap));
                    node.stored_snapshot = Some(snap);
                }
            }
        }
    }

    /// Asks node `i` for a read with id `ctx`.
    pub fn read(&mut self, i: usize, ctx: u64) {
        self.node_mut(i)
            .core
            .read_index(ctx)
            .expect("read accepted");
        self.process(&id(i));
    }

    /// Completes node `i`'s deferred snapshot: it becomes durable and is reported built.
    pub fn finish_snapshot(&mut self, i: usize) {
        let node = self.node_mut(i);
        if let Some(snap) = node.deferred_snapshot.take() {
            node.core.on_snapshot_built(SnapshotInfo::of(&snap));
            node.stored_snapshot = Some(snap);
        }
        self.process(&id(i));
    }

    /// Crashes node `i` (held writes are lost) and restarts it from what it stored; its
    /// state machine is restored from its stored snapshot.
    pub fn restart(&mut self, i: usize, seed: u64) {
        let node = self.node_mut(i);
        node.pending_writes.clear();
        node.deferred_snapshot = None;
        node.receiving = None;
        node.restore = None;
        let initial = InitialState {
            hard_state: node.stored_hard_state.clone(),
            snapshot: node.stored_snapshot.as_ref().map(SnapshotInfo::of),
            entries: node.stored_log.clone(),
        };
        let cfg = node.core.config().clone();
        node.applied = node
            .stored_snapshot
            .as_ref()
            .map(|s| decode_applied(&s.data))
            .unwrap_or_default();
        node.core =
            RaftCore::new(cfg, initial, Box::new(SeededRand::new(seed))).expect("valid config");
    }

    fn flush_writes(node: &mut Node) {
        while let Some(w) = node.pending_writes.pop_front() {
            for write in &w.snapshot {
                Self::write_snapshot(node, write);
            }
            if let Some(hs) = &w.hard_state {
                node.stored_hard_state = hs.clone();
            }
            if let Some(from) = w.log.truncate_from {
                node.stored_log.retain(|e| e.index < from);
            }
            if let Some(first) = w.log.entries.first() {
                // Storage refuses appends that do not follow its last index.
                let last = node.stored_log.last().map_or(0, |e| e.index).max(
                    node.stored_snapshot
                        .as_ref()
                        .map_or(0, |s| s.meta.last_index),
                );
                assert_eq!(
                    first.index,
                    last + 1,
                    "append does not follow the stored log"
                );
            }
            node.stored_log.extend(w.log.entries.iter().cloned());
            node.core.on_persisted(w.seq);
        }
    }

    /// Storage's side of a received snapshot: chunks in order into the temp file, then an
    /// install that follows the core's decision on the log (refusing to keep a log that
    /// does not hold the snapshot's last entry, as FileStorage and MemStorage do) and, once
    /// done, the restore of the state machine.
    fn write_snapshot(node: &mut Node, write: &SnapshotWrite) {
        match write {
            SnapshotWrite::Chunk { meta, offset, data } => {
                if *offset == 0 {
                    node.receiving = Some((meta.clone(), Vec::new()));
                }
                let (m, buf) = node.receiving.as_mut().expect("a chunk after offset 0");
                assert_eq!(m, meta, "chunk of another snapshot");
                assert_eq!(*offset, buf.len() as u64, "chunk out of order");
                buf.extend_from_slice(data);
            }
            SnapshotWrite::Install { info, log } => {
                let (meta, data) = node.receiving.take().expect("install of a received one");
                let snap = Snapshot {
                    meta,
                    data: Bytes::from(data),
                };
                assert_eq!(
                    &SnapshotInfo::of(&snap),
                    info,
                    "installed what was received"
                );
                let (i, t) = (info.meta.last_index, info.meta.last_term);
                let holds = node.stored_log.iter().any(|e| e.index == i && e.term == t);
                match log {
                    SnapshotLog::Keep => {
                        assert!(holds, "told to keep a log that does not hold ({i}, {t})");
                        node.stored_log.retain(|e| e.index > i);
                    }
                    SnapshotLog::Discard => node.stored_log.clear(),
                }
                if node.restore.as_ref() == Some(info) {
                    node.restore = None;
                    node.applied = decode_applied(&snap.data);
                    node.core.on_applied(i);
                }
                node.stored_snapshot = Some(snap);
            }
        }
    }

    /// Makes every held write of node `i` durable.
    pub fn persist(&mut self, i: usize) {
        let node = self.node_mut(i);
        Self::flush_writes(node);
        self.process(&id(i));
    }

    pub fn process_all(&mut self) {
        let ids: Vec<NodeId> = self.nodes.keys().cloned().collect();
        for who in ids {
            self.process(&who);
        }
    }

    /// One tick of node `i`; its clock advances by the nominal tick interval.
    pub fn tick(&mut self, i: usize) {
        Self::advance(self.node_mut(i));
        self.process(&id(i));
    }

    fn advance(node: &mut Node) {
        node.clock += node.core.config().options.nominal_tick_interval;
        node.core.set_now(node.clock);
        node.core.tick();
    }

    pub fn tick_all(&mut self) {
        let ids: Vec<NodeId> = self.nodes.keys().cloned().collect();
        for who in ids {
            Self::advance(self.nodes.get_mut(&who).expect("node exists"));
            self.process(&who);
        }
    }

    /// Ticks node `i` until it leaves the follower role (its election timeout expired).
    pub fn expire_election_timeout(&mut self, i: usize) {
        for _ in 0..1000 {
            if self.node(i).role() != Role::Follower {
                return;
            }
            self.tick(i);
        }
        panic!("node {i} never started an election");
    }

    /// Delivers one queued message (the oldest); returns false when the queue is empty.
    pub fn deliver_one(&mut self) -> bool {
        let Some(m) = self.queue.pop_front() else {
            return false;
        };
        self.deliver(m);
        true
    }

    /// Delivers `m` unless its link is cut.
    pub fn deliver(&mut self, m: Message) {
        if self.cut.contains(&(m.from.clone(), m.to.clone())) {
            return;
        }
        let to = m.to.clone();
        if let Some(node) = self.nodes.get_mut(&to) {
            node.core.step(m);
            self.process(&to);
        }
    }

    /// Delivers messages until none are left (each delivery may produce more).
    pub fn deliver_all(&mut self) {
        self.process_all();
        for _ in 0..100_000 {
            if !self.deliver_one() {
                return;
            }
        }
        panic!("message storm: the queue never drained");
    }

    /// Removes and returns the queued messages matching `pred`.
    pub fn take(&mut self, pred: impl Fn(&Message) -> bool) -> Vec<Message> {
        let (taken, kept): (Vec<_>, Vec<_>) = self.queue.drain(..).partition(|m| pred(m));
        self.queue = kept.into();
        taken
    }

    /// Cuts both directions between `a` and `b`.
    pub fn partition(&mut self, a: usize, b: usize) {
        self.cut.insert((id(a), id(b)));
        self.cut.insert((id(b), id(a)));
    }

    /// Isolates node `a` from everyone.
    pub fn isolate(&mut self, a: usize) {
        for b in 1..=self.nodes.len() {
            if a != b {
                self.partition(a, b);
            }
        }
    }

    pub fn heal(&mut self) {
        self.cut.clear();
    }

    /// Runs an election for node `i` with every link working, until it leads.
    pub fn elect(&mut self, i: usize) {
        self.expire_election_timeout(i);
        self.deliver_all();
        assert_eq!(
            self.node(i).role(),
            Role::Leader,
            "node {i} failed to win an election"
        );
    }

    /// Elects node `i` while holding back every AppendEntries: it leads, but its no-op
    /// has not committed (the held messages stay queued).
    pub fn elect_without_commit(&mut self, i: usize) {
        self.expire_election_timeout(i);
        loop {
            let other = self.take(|m| m.kind() != "AppendEntries");
            if other.is_empty() {
                break;
            }
            for m in other {
                self.deliver(m);
            }
        }
        assert_eq!(self.node(i).role(), Role::Leader);
    }

    /// Ticks every node and delivers until one of `among` leads (vote guards make the
    /// others wait an election timeout after they last heard from a leader); returns it.
    pub fn await_leader(&mut self, among: &[usize]) -> usize {
        for _ in 0..500 {
            if let Some(&l) = among.iter().find(|&&i| self.node(i).role() == Role::Leader) {
                return l;
            }
            self.tick_all();
            self.deliver_all();
        }
        panic!("none of {among:?} was elected");
    }

    pub fn propose(&mut self, i: usize, data: &str) -> (Index, Term) {
        let r = self
            .node_mut(i)
            .core
            .propose(vec![Bytes::copy_from_slice(data.as_bytes())])
            .expect("proposal accepted");
        self.process(&id(i));
        r
    }

    pub fn leaders(&self) -> Vec<NodeId> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.core.role() == Role::Leader)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// The commands node `i` applied, as strings.
    pub fn applied(&self, i: usize) -> Vec<String> {
        self.nodes[&id(i)]
            .applied
            .iter()
            .map(|e| String::from_utf8_lossy(&e.data).into_owned())
            .collect()
    }

    /// (index, term) of every entry in node `i`'s in-memory log.
    pub fn log_terms(&self, i: usize) -> Vec<Term> {
        let core = self.node(i);
        (1..=core.last_index())
            .map(|idx| core.term_at(idx).expect("entry held"))
            .collect()
    }

    /// (index, term) of the entries of node `i`'s log after its snapshot.
    pub fn log_tail(&self, i: usize) -> Vec<(Index, Term)> {
        let core = self.node(i);
        ((core.snapshot_index() + 1)..=core.last_index())
            .map(|idx| (idx, core.term_at(idx).expect("entry held")))
            .collect()
    }

    /// Count of sent messages of the given kind.
    pub fn count_sent(&self, kind: &str) -> usize {
        self.sent.iter().filter(|m| m.kind() == kind).count()
    }
}

/// Whether `m` is of the variant `pat`.
pub fn is_kind(m: &Message, kind: &str) -> bool {
    m.kind() == kind
}

/// A message `from` → `to` in `term` with `body`.
pub fn msg(from: usize, to: usize, term: Term, body: MessageBody) -> Message {
    Message {
        from: id(from),
        to: id(to),
        term,
        body,
    }
}

// Helpers for the flow-control, persistence, PreVote / CheckQuorum and proposal tests.
impl Cluster {
    /// Delivers queued messages until none are left, setting aside (not delivering) those
    /// `hold` matches; returns them in the order they were sent. Dropping them models a
    /// lost message; delivering them later models a delayed one.
    pub fn deliver_all_except(&mut self, hold: impl Fn(&Message) -> bool) -> Vec<Message> {
        self.process_all();
        let mut held = Vec::new();
        for _ in 0..100_000 {
            let Some(m) = self.queue.pop_front() else {
                return held;
            };
            if hold(&m) {
                held.push(m);
            } else {
                self.deliver(m);
            }
        }
        panic!("message storm: the queue never drained");
    }

    /// Ticks node `i` `n` times, processing after each tick.
    pub fn tick_n(&mut self, i: usize, n: u32) {
        for _ in 0..n {
            self.tick(i);
        }
    }

    /// Ticks leader `i` until it sends a heartbeat (`heartbeat_tick_count` ticks), then
    /// delivers every queued message.
    pub fn heartbeat_round(&mut self, i: usize) {
        let n = self.node(i).config().options.heartbeat_tick_count;
        self.tick_n(i, n);
        self.deliver_all();
    }

    /// Proposes `commands` as one batch on node `i` and processes its Ready.
    pub fn try_propose(
        &mut self,
        i: usize,
        commands: &[&str],
    ) -> crate::error::Result<(Index, Term)> {
        let batch: Vec<Bytes> = commands
            .iter()
            .map(|c| Bytes::copy_from_slice(c.as_bytes()))
            .collect();
        let r = self.node_mut(i).core.propose(batch);
        self.process(&id(i));
        r
    }

    /// Leader `leader`'s view of follower `follower` (panics if `leader` does not lead).
    pub fn progress(&self, leader: usize, follower: usize) -> crate::types::PeerReplicationState {
        self.node(leader)
            .status()
            .replication
            .remove(&id(follower))
            .expect("leader tracks the follower")
    }

    /// Every AppendEntries ever sent to node `to`, in send order.
    pub fn appends_sent_to(&self, to: usize) -> Vec<crate::message::AppendEntries> {
        self.sent
            .iter()
            .filter(|m| m.to == id(to))
            .filter_map(|m| match &m.body {
                MessageBody::AppendEntries(a) => Some(a.clone()),
                _ => None,
            })
            .collect()
    }

    /// Every AppendEntriesResponse ever sent by node `from`, in send order.
    pub fn append_responses_from(&self, from: usize) -> Vec<crate::message::AppendEntriesResponse> {
        self.sent
            .iter()
            .filter(|m| m.from == id(from))
            .filter_map(|m| match &m.body {
                MessageBody::AppendEntriesResponse(r) => Some(r.clone()),
                _ => None,
            })
            .collect()
    }

    /// Whether the queue holds a message of `kind` from `from` to `to`.
    pub fn queued(&self, from: usize, to: usize, kind: &str) -> bool {
        self.queue
            .iter()
            .any(|m| m.from == id(from) && m.to == id(to) && m.kind() == kind)
    }
}
