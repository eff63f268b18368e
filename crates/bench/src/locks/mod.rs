//! The `locks` scenario: RaftLock against etcd 3.4 (Debian's `etcd-server`, its v3lock
//! `Lock`/`Unlock` with a lease), both as three members on loopback with fsync, measured
//! in the same run so that the VM's drift hits both alike. Both clusters run side by
//! side and the rows alternate between them.
//!
//! - **pairs** ([`pairs`]): uncontended acquire + release pairs on distinct locks, at each
//!   `--clients` count: pairs per second, pair latency, the servers' CPU per pair.
//! - **handoff** ([`handoff`]): one contended lock passed between two clients: from the
//!   release to the waiter's grant.
//! - **sessions** ([`sessions`]): N sessions with a TTL renewed every period: whether the
//!   cluster keeps them all alive, and the CPU it takes. Run last, RaftLock then etcd,
//!   each alone (the other cluster stopped).
//!
//! Targets (issue 19): pairs at 64 clients ≥ 3× etcd's; handoff p50 ≤ 1 ms; 100,000 live
//! sessions at TTL 10 s renewed every 3 s with under one core busy.

mod etcd;
mod handoff;
mod pairs;
mod sessions;
mod target;

use std::error::Error;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use raftlock::{Client, ClientOptions};

use crate::machine;
use crate::raftkv_bin::locate_binary;
use crate::report::{self, Align, Table};
use etcd::EtcdCluster;
use target::{
    EtcdClient, EtcdSessions, LockClient, RaftLockClient, RaftLockCluster, RaftLockSessions, System,
};

/// Options of `raftlock-bench locks`.
#[derive(Debug, Clone, Args)]
pub struct LocksArgs {
    /// Scenarios to run: pairs, handoff, sessions.
    #[arg(long, value_delimiter = ',', default_value = "pairs,handoff,sessions")]
    pub only: Vec<String>,
    /// Concurrent clients of each pairs row.
    #[arg(
        long,
        value_name = "LIST",
        value_delimiter = ',',
        default_value = "1,64"
    )]
    pub clients: Vec<usize>,
    /// Measured seconds per pairs row.
    #[arg(long, value_name = "S", default_value_t = 5.0)]
    pub seconds: f64,
    /// Unmeasured warm-up seconds before each pairs row.
    #[arg(long, value_name = "S", default_value_t = 1.0)]
    pub warmup: f64,
    /// Hand-offs measured.
    #[arg(long, value_name = "N", default_value_t = 200)]
    pub handoffs: usize,
    /// Sessions kept alive.
    #[arg(long, value_name = "N", default_value_t = 100_000)]
    pub sessions: usize,
    /// Their TTL, in seconds.
    #[arg(long, value_name = "S", default_value_t = 10)]
    pub session_ttl: u64,
    /// Seconds between two keep-alives of one session.
    #[arg(long, value_name = "S", default_value_t = 3)]
    pub keepalive_period: u64,
    /// Keep-alive streams the sessions share.
    #[arg(long, value_name = "N", default_value_t = 16)]
    pub streams: usize,
    /// Measured seconds of the sessions scenario.
    #[arg(long, value_name = "S", default_value_t = 20.0)]
    pub sessions_window: f64,
    /// The etcd executable; the etcd rows are skipped if it is missing.
    #[arg(long, value_name = "PATH", default_value = etcd::DEFAULT_BINARY)]
    pub etcd: PathBuf,
    /// Parent of the data directories (default: inside ./target).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Worker threads of this benchmark's client runtime.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub threads: usize,
    /// Threads each server may run Rust or Go code on, the same for both systems: the
    /// `--worker-threads` of each `raftlock server` and `GOMAXPROCS` of each etcd member
    /// (0: each system's default, one per core). Six servers and this load generator
    /// share the machine, so one each by default, as in `raftlock-bench cluster`.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub node_threads: usize,
    /// Connections the pairs clients share, each client with its own session or lease
    /// (as etcd's `benchmark --conns`); 0 gives each client a connection of its own.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub conns: usize,
}

impl LocksArgs {
    fn runs(&self, scenario: &str) -> bool {
        self.only.iter().any(|s| s == scenario)
    }
}

