//! Process-level membership tests: `raftkv node` processes whose cluster grows, shrinks,
//! restarts and moves its leadership at run time, under concurrent HTTP clients that keep
//! writing and recording a history, through the admin routes (`/v1/members`,
//! `/v1/leader/transfer`). Afterwards every acknowledged write must be readable on every
//! member, and the whole history must pass the simulator's linearizability checker.
//!
//! The clients learn the members as they change: before each operation they take the
//! endpoint list the test keeps (the members it has started and not removed).
//!
//! Time is bounded (each scenario runs under a timeout) and every process is reaped by
//! `LocalCluster`'s drop, even when an assertion fails; the nodes' log tails are printed
//! when a scenario fails. With `KEEP_TEST_DIRS` set, each scenario's directory (data and
//! full node logs) is kept and its path printed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use raftlock_kv::client::{CasResult, Client, ClientError};
use raftlock_kv::cluster::LocalCluster;
use raftlock_serverkit::admin::{AdminClient, AdminError};
use raftlock_sim::linearizability::{
    check, CheckOptions, CheckResult, KvOp, KvOutcome, KvResult, Operation,
};
use reqwest::Method;
use serde_json::{json, Value};
use tokio::task::JoinHandle;

/// Fast timing, as in `process_faults.rs`: 20 ms ticks, elections after 200–400 ms; a
/// small snapshot threshold, so that a new node catches up by snapshot.
fn node_args() -> Vec<String> {
    [
        "--tick-ms",
        "20",
        "--election-ticks",
        "10",
        "--snapshot-threshold",
        "100",
        "--request-timeout-ms",
        "2000",
        "--worker-threads",
        "2",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

const KEYS: [&str; 4] = ["a", "b", "c", "d"];
const CLIENTS: u64 = 3;
/// How long one client request may take (above the servers' 2 s, so theirs answers first).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a client keeps retrying one operation: its retry window.
const CLIENT_DEADLINE: Duration = Duration::from_secs(4);
/// How long an admin request keeps retrying (elections, a pending change).
const ADMIN_DEADLINE: Duration = Duration::from_secs(20);
/// Successful writes before the first membership change: enough for a snapshot and a
/// compacted log, so that a new node catches up by snapshot.
const WARM_UP_WRITES: usize = 300;
/// Successful writes between two steps of a scenario.
const STEP_WRITES: usize = 100;
/// Bound of each scenario.
const SCENARIO_TIMEOUT: Duration = Duration::from_secs(75);

// ---------------------------------------------------------------------------------------
// The history and the load

struct Recorder {
    start: Instant,
    ops: Mutex<Vec<Operation>>,
    /// Completion time (µs since `start`) of every successful write.
    writes: Mutex<Vec<u64>>,
    /// Writes that ran out of their retry window (`ClientError::Unavailable`).
    unavailable: AtomicU64,
    /// Writes whose outcome is unknown.
    unknown: AtomicU64,
}

impl Recorder {
    fn new() -> Self {
        Recorder {
            start: Instant::now(),
            ops: Mutex::new(Vec::new()),
            writes: Mutex::new(Vec::new()),
            unavailable: AtomicU64::new(0),
            unknown: AtomicU64::new(0),
        }
    }

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

    /// Counts the outcome of a write.
    fn wrote<T>(&self, r: &Result<T, ClientError>, success: bool) {
        match r {
            Ok(_) if success => self.writes.lock().unwrap().push(self.now()),
            Ok(_) => {}
            Err(ClientError::Unavailable(_)) => {
                self.unavailable.fetch_add(1, Ordering::Relaxed);
            }
            Err(ClientError::Unknown(_)) => {
                self.unknown.fetch_add(1, Ordering::Relaxed);
            }
            Err(ClientError::Refused { .. }) => {}
        }
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

/// The endpoints the clients use: the members the test has started and not removed.
type View = Arc<RwLock<Vec<String>>>;

fn client_of(endpoints: &[String]) -> Client {
    Client::new(endpoints, REQUEST_TIMEOUT)
        .unwrap()
        .with_deadline(CLIENT_DEADLINE)
}

/// Takes the test's current endpoint list before an operation, if it changed.
fn refresh(client: &mut Client, view: &View, seen: &mut Vec<String>) {
    let now = view.read().unwrap().clone();
    if *seen != now && client.set_endpoints(&now).is_ok() {
        *seen = now;
    }
}

async fn client_loop(id: u64, view: View, rec: Arc<Recorder>, stop: Arc<AtomicBool>) -> u64 {
    let mut seen = view.read().unwrap().clone();
    let mut client = client_of(&seen);
    let mut n = 0u64;
    let mut acked = 0;
    while !stop.load(Ordering::Relaxed) {
        refresh(&mut client, &view, &mut seen);
        n += 1;
        let key = KEYS[usize::try_from((n * 7 + id * 3) % 4).unwrap()];
        let value = format!("{id}-{n}");
        let invoke = rec.now();
        match n % 3 {
            0 => {
                let r = client.put(key, &value).await;
                rec.wrote(&r, true);
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
                // CAS from a recent value of another client races nicely.
                let from = if n.is_multiple_of(2) {
                    None
                } else {
                    Some(format!("{}-{}", (id + 1) % CLIENTS, n.saturating_sub(2)))
                };
                let r = client.cas(key, from.as_deref(), &value).await;
                let swapped = matches!(r, Ok(CasResult::Swapped(_)));
                rec.wrote(&r, swapped);
                let outcome = match &r {
                    Ok(CasResult::Swapped(_)) => Some(KvOutcome::Ok(KvResult::CasOk)),
                    Ok(CasResult::Conflict(current)) => Some(KvOutcome::Ok(KvResult::CasFailed {
                        current: current.clone(),
                    })),
                    Err(e) => outcome_of_error(e),
                };
                acked += u64::from(swapped);
                rec.record(id, key, KvOp::Cas { from, to: value }, invoke, outcome);
            }
        }
    }
    acked
}

/// Writes keys that are never overwritten, so that "every acknowledged write is readable
/// on every member" can be checked key by key afterwards.
async fn unique_writer(
    view: View,
    rec: Arc<Recorder>,
    stop: Arc<AtomicBool>,
) -> Vec<(String, String)> {
    let mut seen = view.read().unwrap().clone();
    let mut client = client_of(&seen);
    let mut acked = Vec::new();
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        refresh(&mut client, &view, &mut seen);
        n += 1;
        let (key, value) = (format!("u-{n}"), format!("v-{n}"));
        let r = client.put(&key, &value).await;
        rec.wrote(&r, true);
        if r.is_ok() {
            acked.push((key, value));
        }
        // Leave room for the shared-key clients; the unique keys are read back one by
        // one at the end.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    acked
}

/// Clients writing and reading until [`Load::finish`].
struct Load {
    rec: Arc<Recorder>,
    view: View,
    stop: Arc<AtomicBool>,
    workers: Vec<JoinHandle<u64>>,
    unique: JoinHandle<Vec<(String, String)>>,
}

/// What the load did.
struct Done {
    acked: u64,
    unique: Vec<(String, String)>,
}

impl Load {
    fn start(endpoints: Vec<String>) -> Load {
        let rec = Arc::new(Recorder::new());
        let view: View = Arc::new(RwLock::new(endpoints));
        let stop = Arc::new(AtomicBool::new(false));
        let workers = (0..CLIENTS)
            .map(|id| tokio::spawn(client_loop(id, view.clone(), rec.clone(), stop.clone())))
            .collect();
        let unique = tokio::spawn(unique_writer(view.clone(), rec.clone(), stop.clone()));
        Load {
            rec,
            view,
            stop,
            workers,
            unique,
        }
    }

    /// Points the clients at `endpoints` from their next operation on.
    fn set_view(&self, endpoints: Vec<String>) {
        *self.view.write().unwrap() = endpoints;
    }

    /// Successful writes so far.
    fn writes(&self) -> usize {
        self.rec.writes.lock().unwrap().len()
    }

    async fn finish(self) -> (Arc<Recorder>, Done) {
        self.stop.store(true, Ordering::SeqCst);
        let mut acked = 0;
        for w in self.workers {
            acked += w.await.unwrap();
        }
        let unique = self.unique.await.unwrap();
        eprintln!(
            "{} operations recorded, {acked} acknowledged writes on shared keys, {} unique \
             keys; {} writes unavailable, {} of unknown outcome",
            self.rec.ops.lock().unwrap().len(),
            unique.len(),
            self.rec.unavailable.load(Ordering::SeqCst),
            self.rec.unknown.load(Ordering::SeqCst),
        );
        (self.rec, Done { acked, unique })
    }
}

/// Waits until the clients have made `n` more successful writes (bounded).
async fn wait_writes(load: &Load, n: usize) {
    let target = load.writes() + n;
    let start = Instant::now();
    while load.writes() < target {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the clients made no progress for 20 s ({} writes)",
            load.writes()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// ---------------------------------------------------------------------------------------
// Admin helpers

fn admin(endpoints: &[String]) -> AdminClient {
    AdminClient::new(endpoints, ADMIN_DEADLINE).unwrap()
}

/// The leader's `GET /v1/members` (polled until a leader answers for itself).
async fn leader_view(endpoints: &[String]) -> Value {
    let admin = admin(endpoints);
    let start = Instant::now();
    loop {
        let v = admin
            .request(Method::GET, "/v1/members", None, Duration::from_secs(3))
            .await;
        match v {
            Ok(v) if v["leader"].is_string() && v["leader"] == v["id"] => return v,
            other => assert!(
                start.elapsed() < ADMIN_DEADLINE,
                "no leader answered GET /v1/members within {ADMIN_DEADLINE:?}: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn leader_of(view: &Value) -> String {
    view["leader"].as_str().unwrap().to_string()
}

/// The ids of the members with `role` in a `GET /v1/members` answer, sorted.
fn ids_with_role(view: &Value, role: &str) -> Vec<String> {
    let mut ids: Vec<String> = view["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == role)
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

fn retired(view: &Value) -> Vec<String> {
    let mut ids: Vec<String> = view["retired"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

/// `POST /v1/members` for node `i` (a learner, promoted once caught up).
async fn add_member(
    endpoints: &[String],
    cluster: &LocalCluster,
    i: usize,
) -> Result<Value, AdminError> {
    let node = &cluster.nodes()[i];
    let body = json!({
        "id": node.id,
        "peer_address": node.peer.to_string(),
        "client_address": node.http.to_string(),
    });
    admin(endpoints)
        .request(
            Method::POST,
            "/v1/members?timeout_ms=30000",
            Some(body),
            Duration::from_secs(40),
        )
        .await
}

/// `DELETE /v1/members/{id}`.
async fn remove_member(endpoints: &[String], id: &str) -> Result<Value, AdminError> {
    admin(endpoints)
        .request(
            Method::DELETE,
            &format!("/v1/members/{id}"),
            None,
            Duration::from_secs(10),
        )
        .await
}

/// Waits until the leader's configuration has `id` as a voter, committed and not joint.
async fn wait_voter(endpoints: &[String], id: &str) -> Value {
    let start = Instant::now();
    loop {
        let v = leader_view(endpoints).await;
        if ids_with_role(&v, "voter").iter().any(|v| v == id)
            && v["committed"] == true
            && v["joint"] == false
        {
            return v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{id} is not a voter after 30 s: {v}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the leader's configuration is simple and committed.
async fn wait_settled(endpoints: &[String]) -> Value {
    let start = Instant::now();
    loop {
        let v = leader_view(endpoints).await;
        if v["committed"] == true && v["joint"] == false {
            return v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "configuration not settled after 30 s: {v}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether node `i`'s log says it installed a snapshot from the leader.
fn installed_snapshot(cluster: &LocalCluster, i: usize) -> bool {
    std::fs::read_to_string(&cluster.nodes()[i].log)
        .unwrap_or_default()
        .contains("installing snapshot")
}

fn ms(d: Duration) -> String {
    format!("{} ms", d.as_millis())
}

// ---------------------------------------------------------------------------------------
// Checks at the end

/// Every member (running, not forgotten) applied everything, holds every acknowledged
/// unique write in its own state and serves it to a linearizable read sent to it; the
/// members agree on the shared keys; the history is linearizable.
async fn verify(cluster: &LocalCluster, rec: &Recorder, done: &Done) {
    let endpoints = cluster.running_endpoints();
    let client = client_of(&endpoints);
    // A fresh entry in the leader's term makes every earlier entry committed.
    client.put("final", "done").await.unwrap();
    let commit = cluster
        .wait_all_applied(Duration::from_secs(30))
        .await
        .expect("members did not catch up within 30 s");
    eprintln!("every member applied index {commit}");
    let started = Instant::now();
    for endpoint in &endpoints {
        // One endpoint only: its local state, and linearizable reads sent to it (a
        // follower redirects them to the leader or serves them by ReadIndex).
        let local = client_of(std::slice::from_ref(endpoint));
        let mut reads = tokio::task::JoinSet::new();
        for chunk in done.unique.chunks(64) {
            let local = local.clone();
            let chunk = chunk.to_vec();
            let endpoint = endpoint.clone();
            reads.spawn(async move {
                for (key, value) in &chunk {
                    let stale = local.get(key, true).await.unwrap();
                    assert_eq!(
                        stale.as_deref(),
                        Some(value.as_str()),
                        "{key} on {endpoint}"
                    );
                    let fresh = local.get(key, false).await.unwrap();
                    assert_eq!(
                        fresh.as_deref(),
                        Some(value.as_str()),
                        "{key} via {endpoint}"
                    );
                }
            });
        }
        while let Some(r) = reads.join_next().await {
            r.unwrap();
        }
    }
    eprintln!(
        "{} acknowledged unique writes read back from {} members in {}",
        done.unique.len(),
        endpoints.len(),
        ms(started.elapsed())
    );
    for key in KEYS {
        let mut seen = Vec::new();
        for endpoint in &endpoints {
            let local = client_of(std::slice::from_ref(endpoint));
            seen.push(local.get(key, true).await.unwrap());
        }
        assert!(
            seen.windows(2).all(|w| w[0] == w[1]),
            "members disagree on {key}: {seen:?}"
        );
        // A final linearizable read of each key through each member joins the history.
        for endpoint in &endpoints {
            let local = client_of(std::slice::from_ref(endpoint));
            let invoke = rec.now();
            let value = local.get(key, false).await.unwrap();
            assert_eq!(value, seen[0], "linearizable read of {key} via {endpoint}");
            rec.record(
                99,
                key,
                KvOp::Get,
                invoke,
                Some(KvOutcome::Ok(KvResult::Value(value))),
            );
        }
    }
    let history = rec.ops.lock().unwrap().clone();
    let started = Instant::now();
    let verdict = check(&history, &CheckOptions::default());
    assert_eq!(
        verdict,
        CheckResult::Linearizable,
        "history of {} operations",
        history.len()
    );
    eprintln!(
        "history of {} operations linearizable (checked in {})",
        history.len(),
        ms(started.elapsed())
    );
    assert!(
        done.acked > 20,
        "too few writes succeeded to mean anything: {}",
        done.acked
    );
    assert!(
        done.unique.len() > 20,
        "too few unique writes: {}",
        done.unique.len()
    );
}

// ---------------------------------------------------------------------------------------
// Running a scenario

/// Prints the tail of every node log in `dir` if the test is failing.
struct LogsOnPanic(PathBuf);

impl Drop for LogsOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            print_logs(&self.0);
        }
    }
}

fn print_logs(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut logs: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    for log in logs {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        eprintln!(
            "--- {} ---\n{}",
            log.display(),
            lines[lines.len().saturating_sub(40)..].join("\n")
        );
    }
}

/// Starts three nodes in a temporary directory and runs `scenario` on them under
/// [`SCENARIO_TIMEOUT`]. The cluster (every process) is dropped before this returns or
/// unwinds.
fn run<F>(name: &str, scenario: F)
where
    F: for<'a> FnOnce(
        &'a mut LocalCluster,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + 'a>>,
{
    let dir = tempfile::tempdir().unwrap();
    let _logs = LogsOnPanic(dir.path().to_path_buf());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let started = Instant::now();
    let mut cluster = raftlock_kv::cluster::start(
        Path::new(env!("CARGO_BIN_EXE_raftkv")),
        dir.path(),
        3,
        &node_args(),
    )
    .unwrap();
    let outcome = runtime
        .block_on(async { tokio::time::timeout(SCENARIO_TIMEOUT, scenario(&mut cluster)).await });
    drop(cluster);
    if std::env::var_os("KEEP_TEST_DIRS").is_some() {
        eprintln!("{name}: logs kept in {}", dir.keep().display());
    }
    assert!(
        outcome.is_ok(),
        "{name}: the scenario did not finish within {SCENARIO_TIMEOUT:?}"
    );
    eprintln!("{name}: {}", ms(started.elapsed()));
}

async fn wait_leader(cluster: &LocalCluster) -> usize {
    cluster
        .wait_for_leader(Duration::from_secs(20))
        .await
        .expect("no leader")
}

// ---------------------------------------------------------------------------------------
// a. Replace every original member

#[test]
fn replaces_every_original_member_under_load() {
    run("replaces_every_original_member_under_load", |c| {
        Box::pin(replace_all(c))
    });
}

async fn replace_all(cluster: &mut LocalCluster) {
    wait_leader(cluster).await;
    let originals: Vec<usize> = (0..3).collect();
    let load = Load::start(cluster.endpoints());
    wait_writes(&load, WARM_UP_WRITES).await;
    let mut old_pids = Vec::new();
    let mut added = Vec::new();
    let mut timings = Vec::new();
    let mut remaining = originals.clone();
    while !remaining.is_empty() {
        // Followers first, the leader last.
        let leader = leader_of(&leader_view(&cluster.running_endpoints()).await);
        let pick = remaining
            .iter()
            .position(|&i| cluster.nodes()[i].id != leader)
            .unwrap_or(0);
        let victim = remaining.remove(pick);
        let id = cluster.nodes()[victim].id.clone();
        let was_leader = id == leader;
        old_pids.push((victim, cluster.nodes()[victim].pid().unwrap()));
        let step = Instant::now();

        // SIGKILL it; the clients stop using it.
        cluster.kill(victim).unwrap();
        cluster.forget(victim, Duration::ZERO).unwrap();
        load.set_view(cluster.endpoints());

        // Remove it from the membership.
        let removed = remove_member(&cluster.running_endpoints(), &id)
            .await
            .unwrap_or_else(|e| panic!("removing {id}: {e}"));
        assert!(
            retired(&removed).contains(&id),
            "{id} not retired: {removed}"
        );
        let removed_in = step.elapsed();

        // A fresh node, empty, added as a learner and promoted once caught up.
        let started = Instant::now();
        let new = cluster.add_node(None).unwrap();
        let new_id = cluster.nodes()[new].id.clone();
        let v = add_member(&cluster.running_endpoints(), cluster, new)
            .await
            .unwrap_or_else(|e| panic!("adding {new_id}: {e}"));
        assert!(
            ids_with_role(&v, "voter").contains(&new_id),
            "{new_id} not a voter: {v}"
        );
        wait_voter(&cluster.running_endpoints(), &new_id).await;
        load.set_view(cluster.endpoints());
        let added_in = started.elapsed();
        assert!(
            installed_snapshot(cluster, new),
            "{new_id} caught up without a snapshot"
        );
        added.push(new);
        let line = format!(
            "replaced {id}{} by {new_id}: killed and removed in {}, added and promoted in {}, \
             step {}",
            if was_leader { " (leader)" } else { "" },
            ms(removed_in),
            ms(added_in),
            ms(step.elapsed())
        );
        eprintln!("{line}");
        timings.push(line);
        // Some writes under the new configuration before the next step.
        wait_writes(&load, STEP_WRITES).await;
    }
    let (rec, done) = load.finish().await;

    let view = wait_settled(&cluster.running_endpoints()).await;
    let new_ids: Vec<String> = added
        .iter()
        .map(|&i| cluster.nodes()[i].id.clone())
        .collect();
    let old_ids: Vec<String> = originals
        .iter()
        .map(|&i| cluster.nodes()[i].id.clone())
        .collect();
    let mut sorted_new = new_ids.clone();
    sorted_new.sort();
    assert_eq!(ids_with_role(&view, "voter"), sorted_new, "voters: {view}");
    assert!(ids_with_role(&view, "learner").is_empty(), "{view}");
    assert_eq!(
        view["members"].as_array().unwrap().len(),
        3,
        "members: {view}"
    );
    assert_eq!(retired(&view), old_ids, "retired: {view}");
    // The removed nodes' processes are gone.
    for (i, pid) in old_pids {
        assert!(!cluster.nodes()[i].is_running());
        let alive = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap()),
            None,
        );
        assert_eq!(
            alive,
            Err(nix::errno::Errno::ESRCH),
            "the process of {} (pid {pid}) still exists",
            cluster.nodes()[i].id
        );
    }
    verify(cluster, &rec, &done).await;
    eprintln!("steps:\n  {}", timings.join("\n  "));
}

// ---------------------------------------------------------------------------------------
// b. Grow to five, shrink back to three

#[test]
fn grows_three_to_five_and_back_under_load() {
    run("grows_three_to_five_and_back_under_load", |c| {
        Box::pin(grow_and_shrink(c))
    });
}

async fn grow_and_shrink(cluster: &mut LocalCluster) {
    wait_leader(cluster).await;
    let load = Load::start(cluster.endpoints());
    wait_writes(&load, WARM_UP_WRITES).await;

    // Two nodes join: one asks by itself (--join), one is added with POST /v1/members.
    let started = Instant::now();
    let via = cluster.nodes()[0].http.to_string();
    let joiner = cluster.add_node(Some(&via)).unwrap();
    let joiner_id = cluster.nodes()[joiner].id.clone();
    wait_voter(&cluster.running_endpoints(), &joiner_id).await;
    load.set_view(cluster.endpoints());
    eprintln!(
        "{joiner_id} joined (--join) as a voter in {}",
        ms(started.elapsed())
    );
    wait_writes(&load, STEP_WRITES).await;

    let started = Instant::now();
    let added = cluster.add_node(None).unwrap();
    let added_id = cluster.nodes()[added].id.clone();
    add_member(&cluster.running_endpoints(), cluster, added)
        .await
        .unwrap_or_else(|e| panic!("adding {added_id}: {e}"));
    let view = wait_voter(&cluster.running_endpoints(), &added_id).await;
    load.set_view(cluster.endpoints());
    for i in [joiner, added] {
        assert!(
            installed_snapshot(cluster, i),
            "{} caught up without a snapshot",
            cluster.nodes()[i].id
        );
    }
    eprintln!(
        "{added_id} added (POST) as a voter in {}",
        ms(started.elapsed())
    );
    assert_eq!(ids_with_role(&view, "voter").len(), 5, "{view}");
    wait_writes(&load, STEP_WRITES).await;

    // Two of the original members leave, alive: a follower, then the leader if it is
    // still an original member (else another follower).
    for round in 0..2 {
        let view = leader_view(&cluster.running_endpoints()).await;
        let leader = leader_of(&view);
        let originals: Vec<usize> = (0..3)
            .filter(|&i| !cluster.nodes()[i].is_forgotten())
            .collect();
        let victim = if round == 0 {
            *originals
                .iter()
                .find(|&&i| cluster.nodes()[i].id != leader)
                .unwrap()
        } else {
            originals
                .iter()
                .copied()
                .find(|&i| cluster.nodes()[i].id == leader)
                .unwrap_or(originals[0])
        };
        let id = cluster.nodes()[victim].id.clone();
        let started = Instant::now();
        // The clients stop using it first: a removed node no longer knows the leader.
        let others: Vec<String> = cluster
            .endpoints()
            .into_iter()
            .filter(|e| *e != cluster.nodes()[victim].endpoint())
            .collect();
        load.set_view(others.clone());
        let v = remove_member(&others, &id)
            .await
            .unwrap_or_else(|e| panic!("removing {id}: {e}"));
        assert!(retired(&v).contains(&id), "{id} not retired: {v}");
        let v = wait_settled(&others).await;
        assert!(!ids_with_role(&v, "voter").contains(&id), "{v}");
        cluster.forget(victim, Duration::from_secs(5)).unwrap();
        eprintln!(
            "removed {id}{} in {}",
            if id == leader { " (leader)" } else { "" },
            ms(started.elapsed())
        );
        wait_writes(&load, STEP_WRITES).await;
    }
    let (rec, done) = load.finish().await;
    let view = wait_settled(&cluster.running_endpoints()).await;
    assert_eq!(ids_with_role(&view, "voter").len(), 3, "{view}");
    assert_eq!(retired(&view).len(), 2, "{view}");
    verify(cluster, &rec, &done).await;
}

// ---------------------------------------------------------------------------------------
// c. Rolling restart with SIGTERM

/// The longest time without a successful write that overlaps `[from, to]` (µs since the
/// recorder's start): from the last success before `from` (or `from`) to the next one,
/// and so on until `to`. Returns its length and where it began.
fn longest_gap(writes: &[u64], from: u64, to: u64) -> (u64, u64) {
    let mut prev = writes
        .iter()
        .copied()
        .filter(|&t| t <= from)
        .max()
        .unwrap_or(from);
    let mut longest = (0, prev);
    for &t in writes.iter().filter(|&&t| t > from) {
        if t - prev > longest.0 {
            longest = (t - prev, prev);
        }
        prev = t;
        if t >= to {
            return longest;
        }
    }
    if to.saturating_sub(prev) > longest.0 {
        longest = (to - prev, prev);
    }
    longest
}

#[test]
fn rolling_restart_with_sigterm() {
    run("rolling_restart_with_sigterm", |c| {
        Box::pin(rolling_restart(c))
    });
}

async fn rolling_restart(cluster: &mut LocalCluster) {
    wait_leader(cluster).await;
    let load = Load::start(cluster.endpoints());
    wait_writes(&load, WARM_UP_WRITES).await;
    // Followers first, the leader last, so that the leader's restart comes after two
    // others.
    let leader = wait_leader(cluster).await;
    let order: Vec<usize> = (0..3)
        .filter(|&i| i != leader)
        .chain(std::iter::once(leader))
        .collect();
    let mut windows = Vec::new();
    for i in order {
        let id = cluster.nodes()[i].id.clone();
        let was_leader = cluster.wait_for_leader(Duration::from_secs(10)).await == Some(i);
        let log_before = std::fs::read_to_string(&cluster.nodes()[i].log)
            .unwrap_or_default()
            .len();
        let from = load.rec.now();
        let started = Instant::now();
        cluster.terminate(i, Duration::from_secs(10)).unwrap();
        let stopped = started.elapsed();
        cluster.restart(i).unwrap();
        let leader = wait_leader(cluster).await;
        cluster
            .wait_all_applied(Duration::from_secs(20))
            .await
            .expect("the restarted node did not catch up");
        wait_writes(&load, STEP_WRITES).await;
        let to = load.rec.now();
        let writes = load.rec.writes.lock().unwrap().clone();
        let (gap, gap_start) = longest_gap(&writes, from, to);
        let gap = Duration::from_micros(gap);
        // Where the gap began, from the SIGTERM (negative: before it).
        let gap_at = i128::from(gap_start) / 1000 - i128::from(from) / 1000;
        let log = std::fs::read_to_string(&cluster.nodes()[i].log).unwrap_or_default();
        let handed = log[log_before..]
            .lines()
            .find(|l| l.contains("handed leadership over before stopping"))
            .map(str::to_string);
        if was_leader {
            let line = handed.unwrap_or_else(|| {
                panic!(
                    "the leader {id} did not log the hand-over:\n{}",
                    &log[log_before..]
                )
            });
            let took = line
                .split("took_ms=")
                .nth(1)
                .and_then(|s| s.split_whitespace().next())
                .unwrap_or("?");
            eprintln!("  {id}'s hand-over took {took} ms");
        } else {
            assert!(handed.is_none(), "follower {id} claims to have led");
        }
        let line = format!(
            "restarted {id}{}: stopped in {}, back and caught up in {}, new leader {}, \
             failover time (longest gap between successful writes) {}, from {gap_at} ms",
            if was_leader { " (leader)" } else { "" },
            ms(stopped),
            ms(started.elapsed()),
            cluster.nodes()[leader].id,
            ms(gap)
        );
        eprintln!("{line}");
        windows.push((id, was_leader, gap));
    }
    let unavailable = load.rec.unavailable.load(Ordering::SeqCst);
    let (rec, done) = load.finish().await;
    for (id, was_leader, gap) in &windows {
        assert!(
            *gap < CLIENT_DEADLINE,
            "writes failed for {} around the restart of {id} (leader: {was_leader}), longer \
             than the clients' retry window of {}",
            ms(*gap),
            ms(CLIENT_DEADLINE)
        );
    }
    assert_eq!(
        unavailable, 0,
        "{unavailable} writes ran out of their retry window during the rolling restart"
    );
    verify(cluster, &rec, &done).await;
}

// ---------------------------------------------------------------------------------------
// d. Leadership transfers

#[test]
fn transfers_leadership_to_each_member_in_turn() {
    run("transfers_leadership_to_each_member_in_turn", |c| {
        Box::pin(transfers(c))
    });
}

async fn transfers(cluster: &mut LocalCluster) {
    wait_leader(cluster).await;
    let load = Load::start(cluster.endpoints());
    wait_writes(&load, WARM_UP_WRITES).await;
    let endpoints = cluster.endpoints();
    let mut targets = Vec::new();
    for round in 0..6 {
        let leader = leader_of(&leader_view(&endpoints).await);
        // Each member in turn, skipping the one that leads already.
        let mut t = round % 3;
        if cluster.nodes()[t].id == leader {
            t = (t + 1) % 3;
        }
        let to = cluster.nodes()[t].id.clone();
        let started = Instant::now();
        let mut attempt = 1;
        let answer = loop {
            let answer = admin(&endpoints)
                .request(
                    Method::POST,
                    "/v1/leader/transfer",
                    Some(json!({ "to": to })),
                    Duration::from_secs(10),
                )
                .await;
            match answer {
                Ok(answer) => break Some(answer),
                // A transfer is abandoned after one election timeout (200 ms here) if the
                // target has not won by then, and the server answers 504. That happens
                // when the target's disk stalls (seen with other builds writing to the
                // same disk): its campaign waits for the fsync of its new term. That is
                // the protocol's answer to a slow target, not a failure of the transfer
                // API: ask again, a few times.
                Err(AdminError::Unknown(why)) if attempt < 3 => {
                    eprintln!("transfer {leader} -> {to}, attempt {attempt}: {why}");
                    attempt += 1;
                    if leader_of(&leader_view(&endpoints).await) == to {
                        break None; // it took effect after all
                    }
                }
                Err(e) => panic!("transfer to {to} (attempt {attempt}): {e}"),
            }
        };
        let took = started.elapsed();
        if let Some(answer) = &answer {
            assert_eq!(answer["leader"], to.as_str(), "{answer}");
            assert_eq!(
                answer["client_address"],
                cluster.nodes()[t].http.to_string(),
                "{answer}"
            );
        }
        // The member named says it leads.
        let view = admin(&[cluster.nodes()[t].endpoint()])
            .request(
                Method::GET,
                "/v1/members?local=true",
                None,
                Duration::from_secs(3),
            )
            .await
            .unwrap();
        assert_eq!(view["leader"], to.as_str(), "{view}");
        assert_eq!(view["id"], to.as_str(), "{view}");
        // And so does the leader's view through any member.
        assert_eq!(leader_of(&leader_view(&endpoints).await), to);
        eprintln!(
            "transfer {leader} -> {to}: {} (server: {} ms){}",
            ms(took),
            answer
                .as_ref()
                .map_or(Value::Null, |a| a["took_ms"].clone()),
            if attempt > 1 {
                format!(", {attempt} attempts")
            } else {
                String::new()
            }
        );
        targets.push(to);
        wait_writes(&load, STEP_WRITES).await;
    }
    let (rec, done) = load.finish().await;
    for i in 0..3 {
        assert!(
            targets.contains(&cluster.nodes()[i].id),
            "{} never led",
            cluster.nodes()[i].id
        );
    }
    verify(cluster, &rec, &done).await;
}

// ---------------------------------------------------------------------------------------
// e. A removed id is refused

/// A process the test starts by hand, killed and reaped on drop.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_removed_id_is_refused() {
    run("a_removed_id_is_refused", |c| Box::pin(removed_refused(c)));
}

/// What is true of a removed node:
///
/// - The cluster refuses to add its id again (HTTP 400), and a new node started under
///   that id with an empty data directory and `--join` exits non-zero, saying it was
///   removed.
/// - A removed *leader* holds the configuration that retires it (it appended it itself):
///   restarted on its data directory, it refuses to start.
/// - A removed *follower* does not: the leader stops replicating to it as soon as the
///   configuration without it is appended (docs/MEMBERSHIP.md, "Removed servers"), so its
///   data directory ends at the joint configuration, which still lists it. Restarted on
///   it, it starts and stays a pre-candidate that nobody answers. The test shows this,
///   without asserting it.
async fn removed_refused(cluster: &mut LocalCluster) {
    let leader = wait_leader(cluster).await;
    let client = client_of(&cluster.endpoints());
    for n in 0..20 {
        client.put(&format!("k{n}"), "v").await.unwrap();
    }
    let follower = (leader + 1) % 3;
    let third = (leader + 2) % 3;
    let fid = cluster.nodes()[follower].id.clone();
    let others = vec![
        cluster.nodes()[leader].endpoint(),
        cluster.nodes()[third].endpoint(),
    ];

    // Remove a live follower.
    let v = remove_member(&others, &fid).await.unwrap();
    assert!(retired(&v).contains(&fid), "{v}");
    let v = wait_settled(&others).await;
    assert!(!ids_with_role(&v, "voter").contains(&fid), "{v}");

    // Adding it again is refused: 400, nothing changes.
    match add_member(&others, cluster, follower).await {
        Err(AdminError::Refused {
            status: 400,
            message,
        }) => {
            assert!(message.contains("removed"), "{message}");
            eprintln!("re-adding {fid}: 400 {message}");
        }
        other => panic!("re-adding {fid} answered {other:?}"),
    }

    // The removed follower is no longer replicated to; at its next election timeout it
    // asks the members for votes, they refuse a retired id, and it stops by itself,
    // leaving a marker that refuses a restart under that id.
    let status = cluster
        .wait_exit(follower, Duration::from_secs(10))
        .unwrap()
        .unwrap_or_else(|| panic!("the removed follower {fid} is still running after 10 s"));
    let text = std::fs::read_to_string(&cluster.nodes()[follower].log).unwrap();
    assert!(!status.success(), "{status}\n{text}");
    assert!(text.contains("was removed from the cluster"), "{text}");
    eprintln!("removed follower {fid} stopped by itself ({status})");
    cluster.forget(follower, Duration::from_secs(5)).unwrap();
    let before = text.len();
    cluster.restart(follower).unwrap();
    let status = cluster
        .wait_exit(follower, Duration::from_secs(15))
        .unwrap()
        .unwrap_or_else(|| panic!("the removed follower {fid} started on its data directory"));
    let text = std::fs::read_to_string(&cluster.nodes()[follower].log).unwrap();
    let text = &text[before..];
    assert!(!status.success(), "{status}\n{text}");
    assert!(text.contains("removed"), "{text}");
    eprintln!("removed follower {fid} restarted on its data directory: exited ({status})");

    // A new node under the removed id, empty, asking to join: refused, it exits.
    let ports = raftlock_serverkit::cluster::free_ports(2).unwrap();
    let data = tempfile::tempdir().unwrap();
    let out = data.path().join("out.log");
    let log = std::fs::File::create(&out).unwrap();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_raftkv"))
        .arg("node")
        .args(["--node-id", &fid])
        .args(["--listen", &ports[0].to_string()])
        .args(["--http", &ports[1].to_string()])
        .args(["--join", &cluster.nodes()[leader].http.to_string()])
        .arg("--data-dir")
        .arg(data.path().join("data"))
        .arg("--exit-with-parent")
        .args(node_args())
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut child = Reaped(child);
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "a new node under the removed id {fid} is still running after 15 s:\n{}",
            std::fs::read_to_string(&out).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(!status.success(), "{status}\n{text}");
    assert!(text.contains("removed"), "{text}");
    eprintln!(
        "a new node under {fid} with --join exited ({status}) after {}",
        ms(started.elapsed())
    );

    // Remove the live leader: it holds the configuration that retires it, and refuses to
    // start on it.
    let lid = cluster.nodes()[leader].id.clone();
    let v = remove_member(&others, &lid).await.unwrap();
    assert!(retired(&v).contains(&lid), "{v}");
    let rest = vec![cluster.nodes()[third].endpoint()];
    let v = wait_settled(&rest).await;
    assert_eq!(
        ids_with_role(&v, "voter"),
        vec![cluster.nodes()[third].id.clone()],
        "{v}"
    );
    // It led until the change committed, stepped down, and stops by itself.
    let status = cluster
        .wait_exit(leader, Duration::from_secs(10))
        .unwrap()
        .unwrap_or_else(|| panic!("the removed leader {lid} is still running after 10 s"));
    assert!(!status.success(), "{status}");
    cluster.forget(leader, Duration::from_secs(5)).unwrap();
    let before = std::fs::read_to_string(&cluster.nodes()[leader].log)
        .unwrap()
        .len();
    cluster.restart(leader).unwrap();
    let status = cluster
        .wait_exit(leader, Duration::from_secs(15))
        .unwrap()
        .unwrap_or_else(|| panic!("the removed leader {lid} started on its data directory"));
    let text = std::fs::read_to_string(&cluster.nodes()[leader].log).unwrap();
    let text = &text[before..];
    assert!(!status.success(), "{status}\n{text}");
    assert!(text.contains("removed"), "{text}");
    eprintln!("removed leader {lid} restarted on its data directory: exited ({status})");

    // The one member left still serves.
    let client = client_of(&rest);
    client.put("after", "both removals").await.unwrap();
    assert_eq!(
        client.get("after", false).await.unwrap().as_deref(),
        Some("both removals")
    );
}
