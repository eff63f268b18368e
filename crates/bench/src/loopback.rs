//! The `loopback` scenario: the floor under `cluster`'s HTTP rows.
//!
//! Every `cluster` put is at least one request/response exchange between a client and the
//! leader over loopback TCP, with one request in flight per connection. This scenario does
//! only that: N connections, each sending a request of the size of a `cluster` put (the
//! same bytes on the wire) and reading back an answer of the size of raftkv's reply, with
//! a server that does nothing else (no HTTP parsing, no Raft, no disk). Both sides run in
//! this process on tokio with two worker threads each, like a raftkv node and the
//! `cluster` load generator. What it can do on this machine bounds what any request/reply
//! protocol over TCP can do here, before a single byte is replicated or synced.

use std::error::Error;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::machine;
use crate::raftkv_bin::runtime;
use crate::report::{self, Align, Percentiles, Table};

/// The bytes of a `cluster` put request besides its value (request line and headers).
pub(crate) const PUT_REQUEST_HEAD_BYTES: usize = 113;

/// The bytes of raftkv's answer to a put, head included.
pub(crate) const PUT_RESPONSE_BYTES: usize = 124;

/// The value size of a `cluster` put by default.
pub(crate) const DEFAULT_VALUE_BYTES: usize = 256;

/// The client side that `loopback` and `floor` share: N connections, each with one
/// request of a `cluster` put's size in flight.
#[derive(Debug, Clone, Args)]
pub struct ExchangeArgs {
    /// Concurrent connections of each row, one request in flight on each.
    #[arg(
        long,
        value_name = "LIST",
        value_delimiter = ',',
        default_value = "1,64"
    )]
    pub clients: Vec<usize>,
    /// Bytes of each request (default: a `cluster` put of a 256-byte value, head included).
    #[arg(long, value_name = "BYTES", default_value_t = PUT_REQUEST_HEAD_BYTES + DEFAULT_VALUE_BYTES)]
    pub request_bytes: usize,
    /// Bytes of each answer (default: raftkv's answer to a put, head included).
    #[arg(long, value_name = "BYTES", default_value_t = PUT_RESPONSE_BYTES)]
    pub response_bytes: usize,
}

impl ExchangeArgs {
    /// Whether the client counts and sizes are in range (1..10,000 clients, 1 B..1 MiB).
    pub fn is_valid(&self) -> bool {
        !self.clients.is_empty()
            && self.clients.iter().all(|&c| (1..=10_000).contains(&c))
            && (1..=1 << 20).contains(&self.request_bytes)
            && (1..=1 << 20).contains(&self.response_bytes)
    }
}

/// Options of `raftlock-bench loopback`.
#[derive(Debug, Clone, Args)]
pub struct LoopbackArgs {
    /// Connections and sizes.
    #[command(flatten)]
    pub exchange: ExchangeArgs,
    /// Measured seconds per row.
    #[arg(long, value_name = "S", default_value_t = 3.0)]
    pub seconds: f64,
}

/// Phases of a row, shared with the client tasks.
const WARMUP: u8 = 0;
const MEASURE: u8 = 1;
const STOP: u8 = 2;

/// Runs the scenario and prints the report.
pub fn run(args: &LoopbackArgs) -> Result<(), Box<dyn Error>> {
    if !(args.exchange.is_valid() && args.seconds > 0.0 && args.seconds < 1e6) {
        return Err("loopback: --clients 1..10,000 each, --seconds > 0, \
                    --request-bytes and --response-bytes 1..1 MiB"
            .into());
    }
    machine::print_header();
    println!(
        "loopback: N TCP connections on 127.0.0.1, one {}-byte request in flight on each, \
         answered with {} bytes by a server that does nothing else; server and clients on \
         two tokio runtimes of 2 worker threads each (like a raftkv node and the cluster \
         load generator); 0.5 s warm-up + {:.1} s per row",
        args.exchange.request_bytes, args.exchange.response_bytes, args.seconds
    );
    let server_rt = runtime(2)?;
    let client_rt = runtime(2)?;
    let listener = server_rt.block_on(TcpListener::bind("127.0.0.1:0"))?;
    let addr = listener.local_addr()?;
    let (req_len, resp_len) = (args.exchange.request_bytes, args.exchange.response_bytes);
    server_rt.spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve(stream, req_len, resp_len));
        }
    });
    let mut table = Table::new(&[
        ("connections", Align::Right),
        ("round trips/s", Align::Right),
        ("p50", Align::Right),
        ("p99", Align::Right),
        ("p99.9", Align::Right),
        ("CPU/round trip", Align::Right),
        ("cores", Align::Right),
    ]);
    for &clients in &args.exchange.clients {
        let run = measure_exchanges(
            &client_rt,
            addr,
            &args.exchange,
            clients,
            args.seconds,
            || {},
        )?;
        let cells = cells(
            clients.to_string(),
            run.latencies,
            run.elapsed,
            run.cpu0,
            run.cpu1,
        );
        println!("done: {}", cells.join(" | "));
        table.row(cells);
    }
    // The same exchange with no runtime at all: blocking sockets, one thread per side.
    // When this is as slow as the tokio row, the time is the machine's (waking a thread on
    // an idle vCPU, the loopback stack), not the runtime's.
    let cells = blocking_row(args)?;
    println!("done: {}", cells.join(" | "));
    table.row(cells);
    println!("\n{table}");
    Ok(())
}

