//! The `floor` scenario: the least work a replicated, durable put can be on this machine.
//!
//! `loopback` bounds one client exchange, but a `cluster` put also goes to two followers
//! and is synced on disk. This scenario does what no three-node replicated log can skip,
//! and nothing else: no HTTP parsing, no Raft, no encoding, no apply.
//!
//! - A leader on one tokio worker thread (as `cluster` runs each raftkv node) answers N
//!   client connections (the `loopback` client: one request of a put's size in flight on
//!   each).
//! - It gathers every request that has arrived into one batch of fixed-size entries and
//!   writes the batch in one frame to each of two followers, and to its own storage thread.
//! - Each follower (a thread with blocking sockets, the leanest form) writes the frame into
//!   a pre-written file and calls `fdatasync`, then acknowledges it in 8 bytes.
//! - The storage thread group-commits the leader's copy the same way.
//! - A batch commits when two of the three copies are synced: the fastest majority,
//!   whichever copies those are. Then the leader answers the batch's clients.
//!
//! Every choice is the cheapest one a correct implementation could make here:
//!
//! - overwriting a synced file, so no sync also commits a block allocation;
//! - one write and one sync per batch per node;
//! - one frame per batch per follower, acknowledged in 8 bytes;
//! - commit on the fastest two copies.
//!
//! What it reaches bounds `cluster`'s put rows from above, for any code using threads,
//! sockets and `fdatasync` on this machine.

use std::collections::VecDeque;
use std::error::Error;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{mpsc as std_mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use clap::Args;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

use crate::loopback::{self, MEASURE, STOP, WARMUP};
use crate::machine;
use crate::raftkv_bin::runtime;
use crate::report::{self, Align, Table};
use crate::storage::temp_dir;

/// Options of `raftlock-bench floor`.
#[derive(Debug, Clone, Args)]
pub struct FloorArgs {
    /// Concurrent clients of each row, one request in flight on each.
    #[arg(
        long,
        value_name = "LIST",
        value_delimiter = ',',
        default_value = "1,64"
    )]
    pub clients: Vec<usize>,
    /// Measured seconds per row.
    #[arg(long, value_name = "S", default_value_t = 4.0)]
    pub seconds: f64,
    /// Bytes of each request (default: a `cluster` put of a 256-byte value, head included).
    #[arg(long, value_name = "BYTES", default_value_t = 369)]
    pub request_bytes: usize,
    /// Bytes of each answer (default: raftkv's answer to a put, head included).
    #[arg(long, value_name = "BYTES", default_value_t = 124)]
    pub response_bytes: usize,
    /// Bytes each put adds to every copy of the log (default: a raftkv put command with
    /// its entry header).
    #[arg(long, value_name = "BYTES", default_value_t = 300)]
    pub entry_bytes: usize,
    /// Batches in flight at once. 1: the next batch leaves when the previous one commits,
    /// which makes batches as large as they can be (raftkv's leader holds entries back the
    /// same way while a request to a follower is in flight).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub window: usize,
    /// With `--window` above 1: requests that must be waiting before a batch leaves while
    /// another is in flight (the first batch in flight takes whatever there is).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub min_batch: usize,
    /// Whether the leader syncs its own copy. `false`: it writes its copy without
    /// `fdatasync`, and a batch commits once both followers have synced it. That is the
    /// best a leader that syncs lazily (Raft thesis §10.2.1) could ever do: it may count
    /// itself only once its copy is durable.
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_sync: bool,
    /// Worker threads of the leader's tokio runtime (1, as `cluster` runs each node).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub leader_threads: usize,
    /// Directory for the three log files (a temporary directory is made inside it).
    /// Default: inside ./target if it exists, else $TMPDIR.
    #[arg(long, value_name = "PATH")]
    pub dir: Option<PathBuf>,
}

/// Size of each node's log file, written and synced before the run and then overwritten
/// in a cycle.
const LOG_BYTES: u64 = 16 << 20;

/// Length of a frame's head: the batch number and the body's length.
const HEAD: usize = 12;

/// The follower a frame goes to, as numbered in the commit rule (0 is the leader).
const FOLLOWERS: [usize; 2] = [1, 2];

