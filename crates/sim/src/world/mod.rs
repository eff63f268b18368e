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

mod end;
mod ready;

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
}
