//! The `soak` scenario: a long run of mixed writes and reads against a 3-node `raftkv`
//! cluster with snapshots on, watching the nodes' memory.
//!
//! `--clients` tasks, each with its own keep-alive connection to the leader, loop over
//! random keys among `--keys`: `--put-percent` of the operations are puts of
//! `--value-size`-byte values, the rest linearizable gets. The nodes snapshot every
//! `--snapshot-threshold` applied entries, so their logs are compacted and their memory
//! should stop growing once every key is written. Every `--sample-seconds` each node's
//! resident memory (`VmRSS`) and the throughput are printed.
//!
//! **Plateau rule.** With the samples split in thirds, a node's memory plateaued if the
//! largest RSS of the last third is at most 10 % (and at least 4 MiB) above the largest RSS
//! of the middle third. The first third is warm-up (caches, the key set, the first
//! snapshots filling up) and is not judged.

use std::error::Error;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Args;

use crate::machine;
use crate::raftkv_bin::{self, mib, KvCluster, Rng};
use crate::report::{self, Align, Table};

/// Options of `raftlock-bench soak`.
#[derive(Debug, Clone, Args)]
pub struct SoakArgs {
    /// Duration in minutes.
    #[arg(long, value_name = "MIN", default_value_t = 10.0)]
    pub minutes: f64,
    /// Duration in seconds, for short runs (overrides --minutes).
    #[arg(long, value_name = "S")]
    pub seconds: Option<f64>,
    /// Seconds between memory samples.
    #[arg(long, value_name = "S", default_value_t = 30.0)]
    pub sample_seconds: f64,
    /// Concurrent clients.
    #[arg(long, value_name = "N", default_value_t = 16)]
    pub clients: usize,
    /// Distinct keys.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub keys: u64,
    /// Percentage of operations that are puts (the rest are linearizable gets).
    #[arg(long, value_name = "PCT", default_value_t = 70)]
    pub put_percent: u64,
    /// Bytes of each value.
    #[arg(long, value_name = "BYTES", default_value_t = 256)]
    pub value_size: usize,
    /// Applied entries between snapshots (`raftkv node --snapshot-threshold`).
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub snapshot_threshold: u64,
    /// Directory for the nodes' data (a temporary directory is made inside it).
    /// Default: inside ./target if it exists, else $TMPDIR.
    #[arg(long, value_name = "PATH")]
    pub dir: Option<PathBuf>,
}

/// Operation counters shared with the client tasks.
#[derive(Default)]
struct Counters {
    ops: AtomicU64,
    errors: AtomicU64,
    stop: AtomicBool,
}

/// One sample: seconds since the start, operations so far, each node's RSS, and the size
/// of the nodes' data directories together.
struct Sample {
    at: f64,
    ops: u64,
    rss: Vec<Option<u64>>,
    disk: u64,
}

/// Runs the scenario and prints the report.
pub fn run(args: &SoakArgs) -> Result<(), Box<dyn Error>> {
    let seconds = args.seconds.unwrap_or(args.minutes * 60.0);
    if !(seconds > 0.0 && seconds < 1e7 && args.sample_seconds > 0.0 && args.sample_seconds < 1e6)
        || args.clients == 0
        || args.clients > 100_000
        || args.keys == 0
        || args.keys > 10_000_000
        || args.put_percent > 100
        || args.value_size > 4 << 20
    {
        return Err(
            "soak: check --minutes/--seconds, --sample-seconds (> 0), --clients \
                    (1..100,000), --keys (1..10M), --put-percent (0..100), --value-size (<= 4 MiB)"
                .into(),
        );
    }
    machine::print_header();
    let binary = raftkv_bin::locate()?;
    println!(
        "soak: {} raftkv nodes, --snapshot-threshold {}; {} clients, {}% puts ({}-byte \
         values) and {}% linearizable gets over {} keys, for {:.0} s, sampled every {:.0} s",
        raftkv_bin::NODES,
        args.snapshot_threshold,
        args.clients,
        args.put_percent,
        args.value_size,
        100 - args.put_percent,
        args.keys,
        seconds,
        args.sample_seconds
    );
    let rt = raftkv_bin::runtime(2)?;
    let threshold = args.snapshot_threshold.to_string();
    let samples = rt.block_on(async {
        let kv = KvCluster::start(
            &binary,
            args.dir.as_deref(),
            &["--snapshot-threshold", &threshold],
        )?;
        let leader = kv.url(kv.leader().await?);
        let counters = Arc::new(Counters::default());
        let value = raftkv_bin::value(args.value_size);
        let tasks: Vec<_> = (0..args.clients as u64)
            .map(|t| {
                tokio::spawn(client(
                    leader.clone(),
                    t,
                    args.clone(),
                    value.clone(),
                    counters.clone(),
                ))
            })
            .collect();
        let samples = sample(&kv, &counters, seconds, args.sample_seconds).await;
        counters.stop.store(true, Ordering::SeqCst);
        for t in tasks {
            t.await?;
        }
        for i in 0..raftkv_bin::NODES {
            if let Ok(s) = kv.client.get_json(&kv.url(i), "/status").await {
                println!(
                    "node-{}: last applied {}, snapshot index {}",
                    i + 1,
                    s["last_applied"],
                    s["snapshot_index"]
                );
            }
        }
        for n in kv.cluster.nodes() {
            println!(
                "{}: data directory {}",
                n.id,
                mib(raftkv_bin::disk_usage(&n.data_dir))
            );
        }
        let errors = counters.errors.load(Ordering::SeqCst);
        println!("errors: {errors}");
        Ok::<_, Box<dyn Error>>(samples)
    })?;
    print_series(&samples);
    Ok(())
}

