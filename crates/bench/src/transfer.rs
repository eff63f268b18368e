//! The `transfer` scenario: how long a 3-node `raftkv` cluster (default timing: 100 ms
//! ticks, election timeout 10 ticks) stops taking writes while its leadership moves with
//! `POST /v1/leader/transfer`.
//!
//! A few writer tasks put continuously, one request at a time each, starting on different
//! nodes, following redirects, and retrying on the next node 5 ms after any failure (a 503
//! from a leader whose transfer is under way, a redirect to a node that no longer leads),
//! so that their own back-off adds at most a few milliseconds. Each round asks the leader
//! to hand leadership to the next member (round robin) and measures:
//!
//! - *transfer call*: the `POST /v1/leader/transfer` request, sent to the leader, from
//!   sending to its answer (the old leader answers once it has heard from the new one);
//! - *server took*: the `took_ms` of that answer (the same, measured by the server);
//! - *unavailability*: the longest gap between two consecutive successful writes (by
//!   completion time), from the last write that completed before the call to the first
//!   write that was sent after the answer and succeeded;
//! - *steady gap*: for comparison, the longest gap between two consecutive successful
//!   writes in the 400 ms before the call, when nothing else happened (with the default
//!   `--settle` of 0.5 s).
//!
//! Then the writers run alone for `--settle` seconds before the next round.

use std::error::Error;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Args;
use serde_json::{json, Value};

use crate::machine;
use crate::raftkv_bin::{self, KvCluster};
use crate::report::{self, Align, Percentiles, Table};

/// Options of `raftlock-bench transfer`.
#[derive(Debug, Clone, Args)]
pub struct TransferArgs {
    /// How many leadership transfers.
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub rounds: usize,
    /// Writer tasks putting continuously, one request at a time each.
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub writers: usize,
    /// Bytes of each written value.
    #[arg(long, value_name = "BYTES", default_value_t = 256)]
    pub value_size: usize,
    /// Seconds of writes alone between two transfers.
    #[arg(long, value_name = "S", default_value_t = 0.5)]
    pub settle: f64,
    /// Directory for the nodes' data (a temporary directory is made inside it).
    /// Default: inside ./target if it exists, else $TMPDIR.
    #[arg(long, value_name = "PATH")]
    pub dir: Option<PathBuf>,
}

/// How long to wait for a transfer or for the writes after it before giving up.
const TIMEOUT: Duration = Duration::from_secs(30);

/// The writers' pause after a failure, and the poll interval.
const POLL: Duration = Duration::from_millis(5);

/// The window before each transfer in which the steady gap is measured.
const STEADY_WINDOW: Duration = Duration::from_millis(400);

/// Start and end of every successful write.
type WriteLog = Arc<Mutex<Vec<(Instant, Instant)>>>;

/// One round's measurements.
struct Round {
    from: String,
    to: String,
    call: Duration,
    server_took: Duration,
    unavailable: Duration,
    steady: Duration,
}

