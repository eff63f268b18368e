//! Helpers shared by the runtime tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use raftlock_raft::{
    Applier, ApplierError, ElectionReason, Index, Metrics, NodeId, ProposalResult, Raft,
    RejectReason, SnapshotMeta, Term,
};

/// What a node reported through its metrics hooks.
#[derive(Default)]
pub struct Observations {
    /// Labels of rejected inbound messages, in order.
    pub rejected: Vec<&'static str>,
    pub proposals: Vec<ProposalResult>,
    pub elections: Vec<(Term, ElectionReason)>,
    /// Latest (match index, lag) reported per follower.
    pub peer_lag: std::collections::BTreeMap<NodeId, (Index, u64)>,
    pub fsyncs: usize,
}

/// Metrics that record what the tests look at; clones share the record.
#[derive(Clone, Default)]
pub struct MetricsLog(Arc<Mutex<Observations>>);

impl MetricsLog {
    pub fn get<T>(&self, f: impl FnOnce(&Observations) -> T) -> T {
        f(&self.0.lock().unwrap())
    }
}

impl Metrics for MetricsLog {
    fn observe_message_rejected(&self, reason: &RejectReason) {
        self.0.lock().unwrap().rejected.push(reason.label());
    }
    fn observe_proposal(&self, result: ProposalResult) {
        self.0.lock().unwrap().proposals.push(result);
    }
    fn observe_election_start(&self, term: Term, reason: ElectionReason) {
        self.0.lock().unwrap().elections.push((term, reason));
    }
    fn observe_peer_lag(&self, peer: &NodeId, match_index: Index, lag: u64) {
        let mut o = self.0.lock().unwrap();
        o.peer_lag.insert(peer.clone(), (match_index, lag));
    }
    fn observe_fsync(&self, _latency: Duration) {
        self.0.lock().unwrap().fsyncs += 1;
    }
}

/// A state machine that records the commands it applied.
#[derive(Clone, Default)]
pub struct Recorder {
    applied: Arc<Mutex<Vec<String>>>,
    last: Arc<Mutex<Index>>,
}

impl Recorder {
    pub fn commands(&self) -> Vec<String> {
        self.applied.lock().unwrap().clone()
    }
}

impl Applier for Recorder {
    fn apply(&mut self, index: Index, _term: Term, command: &Bytes) -> Result<Bytes, ApplierError> {
        let text = String::from_utf8_lossy(command).into_owned();
        let mut applied = self.applied.lock().unwrap();
        applied.push(text);
        *self.last.lock().unwrap() = index;
        Ok(Bytes::from(format!("applied {} commands", applied.len())))
    }

    fn snapshot(&mut self) -> Result<(Index, Bytes), ApplierError> {
        let data = self.applied.lock().unwrap().join("\n");
        Ok((*self.last.lock().unwrap(), Bytes::from(data)))
    }

    fn restore(&mut self, meta: &SnapshotMeta, data: &Bytes) -> Result<(), ApplierError> {
        let text = String::from_utf8_lossy(data);
        *self.applied.lock().unwrap() = if text.is_empty() {
            Vec::new()
        } else {
            text.split('\n').map(str::to_string).collect()
        };
        *self.last.lock().unwrap() = meta.last_index;
        Ok(())
    }
}

/// Waits (bounded, 10 s) until exactly one of `nodes` leads; returns its position.
pub async fn leader_of(nodes: &[Raft]) -> usize {
    for _ in 0..1000 {
        let leaders: Vec<usize> = (0..nodes.len())
            .filter(|&k| nodes[k].get_state().1)
            .collect();
        if leaders.len() == 1 {
            return leaders[0];
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no single leader within 10 s");
}

/// Waits (bounded, 10 s) until `f` holds.
pub async fn eventually(what: &str, f: impl Fn() -> bool) {
    for _ in 0..1000 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting until {what}");
}

/// Proposes five commands on `leader` that cannot commit (the caller has cut it off from
/// its followers), waits until they are in its log, stops it, and checks that every one
/// fails with exactly `ShuttingDown`. Returns once the node is stopped.
pub async fn stop_fails_proposals_in_flight(leader: &Raft) {
    let before = leader.status().await.unwrap().last_log_index;
    let pending: Vec<_> = (0..5)
        .map(|k| {
            let leader = leader.clone();
            tokio::spawn(async move { leader.propose_and_wait(format!("in-flight-{k}")).await })
        })
        .collect();
    let mut in_log = false;
    for _ in 0..500 {
        if leader.status().await.unwrap().last_log_index >= before + 5 {
            in_log = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(in_log, "the leader appended the five proposals");
    leader.stop().await;
    for task in pending {
        let outcome = tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("answered in time")
            .unwrap();
        assert!(
            matches!(outcome, Err(raftlock_raft::Error::ShuttingDown)),
            "{outcome:?}"
        );
    }
}
