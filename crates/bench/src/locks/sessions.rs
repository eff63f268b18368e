//! How many sessions a cluster keeps alive: N sessions with a TTL, each renewed every
//! period over a few long-lived keep-alive streams to the leader (spread evenly over the
//! period), while the servers' CPU is measured. Sessions are handed to the renewal
//! schedule as soon as they are created, so none expires while the rest are being made.

use std::collections::HashMap;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_stream::{Stream, StreamExt};

use crate::machine;
use crate::report::Percentiles;

/// Renewal rounds are spread over this many ticks per period.
const TICKS_PER_PERIOD: u32 = 30;

/// Answers of a keep-alive stream: the session and whether it is still alive.
pub type Answers<Id> = Pin<Box<dyn Stream<Item = Result<(Id, bool), String>> + Send>>;

/// An open keep-alive stream: where ids go in, and where answers come out.
pub type Channel<Id> = (mpsc::Sender<Id>, Answers<Id>);

/// A system whose sessions can be created and kept alive.
pub trait KeepAlive: Send + Sync + 'static {
    /// A session's id.
    type Id: Clone + Eq + Hash + Send + Sync + 'static;

    /// Creates one session with `ttl`.
    fn create(
        &self,
        ttl: Duration,
    ) -> impl std::future::Future<Output = Result<Self::Id, String>> + Send;

    /// Opens a keep-alive stream to the leader: ids go in, answers come out.
    fn open(&self) -> impl std::future::Future<Output = Result<Channel<Self::Id>, String>> + Send;

    /// Live sessions the cluster reports.
    fn alive(&self) -> impl std::future::Future<Output = Option<u64>> + Send;
}

/// What the scenario measured.
pub struct SessionsResult {
    /// Sessions created.
    pub created: usize,
    /// Seconds it took.
    pub create_secs: f64,
    /// Renewals answered in the measured window.
    pub renewals: u64,
    /// Answers saying a session was gone (any phase).
    pub expired: u64,
    /// Failed streams or sends.
    pub errors: u64,
    /// Send → answer of one renewal, in the window.
    pub latency: Option<Percentiles>,
    /// The servers' CPU, in cores, over the window (all, and the busiest one).
    pub cores: Option<f64>,
    /// The busiest server's CPU, in cores.
    pub busiest_core: Option<f64>,
    /// This process's CPU (the load generator), in cores.
    pub loadgen_cores: Option<f64>,
    /// Live sessions the cluster reports at the end, less those before the run.
    pub alive: Option<u64>,
}

/// Parameters of one run.
pub struct Plan {
    /// Sessions to keep alive.
    pub sessions: usize,
    /// Their TTL.
    pub ttl: Duration,
    /// How often each is renewed.
    pub period: Duration,
    /// Keep-alive streams.
    pub streams: usize,
    /// Creations in flight at once.
    pub create_concurrency: usize,
    /// Measured window (after everything is created and one full period has passed).
    pub window: Duration,
}

