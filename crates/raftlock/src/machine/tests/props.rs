//! Property tests over random logs: determinism (the same log gives the same state and the
//! same snapshot bytes, also through a snapshot taken anywhere), mutual exclusion,
//! strictly increasing tokens, and sessions that end only by expiry or close.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::harness::Log;
use crate::machine::{Command, EventKind, LockMachine, Response, SessionId};

#[derive(Clone, Debug)]
enum Op {
    Advance(u64),
    NewTerm,
    Create {
        ttl: u64,
        delay: u64,
    },
    Renew(usize),
    Close(usize),
    Acquire {
        s: usize,
        lock: u8,
        wait: u64,
        priority: i32,
        rid: u8,
    },
    Release {
        s: usize,
        lock: u8,
        stale: bool,
        rid: u8,
    },
    Cancel {
        s: usize,
        lock: u8,
        rid: u8,
    },
    ExpireDue,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (1u64..2_500).prop_map(Op::Advance),
        1 => Just(Op::NewTerm),
        2 => (1_000u64..4_000, prop_oneof![Just(0u64), 1u64..3_000])
            .prop_map(|(ttl, delay)| Op::Create { ttl, delay }),
        3 => (0usize..8).prop_map(Op::Renew),
        1 => (0usize..8).prop_map(Op::Close),
        6 => (0usize..8, 0u8..3, prop_oneof![Just(0u64), 1u64..5_000], -1i32..2, 0u8..6)
            .prop_map(|(s, lock, wait, priority, rid)| Op::Acquire { s, lock, wait, priority, rid }),
        4 => (0usize..8, 0u8..3, any::<bool>(), 0u8..6)
            .prop_map(|(s, lock, stale, rid)| Op::Release { s, lock, stale, rid }),
        1 => (0usize..8, 0u8..3, 0u8..6).prop_map(|(s, lock, rid)| Op::Cancel { s, lock, rid }),
        3 => Just(Op::ExpireDue),
    ]
}

/// Runs `ops`, checking after every entry that no lock has two holders and that
/// sessions vanish only by expiry or close. Returns the log.
fn run(ops: &[Op]) -> Log {
    let mut log = Log::new();
    let mut sessions: Vec<SessionId> = Vec::new();
    let pick = |sessions: &[SessionId], i: usize| {
        if sessions.is_empty() {
            SessionId { index: 1, nonce: 0 }
        } else {
            sessions[i % sessions.len()]
        }
    };
    for op in ops {
        let before: BTreeSet<u64> = sessions
            .iter()
            .filter(|s| log.m.session(**s).is_some())
            .map(|s| s.index)
            .collect();
        let ends_sessions = matches!(op, Op::Close(_) | Op::ExpireDue);
        match op {
            Op::Advance(ms) => {
                log.advance(*ms);
                continue;
            }
            Op::NewTerm => {
                log.new_term();
                continue;
            }
            Op::Create { ttl, delay } => {
                let r = log.apply(Command::CreateSession {
                    nonce: 7,
                    ttl_ms: *ttl,
                    lock_delay_ms: *delay,
                    client: String::new(),
                    max_sessions: 6,
                });
                if let Response::Created { session, .. } = r {
                    sessions.push(session);
                }
            }
            Op::Renew(i) => {
                log.renew(&[pick(&sessions, *i)]);
            }
            Op::Close(i) => {
                log.apply(Command::CloseSession {
                    session: pick(&sessions, *i),
                });
            }
            Op::Acquire {
                s,
                lock,
                wait,
                priority,
                rid,
            } => {
                let session = pick(&sessions, *s);
                log.acquire_with(
                    session,
                    &format!("L{lock}"),
                    *wait,
                    *priority,
                    &format!("r{rid}"),
                );
            }
            Op::Release {
                s,
                lock,
                stale,
                rid,
            } => {
                let name = format!("L{lock}");
                let session = pick(&sessions, *s);
                let token = log.holder(&name).map_or(1, |(_, t)| t) - u64::from(*stale);
                log.release_with(session, &name, token, &format!("r{rid}"));
            }
            Op::Cancel { s, lock, rid } => {
                log.apply(Command::CancelWait {
                    session: pick(&sessions, *s),
                    lock: format!("L{lock}"),
                    request_id: format!("r{rid}"),
                });
            }
            Op::ExpireDue => {
                log.expire_due();
            }
        }
        if !ends_sessions {
            for s in &before {
                assert!(
                    log.m.sessions.contains_key(s),
                    "session {s} vanished without an expiry or close ({op:?})"
                );
            }
        }
    }
    log
}