/// Runs the scenario and prints the report.
pub fn run(args: &FloorArgs) -> Result<(), Box<dyn Error>> {
    let sizes_ok = (1..=1 << 20).contains(&args.request_bytes)
        && (1..=1 << 20).contains(&args.response_bytes)
        && (1..=1 << 16).contains(&args.entry_bytes);
    let clients_ok =
        !args.clients.is_empty() && args.clients.iter().all(|&c| (1..=10_000).contains(&c));
    let ok = clients_ok
        && sizes_ok
        && args.seconds > 0.0
        && args.seconds < 1e6
        && (1..=1024).contains(&args.window)
        && (1..=100_000).contains(&args.min_batch)
        && (1..=64).contains(&args.leader_threads);
    if !ok {
        return Err(
            "floor: --clients 1..10,000 each, --seconds > 0, --request-bytes and \
                    --response-bytes 1..1 MiB, --entry-bytes 1..64 KiB, --window 1..1024, \
                    --min-batch 1..100,000, --leader-threads 1..64"
                .into(),
        );
    }
    machine::print_header();
    let dir = temp_dir(args.dir.as_deref())?;
    machine::print_directory(dir.path());
    println!(
        "floor: a leader on {} tokio worker thread(s), N clients with one {}-byte request in \
         flight each ({} bytes back); each batch of what has arrived goes as {} bytes per \
         entry to two follower threads (blocking sockets) and the leader's storage thread, \
         each of which overwrites a synced file and fdatasyncs it; a batch commits on the \
         first two copies synced (leader syncs: {}); {} batch(es) in flight (a further one once {} wait); clients on 2 worker threads; \
         0.5 s warm-up + {:.1} s per row",
        args.leader_threads,
        args.request_bytes,
        args.response_bytes,
        args.entry_bytes,
        args.leader_sync,
        args.window,
        args.min_batch,
        args.seconds
    );
    let cluster = Floor::start(dir.path(), args)?;
    let client_rt = runtime(2)?;
    let mut table = Table::new(&[
        ("clients", Align::Right),
        ("puts/s", Align::Right),
        ("p50", Align::Right),
        ("p99", Align::Right),
        ("p99.9", Align::Right),
        ("CPU/put", Align::Right),
        ("cores", Align::Right),
        ("entries/batch", Align::Right),
        ("fsyncs/s per node", Align::Right),
    ]);
    let mut verdicts = Vec::new();
    for &clients in &args.clients {
        let phase = Arc::new(AtomicU8::new(WARMUP));
        let (req, resp) = (args.request_bytes, args.response_bytes);
        let tasks: Vec<_> = (0..clients)
            .map(|_| client_rt.spawn(loopback::client(cluster.addr, req, resp, phase.clone())))
            .collect();
        std::thread::sleep(Duration::from_millis(500));
        let counts0 = cluster.counts();
        let cpu0 = machine::process_cpu_time();
        let start = Instant::now();
        phase.store(MEASURE, Ordering::SeqCst);
        std::thread::sleep(Duration::from_secs_f64(args.seconds));
        phase.store(STOP, Ordering::SeqCst);
        let elapsed = start.elapsed();
        let cpu1 = machine::process_cpu_time();
        let counts1 = cluster.counts();
        let mut latencies = Vec::new();
        for t in tasks {
            latencies.extend(client_rt.block_on(t)??);
        }
        let p50 = report::Percentiles::of(&mut latencies.clone()).map(|p| p.p50);
        let rate = latencies.len() as f64 / elapsed.as_secs_f64();
        let mut cells = loopback::cells(clients.to_string(), latencies, elapsed, cpu0, cpu1);
        let (batches, entries, fsyncs) = (
            counts1.batches.saturating_sub(counts0.batches),
            counts1.entries.saturating_sub(counts0.entries),
            counts1.fsyncs.saturating_sub(counts0.fsyncs),
        );
        cells.push(if batches > 0 {
            report::decimal(entries as f64 / batches as f64)
        } else {
            "-".into()
        });
        // Per node that syncs: the followers, and the leader unless --leader-sync false.
        let syncing = if args.leader_sync { 3.0 } else { 2.0 };
        cells.push(report::count(
            fsyncs as f64 / syncing / elapsed.as_secs_f64(),
        ));
        println!("done: {}", cells.join(" | "));
        table.row(cells);
        verdicts.push(verdict(clients, rate, p50));
    }
    drop(client_rt);
    cluster.stop()?;
    println!("\n{table}");
    println!(
        "\nCPU/put and cores: this whole process (clients, leader, followers, storage), \
         without the kernel's block-device workers."
    );
    for v in verdicts {
        println!("{v}");
    }
    Ok(())
}