/// Samples RSS and throughput every `every` seconds for `seconds`, printing each sample.
async fn sample(kv: &KvCluster, counters: &Counters, seconds: f64, every: f64) -> Vec<Sample> {
    let start = Instant::now();
    let pids: Vec<Option<u32>> = kv.cluster.nodes().iter().map(|n| n.pid()).collect();
    let mut samples = Vec::new();
    let mut last_ops = 0;
    let mut next = every.min(seconds);
    loop {
        tokio::time::sleep_until((start + Duration::from_secs_f64(next)).into()).await;
        let ops = counters.ops.load(Ordering::Relaxed);
        let at = start.elapsed().as_secs_f64();
        let rss: Vec<Option<u64>> = pids
            .iter()
            .map(|p| p.and_then(|p| machine::memory_of(Some(p), "VmRSS")))
            .collect();
        let disk = kv
            .cluster
            .nodes()
            .iter()
            .map(|n| raftkv_bin::disk_usage(&n.data_dir))
            .sum();
        let interval = at - samples.last().map_or(0.0, |s: &Sample| s.at);
        println!(
            "t={at:.0}s ops/s {} (overall {}) RSS {} data {}",
            report::count((ops - last_ops) as f64 / interval),
            report::count(ops as f64 / at),
            rss.iter()
                .map(|r| r.map_or("-".into(), mib))
                .collect::<Vec<_>>()
                .join(" / "),
            mib(disk)
        );
        last_ops = ops;
        samples.push(Sample { at, ops, rss, disk });
        if next >= seconds {
            return samples;
        }
        next = (next + every).min(seconds);
    }
}

/// One client: random keys, puts or linearizable gets, until stopped.
async fn client(leader: String, seed: u64, args: SoakArgs, value: Bytes, counters: Arc<Counters>) {
    let Ok(http) = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
    else {
        counters.errors.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let mut rng = Rng::new(seed.wrapping_mul(104_729).wrapping_add(17));
    while !counters.stop.load(Ordering::Relaxed) {
        let url = format!("{leader}/kv/{}", raftkv_bin::key(rng.below(args.keys)));
        let request = if rng.below(100) < args.put_percent {
            http.put(url).body(value.clone())
        } else {
            http.get(url)
        };
        let ok = match request.send().await {
            Ok(r) => {
                let status = r.status();
                r.bytes().await.is_ok() && (status.is_success() || status.as_u16() == 404)
            }
            Err(_) => false,
        };
        if ok {
            counters.ops.fetch_add(1, Ordering::Relaxed);
        } else {
            counters.errors.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// The RSS series per node and the plateau verdict.
fn print_series(samples: &[Sample]) {
    let mut columns = vec![("t", Align::Right), ("ops/s", Align::Right)];
    let names: Vec<String> = (1..=raftkv_bin::NODES)
        .map(|i| format!("node-{i} RSS"))
        .collect();
    columns.extend(names.iter().map(|n| (n.as_str(), Align::Right)));
    columns.push(("data dirs", Align::Right));
    let mut table = Table::new(&columns);
    let mut prev = (0.0, 0);
    for s in samples {
        let mut row = vec![
            format!("{:.0} s", s.at),
            report::count((s.ops - prev.1) as f64 / (s.at - prev.0)),
        ];
        row.extend(s.rss.iter().map(|r| r.map_or("-".into(), mib)));
        row.push(mib(s.disk));
        table.row(row);
        prev = (s.at, s.ops);
    }
    println!("\n{table}");
    let third = samples.len() / 3;
    if third == 0 {
        println!("plateau: too few samples to judge (need at least 3)");
        return;
    }
    let middle = &samples[third..samples.len() - third];
    let last = &samples[samples.len() - third..];
    for node in 0..raftkv_bin::NODES {
        let max = |part: &[Sample]| {
            part.iter()
                .filter_map(|s| s.rss.get(node).copied().flatten())
                .max()
        };
        match (max(middle), max(last)) {
            (Some(m), Some(l)) => {
                println!(
                    "node-{}: max RSS middle third {}, last third {} (allowed {}): {}",
                    node + 1,
                    mib(m),
                    mib(l),
                    mib(allowed(m)),
                    if l <= allowed(m) {
                        "plateaued"
                    } else {
                        "STILL GROWING"
                    }
                );
            }
            _ => println!("node-{}: RSS not readable", node + 1),
        }
    }
    println!(
        "rule: a node plateaued if the max RSS of the last third of the samples is at most \
         max(10 %, 4 MiB) above the max of the middle third"
    );
}

/// The largest RSS the last third may reach for a node to count as plateaued, given the
/// largest of the middle third: 10 % more, and at least 4 MiB more.
fn allowed(middle_max: u64) -> u64 {
    middle_max + (middle_max / 10).max(4 << 20)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plateau_allows_ten_percent_or_four_mib() {
        assert_eq!(allowed(10 << 20), 14 << 20);
        assert_eq!(allowed(100 << 20), 110 << 20);
    }
}
