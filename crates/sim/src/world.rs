//! The simulated world: N nodes running the real `RaftCore`, a simulated network and
//! disks, clients, virtual time, and a seeded schedule of faults. Single-threaded and
//! driven by one seed, so every run replays exactly.
//!
//! A run has two phases: faults for `fault_ms`, then a healed, calm network for
//! [`LIVENESS_BOUND_TICKS`] ticks in which every client operation must complete and every
//! node must converge. Safety invariants are checked after every event; the client
//! history is checked for linearizability at the end.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};

use raftlock_raft::{
    Config, Index, Membership, Message, NodeId, PeerConfig, RaftCore, Rand, Role, SeededRand, Term,
};

use crate::clients::Clients;
use crate::disk::SimDisk;
use crate::invariants::{entry_hash, Invariants, Violation};
use crate::kv::KvStore;
use crate::network::Network;
use crate::profile::{FaultKind, FaultPlan, Profile};

/// Whether the slot running under `id` durably holds entry (`index`, `term`) with payload
/// hash `h`.
fn disk_holds(
    nodes: &[SimNode],
    ids: &[NodeId],
    id: &NodeId,
    index: Index,
    term: Term,
    h: u64,
) -> bool {
    ids.iter().position(|x| x == id).is_some_and(|s| {
        nodes[s]
            .disk
            .durable
            .holds(index, term, |e| entry_hash(e) == h)
    })
}

/// The peer address every simulated member is configured with (the network is simulated).
pub(crate) const SIM_ADDRESS: &str = "127.0.0.1:1";

/// Virtual milliseconds per nominal tick.
pub const TICK_MS: u64 = 10;
/// After the fault period, a leader must be elected, every client operation must complete
/// and every node must have applied every committed entry within this many ticks
/// (30 election timeouts of 10 ticks).
pub const LIVENESS_BOUND_TICKS: u64 = 300;

/// Settings of one run.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// The seed everything is drawn from.
    pub seed: u64,
    /// Number of initial voters (the plan may add spare slots that join later).
    pub nodes: usize,
    /// Fault profile.
    pub profile: Profile,
    /// Virtual milliseconds of faults before the network heals.
    pub fault_ms: u64,
    /// Print every event.
    pub trace: bool,
}

/// Outcome of a run.
#[derive(Clone, Debug)]
pub struct RunReport {
    /// The violated invariant, if any.
    pub violation: Option<String>,
    /// Hash of the event trace (same seed, same hash).
    pub trace_hash: u64,
    /// Events processed.
    pub events: u64,
    /// Entries committed.
    pub committed: usize,
    /// Client operations that completed.
    pub ops_ok: u64,
    /// Client operations whose outcome stayed unknown (timeouts, crashes).
    pub ops_uncertain: u64,
}

#[derive(Debug)]
pub(crate) enum Event {
    /// A tick of one incarnation of a node (each boot starts its own chain of ticks).
    Tick {
        node: usize,
        incarnation: u64,
    },
    Deliver(Message),
    WriteDone {
        node: usize,
        incarnation: u64,
    },
    ClientIssue(usize),
    ClientRetry {
        client: usize,
        op_id: u64,
    },
    ClientTimeout {
        client: usize,
        op_id: u64,
    },
    Fault,
    Restart(usize),
    /// A node's snapshot became durable.
    SnapshotSaved {
        node: usize,
        incarnation: u64,
        snapshot: raftlock_raft::Snapshot,
    },
    /// Crash this incarnation of a node (if it is still running).
    Crash {
        node: usize,
        incarnation: u64,
    },
    Unpause(usize),
    Heal,
    /// Ask the leader for a membership change (or wipe a removed node).
    Reconfig,
}

struct Scheduled {
    time: u64,
    id: u64,
    event: Event,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.time, self.id) == (other.time, other.id)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.time, self.id).cmp(&(other.time, other.id))
    }
}

pub(crate) struct SimNode {
    pub(crate) core: Option<RaftCore>,
    pub(crate) disk: SimDisk,
    pub(crate) kv: KvStore,
    pub(crate) incarnation: u64,
    pub(crate) paused: bool,
    /// Tick period of this node (skewed around `TICK_MS`): its clock runs at
    /// `TICK_MS / tick_ms` of real speed.
    pub(crate) tick_ms: u64,
    /// The node's monotonic clock, in microseconds, and the virtual time it was read at.
    clock_us: u64,
    clock_read_at: u64,
    /// Time the disk finishes its last queued write (writes complete in order).
    pub(crate) disk_busy_until: u64,
    last_commit: u64,
    last_applied: u64,
    last_role: Role,
}