/// How a row compares with issue 9's `cluster` put targets.
fn verdict(clients: usize, rate: f64, p50: Option<Duration>) -> String {
    match (clients, p50) {
        (1, Some(p50)) => format!(
            "floor, 1 client: p50 {} against the cluster target of p50 < 300 µs",
            report::duration(p50)
        ),
        (64, _) => format!(
            "floor, 64 clients: {} puts/s against the cluster target of 60,000",
            report::count(rate)
        ),
        _ => format!("floor, {clients} clients: {} puts/s", report::count(rate)),
    }
}

/// Counters of the whole run, read before and after each row.
#[derive(Default)]
struct Counters {
    batches: AtomicU64,
    entries: AtomicU64,
    fsyncs: AtomicU64,
}

/// A snapshot of [`Counters`].
struct Counts {
    batches: u64,
    entries: u64,
    fsyncs: u64,
}

/// The running leader, followers and storage thread.
struct Floor {
    addr: std::net::SocketAddr,
    counters: Arc<Counters>,
    leader_rt: tokio::runtime::Runtime,
    threads: Vec<JoinHandle<io::Result<()>>>,
}

impl Floor {
    /// Pre-writes the three logs, starts the followers and the leader, and connects them.
    fn start(dir: &Path, args: &FloorArgs) -> Result<Floor, Box<dyn Error>> {
        let counters = Arc::new(Counters::default());
        let mut threads = Vec::new();
        let leader_rt = runtime(args.leader_threads)?;
        let (ack_tx, ack_rx) = mpsc::unbounded_channel();
        let mut follower_writers = Vec::new();
        for node in FOLLOWERS {
            let log = Log::create(&dir.join(format!("follower-{node}.log")), &counters)?;
            let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
            let addr = listener.local_addr()?;
            threads.push(std::thread::spawn(move || follower(listener, log)));
            let stream = leader_rt.block_on(TcpStream::connect(addr))?;
            stream.set_nodelay(true)?;
            let (read, write) = stream.into_split();
            leader_rt.spawn(read_acks(node, read, ack_tx.clone()));
            follower_writers.push(write);
        }
        let log = Log::create(&dir.join("leader.log"), &counters)?;
        let (storage_tx, storage_rx) = std_mpsc::channel();
        let storage_acks = ack_tx;
        let sync = args.leader_sync;
        threads.push(std::thread::spawn(move || {
            leader_storage(storage_rx, log, sync, storage_acks)
        }));
        let (request_tx, request_rx) = mpsc::unbounded_channel();
        leader_rt.spawn(replicate(
            request_rx,
            ack_rx,
            storage_tx,
            follower_writers,
            Batching {
                entry_bytes: args.entry_bytes,
                window: args.window,
                min_batch: args.min_batch,
                counters: counters.clone(),
            },
        ));
        let listener = leader_rt.block_on(TcpListener::bind("127.0.0.1:0"))?;
        let addr = listener.local_addr()?;
        let (req, resp) = (args.request_bytes, args.response_bytes);
        leader_rt.spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, req, resp, request_tx.clone()));
            }
        });
        Ok(Floor {
            addr,
            counters,
            leader_rt,
            threads,
        })
    }

    fn counts(&self) -> Counts {
        Counts {
            batches: self.counters.batches.load(Ordering::Relaxed),
            entries: self.counters.entries.load(Ordering::Relaxed),
            fsyncs: self.counters.fsyncs.load(Ordering::Relaxed),
        }
    }

    /// Stops the leader, which closes the followers' connections and the storage queue,
    /// and waits for their threads.
    fn stop(self) -> Result<(), Box<dyn Error>> {
        drop(self.leader_rt);
        for t in self.threads {
            t.join()
                .map_err(|_| "a floor node thread panicked")?
                .map_err(|e| format!("a floor node failed: {e}"))?;
        }
        Ok(())
    }
}

/// One node's log: a synced file overwritten in a cycle, one write and one sync per batch.
struct Log {
    file: File,
    offset: u64,
    buffer: Vec<u8>,
    counters: Arc<Counters>,
}

impl Log {
    fn create(path: &Path, counters: &Arc<Counters>) -> io::Result<Log> {
        let mut file = File::create(path)?;
        let chunk = vec![0u8; 1 << 20];
        for _ in 0..LOG_BYTES / chunk.len() as u64 {
            file.write_all(&chunk)?;
        }
        file.sync_all()?;
        Ok(Log {
            file,
            offset: 0,
            buffer: Vec::new(),
            counters: counters.clone(),
        })
    }

