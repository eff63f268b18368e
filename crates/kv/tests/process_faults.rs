//! Process-level fault test: three `raftkv node` processes, concurrent HTTP clients, and a
//! nemesis that SIGKILLs the leader, SIGSTOPs and SIGCONTs a follower, and restarts killed
//! nodes. Afterwards every acknowledged write must be readable on every node, and the
//! whole recorded history must pass the simulator's linearizability checker.
//!
//! Time is bounded (the whole test runs under a timeout) and every process is reaped by
//! `LocalCluster`'s drop, even when an assertion fails.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use raftlock_kv::client::{CasResult, Client, ClientError};
use raftlock_kv::cluster::LocalCluster;
use raftlock_sim::linearizability::{
    check, CheckOptions, CheckResult, KvOp, KvOutcome, KvResult, Operation,
};

/// Fast timing so that a dozen failovers fit in a short test: 20 ms ticks, elections
/// after 200–400 ms; small snapshots so that restarts also install and load snapshots.
fn node_args() -> Vec<String> {
    [
        "--tick-ms",
        "20",
        "--election-ticks",
        "10",
        "--snapshot-threshold",
        "300",
        "--request-timeout-ms",
        "2000",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

const KEYS: [&str; 4] = ["a", "b", "c", "d"];
const CLIENTS: u64 = 4;
const FAULT_PHASE: Duration = Duration::from_secs(20);

struct Recorder {
    start: Instant,
    ops: Mutex<Vec<Operation>>,
}

impl Recorder {
    fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_micros()).unwrap()
    }

    fn record(&self, client: u64, key: &str, op: KvOp, invoke: u64, outcome: Option<KvOutcome>) {
        // `None`: the operation certainly had no effect (refused, or never reached a
        // node); it is left out of the history.
        let Some(outcome) = outcome else { return };
        self.ops.lock().unwrap().push(Operation {
            client,
            key: key.to_string(),
            op,
            invoke,
            complete: self.now(),
            outcome,
        });
    }
}

/// How a client error enters the history: unknown outcomes stay in as uncertain, errors
/// that prove the operation never happened leave it out.
fn outcome_of_error(e: &ClientError) -> Option<KvOutcome> {
    match e {
        ClientError::Unknown(_) => Some(KvOutcome::Uncertain),
        // A 5xx other than 503/504 could come after the command was proposed.
        ClientError::Refused { status, .. } if *status >= 500 => Some(KvOutcome::Uncertain),
        ClientError::Refused { .. } | ClientError::Unavailable(_) => None,
    }
}

async fn client_loop(id: u64, client: Client, rec: Arc<Recorder>, until: Instant) -> u64 {
    let mut n = 0u64;
    let mut acked = 0;
    while Instant::now() < until {
        n += 1;
        let key = KEYS[usize::try_from((n * 7 + id * 3) % 4).unwrap()];
        let value = format!("{id}-{n}");
        let invoke = rec.now();
        match n % 3 {
            0 => {
                let r = client.put(key, &value).await;
                acked += u64::from(r.is_ok());
                let outcome = match &r {
                    Ok(_) => Some(KvOutcome::Ok(KvResult::Done)),
                    Err(e) => outcome_of_error(e),
                };
                rec.record(id, key, KvOp::Put { value }, invoke, outcome);
            }
            1 => {
                let r = client.get(key, false).await;
                let outcome = match r {
                    Ok(v) => Some(KvOutcome::Ok(KvResult::Value(v))),
                    Err(_) => None, // a read without an answer constrains nothing
                };
                rec.record(id, key, KvOp::Get, invoke, outcome);
            }
            _ => {
                // CAS from the value this client last saw would need state; CAS from a
                // recent value of another client races nicely instead.
                let from = if n.is_multiple_of(2) {
                    None
                } else {
                    Some(format!("{}-{}", (id + 1) % CLIENTS, n.saturating_sub(2)))
                };
                let r = client.cas(key, from.as_deref(), &value).await;
                let outcome = match &r {
                    Ok(CasResult::Swapped(_)) => Some(KvOutcome::Ok(KvResult::CasOk)),
                    Ok(CasResult::Conflict(current)) => Some(KvOutcome::Ok(KvResult::CasFailed {
                        current: current.clone(),
                    })),
                    Err(e) => outcome_of_error(e),
                };
                acked += u64::from(matches!(r, Ok(CasResult::Swapped(_))));
                rec.record(id, key, KvOp::Cas { from, to: value }, invoke, outcome);
            }
        }
    }
    acked
}

/// Writes keys that are never overwritten, so that "every acknowledged write is readable
/// on every node" can be checked key by key afterwards.
async fn unique_writer(client: Client, until: Instant) -> Vec<(String, String)> {
    let mut acked = Vec::new();
    let mut n = 0;
    while Instant::now() < until {
        n += 1;
        let (key, value) = (format!("u-{n}"), format!("v-{n}"));
        if client.put(&key, &value).await.is_ok() {
            acked.push((key, value));
        }
    }
    acked
}

