//! The simulated world: N nodes running the real `RaftCore`, a simulated network and
//! disks, virtual time, and a seeded schedule of faults. Single-threaded and driven by
//! one seed, so every run replays exactly.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use bytes::Bytes;
use raftlock_raft::{Config, Message, NodeId, PeerConfig, RaftCore, Rand, Role, SeededRand};

use crate::disk::SimDisk;
use crate::invariants::{Invariants, Violation};
use crate::network::Network;
use crate::profile::{FaultPlan, Profile};

/// Virtual milliseconds per nominal tick.
pub const TICK_MS: u64 = 10;
/// After the fault period, a leader must be elected and every node must have applied every
/// committed entry within this many ticks (30 election timeouts of 10 ticks).
pub const LIVENESS_BOUND_TICKS: u64 = 300;

/// Settings of one run.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// The seed everything is drawn from.
    pub seed: u64,
    /// Number of nodes.
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
    /// Commands proposed and accepted by a leader.
    pub proposals: u64,
}

#[derive(Debug)]
enum Event {
    Tick(usize),
    Deliver(Message),
    WriteDone { node: usize, incarnation: u64 },
    Propose,
    Fault,
    Restart(usize),
    Unpause(usize),
    Heal,
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

struct SimNode {
    core: Option<RaftCore>,
    disk: SimDisk,
    incarnation: u64,
    paused: bool,
    /// Tick period of this node (skewed around `TICK_MS`).
    tick_ms: u64,
    /// Time the disk finishes its last queued write (writes complete in order).
    disk_busy_until: u64,
    last_commit: u64,
    last_role: Role,
}

/// One simulated cluster.
pub struct World {
    cfg: RunConfig,
    plan: FaultPlan,
    rng: SeededRand,
    now: u64,
    next_id: u64,
    queue: BinaryHeap<Reverse<Scheduled>>,
    nodes: Vec<SimNode>,
    ids: Vec<NodeId>,
    network: Network,
    inv: Invariants,
    trace_hash: u64,
    events: u64,
    proposals: u64,
    healed: bool,
    #[cfg(feature = "bug-injection")]
    bugs: raftlock_raft::core::InjectedBugs,
}

impl World {
    /// Builds the world with deliberate protocol bugs in every node (self-tests only).
    #[cfg(feature = "bug-injection")]
    pub fn with_bugs(cfg: RunConfig, bugs: raftlock_raft::core::InjectedBugs) -> Self {
        let mut world = Self::new(cfg);
        world.bugs = bugs;
        for node in &mut world.nodes {
            if let Some(core) = node.core.as_mut() {
                core.inject_bugs(bugs);
            }
        }
        world
    }

    /// Builds the world for `cfg`.
    pub fn new(cfg: RunConfig) -> Self {
        let mut rng = SeededRand::new(cfg.seed);
        let plan = FaultPlan::for_profile(cfg.profile, &mut rng);
        let ids: Vec<NodeId> = (0..cfg.nodes)
            .map(|i| NodeId::from(format!("n{i}")))
            .collect();
        let nodes = (0..cfg.nodes)
            .map(|_| {
                let skew = plan.tick_skew_pct;
                let tick_ms = TICK_MS * (100 + rng.gen_range(0, 2 * skew + 1) - skew) / 100;
                SimNode {
                    core: None,
                    disk: SimDisk::default(),
                    incarnation: 0,
                    paused: false,
                    tick_ms: tick_ms.max(1),
                    disk_busy_until: 0,
                    last_commit: 0,
                    last_role: Role::Follower,
                }
            })
            .collect();
        let network = Network::new(plan.network.clone());
        let mut world = World {
            cfg,
            plan,
            rng,
            now: 0,
            next_id: 0,
            queue: BinaryHeap::new(),
            nodes,
            ids,
            network,
            inv: Invariants::default(),
            trace_hash: 0xcbf2_9ce4_8422_2325,
            events: 0,
            proposals: 0,
            healed: false,
            #[cfg(feature = "bug-injection")]
            bugs: Default::default(),
        };
        for i in 0..world.cfg.nodes {
            world.boot(i);
        }
        world.schedule(5, Event::Propose);
        let first_fault = world.plan.fault_interval_ms;
        if first_fault > 0 {
            world.schedule(first_fault, Event::Fault);
        }
        world.schedule(world.cfg.fault_ms, Event::Heal);
        world
    }