/// Runs the scenario.
pub fn run(args: &LocksArgs) -> Result<(), Box<dyn Error>> {
    machine::print_header();
    let binary = locate_binary("raftlock", "raftlock", "../raftlock/Cargo.toml")?;
    crate::raftkv_bin::runtime(args.threads)?.block_on(run_async(args, binary))
}

async fn run_async(args: &LocksArgs, binary: PathBuf) -> Result<(), Box<dyn Error>> {
    let threads = (args.node_threads > 0).then_some(args.node_threads);
    let extra: Vec<String> = threads
        .map(|n| vec!["--worker-threads".into(), n.to_string()])
        .unwrap_or_default();
    let raftlock = RaftLockCluster::start(&binary, args.dir.as_deref(), &extra).await?;
    let etcd = if args.etcd.is_file() {
        Some(EtcdCluster::start(&args.etcd, args.dir.as_deref(), threads).await?)
    } else {
        println!(
            "{} not found: the etcd rows are skipped (apt install etcd-server)",
            args.etcd.display()
        );
        None
    };
    let threads_note = threads.map_or("each system's default threads".to_string(), |n| {
        format!("--worker-threads {n} / GOMAXPROCS={n}")
    });
    println!(
        "RaftLock: 3 `raftlock server` processes (defaults: FileStorage with fsync, 100 ms ticks); \
         etcd: 3 `{}` members (defaults); both on loopback, side by side, {threads_note}",
        args.etcd.display()
    );
    let mut summary = Vec::new();
    if args.runs("pairs") {
        pairs_rows(args, &raftlock, etcd.as_ref(), &mut summary).await?;
    }
    if args.runs("handoff") {
        handoff_rows(args, &raftlock, etcd.as_ref(), &mut summary).await?;
    }
    if args.runs("sessions") {
        sessions_rows(args, raftlock, etcd, &mut summary).await?;
    }
    if !summary.is_empty() {
        println!("\nAgainst the targets of issue 19:");
        for line in summary {
            println!("- {line}");
        }
    }
    Ok(())
}

/// `n` clients; client `i` is made by `connect(i)`.
async fn connect_all<C, F, Fut>(n: usize, connect: F) -> Result<Vec<Arc<C>>, Box<dyn Error>>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<C, String>>,
{
    let mut clients = Vec::with_capacity(n);
    for i in 0..n {
        clients.push(Arc::new(connect(i).await?));
    }
    Ok(clients)
}

/// `n` RaftLock clients, each with its own session, over `conns` shared connections
/// (0: one each).
async fn raftlock_clients(
    n: usize,
    conns: usize,
    endpoints: &[String],
    ttl: Duration,
) -> Result<Vec<Arc<RaftLockClient>>, Box<dyn Error>> {
    if conns == 0 {
        return connect_all(n, |_| RaftLockClient::connect(endpoints, ttl)).await;
    }
    let bases = (0..conns)
        .map(|_| Client::new(ClientOptions::new(endpoints.to_vec()).ttl(ttl)))
        .collect::<Result<Vec<_>, _>>()?;
    connect_all(n, |i| RaftLockClient::sharing(&bases[i % conns], ttl)).await
}

/// `n` etcd clients, each with its own lease, over `conns` shared connections (0: one
/// each).
async fn etcd_clients(
    n: usize,
    conns: usize,
    leader: &str,
    ttl: Duration,
) -> Result<Vec<Arc<EtcdClient>>, Box<dyn Error>> {
    if conns == 0 {
        return connect_all(n, |_| EtcdClient::connect(leader, ttl)).await;
    }
    let channels = (0..conns)
        .map(|_| etcd::channel(leader))
        .collect::<Result<Vec<_>, _>>()?;
    connect_all(n, |i| EtcdClient::on(channels[i % conns].clone(), ttl)).await
}

