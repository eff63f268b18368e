//! Hand-off of one contended lock: one client holds it, another waits in its queue (a
//! blocking acquire, started 20 ms before the release so that it is queued); the holder
//! releases. Measured per hand-off: from sending the release to the waiter's grant, and
//! from the release's acknowledgement to the waiter's grant (negative when the waiter
//! heard first). Then the two swap roles.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::target::LockClient;

/// What the hand-offs measured.
pub struct HandoffResult {
    /// Release sent → waiter granted.
    pub from_send: Vec<Duration>,
    /// Release acknowledged → waiter granted, in microseconds (signed).
    pub from_ack_us: Vec<i64>,
}

const LOCK: &str = "bench/handoff";

/// `rounds` hand-offs between `a` and `b`.
pub async fn run<C: LockClient>(
    a: Arc<C>,
    b: Arc<C>,
    rounds: usize,
) -> Result<HandoffResult, String> {
    let mut result = HandoffResult {
        from_send: Vec::with_capacity(rounds),
        from_ack_us: Vec::with_capacity(rounds),
    };
    let (mut holder, mut waiter) = (a, b);
    let mut held = holder.acquire(LOCK).await?;
    for _ in 0..rounds {
        let w = waiter.clone();
        let waiting = tokio::spawn(async move {
            let r = w.acquire(LOCK).await;
            (r, Instant::now())
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let sent = Instant::now();
        if let Err(e) = holder.release(held).await {
            return Err(format!("release failed: {e}"));
        }
        let acked = Instant::now();
        let (granted, at) = waiting.await.map_err(|e| e.to_string())?;
        held = granted?;
        result.from_send.push(at.saturating_duration_since(sent));
        let signed = if at >= acked {
            i64::try_from(at.duration_since(acked).as_micros()).unwrap_or(i64::MAX)
        } else {
            -i64::try_from(acked.duration_since(at).as_micros()).unwrap_or(i64::MAX)
        };
        result.from_ack_us.push(signed);
        std::mem::swap(&mut holder, &mut waiter);
    }
    holder.release(held).await?;
    Ok(result)
}

/// The `q` quantile (0..=1) of signed samples.
pub fn quantile(samples: &[i64], q: f64) -> Option<i64> {
    if samples.is_empty() {
        return None;
    }
    let mut s = samples.to_vec();
    s.sort_unstable();
    let i = ((s.len() - 1) as f64 * q).round() as usize;
    s.get(i).copied()
}
