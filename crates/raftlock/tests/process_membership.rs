//! Membership at run time on `raftlock server` processes, through the `raftlock` CLI: a
//! lock held across the whole scenario while a fourth server joins (`--join`), leadership
//! moves to it (`raftlock leader transfer`), an original member is removed
//! (`raftlock member remove`) and its id is refused afterwards. The lock must keep its
//! holder and token throughout, and the cluster must keep granting locks.
//!
//! Time is bounded (the whole test runs under a timeout) and every process is reaped, the
//! joined one by its guard, even when an assertion fails.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use raftlock::cluster::LocalCluster;
use raftlock::{Client, ClientOptions};
use serde_json::Value;

fn server_args() -> Vec<String> {
    [
        "--tick-ms",
        "20",
        "--election-ticks",
        "10",
        "--snapshot-threshold",
        "200",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// A server process started by the test itself; killed and reaped on drop.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs the `raftlock` CLI against `endpoints`.
fn cli(binary: &Path, endpoints: &[String], args: &[&str]) -> Output {
    Command::new(binary)
        .args(args)
        .arg("--endpoints")
        .arg(endpoints.join(","))
        .arg("--timeout")
        .arg("15s")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn members(binary: &Path, endpoints: &[String]) -> Value {
    let out = cli(binary, endpoints, &["member", "list", "--json"]);
    assert!(
        out.status.success(),
        "member list failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn role_of(view: &Value, id: &str) -> Option<String> {
    view["members"]
        .as_array()?
        .iter()
        .find(|m| m["id"] == id)
        .and_then(|m| m["role"].as_str().map(str::to_owned))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn a_server_joins_takes_the_lead_and_an_original_is_removed_while_a_lock_is_held() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let binary = PathBuf::from(env!("CARGO_BIN_EXE_raftlock"));
    let mut cluster = raftlock::cluster::start(&binary, dir.path(), 3, &server_args()).unwrap();
    let outcome = runtime.block_on(async {
        tokio::time::timeout(
            Duration::from_secs(90),
            scenario(&mut cluster, &binary, dir.path()),
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
        panic!("the scenario did not finish within 90 s");
    }
}

async fn scenario(cluster: &mut LocalCluster, binary: &Path, dir: &Path) {
    assert!(cluster
        .wait_for_leader(Duration::from_secs(20))
        .await
        .is_some());
    let originals = cluster.endpoints();
    let client = Client::new(
        ClientOptions::new(originals.clone())
            .ttl(Duration::from_secs(10))
            .deadline(Duration::from_secs(15)),
    )
    .unwrap();
    let held = client.lock("alpha").await.unwrap();
    let token = held.token();

    // A fourth server with an empty data directory joins through node-1.
    let (peer, api) = (free_port(), free_port());
    let api_addr = format!("127.0.0.1:{api}");
    let log = std::fs::File::create(dir.join("node-4.log")).unwrap();
    let _joined = Guard(
        Command::new(binary)
            .args(["server", "--node-id", "node-4"])
            .args(["--listen", &format!("127.0.0.1:{peer}")])
            .args(["--api", &api_addr])
            .arg("--data-dir")
            .arg(dir.join("node-4"))
            .args(["--join", &originals[0]])
            .args(server_args())
            .arg("--exit-with-parent")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let started = Instant::now();
    loop {
        let view = members(binary, &originals);
        if role_of(&view, "node-4").as_deref() == Some("voter") && view["joint"] == false {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "node-4 did not become a voter: {view}\n{}",
            std::fs::read_to_string(dir.join("node-4.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("node-4 joined as a voter in {:?}", started.elapsed());

    // Its client address travels in the configuration.
    let view = members(binary, &originals);
    let node4 = view["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == "node-4")
        .unwrap();
    assert_eq!(node4["client_address"], api_addr.as_str());

    // Leadership moves to it.
    let out = cli(binary, &originals, &["leader", "transfer", "node-4"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("leader is now node-4"), "{said}");
    let all: Vec<String> = originals
        .iter()
        .cloned()
        .chain([api_addr.clone()])
        .collect();
    assert_eq!(members(binary, &all)["leader"], "node-4");

    // An original member is removed; its id is retired.
    let out = cli(binary, &all, &["member", "remove", "node-1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rest: Vec<String> = all[1..].to_vec();
    let view = members(binary, &rest);
    assert_eq!(role_of(&view, "node-1"), None, "{view}");
    assert!(view["retired"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r == "node-1"));
    let out = cli(binary, &rest, &["member", "add", "node-1", "127.0.0.1:1"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot be reused"), "{err}");

    // The lock kept its holder and token through all of it, and the cluster still grants.
    let reader =
        Client::new(ClientOptions::new(rest.clone()).deadline(Duration::from_secs(15))).unwrap();
    let info = reader.get_lock("alpha", false).await.unwrap().unwrap();
    assert_eq!((info.holder.as_str(), info.token), (held.session(), token));
    let other = reader
        .try_lock("beta")
        .await
        .unwrap()
        .expect("beta is free");
    assert!(other.token() > 0);
    cluster.kill(0).unwrap();
}