async fn pairs_row<C: LockClient>(
    args: &LocksArgs,
    system: &System<'_>,
    clients: Vec<Arc<C>>,
    table: &mut Table,
) -> f64 {
    let n = clients.len();
    let r = pairs::run(
        clients,
        Duration::from_secs_f64(args.warmup),
        Duration::from_secs_f64(args.seconds),
        || system.cpu_time(),
    )
    .await;
    let (p50, p99) = r.latency.map_or(("-".into(), "-".into()), |p| {
        (report::duration(p.p50), report::duration(p.p99))
    });
    table.row(vec![
        system.name().into(),
        n.to_string(),
        report::count(r.per_sec),
        p50,
        p99,
        r.cpu_per_pair.map_or("-".into(), report::micros),
        r.errors.to_string(),
    ]);
    r.per_sec
}

async fn pairs_rows(
    args: &LocksArgs,
    raftlock: &RaftLockCluster,
    etcd: Option<&EtcdCluster>,
    summary: &mut Vec<String>,
) -> Result<(), Box<dyn Error>> {
    println!(
        "\nUncontended acquire + release pairs, each client on its own lock and session ({} s per row after {} s of warm-up, {}):",
        args.seconds,
        args.warmup,
        match args.conns {
            0 => "a connection per client".to_string(),
            n => format!("clients sharing {n} connection(s)"),
        }
    );
    let mut table = Table::new(&[
        ("system", Align::Left),
        ("clients", Align::Right),
        ("pairs/s", Align::Right),
        ("pair p50", Align::Right),
        ("pair p99", Align::Right),
        ("server CPU/pair", Align::Right),
        ("errors", Align::Right),
    ]);
    let ttl = Duration::from_secs(120);
    let endpoints = raftlock.endpoints().await?;
    for &n in &args.clients {
        let clients = raftlock_clients(n, args.conns, &endpoints, ttl).await?;
        let ours = pairs_row(args, &System::RaftLock(raftlock), clients, &mut table).await;
        if let Some(etcd) = etcd {
            let leader = etcd.leader().await?;
            let clients = etcd_clients(n, args.conns, &leader, ttl).await?;
            let theirs = pairs_row(args, &System::Etcd(etcd), clients, &mut table).await;
            if n == 64 {
                let ratio = ours / theirs.max(1e-9);
                summary.push(format!(
                    "pairs at 64 clients: RaftLock {} /s, etcd {} /s: {:.2}× (target ≥ 3×: {})",
                    report::count(ours),
                    report::count(theirs),
                    ratio,
                    if ratio >= 3.0 { "met" } else { "not met" }
                ));
            }
        }
    }
    print!("{table}");
    Ok(())
}

async fn handoff_row<C: LockClient>(
    args: &LocksArgs,
    name: &str,
    a: Arc<C>,
    b: Arc<C>,
    table: &mut Table,
) -> Result<Option<i64>, Box<dyn Error>> {
    let r = handoff::run(a, b, args.handoffs).await?;
    let mut from_send = r.from_send.clone();
    let p = report::Percentiles::of(&mut from_send);
    let q = |x| handoff::quantile(&r.from_ack_us, x);
    let us = |v: Option<i64>| v.map_or("-".to_string(), |v| format!("{:.2} ms", v as f64 / 1e3));
    table.row(vec![
        name.into(),
        r.from_send.len().to_string(),
        p.as_ref().map_or("-".into(), |p| report::duration(p.p50)),
        p.as_ref().map_or("-".into(), |p| report::duration(p.p99)),
        us(q(0.5)),
        us(q(0.99)),
    ]);
    Ok(q(0.5))
}

async fn handoff_rows(
    args: &LocksArgs,
    raftlock: &RaftLockCluster,
    etcd: Option<&EtcdCluster>,
    summary: &mut Vec<String>,
) -> Result<(), Box<dyn Error>> {
    println!(
        "\nHand-off of one contended lock between two clients ({} hand-offs; the waiter queued 20 ms before each release):",
        args.handoffs
    );
    let mut table = Table::new(&[
        ("system", Align::Left),
        ("hand-offs", Align::Right),
        ("release sent → granted p50", Align::Right),
        ("p99", Align::Right),
        ("release acked → granted p50", Align::Right),
        ("p99", Align::Right),
    ]);
    let ttl = Duration::from_secs(120);
    let endpoints = raftlock.endpoints().await?;
    let a = Arc::new(RaftLockClient::connect(&endpoints, ttl).await?);
    let b = Arc::new(RaftLockClient::connect(&endpoints, ttl).await?);
    let ours = handoff_row(args, "RaftLock", a, b, &mut table).await?;
    if let Some(etcd) = etcd {
        let leader = etcd.leader().await?;
        let a = Arc::new(EtcdClient::connect(&leader, ttl).await?);
        let b = Arc::new(EtcdClient::connect(&leader, ttl).await?);
        handoff_row(args, "etcd 3.4", a, b, &mut table).await?;
    }
    print!("{table}");
    if let Some(p50) = ours {
        summary.push(format!(
            "hand-off p50 (release acknowledged → next waiter granted): {:.2} ms (target ≤ 1 ms: {})",
            p50 as f64 / 1e3,
            if p50 <= 1_000 { "met" } else { "not met" }
        ));
    }
    Ok(())
}

