//! The `cluster` scenario: three `raftkv node` processes on loopback with fsync (the default
//! `FileStorage`), driven over the HTTP API as etcd's `benchmark` tool drives etcd.
//!
//! Each client is a task with its own keep-alive HTTP/1.1 connection (the lean
//! [`crate::http1`] client, so that the load generator takes as little as possible of the
//! CPU the nodes share with it) talking straight to the leader's HTTP address, looping one
//! request at a time over 8-byte keys (`--keys` distinct ones) with `--value-size`-byte
//! values. With `--conns N` the clients share N HTTP/2 connections instead (the
//! [`crate::http2`] client), as etcd's `benchmark --conns` multiplexes its clients.
//!
//! Rows: puts, then linearizable reads answered by the leader's lease (`--lease-reads
//! true`, the default), on one cluster; linearizable reads by ReadIndex (`--lease-reads
//! false`) on a second one. CPU time per op is the three node processes' user + system
//! time over the measured window divided by the operations, next to this benchmark
//! process's own (the clients).

use std::error::Error;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Args;

use crate::floor::{self, FloorRow};
use crate::machine;
use crate::raftkv_bin::{self, KvCluster, Rng};
use crate::report::{self, Align, Percentiles, Table};
use crate::storage::temp_dir;
use crate::{http1, http2};

/// Options of `raftlock-bench cluster`.
#[derive(Debug, Clone, Args)]
pub struct ClusterArgs {
    /// Concurrent clients of each row.
    #[arg(
        long,
        value_name = "LIST",
        value_delimiter = ',',
        default_value = "1,64"
    )]
    pub clients: Vec<usize>,
    /// Measured seconds per row.
    #[arg(long, value_name = "S", default_value_t = 5.0)]
    pub seconds: f64,
    /// Unmeasured warm-up seconds before each row.
    #[arg(long, value_name = "S", default_value_t = 1.0)]
    pub warmup: f64,
    /// Bytes of each value.
    #[arg(long, value_name = "BYTES", default_value_t = 256)]
    pub value_size: usize,
    /// Distinct keys written and read.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub keys: u64,
    /// HTTP/2 connections the clients share (as etcd's `benchmark --conns`): 0 gives each
    /// client its own HTTP/1.1 connection instead.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub conns: usize,
    /// Worker threads of this benchmark's client runtime.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub client_threads: usize,
    /// `--worker-threads` of each node (0: the node's default, one per core). Three nodes
    /// and this load generator share the machine, so one each by default.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub node_worker_threads: usize,
    /// Also measure `floor` (the unavoidable work of a replicated, durable put, with
    /// nothing else) at the same client counts, between the lease rows and the ReadIndex
    /// rows, and compare the puts with it: this VM's speed drifts over minutes, so only a
    /// floor measured in the same run is a fair yardstick.
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    pub floor: bool,
    /// Directory for the nodes' data (a temporary directory is made inside it).
    /// Default: inside ./target if it exists, else $TMPDIR.
    #[arg(long, value_name = "PATH")]
    pub dir: Option<PathBuf>,
}

/// What a row's clients do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    /// `PUT /kv/{key}`.
    Put,
    /// `GET /kv/{key}` (linearizable).
    Get,
}

/// How long one request may take before it counts as an error.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Phases of a row, shared with the client tasks.
const WARMUP: u8 = 0;
const MEASURE: u8 = 1;
const STOP: u8 = 2;

/// What one client task saw in the measured window.
#[derive(Default)]
struct TaskResult {
    latencies: Vec<Duration>,
    errors: u64,
    first_error: Option<String>,
}