/// One simulated cluster.
pub struct World {
    pub(crate) cfg: RunConfig,
    pub(crate) plan: FaultPlan,
    pub(crate) rng: SeededRand,
    pub(crate) now: u64,
    next_id: u64,
    queue: BinaryHeap<Reverse<Scheduled>>,
    pub(crate) nodes: Vec<SimNode>,
    /// The id each slot runs under now (a wiped slot rejoins under a fresh id).
    pub(crate) ids: Vec<NodeId>,
    /// Whether a slot boots with the initial voters as its peers (a bootstrap node) or
    /// with none (a node that joins through a membership change).
    pub(crate) bootstrap: Vec<bool>,
    /// Number of the next fresh id (`n{k}`); ids are never reused.
    pub(crate) next_fresh: usize,
    /// The bootstrap configuration (every initial voter), and the empty one a joining
    /// node starts with.
    pub(crate) initial: Membership,
    empty: Membership,
    /// Ids removed by a committed configuration: never added again.
    pub(crate) removed_ids: BTreeSet<NodeId>,
    /// Index of the latest committed configuration the world reacted to.
    seen_config: Index,
    /// A slot whose incoming links all fail once it sends `TimeoutNow`
    /// (`ReconfigKind::TransferDeaf`).
    pub(crate) deafen_on_timeout_now: Option<usize>,
    pub(crate) network: Network,
    pub(crate) inv: Invariants,
    pub(crate) clients: Clients,
    trace_hash: u64,
    events: u64,
    pub(crate) healed: bool,
    stale_reads: bool,
    /// Tick periods (leader, others) set whenever a node becomes leader.
    adversarial_clocks: Option<(u64, u64)>,
    #[cfg(feature = "bug-injection")]
    bugs: raftlock_raft::core::InjectedBugs,
}

impl World {
    /// Builds the world for `cfg`.
    pub fn new(cfg: RunConfig) -> Self {
        Self::build(cfg, |_| {})
    }

    /// Builds a world whose clocks drift far beyond the configured bound (1%): every new
    /// leader's clock runs at a third of the others' speed. Lease reads of a cut-off old
    /// leader can then be stale, and the history check must notice (proof that it is not
    /// vacuous).
    pub fn with_drift_beyond_bound(cfg: RunConfig) -> Self {
        Self::with_adversarial_clocks(cfg, 15, 5, 1)
    }

    /// Builds a world where an adversary picks clock rates: each new leader ticks every
    /// `leader_tick_ms`, every other node every `other_tick_ms`, and the nodes are
    /// configured with a drift bound of `drift_bound_percent`. The lease and ReadIndex
    /// reads are on, and the old leader is cut off again and again, with contention on
    /// one key and clients that move on quickly.
    pub fn with_adversarial_clocks(
        cfg: RunConfig,
        leader_tick_ms: u64,
        other_tick_ms: u64,
        drift_bound_percent: u32,
    ) -> Self {
        let mut world = Self::build(cfg, |plan| {
            plan.tick_skew_pct = 0;
            plan.drift_bound_override = Some(drift_bound_percent);
            plan.lease = true;
            plan.read_index = true;
            plan.clients = 6;
            plan.keys = 1;
            plan.fault_kinds = vec![FaultKind::IsolateLeader, FaultKind::Heal];
            plan.fault_interval_ms = 300;
            plan.client_timeout_ms = 50;
            // The clock adversary targets the lease of a fixed cluster: a membership
            // change drops the lease (and a transfer stops lease reads), which would
            // blunt the attack this world exists to mount.
            plan.reconfig_interval_ms = 0;
            plan.reconfig_kinds.clear();
            plan.spare_slots = 0;
        });
        world.adversarial_clocks = Some((leader_tick_ms, other_tick_ms));
        world
    }

    /// Builds a world that hammers leadership transfers: about every 150 ms the leader
    /// is asked to hand over, and the moment it sends `TimeoutNow` every link into it
    /// fails (it still sends) until the next heal, 300 ms on average. Lease and ReadIndex
    /// reads are on, with six clients contending on one key that move on quickly. The
    /// deaf old leader never hears of its successor, so only the rule that a leader
    /// stops serving lease reads once it sent `TimeoutNow` keeps its reads fresh.
    pub fn with_deaf_transfers(cfg: RunConfig) -> Self {
        Self::build(cfg, |plan| {
            plan.lease = true;
            plan.read_index = true;
            plan.clients = 6;
            plan.keys = 1;
            plan.fault_kinds = vec![FaultKind::Heal];
            plan.fault_interval_ms = 300;
            plan.reconfig_kinds = vec![crate::profile::ReconfigKind::TransferDeaf];
            plan.reconfig_interval_ms = 150;
            plan.client_timeout_ms = 50;
        })
    }

    /// Turns on deliberate protocol bugs in every node of this world, now and after
    /// every restart (self-tests only).
    #[cfg(feature = "bug-injection")]
    pub fn inject_bugs(mut self, bugs: raftlock_raft::core::InjectedBugs) -> Self {
        self.bugs = bugs;
        for node in &mut self.nodes {
            if let Some(core) = node.core.as_mut() {
                core.inject_bugs(bugs);
            }
        }
        self
    }

