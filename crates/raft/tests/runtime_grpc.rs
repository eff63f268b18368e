//! The runtime end to end over the gRPC transport: three nodes in one process, each with
//! its own gRPC server on an ephemeral loopback port. Every wait is bounded; no assertion
//! depends on speed.
#![cfg(feature = "grpc")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use raftlock_raft::network::grpc::proto;
use raftlock_raft::{
    Applier, ApplierError, Config, EntryKind, Error, FileStorage, FileStorageOptions, GrpcNetwork,
    GrpcOptions, Index, MemStorage, Message, MessageBody, NetworkManager, NodeId, NodeInfo,
    PeerConfig, Raft, RaftBuilder, RpcHandler, SnapshotMeta, Storage, SyncPolicy, Term,
};

mod common;
use common::{eventually, leader_of, stop_fails_proposals_in_flight, MetricsLog, Recorder};

fn id(i: usize) -> NodeId {
    NodeId::from(format!("node-{i}"))
}

/// Binds `n` listeners on ephemeral loopback ports (kept open, so no other process can
/// take the ports) and the peer list naming them `node-1` .. `node-n`.
fn bind(n: usize) -> (Vec<TcpListener>, Vec<PeerConfig>) {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let peers = listeners
        .iter()
        .enumerate()
        .map(|(k, l)| PeerConfig {
            id: id(k + 1),
            address: l.local_addr().unwrap().to_string(),
        })
        .collect();
    (listeners, peers)
}

fn network(
    i: usize,
    listener: TcpListener,
    peers: &[PeerConfig],
    cluster: &str,
) -> Arc<GrpcNetwork> {
    network_with(i, listener, peers, cluster, |_| {})
}

/// [`network`], with `tweak` applied to the options.
fn network_with(
    i: usize,
    listener: TcpListener,
    peers: &[PeerConfig],
    cluster: &str,
    tweak: impl Fn(&mut GrpcOptions),
) -> Arc<GrpcNetwork> {
    let listen = listener.local_addr().unwrap();
    let mut options = GrpcOptions::new(id(i), listen, peers.to_vec(), cluster);
    options.connect_timeout = Duration::from_millis(500);
    tweak(&mut options);
    Arc::new(GrpcNetwork::with_listener(options, listener))
}

/// Hands a shared transport to the builder, so the test keeps a handle on it.
struct Shared(Arc<GrpcNetwork>);

impl NetworkManager for Shared {
    fn start(&self, inbound: raftlock_raft::Inbound) -> Result<(), Error> {
        self.0.start(inbound)
    }
    fn send(&self, messages: Vec<Message>) {
        self.0.send(messages)
    }
    fn set_peers(&self, peers: &[PeerConfig]) {
        self.0.set_peers(peers)
    }
    fn stop(&self) {
        self.0.stop()
    }
}

fn build(
    i: usize,
    peers: &[PeerConfig],
    net: &Arc<GrpcNetwork>,
    applier: impl Applier,
    tweak: impl Fn(&mut Config),
) -> Raft {
    build_on(i, peers, net, MemStorage::new(), applier, tweak)
}

