//! The nodes of the `floor` scenario: the leader's tasks, its storage thread, the two
//! followers, and the commit rule.

use std::collections::VecDeque;
use std::error::Error;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc as std_mpsc, Arc};
use std::thread::JoinHandle;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

use super::FloorArgs;
use crate::raftkv_bin::runtime;

/// Size of each node's log file, written and synced before the run and then overwritten
/// in a cycle.
pub(super) const LOG_BYTES: u64 = 16 << 20;

/// Length of a frame's head: the batch number and the body's length.
const HEAD: usize = 12;

/// The followers' numbers in the commit rule (0 is the leader).
const FOLLOWERS: [usize; 2] = [1, 2];

/// Counters of the whole run, read before and after each row.
#[derive(Default)]
struct Counters {
    batches: AtomicU64,
    entries: AtomicU64,
    fsyncs: AtomicU64,
}

/// A snapshot of [`Counters`].
pub(super) struct Counts {
    pub(super) batches: u64,
    pub(super) entries: u64,
    pub(super) fsyncs: u64,
}

/// The running leader, followers and storage thread.
pub(super) struct Floor {
    pub(super) addr: std::net::SocketAddr,
    counters: Arc<Counters>,
    leader_rt: tokio::runtime::Runtime,
    threads: Vec<JoinHandle<io::Result<()>>>,
}

impl Floor {
    /// Pre-writes the three logs, starts the followers and the leader, and connects them.
    pub(super) fn start(dir: &Path, args: &FloorArgs) -> Result<Floor, Box<dyn Error>> {
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
        let (req, resp) = (args.exchange.request_bytes, args.exchange.response_bytes);
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

    pub(super) fn counts(&self) -> Counts {
        Counts {
            batches: self.counters.batches.load(Ordering::Relaxed),
            entries: self.counters.entries.load(Ordering::Relaxed),
            fsyncs: self.counters.fsyncs.load(Ordering::Relaxed),
        }
    }

    /// Stops the leader, which closes the followers' connections and the storage queue,
    /// and waits for their threads.
    pub(super) fn stop(self) -> Result<(), Box<dyn Error>> {
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

/// A follower: for each frame, write and sync its body, then acknowledge its number. It
/// ends without error when the leader hangs up, even in the middle of an exchange (the
/// leader stops as soon as two copies hold the last batch).
fn follower(listener: std::net::TcpListener, mut log: Log) -> io::Result<()> {
    let (mut stream, _) = listener.accept()?;
    stream.set_nodelay(true)?;
    let mut head = [0u8; HEAD];
    let mut body = Vec::new();
    let hung_up = |e: &io::Error| {
        matches!(
            e.kind(),
            io::ErrorKind::UnexpectedEof
                | io::ErrorKind::BrokenPipe
                | io::ErrorKind::ConnectionReset
        )
    };
    let mut exchange = |stream: &mut std::net::TcpStream| -> io::Result<()> {
        stream.read_exact(&mut head)?;
        let (seq, len) = parse_head(&head);
        body.resize(len, 0);
        stream.read_exact(&mut body)?;
        log.append(len)?;
        log.sync()?;
        stream.write_all(&seq.to_le_bytes())
    };
    loop {
        match exchange(&mut stream) {
            Ok(()) => {}
            Err(e) if hung_up(&e) => return Ok(()),
            Err(e) => return Err(e),
        }
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
            exchange: crate::loopback::ExchangeArgs {
                clients: vec![3],
                request_bytes: 20,
                response_bytes: 10,
            },
            seconds: 0.1,
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