    fn config_for(&self, i: usize) -> Config {
        let peers = self
            .ids
            .iter()
            .map(|id| PeerConfig {
                id: id.clone(),
                address: "127.0.0.1:1".to_string(),
            })
            .collect();
        let mut c = Config::new(self.ids[i].clone(), peers);
        c.tuning.max_inflight_msgs = self.plan.max_inflight;
        c.options.max_log_entries_per_request = self.plan.max_entries_per_request;
        // Bound the backlog a partition can build up, as a real deployment would, so that
        // catching up after healing fits the liveness bound.
        c.tuning.max_proposal_bytes = 1024;
        c.tuning.max_uncommitted_bytes = Some(16 * 1024);
        c
    }

    fn schedule(&mut self, after: u64, event: Event) {
        self.next_id += 1;
        self.queue.push(Reverse(Scheduled {
            time: self.now + after,
            id: self.next_id,
            event,
        }));
    }

    fn trace(&mut self, text: impl FnOnce() -> String) {
        if self.cfg.trace {
            println!("{:>8}ms {}", self.now, text());
        }
    }

    fn mix(&mut self, values: &[u64]) {
        for v in values {
            for b in v.to_le_bytes() {
                self.trace_hash ^= b as u64;
                self.trace_hash = self.trace_hash.wrapping_mul(0x0100_0000_01b3);
            }
        }
    }

    /// Starts (or restarts) node `i` from its durable state.
    fn boot(&mut self, i: usize) {
        let initial = self.nodes[i].disk.recover();
        let seed = self.rng.next_u64();
        let config = self.config_for(i);
        let core = RaftCore::new(config, initial, Box::new(SeededRand::new(seed)));
        let node = &mut self.nodes[i];
        node.incarnation += 1;
        node.last_commit = 0;
        node.last_role = Role::Follower;
        node.paused = false;
        match core {
            #[cfg(feature = "bug-injection")]
            Ok(mut core) => {
                core.inject_bugs(self.bugs);
                node.core = Some(core);
            }
            #[cfg(not(feature = "bug-injection"))]
            Ok(core) => node.core = Some(core),
            Err(e) => panic!("simulated config is invalid: {e}"),
        }
        let tick = self.nodes[i].tick_ms;
        self.schedule(tick, Event::Tick(i));
    }

    /// Runs to the end; returns the report.
    pub fn run(mut self) -> RunReport {
        let end = self.cfg.fault_ms + LIVENESS_BOUND_TICKS * TICK_MS;
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
            if let Err(v) = self.check_liveness() {
                violation = Some(format!("at {}ms: {v}", self.now));
            }
        }
        RunReport {
            violation,
            trace_hash: self.trace_hash,
            events: self.events,
            committed: self.inv.committed_count(),
            proposals: self.proposals,
        }
    }

