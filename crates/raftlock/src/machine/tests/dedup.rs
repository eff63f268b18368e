//! Retried requests get their first answer, and nothing is applied twice (thesis §6.3).

use super::harness::Log;
use crate::machine::{AcquireOutcome, RefusalKind, ReleaseOutcome, Response};

#[test]
fn a_retried_acquire_gets_its_first_answer_even_after_the_state_moved_on() {
    let mut log = Log::new();
    let a = log.create(300_000, 0);
    let b = log.create(300_000, 0);
    let rid = log.request_id();
    let first = log.acquire_with(a, "L", 0, 0, &rid);
    let Response::Acquire(AcquireOutcome::Granted { token, .. }) = first else {
        panic!("{first:?}");
    };
    log.release(a, "L", token);
    log.grant(b, "L");
    // The retry of the first acquire (its answer was lost) does not acquire again.
    assert_eq!(log.acquire_with(a, "L", 0, 0, &rid), first);
    assert_eq!(log.holder("L").unwrap().0, b);
    assert_eq!(log.m.stats().grants, 2);
}

#[test]
fn a_retried_release_does_not_release_a_later_grant() {
    let mut log = Log::new();
    let a = log.create(300_000, 0);
    let t1 = log.grant(a, "L");
    let rid = log.request_id();
    let first = log.release_with(a, "L", t1, &rid);
    assert_eq!(
        first,
        Response::Release(ReleaseOutcome::Released { next_holder: None })
    );
    let t2 = log.grant(a, "L");
    // Same request id, same answer, and the new grant stands.
    assert_eq!(log.release_with(a, "L", t1, &rid), first);
    assert_eq!(log.holder("L"), Some((a, t2)));
    assert_eq!(log.m.stats().releases, 1);
}

#[test]
fn a_retried_wait_learns_its_grant() {
    let mut log = Log::new();
    let a = log.create(300_000, 0);
    let b = log.create(300_000, 0);
    let t = log.grant(a, "L");
    let rid = log.request_id();
    let r = log.acquire_with(b, "L", 60_000, 0, &rid);
    assert!(matches!(
        r,
        Response::Acquire(AcquireOutcome::Waiting { .. })
    ));
    assert_eq!(
        log.acquire_with(b, "L", 60_000, 0, &rid),
        r,
        "still waiting"
    );
    assert_eq!(log.m.lock("L").unwrap().waiters.len(), 1, "queued once");
    log.release(a, "L", t);
    let granted = log.index;
    assert_eq!(
        log.acquire_with(b, "L", 60_000, 0, &rid),
        Response::Acquire(AcquireOutcome::Granted {
            token: granted,
            acquired_ms: log.now
        })
    );
}

#[test]
fn a_request_id_belongs_to_one_kind_of_request() {
    let mut log = Log::new();
    let a = log.create(300_000, 0);
    let rid = log.request_id();
    let Response::Acquire(AcquireOutcome::Granted { token, .. }) =
        log.acquire_with(a, "L", 0, 0, &rid)
    else {
        panic!()
    };
    assert!(matches!(
        log.release_with(a, "L", token, &rid),
        Response::Refused(ref r) if r.kind == RefusalKind::BadRequest
    ));
    assert_eq!(log.holder("L"), Some((a, token)));
}

#[test]
fn a_request_id_belongs_to_one_lock() {
    let mut log = Log::new();
    let a = log.create(300_000, 0);
    let rid = log.request_id();
    let Response::Acquire(AcquireOutcome::Granted { token, .. }) =
        log.acquire_with(a, "L", 0, 0, &rid)
    else {
        panic!()
    };
    // The same id on another lock must not answer with L's grant, nor acquire M.
    assert!(matches!(
        log.acquire_with(a, "M", 0, 0, &rid),
        Response::Refused(ref r) if r.kind == RefusalKind::BadRequest
    ));
    assert_eq!(log.holder("M"), None);
    let rel = log.request_id();
    log.release_with(a, "L", token, &rel);
    assert!(matches!(
        log.release_with(a, "M", token, &rel),
        Response::Refused(ref r) if r.kind == RefusalKind::BadRequest
    ));
    // The binding survives a snapshot.
    let copy = crate::machine::LockMachine::restore(&log.m.snapshot(), log.index).unwrap();
    log.m = copy;
    assert!(matches!(
        log.acquire_with(a, "M", 0, 0, &rid),
        Response::Refused(ref r) if r.kind == RefusalKind::BadRequest
    ));
}

#[test]
fn results_are_remembered_per_session() {
    let mut log = Log::new();
    let a = log.create(300_000, 0);
    let b = log.create(300_000, 0);
    let r1 = log.acquire_with(a, "L", 0, 0, "same");
    assert!(matches!(
        r1,
        Response::Acquire(AcquireOutcome::Granted { .. })
    ));
    let r2 = log.acquire_with(b, "L", 0, 0, "same");
    assert!(
        matches!(r2, Response::Acquire(AcquireOutcome::NotAcquired { .. })),
        "another session's id is its own: {r2:?}"
    );
}