    /// Writes `len` bytes at the cycle's next offset.
    fn append(&mut self, len: usize) -> io::Result<()> {
        self.buffer.resize(len, b'e');
        if self.offset + len as u64 > LOG_BYTES {
            self.offset = 0;
        }
        self.file.write_all_at(&self.buffer, self.offset)?;
        self.offset += len as u64;
        Ok(())
    }

    /// Makes what was written durable.
    fn sync(&mut self) -> io::Result<()> {
        self.file.sync_data()?;
        self.counters.fsyncs.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// A follower: for each frame, write and sync its body, then acknowledge its number.
fn follower(listener: std::net::TcpListener, mut log: Log) -> io::Result<()> {
    let (mut stream, _) = listener.accept()?;
    stream.set_nodelay(true)?;
    let mut head = [0u8; HEAD];
    let mut body = Vec::new();
    loop {
        match stream.read_exact(&mut head) {
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            r => r?,
        }
        let (seq, len) = parse_head(&head);
        body.resize(len, 0);
        stream.read_exact(&mut body)?;
        log.append(len)?;
        log.sync()?;
        stream.write_all(&seq.to_le_bytes())?;
    }
}

fn parse_head(head: &[u8; HEAD]) -> (u64, usize) {
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&head[..8]);
    let mut len = [0u8; 4];
    len.copy_from_slice(&head[8..]);
    (u64::from_le_bytes(seq), u32::from_le_bytes(len) as usize)
}

/// The leader's storage thread: group-commits every batch queued while it was syncing.
/// Without `sync`, it only writes, and never counts toward a commit.
fn leader_storage(
    batches: std_mpsc::Receiver<(u64, usize)>,
    mut log: Log,
    sync: bool,
    acks: mpsc::UnboundedSender<(usize, u64)>,
) -> io::Result<()> {
    while let Ok((mut seq, mut len)) = batches.recv() {
        while let Ok((s, l)) = batches.try_recv() {
            seq = s;
            len += l;
        }
        if !sync {
            log.append(len)?;
            continue;
        }
        log.append(len)?;
        log.sync()?;
        if acks.send((0, seq)).is_err() {
            return Ok(());
        }
    }
    Ok(())
}

/// Forwards a follower's acknowledgements to the leader's commit rule.
async fn read_acks(
    node: usize,
    mut read: OwnedReadHalf,
    acks: mpsc::UnboundedSender<(usize, u64)>,
) {
    let mut ack = [0u8; 8];
    while read.read_exact(&mut ack).await.is_ok() {
        if acks.send((node, u64::from_le_bytes(ack))).is_err() {
            return;
        }
    }
}

/// How the leader forms batches.
struct Batching {
    entry_bytes: usize,
    window: usize,
    min_batch: usize,
    counters: Arc<Counters>,
}

impl Batching {
    /// Whether the `pending` requests leave now, with `inflight` batches uncommitted: the
    /// first batch in flight takes whatever there is, a further one needs `min_batch`.
    fn ready(&self, inflight: usize, pending: usize) -> bool {
        pending > 0 && (inflight == 0 || (inflight < self.window && pending >= self.min_batch))
    }
}

/// The leader's replication loop: batches what has arrived, sends it to the followers and
/// the storage thread, and answers a batch's clients once two copies are synced.
async fn replicate(
    mut requests: mpsc::UnboundedReceiver<oneshot::Sender<()>>,
    mut acks: mpsc::UnboundedReceiver<(usize, u64)>,
    storage: std_mpsc::Sender<(u64, usize)>,
    mut followers: Vec<OwnedWriteHalf>,
    batching: Batching,
) {
    let mut synced = [0u64; 3];
    let mut inflight: VecDeque<(u64, Vec<oneshot::Sender<()>>)> = VecDeque::new();
    let mut pending = Vec::new();
    let mut seq = 0u64;
    let mut frame = Vec::new();
    loop {
        tokio::select! {
            biased;
            ack = acks.recv() => {
                let Some((node, s)) = ack else { return };
                synced[node] = synced[node].max(s);
                let committed = majority_synced(synced);
                while inflight.front().is_some_and(|(s, _)| *s <= committed) {
                    if let Some((_, waiters)) = inflight.pop_front() {
                        for w in waiters {
                            let _ = w.send(());
                        }
                    }
                }
            }
            request = requests.recv() => {
                let Some(request) = request else { return };
                pending.push(request);
                while let Ok(w) = requests.try_recv() {
                    pending.push(w);
                }
            }
        }
        if !batching.ready(inflight.len(), pending.len()) {
            continue;
        }
        let waiters = std::mem::take(&mut pending);
        seq += 1;
        let len = waiters.len() * batching.entry_bytes;
        batching.counters.batches.fetch_add(1, Ordering::Relaxed);
        batching
            .counters
            .entries
            .fetch_add(waiters.len() as u64, Ordering::Relaxed);
        if storage.send((seq, len)).is_err() {
            return;
        }
        frame.clear();
        frame.extend_from_slice(&seq.to_le_bytes());
        frame.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_le_bytes());
        frame.resize(HEAD + len, b'e');
        for f in &mut followers {
            if f.write_all(&frame).await.is_err() {
                return;
            }
        }
        inflight.push_back((seq, waiters));
    }
}

