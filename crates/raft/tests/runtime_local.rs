//! The runtime end to end in one process: three nodes on a `LocalNetwork` with real
//! threads and timers. Every wait is bounded; no assertion depends on speed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use bytes::Bytes;
use raftlock_raft::{
    Config, ElectionReason, Error, FileStorage, FileStorageOptions, LocalNetwork, MemStorage,
    NodeId, PeerConfig, ProposalResult, Raft, RaftBuilder, Storage, SyncPolicy,
};

mod common;
use common::{eventually, leader_of, stop_fails_proposals_in_flight, MetricsLog, Recorder};

fn id(i: usize) -> NodeId {
    NodeId::from(format!("node-{i}"))
}

fn config(i: usize, tweak: impl Fn(&mut Config)) -> Config {
    let peers = (1..=3)
        .map(|k| PeerConfig {
            id: id(k),
            address: format!("127.0.0.1:{}", 7100 + k),
        })
        .collect();
    let mut c = Config::new(id(i), peers);
    c.options.nominal_tick_interval = Duration::from_millis(10);
    tweak(&mut c);
    c
}

fn build(
    i: usize,
    net: &LocalNetwork,
    storage: impl Storage,
    applier: Recorder,
    tweak: impl Fn(&mut Config),
) -> Raft {
    build_with(i, net, storage, applier, tweak, |b| b)
}

/// [`build`], with `extra` applied to the builder (metrics, inline applier, ...).
fn build_with(
    i: usize,
    net: &LocalNetwork,
    storage: impl Storage,
    applier: Recorder,
    tweak: impl Fn(&mut Config),
    extra: impl FnOnce(RaftBuilder) -> RaftBuilder,
) -> Raft {
    let builder = RaftBuilder::new()
        .with_config(config(i, tweak))
        .with_storage(storage)
        .with_applier(applier)
        .with_network(net.transport(id(i)));
    let node = extra(builder).build().unwrap();
    node.start().unwrap();
    node
}

