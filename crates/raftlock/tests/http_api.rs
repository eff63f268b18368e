//! The HTTP/JSON API against a real 3-node cluster: routes, status codes and JSON fields
//! as `docs/LOCK_API.md` documents them. Bounded in time; every process is reaped.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use raftlock::cluster::LocalCluster;
use reqwest::{redirect, StatusCode};
use serde_json::{json, Value};

struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value, reqwest::header::HeaderMap) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req.body(b.to_string());
        }
        let r = req.send().await.unwrap();
        let (status, headers) = (r.status(), r.headers().clone());
        let text = r.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::Null),
            headers,
        )
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let (s, v, _) = self.call(reqwest::Method::POST, path, Some(body)).await;
        (s, v)
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let (s, v, _) = self.call(reqwest::Method::GET, path, None).await;
        (s, v)
    }

    async fn session(&self, ttl_ms: u64) -> String {
        let (s, v) = self
            .post(
                "/v1/sessions",
                json!({ "ttl_ms": ttl_ms, "client": "http-test" }),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v["session"].as_str().unwrap().to_string()
    }
}

fn api(base: String, timeout: Duration) -> Api {
    Api {
        http: reqwest::Client::builder()
            .redirect(redirect::Policy::none())
            .timeout(timeout)
            .build()
            .unwrap(),
        base,
    }
}