/// Runs the scenario and prints the report.
pub fn run(args: &ClusterArgs) -> Result<(), Box<dyn Error>> {
    if args.clients.is_empty()
        || args.clients.iter().any(|&c| c == 0 || c > 100_000)
        || !(args.seconds > 0.0 && args.seconds < 1e6 && (0.0..1e6).contains(&args.warmup))
        || !(1..=10_000_000).contains(&args.keys)
        || args.value_size > 4 << 20
    {
        return Err(
            "cluster: --clients 1..100,000 each, --seconds > 0, --warmup >= 0, \
                    --keys 1..10M, --value-size <= 4 MiB"
                .into(),
        );
    }
    machine::print_header();
    let binary = raftkv_bin::locate()?;
    println!(
        "cluster: {} raftkv node processes ({}) on loopback, FileStorage with fsync; {}, \
         straight to the leader; 8-byte keys ({} distinct), {}-byte values; {} client \
         threads; {:.1} s warm-up + {:.1} s per row",
        raftkv_bin::NODES,
        binary.display(),
        match args.conns {
            0 => "HTTP/1.1 keep-alive, one connection per client".to_string(),
            n => format!("HTTP/2 (cleartext), the clients multiplexed over {n} connection(s)"),
        },
        args.keys,
        args.value_size,
        args.client_threads,
        args.warmup,
        args.seconds
    );
    println!(
        "node runtime: {}",
        match args.node_worker_threads {
            0 => "one worker thread per core (raftkv's default)".to_string(),
            n => format!("--worker-threads {n}"),
        }
    );
    let workers = args.node_worker_threads.to_string();
    let node_args = |lease: &'static str| {
        let mut a = vec!["--lease-reads", lease];
        if args.node_worker_threads > 0 {
            a.extend(["--worker-threads", workers.as_str()]);
        }
        a
    };
    let rt = raftkv_bin::runtime(args.client_threads)?;
    let mut table = Table::new(&[
        ("operation", Align::Left),
        ("clients", Align::Right),
        ("ops/s", Align::Right),
        ("p50", Align::Right),
        ("p99", Align::Right),
        ("p99.9", Align::Right),
        ("nodes CPU/op", Align::Right),
        ("bench CPU/op", Align::Right),
        ("errors", Align::Right),
    ]);
    let mut puts = Vec::new();
    rt.block_on(async {
        let kv = KvCluster::start(&binary, args.dir.as_deref(), &node_args("true"))?;
        let leader = kv.url(kv.leader().await?);
        for &c in &args.clients {
            let r = row(args, &kv, &leader, Op::Put, c, "put").await?;
            puts.push((c, r.1, r.2));
            table.row(r.0);
        }
        for &c in &args.clients {
            table.row(row(args, &kv, &leader, Op::Get, c, "get (lease)").await?.0);
        }
        Ok::<(), Box<dyn Error>>(())
    })?;
    let floor_args = floor::matching_cluster(&args.clients, args.seconds, args.value_size);
    let floor = match (args.floor, floor_args.validate()) {
        (false, _) => None,
        (true, Err(why)) => {
            println!("no floor for these settings: {why}");
            None
        }
        (true, Ok(())) => {
            let dir = temp_dir(args.dir.as_deref())?;
            Some(floor::measure(&floor_args, dir.path(), |r| {
                println!("done: floor | {}", r.cells.join(" | "));
            })?)
        }
    };
    rt.block_on(async {
        let kv = KvCluster::start(&binary, args.dir.as_deref(), &node_args("false"))?;
        let leader = kv.url(kv.leader().await?);
        preload(args, &leader).await?;
        for &c in &args.clients {
            table.row(
                row(args, &kv, &leader, Op::Get, c, "get (ReadIndex)")
                    .await?
                    .0,
            );
        }
        Ok::<(), Box<dyn Error>>(())
    })?;
    println!("\n{table}");
    if let Some(floor) = &floor {
        print_against_floor(&puts, floor);
    }
    print_reference(&puts);
    Ok(())
}

/// The put rows next to the floor measured in the same run.
fn print_against_floor(puts: &[(usize, f64, Option<Percentiles>)], floor: &[FloorRow]) {
    let mut table = Table::new(&[
        ("clients", Align::Right),
        ("raftkv puts/s", Align::Right),
        ("floor puts/s", Align::Right),
        ("raftkv / floor", Align::Right),
        ("raftkv p50", Align::Right),
        ("floor p50", Align::Right),
        ("p50 above the floor", Align::Right),
    ]);
    for (clients, rate, p) in puts {
        let Some(f) = floor.iter().find(|f| f.clients == *clients) else {
            continue;
        };
        let p50 = p.map(|p| p.p50);
        let dur = |d: Option<Duration>| d.map_or("-".into(), report::duration);
        table.row(vec![
            clients.to_string(),
            report::count(*rate),
            report::count(f.rate),
            if f.rate > 0.0 {
                format!("{:.2}×", rate / f.rate)
            } else {
                "-".into()
            },
            dur(p50),
            dur(f.p50),
            match (p50, f.p50) {
                (Some(a), Some(b)) if a >= b => report::duration(a - b),
                (Some(a), Some(b)) => format!("-{}", report::duration(b - a)),
                _ => "-".into(),
            },
        ]);
    }
    println!(
        "\nAgainst this machine's floor, measured in this run (`raftlock-bench floor`: the \
         client exchange, two followers and three fdatasyncs, nothing else):\n\n{table}"
    );
}