    fn handle(&mut self, event: Event) -> Result<(), Violation> {
        match event {
            Event::Tick(i) => {
                let node = &mut self.nodes[i];
                if node.core.is_none() {
                    return Ok(()); // crashed: Restart schedules new ticks
                }
                let tick = node.tick_ms;
                if !node.paused {
                    if let Some(core) = node.core.as_mut() {
                        core.tick();
                    }
                }
                self.mix(&[1, i as u64, self.now]);
                self.schedule(tick, Event::Tick(i));
                self.process(i)
            }
            Event::Deliver(m) => {
                let to = self.index_of(&m.to);
                let from = self.index_of(&m.from);
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
                    println!(
                        "{:>8}ms deliver {} -> {} {} t{}",
                        self.now,
                        m.from,
                        m.to,
                        m.kind(),
                        m.term
                    );
                }
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
                if let Some(seq) = node.disk.complete() {
                    if let Some(core) = node.core.as_mut() {
                        core.on_persisted(seq);
                    }
                    self.mix(&[3, i as u64, seq]);
                }
                self.process(i)
            }
            Event::Propose => {
                if self.healed {
                    // Clients stop with the faults, so liveness can ask for a quiet cluster.
                    return Ok(());
                }
                self.propose();
                let gap = self.rng.gen_range(1, self.plan.propose_gap_ms + 1);
                self.schedule(gap, Event::Propose);
                Ok(())
            }
            Event::Fault => {
                if !self.healed {
                    self.inject_fault()?;
                    let gap = self.rng.gen_range(
                        self.plan.fault_interval_ms / 2,
                        self.plan.fault_interval_ms * 3 / 2 + 1,
                    );
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
            Event::Unpause(i) => {
                self.nodes[i].paused = false;
                Ok(())
            }
            Event::Heal => {
                self.trace(|| "heal: network repaired, crashed nodes restart".to_string());
                self.healed = true;
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

    fn index_of(&self, id: &NodeId) -> usize {
        self.ids.iter().position(|x| x == id).unwrap_or(0)
    }

    /// Drains node `i`'s Ready and checks the invariants its changes touch.
    fn process(&mut self, i: usize) -> Result<(), Violation> {
        loop {
            let node = &mut self.nodes[i];
            let Some(core) = node.core.as_mut() else {
                return Ok(());
            };
            if !core.has_ready() {
                break;
            }
            let rd = core.ready();
            if let Some(w) = rd.write {
                self.inv.on_written(i, core, &w.log.entries)?;
                node.disk.submit(w);
                let latency = self
                    .rng
                    .gen_range(self.plan.disk_min_ms, self.plan.disk_max_ms + 1);
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
            for m in rd.messages {
                let to = self.index_of(&m.to);
                for delay in self.network.route(i, to, &mut self.rng) {
                    self.schedule(delay, Event::Deliver(m.clone()));
                }
            }
            let node = &mut self.nodes[i];
            let Some(core) = node.core.as_mut() else {
                return Ok(());
            };
            if let Some(last) = rd.committed_entries.last().map(|e| e.index) {
                for e in &rd.committed_entries {
                    self.inv.on_apply(i, e)?;
                }
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
                self.inv.on_commit(i, core, from, commit)?;
            }
            if core.role() == Role::Leader && node.last_role != Role::Leader {
                let term = core.term();
                self.inv.on_leader(i, core)?;
                self.trace(|| format!("n{i} became leader of term {term}"));
            }
            let node = &mut self.nodes[i];
            node.last_role = node.core.as_ref().map_or(Role::Follower, |c| c.role());
        }
        Ok(())
    }

    /// A client proposes a command on a node that believes it leads.
    fn propose(&mut self) {
        let leaders: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| {
                let n = &self.nodes[i];
                !n.paused && n.core.as_ref().is_some_and(|c| c.role() == Role::Leader)
            })
            .collect();
        if leaders.is_empty() {
            return;
        }
        let i = leaders[self.rng.gen_range(0, leaders.len() as u64) as usize];
        let count = self.rng.gen_range(1, self.plan.max_batch + 1);
        let commands: Vec<Bytes> = (0..count)
            .map(|k| Bytes::from(format!("cmd-{}-{k}", self.proposals)))
            .collect();
        if let Some(core) = self.nodes[i].core.as_mut() {
            if core.propose(commands).is_ok() {
                self.proposals += count;
            }
        }
        // Errors (not leader, overloaded) are what a client would see and retry.
        let _ = self.process(i);
    }

    fn inject_fault(&mut self) -> Result<(), Violation> {
        let n = self.nodes.len();
        let choices = self.plan.fault_kinds.clone();
        if choices.is_empty() {
            return Ok(());
        }
        let kind = choices[self.rng.gen_range(0, choices.len() as u64) as usize];
        match kind {
            crate::profile::FaultKind::Partition => {
                let size = self.rng.gen_range(1, (n as u64).div_ceil(2) + 1) as usize;
                let mut side = Vec::new();
                while side.len() < size {
                    let x = self.rng.gen_range(0, n as u64) as usize;
                    if !side.contains(&x) {
                        side.push(x);
                    }
                }
                self.network.heal();
                self.network.partition(&side, n);
                self.trace(|| format!("partition {side:?} from the rest"));
            }
            crate::profile::FaultKind::OneWay => {
                let a = self.rng.gen_range(0, n as u64) as usize;
                let b = (a + 1 + self.rng.gen_range(0, n as u64 - 1) as usize) % n;
                self.network.cut_one_way(a, b);
                self.trace(|| format!("cut link n{a} -> n{b}"));
            }
            crate::profile::FaultKind::LeaderReachesOne => {
                let leader = (0..n).find(|&i| {
                    self.nodes[i]
                        .core
                        .as_ref()
                        .is_some_and(|c| c.role() == Role::Leader)
                });
                if let Some(l) = leader {
                    let keep = (l + 1 + self.rng.gen_range(0, n as u64 - 1) as usize) % n;
                    self.network.heal();
                    for b in 0..n {
                        if b != l && b != keep {
                            self.network.cut_one_way(l, b);
                            self.network.cut_one_way(b, l);
                        }
                    }
                    self.trace(|| format!("leader n{l} reaches only n{keep}"));
                }
            }
            crate::profile::FaultKind::Heal => {
                self.network.heal();
                self.trace(|| "links healed".to_string());
            }
            crate::profile::FaultKind::Crash => {
                let i = self.rng.gen_range(0, n as u64) as usize;
                if self.nodes[i].core.is_some() {
                    let torn = self.plan.torn_writes && self.rng.gen_range(0, 2) == 0;
                    let note = self.nodes[i].disk.crash(&mut self.rng, torn);
                    self.nodes[i].core = None;
                    self.nodes[i].disk_busy_until = self.now;
                    self.trace(|| format!("crash n{i}: {note}"));
                    self.mix(&[5, i as u64]);
                    let logs: Vec<&[raftlock_raft::Entry]> = self
                        .nodes
                        .iter()
                        .map(|n| n.disk.durable.log.as_slice())
                        .collect();
                    self.inv.check_durable_majority(&logs)?;
                    let down = self.rng.gen_range(10, 1000);
                    self.schedule(down, Event::Restart(i));
                }
            }
            crate::profile::FaultKind::Pause => {
                let i = self.rng.gen_range(0, n as u64) as usize;
                self.nodes[i].paused = true;
                let pause = self.rng.gen_range(50, 1500);
                self.trace(|| format!("pause n{i} for {pause}ms"));
                self.schedule(pause, Event::Unpause(i));
            }
        }
        Ok(())
    }

    /// After healing: one leader, and every node applied everything the leader committed.
    fn check_liveness(&self) -> Result<(), Violation> {
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
                "liveness: {} leaders {LIVENESS_BOUND_TICKS} ticks after healing (expected exactly one)",
                leaders.len()
            )));
        };
        let Some(lc) = self.nodes[leader].core.as_ref() else {
            return Err(Violation("liveness: leader vanished".into()));
        };
        let commit = lc.commit_index();
        if commit < lc.last_index() {
            return Err(Violation(format!(
                "liveness: leader n{leader} has not committed its log (commit {commit}, last {})",
                lc.last_index()
            )));
        }
        for (i, n) in self.nodes.iter().enumerate() {
            let Some(c) = n.core.as_ref() else {
                return Err(Violation(format!("liveness: node {i} is still down")));
            };
            if c.applied_index() < commit {
                return Err(Violation(format!(
                    "liveness: node {i} applied {} of {commit} committed entries {LIVENESS_BOUND_TICKS} ticks after healing",
                    c.applied_index()
                )));
            }
        }
        Ok(())
    }
}
