//! [`RaftBuilder`]: assembles a node from its configuration and parts.

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::api::Raft;
use crate::applier::Applier;
use crate::clock::{Clock, StandardClock};
use crate::config::Config;
use crate::core::RaftCore;
use crate::error::{ConfigError, Error, Result};
use crate::metrics::{Metrics, NoOpMetrics};
use crate::network::NetworkManager;
use crate::node::Parts;
use crate::rand::{Rand, StandardRand};
use crate::storage::{load_initial_state, Storage};

/// Builds a [`Raft`] node (the original's `RaftBuilder`). Storage, applier and network are
/// required; metrics, clock and randomness have defaults.
#[derive(Default)]
pub struct RaftBuilder {
    config: Option<Config>,
    storage: Option<Box<dyn Storage>>,
    applier: Option<Box<dyn Applier>>,
    network: Option<Arc<dyn NetworkManager>>,
    metrics: Option<Arc<dyn Metrics>>,
    clock: Option<Arc<dyn Clock>>,
    rand: Option<Box<dyn Rand>>,
    external_ticks: bool,
    apply_channel: Option<usize>,
    inline_applier: bool,
    inline_follower_writes: bool,
}

impl RaftBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    /// The node's configuration (validated by `build`).
    pub fn with_config(mut self, config: Config) -> Self {
        self.config = Some(config);
        self
    }

    /// Durable storage; the node recovers its state from it.
    pub fn with_storage(mut self, storage: impl Storage) -> Self {
        self.storage = Some(Box::new(storage));
        self
    }

    /// The application's state machine.
    pub fn with_applier(mut self, applier: impl Applier) -> Self {
        self.applier = Some(Box::new(applier));
        self
    }

    /// The peer transport.
    pub fn with_network(mut self, network: impl NetworkManager) -> Self {
        self.network = Some(Arc::new(network));
        self
    }

    /// Metrics hooks (default: none).
    pub fn with_metrics(mut self, metrics: impl Metrics) -> Self {
        self.metrics = Some(Arc::new(metrics));
        self
    }

    /// The monotonic clock (default: [`StandardClock`]).
    pub fn with_clock(mut self, clock: impl Clock) -> Self {
        self.clock = Some(Arc::new(clock));
        self
    }

    /// Randomness for election timeouts (default: [`StandardRand`]). It also numbers the
    /// reads a follower forwards to its leader, so that a late answer meant for this node's
    /// previous process cannot match a new read: a source that repeats its sequence on
    /// every start (a fixed seed) gives up that protection, so seed it anew each time.
    pub fn with_rand(mut self, rand: impl Rand) -> Self {
        self.rand = Some(Box::new(rand));
        self
    }

    /// Take ticks only from [`Raft::tick`] instead of an internal ticker.
    pub fn with_external_ticks(mut self) -> Self {
        self.external_ticks = true;
        self
    }

    /// Deliver every applied command to [`Raft::apply_channel`], with this much buffering.
    pub fn with_apply_channel(mut self, capacity: usize) -> Self {
        self.apply_channel = Some(capacity.max(1));
        self
    }

    /// Run the applier on the node's event loop instead of its own thread. For state
    /// machines whose `apply`, `snapshot` and `restore` take microseconds and never block:
    /// it saves two thread switches per batch of committed entries (most of the CPU an
    /// in-memory cluster spends), but a slow applier would then delay heartbeats and
    /// elections. Ignored with [`with_apply_channel`](Self::with_apply_channel), whose
    /// backpressure needs a thread that may block.
    pub fn with_inline_applier(mut self) -> Self {
        self.inline_applier = true;
        self
    }

    /// While this node is not the leader, write to storage on the node's event loop
    /// instead of handing each write to the storage thread (when that thread is idle).
    /// A follower has nothing else to do while its write is in flight, since its answer
    /// waits for the `sync`; the hand-off and the report back cost two thread wake-ups on
    /// every replicated write's critical path. The leader keeps using the thread, so its
    /// own write overlaps the round trip to the followers. The cost: a follower's event
    /// loop, and the tokio worker it runs on, blocks for each `sync`, so use it when the
    /// node has a runtime of its own (as `raftkv` does), not inside a runtime whose
    /// other tasks must not wait for a disk. No effect on in-memory storage, which is
    /// always written inline.
    pub fn with_inline_follower_writes(mut self) -> Self {
        self.inline_follower_writes = true;
        self
    }

    /// Validates the configuration, recovers state from storage and returns the node,
    /// ready to [`start`](Raft::start).
    pub fn build(self) -> Result<Raft> {
        let missing = |what: &str| {
            Error::Config(ConfigError::new(
                what,
                "is required; call the builder's with_ method",
            ))
        };
        let config = self.config.ok_or_else(|| missing("config"))?;
        config.validate()?;
        let storage = self.storage.ok_or_else(|| missing("storage"))?;
        let applier = self.applier.ok_or_else(|| missing("applier"))?;
        let network = self.network.ok_or_else(|| missing("network"))?;
        let initial = load_initial_state(storage.as_ref())?;
        let restore_on_start = storage.snapshot_reader()?;
        let id = config.id.clone();
        let rand = self.rand.unwrap_or_else(|| Box::new(StandardRand::new()));
        let core = RaftCore::new(config, initial, rand)?;
        let (apply_tx, apply_rx) = match self.apply_channel {
            Some(cap) => {
                let (tx, rx) = mpsc::channel(cap);
                (Some(tx), Some(rx))
            }
            None => (None, None),
        };
        let parts = Parts {
            core,
            storage,
            applier,
            network,
            metrics: self.metrics.unwrap_or_else(|| Arc::new(NoOpMetrics)),
            clock: self.clock.unwrap_or_else(|| Arc::new(StandardClock::new())),
            external_ticks: self.external_ticks,
            inline_applier: self.inline_applier && apply_tx.is_none(),
            inline_follower_writes: self.inline_follower_writes,
            apply_tx,
            restore_on_start,
        };
        Ok(Raft::new(id, parts, apply_rx))
    }
}
