//! The engine of the `inproc` and `durable` scenarios: a three-node cluster in one process
//! on a [`LocalNetwork`] (messages are moved between nodes, never serialized), an applier
//! that does nothing, and N concurrent clients, each a tokio task that loops
//! `propose_and_wait` with an empty command on the leader.
//!
//! Each row (one client count) runs on a fresh cluster and a fresh tokio runtime: the
//! clients run through a warm-up (the election's no-op commits, buffers grow), then for the
//! measured window every operation that *completes* inside the window counts towards
//! throughput and latency. CPU time is the whole process's (all nodes, all clients, the
//! storage and applier threads) over the same window, read from `/proc/self/stat`.

use std::error::Error;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Args;
use raftlock_raft::{
    Applier, ApplierError, Config, Error as RaftError, Index, LocalNetwork, Metrics, NodeId,
    PeerConfig, Raft, RaftBuilder, SnapshotMeta, Storage, Term,
};

use crate::machine;
use crate::report::{Histogram, Percentiles};

/// Nodes in the cluster.
pub const NODES: usize = 3;

/// How long to wait for the first leader before giving up on a row.
const ELECTION_WAIT: Duration = Duration::from_secs(30);

/// Back-off of a client after a failed proposal, so that a cluster without a leader is
/// not flooded with retries.
const RETRY_PAUSE: Duration = Duration::from_millis(1);

/// Options shared by the in-process scenarios.
#[derive(Debug, Clone, Args)]
pub struct LoadArgs {
    /// Client counts to measure, one row (and one fresh cluster) each.
    #[arg(
        long,
        value_name = "LIST",
        value_delimiter = ',',
        default_value = "1,64,256,1024,4096"
    )]
    pub clients: Vec<usize>,

    /// Measured seconds per row, after the warm-up.
    #[arg(long, value_name = "S", default_value_t = 5.0)]
    pub seconds: f64,

    /// Warm-up seconds per row: the clients run but nothing is recorded.
    #[arg(long, value_name = "S", default_value_t = 1.0)]
    pub warmup: f64,

    /// Commands per client call: 1 loops `propose_and_wait`, more loops
    /// `propose_batch_and_wait` with that many commands (each counts as one operation, with
    /// the call's latency).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub batch: usize,

    /// Tokio worker threads. A node on `FileStorage` also runs a storage thread of its own
    /// (`MemStorage` writes on the event loop).
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub worker_threads: usize,

    /// Run each node's applier on a thread of its own instead of on its event loop. The
    /// benchmark's applier does nothing and never blocks, the case
    /// `RaftBuilder::with_inline_applier` is for; this flag measures the default instead.
    #[arg(long)]
    pub threaded_applier: bool,

    /// `max_log_entries_per_request` of every node: the entries one AppendEntries may
    /// carry. The default, 1024, is what openraft's `benchmarks/minimal` sets
    /// (`max_payload_entries`), so that the comparison batches alike; the library's own
    /// default is the seed's 100.
    #[arg(long, value_name = "N", default_value_t = 1024)]
    pub max_entries_per_request: usize,
}

impl LoadArgs {
    /// Refuses arguments that cannot give a meaningful run.
    pub fn validate(&self) -> Result<(), String> {
        if self.clients.is_empty() || self.clients.contains(&0) {
            return Err("--clients: every client count must be at least 1".into());
        }
        for (name, value) in [("--seconds", self.seconds), ("--warmup", self.warmup)] {
            if !(value.is_finite() && value >= 0.0) {
                return Err(format!("{name}: must be a number >= 0, got {value}"));
            }
        }
        if self.seconds <= 0.0 {
            return Err("--seconds: must be positive".into());
        }
        if self.batch == 0 {
            return Err("--batch: must be at least 1".into());
        }
        if self.worker_threads == 0 {
            return Err("--worker-threads: must be at least 1".into());
        }
        if self.max_entries_per_request == 0 {
            return Err("--max-entries-per-request: must be at least 1".into());
        }
        Ok(())
    }

