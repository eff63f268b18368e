//! The simulated network: per-message delay (which reorders), loss and duplication, and
//! directed link cuts for symmetric, one-way and partial partitions.

use std::collections::BTreeSet;

use raftlock_raft::Rand;

/// Network behaviour for one phase of a run.
#[derive(Clone, Debug)]
pub struct NetworkConfig {
    /// Smallest delivery delay, in virtual milliseconds.
    pub min_delay_ms: u64,
    /// Largest delivery delay; a wide range reorders messages.
    pub max_delay_ms: u64,
    /// Probability (per mille) that a message is lost.
    pub drop_per_mille: u64,
    /// Probability (per mille) that a message is delivered twice.
    pub duplicate_per_mille: u64,
    /// Probability (per mille) that a message straggles: it arrives up to
    /// `straggler_max_ms` late, after elections have moved on (a stale leader's
    /// AppendEntries reaching a node in a newer term).
    pub straggler_per_mille: u64,
    /// Longest delay of a straggler.
    pub straggler_max_ms: u64,
}

impl NetworkConfig {
    /// A reliable network with small delays.
    pub fn calm() -> Self {
        NetworkConfig {
            min_delay_ms: 1,
            max_delay_ms: 3,
            drop_per_mille: 0,
            duplicate_per_mille: 0,
            straggler_per_mille: 0,
            straggler_max_ms: 0,
        }
    }
}

/// Links and their faults.
#[derive(Debug)]
pub struct Network {
    /// Current behaviour.
    pub config: NetworkConfig,
    /// Directed links (from, to) that drop everything.
    cut: BTreeSet<(usize, usize)>,
}

impl Network {
    /// A fully connected network.
    pub fn new(config: NetworkConfig) -> Self {
        Network {
            config,
            cut: BTreeSet::new(),
        }
    }

    /// Delivery delays for a message from `from` to `to`: none if lost, two if duplicated.
    pub fn route(&self, from: usize, to: usize, rng: &mut dyn Rand) -> Vec<u64> {
        if self.cut.contains(&(from, to)) {
            return Vec::new();
        }
        let c = &self.config;
        if rng.gen_range(0, 1000) < c.drop_per_mille {
            return Vec::new();
        }
        // Drawn only when stragglers are on, so the other profiles' random streams (and
        // the seeds recorded against them) stay as they were.
        let straggles = c.straggler_per_mille > 0 && rng.gen_range(0, 1000) < c.straggler_per_mille;
        let mut delays = vec![if straggles {
            rng.gen_range(c.max_delay_ms, c.straggler_max_ms.max(c.max_delay_ms) + 1)
        } else {
            rng.gen_range(c.min_delay_ms, c.max_delay_ms + 1)
        }];
        if rng.gen_range(0, 1000) < c.duplicate_per_mille {
            delays.push(rng.gen_range(c.min_delay_ms, c.max_delay_ms * 2 + 1));
        }
        delays
    }

    /// Cuts the directed link `from` → `to`.
    pub fn cut_one_way(&mut self, from: usize, to: usize) {
        self.cut.insert((from, to));
    }

    /// Splits the nodes into `side` and the rest, both directions.
    pub fn partition(&mut self, side: &[usize], n: usize) {
        for &a in side {
            for b in 0..n {
                if !side.contains(&b) {
                    self.cut.insert((a, b));
                    self.cut.insert((b, a));
                }
            }
        }
    }

    /// Restores every link.
    pub fn heal(&mut self) {
        self.cut.clear();
    }

    /// Whether any link is cut.
    pub fn is_partitioned(&self) -> bool {
        !self.cut.is_empty()
    }
}