    fn build(cfg: RunConfig, tweak: impl FnOnce(&mut FaultPlan)) -> Self {
        let mut rng = SeededRand::new(cfg.seed);
        let mut plan = FaultPlan::for_profile(cfg.profile, &mut rng);
        tweak(&mut plan);
        let initial_voters = cfg.nodes;
        let slots = cfg.nodes + plan.spare_slots;
        let ids: Vec<NodeId> = (0..slots).map(|i| NodeId::from(format!("n{i}"))).collect();
        let initial_peers: Vec<PeerConfig> = ids[..cfg.nodes]
            .iter()
            .map(|id| PeerConfig {
                id: id.clone(),
                address: SIM_ADDRESS.to_string(),
            })
            .collect();
        let initial = Membership::from_peers(&initial_peers);
        let mut inv = Invariants::default();
        inv.set_bootstrap(initial.clone());
        let nodes = (0..slots)
            .map(|_| {
                let skew = plan.tick_skew_pct;
                let tick_ms = TICK_MS * (100 + rng.gen_range(0, 2 * skew + 1) - skew) / 100;
                SimNode {
                    core: None,
                    disk: SimDisk::default(),
                    kv: KvStore::default(),
                    incarnation: 0,
                    paused: false,
                    tick_ms: tick_ms.max(1),
                    clock_us: 0,
                    clock_read_at: 0,
                    disk_busy_until: 0,
                    last_commit: 0,
                    last_applied: 0,
                    last_role: Role::Follower,
                }
            })
            .collect();
        let network = Network::new(plan.network.clone());
        let clients = Clients::new(plan.clients, plan.keys, cfg.nodes);
        let mut world = World {
            cfg,
            plan,
            rng,
            now: 0,
            next_id: 0,
            queue: BinaryHeap::new(),
            nodes,
            bootstrap: (0..slots).map(|i| i < initial_voters).collect(),
            next_fresh: slots,
            initial,
            empty: Membership::default(),
            removed_ids: BTreeSet::new(),
            seen_config: 0,
            deafen_on_timeout_now: None,
            ids,
            network,
            inv,
            clients,
            trace_hash: 0xcbf2_9ce4_8422_2325,
            events: 0,
            healed: false,
            stale_reads: false,
            adversarial_clocks: None,
            #[cfg(feature = "bug-injection")]
            bugs: Default::default(),
        };
        for i in 0..world.nodes.len() {
            world.boot(i);
        }
        for c in 0..world.plan.clients {
            world.schedule(1 + c as u64, Event::ClientIssue(c));
        }
        let first_fault = world.plan.fault_interval_ms;
        if first_fault > 0 {
            world.schedule(first_fault, Event::Fault);
        }
        let first_change = world.plan.reconfig_interval_ms;
        if first_change > 0 {
            world.schedule(first_change, Event::Reconfig);
        }
        world.schedule(world.cfg.fault_ms, Event::Heal);
        world
    }

    /// Builds the world with deliberate protocol bugs in every node (self-tests only).
    #[cfg(feature = "bug-injection")]
    pub fn with_bugs(cfg: RunConfig, bugs: raftlock_raft::core::InjectedBugs) -> Self {
        Self::new(cfg).inject_bugs(bugs)
    }

    /// Makes every node's state machine answer reads with the value before the latest
    /// write: a deliberate bug that only the history check can see (self-tests only).
    pub fn with_stale_reads(cfg: RunConfig) -> Self {
        let mut world = Self::new(cfg);
        world.stale_reads = true;
        for node in &mut world.nodes {
            node.kv = KvStore::with_stale_reads();
        }
        world
    }

    fn config_for(&self, i: usize) -> Config {
        // A spare or wiped slot has no peers: it joins, learning its configuration from
        // the leader's log or snapshot.
        // The bootstrap peers are the initial voters, not whatever ids their slots run
        // under now (a wiped slot's new id was never an initial voter).
        let peers = if self.bootstrap[i] {
            self.initial
                .voters
                .iter()
                .map(|id| PeerConfig {
                    id: id.clone(),
                    address: SIM_ADDRESS.to_string(),
                })
                .collect()
        } else {
            Vec::new()
        };
        let mut c = Config::new(self.ids[i].clone(), peers);
        // Ticks are TICK_MS of a node's own clock: the lease (measured with the clock) and
        // the election timeout (counted in ticks) must agree on the unit.
        c.options.nominal_tick_interval = std::time::Duration::from_millis(TICK_MS);
        c.tuning.max_inflight_msgs = self.plan.max_inflight;
        c.options.max_log_entries_per_request = self.plan.max_entries_per_request;
        // Bound the backlog a partition can build up, as a real deployment would, so that
        // catching up after healing fits the liveness bound.
        c.tuning.max_proposal_bytes = 1024;
        c.tuning.max_uncommitted_bytes = Some(16 * 1024);
        c.options.snapshot_threshold = self.plan.snapshot_threshold;
        c.options.log_compaction_min_entries = self.plan.log_compaction_min_entries;
        c.tuning.max_snapshot_chunk_size = self.plan.snapshot_chunk;
        c.feature_flags.enable_leader_lease = self.plan.lease;
        c.feature_flags.pre_vote_enabled = self.plan.pre_vote;
        // Two nodes' tick rates differ by up to about twice the per-node skew.
        c.options.max_clock_drift_percent = self
            .plan
            .drift_bound_override
            .unwrap_or(2 * self.plan.tick_skew_pct as u32 + 1);
        c
    }