/// Checks the grant history: per lock, one holder at a time, tokens strictly increasing
/// and equal to the granting entry's index.
fn check_history(log: &Log) {
    let mut holder: BTreeMap<&str, (SessionId, u64)> = BTreeMap::new();
    let mut last_token: BTreeMap<&str, u64> = BTreeMap::new();
    for e in &log.events {
        match &e.kind {
            EventKind::Granted {
                lock,
                session,
                token,
                ..
            } => {
                assert_eq!(*token, e.index);
                assert!(
                    !holder.contains_key(lock.as_str()),
                    "{lock} granted to {session} while held by {:?}",
                    holder[lock.as_str()]
                );
                let last = last_token.insert(lock, *token).unwrap_or(0);
                assert!(*token > last, "{lock}: token {token} after {last}");
                holder.insert(lock, (*session, *token));
            }
            EventKind::Ended {
                lock,
                session,
                token,
                ..
            } => {
                assert_eq!(holder.remove(lock.as_str()), Some((*session, *token)));
            }
            EventKind::WaitEnded { .. } => {}
        }
    }
    for (lock, (session, token)) in holder {
        assert_eq!(log.holder(lock), Some((session, token)));
    }
}

fn replay(entries: &[(u64, u64, Vec<u8>)], into: &mut LockMachine) {
    for (index, term, bytes) in entries {
        into.apply_bytes(*index, *term, bytes);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn the_same_log_gives_the_same_state_and_snapshot_bytes(
        ops in prop::collection::vec(op(), 1..120),
        cut in 0usize..1000,
    ) {
        let log = run(&ops);
        check_history(&log);
        // A second replica applies the same entries from scratch.
        let mut other = LockMachine::new();
        replay(&log.entries, &mut other);
        other.take_events();
        prop_assert_eq!(&other, &log.m);
        prop_assert_eq!(other.snapshot(), log.m.snapshot());
        // A third starts from a snapshot taken anywhere in the log.
        let cut = if log.entries.is_empty() { 0 } else { cut % log.entries.len() };
        let mut prefix = LockMachine::new();
        replay(&log.entries[..cut], &mut prefix);
        let at = prefix.applied();
        let mut third = LockMachine::restore(&prefix.snapshot(), at).unwrap();
        third.check_invariants();
        prop_assert_eq!(third.snapshot(), prefix.snapshot());
        replay(&log.entries[cut..], &mut third);
        prop_assert_eq!(third.snapshot(), log.m.snapshot());
        // Equal apart from events not yet taken.
        let mut expected = log.m.clone();
        expected.take_events();
        third.take_events();
        prop_assert_eq!(third, expected);
    }
}

#[test]
fn a_snapshot_with_contradicting_records_is_refused() {
    use prost::Message;
    let mut log = Log::new();
    let a = log.create(10_000, 0);
    log.grant(a, "L");
    let mut snap = crate::proto::log::Snapshot::decode(log.m.snapshot().as_slice()).unwrap();
    snap.sessions.clear();
    let err = LockMachine::restore(&snap.encode_to_vec(), log.index).unwrap_err();
    assert!(err.to_string().contains("unknown session"), "{err}");
    let mut snap = crate::proto::log::Snapshot::decode(log.m.snapshot().as_slice()).unwrap();
    snap.version = 9;
    assert!(LockMachine::restore(&snap.encode_to_vec(), log.index).is_err());
    assert!(LockMachine::restore(b"garbage", 1).is_err());
}
