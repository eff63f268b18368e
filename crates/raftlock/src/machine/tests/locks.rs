//! Locks: exclusive grants, fencing tokens, releases, token checks, free-lock records.

use super::harness::Log;
use crate::machine::{AcquireOutcome, NotAcquired, ReleaseOutcome, SessionId};

#[test]
fn a_grant_token_is_the_index_of_the_granting_entry() {
    let mut log = Log::new();
    let a = log.create(10_000, 0);
    let b = log.create(10_000, 0);
    let t1 = log.grant(a, "L");
    assert_eq!(t1, log.index);
    let view = log.m.lock("L").unwrap();
    let h = view.holder.unwrap();
    assert_eq!((h.session, h.token, h.acquired_ms), (a, t1, log.now));
    assert_eq!(h.expires_ms, log.m.session(a).unwrap().deadline_ms);
    match log.acquire(b, "L", 0) {
        AcquireOutcome::NotAcquired {
            why,
            holder,
            token,
            retry_after_ms,
        } => {
            assert_eq!((why, holder, token), (NotAcquired::Held, Some(a), Some(t1)));
            assert!((10..=1_000).contains(&retry_after_ms));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        log.release(a, "L", t1),
        ReleaseOutcome::Released { next_holder: None }
    );
    let t2 = log.grant(b, "L");
    assert!(t2 > t1);
    assert_eq!(log.m.stats().grants, 2);
    assert_eq!(log.m.stats().releases, 1);
}

#[test]
fn a_holder_that_acquires_again_keeps_its_grant_and_renewals_keep_the_token() {
    let mut log = Log::new();
    let a = log.create(10_000, 0);
    let t = log.grant(a, "L");
    log.advance(1_000);
    log.renew(&[a]);
    assert_eq!(
        log.grant(a, "L"),
        t,
        "re-entrant acquire returns the same token"
    );
    assert_eq!(log.holder("L"), Some((a, t)));
    assert_eq!(log.grant_tokens("L"), vec![t], "no second grant");
}

#[test]
fn tokens_of_one_lock_strictly_increase_through_every_kind_of_handoff() {
    let mut log = Log::new();
    let sessions: Vec<SessionId> = (0..4).map(|_| log.create(2_000, 0)).collect();
    let keeper = log.create(300_000, 0);
    // Hand-off by release to a waiter, by close to a waiter, by expiry to a waiter.
    let t0 = log.grant(sessions[0], "L");
    for s in &sessions[1..] {
        assert!(matches!(
            log.acquire(*s, "L", 300_000),
            AcquireOutcome::Waiting { .. }
        ));
    }
    assert!(matches!(
        log.acquire(keeper, "L", 300_000),
        AcquireOutcome::Waiting { .. }
    ));
    log.release(sessions[0], "L", t0);
    let (h1, _) = log.holder("L").unwrap();
    assert_eq!(h1, sessions[1]);
    log.apply(crate::machine::Command::CloseSession { session: h1 });
    assert_eq!(log.holder("L").unwrap().0, sessions[2]);
    // sessions[2] and [3] stop renewing; keeper renews.
    log.advance(1_500);
    log.renew(&[keeper]);
    log.advance(1_500);
    log.expire_due();
    assert_eq!(log.holder("L").unwrap().0, keeper);
    let tokens = log.grant_tokens("L");
    assert_eq!(tokens.len(), 4, "{tokens:?}");
    assert!(tokens.windows(2).all(|w| w[0] < w[1]), "{tokens:?}");
    assert_eq!(log.holder("L").unwrap().1, *tokens.last().unwrap());
}

#[test]
fn release_needs_the_holding_session_and_its_token() {
    let mut log = Log::new();
    let a = log.create(10_000, 0);
    let b = log.create(10_000, 0);
    let t = log.grant(a, "L");
    assert_eq!(
        log.release(a, "L", t + 1),
        ReleaseOutcome::NotHolder {
            holder: Some(a),
            token: Some(t)
        }
    );
    assert_eq!(
        log.release(b, "L", t),
        ReleaseOutcome::NotHolder {
            holder: Some(a),
            token: Some(t)
        }
    );
    assert_eq!(
        log.release(b, "never-held", 1),
        ReleaseOutcome::NotHolder {
            holder: None,
            token: None
        }
    );
    assert_eq!(log.holder("L"), Some((a, t)), "nothing changed");
}

#[test]
fn token_checks_follow_the_current_grant() {
    let mut log = Log::new();
    let a = log.create(10_000, 0);
    let b = log.create(10_000, 0);
    let t1 = log.grant(a, "L");
    assert!(log.m.check_token("L", t1).valid);
    assert!(!log.m.check_token("L", t1 - 1).valid);
    log.release(a, "L", t1);
    let c = log.m.check_token("L", t1);
    assert!(!c.valid);
    assert_eq!(c.current_token, None);
    let t2 = log.grant(b, "L");
    assert!(!log.m.check_token("L", t1).valid, "an old token is stale");
    assert_eq!(log.m.check_token("L", t1).current_token, Some(t2));
    assert!(!log.m.check_token("nope", 1).valid);
}

#[test]
fn a_free_lock_is_remembered_until_newer_ones_push_it_out() {
    let mut log = Log::new();
    log.m.max_idle_locks = 3;
    let a = log.create(300_000, 0);
    for name in ["l1", "l2", "l3", "l4"] {
        let t = log.grant(a, name);
        assert!(log.m.lock(name).is_some());
        log.release(a, name, t);
        let view = log.m.lock(name).unwrap();
        assert!(view.holder.is_none() && view.waiters.is_empty());
    }
    assert!(
        log.m.lock("l1").is_none(),
        "the longest-free lock was forgotten"
    );
    for name in ["l2", "l3", "l4"] {
        assert!(log.m.lock(name).is_some());
    }
    // Using a free lock takes it off the free list; it is not forgotten meanwhile.
    let t = log.grant(a, "l2");
    for name in ["l5", "l6", "l7"] {
        let t = log.grant(a, name);
        log.release(a, name, t);
    }
    assert_eq!(log.holder("l2"), Some((a, t)));
    assert!(log.m.lock("l3").is_none() && log.m.lock("l4").is_none());
    assert_eq!(log.m.gauges().locks, 4);
}

#[test]
fn listing_pages_through_names_by_prefix() {
    let mut log = Log::new();
    let a = log.create(300_000, 0);
    for name in ["app/a", "app/b", "app/c", "apq", "b"] {
        log.grant(a, name);
    }
    let (page, more) = log.m.list("app/", None, 2);
    assert_eq!(
        page.iter().map(|l| l.name.as_str()).collect::<Vec<_>>(),
        ["app/a", "app/b"]
    );
    assert!(more);
    let (page, more) = log.m.list("app/", Some("app/b"), 2);
    assert_eq!(
        page.iter().map(|l| l.name.as_str()).collect::<Vec<_>>(),
        ["app/c"]
    );
    assert!(!more);
    let (all, _) = log.m.list("", None, 100);
    assert_eq!(all.len(), 5);
    let (none, more) = log.m.list("zzz", None, 10);
    assert!(none.is_empty() && !more);
    // `after` before the prefix starts at the prefix.
    let (page, _) = log.m.list("b", Some("a"), 10);
    assert_eq!(page.len(), 1);
}
