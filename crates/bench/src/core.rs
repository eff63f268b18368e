//! The `core` scenario: the consensus core alone, with no runtime, threads, channels or
//! clock around it.
//!
//! Three [`RaftCore`]s on one thread exchange their messages directly; every write is
//! durable the moment it is handed out and every committed entry is applied at once. Each
//! round the leader takes K proposals (like K clients with one call in flight each), then
//! the cores trade messages until all K are applied on the leader. What is left is the CPU
//! the library's protocol code spends per proposal: what `inproc` pays on top of it is the
//! runtime (channels, wake-ups, the applier and storage hand-offs).
//!
//! Being single-threaded and seeded, a run executes the same instructions every time, so
//! `valgrind --tool=callgrind raftlock-bench core --proposals 200000 --rounds-of 64` gives
//! an instruction count per proposal that ignores machine noise; use it to compare a hot
//! path change before and after.

use std::collections::VecDeque;
use std::error::Error;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Args;
use raftlock_raft::core::{InitialState, RaftCore, Ready};
use raftlock_raft::message::{Message, MessageBody};
use raftlock_raft::{Config, NodeId, PeerConfig, Role, SeededRand, SnapshotInfo};

use crate::machine;
use crate::report::{self, Align, Table};

/// Options of `raftlock-bench core`.
#[derive(Debug, Clone, Args)]
pub struct CoreArgs {
    /// Proposals per row.
    #[arg(long, value_name = "N", default_value_t = 2_000_000)]
    pub proposals: u64,
    /// Proposals the leader takes per round, one row each (like that many clients).
    #[arg(
        long,
        value_name = "LIST",
        value_delimiter = ',',
        default_value = "1,64,1024"
    )]
    pub rounds_of: Vec<usize>,
    /// Bytes of each command.
    #[arg(long, value_name = "BYTES", default_value_t = 0)]
    pub command_bytes: usize,
}

/// Nodes of the cluster.
const NODES: usize = 3;

/// Runs the scenario and prints the report.
pub fn run(args: &CoreArgs) -> Result<(), Box<dyn Error>> {
    if args.proposals == 0
        || args.rounds_of.is_empty()
        || args.rounds_of.iter().any(|&k| k == 0 || k > 100_000)
        || args.command_bytes > 1 << 20
    {
        return Err("core: --proposals > 0, --rounds-of 1..100,000 each, \
                    --command-bytes at most 1 MiB"
            .into());
    }
    machine::print_header();
    println!(
        "core: {NODES} RaftCores on one thread, messages handed over directly, every write \
         durable at once, entries applied at once; {} proposals of {} bytes per row, K per \
         round; snapshots every {} entries as by default",
        args.proposals,
        args.command_bytes,
        Config::new("n1", Vec::new()).options.snapshot_threshold
    );
    let mut table = Table::new(&[
        ("proposals per round", Align::Right),
        ("proposals/s", Align::Right),
        ("ns/proposal", Align::Right),
        ("messages/round", Align::Right),
        ("entries/AppendEntries", Align::Right),
    ]);
    let command = Bytes::from(vec![b'x'; args.command_bytes]);
    for &k in &args.rounds_of {
        let mut cluster = Cluster::new()?;
        cluster.elect()?;
        let before = cluster.traffic;
        let cpu = machine::thread_cpu_time();
        let started = Instant::now();
        let mut done = 0u64;
        while done < args.proposals {
            let n = (args.proposals - done).min(k as u64);
            cluster.round(n, &command)?;
            done += n;
        }
        let wall = started.elapsed();
        let cpu = match (cpu, machine::thread_cpu_time()) {
            (Some(a), Some(b)) => b.saturating_sub(a),
            _ => wall,
        };
        let rounds = done.div_ceil(k as u64).max(1);
        let traffic = cluster.traffic.since(&before);
        table.row(vec![
            report::count(k as f64),
            report::count(done as f64 / wall.as_secs_f64()),
            report::decimal(cpu.as_nanos() as f64 / done as f64),
            report::decimal(traffic.messages as f64 / rounds as f64),
            report::decimal(traffic.entries as f64 / traffic.appends.max(1) as f64),
        ]);
    }
    println!("\n{table}");
    println!(
        "- ns/proposal: this thread's CPU time over the row, per proposal, for all three \
         cores together (propose, replicate, commit, apply)."
    );
    println!("- messages/round: messages of all kinds the cores sent per round.");
    println!("- entries/AppendEntries: entries per AppendEntries that carried any.");
    Ok(())
}

/// Messages the cores sent, for the report.
#[derive(Debug, Clone, Copy, Default)]
struct Traffic {
    messages: u64,
    appends: u64,
    entries: u64,
}

impl Traffic {
    fn since(&self, before: &Traffic) -> Traffic {
        Traffic {
            messages: self.messages - before.messages,
            appends: self.appends - before.appends,
            entries: self.entries - before.entries,
        }
    }
}

