//! The `failover` scenario: how long a 3-node `raftkv` cluster (default timing: 100 ms
//! ticks, election timeout 10 ticks randomized up to 20) is without a leader, and without
//! accepting writes, after its leader is killed with SIGKILL.
//!
//! A writer task puts continuously: one request at a time, retrying on another node 5 ms
//! after any failure (following redirects), so that its own back-off adds at most a few
//! milliseconds. Each round kills the agreed leader, then polls the survivors' `/health`
//! every ~5 ms until one of them is leader in a newer term (*elected*), and waits for the
//! first write that was sent after the kill and succeeded (*first write*). Then the killed
//! node is restarted on its data directory and the round ends once it has applied what the
//! leader had committed when it came back (*caught up*).

use std::error::Error;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Args;
use serde_json::Value;

use crate::machine;
use crate::raftkv_bin::{self, KvCluster};
use crate::report::{self, Align, Percentiles, Table};

/// Options of `raftlock-bench failover`.
#[derive(Debug, Clone, Args)]
pub struct FailoverArgs {
    /// How many times to kill the leader.
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub rounds: usize,
    /// Bytes of each written value.
    #[arg(long, value_name = "BYTES", default_value_t = 256)]
    pub value_size: usize,
    /// Seconds to wait after a restarted node caught up, before the next kill.
    #[arg(long, value_name = "S", default_value_t = 0.5)]
    pub settle: f64,
    /// Directory for the nodes' data (a temporary directory is made inside it).
    /// Default: inside ./target if it exists, else $TMPDIR.
    #[arg(long, value_name = "PATH")]
    pub dir: Option<PathBuf>,
}

/// How long to wait for an election, a write or a catch-up before giving up.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Interval of the survivors' `/health` polls and of the writer's retries.
const POLL: Duration = Duration::from_millis(5);

/// Reads one measure of a round.
type Measure = fn(&Round) -> Option<Duration>;

/// Start and end of every successful write.
type WriteLog = Arc<Mutex<Vec<(Instant, Instant)>>>;

/// One round's measurements.
struct Round {
    killed: usize,
    new_leader: Option<String>,
    elected: Option<Duration>,
    first_write: Option<Duration>,
    caught_up: Duration,
}