#[test]
fn the_http_api_answers_as_documented() {
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
    let leader = cluster
        .wait_for_leader(Duration::from_secs(20))
        .await
        .expect("no leader");
    let follower = (leader + 1) % 3;
    let base = |i: usize| format!("http://{}", cluster.nodes()[i].http);
    let l = api(base(leader), Duration::from_secs(10));
    let f = api(base(follower), Duration::from_secs(10));

    // Followers redirect writes and linearizable reads to the leader's client address.
    let (status, body, headers) = f
        .call(reqwest::Method::POST, "/v1/sessions", Some(json!({})))
        .await;
    assert_eq!(status, StatusCode::TEMPORARY_REDIRECT, "{body}");
    assert_eq!(
        headers["location"],
        format!("{}/v1/sessions", base(leader)).as_str()
    );
    assert_eq!(body["reason"], "not_leader");
    let (status, _) = f.get("/v1/locks/anything?x=1").await;
    assert_eq!(status, StatusCode::TEMPORARY_REDIRECT);

    // Sessions: defaults, and bad input refused.
    let (status, v) = l.post("/v1/sessions", json!({})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["ttl_ms"], 15000);
    for bad in [
        json!({ "ttl_ms": 999 }),
        json!({ "ttl_ms": 300_001 }),
        json!({ "lock_delay_ms": 60_001 }),
        json!({ "ttl_ms": -5 }),
        json!({ "ttl": 5000 }),
    ] {
        let (status, v) = l.post("/v1/sessions", bad.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad} -> {v}");
        assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()));
    }
    let s1 = l.session(5000).await;
    let s2 = l.session(5000).await;

    // Acquire: granted, then 409 for another session with the holder's token.
    let (status, v) = l
        .post(
            "/v1/locks/job%2F1/acquire",
            json!({ "session": s1, "request_id": "a1" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["acquired"], true);
    let t1 = v["token"].as_u64().unwrap();
    let (status, v) = l
        .post(
            "/v1/locks/job%2F1/acquire",
            json!({ "session": s2, "wait_ms": 0 }),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{v}");
    assert_eq!(v["acquired"], false);
    assert_eq!(v["holder"], s1.as_str());
    assert_eq!(v["token"], t1);
    assert!(v["retry_after_ms"].as_u64().is_some_and(|ms| ms > 0));
    // A retry with the same request id gets the first answer.
    let (status, v) = l
        .post(
            "/v1/locks/job%2F1/acquire",
            json!({ "session": s1, "request_id": "a1" }),
        )
        .await;
    assert_eq!((status, v["token"].as_u64()), (StatusCode::OK, Some(t1)));

    // The lock, linearizable from the leader and stale from a follower.
    for (node, path) in [
        (&l, "/v1/locks/job%2F1"),
        (&f, "/v1/locks/job%2F1?stale=true"),
    ] {
        let (status, v) = node.get(path).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        assert_eq!(v["name"], "job/1");
        assert_eq!(v["holder"], s1.as_str());
        assert_eq!(v["token"], t1);
        assert!(v["acquired_at_ms"].as_u64().is_some());
        assert!(v["expires_at_ms"].as_u64() > v["acquired_at_ms"].as_u64());
        assert_eq!(v["waiters"], json!([]));
    }
    assert_eq!(l.get("/v1/locks/never-held").await.0, StatusCode::NOT_FOUND);

    // Bad lock input.
    let long = "x".repeat(257);
    for (path, body) in [
        (
            format!("/v1/locks/{long}/acquire"),
            json!({ "session": s1 }),
        ),
        ("/v1/locks/ok/acquire".to_string(), json!({})),
        (
            "/v1/locks/ok/acquire".to_string(),
            json!({ "session": "not-a-session" }),
        ),
        (
            "/v1/locks/ok/acquire".to_string(),
            json!({ "session": s1, "wait_ms": 300_001 }),
        ),
        (
            "/v1/locks/ok/acquire".to_string(),
            json!({ "session": s1, "colour": "red" }),
        ),
        ("/v1/locks/ok/release".to_string(), json!({ "session": s1 })),
    ] {
        let (status, v) = l.post(&path, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path} {body} -> {v}");
    }
    let ghost = "99999-0000000000000001";
    let (status, v) = l
        .post("/v1/locks/ok/acquire", json!({ "session": ghost }))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{v}");

    // Release: the wrong token or session is refused with 412; the right one works.
    let (status, v) = l
        .post(
            "/v1/locks/job%2F1/release",
            json!({ "session": s1, "token": t1 + 1000 }),
        )
        .await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED, "{v}");
    let (status, _) = l
        .post(
            "/v1/locks/job%2F1/release",
            json!({ "session": s2, "token": t1 }),
        )
        .await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED);

    // Validate: the current token is valid, others are not.
    let (status, v) = l
        .post("/v1/locks/job%2F1/validate", json!({ "token": t1 }))
        .await;
    assert_eq!(
        (status, &v),
        (
            StatusCode::OK,
            &json!({ "valid": true, "current_token": t1 })
        )
    );
    let (_, v) = l
        .post("/v1/locks/job%2F1/validate", json!({ "token": t1 - 1 }))
        .await;
    assert_eq!(v, json!({ "valid": false, "current_token": t1 }));

    // A blocking acquire is held open until the release hands the lock over.
    let waiter = {
        let (base, s2) = (base(leader), s2.clone());
        tokio::spawn(async move {
            api(base, Duration::from_secs(10))
                .post(
                    "/v1/locks/job%2F1/acquire",
                    json!({ "session": s2, "wait_ms": 8000, "request_id": "w1" }),
                )
                .await
        })
    };
    wait_until(|| async {
        l.get("/v1/locks/job%2F1").await.1["waiters"]
            .as_array()
            .is_some_and(|w| w.len() == 1)
    })
    .await;
    let (_, v) = l.get("/v1/locks/job%2F1").await;
    assert_eq!(v["waiters"][0]["session"], s2.as_str());
    let (status, v) = l
        .post(
            "/v1/locks/job%2F1/release",
            json!({ "session": s1, "token": t1 }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v, json!({ "released": true, "next_holder": s2 }));
    let (status, v) = waiter.await.unwrap();
    assert_eq!(status, StatusCode::OK, "{v}");
    let t2 = v["token"].as_u64().unwrap();
    assert!(t2 > t1);
    let (_, v) = l
        .post("/v1/locks/job%2F1/validate", json!({ "token": t1 }))
        .await;
    assert_eq!(v, json!({ "valid": false, "current_token": t2 }));

    // A wait that runs out answers 409 wait_timed_out.
    let started = Instant::now();
    let (status, v) = l
        .post(
            "/v1/locks/job%2F1/acquire",
            json!({ "session": s1, "wait_ms": 300 }),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{v}");
    assert_eq!(v["reason"], "wait_timed_out");
    assert!(started.elapsed() >= Duration::from_millis(300));

    // A client that goes away cancels its wait.
    let impatient = api(base(leader), Duration::from_millis(300));
    let (r, _) = tokio::join!(
        impatient
            .http
            .post(format!("{}/v1/locks/job%2F1/acquire", impatient.base))
            .body(json!({ "session": s1, "wait_ms": 20000 }).to_string())
            .send(),
        tokio::time::sleep(Duration::from_millis(100)),
    );
    assert!(r.is_err(), "the impatient client gave up");
    wait_until(|| async {
        l.get("/v1/locks/job%2F1").await.1["waiters"]
            .as_array()
            .is_some_and(Vec::is_empty)
    })
    .await;

    // Listing pages by prefix.
    for name in ["p/a", "p/b", "p/c"] {
        let (status, _) = l
            .post(
                &format!("/v1/locks/{}/acquire", name.replace('/', "%2F")),
                json!({ "session": s1 }),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
    }
    let (status, v) = l.get("/v1/locks?prefix=p/&limit=2").await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let names: Vec<&str> = v["locks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["p/a", "p/b"]);
    assert_eq!(v["next_after"], "p/b");
    let (_, v) = l.get("/v1/locks?prefix=p/&limit=2&after=p/b").await;
    assert_eq!(v["locks"][0]["name"], "p/c");
    assert_eq!(v["next_after"], Value::Null);
    assert_eq!(
        l.get("/v1/locks?limit=5000").await.0,
        StatusCode::BAD_REQUEST
    );

    // Keep-alive, close, and 404 afterwards.
    let (status, v) = l
        .post(&format!("/v1/sessions/{s1}/keepalive"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert!(v["ttl_ms"].as_u64().is_some_and(|t| t > 4000 && t <= 5000));
    let (status, v, _) = l
        .call(reqwest::Method::DELETE, &format!("/v1/sessions/{s1}"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let mut released: Vec<&str> = v["released"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    released.sort_unstable();
    assert_eq!(released, ["p/a", "p/b", "p/c"]);
    let (status, _) = l
        .post(&format!("/v1/sessions/{s1}/keepalive"), json!({}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, _) = l
        .call(reqwest::Method::DELETE, &format!("/v1/sessions/{s1}"), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // A session left alone expires, and releases its lock.
    let (_, v) = l.get("/v1/locks/job%2F1").await;
    assert_eq!(v["holder"], s2.as_str());
    wait_until(|| async { l.get("/v1/locks/job%2F1").await.1["holder"].is_null() }).await;
    let (status, body) = l
        .post(&format!("/v1/sessions/{s2}/keepalive"), json!({}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");

    // Operations routes.
    let (status, v) = l.get("/status").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["role"], "Leader");
    assert!(v["lock_service"]["sessions"].as_u64().is_some());
    let (status, v) = f.get("/health").await;
    assert_eq!((status, v["status"].as_str()), (StatusCode::OK, Some("ok")));
    let metrics = l
        .http
        .get(format!("{}/metrics", l.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "raftlock_locks_held",
        "raftlock_waiters",
        "raftlock_sessions",
        "raftlock_grants_total",
        "raftlock_sessions_expired_total",
        "raft_term",
    ] {
        assert!(metrics.contains(name), "/metrics lacks {name}");
    }
    let (status, v) = l.get("/v1/no/such/route").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{v}");
    assert!(v["error"].is_string());

    // SIGTERM stops the leader promptly although an acquire is held open on it for a
    // minute: the acquire is answered 503 (retry elsewhere), not left to hold the stop.
    let (_, holder) = l.post("/v1/sessions", json!({})).await;
    let (_, waiter) = l.post("/v1/sessions", json!({})).await;
    let (status, v) = l
        .post(
            "/v1/locks/stop-test/acquire",
            json!({ "session": holder["session"], "request_id": "h" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let held_open = {
        let w = api(base(leader), Duration::from_secs(30));
        let session = waiter["session"].clone();
        tokio::spawn(async move {
            w.post(
                "/v1/locks/stop-test/acquire",
                json!({ "session": session, "wait_ms": 60_000, "request_id": "w" }),
            )
            .await
        })
    };
    wait_until(|| async {
        let (_, v) = l.get("/v1/locks/stop-test").await;
        v["waiters"].as_array().is_some_and(|w| w.len() == 1)
    })
    .await;
    let started = Instant::now();
    tokio::task::block_in_place(|| cluster.terminate(leader, Duration::from_secs(20))).unwrap();
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "the stop took {took:?}: the held-open acquire held it"
    );
    let (status, v) = held_open.await.unwrap();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert_eq!(v["reason"], "no_leader", "{v}");
}

/// Polls `probe` every 20 ms for up to 10 s.
async fn wait_until<F, Fut>(mut probe: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !probe().await {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the condition never held"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
