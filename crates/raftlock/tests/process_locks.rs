//! Process-level lock test: three `raftlock server` processes, clients contending on a few
//! locks, and a nemesis that SIGKILLs the leader (and restarts it) and SIGSTOPs a holder
//! (a `raftlock lock` process). Afterwards, for each lock: the grants in commit order have
//! strictly increasing tokens, no two grants' holding intervals overlap in the servers'
//! own (log) time, every acknowledged grant and release is in the history, and every
//! node agrees with that history and with the final holders.
//!
//! The history is each node's event log (`GET /v1/events`), read while the test runs and
//! merged by log index; events at one index must be identical on every node that has
//! them. Time is bounded (the whole test runs under a timeout) and every process is
//! reaped, even when an assertion fails.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use raftlock::cluster::LocalCluster;
use raftlock::{Client, ClientOptions};
use serde_json::Value;

const LOCKS: [&str; 3] = ["alpha", "beta", "gamma"];
const PAUSED_LOCK: &str = "paused";
const CLIENTS: usize = 5;
const FAULT_PHASE: Duration = Duration::from_secs(20);

/// 20 ms ticks, elections after 200–400 ms; small snapshots so that restarted nodes load
/// and install snapshots too.
fn server_args() -> Vec<String> {
    [
        "--tick-ms",
        "20",
        "--election-ticks",
        "10",
        "--snapshot-threshold",
        "400",
        "--request-timeout-ms",
        "2000",
        "--keepalive-interval-ms",
        "20",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// What clients were told: grants (lock, session, token) and releases.
#[derive(Default)]
struct Acks {
    grants: Vec<(String, String, u64)>,
    releases: Vec<(String, String, u64)>,
}

/// The merged history: events by index, as every node reported them.
#[derive(Default)]
struct History {
    by_index: BTreeMap<u64, Vec<Value>>,
    /// Per node, the highest index read.
    cursor: Vec<u64>,
}

impl History {
    /// Adds node `i`'s events; panics if they contradict what another node reported.
    fn merge(&mut self, i: usize, events: &[Value]) {
        let mut at: BTreeMap<u64, Vec<Value>> = BTreeMap::new();
        for e in events {
            at.entry(e["index"].as_u64().unwrap())
                .or_default()
                .push(e.clone());
        }
        for (index, list) in at {
            match self.by_index.get(&index) {
                Some(known) => assert_eq!(
                    known,
                    &list,
                    "node {} reports other events at index {index}",
                    i + 1
                ),
                None => {
                    self.by_index.insert(index, list);
                }
            }
            self.cursor[i] = self.cursor[i].max(index);
        }
    }
}

async fn poll_events(cluster: &LocalCluster, history: &Mutex<History>) {
    for i in 0..cluster.nodes().len() {
        let node = &cluster.nodes()[i];
        if !node.is_running() || node.is_paused() {
            continue;
        }
        let after = history.lock().unwrap().cursor[i];
        let path = format!("/v1/events?after={after}&limit=100000");
        if let Some(page) = cluster.get_json(i, &path).await {
            let events = page["events"].as_array().cloned().unwrap_or_default();
            let mut h = history.lock().unwrap();
            // A restarted node starts over from its snapshot.
            if page["gap_until"].as_u64().unwrap_or(0) > h.cursor[i] {
                h.cursor[i] = page["gap_until"].as_u64().unwrap_or(0);
            }
            h.merge(i, &events);
        }
    }
}

async fn contender(id: usize, endpoints: Vec<String>, acks: Arc<Mutex<Acks>>, until: Instant) {
    let options = ClientOptions::new(endpoints)
        .ttl(Duration::from_secs(3))
        .name(format!("contender-{id}"))
        .deadline(Duration::from_secs(4));
    let client = Client::new(options).unwrap();
    let mut n = 0;
    while Instant::now() < until {
        n += 1;
        let lock = LOCKS[(id + n) % LOCKS.len()];
        let guard = match client
            .lock_with_timeout(lock, Duration::from_millis(1500))
            .await
        {
            Ok(Some(g)) => g,
            Ok(None) | Err(_) => continue,
        };
        let (session, token) = (guard.session().to_string(), guard.token());
        acks.lock()
            .unwrap()
            .grants
            .push((lock.to_string(), session.clone(), token));
        tokio::time::sleep(Duration::from_millis(20 + (n as u64 * 7) % 40)).await;
        if guard.release().await.is_ok() {
            acks.lock()
                .unwrap()
                .releases
                .push((lock.to_string(), session, token));
        }
    }
    let _ = client.close().await;
}

/// Drives the cluster: reads every node's events every 200 ms, kills the leader every
/// 1.5 s and restarts it 0.8 s later. Returns what it did.
async fn nemesis(
    cluster: &mut LocalCluster,
    history: &Mutex<History>,
    until: Instant,
) -> Vec<String> {
    let mut log = Vec::new();
    let mut next_kill = Instant::now() + Duration::from_millis(1500);
    let mut restart: Option<(usize, Instant)> = None;
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(200)).await;
        poll_events(cluster, history).await;
        if let Some((i, at)) = restart {
            if Instant::now() >= at {
                cluster.restart(i).unwrap();
                restart = None;
                next_kill = Instant::now() + Duration::from_millis(1500);
            }
            continue;
        }
        if Instant::now() < next_kill {
            continue;
        }
        match cluster.wait_for_leader(Duration::from_secs(5)).await {
            Some(leader) => {
                poll_events(cluster, history).await;
                cluster.kill(leader).unwrap();
                log.push(format!("SIGKILL leader {}", cluster.nodes()[leader].id));
                restart = Some((leader, Instant::now() + Duration::from_millis(800)));
            }
            None => log.push("no leader".into()),
        }
    }
    if let Some((i, _)) = restart {
        cluster.restart(i).unwrap();
    }
    log
}

