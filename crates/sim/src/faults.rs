//! Fault injection: partitions (symmetric, one-way, a leader that reaches one
//! follower), crashes that lose unsynced writes, and pauses.

use raftlock_raft::{Rand, Role};

use crate::invariants::Violation;
use crate::profile::FaultKind;
use crate::world::{Event, World};

impl World {
    /// Injects one fault drawn from the plan's fault kinds.
    pub(crate) fn inject_fault(&mut self) -> Result<(), Violation> {
        let n = self.nodes.len();
        let choices = self.plan.fault_kinds.clone();
        if choices.is_empty() {
            return Ok(());
        }
        let kind = choices[self.rng.gen_range(0, choices.len() as u64) as usize];
        match kind {
            FaultKind::Partition => {
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
            FaultKind::OneWay => {
                let a = self.rng.gen_range(0, n as u64) as usize;
                let b = (a + 1 + self.rng.gen_range(0, n as u64 - 1) as usize) % n;
                self.network.cut_one_way(a, b);
                self.trace(|| format!("cut link n{a} -> n{b}"));
            }
            FaultKind::LeaderReachesOne => {
                let leader = self.current_leader();
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
            FaultKind::IsolateLeader => {
                let leader = self.current_leader();
                if let Some(l) = leader {
                    self.network.heal();
                    self.network.partition(&[l], n);
                    self.trace(|| format!("leader n{l} isolated"));
                }
            }
            FaultKind::Heal => {
                self.network.heal();
                self.trace(|| "links healed".to_string());
            }
            FaultKind::Crash | FaultKind::CrashLeader => {
                let leader = self.current_leader();
                let i = match (kind, leader) {
                    (FaultKind::CrashLeader, Some(l)) => l,
                    _ => self.rng.gen_range(0, n as u64) as usize,
                };
                let down = if kind == FaultKind::CrashLeader {
                    self.rng.gen_range(10, 300)
                } else {
                    self.rng.gen_range(10, 1000)
                };
                self.crash(i, down)?;
            }
            FaultKind::Pause => {
                let i = self.rng.gen_range(0, n as u64) as usize;
                self.nodes[i].paused = true;
                let pause = self.rng.gen_range(50, 1500);
                self.trace(|| format!("pause n{i} for {pause}ms"));
                self.schedule(pause, Event::Unpause(i));
            }
        }
        Ok(())
    }

    /// A node that believes it leads (the first, if several do).
    pub(crate) fn current_leader(&self) -> Option<usize> {
        (0..self.nodes.len()).find(|&i| {
            self.nodes[i]
                .core
                .as_ref()
                .is_some_and(|c| c.role() == Role::Leader)
        })
    }

    /// Kills node `i` (losing its unsynced writes, maybe tearing the last one) and
    /// restarts it `down_ms` later. Checks that every committed entry is still durable on
    /// a majority of the latest committed configuration.
    pub(crate) fn crash(&mut self, i: usize, down_ms: u64) -> Result<(), Violation> {
        if self.nodes[i].core.is_none() {
            return Ok(());
        }
        let torn = self.plan.torn_writes && self.rng.gen_range(0, 2) == 0;
        let note = self.nodes[i]
            .disk
            .crash(&mut self.rng, torn)
            .map_err(|e| Violation(format!("node {i}'s torn write: {e}")))?;
        self.nodes[i].core = None;
        self.nodes[i].disk_busy_until = self.now;
        self.trace(|| format!("crash n{i}: {note}"));
        self.clients_lose_node(i);
        self.mix(&[5, i as u64]);
        self.check_durable()?;
        self.schedule(down_ms, Event::Restart(i));
        Ok(())
    }

    /// A node just became leader: in some plans it crashes moments later, before its
    /// no-op reaches a majority — the window in which a new leader holds entries of older
    /// terms that it must not commit by counting (Figure 8).
    pub(crate) fn maybe_crash_new_leader(&mut self, i: usize) {
        if self.healed || self.rng.gen_range(0, 1000) >= self.plan.crash_new_leader_per_mille {
            return;
        }
        let after = self.rng.gen_range(1, 30);
        let incarnation = self.nodes[i].incarnation;
        self.schedule(
            after,
            Event::Crash {
                node: i,
                incarnation,
            },
        );
    }
}
