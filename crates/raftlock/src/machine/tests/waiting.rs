//! Waiting: fair queues, timeouts, cancels, limits, and the lock-delay after an expiry.

use super::harness::Log;
use crate::machine::{
    AcquireOutcome, Command, EventKind, NotAcquired, ReleaseOutcome, Response, SessionId,
};

fn waiting(o: &AcquireOutcome) -> bool {
    matches!(o, AcquireOutcome::Waiting { .. })
}

/// The sessions granted `lock`, in order.
fn granted_sessions(log: &Log, lock: &str) -> Vec<SessionId> {
    log.events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Granted {
                lock: l, session, ..
            } if l == lock => Some(*session),
            _ => None,
        })
        .collect()
}

#[test]
fn waiters_are_served_by_priority_then_first_come() {
    let mut log = Log::new();
    let holder = log.create(300_000, 0);
    let s: Vec<SessionId> = (0..5).map(|_| log.create(300_000, 0)).collect();
    let mut token = log.grant(holder, "L");
    for (session, priority) in s.iter().zip([0, 5, 0, 5, -1]) {
        let rid = log.request_id();
        let r = log.acquire_with(*session, "L", 60_000, priority, &rid);
        assert!(matches!(r, Response::Acquire(ref o) if waiting(o)), "{r:?}");
    }
    let queue: Vec<SessionId> = log
        .m
        .lock("L")
        .unwrap()
        .waiters
        .iter()
        .map(|w| w.session)
        .collect();
    assert_eq!(queue, vec![s[1], s[3], s[0], s[2], s[4]]);
    let mut current = holder;
    for expected in [s[1], s[3], s[0], s[2], s[4]] {
        match log.release(current, "L", token) {
            ReleaseOutcome::Released {
                next_holder: Some(next),
            } => assert_eq!(next, expected),
            other => panic!("{other:?}"),
        }
        let (h, t) = log.holder("L").unwrap();
        assert_eq!(h, expected);
        assert_eq!(t, log.index, "the release's own index is the next token");
        current = h;
        token = t;
    }
    assert_eq!(
        granted_sessions(&log, "L")[1..],
        [s[1], s[3], s[0], s[2], s[4]]
    );
}