/// Whether `node` applies up to `index` within 10 s.
async fn applies_up_to(node: &Raft, index: u64) -> bool {
    for _ in 0..1000 {
        if node.status().await.unwrap().last_applied >= index {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_elect_replicate_and_read() {
    let net = LocalNetwork::new();
    let appliers: Vec<Recorder> = (0..3).map(|_| Recorder::default()).collect();
    let nodes: Vec<Raft> = (1..=3)
        .map(|i| build(i, &net, MemStorage::new(), appliers[i - 1].clone(), |_| {}))
        .collect();
    let l = leader_of(&nodes).await;
    let result = nodes[l]
        .propose_and_wait("SET greeting=hello")
        .await
        .unwrap();
    assert_eq!(result, Bytes::from("applied 1 commands"));
    // A follower refuses proposals and names the leader.
    let f = (l + 1) % 3;
    match nodes[f].propose("x").await {
        Err(Error::NotLeader { leader }) => assert_eq!(leader, Some(id(l + 1))),
        other => panic!("expected NotLeader, got {other:?}"),
    }
    // A linearizable read on a follower sees the write.
    nodes[f].read_index().await.unwrap();
    assert_eq!(appliers[f].commands(), vec!["SET greeting=hello"]);
    let status = nodes[l].status().await.unwrap();
    assert_eq!(status.replication.len(), 2);
    for n in &nodes {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_on_the_same_directories_recovers_everything() {
    let net = LocalNetwork::new();
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let opts = FileStorageOptions {
        sync: SyncPolicy::UnsafeNoSync,
        ..Default::default()
    };
    let small_snapshots = |c: &mut Config| {
        c.options.snapshot_threshold = 5;
        c.options.log_compaction_min_entries = 2;
    };
    let open = |k: usize| FileStorage::open(dirs[k].path(), opts.clone()).unwrap();
    let nodes: Vec<Raft> = (1..=3)
        .map(|i| build(i, &net, open(i - 1), Recorder::default(), small_snapshots))
        .collect();
    let l = leader_of(&nodes).await;
    for k in 0..12 {
        nodes[l].propose_and_wait(format!("cmd-{k}")).await.unwrap();
    }
    for n in &nodes {
        n.stop().await; // releases the directory locks
    }
    let appliers: Vec<Recorder> = (0..3).map(|_| Recorder::default()).collect();
    let nodes: Vec<Raft> = (1..=3)
        .map(|i| {
            build(
                i,
                &net,
                open(i - 1),
                appliers[i - 1].clone(),
                small_snapshots,
            )
        })
        .collect();
    let l = leader_of(&nodes).await;
    nodes[l].read_index().await.unwrap();
    let expected: Vec<String> = (0..12).map(|k| format!("cmd-{k}")).collect();
    assert_eq!(
        appliers[l].commands(),
        expected,
        "snapshot restored and log replayed"
    );
    for n in &nodes {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_follower_catches_up_through_a_snapshot() {
    let net = LocalNetwork::new();
    let appliers: Vec<Recorder> = (0..3).map(|_| Recorder::default()).collect();
    let tweak = |c: &mut Config| {
        c.options.snapshot_threshold = 10;
        c.options.log_compaction_min_entries = 0;
        c.tuning.max_snapshot_chunk_size = 64;
    };
    let nodes: Vec<Raft> = (1..=3)
        .map(|i| build(i, &net, MemStorage::new(), appliers[i - 1].clone(), tweak))
        .collect();
    let l = leader_of(&nodes).await;
    let lagging = (l + 1) % 3;
    net.isolate(&id(lagging + 1));
    for k in 0..40 {
        nodes[l].propose_and_wait(format!("w{k}")).await.unwrap();
    }
    net.heal();
    let want = appliers[l].commands();
    let follower = appliers[lagging].clone();
    eventually("the follower caught up", || follower.commands() == want).await;
    for n in &nodes {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_fails_pending_proposals_with_shutting_down() {
    // Without CheckQuorum an isolated leader keeps leading, so the proposals stay
    // pending (accepted, never committed) until it stops.
    let alone = |c: &mut Config| {
        c.feature_flags.check_quorum = false;
        c.feature_flags.enable_leader_lease = false;
    };
    let net = LocalNetwork::new();
    let nodes: Vec<Raft> = (1..=3)
        .map(|i| build(i, &net, MemStorage::new(), Recorder::default(), alone))
        .collect();
    let l = leader_of(&nodes).await;
    nodes[l].propose_and_wait("committed").await.unwrap();
    net.isolate(&id(l + 1));
    let leader = nodes[l].clone();
    stop_fails_proposals_in_flight(&leader).await;
    assert!(matches!(
        leader.read_index().await,
        Err(Error::ShuttingDown)
    ));
    for n in &nodes {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_see_elections_peer_lag_fsyncs_and_refused_proposals() {
    let net = LocalNetwork::new();
    let logs: Vec<MetricsLog> = (0..3).map(|_| MetricsLog::default()).collect();
    let nodes: Vec<Raft> = (1..=3)
        .map(|i| {
            let tweak = |c: &mut Config| c.tuning.max_proposal_bytes = 1024;
            let metrics = logs[i - 1].clone();
            build_with(
                i,
                &net,
                MemStorage::new(),
                Recorder::default(),
                tweak,
                |b| b.with_metrics(metrics),
            )
        })
        .collect();
    let l = leader_of(&nodes).await;
    let (term, _) = nodes[l].get_state();
    // The leader won a pre-vote and then the election of its term.
    let elections = logs[l].get(|o| o.elections.clone());
    assert!(
        elections.contains(&(term, ElectionReason::PreVoteWon)),
        "{elections:?}"
    );
    assert!(
        elections.contains(&(term, ElectionReason::Timeout)),
        "{elections:?}"
    );
    // An oversized proposal gets a clear error, is counted, and changes nothing.
    match nodes[l].propose(vec![7u8; 2048]).await {
        Err(Error::ProposalTooLarge { size, limit }) => assert_eq!((size, limit), (2048, 1024)),
        other => panic!("expected ProposalTooLarge, got {other:?}"),
    }
    nodes[l].propose_and_wait("fits").await.unwrap();
    assert_eq!(
        logs[l].get(|o| o.proposals.clone()),
        [ProposalResult::TooLarge, ProposalResult::Accepted]
    );
    // Once per tick the leader reports each follower's lag; both catch up.
    let log = logs[l].clone();
    let last = nodes[l].status().await.unwrap().last_log_index;
    eventually("both followers are reported caught up", || {
        log.get(|o| {
            o.peer_lag.len() == 2 && o.peer_lag.values().all(|&(m, lag)| m >= last && lag == 0)
        })
    })
    .await;
    assert!(logs[l].get(|o| o.fsyncs) > 0);
    for n in &nodes {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_leader_is_replaced_within_three_election_timeouts_and_catches_up_on_restart() {
    // Ticks are driven by the test (external ticks), so the bound is in ticks, not seconds:
    // after each round of ticks the nodes get a moment to exchange messages.
    let net = LocalNetwork::new();
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let opts = FileStorageOptions {
        sync: SyncPolicy::UnsafeNoSync,
        ..Default::default()
    };
    let open = |k: usize| FileStorage::open(dirs[k].path(), opts.clone()).unwrap();
    let start = |i: usize, applier: Recorder| {
        build_with(
            i,
            &net,
            open(i - 1),
            applier,
            |_| {},
            |b| b.with_external_ticks(),
        )
    };
    let appliers: Vec<Recorder> = (0..3).map(|_| Recorder::default()).collect();
    let mut nodes: Vec<Option<Raft>> = (1..=3)
        .map(|i| Some(start(i, appliers[i - 1].clone())))
        .collect();
    async fn tick_round(nodes: &[Option<Raft>]) {
        for n in nodes.iter().flatten() {
            n.tick();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let leader = |nodes: &[Option<Raft>]| -> Option<usize> {
        let l: Vec<usize> = (0..3)
            .filter(|&k| nodes[k].as_ref().is_some_and(|n| n.get_state().1))
            .collect();
        (l.len() == 1).then(|| l[0])
    };
    let mut old = None;
    for _ in 0..200 {
        tick_round(&nodes).await;
        if let Some(l) = leader(&nodes) {
            old = Some(l);
            break;
        }
    }
    let old = old.expect("a first leader");
    let first = nodes[old].clone().unwrap();
    first.propose_and_wait("before").await.unwrap();
    first.stop().await;
    nodes[old] = None;
    let election_ticks = 10;
    let mut ticks = 0;
    let new = loop {
        tick_round(&nodes).await;
        ticks += 1;
        if let Some(l) = leader(&nodes) {
            break l;
        }
        assert!(
            ticks <= 3 * election_ticks,
            "no new leader within three election timeouts"
        );
    };
    assert_ne!(new, old);
    let leader_node = nodes[new].clone().unwrap();
    let writer = tokio::spawn(async move { leader_node.propose_and_wait("after").await });
    while !writer.is_finished() {
        tick_round(&nodes).await;
    }
    writer.await.unwrap().unwrap();
    // The old leader restarts on its directory and catches up.
    let restarted = Recorder::default();
    nodes[old] = Some(start(old + 1, restarted.clone()));
    for _ in 0..300 {
        tick_round(&nodes).await;
        if restarted.commands() == ["before", "after"] {
            break;
        }
    }
    assert_eq!(restarted.commands(), vec!["before", "after"]);
    for n in nodes.iter().flatten() {
        n.stop().await;
    }
}

#[cfg(feature = "prometheus")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_metrics_follow_a_running_node() {
    use raftlock_raft::PrometheusMetrics;
    let net = LocalNetwork::new();
    let metrics: Vec<PrometheusMetrics> = (0..3).map(|_| PrometheusMetrics::new()).collect();
    let nodes: Vec<Raft> = (1..=3)
        .map(|i| {
            let m = metrics[i - 1].clone();
            build_with(
                i,
                &net,
                MemStorage::new(),
                Recorder::default(),
                |_| {},
                |b| b.with_metrics(m),
            )
        })
        .collect();
    let l = leader_of(&nodes).await;
    nodes[l].propose_and_wait("m").await.unwrap();
    nodes[l].read_index().await.unwrap();
    let text = metrics[l].encode();
    for needle in [
        "raft_role 3",
        "raft_proposals_total{result=\"accepted\"} 1",
        "raft_read_index_seconds_count 1",
        "raft_applied_index 2",
        "raft_elections_total{reason=\"pre_vote_won\"}",
        "raft_fsync_seconds_count",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
    for n in &nodes {
        n.stop().await;
    }
}

/// With in-memory storage the runtime writes inline; with `with_inline_applier` it also
/// applies inline. Everything the threaded path guarantees must still hold: results reach
/// their proposers, snapshots are taken and installed, followers apply the same commands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inline_storage_and_applier_replicate_snapshot_and_answer() {
    let net = LocalNetwork::new();
    let appliers: Vec<Recorder> = (0..3).map(|_| Recorder::default()).collect();
    let nodes: Vec<Raft> = (1..=3)
        .map(|i| {
            let tweak = |c: &mut Config| {
                c.options.snapshot_threshold = 20;
                c.options.log_compaction_min_entries = 5;
            };
            let applier = appliers[i - 1].clone();
            build_with(i, &net, MemStorage::new(), applier, tweak, |b| {
                b.with_inline_applier()
            })
        })
        .collect();
    let l = leader_of(&nodes).await;
    // One follower misses enough entries that it needs a snapshot to catch up.
    let behind = (l + 1) % 3;
    net.isolate(&id(behind + 1));
    for k in 1..=60 {
        let result = nodes[l].propose_and_wait(format!("c{k}")).await.unwrap();
        assert_eq!(result, Bytes::from(format!("applied {k} commands")));
    }
    assert!(nodes[l].status().await.unwrap().snapshot_index > 0);
    net.heal();
    let expected: Vec<String> = (1..=60).map(|k| format!("c{k}")).collect();
    let commit = nodes[l].status().await.unwrap().commit_index;
    assert!(
        applies_up_to(&nodes[behind], commit).await,
        "the isolated follower caught up after healing"
    );
    // The lagging follower got a snapshot, so its recorder holds the snapshot's commands
    // (restored) followed by the rest; the other follower applied every entry.
    let other = (l + 2) % 3;
    assert_eq!(appliers[other].commands(), expected);
    assert_eq!(appliers[behind].commands(), expected);
    for n in &nodes {
        n.stop().await;
    }
}

/// A proposal that cannot commit fails with `Timeout` once `apply_entry_timeout` has
/// passed (its outcome is unknown), not earlier and not never. (CheckQuorum is off, so
/// that the cut-off leader stays leader and the timeout, not a step-down, ends the wait.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proposal_that_cannot_commit_times_out() {
    let net = LocalNetwork::new();
    let timeout = Duration::from_millis(300);
    let nodes: Vec<Raft> = (1..=3)
        .map(|i| {
            build(i, &net, MemStorage::new(), Recorder::default(), |c| {
                c.options.apply_entry_timeout = timeout;
                c.feature_flags.check_quorum = false;
                c.feature_flags.enable_leader_lease = false;
            })
        })
        .collect();
    let l = leader_of(&nodes).await;
    net.isolate(&id(l + 1));
    let started = std::time::Instant::now();
    let outcome =
        tokio::time::timeout(Duration::from_secs(5), nodes[l].propose_and_wait("cut off"))
            .await
            .expect("answered");
    assert!(matches!(outcome, Err(Error::Timeout)), "{outcome:?}");
    assert!(started.elapsed() >= timeout, "failed before the timeout");
    for n in &nodes {
        n.stop().await;
    }
}

/// A batch takes consecutive indices and answers each command with the applier's result,
/// in order; a follower refuses the whole batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_proposals_is_applied_in_order_and_answered_per_command() {
    let net = LocalNetwork::new();
    let appliers: Vec<Recorder> = (0..3).map(|_| Recorder::default()).collect();
    let nodes: Vec<Raft> = (1..=3)
        .map(|i| build(i, &net, MemStorage::new(), appliers[i - 1].clone(), |_| {}))
        .collect();
    let l = leader_of(&nodes).await;
    nodes[l].propose_and_wait("first").await.unwrap();
    let results = nodes[l]
        .propose_batch_and_wait((1..=10).map(|k| format!("b{k}")))
        .await
        .unwrap();
    let answers: Vec<Bytes> = results.into_iter().map(|r| r.unwrap()).collect();
    let expected: Vec<Bytes> = (2..=11)
        .map(|n| Bytes::from(format!("applied {n} commands")))
        .collect();
    assert_eq!(answers, expected);
    assert!(nodes[l]
        .propose_batch_and_wait(Vec::<Bytes>::new())
        .await
        .unwrap()
        .is_empty());
    let f = (l + 1) % 3;
    assert!(matches!(
        nodes[f].propose_batch_and_wait(["x", "y"]).await,
        Err(Error::NotLeader { .. })
    ));
    let mut commands = vec!["first".to_string()];
    commands.extend((1..=10).map(|k| format!("b{k}")));
    assert_eq!(appliers[l].commands(), commands);
    for n in &nodes {
        n.stop().await;
    }
}

/// Ticks given while the node cannot take them count once: a node built with external
/// ticks and ticked 100 times before its event loop runs sees one tick, not an election's
/// worth of them (a burst would end a follower's patience early, below the leader's
/// lease); ticks given one at a time then elect it as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ticks_given_while_the_node_is_busy_count_once() {
    let net = LocalNetwork::new();
    let alone = vec![PeerConfig {
        id: id(1),
        address: "127.0.0.1:7101".into(),
    }];
    let node = RaftBuilder::new()
        .with_config(Config::new(id(1), alone))
        .with_storage(MemStorage::new())
        .with_applier(Recorder::default())
        .with_network(net.transport(id(1)))
        .with_external_ticks()
        .build()
        .unwrap();
    for _ in 0..100 {
        node.tick();
    }
    node.start().unwrap();
    let status = node.status().await.unwrap();
    assert_eq!(
        status.term, 0,
        "one tick starts no election (the default timeout is 10-20 ticks)"
    );
    let mut elected = false;
    for _ in 0..100 {
        node.tick();
        // The status request queues behind the tick, so the tick has been taken.
        if node.status().await.unwrap().leader_id == Some(id(1)) {
            elected = true;
            break;
        }
    }
    assert!(elected, "ticks given one at a time elect the only member");
    node.stop().await;
}

/// A `FileStorage` that records which thread each append ran on.
struct ThreadRecording {
    inner: FileStorage,
    threads: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Storage for ThreadRecording {
    fn hard_state(&self) -> raftlock_raft::HardState {
        self.inner.hard_state()
    }
    fn set_hard_state(
        &mut self,
        state: &raftlock_raft::HardState,
    ) -> Result<(), raftlock_raft::StorageError> {
        self.inner.set_hard_state(state)
    }
    fn first_index(&self) -> u64 {
        self.inner.first_index()
    }
    fn last_index(&self) -> u64 {
        self.inner.last_index()
    }
    fn term(&self, index: u64) -> Result<u64, raftlock_raft::StorageError> {
        self.inner.term(index)
    }
    fn entries(
        &self,
        lo: u64,
        hi: u64,
        max_bytes: u64,
    ) -> Result<Vec<raftlock_raft::Entry>, raftlock_raft::StorageError> {
        self.inner.entries(lo, hi, max_bytes)
    }
    fn append(
        &mut self,
        entries: &[raftlock_raft::Entry],
    ) -> Result<(), raftlock_raft::StorageError> {
        let name = std::thread::current()
            .name()
            .unwrap_or("unnamed")
            .to_string();
        self.threads.lock().unwrap().push(name);
        self.inner.append(entries)
    }
    fn truncate_suffix(&mut self, from: u64) -> Result<(), raftlock_raft::StorageError> {
        self.inner.truncate_suffix(from)
    }
    fn sync(&mut self) -> Result<(), raftlock_raft::StorageError> {
        self.inner.sync()
    }
    fn snapshot_info(&self) -> Option<raftlock_raft::SnapshotInfo> {
        self.inner.snapshot_info()
    }
    fn snapshot_reader(
        &self,
    ) -> Result<
        Option<std::sync::Arc<dyn raftlock_raft::SnapshotReader>>,
        raftlock_raft::StorageError,
    > {
        self.inner.snapshot_reader()
    }
    fn snapshot_writer(
        &self,
    ) -> Result<Box<dyn raftlock_raft::SnapshotWriter>, raftlock_raft::StorageError> {
        self.inner.snapshot_writer()
    }
    fn write_snapshot_chunk(
        &mut self,
        meta: &raftlock_raft::SnapshotMeta,
        offset: u64,
        data: &[u8],
    ) -> Result<(), raftlock_raft::StorageError> {
        self.inner.write_snapshot_chunk(meta, offset, data)
    }
    fn install_snapshot(
        &mut self,
        info: &raftlock_raft::SnapshotInfo,
        source: raftlock_raft::SnapshotSource,
        log: raftlock_raft::SnapshotLog,
    ) -> Result<(), raftlock_raft::StorageError> {
        self.inner.install_snapshot(info, source, log)
    }
    fn compact(&mut self, upto: u64) -> Result<(), raftlock_raft::StorageError> {
        self.inner.compact(upto)
    }
}

/// With `with_inline_follower_writes`, followers write on their event loop and the leader
/// on its storage thread; replication, snapshots (an isolated follower catches up by one)
/// and a change of leader work as with the thread alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inline_follower_writes_keep_the_leader_on_its_thread_and_replicate() {
    let net = LocalNetwork::new();
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let threads: Vec<std::sync::Arc<std::sync::Mutex<Vec<String>>>> =
        (0..3).map(|_| Default::default()).collect();
    let appliers: Vec<Recorder> = (0..3).map(|_| Recorder::default()).collect();
    let opts = FileStorageOptions {
        sync: SyncPolicy::UnsafeNoSync,
        ..Default::default()
    };
    let tweak = |c: &mut Config| {
        c.options.snapshot_threshold = 20;
        c.options.log_compaction_min_entries = 5;
    };
    let nodes: Vec<Raft> = (1..=3)
        .map(|i| {
            let storage = ThreadRecording {
                inner: FileStorage::open(dirs[i - 1].path(), opts.clone()).unwrap(),
                threads: threads[i - 1].clone(),
            };
            build_with(i, &net, storage, appliers[i - 1].clone(), tweak, |b| {
                b.with_inline_follower_writes()
            })
        })
        .collect();
    let l = leader_of(&nodes).await;
    // Only what happens under this leader counts (an earlier leader's no-op may have
    // been appended on this node's loop while it followed).
    for t in &threads {
        t.lock().unwrap().clear();
    }
    let behind = (l + 1) % 3;
    let other = (l + 2) % 3;
    net.isolate(&id(behind + 1));
    for k in 1..=40 {
        nodes[l].propose_and_wait(format!("c{k}")).await.unwrap();
    }
    net.heal();
    let commit = nodes[l].status().await.unwrap().commit_index;
    assert!(
        applies_up_to(&nodes[behind], commit).await,
        "the isolated follower caught up after healing"
    );
    assert!(nodes[l].status().await.unwrap().snapshot_index > 0);
    let leader_threads = threads[l].lock().unwrap().clone();
    assert!(!leader_threads.is_empty());
    assert!(
        leader_threads.iter().all(|t| t == "raft-storage"),
        "the leader appends on its storage thread: {leader_threads:?}"
    );
    let follower_threads = threads[other].lock().unwrap().clone();
    assert!(
        follower_threads.iter().any(|t| t != "raft-storage"),
        "a follower appends on its event loop: {follower_threads:?}"
    );
    let expected: Vec<String> = (1..=40).map(|k| format!("c{k}")).collect();
    assert_eq!(appliers[other].commands(), expected);
    assert_eq!(appliers[behind].commands(), expected);
    // A new leader: the old one steps down and its writes may now run inline.
    nodes[l].stop().await;
    let alive: Vec<Raft> = vec![nodes[behind].clone(), nodes[other].clone()];
    let nl = leader_of(&alive).await;
    alive[nl].propose_and_wait("after").await.unwrap();
    for n in &alive {
        n.stop().await;
    }
}

/// An applier that blocks on commands starting with `hold` until the test opens its gate
/// (clones of `open` share the gate).
#[derive(Clone, Default)]
struct Gated {
    open: std::sync::Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>,
    inner: Recorder,
}

impl Gated {
    fn open(&self) {
        let (lock, cv) = &*self.open;
        *lock.lock().unwrap() = true;
        cv.notify_all();
    }
}

impl raftlock_raft::Applier for Gated {
    fn apply(
        &mut self,
        index: u64,
        term: u64,
        command: &Bytes,
    ) -> Result<Bytes, raftlock_raft::ApplierError> {
        if command.starts_with(b"hold") {
            let (lock, cv) = &*self.open;
            let mut open = lock.lock().unwrap();
            while !*open {
                open = cv.wait(open).unwrap();
            }
        }
        self.inner.apply(index, term, command)
    }
    fn snapshot(&mut self) -> Result<(u64, Bytes), raftlock_raft::ApplierError> {
        self.inner.snapshot()
    }
    fn restore(
        &mut self,
        meta: &raftlock_raft::SnapshotMeta,
        data: &Bytes,
    ) -> Result<(), raftlock_raft::ApplierError> {
        self.inner.restore(meta, data)
    }
}

/// A leader that steps down fails at once, with `LeadershipLost` (outcome unknown), the
/// proposals that had not committed, instead of leaving them to `apply_entry_timeout`
/// (a minute here); a proposal that had committed, but waits for the state machine, is
/// still answered with its result once applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stepping_down_fails_uncommitted_proposals_at_once_and_keeps_committed_ones() {
    let net = LocalNetwork::new();
    let gate = Gated::default();
    let nodes: Vec<Raft> = (1..=3)
        .map(|i| {
            let node = RaftBuilder::new()
                .with_config(config(i, |c| {
                    c.options.apply_entry_timeout = Duration::from_secs(60);
                }))
                .with_storage(MemStorage::new())
                .with_applier(Gated {
                    open: gate.open.clone(),
                    inner: Recorder::default(),
                })
                .with_network(net.transport(id(i)))
                .build()
                .unwrap();
            node.start().unwrap();
            node
        })
        .collect();
    let l = leader_of(&nodes).await;
    let leader = nodes[l].clone();
    let committed_at = leader.status().await.unwrap().last_log_index + 1;
    let committed = tokio::spawn({
        let leader = leader.clone();
        async move {
            leader
                .propose_and_wait("hold: committed before the step-down")
                .await
        }
    });
    let mut is_committed = false;
    for _ in 0..1000 {
        if leader.status().await.unwrap().commit_index >= committed_at {
            is_committed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(is_committed, "the first proposal committed");

    net.isolate(&id(l + 1));
    let cut_off = tokio::spawn({
        let leader = leader.clone();
        async move { leader.propose_and_wait("cut off").await }
    });
    let outcome = tokio::time::timeout(Duration::from_secs(10), cut_off)
        .await
        .expect("answered at the step-down, long before apply_entry_timeout")
        .unwrap();
    assert!(matches!(outcome, Err(Error::LeadershipLost)), "{outcome:?}");
    assert!(!leader.get_state().1, "the cut-off leader stepped down");
    assert!(
        !committed.is_finished(),
        "the committed proposal still waits for its result"
    );

    gate.open();
    let result = tokio::time::timeout(Duration::from_secs(10), committed)
        .await
        .expect("answered once applied")
        .unwrap();
    assert_eq!(result.unwrap(), Bytes::from("applied 1 commands"));
    net.heal();
    for n in &nodes {
        n.stop().await;
    }
}

/// Starting a node twice is refused with `AlreadyStarted`, not a `NotFound`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starting_twice_is_refused_with_already_started() {
    let net = LocalNetwork::new();
    let node = build(1, &net, MemStorage::new(), Recorder::default(), |_| {});
    let again = node.start();
    assert!(
        matches!(again, Err(Error::AlreadyStarted { what: "node" })),
        "{again:?}"
    );
    node.stop().await;
}
