//! Sessions: time only from the log, expiry only by command, promote on a new term.

use super::harness::{Log, GRACE};
use crate::machine::{
    AcquireOutcome, Command, EndCause, EventKind, NotAcquired, RefusalKind, Response,
};

#[test]
fn a_session_lives_for_its_ttl_in_log_time_and_renewal_extends_it() {
    let mut log = Log::new();
    let s = log.create(5_000, 0);
    let view = log.m.session(s).unwrap();
    assert_eq!(view.deadline_ms, log.now + 5_000);
    log.advance(3_000);
    assert_eq!(log.renew(&[s]), vec![5_000], "renewed to a full TTL");
    assert_eq!(log.m.session(s).unwrap().deadline_ms, log.now + 5_000);
    // The machine's clock is the largest stamp, never the wall clock and never backwards.
    let before = log.m.now_ms();
    log.now -= 10_000;
    log.renew(&[s]);
    assert_eq!(
        log.m.now_ms(),
        before,
        "a stale stamp does not move the clock back"
    );
}

#[test]
fn expiry_happens_only_through_an_expire_command() {
    let mut log = Log::new();
    let a = log.create(2_000, 0);
    let token = log.grant(a, "L");
    // Far past a's deadline, other commands do not expire it: a still holds the lock.
    log.advance(60_000);
    let b = log.create(10_000, 0);
    match log.acquire(b, "L", 0) {
        AcquireOutcome::NotAcquired {
            why,
            holder,
            token: t,
            ..
        } => {
            assert_eq!(why, NotAcquired::Held);
            assert_eq!(holder, Some(a));
            assert_eq!(t, Some(token));
        }
        other => panic!("{other:?}"),
    }
    // A session past its deadline can do nothing, and its token is no longer valid.
    assert_eq!(log.renew(&[a]), vec![0]);
    assert!(!log.m.check_token("L", token).valid);
    assert_eq!(log.m.check_token("L", token).current_token, Some(token));
    let rid = log.request_id();
    match log.acquire_with(a, "M", 0, 0, &rid) {
        Response::Refused(r) => assert_eq!(r.kind, RefusalKind::SessionNotFound),
        other => panic!("{other:?}"),
    }
    // The leader's expiry releases it.
    let expired = log.expire_due();
    assert!(
        matches!(expired, Response::Expired { sessions: 1, .. }),
        "{expired:?}"
    );
    assert!(log.m.session(a).is_none());
    assert_eq!(log.holder("L"), None);
    assert!(log.events.iter().any(|e| matches!(
        &e.kind,
        EventKind::Ended { cause: EndCause::Expired, token: t, .. } if *t == token
    )));
    assert_eq!(log.m.stats().sessions_expired, 1);
}

#[test]
fn expire_rechecks_each_deadline_so_a_session_renewed_meanwhile_survives() {
    let mut log = Log::new();
    let a = log.create(2_000, 0);
    log.grant(a, "L");
    log.advance(2_000);
    // The leader saw a due...
    let due = log.m.due(log.now, 100);
    assert_eq!(due.sessions, vec![a.index]);
    // ...but a renewal committed first. (Renewing at the exact deadline is too late, so
    // the renewal here is stamped just before it.)
    log.now -= 1;
    assert_eq!(log.renew(&[a]), vec![2_000]);
    log.now += 1;
    let r = log.apply(Command::Expire {
        sessions: due.sessions,
        waits: due.waits,
        locks: due.locks,
    });
    assert!(matches!(r, Response::Expired { sessions: 0, .. }), "{r:?}");
    assert!(log.m.session_is_alive(a));
    assert_eq!(log.holder("L").map(|h| h.0), Some(a));
}