fn build_on(
    i: usize,
    peers: &[PeerConfig],
    net: &Arc<GrpcNetwork>,
    storage: impl Storage,
    applier: impl Applier,
    tweak: impl Fn(&mut Config),
) -> Raft {
    let mut config = Config::new(id(i), peers.to_vec());
    config.options.nominal_tick_interval = Duration::from_millis(15);
    tweak(&mut config);
    let node = RaftBuilder::new()
        .with_config(config)
        .with_storage(storage)
        .with_applier(applier)
        .with_network(Shared(net.clone()))
        .build()
        .unwrap();
    node.start().unwrap();
    node
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_elect_replicate_and_read_over_grpc() {
    let (listeners, peers) = bind(3);
    let nets: Vec<Arc<GrpcNetwork>> = listeners
        .into_iter()
        .enumerate()
        .map(|(k, l)| network(k + 1, l, &peers, "test-cluster"))
        .collect();
    let appliers: Vec<Recorder> = (0..3).map(|_| Recorder::default()).collect();
    let nodes: Vec<Raft> = (1..=3)
        .map(|i| build(i, &peers, &nets[i - 1], appliers[i - 1].clone(), |_| {}))
        .collect();
    let l = leader_of(&nodes).await;
    let result = nodes[l]
        .propose_and_wait("SET greeting=hello")
        .await
        .unwrap();
    assert_eq!(result, Bytes::from("applied 1 commands"));
    for k in 0..20 {
        nodes[l].propose_and_wait(format!("cmd-{k}")).await.unwrap();
    }
    // A follower refuses proposals and names the leader.
    let f = (l + 1) % 3;
    match nodes[f].propose("x").await {
        Err(Error::NotLeader { leader }) => assert_eq!(leader, Some(id(l + 1))),
        other => panic!("expected NotLeader, got {other:?}"),
    }
    // A linearizable read on a follower (ReadIndex over gRPC) sees every write.
    nodes[f].read_index().await.unwrap();
    let commands = appliers[f].commands();
    assert_eq!(commands.len(), 21);
    assert_eq!(commands[0], "SET greeting=hello");
    let status = nodes[l].status().await.unwrap();
    assert_eq!(status.replication.len(), 2);
    for net in &nets {
        assert_eq!(net.rejected_messages(), 0);
        assert!(net.local_addr().is_some());
    }
    for n in &nodes {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_of_another_cluster_is_refused() {
    // node-1..3 form cluster "alpha"; node-4 believes it belongs to a four-node cluster
    // with them, but is configured with cluster id "beta".
    let (listeners, peers) = bind(4);
    let alpha_peers = &peers[..3];
    let mut listeners = listeners.into_iter();
    let nets: Vec<Arc<GrpcNetwork>> = (1..=3)
        .map(|i| network(i, listeners.next().unwrap(), alpha_peers, "alpha"))
        .collect();
    let rogue_net = network(4, listeners.next().unwrap(), &peers, "beta");
    let nodes: Vec<Raft> = (1..=3)
        .map(|i| build(i, alpha_peers, &nets[i - 1], Recorder::default(), |_| {}))
        .collect();
    let rogue_applier = Recorder::default();
    let rogue = build(4, &peers, &rogue_net, rogue_applier.clone(), |_| {});
    let l = leader_of(&nodes).await;
    nodes[l].propose_and_wait("alpha only").await.unwrap();
    // The rogue campaigns; every one of its (pre-)vote requests is refused at the door.
    let nets_ref = &nets;
    eventually("the rogue's messages were rejected", || {
        nets_ref.iter().all(|n| n.rejected_messages() > 0)
    })
    .await;
    nodes[l].propose_and_wait("still alpha").await.unwrap();
    let (_, rogue_leads) = rogue.get_state();
    assert!(
        !rogue_leads,
        "the rogue cannot win a four-node election alone"
    );
    let rogue_status = rogue.status().await.unwrap();
    assert_eq!(
        rogue_status.leader_id, None,
        "the rogue never learns a leader"
    );
    assert_eq!(rogue_status.commit_index, 0);
    assert!(rogue_applier.commands().is_empty());
    let status = nodes[l].status().await.unwrap();
    assert!(!status.replication.contains_key(&id(4)));
    assert!(
        nodes.iter().any(|n| n.get_state().1),
        "alpha still has a leader"
    );
    rogue.stop().await;
    for n in &nodes {
        n.stop().await;
    }
}

fn envelope(cluster: &str, from: &str, to: &str, body: proto::envelope::Body) -> proto::Envelope {
    proto::Envelope {
        cluster_id: cluster.into(),
        from: from.into(),
        to: to.into(),
        term: 3,
        body: Some(body),
    }
}

/// Starting the transport a second time is refused with `AlreadyStarted`, not a
/// `NotFound`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starting_the_transport_twice_is_refused_with_already_started() {
    let (mut listeners, peers) = bind(2);
    let net = network(1, listeners.remove(0), &peers, "c1");
    let members = peers.iter().map(|p| p.id.clone());
    let (handler, _rx) = RpcHandler::new(id(1), members, 16, Arc::new(MetricsLog::default()));
    net.start(handler.clone()).unwrap();
    let again = net.start(handler);
    assert!(
        matches!(
            again,
            Err(Error::AlreadyStarted {
                what: "gRPC transport"
            })
        ),
        "{again:?}"
    );
    net.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_envelopes_are_rejected_and_counted() {
    use proto::envelope::Body;
    let (mut listeners, peers) = bind(2);
    let net = network(1, listeners.remove(0), &peers, "c1");
    let reasons = MetricsLog::default();
    let members = peers.iter().map(|p| p.id.clone());
    let (handler, mut rx) = RpcHandler::new(id(1), members, 16, Arc::new(reasons.clone()));
    net.start(handler.clone()).unwrap();
    let heartbeat = || {
        Body::Heartbeat(proto::Heartbeat {
            commit: 1,
            read_seq: 9,
        })
    };
    let bad_entry = Body::AppendEntries(proto::AppendEntries {
        prev_log_index: 0,
        prev_log_term: 0,
        entries: vec![proto::Entry {
            index: 1,
            term: 1,
            kind: 77,
            data: Bytes::from_static(b"x"),
        }],
        leader_commit: 0,
    });
    // A configuration entry whose data is no configuration, and a snapshot chunk whose
    // membership does not decode: refused and counted, never a panic.
    let bad_config = Body::AppendEntries(proto::AppendEntries {
        prev_log_index: 0,
        prev_log_term: 0,
        entries: vec![proto::Entry {
            index: 1,
            term: 1,
            kind: u32::from(EntryKind::ConfigChange.to_u8()),
            data: Bytes::from_static(b"RLMB"),
        }],
        leader_commit: 0,
    });
    let bad_membership = Body::InstallSnapshot(proto::InstallSnapshot {
        meta: Some(proto::SnapshotMeta {
            last_index: 4,
            last_term: 1,
            membership: Bytes::from_static(b"\xff\xff"),
        }),
        offset: 0,
        data: Bytes::from_static(b"x"),
        done: true,
        total_size: 1,
        checksum: crc32c::crc32c(b"x"),
    });
    let timeout_now = Body::TimeoutNow(proto::TimeoutNow {});
    let envelopes = vec![
        envelope("other", "node-2", "node-1", heartbeat()), // wrong cluster
        // Unknown sender: a leader's heartbeat would be heard (the node may not know the
        // leader yet), anything else is not.
        envelope(
            "c1",
            "node-9",
            "node-1",
            Body::TimeoutNow(proto::TimeoutNow {}),
        ),
        envelope("c1", "node-2", "node-3", heartbeat()), // not for this node
        envelope("c1", "node-2", "node-1", bad_entry),   // unknown entry kind
        proto::Envelope {
            body: None,
            ..envelope("c1", "node-2", "node-1", heartbeat())
        }, // no body
        envelope("c1", "node-2", "node-1", bad_config),  // undecodable configuration
        envelope("c1", "node-2", "node-1", bad_membership), // undecodable membership
        envelope("c1", "node-2", "node-1", heartbeat()), // valid
        envelope("c1", "node-2", "node-1", timeout_now), // valid
    ];
    let addr = net.local_addr().unwrap();
    let mut client =
        proto::raft_transport_client::RaftTransportClient::connect(format!("http://{addr}"))
            .await
            .unwrap();
    let summary = client
        .stream(tokio_stream::iter(envelopes))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((summary.accepted, summary.rejected), (2, 7));
    assert_eq!(net.rejected_messages(), 7);
    assert_eq!(
        handler.rejected_messages(),
        7,
        "the node's handler counted them too"
    );
    assert_eq!(
        reasons.get(|o| o.rejected.clone()),
        [
            "wrong_cluster",
            "unknown_sender",
            "wrong_recipient",
            "malformed",
            "malformed",
            "bad_configuration",
            "bad_configuration"
        ]
    );
    let timeout_now = tokio::time::timeout(Duration::from_secs(5), async {
        let heartbeat = rx.recv().await.unwrap();
        (heartbeat, rx.recv().await.unwrap())
    });
    let (m, t) = timeout_now.await.unwrap();
    assert_eq!(
        (m.from.clone(), m.to.clone(), m.term, m.kind()),
        (id(2), id(1), 3, "Heartbeat")
    );
    assert_eq!((t.from, t.body), (id(2), MessageBody::TimeoutNow));
    // Sending to an unknown peer drops and counts, never blocks.
    let before = net.dropped_messages();
    net.send(vec![Message { to: id(7), ..m }]);
    assert_eq!(net.dropped_messages(), before + 1);
    net.stop();
    // After stop, nothing more is delivered.
    let late = client
        .stream(tokio_stream::iter(vec![envelope(
            "c1",
            "node-2",
            "node-1",
            heartbeat(),
        )]))
        .await;
    drop(late);
    assert!(rx.try_recv().is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_frame_ends_the_stream_and_is_counted() {
    use proto::envelope::Body;
    let (mut listeners, peers) = bind(2);
    let listener = listeners.remove(0);
    let mut options = GrpcOptions::new(id(1), listener.local_addr().unwrap(), peers.clone(), "c1");
    options.max_message_bytes = 4096;
    let net = GrpcNetwork::with_listener(options, listener);
    let reasons = MetricsLog::default();
    let members = peers.iter().map(|p| p.id.clone());
    let (handler, mut rx) = RpcHandler::new(id(1), members, 16, Arc::new(reasons.clone()));
    net.start(handler).unwrap();
    let heartbeat = || {
        Body::Heartbeat(proto::Heartbeat {
            commit: 0,
            read_seq: 1,
        })
    };
    let big = Body::AppendEntries(proto::AppendEntries {
        prev_log_index: 0,
        prev_log_term: 0,
        entries: vec![proto::Entry {
            index: 1,
            term: 1,
            kind: 0,
            data: Bytes::from(vec![1u8; 64 * 1024]),
        }],
        leader_commit: 0,
    });
    let envelopes = vec![
        envelope("c1", "node-2", "node-1", heartbeat()),
        envelope("c1", "node-2", "node-1", big), // 64 KiB over a 4 KiB limit
        envelope("c1", "node-2", "node-1", heartbeat()),
    ];
    let addr = net.local_addr().unwrap();
    let mut client =
        proto::raft_transport_client::RaftTransportClient::connect(format!("http://{addr}"))
            .await
            .unwrap();
    let outcome = client.stream(tokio_stream::iter(envelopes)).await;
    assert!(
        outcome.is_err(),
        "the stream ends with an error: {outcome:?}"
    );
    assert_eq!(net.rejected_messages(), 1);
    assert_eq!(reasons.get(|o| o.rejected.clone()), ["oversized"]);
    let first = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        first.kind(),
        "Heartbeat",
        "what came before it was delivered"
    );
    assert!(rx.try_recv().is_err(), "nothing after it was");
    net.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_with_proposals_in_flight_fails_them_with_shutting_down_over_grpc() {
    let (listeners, peers) = bind(3);
    let nets: Vec<Arc<GrpcNetwork>> = listeners
        .into_iter()
        .enumerate()
        .map(|(k, l)| network(k + 1, l, &peers, "inflight"))
        .collect();
    // Without CheckQuorum the leader keeps leading alone, so the proposals stay pending
    // (accepted, never committed) until it stops.
    let alone = |c: &mut Config| {
        c.feature_flags.check_quorum = false;
        c.feature_flags.enable_leader_lease = false;
    };
    let nodes: Vec<Raft> = (1..=3)
        .map(|i| build(i, &peers, &nets[i - 1], Recorder::default(), alone))
        .collect();
    let l = leader_of(&nodes).await;
    nodes[l].propose_and_wait("committed").await.unwrap();
    for (k, n) in nodes.iter().enumerate() {
        if k != l {
            n.stop().await;
        }
    }
    let leader = nodes[l].clone();
    stop_fails_proposals_in_flight(&leader).await;
    assert!(matches!(
        leader.propose("after stop").await,
        Err(Error::ShuttingDown)
    ));
}

/// Size of the snapshots of [`Bulky`]: 64 MiB.
const SNAPSHOT_BYTES: usize = 64 * 1024 * 1024;

/// A state machine whose snapshot is always 64 MiB: the applied commands, a NUL, then a
/// fixed filler that `restore` checks byte for byte.
#[derive(Clone, Default)]
struct Bulky {
    inner: Recorder,
    /// Sizes of the snapshots restored.
    restored: Arc<Mutex<Vec<usize>>>,
}

fn filler() -> &'static Bytes {
    static FILLER: std::sync::OnceLock<Bytes> = std::sync::OnceLock::new();
    FILLER.get_or_init(|| {
        let mut v = vec![0u8; SNAPSHOT_BYTES];
        for (i, b) in v.iter_mut().enumerate() {
            *b = (i % 251) as u8 | 1;
        }
        Bytes::from(v)
    })
}

impl Applier for Bulky {
    fn apply(&mut self, index: Index, term: Term, command: &Bytes) -> Result<Bytes, ApplierError> {
        self.inner.apply(index, term, command)
    }

    fn snapshot(&mut self) -> Result<(Index, Bytes), ApplierError> {
        let (index, commands) = self.inner.snapshot()?;
        let mut data = Vec::with_capacity(SNAPSHOT_BYTES);
        data.extend_from_slice(&commands);
        data.push(0);
        data.extend_from_slice(&filler()[..SNAPSHOT_BYTES - data.len()]);
        Ok((index, Bytes::from(data)))
    }

    fn restore(&mut self, meta: &SnapshotMeta, data: &Bytes) -> Result<(), ApplierError> {
        assert_eq!(data.len(), SNAPSHOT_BYTES);
        let nul = data.iter().position(|b| *b == 0).unwrap();
        assert_eq!(
            data[nul + 1..],
            filler()[..SNAPSHOT_BYTES - nul - 1],
            "snapshot filler arrived intact"
        );
        self.restored.lock().unwrap().push(data.len());
        self.inner.restore(meta, &data.slice(..nul))
    }
}

/// The snapshot is 64 MiB and no gRPC message may exceed 4 MiB: a snapshot's size is
/// bounded by neither, only its chunks (1 MiB) must fit in a message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_follower_installs_a_64_mib_snapshot_over_grpc_in_4_mib_messages() {
    let (listeners, peers) = bind(3);
    let nets: Vec<Arc<GrpcNetwork>> = listeners
        .into_iter()
        .enumerate()
        .map(|(k, l)| {
            network_with(k + 1, l, &peers, "snap", |o| {
                o.max_message_bytes = 4 * 1024 * 1024;
            })
        })
        .collect();
    let tweak = |c: &mut Config| {
        c.options.snapshot_threshold = 20;
        c.options.log_compaction_min_entries = 0;
    };
    filler(); // build it before the clock matters
    let appliers: Vec<Bulky> = (0..3).map(|_| Bulky::default()).collect();
    // Only node-1 and node-2 run at first (a quorum); node-3 is down.
    let mut nodes: Vec<Raft> = (1..=2)
        .map(|i| build(i, &peers, &nets[i - 1], appliers[i - 1].clone(), tweak))
        .collect();
    let l = leader_of(&nodes).await;
    for k in 0..30 {
        nodes[l].propose_and_wait(format!("w{k}")).await.unwrap();
    }
    let leader = nodes[l].clone();
    let mut compacted = false;
    for _ in 0..1000 {
        let s = leader.status().await.unwrap();
        if s.snapshot_index >= 20 {
            compacted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        compacted,
        "the leader took a snapshot and compacted its log"
    );
    // node-3 starts empty: the entries it needs are gone, so it gets the snapshot.
    let started = std::time::Instant::now();
    nodes.push(build(3, &peers, &nets[2], appliers[2].clone(), tweak));
    let want = appliers[l].inner.commands();
    let late = appliers[2].clone();
    for _ in 0..3000 {
        if late.inner.commands() == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(late.inner.commands(), want, "caught up within 30 s");
    assert_eq!(*late.restored.lock().unwrap(), vec![SNAPSHOT_BYTES]);
    eprintln!("64 MiB snapshot installed in {:?}", started.elapsed());
    // The cluster keeps working with the new member.
    nodes[l].propose_and_wait("after").await.unwrap();
    let late = appliers[2].clone();
    eventually("node-3 applies new entries", || {
        late.inner.commands().last().map(String::as_str) == Some("after")
    })
    .await;
    for net in &nets {
        assert_eq!(net.rejected_messages(), 0);
    }
    for n in &nodes {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_follower_is_reconnected_and_catches_up() {
    let (listeners, peers) = bind(3);
    let mut nets: Vec<Arc<GrpcNetwork>> = listeners
        .into_iter()
        .enumerate()
        .map(|(k, l)| network(k + 1, l, &peers, "restart"))
        .collect();
    // Durable storage: a restarted node keeps its log and vote, as Raft requires.
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let opts = FileStorageOptions {
        sync: SyncPolicy::UnsafeNoSync,
        ..Default::default()
    };
    let open = |k: usize| FileStorage::open(dirs[k].path(), opts.clone()).unwrap();
    let appliers: Vec<Recorder> = (0..3).map(|_| Recorder::default()).collect();
    let mut nodes: Vec<Raft> = (1..=3)
        .map(|i| {
            let applier = appliers[i - 1].clone();
            build_on(i, &peers, &nets[i - 1], open(i - 1), applier, |_| {})
        })
        .collect();
    let l = leader_of(&nodes).await;
    nodes[l].propose_and_wait("before").await.unwrap();
    // Stop a follower: its server goes away and the others' streams to it break.
    let f = (l + 1) % 3;
    nodes[f].stop().await;
    for k in 0..10 {
        nodes[l]
            .propose_and_wait(format!("while-down-{k}"))
            .await
            .unwrap();
    }
    // Restart it on its directory and the same port (bounded retries while the old socket closes).
    let addr = nets[f].local_addr().unwrap();
    let mut listener = None;
    for _ in 0..500 {
        if let Ok(l) = TcpListener::bind(addr) {
            listener = Some(l);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let listener = listener.expect("the stopped transport released its port");
    nets[f] = network(f + 1, listener, &peers, "restart");
    let restarted = Recorder::default();
    nodes[f] = build_on(f + 1, &peers, &nets[f], open(f), restarted.clone(), |_| {});
    let want = appliers[l].commands();
    assert_eq!(want.len(), 11);
    eventually("the restarted follower caught up", || {
        restarted.commands() == want
    })
    .await;
    for n in &nodes {
        n.stop().await;
    }
}

/// Awaits `fut`, failing the test after `secs` seconds.
async fn within<T>(what: &str, secs: u64, fut: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(secs), fut).await {
        Ok(out) => out,
        Err(_) => panic!("timed out after {secs} s waiting for {what}"),
    }
}

/// A fourth node starts with no peers and no links at all, knowing only its own
/// advertised address. The leader adds it as a voter: its first messages reach the new
/// node, which can only answer through the link it opens back to the address the
/// leader's stream named; it catches up and is promoted. Then an original member is
/// removed and the three that remain keep committing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_node_is_added_as_a_voter_over_grpc_and_a_member_removed() {
    let (listeners, peers) = bind(3);
    let nets: Vec<Arc<GrpcNetwork>> = listeners
        .into_iter()
        .enumerate()
        .map(|(k, l)| network(k + 1, l, &peers, "join"))
        .collect();
    let appliers: Vec<Recorder> = (0..4).map(|_| Recorder::default()).collect();
    let mut nodes: Vec<Raft> = (1..=3)
        .map(|i| build(i, &peers, &nets[i - 1], appliers[i - 1].clone(), |_| {}))
        .collect();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let joining_net = network_with(4, listener, &[], "join", |o| {
        o.advertise = Some(address.clone());
    });
    nodes.push(build(4, &[], &joining_net, appliers[3].clone(), |_| {}));
    let joining = nodes[3].clone();
    assert!(joining.membership().members().is_empty());

    let l = leader_of(&nodes[..3]).await;
    let leader = nodes[l].clone();
    for k in 0..10 {
        within(
            "a write",
            10,
            leader.propose_and_wait(format!("before-{k}")),
        )
        .await
        .unwrap();
    }
    let m = within(
        "add_voter",
        20,
        leader.add_voter(
            id(4),
            NodeInfo::from(address.clone()),
            Duration::from_secs(10),
        ),
    )
    .await
    .unwrap();
    assert!(!m.is_joint(), "{m}");
    assert_eq!(m.voters, (1..=4).map(id).collect());
    assert!(m.learners.is_empty());
    assert_eq!(m.nodes[&id(4)].address, address);
    for k in 0..10 {
        within("a write", 10, leader.propose_and_wait(format!("after-{k}")))
            .await
            .unwrap();
    }
    let want = appliers[l].commands();
    assert_eq!(want.len(), 20);
    let joined = appliers[3].clone();
    eventually("the new voter applied every entry", || {
        joined.commands() == want
    })
    .await;
    let mut committed = false;
    for _ in 0..1000 {
        let s = joining.status().await.unwrap();
        if s.membership == *m && s.membership_committed {
            committed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(committed, "the new voter knows its configuration committed");

    // Remove an original follower: the leader, the other original and the new voter
    // keep committing.
    let f = (l + 1) % 3;
    let removed = within("remove_member", 20, leader.remove_member(id(f + 1), false))
        .await
        .unwrap();
    assert!(!removed.is_joint(), "{removed}");
    assert!(!removed.contains(&id(f + 1)));
    assert!(removed.retired.contains(&id(f + 1)));
    let rest: Vec<usize> = (0..4).filter(|&k| k != f).collect();
    assert_eq!(
        removed.voters,
        rest.iter().map(|&k| id(k + 1)).collect(),
        "{removed}"
    );
    for k in 0..10 {
        within("a write", 10, leader.propose_and_wait(format!("three-{k}")))
            .await
            .unwrap();
    }
    let want = appliers[l].commands();
    assert_eq!(want.len(), 30);
    for &k in &rest {
        let applier = appliers[k].clone();
        let want = want.clone();
        eventually("every remaining member applied every entry", move || {
            applier.commands() == want
        })
        .await;
    }
    assert!(
        !appliers[f].commands().contains(&"three-9".to_string()),
        "nothing is replicated to the removed node after its removal"
    );
    assert!(nodes[l].get_state().1, "the leader kept leading");
    // The removed node is never replicated to again, so it campaigns; the members refuse
    // its requests as those of a retired id, and the transport tells it so.
    let mut told = nodes[f].removed_channel();
    let by = within(
        "the removed node is told",
        10,
        told.wait_for(Option::is_some),
    )
    .await
    .unwrap()
    .clone();
    assert!(by.is_some_and(|b| rest.iter().any(|&k| id(k + 1) == b)));
    assert!(nodes[l].removed_channel().borrow().is_none());
    for n in &nodes {
        within("a node stops", 10, n.stop()).await;
    }
}