/// Runs the scenario and prints the report.
pub fn run(args: &FailoverArgs) -> Result<(), Box<dyn Error>> {
    if args.rounds == 0 || args.value_size > 4 << 20 || !(0.0..1e6).contains(&args.settle) {
        return Err(
            "--rounds must be at least 1, --value-size at most 4 MiB, --settle >= 0".into(),
        );
    }
    machine::print_header();
    let binary = raftkv_bin::locate()?;
    println!(
        "failover: {} raftkv node processes on loopback with default timing (100 ms ticks, \
         election timeout 10-20 ticks), one writer putting continuously; the leader is \
         killed with SIGKILL {} times",
        raftkv_bin::NODES,
        args.rounds
    );
    let rt = raftkv_bin::runtime(2)?;
    let (rounds, writes, errors) = rt.block_on(async {
        let mut kv = KvCluster::start(&binary, args.dir.as_deref(), &[])?;
        kv.leader().await?;
        let urls: Vec<String> = (0..raftkv_bin::NODES).map(|i| kv.url(i)).collect();
        let log: WriteLog = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let errors = Arc::new(AtomicU64::new(0));
        let value = raftkv_bin::value(args.value_size);
        let w = tokio::spawn(writer(
            urls,
            value,
            log.clone(),
            stop.clone(),
            errors.clone(),
        ));
        let mut rounds = Vec::new();
        let mut outcome = Ok(());
        for n in 1..=args.rounds {
            match round(&mut kv, &log).await {
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
        w.await?;
        outcome?;
        let writes = log.lock().map_or(0, |l| l.len());
        Ok::<_, Box<dyn Error>>((rounds, writes, errors.load(Ordering::SeqCst)))
    })?;
    let mut table = Table::new(&[
        ("round", Align::Right),
        ("killed", Align::Left),
        ("new leader", Align::Left),
        ("elected", Align::Right),
        ("first write", Align::Right),
        ("caught up", Align::Right),
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
    let opt = |d: Option<Duration>| d.map_or_else(|| "timeout".into(), report::duration);
    vec![
        format!("node-{}", r.killed + 1),
        r.new_leader.clone().unwrap_or_else(|| "-".into()),
        opt(r.elected),
        opt(r.first_write),
        report::duration(r.caught_up),
    ]
}

/// Kills the leader, measures, restarts it and waits until it caught up.
async fn round(kv: &mut KvCluster, log: &WriteLog) -> Result<Round, Box<dyn Error>> {
    let leader = kv.leader().await?;
    let url = kv.url(leader);
    let term = kv.client.get_json(&url, "/health").await?["term"]
        .as_u64()
        .unwrap_or(0);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_millis(500))
        .build()?;
    let survivors: Vec<String> = (0..raftkv_bin::NODES)
        .filter(|&i| i != leader)
        .map(|i| kv.url(i))
        .collect();
    let kill_at = Instant::now();
    kv.cluster.kill(leader)?;
    let mut new_leader = None;
    let mut elected = None;
    while kill_at.elapsed() < TIMEOUT && elected.is_none() {
        for s in &survivors {
            let Some(h) = health(&http, s).await else {
                continue;
            };
            if h["role"].as_str() == Some("Leader") && h["term"].as_u64() > Some(term) {
                elected = Some(kill_at.elapsed());
                new_leader = h["id"].as_str().map(str::to_string);
                break;
            }
        }
        tokio::time::sleep(POLL).await;
    }
    let mut first_write = None;
    while kill_at.elapsed() < TIMEOUT && first_write.is_none() {
        first_write = log
            .lock()
            .map_err(|_| "write log poisoned")?
            .iter()
            .rev()
            .take_while(|(start, _)| *start >= kill_at)
            .last()
            .map(|(_, end)| end.duration_since(kill_at));
        tokio::time::sleep(POLL).await;
    }
    kv.cluster.restart(leader)?;
    let back = Instant::now();
    let mut target = 0;
    for s in &survivors {
        if let Some(s) = status(&http, s).await {
            target = target.max(s["commit_index"].as_u64().unwrap_or(0));
        }
    }
    loop {
        if let Some(s) = status(&http, &url).await {
            if s["last_applied"].as_u64().unwrap_or(0) >= target && s["leader_id"].is_string() {
                break;
            }
        }
        if back.elapsed() > TIMEOUT {
            return Err(format!(
                "node-{} did not catch up to index {target} within {TIMEOUT:?}; its log:\n{}",
                leader + 1,
                kv.cluster.log_tail(leader, 20)
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(Round {
        killed: leader,
        new_leader,
        elected,
        first_write,
        caught_up: back.elapsed(),
    })
}

/// `GET /health` of `url`, or `None` if it does not answer.
async fn health(http: &reqwest::Client, url: &str) -> Option<Value> {
    get_json(http, &format!("{url}/health")).await
}

/// `GET /status` of `url`, or `None` if it does not answer.
async fn status(http: &reqwest::Client, url: &str) -> Option<Value> {
    get_json(http, &format!("{url}/status")).await
}

/// A JSON answer of a `GET`, or `None` on any failure.
async fn get_json(http: &reqwest::Client, url: &str) -> Option<Value> {
    let response = http.get(url).send().await.ok()?;
    if !response.status().is_success() {
        return None;
    }
    serde_json::from_slice(&response.bytes().await.ok()?).ok()
}

/// Puts continuously until `stop`, moving to the next node 5 ms after any failure.
async fn writer(
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
    let (mut node, mut n) = (0usize, 0u64);
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let url = format!(
            "{}/kv/{}",
            urls[node % urls.len()],
            raftkv_bin::key(n % 1000)
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

/// Min / p50 / max of each measure, against the targets.
fn summary(rounds: &[Round]) {
    let mut table = Table::new(&[
        ("measure", Align::Left),
        ("rounds", Align::Right),
        ("min", Align::Right),
        ("p50", Align::Right),
        ("max", Align::Right),
        ("target p50 < 1.5 s, max < 2.5 s", Align::Left),
    ]);
    let measures: [(&str, Measure, bool); 3] = [
        ("leader elected", |r| r.elected, true),
        ("first write succeeded", |r| r.first_write, true),
        ("restarted node caught up", |r| Some(r.caught_up), false),
    ];
    for (name, get, targeted) in measures {
        let mut samples: Vec<Duration> = rounds.iter().filter_map(get).collect();
        let timeouts = rounds.len() - samples.len();
        let Some(p) = Percentiles::of(&mut samples) else {
            table.row(vec![name.into(), format!("0 ({timeouts} timeouts)")]);
            continue;
        };
        let met = timeouts == 0
            && p.p50 < Duration::from_millis(1500)
            && p.max < Duration::from_millis(2500);
        table.row(vec![
            name.into(),
            if timeouts == 0 {
                samples.len().to_string()
            } else {
                format!("{} ({timeouts} timeouts)", samples.len())
            },
            report::duration(samples[0]),
            report::duration(p.p50),
            report::duration(p.max),
            match (targeted, met) {
                (false, _) => "-".into(),
                (true, true) => "met".into(),
                (true, false) => "MISSED".into(),
            },
        ]);
    }
    println!("{table}");
}
