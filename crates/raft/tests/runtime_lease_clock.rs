//! The runtime judges a lease read by a clock reading taken right before the decision, not
//! by the one taken when the event loop woke up: a loop that stalls between the two (a long
//! batch, a descheduled thread) must not serve a read from a lease that ran out meanwhile.
//!
//! Time is a manual clock the test advances, and ticks are given by the test, so nothing
//! here depends on the machine's speed; waits are bounded polls.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use raftlock_raft::{
    Clock, Config, LocalNetwork, MemStorage, NodeId, PeerConfig, Raft, RaftBuilder,
};

mod common;
use common::Recorder;

const TICK: Duration = Duration::from_millis(10);

/// A clock the test moves. Once armed, every reading after the next one is `jump` later:
/// the loop's wake-up reading is on time, any later reading sees the stall.
#[derive(Clone, Default)]
struct StallingClock {
    nanos: Arc<AtomicU64>,
    armed: Arc<AtomicBool>,
    reads_since_armed: Arc<AtomicU64>,
}

impl StallingClock {
    fn advance(&self, by: Duration) {
        self.nanos.fetch_add(by.as_nanos() as u64, Ordering::SeqCst);
    }
}

impl Clock for StallingClock {
    fn now(&self) -> Duration {
        let base = Duration::from_nanos(self.nanos.load(Ordering::SeqCst));
        if self.armed.load(Ordering::SeqCst)
            && self.reads_since_armed.fetch_add(1, Ordering::SeqCst) >= 1
        {
            return base + Duration::from_secs(10);
        }
        base
    }
}

fn id(i: usize) -> NodeId {
    NodeId::from(format!("node-{i}"))
}

fn node(i: usize, net: &LocalNetwork, clock: StallingClock) -> Raft {
    let peers = (1..=3)
        .map(|k| PeerConfig {
            id: id(k),
            address: format!("127.0.0.1:{}", 7300 + k),
        })
        .collect();
    let mut c = Config::new(id(i), peers);
    c.options.nominal_tick_interval = TICK;
    let raft = RaftBuilder::new()
        .with_config(c)
        .with_storage(MemStorage::new())
        .with_applier(Recorder::default())
        .with_network(net.transport(id(i)))
        .with_clock(clock)
        .with_external_ticks()
        .build()
        .unwrap();
    raft.start().unwrap();
    raft
}

/// One tick interval on every node: clocks advance, then each node ticks.
async fn tick_all(nodes: &[Raft], clocks: &[StallingClock]) {
    for c in clocks {
        c.advance(TICK);
    }
    for n in nodes {
        n.tick();
    }
    // Let the messages of this tick flow (the assertions poll; none depends on timing).
    tokio::time::sleep(Duration::from_millis(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_read_is_judged_by_the_clock_at_the_decision() {
    let net = LocalNetwork::new();
    let clocks: Vec<StallingClock> = (0..3).map(|_| StallingClock::default()).collect();
    let nodes: Vec<Raft> = (1..=3)
        .map(|i| node(i, &net, clocks[i - 1].clone()))
        .collect();

    // Elect a leader and let it commit and confirm a read (which starts its lease).
    let mut leader = None;
    for _ in 0..2000 {
        tick_all(&nodes, &clocks).await;
        if let Some(l) = nodes.iter().position(|n| n.get_state().1) {
            leader = Some(l);
            break;
        }
    }
    let l = leader.expect("a leader within 2000 ticks");
    let mut confirmed = false;
    for _ in 0..200 {
        let read = nodes[l].read_index();
        tokio::pin!(read);
        // The read needs heartbeat rounds: keep time going until it is answered.
        let done = loop {
            tokio::select! {
                r = &mut read => break r,
                () = tick_all(&nodes, &clocks) => {}
            }
        };
        if done.is_ok() {
            confirmed = true;
            break;
        }
    }
    assert!(confirmed, "the leader never confirmed a read");
    // One more round acknowledged by both followers renews the lease at the current time.
    for _ in 0..3 {
        tick_all(&nodes, &clocks).await;
    }

    // The leader is cut off and its event loop stalls for 10 s between waking up and
    // deciding: the lease has run out by the decision, so the read must not be served.
    net.isolate(&id(l + 1));
    clocks[l].armed.store(true, Ordering::SeqCst);
    let outcome = tokio::time::timeout(Duration::from_secs(5), nodes[l].read_index()).await;
    assert!(
        !matches!(outcome, Ok(Ok(_))),
        "a read was served from a lease that had expired at the decision: {outcome:?}"
    );
    for n in &nodes {
        n.stop().await;
    }
}