    pub(crate) fn schedule(&mut self, after: u64, event: Event) {
        self.next_id += 1;
        self.queue.push(Reverse(Scheduled {
            time: self.now + after,
            id: self.next_id,
            event,
        }));
    }

    pub(crate) fn trace(&mut self, text: impl FnOnce() -> String) {
        if self.cfg.trace {
            println!("{:>8}ms {}", self.now, text());
        }
    }

    pub(crate) fn mix(&mut self, values: &[u64]) {
        for v in values {
            for b in v.to_le_bytes() {
                self.trace_hash ^= b as u64;
                self.trace_hash = self.trace_hash.wrapping_mul(0x0100_0000_01b3);
            }
        }
    }

    /// Advances node `i`'s local clock to now (at its own rate, even while it is paused or
    /// down: a monotonic clock keeps running) and hands the reading to its core.
    pub(crate) fn sync_clock(&mut self, i: usize) {
        let now = self.now;
        let node = &mut self.nodes[i];
        let elapsed_us = (now - node.clock_read_at) * 1000;
        node.clock_us += elapsed_us * TICK_MS / node.tick_ms;
        node.clock_read_at = now;
        let reading = std::time::Duration::from_micros(node.clock_us);
        if let Some(core) = node.core.as_mut() {
            core.set_now(reading);
        }
    }

    /// Starts (or restarts) node `i` from its durable state; its state machine is rebuilt
    /// by replaying the log as entries commit again.
    pub(crate) fn boot(&mut self, i: usize) {
        let initial = self.nodes[i].disk.recover();
        let seed = self.rng.next_u64();
        let config = self.config_for(i);
        let core = RaftCore::new(config, initial, Box::new(SeededRand::new(seed)));
        #[cfg(feature = "bug-injection")]
        let bugs = self.bugs;
        let node = &mut self.nodes[i];
        node.incarnation += 1;
        node.last_commit = 0;
        node.last_applied = 0;
        node.last_role = Role::Follower;
        node.paused = false;
        node.kv = if self.stale_reads {
            KvStore::with_stale_reads()
        } else {
            KvStore::default()
        };
        if let Some(snap) = &node.disk.durable.snapshot {
            if node.kv.restore(&snap.data).is_none() {
                panic!(
                    "node {i}: its own snapshot at {} is malformed",
                    snap.meta.last_index
                );
            }
            node.last_commit = snap.meta.last_index;
            node.last_applied = snap.meta.last_index;
        }
        match core {
            #[cfg(feature = "bug-injection")]
            Ok(mut core) => {
                core.inject_bugs(bugs);
                node.core = Some(core);
            }
            #[cfg(not(feature = "bug-injection"))]
            Ok(core) => node.core = Some(core),
            Err(e) => panic!("simulated config is invalid: {e}"),
        }
        self.sync_clock(i);
        let tick = self.nodes[i].tick_ms;
        let incarnation = self.nodes[i].incarnation;
        self.schedule(
            tick,
            Event::Tick {
                node: i,
                incarnation,
            },
        );
    }

    /// Time at which the run ends.
    pub(crate) fn end_time(&self) -> u64 {
        self.cfg.fault_ms + LIVENESS_BOUND_TICKS * TICK_MS
    }

    /// Runs to the end; returns the report.
    pub fn run(mut self) -> RunReport {
        let end = self.end_time();
        let mut violation = None;
        while let Some(Reverse(s)) = self.queue.pop() {
            if s.time > end {
                break;
            }
            self.now = s.time;
            self.events += 1;
            if let Err(v) = self.handle(s.event) {
                violation = Some(format!("at {}ms: {v}", self.now));
                break;
            }
        }
        if violation.is_none() {
            if let Err(v) = self.check_end() {
                violation = Some(format!("at the end ({}ms): {v}", self.now));
            }
        }
        RunReport {
            violation,
            trace_hash: self.trace_hash,
            events: self.events,
            committed: self.inv.committed_count(),
            ops_ok: self.clients.ops_ok(),
            ops_uncertain: self.clients.ops_uncertain(),
        }
    }