/// Runs the scenario and prints the report.
pub fn run(args: &TransferArgs) -> Result<(), Box<dyn Error>> {
    if args.rounds == 0
        || args.writers == 0
        || args.writers > 256
        || args.value_size > 4 << 20
        || !(0.0..1e6).contains(&args.settle)
    {
        return Err(
            "--rounds and --writers must be at least 1, --writers at most 256, \
                    --value-size at most 4 MiB, --settle >= 0"
                .into(),
        );
    }
    machine::print_header();
    let binary = raftkv_bin::locate()?;
    println!(
        "transfer: {} raftkv node processes on loopback with default timing (100 ms ticks, \
         election timeout 10-20 ticks), {} writers putting continuously; leadership is \
         moved {} times with POST /v1/leader/transfer, round robin",
        raftkv_bin::NODES,
        args.writers,
        args.rounds
    );
    let rt = raftkv_bin::runtime(2)?;
    let (rounds, writes, errors) = rt.block_on(async {
        let kv = KvCluster::start(&binary, args.dir.as_deref(), &[])?;
        kv.leader().await?;
        let urls: Vec<String> = (0..raftkv_bin::NODES).map(|i| kv.url(i)).collect();
        let log: WriteLog = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let errors = Arc::new(AtomicU64::new(0));
        let value = raftkv_bin::value(args.value_size);
        let writers: Vec<_> = (0..args.writers)
            .map(|w| {
                tokio::spawn(writer(
                    w,
                    urls.clone(),
                    value.clone(),
                    log.clone(),
                    stop.clone(),
                    errors.clone(),
                ))
            })
            .collect();
        // Warm up: connections open, the log has entries.
        tokio::time::sleep(Duration::from_secs_f64(args.settle.max(0.5))).await;
        let mut rounds = Vec::new();
        let mut outcome = Ok(());
        for n in 1..=args.rounds {
            match round(&kv, &log).await {
                Ok(r) => {
                    println!("round {n}: {}", cells(&r).join(" | "));
                    rounds.push(r);
                }
                Err(e) => {
                    outcome = Err(e);
                    break;
                }
            }
            tokio::time::sleep(Duration::from_secs_f64(args.settle)).await;
        }
        stop.store(true, Ordering::SeqCst);
        for w in writers {
            w.await?;
        }
        outcome?;
        let writes = log.lock().map_or(0, |l| l.len());
        Ok::<_, Box<dyn Error>>((rounds, writes, errors.load(Ordering::SeqCst)))
    })?;
    let mut table = Table::new(&[
        ("round", Align::Right),
        ("from", Align::Left),
        ("to", Align::Left),
        ("transfer call", Align::Right),
        ("server took", Align::Right),
        ("unavailability", Align::Right),
        ("steady gap", Align::Right),
    ]);
    for (n, r) in rounds.iter().enumerate() {
        let mut row = vec![(n + 1).to_string()];
        row.extend(cells(r));
        table.row(row);
    }
    println!("\n{table}");
    println!("writes: {writes} succeeded, {errors} failed or refused (retried)\n");
    summary(&rounds);
    Ok(())
}

/// A round's cells, without the round number.
fn cells(r: &Round) -> Vec<String> {
    vec![
        r.from.clone(),
        r.to.clone(),
        report::duration(r.call),
        report::duration(r.server_took),
        report::duration(r.unavailable),
        report::duration(r.steady),
    ]
}

/// Moves the leadership to the next member and measures.
async fn round(kv: &KvCluster, log: &WriteLog) -> Result<Round, Box<dyn Error>> {
    let leader = kv.leader().await?;
    let target = (leader + 1) % raftkv_bin::NODES;
    let from = kv.cluster.nodes()[leader].id.clone();
    let to = kv.cluster.nodes()[target].id.clone();
    let http = reqwest::Client::builder().timeout(TIMEOUT).build()?;
    let started = Instant::now();
    let response = http
        .post(format!("{}/v1/leader/transfer", kv.url(leader)))
        .header("content-type", "application/json")
        .body(json!({ "to": to }).to_string())
        .send()
        .await?;
    let status = response.status();
    let answer: Value = serde_json::from_slice(&response.bytes().await?).unwrap_or(Value::Null);
    let answered = Instant::now();
    let call = answered.duration_since(started);
    if !status.is_success() || answer["leader"].as_str() != Some(to.as_str()) {
        return Err(format!("transfer {from} -> {to}: HTTP {status}: {answer}").into());
    }
    let server_took = Duration::from_millis(answer["took_ms"].as_u64().unwrap_or(0));
    // Wait for the first write sent after the answer to succeed.
    loop {
        let done = log
            .lock()
            .map_err(|_| "write log poisoned")?
            .iter()
            .any(|(start, _)| *start >= answered);
        if done {
            break;
        }
        if answered.elapsed() > TIMEOUT {
            return Err(format!("no write succeeded within {TIMEOUT:?} of {from} -> {to}").into());
        }
        tokio::time::sleep(POLL).await;
    }
    let ends: Vec<(Instant, Instant)> = log.lock().map_err(|_| "write log poisoned")?.clone();
    Ok(Round {
        from,
        to,
        call,
        server_took,
        unavailable: longest_gap(&ends, started, answered),
        steady: steady_gap(
            &ends,
            started.checked_sub(STEADY_WINDOW).unwrap_or(started),
            started,
        ),
    })
}

/// The longest time without a successful write (by completion) from the last write that
/// completed before `from` to the first write sent at or after `until` that succeeded.
fn longest_gap(writes: &[(Instant, Instant)], from: Instant, until: Instant) -> Duration {
    let mut ends: Vec<Instant> = writes.iter().map(|(_, end)| *end).collect();
    ends.sort_unstable();
    let last = writes
        .iter()
        .filter(|(start, _)| *start >= until)
        .map(|(_, end)| *end)
        .min()
        .unwrap_or(until);
    let mut prev = ends
        .iter()
        .copied()
        .filter(|&e| e <= from)
        .max()
        .unwrap_or(from);
    let mut longest = Duration::ZERO;
    for &e in ends.iter().filter(|&&e| e > from && e <= last) {
        longest = longest.max(e.duration_since(prev));
        prev = e;
    }
    longest
}