fn signal(child: &tokio::process::Child, sig: Signal) {
    let pid = i32::try_from(child.id().unwrap()).unwrap();
    kill(Pid::from_raw(pid), sig).unwrap();
}

/// What the paused-holder scene produced.
struct PausedScene {
    holder_token: u64,
    waiter_token: u64,
    holder_exit: Option<i32>,
}

/// A `raftlock lock` process holds PAUSED_LOCK with a 1 s TTL; a client waits for it;
/// the holder is paused with SIGSTOP until the waiter is granted the lock, then resumed:
/// it must exit with 3 (lock lost).
async fn paused_holder(binary: &Path, endpoints: Vec<String>, dir: &Path) -> PausedScene {
    let out = std::fs::File::create(dir.join("holder.log")).unwrap();
    let mut holder = tokio::process::Command::new(binary)
        .args(["lock", PAUSED_LOCK, "--ttl", "1s", "--kill-after", "1s"])
        .args(["--endpoints", &endpoints.join(",")])
        .args([
            "--",
            "sh",
            "-c",
            "echo token $RAFTLOCK_TOKEN; exec sleep 60",
        ])
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let client = Client::new(
        ClientOptions::new(endpoints)
            .ttl(Duration::from_secs(5))
            .name("paused-waiter")
            .deadline(Duration::from_secs(5)),
    )
    .unwrap();
    // Wait until the process holds the lock.
    let start = Instant::now();
    let holder_token = loop {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the holder process never got the lock"
        );
        if let Ok(Some(info)) = client.get_lock(PAUSED_LOCK, false).await {
            if !info.holder.is_empty() {
                break info.token;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    signal(&holder, Signal::SIGSTOP);
    let guard = loop {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the waiter never got the paused lock"
        );
        if let Ok(Some(g)) = client
            .lock_with_timeout(PAUSED_LOCK, Duration::from_secs(5))
            .await
        {
            break g;
        }
    };
    let waiter_token = guard.token();
    signal(&holder, Signal::SIGCONT);
    let status = tokio::time::timeout(Duration::from_secs(20), holder.wait())
        .await
        .expect("the resumed holder did not exit")
        .unwrap();
    let _ = guard.release().await;
    let _ = client.close().await;
    PausedScene {
        holder_token,
        waiter_token,
        holder_exit: status.code(),
    }
}

#[test]
fn locks_stay_exclusive_and_fenced_through_leader_kills_and_a_paused_holder() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let binary = Path::new(env!("CARGO_BIN_EXE_raftlock"));
    let mut cluster = raftlock::cluster::start(binary, dir.path(), 3, &server_args()).unwrap();
    let outcome = runtime.block_on(async {
        tokio::time::timeout(
            Duration::from_secs(150),
            scenario(&mut cluster, binary, dir.path()),
        )
        .await
    });
    if outcome.is_err() {
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

async fn scenario(cluster: &mut LocalCluster, binary: &Path, dir: &Path) {
    assert!(
        cluster
            .wait_for_leader(Duration::from_secs(20))
            .await
            .is_some(),
        "no leader at start"
    );
    let endpoints: Vec<String> = cluster.nodes().iter().map(|n| n.http.to_string()).collect();
    let history = Arc::new(Mutex::new(History {
        cursor: vec![0; cluster.nodes().len()],
        ..History::default()
    }));
    let acks = Arc::new(Mutex::new(Acks::default()));
    let until = Instant::now() + FAULT_PHASE;
    let contenders: Vec<_> = (0..CLIENTS)
        .map(|id| tokio::spawn(contender(id, endpoints.clone(), acks.clone(), until)))
        .collect();
    let scene = tokio::spawn({
        let (binary, endpoints, dir) = (binary.to_path_buf(), endpoints.clone(), dir.to_path_buf());
        async move {
            tokio::time::sleep(Duration::from_secs(2)).await;
            paused_holder(&binary, endpoints, &dir).await
        }
    });
    let faults = nemesis(cluster, &history, until).await;
    for c in contenders {
        c.await.unwrap();
    }
    let scene = scene.await.unwrap();
    eprintln!("faults: {faults:?}");
    assert!(
        faults.iter().filter(|f| f.starts_with("SIGKILL")).count() >= 3,
        "{faults:?}"
    );

    // Heal, let everything apply, and read every node's history once more.
    for i in 0..cluster.nodes().len() {
        if !cluster.nodes()[i].is_running() {
            cluster.restart(i).unwrap();
        }
    }
    assert!(cluster
        .wait_for_leader(Duration::from_secs(20))
        .await
        .is_some());
    // A fresh entry of the leader's term commits everything before it.
    let probe = Client::new(ClientOptions::new(endpoints.clone())).unwrap();
    probe
        .create_session(Duration::from_secs(1), Duration::ZERO, "probe")
        .await
        .unwrap();
    cluster
        .wait_all_applied(Duration::from_secs(30))
        .await
        .expect("the nodes did not catch up");
    poll_events(cluster, &history).await;

    let history = std::mem::take(&mut *history.lock().unwrap());
    let acks = std::mem::take(&mut *acks.lock().unwrap());
    eprintln!(
        "{} acknowledged grants, {} acknowledged releases, history of {} indices",
        acks.grants.len(),
        acks.releases.len(),
        history.by_index.len()
    );
    assert!(
        acks.grants.len() > 30,
        "too few grants to mean anything: {}",
        acks.grants.len()
    );

    // Per lock, in commit order: one holder at a time, growing tokens, and in log time
    // each grant starts no earlier than the previous grant ended.
    let mut held: BTreeMap<String, (String, u64, u64)> = BTreeMap::new();
    let mut last_token: BTreeMap<String, u64> = BTreeMap::new();
    let mut last_end: BTreeMap<String, u64> = BTreeMap::new();
    let mut granted = std::collections::BTreeSet::new();
    let mut released = std::collections::BTreeSet::new();
    let mut expired = std::collections::BTreeSet::new();
    for (index, events) in &history.by_index {
        for e in events {
            let lock = e["lock"].as_str().unwrap().to_string();
            let session = e["session"].as_str().unwrap().to_string();
            let at = e["at_ms"].as_u64().unwrap();
            match e["kind"].as_str().unwrap() {
                "granted" => {
                    let token = e["token"].as_u64().unwrap();
                    assert_eq!(token, *index, "a token is its granting entry's index");
                    assert!(
                        !held.contains_key(&lock),
                        "{lock} granted to {session} at {index} while held by {:?}",
                        held[&lock]
                    );
                    let last = last_token.insert(lock.clone(), token).unwrap_or(0);
                    assert!(token > last, "{lock}: token {token} after {last}");
                    let end = last_end.get(&lock).copied().unwrap_or(0);
                    assert!(
                        at >= end,
                        "{lock}: granted at {at} ms before the last grant ended at {end} ms"
                    );
                    held.insert(lock.clone(), (session.clone(), token, at));
                    granted.insert((lock, session, token));
                }
                "ended" => {
                    let token = e["token"].as_u64().unwrap();
                    let (holder, held_token, since) = held
                        .remove(&lock)
                        .unwrap_or_else(|| panic!("{lock} ended at {index} but nobody held it"));
                    assert_eq!((holder.as_str(), held_token), (session.as_str(), token));
                    assert!(at >= since);
                    last_end.insert(lock.clone(), at);
                    match e["cause"].as_str().unwrap() {
                        "released" => released.insert((lock, session, token)),
                        "expired" => expired.insert((lock, session, token)),
                        _ => false,
                    };
                }
                _ => {}
            }
        }
    }
    // The history must start at the beginning (some node kept it all).
    assert!(
        history.by_index.keys().next().is_some_and(|i| *i < 20),
        "the merged history misses its start"
    );
    for g in &acks.grants {
        assert!(
            granted.contains(g),
            "acknowledged grant {g:?} is not in the history"
        );
    }
    for r in &acks.releases {
        assert!(
            released.contains(r),
            "acknowledged release {r:?} is not in the history"
        );
    }

    // The paused holder lost its lock by expiry; the waiter's token is higher; the
    // holder process learned it and exited with 3.
    assert!(scene.waiter_token > scene.holder_token);
    assert!(
        expired
            .iter()
            .any(|(l, _, t)| l == PAUSED_LOCK && *t == scene.holder_token),
        "the paused holder's grant did not end by expiry"
    );
    assert_eq!(scene.holder_exit, Some(3), "the resumed holder's exit code");

    // Every node agrees with the history on every lock's holder.
    for lock in LOCKS.iter().chain([&PAUSED_LOCK]) {
        let expected = held.get(*lock).map(|(s, t, _)| (s.clone(), *t));
        for i in 0..cluster.nodes().len() {
            let info = cluster
                .get_json(i, &format!("/v1/locks/{lock}?stale=true"))
                .await;
            let got = info.and_then(|v| {
                v["holder"]
                    .as_str()
                    .map(|s| (s.to_string(), v["token"].as_u64().unwrap()))
            });
            assert_eq!(got, expected, "{lock} on {}", cluster.nodes()[i].id);
        }
    }
}