    fn handle(&mut self, event: Event) -> Result<(), Violation> {
        match event {
            Event::Tick {
                node: i,
                incarnation,
            } => {
                let node = &mut self.nodes[i];
                if node.core.is_none() || node.incarnation != incarnation {
                    // Crashed, or a tick of an earlier incarnation: each boot schedules
                    // its own ticks. (Before ticks carried the incarnation, a slot wiped
                    // and booted at once, or a node restarted within one tick period of
                    // its crash, kept both chains and ticked twice as fast: seed 3963 of
                    // reconfig, where that node's elections blocked the others for good.)
                    return Ok(());
                }
                let tick = node.tick_ms;
                let paused = node.paused;
                self.sync_clock(i);
                if !paused {
                    if let Some(core) = self.nodes[i].core.as_mut() {
                        core.tick();
                    }
                }
                self.mix(&[1, i as u64, self.now]);
                self.schedule(
                    tick,
                    Event::Tick {
                        node: i,
                        incarnation,
                    },
                );
                self.process(i)
            }
            Event::Deliver(m) => {
                // A message to an id no slot runs under any more (a wiped node) is lost.
                let Some(to) = self.index_of(&m.to) else {
                    return Ok(());
                };
                let from = self.index_of(&m.from).unwrap_or(usize::MAX);
                if self.nodes[to].paused {
                    // A paused process still has the message in its socket buffer.
                    self.schedule(TICK_MS, Event::Deliver(m));
                    return Ok(());
                }
                if self.nodes[to].core.is_none() {
                    return Ok(());
                }
                self.mix(&[2, from as u64, to as u64, m.term, self.now]);
                if self.cfg.trace {
                    let (now, kind) = (self.now, m.kind());
                    println!(
                        "{now:>8}ms deliver {} -> {} {kind} t{}",
                        m.from, m.to, m.term
                    );
                }
                self.sync_clock(to);
                if let Some(core) = self.nodes[to].core.as_mut() {
                    core.step(m);
                }
                self.process(to)
            }
            Event::WriteDone {
                node: i,
                incarnation,
            } => {
                let node = &mut self.nodes[i];
                if node.incarnation != incarnation || node.core.is_none() {
                    return Ok(());
                }
                if node.paused {
                    // The fsync finished, but the frozen process learns of it later.
                    self.schedule(
                        TICK_MS,
                        Event::WriteDone {
                            node: i,
                            incarnation,
                        },
                    );
                    return Ok(());
                }
                self.sync_clock(i);
                let node = &mut self.nodes[i];
                let done = node
                    .disk
                    .complete()
                    .map_err(|e| Violation(format!("node {i}'s disk: {e}")))?;
                if let Some((seq, installed)) = done {
                    if let Some(snap) = installed {
                        // A received snapshot is durable: the state machine is restored
                        // from it before the core hears of the write, as the runtime does.
                        self.restore_snapshot(i, &snap)?;
                    }
                    let node = &mut self.nodes[i];
                    if let Some(core) = node.core.as_mut() {
                        core.on_persisted(seq);
                    }
                    self.mix(&[3, i as u64, seq]);
                }
                self.process(i)
            }
            Event::ClientIssue(c) => self.client_issue(c),
            Event::ClientRetry { client, op_id } => self.client_submit(client, op_id),
            Event::ClientTimeout { client, op_id } => {
                self.client_timeout(client, op_id);
                Ok(())
            }
            Event::Fault => {
                if !self.healed {
                    self.inject_fault()?;
                    let mean = self.plan.fault_interval_ms;
                    let gap = self.rng.gen_range(mean / 2, mean * 3 / 2 + 1);
                    self.schedule(gap, Event::Fault);
                }
                Ok(())
            }
            Event::Restart(i) => {
                if self.nodes[i].core.is_none() {
                    self.trace(|| format!("restart n{i}"));
                    self.mix(&[4, i as u64]);
                    self.boot(i);
                }
                Ok(())
            }
            Event::SnapshotSaved {
                node: i,
                incarnation,
                snapshot,
            } => {
                let node = &mut self.nodes[i];
                if node.incarnation != incarnation {
                    return Ok(()); // crashed while saving: the previous snapshot stays
                }
                // A snapshot the node built covers applied, durable entries: the log keeps
                // them (a received snapshot that overtook it makes this one not newer,
                // and the build fails as in the runtime).
                let installed = node
                    .disk
                    .durable
                    .install(&snapshot, raftlock_raft::SnapshotLog::Keep)
                    .map_err(|e| Violation(format!("node {i}'s disk: {e}")))?;
                self.sync_clock(i);
                let node = &mut self.nodes[i];
                if let Some(core) = node.core.as_mut() {
                    if installed {
                        core.on_snapshot_built(raftlock_raft::SnapshotInfo::of(&snapshot));
                    } else {
                        core.on_snapshot_failed();
                    }
                }
                self.process(i)
            }
            Event::Crash { node, incarnation } => {
                if self.healed || self.nodes[node].incarnation != incarnation {
                    return Ok(());
                }
                let down = self.rng.gen_range(10, 300);
                self.crash(node, down)
            }
            Event::Unpause(i) => {
                self.nodes[i].paused = false;
                Ok(())
            }
            Event::Reconfig => {
                if !self.healed {
                    self.reconfigure()?;
                    let mean = self.plan.reconfig_interval_ms;
                    let gap = self.rng.gen_range(mean / 2, mean * 3 / 2 + 1);
                    self.schedule(gap, Event::Reconfig);
                }
                Ok(())
            }
            Event::Heal => {
                self.trace(|| "heal: network repaired, crashed nodes restart".to_string());
                self.healed = true;
                self.deafen_on_timeout_now = None;
                self.network.heal();
                self.network.config = crate::network::NetworkConfig::calm();
                for i in 0..self.nodes.len() {
                    self.nodes[i].paused = false;
                    if self.nodes[i].core.is_none() {
                        self.schedule(1, Event::Restart(i));
                    }
                }
                Ok(())
            }
        }
    }