    /// The measured window.
    pub fn window(&self) -> Result<Duration, String> {
        Duration::try_from_secs_f64(self.seconds).map_err(|e| format!("--seconds: {e}"))
    }

    /// The warm-up.
    pub fn warmup(&self) -> Result<Duration, String> {
        Duration::try_from_secs_f64(self.warmup).map_err(|e| format!("--warmup: {e}"))
    }
}

/// The state machine of the benchmark: applies nothing, returns an empty result.
#[derive(Debug, Default)]
struct Discard {
    /// Last index applied, so that snapshots report where they are.
    applied: Index,
}

impl Applier for Discard {
    fn apply(&mut self, index: Index, _: Term, _: &Bytes) -> Result<Bytes, ApplierError> {
        self.applied = index;
        Ok(Bytes::new())
    }

    fn snapshot(&mut self) -> Result<(Index, Bytes), ApplierError> {
        Ok((self.applied, Bytes::new()))
    }

    fn restore(&mut self, meta: &SnapshotMeta, _: &Bytes) -> Result<(), ApplierError> {
        self.applied = meta.last_index;
        Ok(())
    }
}

/// Running totals of one node's group commits, fed by [`Metrics::observe_persist`].
#[derive(Debug, Default)]
pub struct PersistStats {
    /// Persisted batches: one `sync` (fsync) each.
    batches: AtomicU64,
    /// Entries in those batches.
    entries: AtomicU64,
    /// Sum of their latencies (writes + fsync), in nanoseconds.
    nanos: AtomicU64,
}

/// A copy of [`PersistStats`] at one moment, or the difference of two.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PersistCount {
    /// Persisted batches (fsyncs).
    pub batches: u64,
    /// Entries in them.
    pub entries: u64,
    /// Total time spent persisting them.
    pub busy: Duration,
}

impl PersistStats {
    /// The totals now.
    fn read(&self) -> PersistCount {
        PersistCount {
            batches: self.batches.load(Ordering::Relaxed),
            entries: self.entries.load(Ordering::Relaxed),
            busy: Duration::from_nanos(self.nanos.load(Ordering::Relaxed)),
        }
    }
}

impl PersistCount {
    /// What happened between `earlier` and `self`.
    fn since(self, earlier: PersistCount) -> PersistCount {
        PersistCount {
            batches: self.batches.saturating_sub(earlier.batches),
            entries: self.entries.saturating_sub(earlier.entries),
            busy: self.busy.saturating_sub(earlier.busy),
        }
    }
}

/// The [`Metrics`] of each benchmark node: counts group commits and nothing else.
struct PersistMetrics(Arc<PersistStats>);

impl Metrics for PersistMetrics {
    fn observe_persist(&self, entries: usize, latency: Duration) {
        let stats = &self.0;
        stats.batches.fetch_add(1, Ordering::Relaxed);
        stats.entries.fetch_add(entries as u64, Ordering::Relaxed);
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        stats.nanos.fetch_add(nanos, Ordering::Relaxed);
    }
}

/// What one row measured.
#[derive(Debug, Clone)]
pub struct RowResult {
    /// Concurrent clients.
    pub clients: usize,
    /// Proposals applied and answered inside the window.
    pub ops: u64,
    /// Proposals that failed inside the window (not leader, timeout, ...).
    pub errors: u64,
    /// Length of the measured window.
    pub window: Duration,
    /// Latency of one `propose_and_wait`, for the operations counted in `ops`.
    pub latency: Option<Percentiles>,
    /// CPU time of the whole process over the window, if it could be read.
    pub cpu: Option<Duration>,
    /// Group commits of each node over the window.
    pub persist: Vec<PersistCount>,
    /// Position of the node that led when the window opened.
    pub leader: usize,
    /// Whether another node led when the window closed.
    pub leader_changed: bool,
}

impl RowResult {
    /// Operations per second.
    pub fn ops_per_sec(&self) -> f64 {
        per_sec(self.ops, self.window)
    }