fn sessions_row(
    name: &str,
    r: &sessions::SessionsResult,
    plan: &sessions::Plan,
    table: &mut Table,
) {
    let cores = |c: Option<f64>| c.map_or("-".to_string(), report::decimal);
    table.row(vec![
        name.into(),
        report::count(plan.sessions as f64),
        report::count(r.created as f64 / r.create_secs.max(1e-9)),
        r.alive.map_or("-".into(), |a| report::count(a as f64)),
        report::count(r.renewals as f64 / plan.window.as_secs_f64()),
        r.latency
            .as_ref()
            .map_or("-".into(), |p| report::duration(p.p50)),
        r.latency
            .as_ref()
            .map_or("-".into(), |p| report::duration(p.p99)),
        r.expired.to_string(),
        r.errors.to_string(),
        cores(r.cores),
        cores(r.busiest_core),
        cores(r.loadgen_cores),
    ]);
}

async fn sessions_rows(
    args: &LocksArgs,
    raftlock: RaftLockCluster,
    etcd: Option<EtcdCluster>,
    summary: &mut Vec<String>,
) -> Result<(), Box<dyn Error>> {
    let plan = sessions::Plan {
        sessions: args.sessions,
        ttl: Duration::from_secs(args.session_ttl),
        period: Duration::from_secs(args.keepalive_period),
        streams: args.streams,
        create_concurrency: 128,
        window: Duration::from_secs_f64(args.sessions_window),
    };
    println!(
        "\nSessions kept alive: {} sessions, TTL {} s, each renewed every {} s over {} streams to the leader; \
         CPU over {} s (each system alone):",
        plan.sessions,
        args.session_ttl,
        args.keepalive_period,
        plan.streams,
        args.sessions_window
    );
    let mut table = Table::new(&[
        ("system", Align::Left),
        ("sessions", Align::Right),
        ("created/s", Align::Right),
        ("alive at end", Align::Right),
        ("renewals/s", Align::Right),
        ("renewal p50", Align::Right),
        ("renewal p99", Align::Right),
        ("expired answers", Align::Right),
        ("stream errors", Align::Right),
        ("server cores", Align::Right),
        ("busiest server", Align::Right),
        ("load generator cores", Align::Right),
    ]);
    let pids = raftlock.pids();
    let endpoints = raftlock.endpoints().await?;
    let system = Arc::new(RaftLockSessions::new(&endpoints)?);
    let ours = sessions::run(system, &pids, &plan).await?;
    sessions_row("RaftLock", &ours, &plan, &mut table);
    drop(raftlock);
    if let Some(etcd) = etcd {
        let pids = etcd.pids();
        let system = Arc::new(EtcdSessions::new(&etcd.leader().await?)?);
        let theirs = sessions::run(system, &pids, &plan).await?;
        sessions_row("etcd 3.4", &theirs, &plan, &mut table);
    }
    print!("{table}");
    let all_alive = ours.alive == Some(plan.sessions as u64) && ours.expired == 0;
    let cores = ours.cores.unwrap_or(f64::INFINITY);
    summary.push(format!(
        "{} sessions at TTL {} s: {} alive at the end, {} expired answers, {} server cores (target: all alive with under one core busy: {})",
        report::count(plan.sessions as f64),
        args.session_ttl,
        ours.alive.map_or("-".into(), |a| report::count(a as f64)),
        ours.expired,
        report::decimal(cores),
        if all_alive && cores < 1.0 { "met" } else { "not met" }
    ));
    Ok(())
}