    /// The slot running under `id`, if any.
    pub(crate) fn index_of(&self, id: &NodeId) -> Option<usize> {
        self.ids.iter().position(|x| x == id)
    }

    /// Whether the node `id` durably holds entry (`index`, `term`) with payload hash `h`.
    fn disk_holds(&self, id: &NodeId, index: Index, term: Term, h: u64) -> bool {
        disk_holds(&self.nodes, &self.ids, id, index, term, h)
    }

    /// Durability across crashes and wipes: every committed entry stays durable on a
    /// majority of the latest committed configuration's voters.
    pub(crate) fn check_durable(&self) -> Result<(), Violation> {
        self.inv
            .check_durable_quorum(|id, index, term, h| self.disk_holds(id, index, term, h))
    }

    /// Slots of the members of the latest committed configuration: what a load balancer
    /// in front of the cluster would hand clients.
    pub(crate) fn member_slots(&self) -> Vec<usize> {
        let (_, m) = self.inv.latest_committed_config();
        m.members()
            .iter()
            .filter_map(|id| self.index_of(id))
            .collect()
    }

    /// A random member slot for a client to try.
    pub(crate) fn random_target(&mut self) -> usize {
        let members = self.member_slots();
        if members.is_empty() {
            return self.rng.gen_range(0, self.nodes.len() as u64) as usize;
        }
        members[self.rng.gen_range(0, members.len() as u64) as usize]
    }

