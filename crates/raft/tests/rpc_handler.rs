//! The `RpcHandler` of a running node: valid RPCs delivered through it take effect (the
//! answers come back through the transport), and messages from strangers, for other
//! nodes or malformed ones are refused with a clear error and counted. Every wait is
//! bounded.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use raftlock_raft::message::{AppendEntriesResponse, RequestVoteResponse};
use raftlock_raft::{
    AppendEntries, Config, Entry, EntryKind, Error, Heartbeat, LocalNetwork, LocalTransport,
    MemStorage, Message, MessageBody, NetworkManager, NoOpMetrics, NodeId, PeerConfig, Raft,
    RaftBuilder, RejectReason, RequestVote, RpcHandler, RpcHeader,
};
use tokio::sync::mpsc;

mod common;
use common::{eventually, MetricsLog, Recorder};

fn id(i: usize) -> NodeId {
    NodeId::from(format!("node-{i}"))
}

fn members() -> Vec<NodeId> {
    (1..=3).map(id).collect()
}

/// node-1 of a three-node cluster, ticked only by the test (never, here), so it stays a
/// follower and does only what the delivered RPCs make it do.
fn follower(net: &LocalNetwork, applier: Recorder, metrics: MetricsLog) -> Raft {
    let peers = (1..=3)
        .map(|k| PeerConfig {
            id: id(k),
            address: format!("127.0.0.1:{}", 7300 + k),
        })
        .collect();
    let node = RaftBuilder::new()
        .with_config(Config::new(id(1), peers))
        .with_storage(MemStorage::new())
        .with_applier(applier)
        .with_network(net.transport(id(1)))
        .with_metrics(metrics)
        .with_external_ticks()
        .build()
        .unwrap();
    node.start().unwrap();
    node
}

/// Registers node-2 on `net` as a bare handler: what node-1 sends it lands in the queue.
fn listen_as_node_2(net: &LocalNetwork) -> (LocalTransport, mpsc::Receiver<Message>) {
    let (handler, rx) = RpcHandler::new(id(2), members(), 64, Arc::new(NoOpMetrics));
    let transport = net.transport(id(2));
    transport.start(handler).unwrap();
    (transport, rx)
}

async fn next(rx: &mut mpsc::Receiver<Message>) -> Message {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("an answer within 5 s")
        .expect("the queue is open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpcs_delivered_through_the_handler_are_answered_through_the_transport() {
    let net = LocalNetwork::new();
    let applier = Recorder::default();
    let node = follower(&net, applier.clone(), MetricsLog::default());
    let (_node_2, mut answers) = listen_as_node_2(&net);
    let rpc = node.rpc_handler();

    // node-2 asks for node-1's vote in term 1; node-1 grants it once the vote is durable.
    let vote = RequestVote {
        pre_vote: false,
        last_log_index: 0,
        last_log_term: 0,
        transfer: false,
    };
    rpc.request_vote(RpcHeader::new(id(2), id(1), 1), vote)
        .unwrap();
    let answer = next(&mut answers).await;
    assert_eq!((answer.from.clone(), answer.term), (id(1), 1));
    assert_eq!(
        answer.body,
        MessageBody::RequestVoteResponse(RequestVoteResponse {
            pre_vote: false,
            granted: true
        })
    );
    assert_eq!(node.get_state(), (1, false));

    // As leader of term 1, node-2 replicates an entry and then commits it.
    let append = |entries: Vec<Entry>, prev: (u64, u64), commit: u64| AppendEntries {
        prev_log_index: prev.0,
        prev_log_term: prev.1,
        entries,
        leader_commit: commit,
    };
    rpc.append_entries(
        RpcHeader::new(id(2), id(1), 1),
        append(vec![Entry::normal(1, 1, "SET x=1")], (0, 0), 0),
    )
    .unwrap();
    let answer = next(&mut answers).await;
    assert_eq!(
        answer.body,
        MessageBody::AppendEntriesResponse(AppendEntriesResponse {
            success: true,
            index: 1,
            conflict: None
        })
    );
    assert_eq!(node.leader(), Some(id(2)));
    rpc.heartbeat(
        RpcHeader::new(id(2), id(1), 1),
        Heartbeat {
            commit: 1,
            read_seq: 0,
        },
    )
    .unwrap();
    let a = applier.clone();
    eventually("node-1 applied the committed entry", || {
        a.commands() == ["SET x=1"]
    })
    .await;
    assert_eq!(rpc.rejected_messages(), 0);

    node.stop().await;
    let late = rpc.heartbeat(RpcHeader::new(id(2), id(1), 1), Heartbeat::default());
    assert!(matches!(late, Err(Error::ShuttingDown)), "{late:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_misaddressed_and_malformed_messages_are_refused_and_counted() {
    let net = LocalNetwork::new();
    let metrics = MetricsLog::default();
    let node = follower(&net, Recorder::default(), metrics.clone());
    let rpc = node.rpc_handler();
    let vote = RequestVote {
        pre_vote: false,
        last_log_index: 0,
        last_log_term: 0,
        transfer: false,
    };
    let refused = |r: Result<(), Error>| match r {
        Err(Error::Rejected(reason)) => reason,
        other => panic!("expected a rejection, got {other:?}"),
    };
    // From a node that is not a member.
    let e = rpc
        .request_vote(RpcHeader::new(id(9), id(1), 5), vote.clone())
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "raft: peer message rejected: its sender \"node-9\" is not a peer of this node"
    );
    // For another node.
    assert_eq!(
        refused(rpc.request_vote(RpcHeader::new(id(2), id(3), 5), vote.clone())),
        RejectReason::WrongRecipient {
            to: "node-3".into()
        }
    );
    // Entries that do not follow prev_log_index.
    let gap = AppendEntries {
        prev_log_index: 0,
        prev_log_term: 0,
        entries: vec![Entry::normal(2, 1, "x")],
        leader_commit: 0,
    };
    assert!(matches!(
        refused(rpc.append_entries(RpcHeader::new(id(2), id(1), 1), gap)),
        RejectReason::Malformed(_)
    ));
    // A configuration entry whose data is no configuration: refused before it reaches
    // the log, where the node would fail on it only when applying it.
    let bad_config = AppendEntries {
        prev_log_index: 0,
        prev_log_term: 0,
        entries: vec![Entry {
            index: 1,
            term: 1,
            kind: EntryKind::ConfigChange,
            data: "voters: node-1 node-2".into(),
        }],
        leader_commit: 0,
    };
    let reason = refused(rpc.append_entries(RpcHeader::new(id(2), id(1), 1), bad_config));
    assert!(
        matches!(reason, RejectReason::BadConfiguration { index: 1, .. }),
        "{reason:?}"
    );
    assert!(
        reason
            .to_string()
            .starts_with("its configuration at index 1 is malformed"),
        "{reason}"
    );
    // A transport end registered for a stranger goes through the same checks.
    let stranger = net.transport(id(9));
    stranger.send(vec![Message {
        from: id(9),
        to: id(1),
        term: 5,
        body: MessageBody::RequestVote(vote),
    }]);
    assert_eq!(rpc.rejected_messages(), 5);
    assert_eq!(
        metrics.get(|o| o.rejected.clone()),
        [
            "unknown_sender",
            "wrong_recipient",
            "malformed",
            "bad_configuration",
            "unknown_sender"
        ]
    );
    // None of it reached the protocol: no term was adopted, no leader learnt.
    let status = node.status().await.unwrap();
    assert_eq!(
        (status.term, status.leader_id, status.last_log_index),
        (0, None, 0)
    );
    node.stop().await;
}