/// The longest gap between consecutive successful writes (by completion) that completed
/// within `[from, to)`.
fn steady_gap(writes: &[(Instant, Instant)], from: Instant, to: Instant) -> Duration {
    let mut ends: Vec<Instant> = writes
        .iter()
        .map(|(_, end)| *end)
        .filter(|&e| e >= from && e < to)
        .collect();
    ends.sort_unstable();
    ends.windows(2)
        .map(|w| w[1].duration_since(w[0]))
        .max()
        .unwrap_or(Duration::ZERO)
}

/// Puts continuously until `stop`, starting on node `first`, moving to the next node 5 ms
/// after any failure.
async fn writer(
    first: usize,
    urls: Vec<String>,
    value: Bytes,
    log: WriteLog,
    stop: Arc<AtomicBool>,
    errors: Arc<AtomicU64>,
) {
    let Ok(http) = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .connect_timeout(Duration::from_millis(200))
        .build()
    else {
        return;
    };
    let (mut node, mut n) = (first, first as u64 * 1_000_000);
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let url = format!(
            "{}/kv/{}",
            urls[node % urls.len()],
            raftkv_bin::key(n % 1000 + first as u64 * 1000)
        );
        let start = Instant::now();
        let ok = match http.put(url).body(value.clone()).send().await {
            Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
            Err(_) => false,
        };
        if ok {
            if let Ok(mut l) = log.lock() {
                l.push((start, Instant::now()));
            }
        } else {
            errors.fetch_add(1, Ordering::Relaxed);
            node += 1;
            tokio::time::sleep(POLL).await;
        }
    }
}

/// Min / p50 / max of each measure, against the target.
fn summary(rounds: &[Round]) {
    let mut table = Table::new(&[
        ("measure", Align::Left),
        ("rounds", Align::Right),
        ("min", Align::Right),
        ("p50", Align::Right),
        ("max", Align::Right),
        ("target p50 < 50 ms", Align::Left),
        ("all values (ms)", Align::Left),
    ]);
    type Measure = fn(&Round) -> Duration;
    let measures: [(&str, Measure, bool); 4] = [
        (
            "unavailability (longest gap between writes)",
            |r| r.unavailable,
            true,
        ),
        ("transfer call", |r| r.call, false),
        ("server took", |r| r.server_took, false),
        ("steady gap (400 ms before the call)", |r| r.steady, false),
    ];
    for (name, get, targeted) in measures {
        let values: Vec<Duration> = rounds.iter().map(get).collect();
        let mut sorted = values.clone();
        let Some(p) = Percentiles::of(&mut sorted) else {
            continue;
        };
        let all: Vec<String> = values
            .iter()
            .map(|d| format!("{:.1}", d.as_secs_f64() * 1e3))
            .collect();
        table.row(vec![
            name.into(),
            values.len().to_string(),
            report::duration(sorted[0]),
            report::duration(p.p50),
            report::duration(p.max),
            match (targeted, p.p50 < Duration::from_millis(50)) {
                (false, _) => "-".into(),
                (true, true) => "met".into(),
                (true, false) => "MISSED".into(),
            },
            all.join(", "),
        ]);
    }
    println!("{table}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gap_spans_from_before_the_call_to_the_first_write_after_it() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        // Writes (start, end): steady every 2 ms, then a hole from 10 to 40 ms.
        let writes = vec![
            (at(0), at(2)),
            (at(2), at(4)),
            (at(8), at(10)),
            (at(10), at(40)), // sent before the answer, completed after the hole
            (at(41), at(43)), // the first write sent after the answer (at 41)
            (at(43), at(100)),
        ];
        let gap = longest_gap(&writes, at(11), at(41));
        assert_eq!(gap, Duration::from_millis(30));
        // Nothing before the call: the gap starts at the call.
        let gap = longest_gap(&writes[3..], at(11), at(41));
        assert_eq!(gap, Duration::from_millis(29));
        assert_eq!(
            steady_gap(&writes, at(0), at(41)),
            Duration::from_millis(30)
        );
        assert_eq!(steady_gap(&writes, at(0), at(11)), Duration::from_millis(6));
    }
}