/// Writes every key once so that reads find values.
async fn preload(args: &ClusterArgs, leader: &str) -> Result<(), Box<dyn Error>> {
    let value = raftkv_bin::value(args.value_size);
    let tasks: Vec<_> = (0..64u64)
        .map(|t| {
            let (url, value, keys) = (leader.to_string(), value.clone(), args.keys);
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                for k in (t..keys).step_by(64) {
                    let key = raftkv_bin::key(k);
                    let r = http
                        .put(format!("{url}/kv/{key}"))
                        .body(value.clone())
                        .send();
                    let status = r
                        .await
                        .map_err(|e| format!("preloading {key}: {e}"))?
                        .status();
                    if !status.is_success() {
                        return Err(format!("preloading {key}: HTTP {status}"));
                    }
                }
                Ok(())
            })
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    Ok(())
}

/// One row: `clients` tasks doing `op` against `leader`. Returns the table cells, and the
/// throughput and percentiles for the targets.
async fn row(
    args: &ClusterArgs,
    kv: &KvCluster,
    leader: &str,
    op: Op,
    clients: usize,
    label: &str,
) -> Result<(Vec<String>, f64, Option<Percentiles>), Box<dyn Error>> {
    let phase = Arc::new(AtomicU8::new(WARMUP));
    let value = raftkv_bin::value(args.value_size);
    let addr = leader.trim_start_matches("http://").to_string();
    let mut shared = Vec::with_capacity(args.conns);
    for _ in 0..args.conns {
        shared.push(
            http2::Connection::connect(&addr, TIMEOUT)
                .await
                .map_err(|e| format!("HTTP/2 connection to {addr}: {e}"))?,
        );
    }
    let tasks: Vec<_> = (0..clients)
        .map(|t| {
            let worker = Worker {
                addr: addr.clone(),
                op,
                keys: args.keys,
                value: value.clone(),
                phase: phase.clone(),
                http2: (!shared.is_empty()).then(|| shared[t % shared.len()].clone()),
            };
            tokio::spawn(worker.run(t as u64))
        })
        .collect();
    tokio::time::sleep(Duration::from_secs_f64(args.warmup)).await;
    let (node_cpu0, bench_cpu0) = (kv.cpu_time(), machine::process_cpu_time());
    let start = Instant::now();
    phase.store(MEASURE, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs_f64(args.seconds)).await;
    phase.store(STOP, Ordering::SeqCst);
    let elapsed = start.elapsed();
    let (node_cpu1, bench_cpu1) = (kv.cpu_time(), machine::process_cpu_time());
    let mut all = TaskResult::default();
    for t in tasks {
        let r = t.await?;
        all.latencies.extend(r.latencies);
        all.errors += r.errors;
        all.first_error = all.first_error.or(r.first_error);
    }
    if let Some(e) = &all.first_error {
        println!("{label} x{clients}: {} errors, the first: {e}", all.errors);
    }
    let ops = all.latencies.len() as u64;
    let per_op = |a: Option<Duration>, b: Option<Duration>| match (a, b) {
        (Some(a), Some(b)) if ops > 0 => report::micros(b.saturating_sub(a) / ops as u32),
        _ => "-".to_string(),
    };
    let rate = ops as f64 / elapsed.as_secs_f64();
    let p = Percentiles::of(&mut all.latencies);
    let lat =
        |f: fn(&Percentiles) -> Duration| p.as_ref().map_or("-".into(), |p| report::duration(f(p)));
    let cells = vec![
        label.to_string(),
        clients.to_string(),
        report::count(rate),
        lat(|p| p.p50),
        lat(|p| p.p99),
        lat(|p| p.p999),
        per_op(node_cpu0, node_cpu1),
        per_op(bench_cpu0, bench_cpu1),
        report::count(all.errors as f64),
    ];
    println!("done: {}", cells.join(" | "));
    Ok((cells, rate, p))
}

/// One client task's settings.
struct Worker {
    /// The leader's `host:port`.
    addr: String,
    op: Op,
    keys: u64,
    value: Bytes,
    phase: Arc<AtomicU8>,
    /// The shared HTTP/2 connection, if clients multiplex; `None`: HTTP/1.1.
    http2: Option<http2::Connection>,
}

