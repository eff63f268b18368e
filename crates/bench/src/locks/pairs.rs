//! Uncontended acquire + release pairs: each client loops on a lock of its own, so every
//! pair is two writes through consensus and no waiting. Throughput, pair latency, and the
//! servers' CPU per pair over the measured window.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::target::LockClient;
use crate::report::Percentiles;

const WARMING: u8 = 0;
const MEASURING: u8 = 1;
const STOPPING: u8 = 2;

/// One row's results.
pub struct PairsResult {
    /// Pairs per second.
    pub per_sec: f64,
    /// Latency of one acquire + release.
    pub latency: Option<Percentiles>,
    /// The servers' CPU time per pair.
    pub cpu_per_pair: Option<Duration>,
    /// Failed operations (any phase).
    pub errors: u64,
}

/// Runs `clients` (each on its own lock) for `warmup` then `window`; `cpu` reads the
/// servers' total CPU time.
pub async fn run<C: LockClient>(
    clients: Vec<Arc<C>>,
    warmup: Duration,
    window: Duration,
    cpu: impl Fn() -> Option<Duration>,
) -> PairsResult {
    let phase = Arc::new(AtomicU8::new(WARMING));
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let phase = phase.clone();
            tokio::spawn(async move {
                let name = format!("bench/pair-{i}");
                let mut samples = Vec::new();
                let mut errors = 0u64;
                loop {
                    let p = phase.load(Ordering::Relaxed);
                    if p == STOPPING {
                        break;
                    }
                    let start = Instant::now();
                    let ok = match c.acquire(&name).await {
                        Ok(held) => c.release(held).await.is_ok(),
                        Err(_) => false,
                    };
                    if !ok {
                        errors += 1;
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    } else if p == MEASURING && phase.load(Ordering::Relaxed) == MEASURING {
                        samples.push(start.elapsed());
                    }
                }
                (samples, errors)
            })
        })
        .collect();
    tokio::time::sleep(warmup).await;
    let cpu_before = cpu();
    let start = Instant::now();
    phase.store(MEASURING, Ordering::Relaxed);
    tokio::time::sleep(window).await;
    phase.store(STOPPING, Ordering::Relaxed);
    let elapsed = start.elapsed();
    let cpu_after = cpu();
    let mut samples = Vec::new();
    let mut errors = 0;
    for t in tasks {
        if let Ok((s, e)) = t.await {
            samples.extend(s);
            errors += e;
        }
    }
    let pairs = samples.len() as u64;
    PairsResult {
        per_sec: pairs as f64 / elapsed.as_secs_f64(),
        latency: Percentiles::of(&mut samples),
        cpu_per_pair: match (cpu_before, cpu_after) {
            (Some(b), Some(a)) if pairs > 0 => {
                Some(a.saturating_sub(b) / u32::try_from(pairs).unwrap_or(u32::MAX))
            }
            _ => None,
        },
        errors,
    }
}
