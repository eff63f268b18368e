//! Bounds on what a leader holds for a slow state machine: committed entries are handed
//! out only while fewer than `max_pending_apply_batches` batches are unreported (commit
//! goes on regardless), and proposals are refused with `Overloaded` once
//! `max_unapplied_bytes` worth of them wait for the state machine. A single-node cluster,
//! so that everything commits as soon as it is durable and only applying lags.

use bytes::Bytes;

use super::harness::config;
use crate::config::Config;
use crate::core::{InitialState, RaftCore, ENTRY_OVERHEAD};
use crate::error::{Error, OverloadReason};
use crate::rand::SeededRand;
use crate::types::{Entry, Index, Role};

/// A single-node core with `tune` applied, elected leader (its no-op is at index 1 and
/// handed out in the first batch, which is returned unreported).
fn leader(tune: impl Fn(&mut Config)) -> (RaftCore, Vec<Vec<Entry>>) {
    let mut c = config(1, 1);
    tune(&mut c);
    let mut core = RaftCore::new(c, InitialState::default(), Box::new(SeededRand::new(7)))
        .expect("valid config");
    core.set_now(std::time::Duration::ZERO);
    let mut handed = Vec::new();
    for _ in 0..100 {
        if core.role() == Role::Leader {
            break;
        }
        core.tick();
        handed.extend(drive(&mut core));
    }
    assert_eq!(core.role(), Role::Leader);
    handed.extend(drive(&mut core));
    (core, handed)
}

/// Drains every `Ready`, making its write durable at once; returns the batches of
/// committed entries handed out, without reporting them applied.
fn drive(core: &mut RaftCore) -> Vec<Vec<Entry>> {
    let mut batches = Vec::new();
    while core.has_ready() {
        let rd = core.ready();
        if let Some(w) = rd.write {
            core.on_persisted(w.seq);
        }
        if !rd.committed_entries.is_empty() {
            batches.push(rd.committed_entries);
        }
    }
    batches
}

fn last(batch: &[Entry]) -> Index {
    batch.last().map_or(0, |e| e.index)
}

fn ten_bytes(k: usize) -> Bytes {
    Bytes::from(format!("command{k:03}"))
}

/// With batches of 2 and at most 2 unreported, a leader that committed eleven entries
/// hands out four of them; each report frees one batch, and in the end every entry is
/// handed out once, in order.
#[test]
fn committed_entries_wait_while_max_pending_apply_batches_are_unreported() {
    let (mut core, mut handed) = leader(|c| {
        c.tuning.max_apply_batch_size = 2;
        c.tuning.max_pending_apply_batches = 2;
    });
    for k in 0..10 {
        core.propose(ten_bytes(k)).unwrap();
    }
    handed.extend(drive(&mut core));
    assert_eq!(
        core.commit_index(),
        11,
        "commit does not wait for the applier"
    );
    let sizes: Vec<usize> = handed.iter().map(Vec::len).collect();
    assert_eq!(
        sizes,
        vec![1, 2],
        "the no-op, then one full batch: two batches"
    );
    assert_eq!(core.pending_apply_batches(), 2);
    assert!(!core.has_ready(), "nothing more to hand out until a report");

    let mut all: Vec<Entry> = Vec::new();
    let mut reported = 0;
    while reported < handed.len() {
        let batch = handed[reported].clone();
        core.on_applied(last(&batch));
        all.extend(batch);
        reported += 1;
        let more = drive(&mut core);
        assert!(more.len() <= 1, "one report frees one batch: {more:?}");
        handed.extend(more);
        assert!(core.pending_apply_batches() <= 2);
    }
    let indices: Vec<Index> = all.iter().map(|e| e.index).collect();
    assert_eq!(indices, (1..=11).collect::<Vec<_>>());
    assert_eq!(core.applied_index(), 11);
    assert_eq!(core.pending_apply_batches(), 0);
}

/// With room for two 10-byte proposals (each counts `ENTRY_OVERHEAD` on top), the third
/// is refused with `Overloaded(UnappliedBytes)` although both committed at once: the
/// state machine, not the followers, is behind. Once they are reported applied the next
/// proposal is accepted.
#[test]
fn unapplied_bytes_cap_refuses_until_the_state_machine_catches_up() {
    let cost = 10 + ENTRY_OVERHEAD;
    let limit = 2 * cost + 5;
    let (mut core, handed) = leader(|c| {
        c.tuning.max_proposal_bytes = 10;
        c.tuning.max_unapplied_bytes = Some(limit);
    });
    for batch in &handed {
        core.on_applied(last(batch));
    }
    core.propose(ten_bytes(1)).unwrap();
    core.propose(ten_bytes(2)).unwrap();
    let handed = drive(&mut core);
    assert_eq!(core.commit_index(), 3);
    assert_eq!(core.uncommitted_bytes(), 0, "both committed");
    assert_eq!(core.unapplied_bytes(), 2 * cost);
    let before = core.last_index();
    let r = core.propose(ten_bytes(3));
    match r {
        Err(Error::Overloaded {
            reason:
                OverloadReason::UnappliedBytes {
                    unapplied,
                    size,
                    limit: l,
                },
        }) => assert_eq!((unapplied, size, l), (2 * cost, cost, limit)),
        other => panic!("expected Overloaded(UnappliedBytes), got {other:?}"),
    }
    assert_eq!(core.last_index(), before, "nothing appended");

    for batch in &handed {
        core.on_applied(last(batch));
    }
    assert_eq!(core.unapplied_bytes(), 0);
    core.propose(ten_bytes(3))
        .expect("accepted once the state machine caught up");
}
