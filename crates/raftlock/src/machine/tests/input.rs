//! Every bad input is refused with a message and changes nothing.

use super::harness::Log;
use crate::machine::{AcquireCommand, Command, RefusalKind, Response};

fn refused(r: &Response, kind: RefusalKind, fragment: &str) {
    match r {
        Response::Refused(f) => {
            assert_eq!(f.kind, kind, "{f:?}");
            assert!(
                f.message.contains(fragment),
                "{:?} lacks {fragment:?}",
                f.message
            );
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn bad_sessions_are_refused() {
    let mut log = Log::new();
    let create = |ttl_ms, lock_delay_ms, client: &str| Command::CreateSession {
        nonce: 1,
        ttl_ms,
        lock_delay_ms,
        client: client.into(),
        max_sessions: 100,
    };
    refused(
        &log.apply(create(999, 0, "")),
        RefusalKind::BadRequest,
        "ttl_ms",
    );
    refused(
        &log.apply(create(300_001, 0, "")),
        RefusalKind::BadRequest,
        "ttl_ms",
    );
    refused(
        &log.apply(create(1_000, 60_001, "")),
        RefusalKind::BadRequest,
        "lock_delay_ms",
    );
    refused(
        &log.apply(create(1_000, 0, &"c".repeat(257))),
        RefusalKind::BadRequest,
        "client",
    );
    refused(
        &log.apply(create(1_000, 0, "a\u{7}")),
        RefusalKind::BadRequest,
        "client",
    );
    assert_eq!(log.m.gauges().sessions, 0);
}

#[test]
fn bad_acquires_and_releases_are_refused() {
    let mut log = Log::new();
    let a = log.create(10_000, 0);
    let long = "x".repeat(257);
    for (name, fragment) in [("", "empty"), (long.as_str(), "257"), ("a\nb", "control")] {
        let r = log.acquire_with(a, name, 0, 0, "r1");
        refused(&r, RefusalKind::BadRequest, fragment);
        let r = log.release_with(a, name, 1, "r2");
        refused(&r, RefusalKind::BadRequest, fragment);
    }
    refused(
        &log.acquire_with(a, "L", 300_001, 0, "r3"),
        RefusalKind::BadRequest,
        "wait_ms",
    );
    refused(
        &log.acquire_with(a, "L", 0, 0, ""),
        RefusalKind::BadRequest,
        "request_id",
    );
    refused(
        &log.acquire_with(a, "L", 0, 0, &"r".repeat(129)),
        RefusalKind::BadRequest,
        "request_id",
    );
    assert_eq!(log.m.gauges().locks, 0, "no record was made");
    // Refusals are not remembered: a corrected retry with the same id is served.
    assert!(matches!(
        log.acquire_with(a, "L", 0, 0, "r1"),
        Response::Acquire(crate::machine::AcquireOutcome::Granted { .. })
    ));
}

#[test]
fn an_unknown_session_is_refused_everywhere() {
    let mut log = Log::new();
    let ghost = crate::machine::SessionId {
        index: 99,
        nonce: 1,
    };
    let r = log.apply(Command::Acquire(AcquireCommand {
        session: ghost,
        lock: "L".into(),
        wait_ms: 0,
        priority: 0,
        request_id: "r".into(),
        max_waiters: 10,
    }));
    refused(&r, RefusalKind::SessionNotFound, "99-");
    refused(
        &log.release_with(ghost, "L", 1, "r"),
        RefusalKind::SessionNotFound,
        "unknown",
    );
    refused(
        &log.apply(Command::CloseSession { session: ghost }),
        RefusalKind::SessionNotFound,
        "unknown",
    );
    refused(
        &log.apply(Command::CancelWait {
            session: ghost,
            lock: "L".into(),
            request_id: "r".into(),
        }),
        RefusalKind::SessionNotFound,
        "unknown",
    );
    assert_eq!(log.renew(&[ghost]), vec![0]);
    assert_eq!(log.m.gauges().locks, 0);
}

#[test]
fn bytes_that_are_not_an_entry_are_refused_and_only_advance_the_index() {
    let mut log = Log::new();
    let a = log.create(10_000, 0);
    let before = log.m.snapshot();
    let r = log.m.apply_bytes(log.index + 1, log.term, b"SET x=1");
    refused(&r, RefusalKind::BadRequest, "not a RaftLock entry");
    log.index += 1;
    assert_eq!(log.m.applied(), log.index);
    // Everything but the applied index is as before.
    let restored = crate::machine::LockMachine::restore(&before, log.index).unwrap();
    assert_eq!(
        restored.snapshot(),
        crate::machine::LockMachine::restore(&log.m.snapshot(), log.index)
            .unwrap()
            .snapshot()
    );
    restored.check_invariants();
    assert!(log.m.session_is_alive(a));
}

#[test]
fn a_session_cannot_hold_and_await_more_than_its_limit() {
    use crate::machine::limits::MAX_LOCKS_PER_SESSION;
    let mut log = Log::new();
    log.check_each = false;
    let a = log.create(300_000, 0);
    for i in 0..MAX_LOCKS_PER_SESSION {
        log.grant(a, &format!("l{i}"));
    }
    let rid = log.request_id();
    refused(
        &log.acquire_with(a, "one-more", 0, 0, &rid),
        RefusalKind::TooManyLocks,
        "limit",
    );
    // Re-acquiring one it holds is not a new lock.
    log.grant(a, "l0");
    log.m.check_invariants();
}