/// Three cores and the messages between them.
struct Cluster {
    cores: Vec<RaftCore>,
    ids: Vec<NodeId>,
    /// Messages sent and not yet delivered.
    queue: VecDeque<Message>,
    /// Virtual time, advanced by one tick interval per tick.
    now: Duration,
    traffic: Traffic,
}

impl Cluster {
    fn new() -> Result<Cluster, Box<dyn Error>> {
        let ids: Vec<NodeId> = (1..=NODES).map(|i| NodeId::from(format!("n{i}"))).collect();
        let peers: Vec<PeerConfig> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| PeerConfig {
                id: id.clone(),
                address: format!("127.0.0.1:{}", 9001 + i),
            })
            .collect();
        let mut cores = Vec::with_capacity(NODES);
        for (i, id) in ids.iter().enumerate() {
            let config = Config::new(id.clone(), peers.clone());
            let rand = Box::new(SeededRand::new(i as u64 + 1));
            let mut core = RaftCore::new(config, InitialState::default(), rand)?;
            core.set_now(Duration::ZERO);
            cores.push(core);
        }
        Ok(Cluster {
            cores,
            ids,
            queue: VecDeque::new(),
            now: Duration::ZERO,
            traffic: Traffic::default(),
        })
    }

    /// Ticks node 1 alone until it leads (the others only answer), then lets its first
    /// entry commit.
    fn elect(&mut self) -> Result<(), Box<dyn Error>> {
        let interval = self.cores[0].config().options.nominal_tick_interval;
        for _ in 0..10_000 {
            if self.cores[0].role() == Role::Leader {
                self.settle()?;
                return Ok(());
            }
            self.now += interval;
            let now = self.now;
            for core in &mut self.cores {
                core.set_now(now);
            }
            self.cores[0].tick();
            self.settle()?;
        }
        Err("core: node 1 was not elected within 10,000 ticks".into())
    }

    /// The leader takes `n` proposals, then the cores trade messages until all are
    /// applied there.
    fn round(&mut self, n: u64, command: &Bytes) -> Result<(), Box<dyn Error>> {
        let mut last = 0;
        for _ in 0..n {
            let (index, _) = self.cores[0].propose(command.clone())?;
            last = index;
        }
        self.settle()?;
        let applied = self.cores[0].applied_index();
        if applied < last {
            return Err(format!("core: proposal {last} not applied (applied {applied})").into());
        }
        Ok(())
    }

    /// Drains every core's `Ready` and delivers messages until nothing is left to do.
    fn settle(&mut self) -> Result<(), Box<dyn Error>> {
        loop {
            for i in 0..NODES {
                while self.cores[i].has_ready() {
                    let rd = self.cores[i].ready();
                    self.carry_out(i, rd);
                }
            }
            if self.queue.is_empty() {
                return Ok(());
            }
            // Each core takes everything addressed to it before its next Ready, as a node
            // drains its inbound queue.
            while let Some(m) = self.queue.pop_front() {
                let Some(to) = self.ids.iter().position(|id| *id == m.to) else {
                    return Err(format!("core: message to unknown node {}", m.to).into());
                };
                self.cores[to].step(m);
            }
        }
    }

    /// What a runtime does with a `Ready`, with storage and the applier taking no time.
    fn carry_out(&mut self, i: usize, rd: Ready) {
        for m in &rd.messages {
            self.traffic.messages += 1;
            if let MessageBody::AppendEntries(ae) = &m.body {
                if !ae.entries.is_empty() {
                    self.traffic.appends += 1;
                    self.traffic.entries += ae.entries.len() as u64;
                }
            }
        }
        self.queue.extend(rd.messages);
        let core = &mut self.cores[i];
        if let Some(w) = rd.write {
            core.on_persisted(w.seq);
        }
        if let Some(snap) = rd.snapshot {
            core.on_applied(snap.meta.last_index);
        }
        if let Some(last) = rd.committed_entries.last() {
            core.on_applied(last.index);
        }
        if rd.snapshot_request.is_some() {
            let applied = core.applied_index();
            if let Some(meta) = core.snapshot_meta_at(applied) {
                core.on_snapshot_built(SnapshotInfo {
                    meta,
                    size: 0,
                    checksum: 0,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn rounds_commit_and_apply_every_proposal_on_every_core() {
        let mut cluster = Cluster::new().unwrap();
        cluster.elect().unwrap();
        let start = cluster.cores[0].applied_index();
        let before = cluster.traffic;
        for _ in 0..5 {
            cluster.round(64, &Bytes::from_static(b"x")).unwrap();
        }
        let end = start + 5 * 64;
        for core in &cluster.cores {
            // The leader broadcasts the new commit index and the round settles only when no
            // message is left, so the followers have applied everything too.
            assert_eq!(core.applied_index(), end, "{}", core.id());
        }
        let traffic = cluster.traffic.since(&before);
        assert_eq!(
            traffic.entries,
            2 * 5 * 64,
            "each entry went to both followers once"
        );
    }
}