/// One connection with blocking `std` sockets and a server thread: the row's cells.
fn blocking_row(args: &LoopbackArgs) -> Result<Vec<String>, Box<dyn Error>> {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let (req_len, resp_len) = (args.exchange.request_bytes, args.exchange.response_bytes);
    let server = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut stream, _) = listener.accept()?;
        stream.set_nodelay(true)?;
        let (mut request, response) = (vec![0u8; req_len], vec![b'r'; resp_len]);
        while stream.read_exact(&mut request).is_ok() {
            stream.write_all(&response)?;
        }
        Ok(())
    });
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    let (request, mut response) = (vec![b'q'; req_len], vec![0u8; resp_len]);
    let exchange = |stream: &mut std::net::TcpStream, response: &mut [u8]| {
        stream
            .write_all(&request)
            .and_then(|()| stream.read_exact(response))
    };
    let warm_until = Instant::now() + Duration::from_millis(500);
    while Instant::now() < warm_until {
        exchange(&mut stream, &mut response)?;
    }
    let cpu0 = machine::process_cpu_time();
    let start = Instant::now();
    let measure = Duration::from_secs_f64(args.seconds);
    let mut latencies = Vec::new();
    while start.elapsed() < measure {
        let t = Instant::now();
        exchange(&mut stream, &mut response)?;
        latencies.push(t.elapsed());
    }
    let elapsed = start.elapsed();
    let cpu1 = machine::process_cpu_time();
    drop(stream);
    server
        .join()
        .map_err(|_| "the blocking server thread panicked")??;
    Ok(cells(
        "1 (blocking std sockets)".into(),
        latencies,
        elapsed,
        cpu0,
        cpu1,
    ))
}

/// A row's cells from its latencies, duration and the process's CPU time around it.
pub(crate) fn cells(
    label: String,
    mut latencies: Vec<Duration>,
    elapsed: Duration,
    cpu0: Option<Duration>,
    cpu1: Option<Duration>,
) -> Vec<String> {
    let ops = latencies.len() as u64;
    let (cpu_per_op, cores) = cpu_cells(cpu0, cpu1, ops, elapsed);
    let p = Percentiles::of(&mut latencies);
    let lat =
        |f: fn(&Percentiles) -> Duration| p.as_ref().map_or("-".into(), |p| report::duration(f(p)));
    vec![
        label,
        report::count(ops as f64 / elapsed.as_secs_f64()),
        lat(|p| p.p50),
        lat(|p| p.p99),
        lat(|p| p.p999),
        cpu_per_op,
        cores,
    ]
}

/// The "CPU/round trip" and "cores" cells from the process's CPU time before and after.
fn cpu_cells(
    before: Option<Duration>,
    after: Option<Duration>,
    ops: u64,
    elapsed: Duration,
) -> (String, String) {
    match (before, after) {
        (Some(a), Some(b)) if ops > 0 => {
            let used = b.saturating_sub(a);
            (
                report::micros(used / u32::try_from(ops).unwrap_or(u32::MAX)),
                format!("{:.2}", used.as_secs_f64() / elapsed.as_secs_f64()),
            )
        }
        _ => ("-".into(), "-".into()),
    }
}

/// Answers every `req_len` bytes read with `resp_len` bytes, until the client leaves.
async fn serve(mut stream: TcpStream, req_len: usize, resp_len: usize) {
    if stream.set_nodelay(true).is_err() {
        return;
    }
    let (mut request, response) = (vec![0u8; req_len], vec![b'r'; resp_len]);
    while stream.read_exact(&mut request).await.is_ok() {
        if stream.write_all(&response).await.is_err() {
            return;
        }
    }
}

/// One measured row of exchanges: the latencies the clients saw in the window, its length,
/// and this process's CPU time at its two ends.
pub(crate) struct ExchangeRun {
    pub(crate) latencies: Vec<Duration>,
    pub(crate) elapsed: Duration,
    pub(crate) cpu0: Option<Duration>,
    pub(crate) cpu1: Option<Duration>,
}

/// Runs `clients` connections to `addr` on `rt`, sized as `exchange` says: 0.5 s of warm-up,
/// then `seconds` measured. `mark` runs right before and right after the measured window
/// (to read counters of the server side).
pub(crate) fn measure_exchanges(
    rt: &tokio::runtime::Runtime,
    addr: std::net::SocketAddr,
    exchange: &ExchangeArgs,
    clients: usize,
    seconds: f64,
    mut mark: impl FnMut(),
) -> Result<ExchangeRun, Box<dyn Error>> {
    let phase = Arc::new(AtomicU8::new(WARMUP));
    let (req, resp) = (exchange.request_bytes, exchange.response_bytes);
    let tasks: Vec<_> = (0..clients)
        .map(|_| rt.spawn(client(addr, req, resp, phase.clone())))
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    mark();
    let cpu0 = machine::process_cpu_time();
    let start = Instant::now();
    phase.store(MEASURE, Ordering::SeqCst);
    std::thread::sleep(Duration::from_secs_f64(seconds));
    phase.store(STOP, Ordering::SeqCst);
    let elapsed = start.elapsed();
    let cpu1 = machine::process_cpu_time();
    mark();
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(rt.block_on(t)??);
    }
    Ok(ExchangeRun {
        latencies,
        elapsed,
        cpu0,
        cpu1,
    })
}

/// One connection's loop; returns the latencies seen while measuring.
async fn client(
    addr: std::net::SocketAddr,
    req_len: usize,
    resp_len: usize,
    phase: Arc<AtomicU8>,
) -> Result<Vec<Duration>, std::io::Error> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (request, mut response) = (vec![b'q'; req_len], vec![0u8; resp_len]);
    let mut latencies = Vec::new();
    loop {
        let now = phase.load(Ordering::Relaxed);
        if now == STOP {
            return Ok(latencies);
        }
        let start = Instant::now();
        stream.write_all(&request).await?;
        stream.read_exact(&mut response).await?;
        if now == MEASURE {
            latencies.push(start.elapsed());
        }
    }
}