/// The last batch that at least two of the three copies have synced.
fn majority_synced(synced: [u64; 3]) -> u64 {
    let mut sorted = synced;
    sorted.sort_unstable();
    sorted[1]
}

/// One client connection on the leader: each request waits for its batch to commit.
async fn serve(
    mut stream: TcpStream,
    req_len: usize,
    resp_len: usize,
    requests: mpsc::UnboundedSender<oneshot::Sender<()>>,
) {
    if stream.set_nodelay(true).is_err() {
        return;
    }
    let (mut request, response) = (vec![0u8; req_len], vec![b'r'; resp_len]);
    while stream.read_exact(&mut request).await.is_ok() {
        let (tx, rx) = oneshot::channel();
        if requests.send(tx).is_err() || rx.await.is_err() {
            return;
        }
        if stream.write_all(&response).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_commits_on_its_second_synced_copy_whichever_it_is() {
        assert_eq!(majority_synced([0, 0, 0]), 0);
        assert_eq!(majority_synced([5, 0, 0]), 0);
        assert_eq!(majority_synced([5, 3, 0]), 3);
        assert_eq!(majority_synced([0, 3, 5]), 3);
        assert_eq!(majority_synced([2, 7, 7]), 7);
    }

    #[test]
    fn a_further_batch_in_flight_waits_for_min_batch_requests() {
        let batching = Batching {
            entry_bytes: 1,
            window: 2,
            min_batch: 4,
            counters: Arc::default(),
        };
        assert!(!batching.ready(0, 0));
        assert!(
            batching.ready(0, 1),
            "nothing in flight: whatever there is leaves"
        );
        assert!(!batching.ready(1, 3));
        assert!(batching.ready(1, 4));
        assert!(!batching.ready(2, 100), "the window is full");
    }

    /// Runs three clients in turn, five requests each, and returns the counters.
    fn serve_fifteen_requests(leader_sync: bool) -> Counts {
        let dir = tempfile::tempdir().unwrap();
        let args = FloorArgs {
            clients: vec![3],
            seconds: 0.1,
            request_bytes: 20,
            response_bytes: 10,
            entry_bytes: 16,
            window: 1,
            min_batch: 1,
            leader_sync,
            leader_threads: 1,
            dir: None,
        };
        let floor = Floor::start(dir.path(), &args).unwrap();
        let rt = runtime(1).unwrap();
        let addr = floor.addr;
        let answered: usize = rt.block_on(async move {
            let mut total = 0;
            for _ in 0..3 {
                let mut s = TcpStream::connect(addr).await.unwrap();
                for _ in 0..5 {
                    s.write_all(&[b'q'; 20]).await.unwrap();
                    let mut answer = [0u8; 10];
                    s.read_exact(&mut answer).await.unwrap();
                    assert_eq!(answer, [b'r'; 10]);
                    total += 1;
                }
            }
            total
        });
        let counts = floor.counts();
        floor.stop().unwrap();
        assert_eq!(answered, 15);
        counts
    }

    #[test]
    fn every_request_is_answered_after_its_batch_is_synced_on_two_copies() {
        let counts = serve_fifteen_requests(true);
        assert_eq!(counts.entries, 15);
        // Clients took turns, so every batch held one request, and each was synced by at
        // least two of the three nodes before it was answered.
        assert_eq!(counts.batches, 15);
        assert!(counts.fsyncs >= 30, "{} fsyncs", counts.fsyncs);
    }

    #[test]
    fn without_leader_sync_both_followers_sync_every_batch_before_its_answer() {
        let counts = serve_fifteen_requests(false);
        assert_eq!(counts.batches, 15);
        // Only the followers sync, and a batch needs both of them.
        assert_eq!(counts.fsyncs, 30);
    }
}