async fn nemesis(cluster: &mut LocalCluster, until: Instant) -> Vec<String> {
    let mut log = Vec::new();
    let mut round = 0;
    while Instant::now() < until {
        round += 1;
        tokio::time::sleep(Duration::from_millis(700)).await;
        let Some(leader) = cluster.wait_for_leader(Duration::from_secs(10)).await else {
            log.push(format!("round {round}: no leader"));
            continue;
        };
        let follower = (leader + 1 + round % 2) % 3;
        match round % 3 {
            0 | 1 => {
                cluster.kill(leader).unwrap();
                log.push(format!("SIGKILL leader {}", cluster.nodes()[leader].id));
                tokio::time::sleep(Duration::from_millis(900)).await;
                cluster.restart(leader).unwrap();
            }
            _ => {
                cluster.pause(follower).unwrap();
                log.push(format!("SIGSTOP follower {}", cluster.nodes()[follower].id));
                tokio::time::sleep(Duration::from_millis(1200)).await;
                cluster.resume(follower).unwrap();
            }
        }
    }
    log
}

#[test]
fn kill_pause_restart_under_load_stays_linearizable_and_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut cluster = raftlock_kv::cluster::start(
        std::path::Path::new(env!("CARGO_BIN_EXE_raftkv")),
        dir.path(),
        3,
        &node_args(),
    )
    .unwrap();
    let outcome = runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(150), scenario(&mut cluster)).await
    });
    match outcome {
        Ok(()) => {}
        Err(_) => {
            for i in 0..3 {
                eprintln!(
                    "--- {} ---\n{}",
                    cluster.nodes()[i].id,
                    cluster.log_tail(i, 30)
                );
            }
            panic!("the scenario did not finish within 150 s");
        }
    }
}

async fn scenario(cluster: &mut LocalCluster) {
    let endpoints = cluster.endpoints();
    let client = || {
        Client::new(&endpoints, Duration::from_secs(3))
            .unwrap()
            .with_deadline(Duration::from_secs(4))
    };
    let admin = client();
    assert!(
        cluster
            .wait_for_leader(Duration::from_secs(20))
            .await
            .is_some(),
        "no leader at start"
    );

    let rec = Arc::new(Recorder {
        start: Instant::now(),
        ops: Mutex::new(Vec::new()),
    });
    let until = Instant::now() + FAULT_PHASE;
    let workers: Vec<_> = (0..CLIENTS)
        .map(|id| tokio::spawn(client_loop(id, client(), rec.clone(), until)))
        .collect();
    let unique = tokio::spawn(unique_writer(client(), until));
    let faults = nemesis(cluster, until).await;
    let mut acked = 0;
    for w in workers {
        acked += w.await.unwrap();
    }
    let unique = unique.await.unwrap();
    eprintln!("faults: {faults:?}");
    eprintln!(
        "{} operations recorded, {acked} acknowledged writes on shared keys, {} unique keys",
        rec.ops.lock().unwrap().len(),
        unique.len()
    );
    assert!(
        faults.iter().any(|f| f.starts_with("SIGKILL")),
        "no leader was killed"
    );
    assert!(
        faults.iter().any(|f| f.starts_with("SIGSTOP")),
        "no follower was paused"
    );
    assert!(
        acked > 20,
        "too few writes succeeded to mean anything: {acked}"
    );
    assert!(unique.len() > 20, "too few unique writes: {}", unique.len());

    // Heal: every node running and unpaused, then wait for one leader and full catch-up.
    for i in 0..3 {
        if cluster.nodes()[i].is_running() {
            cluster.resume(i).unwrap();
        } else {
            cluster.restart(i).unwrap();
        }
    }
    let leader = cluster
        .wait_for_leader(Duration::from_secs(20))
        .await
        .expect("no leader after healing");
    // A fresh entry in the leader's term makes every earlier entry committed.
    admin.put("final", "done").await.unwrap();
    let commit = cluster
        .wait_all_applied(Duration::from_secs(30))
        .await
        .expect("nodes did not catch up within 30 s");
    eprintln!(
        "all nodes applied index {commit}; leader {}",
        cluster.nodes()[leader].id
    );

    // Every acknowledged unique write, on every node's local state.
    for node in cluster.nodes() {
        let local = Client::new(&[node.http.to_string()], Duration::from_secs(3)).unwrap();
        for (key, value) in &unique {
            let got = local.get(key, true).await.unwrap();
            assert_eq!(got.as_deref(), Some(value.as_str()), "{key} on {}", node.id);
        }
    }
    // The nodes agree on the shared keys, and a final linearizable read of each joins the
    // history.
    for key in KEYS {
        let mut seen = Vec::new();
        for node in cluster.nodes() {
            let local = Client::new(&[node.http.to_string()], Duration::from_secs(3)).unwrap();
            seen.push(local.get(key, true).await.unwrap());
        }
        assert!(
            seen.windows(2).all(|w| w[0] == w[1]),
            "nodes disagree on {key}: {seen:?}"
        );
        let invoke = rec.now();
        let value = admin.get(key, false).await.unwrap();
        assert_eq!(value, seen[0]);
        rec.record(
            99,
            key,
            KvOp::Get,
            invoke,
            Some(KvOutcome::Ok(KvResult::Value(value))),
        );
    }

    let history = rec.ops.lock().unwrap().clone();
    let verdict = check(&history, &CheckOptions::default());
    assert_eq!(
        verdict,
        CheckResult::Linearizable,
        "history of {} operations",
        history.len()
    );
}