/// A client's connection.
enum Conn {
    Http1(http1::Connection),
    Http2(http2::Connection),
}

impl Worker {
    /// Loops requests until the phase is [`STOP`]; records those finished while measuring.
    /// A failed connection is replaced (after a pause), and the failure counted if it
    /// happened while measuring.
    async fn run(self, seed: u64) -> TaskResult {
        let mut out = TaskResult::default();
        let mut rng = Rng::new(seed.wrapping_mul(7919).wrapping_add(1));
        let mut conn = self.http2.clone().map(Conn::Http2);
        let mut path = String::with_capacity(16);
        loop {
            let phase = self.phase.load(Ordering::Relaxed);
            if phase == STOP {
                return out;
            }
            path.clear();
            path.push_str("/kv/");
            path.push_str(&raftkv_bin::key(rng.below(self.keys)));
            let start = Instant::now();
            let result = match &mut conn {
                Some(c) => self.request(c, &path).await,
                None => match self.connect().await {
                    Ok(c) => {
                        let c = conn.insert(c);
                        self.request(c, &path).await
                    }
                    Err(e) => Err(format!("connecting to {}: {e}", self.addr)),
                },
            };
            let latency = start.elapsed();
            if result.is_err() {
                conn = None;
            }
            if self.phase.load(Ordering::Relaxed) != MEASURE {
                continue;
            }
            match result {
                Ok(()) => out.latencies.push(latency),
                Err(e) => {
                    out.errors += 1;
                    out.first_error.get_or_insert(e);
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        }
    }

    /// A new connection of the kind this client uses; after a failure, an HTTP/2 client
    /// gets a connection of its own.
    async fn connect(&self) -> std::io::Result<Conn> {
        Ok(match self.http2 {
            Some(_) => Conn::Http2(http2::Connection::connect(&self.addr, TIMEOUT).await?),
            None => Conn::Http1(http1::Connection::connect(&self.addr, TIMEOUT).await?),
        })
    }

    /// One request on `conn`; success is a 2xx, or a 404 for a read.
    async fn request(&self, conn: &mut Conn, path: &str) -> Result<(), String> {
        let method = match self.op {
            Op::Put => "PUT",
            Op::Get => "GET",
        };
        let body = (self.op == Op::Put).then_some(&self.value);
        let answer = async {
            match conn {
                Conn::Http1(c) => c.request(method, path, body.map(|b| &b[..])).await,
                Conn::Http2(c) => c.request(method, path, body.cloned()).await,
            }
        };
        match tokio::time::timeout(TIMEOUT, answer).await {
            Err(_) => Err(format!("no answer within {TIMEOUT:?}")),
            Ok(Err(e)) => Err(e.to_string()),
            Ok(Ok(r)) if (200..300).contains(&r.status) || r.status == 404 => Ok(()),
            Ok(Ok(r)) => Err(format!(
                "HTTP {}: {}",
                r.status,
                String::from_utf8_lossy(&r.body)
            )),
        }
    }
}

/// etcd's numbers and the targets from issue 9, and whether the put rows meet them.
fn print_reference(puts: &[(usize, f64, Option<Percentiles>)]) {
    println!(
        "\nReference (issue 9): etcd 3.4, three members on loopback, same key and value sizes, \
         on this machine:\n\
         | system | clients | puts/s | p50 | p99 |\n\
         | ------ | ------: | -----: | --: | --: |\n\
         | etcd 3.4 | 1 | 1,600 | 0.59 ms | - |\n\
         | etcd 3.4 | 64 | 12,000 | 4.7 ms | 14 ms |\n\
         | target | 1 | - | < 0.3 ms | - |\n\
         | target | 64 | >= 60,000 | - | < 5 ms |"
    );
    for (clients, rate, p) in puts {
        let Some(p) = p else { continue };
        let verdict = match clients {
            1 => Some(p.p50 < Duration::from_micros(300)),
            64 => Some(*rate >= 60_000.0 && p.p99 < Duration::from_millis(5)),
            _ => None,
        };
        if let Some(met) = verdict {
            println!(
                "put, {clients} client(s): {} ops/s, p50 {}, p99 {}: target {}",
                report::count(*rate),
                report::duration(p.p50),
                report::duration(p.p99),
                if met { "met" } else { "MISSED" }
            );
        }
    }
}
