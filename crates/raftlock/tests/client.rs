//! The Rust client against a real 3-node cluster over gRPC: locks, fencing tokens,
//! release on drop, and `LockGuard::lost` when the cluster goes silent. Bounded in time;
//! every process is reaped.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use raftlock::cluster::LocalCluster;
use raftlock::{Client, ClientError, ClientOptions};

#[test]
fn the_client_locks_fences_and_notices_when_it_can_no_longer_trust_its_session() {
    let dir = tempfile::tempdir().unwrap();
    let args: Vec<String> = [
        "--tick-ms",
        "20",
        "--election-ticks",
        "10",
        "--keepalive-interval-ms",
        "10",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let binary = Path::new(env!("CARGO_BIN_EXE_raftlock"));
    let mut cluster = raftlock::cluster::start(binary, dir.path(), 3, &args).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let outcome = runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(90), steps(&mut cluster)).await
    });
    if outcome.is_err() {
        for i in 0..3 {
            eprintln!(
                "--- {} ---\n{}",
                cluster.nodes()[i].id,
                cluster.log_tail(i, 30)
            );
        }
        panic!("the steps did not finish within 90 s");
    }
}

async fn steps(cluster: &mut LocalCluster) {
    cluster
        .wait_for_leader(Duration::from_secs(20))
        .await
        .expect("no leader");
    let endpoints: Vec<String> = cluster.nodes().iter().map(|n| n.http.to_string()).collect();
    let options = |name: &str| {
        ClientOptions::new(endpoints.clone())
            .ttl(Duration::from_secs(1))
            .name(name)
            .deadline(Duration::from_secs(5))
    };
    let a = Client::new(options("a")).unwrap();
    let b = Client::new(options("b")).unwrap();

    // Exclusive, with growing tokens; keep-alives keep the session past its TTL.
    let g1 = a.lock("shared").await.unwrap();
    assert!(b.try_lock("shared").await.unwrap().is_none());
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(!g1.is_lost(), "renewed in the background");
    let (valid, current) = b.validate("shared", g1.token()).await.unwrap();
    assert!(valid && current == Some(g1.token()));
    let info = b.get_lock("shared", false).await.unwrap().unwrap();
    assert_eq!(info.holder, g1.session());
    assert_eq!(info.holder_client, "a");

    // A waiter gets the lock when the guard is dropped (released in the background).
    let waiting = {
        let b = b.clone();
        tokio::spawn(async move { b.lock_with_timeout("shared", Duration::from_secs(10)).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t1 = g1.token();
    drop(g1);
    let g2 = waiting
        .await
        .unwrap()
        .unwrap()
        .expect("granted after the drop");
    assert!(g2.token() > t1);
    assert!(
        !b.validate("shared", t1).await.unwrap().0,
        "the old token is stale"
    );
    g2.release().await.unwrap();
    let (locks, _) = a.list_locks("sha", None, 10).await.unwrap();
    assert_eq!(locks.len(), 1);
    assert!(locks[0].holder.is_empty());
    assert!(a.get_lock("no-such-lock", true).await.unwrap().is_none());

    // Bad input is refused with its reason.
    match a.try_lock("").await {
        Err(ClientError::Rejected { reason, .. }) => assert_eq!(reason, "bad_request"),
        other => panic!("{other:?}"),
    }

    // The whole cluster goes silent: the guard is lost before the session's TTL has
    // passed since the last keep-alive was sent, so before the cluster could expire it.
    let g3 = a.lock("silence").await.unwrap();
    for i in 0..3 {
        cluster.pause(i).unwrap();
    }
    let paused = Instant::now();
    tokio::time::timeout(Duration::from_secs(3), g3.lost())
        .await
        .expect("the guard noticed within the TTL");
    assert!(g3.is_lost());
    assert!(
        paused.elapsed() < Duration::from_secs(1),
        "lost within the 1 s TTL: {:?}",
        paused.elapsed()
    );
    for i in 0..3 {
        cluster.resume(i).unwrap();
    }
    // The client opens a new session for what comes next.
    drop(g3);
    cluster
        .wait_for_leader(Duration::from_secs(20))
        .await
        .expect("no leader after resuming");
    let g4 = a
        .lock_with_timeout("fresh", Duration::from_secs(5))
        .await
        .unwrap()
        .unwrap();
    assert!(!g4.is_lost());
    g4.release().await.unwrap();
    a.close().await.unwrap();
    b.close().await.unwrap();
}