    /// Drains node `i`'s Ready and checks the invariants its changes touch.
    pub(crate) fn process(&mut self, i: usize) -> Result<(), Violation> {
        loop {
            let node = &mut self.nodes[i];
            let Some(core) = node.core.as_mut() else {
                return Ok(());
            };
            if !core.has_ready() {
                break;
            }
            let rd = core.ready();
            if self.cfg.trace {
                for e in &rd.elections {
                    println!("{:>8}ms n{i} campaigns: {e:?}", self.now);
                }
            }
            if let Some(w) = rd.write {
                self.inv.on_written(i, core, &w.log.entries)?;
                node.disk.submit(w);
                let (lo, hi) = (self.plan.disk_min_ms, self.plan.disk_max_ms);
                let latency = self.rng.gen_range(lo, hi + 1);
                let node = &mut self.nodes[i];
                node.disk_busy_until = node.disk_busy_until.max(self.now) + latency;
                let at = node.disk_busy_until - self.now;
                let incarnation = node.incarnation;
                self.schedule(
                    at,
                    Event::WriteDone {
                        node: i,
                        incarnation,
                    },
                );
            }
            // Snapshot chunks carry the bytes of the snapshot on disk; a chunk of one the
            // disk no longer holds is dropped, as the runtime does.
            let disk = &self.nodes[i].disk;
            let chunks: Vec<Message> = rd
                .snapshot_chunks
                .into_iter()
                .filter_map(|c| {
                    let (meta, offset) = c.source()?;
                    let data = disk.read_chunk(meta, offset, c.len)?;
                    Some(c.fill(data))
                })
                .collect();
            for m in rd.messages.into_iter().chain(chunks) {
                let Some(to) = self.index_of(&m.to) else {
                    continue; // an id no slot runs under (wiped): nobody listens
                };
                if self.deafen_on_timeout_now == Some(i)
                    && !self.healed
                    && matches!(m.body, raftlock_raft::MessageBody::TimeoutNow)
                {
                    self.deafen_on_timeout_now = None;
                    for b in 0..self.nodes.len() {
                        if b != i {
                            self.network.cut_one_way(b, i);
                        }
                    }
                    self.trace(|| format!("n{i} sent TimeoutNow: links into n{i} cut"));
                }
                for delay in self.network.route(i, to, &mut self.rng) {
                    self.schedule(delay, Event::Deliver(m.clone()));
                }
            }
            // `rd.snapshot` is restored once the write installing it is done (`WriteDone`).
            if !rd.read_states.is_empty() || !rd.failed_reads.is_empty() {
                self.reads_answered(i, &rd.read_states, &rd.failed_reads);
            }
            if let Some(upto) = rd.compact_to {
                self.nodes[i].disk.durable.log.retain(|e| e.index > upto);
            }
            for e in &rd.committed_entries {
                self.inv.on_apply(i, e)?;
                self.apply_to_kv(i, e)?;
                if self.inv.has_state_at(e.index) {
                    let h = self.nodes[i].kv.state_hash();
                    self.inv.on_state_at(i, e.index, h)?;
                }
            }
            let node = &mut self.nodes[i];
            let Some(core) = node.core.as_mut() else {
                return Ok(());
            };
            if let Some(last) = rd.committed_entries.last().map(|e| e.index) {
                if last <= node.last_applied {
                    return Err(Violation(format!(
                        "applied index of node {i} went backwards: {} -> {last}",
                        node.last_applied
                    )));
                }
                node.last_applied = last;
                core.on_applied(last);
            }
            let commit = core.commit_index();
            if commit < node.last_commit {
                return Err(Violation(format!(
                    "commit index of node {i} went backwards: {} -> {commit}",
                    node.last_commit
                )));
            }
            if commit > node.last_commit {
                let from = node.last_commit + 1;
                node.last_commit = commit;
                if let Some(core) = self.nodes[i].core.as_ref() {
                    let (nodes, ids) = (&self.nodes, &self.ids);
                    let holds =
                        |id: &NodeId, index, term, h| disk_holds(nodes, ids, id, index, term, h);
                    self.inv.on_commit(i, core, from, commit, holds)?;
                }
                self.on_configuration_committed();
            }
            let node = &mut self.nodes[i];
            let Some(core) = node.core.as_mut() else {
                return Ok(());
            };
            if core.role() == Role::Leader && node.last_role != Role::Leader {
                let term = core.term();
                self.inv.on_leader(i, core)?;
                self.trace(|| format!("n{i} became leader of term {term}"));
                self.maybe_crash_new_leader(i);
                if let Some((slow, fast)) = self.adversarial_clocks {
                    for k in 0..self.nodes.len() {
                        // Settle each clock at its old rate before changing the rate.
                        self.sync_clock(k);
                        self.nodes[k].tick_ms = if k == i { slow } else { fast };
                    }
                }
            }
            let node = &mut self.nodes[i];
            node.last_role = node.core.as_ref().map_or(Role::Follower, |c| c.role());
            let applied = node.last_applied;
            self.complete_reads(i, applied);
            if rd.snapshot_request.is_some() {
                // After `on_applied`: the state machine is exactly at the applied index.
                self.build_snapshot(i)?;
            }
        }
        if let Some(core) = self.nodes[i].core.as_ref() {
            let bootstrap = if self.bootstrap[i] {
                &self.initial
            } else {
                &self.empty
            };
            self.inv.check_node(i, core, bootstrap)?;
        }
        Ok(())
    }

    /// The latest committed configuration may have changed: members it removed are
    /// decommissioned from the clients' point of view (the load balancer drops them and
    /// operations waiting on them end uncertain), though the nodes keep running, as a
    /// removed server does until an operator stops it.
    fn on_configuration_committed(&mut self) {
        let (index, m) = self.inv.latest_committed_config();
        if index == self.seen_config {
            return;
        }
        let members = m.members();
        let text = m.to_string();
        self.seen_config = index;
        self.trace(|| format!("configuration {text} committed at {index}"));
        for s in 0..self.ids.len() {
            let id = self.ids[s].clone();
            let was_member = !self.removed_ids.contains(&id) && self.inv.was_committed_member(&id);
            if was_member && !members.contains(&id) {
                self.removed_ids.insert(id);
                self.clients_node_removed(s);
            }
        }
    }

    /// Restores node `i`'s state machine from a snapshot received from the leader.
    fn restore_snapshot(
        &mut self,
        i: usize,
        snap: &raftlock_raft::Snapshot,
    ) -> Result<(), Violation> {
        let index = snap.meta.last_index;
        self.trace(|| format!("n{i} restores snapshot at {index}"));
        if self.nodes[i].kv.restore(&snap.data).is_none() {
            return Err(Violation(format!(
                "node {i} received a malformed snapshot at {index}"
            )));
        }
        let h = self.nodes[i].kv.state_hash();
        self.inv.on_state_at(i, index, h)?;
        self.clients_skip_to(i, index);
        let node = &mut self.nodes[i];
        node.last_applied = node.last_applied.max(index);
        node.last_commit = node.last_commit.max(index);
        if let Some(core) = node.core.as_mut() {
            core.on_applied(index);
        }
        Ok(())
    }