#[test]
fn a_wait_that_times_out_is_ended_by_the_leaders_expiry() {
    let mut log = Log::new();
    let a = log.create(300_000, 0);
    let b = log.create(300_000, 0);
    let t = log.grant(a, "L");
    let rid = log.request_id();
    let deadline = match log.acquire_with(b, "L", 1_000, 0, &rid) {
        Response::Acquire(AcquireOutcome::Waiting { deadline_ms }) => deadline_ms,
        other => panic!("{other:?}"),
    };
    assert_eq!(deadline, log.now + 1_000);
    log.advance(999);
    assert!(log.m.due(log.now, 10).waits.is_empty());
    log.advance(1);
    assert_eq!(
        log.m.due(log.now, 10).waits,
        vec![("L".to_string(), b.index)]
    );
    // Only the expiry ends it.
    assert_eq!(log.m.lock("L").unwrap().waiters.len(), 1);
    assert!(matches!(
        log.expire_due(),
        Response::Expired { waits: 1, .. }
    ));
    assert!(log.m.lock("L").unwrap().waiters.is_empty());
    let ended = log.events.iter().find_map(|e| match &e.kind {
        EventKind::WaitEnded {
            request_id,
            outcome,
            ..
        } if *request_id == rid => Some(outcome.clone()),
        _ => None,
    });
    assert!(matches!(
        ended,
        Some(AcquireOutcome::NotAcquired {
            why: NotAcquired::WaitTimedOut,
            holder: Some(h),
            token: Some(tok),
            ..
        }) if h == a && tok == t
    ));
    // A retry of the same request gets that ending, not a new wait.
    match log.acquire_with(b, "L", 1_000, 0, &rid) {
        Response::Acquire(AcquireOutcome::NotAcquired { why, .. }) => {
            assert_eq!(why, NotAcquired::WaitTimedOut)
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(log.m.stats().wait_timeouts, 1);
}

#[test]
fn a_cancelled_wait_leaves_the_queue_and_a_grant_that_came_first_stands() {
    let mut log = Log::new();
    let a = log.create(300_000, 0);
    let b = log.create(300_000, 0);
    let c = log.create(300_000, 0);
    let t = log.grant(a, "L");
    let (rb, rc) = (log.request_id(), log.request_id());
    log.acquire_with(b, "L", 60_000, 0, &rb);
    log.acquire_with(c, "L", 60_000, 0, &rc);
    let cancel = |log: &mut Log, s, rid: &str| {
        log.apply(Command::CancelWait {
            session: s,
            lock: "L".into(),
            request_id: rid.into(),
        })
    };
    match cancel(&mut log, b, &rb) {
        Response::Cancelled {
            outcome: AcquireOutcome::NotAcquired { why, .. },
            was_waiting: true,
        } => assert_eq!(why, NotAcquired::WaitCancelled),
        other => panic!("{other:?}"),
    }
    // c was granted before its cancel arrived: the cancel reports the grant.
    log.release(a, "L", t);
    let granted = log.index;
    assert_eq!(log.holder("L"), Some((c, granted)));
    match cancel(&mut log, c, &rc) {
        Response::Cancelled {
            outcome: AcquireOutcome::Granted { token, .. },
            was_waiting: false,
        } => assert_eq!(token, granted),
        other => panic!("{other:?}"),
    }
    assert_eq!(log.holder("L"), Some((c, granted)), "the grant stands");
}

#[test]
fn a_new_blocking_acquire_takes_over_the_sessions_wait_and_keeps_its_place() {
    let mut log = Log::new();
    let a = log.create(300_000, 0);
    let b = log.create(300_000, 0);
    let c = log.create(300_000, 0);
    let t = log.grant(a, "L");
    let (r1, r2) = (log.request_id(), log.request_id());
    log.acquire_with(b, "L", 1_000, 0, &r1);
    log.acquire(c, "L", 60_000);
    log.advance(500);
    let r = log.acquire_with(b, "L", 60_000, 0, &r2);
    assert!(
        matches!(r, Response::Acquire(AcquireOutcome::Waiting { deadline_ms }) if deadline_ms == log.now + 60_000)
    );
    // The first request ended as superseded; b is still first in line.
    match log.acquire_with(b, "L", 1_000, 0, &r1) {
        Response::Acquire(AcquireOutcome::NotAcquired { why, .. }) => {
            assert_eq!(why, NotAcquired::Superseded)
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(log.m.lock("L").unwrap().waiters[0].session, b);
    // A try-lock of a waiting session does not disturb its wait.
    assert!(matches!(
        log.acquire(b, "L", 0),
        AcquireOutcome::NotAcquired {
            why: NotAcquired::Held,
            ..
        }
    ));
    log.advance(1_000);
    assert!(
        log.m.due(log.now, 10).waits.is_empty(),
        "the old deadline is gone"
    );
    log.release(a, "L", t);
    assert_eq!(log.holder("L").unwrap().0, b);
    match log.acquire_with(b, "L", 60_000, 0, &r2) {
        Response::Acquire(AcquireOutcome::Granted { token, .. }) => {
            assert_eq!(token, log.index - 1)
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_full_queue_refuses_further_waiters() {
    let mut log = Log::new();
    log.max_waiters = 2;
    let holder = log.create(300_000, 0);
    log.grant(holder, "L");
    for _ in 0..2 {
        let s = log.create(300_000, 0);
        assert!(waiting(&log.acquire(s, "L", 10_000)));
    }
    let late = log.create(300_000, 0);
    assert!(matches!(
        log.acquire(late, "L", 10_000),
        AcquireOutcome::NotAcquired {
            why: NotAcquired::QueueFull,
            ..
        }
    ));
    assert_eq!(log.m.gauges().waiters, 2);
}

#[test]
fn a_lock_released_by_expiry_stays_blocked_for_the_lock_delay() {
    let mut log = Log::new();
    let paused = log.create(2_000, 5_000);
    let waiter = log.create(300_000, 0);
    let prober = log.create(300_000, 0);
    let t = log.grant(paused, "L");
    assert!(waiting(&log.acquire(waiter, "L", 60_000)));
    log.advance(2_000);
    log.renew(&[waiter, prober]);
    log.expire_due();
    let expired_at = log.now;
    let view = log.m.lock("L").unwrap();
    assert!(view.holder.is_none());
    assert_eq!(view.blocked_until_ms, Some(expired_at + 5_000));
    assert_eq!(
        view.waiters.len(),
        1,
        "the waiter keeps waiting through the delay"
    );
    match log.acquire(prober, "L", 0) {
        AcquireOutcome::NotAcquired {
            why,
            holder,
            retry_after_ms,
            ..
        } => {
            assert_eq!(why, NotAcquired::LockDelay);
            assert_eq!(holder, None);
            assert_eq!(retry_after_ms, 5_000);
        }
        other => panic!("{other:?}"),
    }
    log.advance(4_999);
    assert!(log.m.due(log.now, 10).locks.is_empty());
    log.advance(1);
    assert_eq!(log.m.due(log.now, 10).locks, vec!["L".to_string()]);
    assert!(matches!(
        log.expire_due(),
        Response::Expired { grants: 1, .. }
    ));
    let (h, token) = log.holder("L").unwrap();
    assert_eq!(h, waiter);
    assert!(token > t);
    assert_eq!(log.m.lock("L").unwrap().blocked_until_ms, None);
}

#[test]
fn an_acquire_after_the_delay_ends_serves_the_queue_first() {
    let mut log = Log::new();
    let paused = log.create(1_000, 1_000);
    let waiter = log.create(300_000, 0);
    let newcomer = log.create(300_000, 0);
    log.grant(paused, "L");
    assert!(waiting(&log.acquire(waiter, "L", 60_000)));
    log.advance(1_000);
    log.expire_due();
    log.advance(1_000);
    // The delay ended but the leader has not proposed the hand-over yet: the newcomer's
    // acquire hands the lock to the waiter first, then queues behind it.
    assert!(waiting(&log.acquire(newcomer, "L", 60_000)));
    assert_eq!(log.holder("L").unwrap().0, waiter);
}

#[test]
fn an_explicit_release_by_a_session_with_lock_delay_does_not_block() {
    let mut log = Log::new();
    let a = log.create(10_000, 60_000);
    let b = log.create(10_000, 0);
    let t = log.grant(a, "L");
    log.release(a, "L", t);
    assert!(log.m.lock("L").unwrap().blocked_until_ms.is_none());
    log.grant(b, "L");
}