    /// CPU time per operation.
    pub fn cpu_per_op(&self) -> Option<Duration> {
        let cpu = self.cpu?;
        let ops = u32::try_from(self.ops).ok().filter(|&n| n > 0)?;
        Some(cpu / ops)
    }

    /// Cores kept busy on average: CPU time over wall time.
    pub fn cores_busy(&self) -> Option<f64> {
        let secs = self.window.as_secs_f64();
        self.cpu
            .filter(|_| secs > 0.0)
            .map(|c| c.as_secs_f64() / secs)
    }
}

/// `n` per second over `window`.
pub fn per_sec(n: u64, window: Duration) -> f64 {
    let secs = window.as_secs_f64();
    if secs > 0.0 {
        n as f64 / secs
    } else {
        f64::NAN
    }
}

/// What one client saw.
#[derive(Debug, Default)]
struct ClientResult {
    /// Nanoseconds per call (saturating at about 4.3 s), in completion order: a sequential
    /// push per call is the cheapest record (a histogram per client costs a cache miss per
    /// call with a thousand clients).
    latencies: Vec<u32>,
    /// Operations per call (the batch size).
    per_call: u64,
    errors: u64,
}

/// Runs one row: builds a cluster whose node `i` stores into `make_storage(i)`, waits for
/// a leader, runs `clients` clients through the warm-up and the window, stops the cluster.
pub fn run_row<S, F>(
    args: &LoadArgs,
    clients: usize,
    mut make_storage: F,
) -> Result<RowResult, Box<dyn Error>>
where
    S: Storage,
    F: FnMut(usize) -> Result<S, Box<dyn Error>>,
{
    let window = args.window()?;
    let warmup = args.warmup()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.worker_threads)
        .enable_all()
        .build()
        .map_err(|e| format!("building the tokio runtime: {e}"))?;
    let mut storages = Vec::with_capacity(NODES);
    for i in 0..NODES {
        storages.push(make_storage(i)?);
    }
    runtime.block_on(async move {
        let net = LocalNetwork::new();
        let stats: Vec<Arc<PersistStats>> = (0..NODES).map(|_| Arc::default()).collect();
        let mut nodes = Vec::with_capacity(NODES);
        for (i, storage) in storages.into_iter().enumerate() {
            let mut builder = RaftBuilder::new()
                .with_config(config(i, args.max_entries_per_request))
                .with_storage(storage)
                .with_applier(Discard::default())
                .with_network(net.transport(node_id(i)))
                .with_metrics(PersistMetrics(stats[i].clone()));
            if !args.threaded_applier {
                builder = builder.with_inline_applier();
            }
            let node = builder.build()?;
            node.start()?;
            nodes.push(node);
        }
        let nodes: Arc<[Raft]> = nodes.into();
        let result = measure(&nodes, &stats, clients, args.batch, warmup, window).await;
        for node in nodes.iter() {
            node.stop().await;
        }
        result
    })
}

/// The clients' part of [`run_row`], on a running cluster.
async fn measure(
    nodes: &Arc<[Raft]>,
    stats: &[Arc<PersistStats>],
    clients: usize,
    batch: usize,
    warmup: Duration,
    window: Duration,
) -> Result<RowResult, Box<dyn Error>> {
    let leader = wait_for_leader(nodes).await?;
    let shared_leader = Arc::new(AtomicUsize::new(leader));
    let open = Instant::now() + warmup;
    let close = open + window;
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (nodes, leader) = (nodes.clone(), shared_leader.clone());
            tokio::spawn(client(nodes, leader, batch, open, close))
        })
        .collect();

    tokio::time::sleep_until(open.into()).await;
    let cpu_open = machine::process_cpu_time();
    let persist_open: Vec<PersistCount> = stats.iter().map(|s| s.read()).collect();
    tokio::time::sleep_until(close.into()).await;
    let cpu_close = machine::process_cpu_time();
    let persist_close: Vec<PersistCount> = stats.iter().map(|s| s.read()).collect();
    let leader_changed = current_leader(nodes) != Some(leader);

    let mut latencies = Histogram::default();
    let mut errors = 0;
    for task in tasks {
        let r = task
            .await
            .map_err(|e| format!("a client task failed: {e}"))?;
        for &ns in &r.latencies {
            latencies.record_n(Duration::from_nanos(u64::from(ns)), r.per_call);
        }
        errors += r.errors;
    }
    Ok(RowResult {
        clients,
        ops: latencies.count(),
        errors,
        window,
        latency: latencies.percentiles(),
        cpu: cpu_open.zip(cpu_close).map(|(a, b)| b.saturating_sub(a)),
        persist: persist_close
            .into_iter()
            .zip(persist_open)
            .map(|(c, o)| c.since(o))
            .collect(),
        leader,
        leader_changed,
    })
}

