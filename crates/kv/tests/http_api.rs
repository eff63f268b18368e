//! The client HTTP API of `raftkv node`, exercised on a real 3-process cluster: status
//! codes, redirects, error bodies, and the operational routes. One cluster serves every
//! step (processes are slow to start); steps that break the cluster come last.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use raftlock_kv::client::Client;
use raftlock_kv::cluster::LocalCluster;
use reqwest::redirect::Policy;
use reqwest::StatusCode;
use serde_json::Value;

fn node_args() -> Vec<String> {
    [
        "--tick-ms",
        "20",
        "--election-ticks",
        "10",
        "--request-timeout-ms",
        "1500",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// A raw HTTP client that does not follow redirects, to see them.
fn raw() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

async fn json(r: reqwest::Response) -> (StatusCode, Value) {
    let status = r.status();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[test]
fn http_api_status_codes_redirects_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = raftlock_kv::cluster::start(
        std::path::Path::new(env!("CARGO_BIN_EXE_raftkv")),
        dir.path(),
        3,
        &node_args(),
    )
    .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(90), steps(&mut cluster))
            .await
            .expect("the HTTP API steps did not finish within 90 s");
    });
}

async fn steps(cluster: &mut LocalCluster) {
    let admin = Client::new(&cluster.endpoints(), Duration::from_secs(5)).unwrap();
    let leader = cluster
        .wait_for_leader(Duration::from_secs(20))
        .await
        .expect("no leader");
    let follower = (leader + 1) % 3;
    let base = |i: usize| format!("http://{}", cluster.nodes()[i].http);
    let (lead, foll) = (base(leader), base(follower));
    let http = raw();

    // PUT on the leader: 200 with the index it was applied at.
    let (s, body) = json(
        http.put(format!("{lead}/kv/greeting"))
            .body("hello")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let index = body["index"].as_u64().unwrap();
    assert!(index > 0);

    // The same API over HTTP/2 without TLS (prior knowledge), as gRPC-style clients and
    // load generators that multiplex many requests on one connection speak it.
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let r = h2
        .put(format!("{lead}/kv/over-h2"))
        .body("multiplexed")
        .send()
        .await
        .unwrap();
    assert_eq!(
        (r.version(), r.status()),
        (reqwest::Version::HTTP_2, StatusCode::OK)
    );
    let r = h2.get(format!("{lead}/kv/over-h2")).send().await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.text().await.unwrap(), "multiplexed");

    // A follower redirects writes and linearizable reads to the leader's client address.
    for req in [
        http.put(format!("{foll}/kv/greeting")).body("x"),
        http.get(format!("{foll}/kv/greeting")),
        http.delete(format!("{foll}/kv/greeting")),
        http.post(format!("{foll}/kv/greeting/cas"))
            .body(r#"{"from":null,"to":"y"}"#),
    ] {
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), StatusCode::TEMPORARY_REDIRECT);
        let location = r.headers()["location"].to_str().unwrap().to_string();
        assert!(
            location.starts_with(&format!("{lead}/kv/greeting")),
            "{location}"
        );
        let (_, body) = json(r).await;
        assert_eq!(body["leader"], cluster.nodes()[leader].id.as_str());
    }
    // ... and a client that follows redirects (curl -L) gets the answer.
    let follow = reqwest::Client::new();
    let r = follow
        .get(format!("{foll}/kv/greeting"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.text().await.unwrap(), "hello");
    let r = follow
        .put(format!("{foll}/kv/via-follower"))
        .body("1")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "PUT through a redirect keeps its body"
    );

    // A stale read is served by the follower itself once it has applied the write.
    let mut stale = None;
    for _ in 0..100 {
        let r = http
            .get(format!("{foll}/kv/greeting?stale=true"))
            .send()
            .await
            .unwrap();
        if r.status() == StatusCode::OK {
            let applied: u64 = r.headers()["x-raft-index"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!(applied >= index);
            stale = Some(r.text().await.unwrap());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(stale.as_deref(), Some("hello"));

    // GET of an absent key: 404 with a JSON error.
    let (s, body) = json(http.get(format!("{lead}/kv/nothing")).send().await.unwrap()).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(body["error"].is_string());

    // CAS: 409 with the current value when `from` does not match, 200 when it does.
    let cas = |b: &'static str| http.post(format!("{lead}/kv/greeting/cas")).body(b).send();
    let (s, body) = json(cas(r#"{"from":"nope","to":"x"}"#).await.unwrap()).await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(body["current"], "hello");
    let (s, body) = json(cas(r#"{"from":"hello","to":"world"}"#).await.unwrap()).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["swapped"], true);
    let (s, body) = json(cas(r#"{"from":null,"to":"x"}"#).await.unwrap()).await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(body["current"], "world");

    // Bad input: 400 with a message, and nothing changes.
    for (req, what) in [
        (
            http.post(format!("{lead}/kv/greeting/cas"))
                .body("not json"),
            "CAS body not JSON",
        ),
        (
            http.post(format!("{lead}/kv/greeting/cas"))
                .body(r#"{"from":null}"#),
            "CAS without to",
        ),
        (
            http.post(format!("{lead}/kv/greeting/cas"))
                .body(r#"{"to":"a","x":1}"#),
            "unknown field",
        ),
        (
            http.put(format!("{lead}/kv/greeting"))
                .body(vec![0xff, 0xfe]),
            "value not UTF-8",
        ),
        (
            http.get(format!("{lead}/kv/greeting?stale=perhaps")),
            "stale not a boolean",
        ),
    ] {
        let (s, body) = json(req.send().await.unwrap()).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{what}: {body}");
        assert!(
            body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{what}: {body}"
        );
    }
    // A body over the limit is refused unread, so the server ends that connection and
    // says so: the client's next request (the DELETE below, on the same client) must go
    // on a new connection rather than into the closing one.
    let big = http
        .put(format!("{lead}/kv/big"))
        .body(vec![b'x'; 5 * 1024 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(
        big.headers().get("connection").map(|v| v.as_bytes()),
        Some(&b"close"[..])
    );
    let (s, body) = json(big).await;
    assert_eq!(
        s,
        StatusCode::BAD_REQUEST,
        "value over the proposal limit: {body}"
    );
    assert_eq!(
        admin.get("greeting", false).await.unwrap().as_deref(),
        Some("world")
    );
    assert_eq!(admin.get("big", false).await.unwrap(), None);

    // DELETE reports whether the key existed.
    let (s, body) = json(
        http.delete(format!("{lead}/kv/greeting"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (s, body["existed"].clone()),
        (StatusCode::OK, Value::Bool(true))
    );
    let (_, body) = json(
        http.delete(format!("{lead}/kv/greeting"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(body["existed"], false);

    // Keys with spaces and slashes survive (percent-encoded).
    admin.put("a b/c", "odd key").await.unwrap();
    assert_eq!(
        admin.get("a b/c", false).await.unwrap().as_deref(),
        Some("odd key")
    );

    // Operational routes.
    let (s, status) = json(http.get(format!("{lead}/status")).send().await.unwrap()).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(status["role"], "Leader");
    assert_eq!(status["id"], cluster.nodes()[leader].id.as_str());
    assert!(status["commit_index"].as_u64().unwrap() >= index);
    assert_eq!(status["replication"].as_object().unwrap().len(), 2);
    let (s, health) = json(http.get(format!("{foll}/health")).send().await.unwrap()).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(health["status"], "ok");
    let r = http.get(format!("{lead}/metrics")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let text = r.text().await.unwrap();
    assert!(text.contains("raft_commit_index"), "{text}");
    let (s, _) = json(
        http.get(format!("{lead}/no/such/route"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // With both followers paused, a write cannot commit: 504, outcome unknown.
    let others: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    for &i in &others {
        cluster.pause(i).unwrap();
    }
    let (s, body) = json(
        http.put(format!("{lead}/kv/lonely"))
            .body("1")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::GATEWAY_TIMEOUT, "{body}");
    assert!(body["error"].as_str().unwrap().contains("unknown"));
    // The lone node steps down (CheckQuorum) and, knowing no leader, answers 503 with
    // Retry-After.
    let mut unavailable = false;
    for _ in 0..100 {
        let r = http
            .put(format!("{lead}/kv/lonely"))
            .body("1")
            .send()
            .await
            .unwrap();
        if r.status() == StatusCode::SERVICE_UNAVAILABLE {
            assert_eq!(r.headers()["retry-after"], "1");
            unavailable = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(unavailable, "no 503 from a node without a quorum");
    for &i in &others {
        cluster.resume(i).unwrap();
    }
    assert!(cluster
        .wait_for_leader(Duration::from_secs(20))
        .await
        .is_some());
    cluster.shutdown(Duration::from_secs(5)).unwrap();
}