struct StreamState<Id> {
    ids: Mutex<Vec<Id>>,
    sent: Mutex<HashMap<Id, Instant>>,
    samples: Mutex<Vec<Duration>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs the plan against `system`, whose servers are `pids`.
pub async fn run<K: KeepAlive>(
    system: Arc<K>,
    pids: &[u32],
    plan: &Plan,
) -> Result<SessionsResult, String> {
    let before = system.alive().await.unwrap_or(0);
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let renewals = Arc::new(AtomicU64::new(0));
    let expired = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let mut states = Vec::new();
    let mut tasks = Vec::new();
    for _ in 0..plan.streams.max(1) {
        let (tx, mut answers) = system.open().await?;
        let state: Arc<StreamState<K::Id>> = Arc::new(StreamState {
            ids: Mutex::new(Vec::new()),
            sent: Mutex::new(HashMap::new()),
            samples: Mutex::new(Vec::new()),
        });
        // Sender: each tick, the next slice of this stream's sessions.
        let (s, st) = (stop.clone(), state.clone());
        let tick = plan.period / TICKS_PER_PERIOD;
        let errs = errors.clone();
        tasks.push(tokio::spawn(async move {
            let mut ticker = tokio::time::interval(tick);
            let mut cursor = 0usize;
            while !s.load(Ordering::Relaxed) {
                ticker.tick().await;
                let batch: Vec<_> = {
                    let ids = lock(&st.ids);
                    let n = ids.len().div_ceil(TICKS_PER_PERIOD as usize);
                    (0..n.min(ids.len()))
                        .map(|k| ids[(cursor + k) % ids.len()].clone())
                        .collect()
                };
                cursor = cursor.wrapping_add(batch.len());
                let now = Instant::now();
                {
                    let mut sent = lock(&st.sent);
                    for id in &batch {
                        sent.insert(id.clone(), now);
                    }
                }
                for id in batch {
                    if tx.send(id).await.is_err() {
                        errs.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                }
            }
        }));
        // Receiver: latencies and counts.
        let (m, st, r, x, e) = (
            measuring.clone(),
            state.clone(),
            renewals.clone(),
            expired.clone(),
            errors.clone(),
        );
        tasks.push(tokio::spawn(async move {
            while let Some(answer) = answers.next().await {
                match answer {
                    Ok((id, alive)) => {
                        if !alive {
                            x.fetch_add(1, Ordering::Relaxed);
                        }
                        let sent = lock(&st.sent).remove(&id);
                        if m.load(Ordering::Relaxed) {
                            r.fetch_add(1, Ordering::Relaxed);
                            if let Some(at) = sent {
                                lock(&st.samples).push(at.elapsed());
                            }
                        }
                    }
                    Err(_) => {
                        e.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                }
            }
        }));
        states.push(state);
    }

    // Create the sessions, handing each to a stream at once.
    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let mut creators = Vec::new();
    for _ in 0..plan.create_concurrency.max(1) {
        let (system, next, states, errs) =
            (system.clone(), next.clone(), states.clone(), errors.clone());
        let (total, ttl) = (plan.sessions as u64, plan.ttl);
        creators.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return;
                }
                match system.create(ttl).await {
                    Ok(id) => lock(&states[i as usize % states.len()].ids).push(id),
                    Err(_) => {
                        errs.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    for c in creators {
        let _ = c.await;
    }
    let create_secs = started.elapsed().as_secs_f64();
    let created: usize = states.iter().map(|s| lock(&s.ids).len()).sum();

    // One full period so every session is on its renewal schedule, then measure.
    tokio::time::sleep(plan.period + Duration::from_secs(1)).await;
    let cpu = |pid: u32| machine::cpu_time_of(pid);
    let before_cpu: Vec<Option<Duration>> = pids.iter().map(|p| cpu(*p)).collect();
    let before_self = machine::process_cpu_time();
    let window_start = Instant::now();
    measuring.store(true, Ordering::Relaxed);
    tokio::time::sleep(plan.window).await;
    measuring.store(false, Ordering::Relaxed);
    let elapsed = window_start.elapsed().as_secs_f64();
    let after_cpu: Vec<Option<Duration>> = pids.iter().map(|p| cpu(*p)).collect();
    let after_self = machine::process_cpu_time();
    let alive = system.alive().await.map(|a| a.saturating_sub(before));
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.abort();
    }
    let per_node: Option<Vec<f64>> = before_cpu
        .iter()
        .zip(&after_cpu)
        .map(|(b, a)| Some(a.as_ref()?.saturating_sub((*b)?).as_secs_f64() / elapsed))
        .collect();
    let mut samples: Vec<Duration> = states
        .iter()
        .flat_map(|s| lock(&s.samples).clone())
        .collect();
    Ok(SessionsResult {
        created,
        create_secs,
        renewals: renewals.load(Ordering::Relaxed),
        expired: expired.load(Ordering::Relaxed),
        errors: errors.load(Ordering::Relaxed),
        latency: Percentiles::of(&mut samples),
        cores: per_node.as_ref().map(|v| v.iter().sum()),
        busiest_core: per_node
            .as_ref()
            .and_then(|v| v.iter().copied().reduce(f64::max)),
        loadgen_cores: match (before_self, after_self) {
            (Some(b), Some(a)) => Some(a.saturating_sub(b).as_secs_f64() / elapsed),
            _ => None,
        },
        alive,
    })
}