/// One client: proposes an empty command on the leader and waits for its result, again
/// and again, until the window closes. Records the latency of every operation that
/// completes inside the window.
async fn client(
    nodes: Arc<[Raft]>,
    leader: Arc<AtomicUsize>,
    batch: usize,
    open: Instant,
    close: Instant,
) -> ClientResult {
    let mut out = ClientResult {
        per_call: batch as u64,
        ..ClientResult::default()
    };
    // One clock read per call: a call starts when the previous one ended.
    let mut started = Instant::now();
    loop {
        if started >= close {
            return out;
        }
        let target = leader.load(Ordering::Relaxed) % nodes.len();
        let Some(node) = nodes.get(target) else {
            return out;
        };
        let outcome = if batch == 1 {
            node.propose_and_wait(Bytes::new()).await.map(|_| ())
        } else {
            let commands = std::iter::repeat_n(Bytes::new(), batch);
            node.propose_batch_and_wait(commands).await.map(|_| ())
        };
        let done = Instant::now();
        let counted = done >= open && done <= close;
        match outcome {
            Ok(()) => {
                if counted {
                    let ns = (done - started).as_nanos();
                    out.latencies.push(u32::try_from(ns).unwrap_or(u32::MAX));
                }
                started = done;
            }
            Err(e) => {
                if counted {
                    out.errors += 1;
                }
                if let RaftError::NotLeader { .. } = e {
                    if let Some(l) = current_leader(&nodes) {
                        leader.store(l, Ordering::Relaxed);
                    }
                }
                tokio::time::sleep(RETRY_PAUSE).await;
                started = Instant::now();
            }
        }
    }
}

/// The position of the node that believes it leads, if exactly one does.
fn current_leader(nodes: &[Raft]) -> Option<usize> {
    let mut leaders = (0..nodes.len()).filter(|&i| nodes[i].get_state().1);
    let first = leaders.next()?;
    leaders.next().is_none().then_some(first)
}

/// Waits (bounded) until exactly one node leads.
async fn wait_for_leader(nodes: &[Raft]) -> Result<usize, String> {
    let deadline = Instant::now() + ELECTION_WAIT;
    loop {
        if let Some(l) = current_leader(nodes) {
            return Ok(l);
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "no leader was elected within {} s",
                ELECTION_WAIT.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Id of node `i`.
fn node_id(i: usize) -> NodeId {
    NodeId::from(format!("node-{}", i + 1))
}

/// Configuration of node `i`: the library's defaults (100 ms ticks, election after 10
/// ticks, snapshots every 10,000 entries), except the entries per AppendEntries, which
/// follow `--max-entries-per-request` (openraft's benchmark sets its own to 1024 too).
fn config(i: usize, max_entries_per_request: usize) -> Config {
    let peers = (0..NODES)
        .map(|k| PeerConfig {
            id: node_id(k),
            // Never dialled: LocalNetwork routes by id.
            address: format!("in-process:{}", k + 1),
        })
        .collect();
    let mut config = Config::new(node_id(i), peers);
    config.options.max_log_entries_per_request = max_entries_per_request;
    config
}