#[test]
fn the_first_entry_of_a_new_term_extends_every_session_by_the_grace() {
    let mut log = Log::new();
    let a = log.create(1_000, 0);
    let long = log.create(60_000, 0);
    log.grant(a, "L");
    log.advance(900);
    // A new leader; its first entry is applied 900 ms into a's 1 s TTL.
    log.new_term();
    let b = log.create(10_000, 0);
    assert_eq!(
        log.m.session(a).unwrap().deadline_ms,
        log.now + GRACE,
        "pushed to now + grace"
    );
    assert!(
        log.m.session(long).unwrap().deadline_ms > log.now + GRACE,
        "a longer deadline is never shortened"
    );
    // Past a's old deadline but within the grace: the expiry finds nothing due.
    log.advance(GRACE - 1);
    assert!(log.m.due(log.now, 10).sessions.is_empty());
    assert!(matches!(
        log.acquire(b, "L", 0),
        AcquireOutcome::NotAcquired { .. }
    ));
    log.advance(1);
    assert_eq!(log.m.due(log.now, 10).sessions, vec![a.index]);
    // Later entries of the same term do not extend again.
    log.renew(&[b]);
    assert_eq!(log.m.due(log.now, 10).sessions, vec![a.index]);
}

#[test]
fn promote_revives_a_session_past_its_deadline_and_lets_it_take_its_turn() {
    let mut log = Log::new();
    let holder = log.create(10_000, 0);
    let waiter = log.create(1_000, 0);
    let t = log.grant(holder, "L");
    assert!(matches!(
        log.acquire(waiter, "L", 60_000),
        AcquireOutcome::Waiting { .. }
    ));
    log.advance(1_500);
    // The waiter is past its deadline (not yet expired): a release passes it over.
    assert!(matches!(
        log.release(holder, "L", t),
        crate::machine::ReleaseOutcome::Released { next_holder: None }
    ));
    // A new term revives it, and it is first in line for the free lock.
    log.new_term();
    log.renew(&[holder]);
    assert_eq!(log.holder("L").map(|h| h.0), Some(waiter));
}

#[test]
fn closing_a_session_releases_everything_in_one_entry_without_lock_delay() {
    let mut log = Log::new();
    let a = log.create(10_000, 30_000);
    let b = log.create(10_000, 0);
    log.grant(a, "L1");
    log.grant(a, "L2");
    let tb = log.grant(b, "L3");
    assert!(matches!(
        log.acquire(a, "L3", 10_000),
        AcquireOutcome::Waiting { .. }
    ));
    assert!(matches!(
        log.acquire(b, "L1", 10_000),
        AcquireOutcome::Waiting { .. }
    ));
    let close_index = log.index + 1;
    match log.apply(Command::CloseSession { session: a }) {
        Response::Closed { released } => assert_eq!(released, vec!["L1", "L2"]),
        other => panic!("{other:?}"),
    }
    // b's wait was granted by the close itself: token = the close's index, no delay.
    assert_eq!(log.holder("L1"), Some((b, close_index)));
    assert_eq!(log.holder("L3"), Some((b, tb)));
    assert!(
        log.m.lock("L3").unwrap().waiters.is_empty(),
        "a's wait is gone"
    );
    assert!(log.m.session(a).is_none());
    match log.apply(Command::CloseSession { session: a }) {
        Response::Refused(r) => assert_eq!(r.kind, RefusalKind::SessionNotFound),
        other => panic!("{other:?}"),
    }
    assert_eq!(log.m.stats().sessions_closed, 1);
}

#[test]
fn a_session_limit_is_enforced_at_apply() {
    let mut log = Log::new();
    log.max_sessions = 2;
    log.create(10_000, 0);
    log.create(10_000, 0);
    let r = log.apply(Command::CreateSession {
        nonce: 1,
        ttl_ms: 10_000,
        lock_delay_ms: 0,
        client: String::new(),
        max_sessions: 2,
    });
    assert!(
        matches!(r, Response::Refused(ref f) if f.kind == RefusalKind::TooManySessions),
        "{r:?}"
    );
}

#[test]
fn a_session_id_with_the_wrong_nonce_is_not_the_session() {
    let mut log = Log::new();
    let a = log.create(10_000, 0);
    let forged = crate::machine::SessionId {
        index: a.index,
        nonce: a.nonce ^ 1,
    };
    assert_eq!(log.renew(&[forged]), vec![0]);
    let rid = log.request_id();
    assert!(matches!(
        log.acquire_with(forged, "L", 0, 0, &rid),
        Response::Refused(ref r) if r.kind == RefusalKind::SessionNotFound
    ));
    assert!(log.m.session(forged).is_none());
}