    /// Node `i` was asked for a snapshot: it captures its state machine at its applied
    /// index, and the snapshot becomes durable after a disk write (a crash first loses it).
    fn build_snapshot(&mut self, i: usize) -> Result<(), Violation> {
        let node = &mut self.nodes[i];
        let Some(core) = node.core.as_mut() else {
            return Ok(());
        };
        let index = core.applied_index();
        let Some(meta) = core.snapshot_meta_at(index) else {
            core.on_snapshot_failed();
            return Ok(());
        };
        self.inv.check_snapshot_meta(i, &meta)?;
        let snapshot = raftlock_raft::Snapshot {
            meta,
            data: node.kv.snapshot().into(),
        };
        let h = node.kv.state_hash();
        let incarnation = node.incarnation;
        self.inv.on_state_at(i, index, h)?;
        let latency = self
            .rng
            .gen_range(self.plan.disk_min_ms, self.plan.disk_max_ms * 3 + 1);
        self.schedule(
            latency,
            Event::SnapshotSaved {
                node: i,
                incarnation,
                snapshot,
            },
        );
        Ok(())
    }

    /// End-of-run checks: liveness after healing, exactly-once application, and the
    /// linearizability of the client history.
    fn check_end(&mut self) -> Result<(), Violation> {
        if self.cfg.trace {
            for (i, n) in self.nodes.iter().enumerate() {
                if let Some(c) = n.core.as_ref() {
                    println!(
                        "end: slot {i} {} {:?} t{} last {} (term {:?}) commit {} applied {}; {} at {}",
                        c.id(),
                        c.role(),
                        c.term(),
                        c.last_index(),
                        c.term_at(c.last_index()),
                        c.commit_index(),
                        c.applied_index(),
                        c.membership(),
                        c.membership_index()
                    );
                }
            }
        }
        self.check_convergence()?;
        self.finish_clients()
    }

    /// After healing: exactly one leader, a voter of the final (latest committed)
    /// configuration, which is simple and is the one in effect on the leader; and every
    /// member of it applied everything the leader committed. Nodes the final
    /// configuration removed (or never added) are not asked to converge, but none of
    /// them may still lead.
    fn check_convergence(&self) -> Result<(), Violation> {
        let leaders: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| {
                self.nodes[i]
                    .core
                    .as_ref()
                    .is_some_and(|c| c.role() == Role::Leader)
            })
            .collect();
        let [leader] = leaders[..] else {
            return Err(Violation(format!(
                "liveness: {} leaders {LIVENESS_BOUND_TICKS} ticks after healing (expected exactly one): {:?}",
                leaders.len(),
                leaders.iter().map(|&i| self.ids[i].to_string()).collect::<Vec<_>>()
            )));
        };
        let Some(lc) = self.nodes[leader].core.as_ref() else {
            return Err(Violation("liveness: leader vanished".into()));
        };
        let (ci, fin) = self.inv.latest_committed_config();
        if fin.is_joint() || lc.membership().is_joint() {
            return Err(Violation(format!(
                "liveness: the configuration is still joint {LIVENESS_BOUND_TICKS} ticks after healing: committed {fin} at {ci}, in effect on the leader {}",
                lc.membership()
            )));
        }
        if !fin.is_voter(lc.id()) {
            return Err(Violation(format!(
                "liveness: leader {} is not a voter of the final configuration {fin}",
                lc.id()
            )));
        }
        let commit = lc.commit_index();
        if commit < lc.last_index() {
            return Err(Violation(format!(
                "liveness: leader n{leader} has not committed its log (commit {commit}, last {})",
                lc.last_index()
            )));
        }
        // By shape: after a restart from a snapshot the configuration's index is the
        // snapshot's, not its entry's.
        let shape = |m: &Membership| (m.voters.clone(), m.outgoing.clone(), m.learners.clone());
        if shape(lc.membership()) != shape(fin) || lc.membership_index() > commit {
            return Err(Violation(format!(
                "liveness: the leader's configuration {} (at {}) is not the latest committed {fin} (at {ci})",
                lc.membership(),
                lc.membership_index()
            )));
        }
        for id in fin.members() {
            let Some(i) = self.index_of(&id) else {
                return Err(Violation(format!(
                    "liveness: member {id} of the final configuration has no slot"
                )));
            };
            let Some(c) = self.nodes[i].core.as_ref() else {
                return Err(Violation(format!("liveness: node {id} is still down")));
            };
            if c.applied_index() < commit {
                return Err(Violation(format!(
                    "liveness: node {id} applied {} of {commit} committed entries {LIVENESS_BOUND_TICKS} ticks after healing",
                    c.applied_index()
                )));
            }
        }
        Ok(())
    }
}
