use std::collections::HashMap;
use std::time::Instant;

use super::*;

// ---------------------------------------------------------------------------------------
// History builders.

fn op(client: u64, key: &str, kv: KvOp, invoke: u64, complete: u64, result: KvResult) -> Operation {
    Operation {
        client,
        key: key.to_owned(),
        op: kv,
        invoke,
        complete,
        outcome: KvOutcome::Ok(result),
    }
}

fn put(client: u64, key: &str, value: &str, invoke: u64, complete: u64) -> Operation {
    let kv = KvOp::Put {
        value: value.to_owned(),
    };
    op(client, key, kv, invoke, complete, KvResult::Done)
}

fn get(client: u64, key: &str, seen: Option<&str>, invoke: u64, complete: u64) -> Operation {
    let result = KvResult::Value(seen.map(str::to_owned));
    op(client, key, KvOp::Get, invoke, complete, result)
}

fn cas_op(from: Option<&str>, to: &str) -> KvOp {
    KvOp::Cas {
        from: from.map(str::to_owned),
        to: to.to_owned(),
    }
}

fn cas_ok(client: u64, key: &str, from: Option<&str>, to: &str, i: u64, c: u64) -> Operation {
    op(client, key, cas_op(from, to), i, c, KvResult::CasOk)
}

fn cas_failed(
    client: u64,
    key: &str,
    (from, to): (Option<&str>, &str),
    current: Option<&str>,
    i: u64,
    c: u64,
) -> Operation {
    let result = KvResult::CasFailed {
        current: current.map(str::to_owned),
    };
    op(client, key, cas_op(from, to), i, c, result)
}

fn append(client: u64, key: &str, suffix: &str, invoke: u64, complete: u64) -> Operation {
    let kv = KvOp::Append {
        suffix: suffix.to_owned(),
    };
    op(client, key, kv, invoke, complete, KvResult::Done)
}

fn delete(client: u64, key: &str, invoke: u64, complete: u64) -> Operation {
    op(client, key, KvOp::Delete, invoke, complete, KvResult::Done)
}

/// Makes an operation uncertain (its completion time becomes meaningless).
fn uncertain(mut o: Operation) -> Operation {
    o.outcome = KvOutcome::Uncertain;
    o.complete = 0;
    o
}

fn run(history: &[Operation]) -> CheckResult {
    check(history, &CheckOptions::default())
}

#[track_caller]
fn assert_linearizable(history: &[Operation]) {
    let result = run(history);
    assert_eq!(result, CheckResult::Linearizable, "history: {history:#?}");
}

/// Asserts a violation on `key` and returns its explanation.
#[track_caller]
fn assert_violation(history: &[Operation], key: &str) -> String {
    match run(history) {
        CheckResult::Violation {
            key: k,
            explanation,
        } => {
            assert_eq!(k, key, "{explanation}");
            assert!(explanation.contains(&format!("{key:?}")), "{explanation}");
            explanation
        }
        other => panic!("expected a violation on {key:?}, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// Basics.

#[test]
fn empty_history_is_linearizable() {
    assert_linearizable(&[]);
}

#[test]
fn sequential_history_is_linearizable() {
    assert_linearizable(&[
        get(1, "x", None, 0, 1),
        put(1, "x", "a", 2, 3),
        get(2, "x", Some("a"), 4, 5),
        put(2, "x", "b", 6, 7),
        get(1, "x", Some("b"), 8, 9),
        delete(1, "x", 10, 11),
        get(2, "x", None, 12, 13),
    ]);
}

#[test]
fn sequential_history_with_wrong_read_is_a_violation() {
    assert_violation(
        &[
            put(1, "x", "a", 0, 1),
            put(1, "x", "b", 2, 3),
            get(1, "x", Some("a"), 4, 5),
        ],
        "x",
    );
}

#[test]
fn concurrent_put_and_get_may_see_either_value() {
    let before = put(1, "x", "old", 0, 1);
    for seen in ["old", "new"] {
        assert_linearizable(&[
            before.clone(),
            put(1, "x", "new", 10, 20),
            get(2, "x", Some(seen), 12, 18),
        ]);
    }
    // ... but not a value from nowhere, nor absent (the key was written before).
    assert_violation(
        &[
            before.clone(),
            put(1, "x", "new", 10, 20),
            get(2, "x", None, 12, 18),
        ],
        "x",
    );
}

#[test]
fn concurrent_reads_must_agree_on_one_order() {
    // Two puts overlap; one reader sees new-then-old, which no order allows...
    let puts = [put(1, "x", "a", 0, 100), put(2, "x", "b", 0, 100)];
    let mut h = puts.to_vec();
    h.push(get(3, "x", Some("a"), 10, 20));
    h.push(get(3, "x", Some("b"), 30, 40));
    assert_linearizable(&h);
    // ...while a second reader then seeing "a" again after "b" is impossible.
    h.push(get(4, "x", Some("a"), 50, 60));
    assert_violation(&h, "x");
}

#[test]
fn equal_timestamps_count_as_overlapping() {
    // The put completes at 10 and the get is invoked at 10: concurrent, so the get may
    // still see the old value.
    assert_linearizable(&[
        put(1, "x", "old", 0, 1),
        put(1, "x", "new", 5, 10),
        get(2, "x", Some("old"), 10, 12),
    ]);
    // One tick later it is a stale read.
    assert_violation(
        &[
            put(1, "x", "old", 0, 1),
            put(1, "x", "new", 5, 10),
            get(2, "x", Some("old"), 11, 12),
        ],
        "x",
    );
}

#[test]
fn stale_read_after_write_completed_is_a_violation() {
    // v1 is written; then v2 is written and acknowledged (by the new leader); a read
    // served afterwards by the deposed leader returns v1.
    let explanation = assert_violation(
        &[
            put(1, "k", "v1", 0, 10),
            put(1, "k", "v2", 20, 30),
            get(2, "k", Some("v1"), 40, 50),
        ],
        "k",
    );
    assert!(explanation.contains("Get"), "{explanation}");
    assert!(explanation.contains("\"v1\""), "{explanation}");
}

#[test]
fn lost_acknowledged_write_is_a_violation() {
    assert_violation(
        &[
            put(1, "x", "1", 0, 10),
            get(2, "x", None, 20, 30),
            get(3, "x", None, 40, 50),
        ],
        "x",
    );
}

#[test]
fn read_of_value_never_written_is_a_violation() {
    let explanation = assert_violation(
        &[
            put(1, "x", "a", 0, 10),
            put(2, "x", "b", 5, 15),
            get(3, "x", Some("ghost"), 0, 20),
        ],
        "x",
    );
    assert!(explanation.contains("ghost"), "{explanation}");
}

// ---------------------------------------------------------------------------------------
// Cas, Append, Delete.

#[test]
fn cas_succeeds_only_when_the_value_matches() {
    assert_linearizable(&[
        cas_ok(1, "x", None, "a", 0, 1),
        cas_failed(1, "x", (None, "b"), Some("a"), 2, 3),
        cas_ok(1, "x", Some("a"), "c", 4, 5),
        cas_failed(1, "x", (Some("a"), "d"), Some("c"), 6, 7),
        get(1, "x", Some("c"), 8, 9),
    ]);
    // Succeeding against the wrong value.
    assert_violation(
        &[put(1, "x", "a", 0, 1), cas_ok(1, "x", Some("b"), "c", 2, 3)],
        "x",
    );
    // Succeeding on an absent key when expecting a value.
    assert_violation(&[cas_ok(1, "x", Some("a"), "c", 0, 1)], "x");
}

#[test]
fn cas_failure_must_report_a_differing_current_value() {
    // Failing although the value matched.
    assert_violation(
        &[
            put(1, "x", "a", 0, 1),
            cas_failed(1, "x", (Some("a"), "b"), Some("a"), 2, 3),
        ],
        "x",
    );
    // Failing and reporting a wrong current value.
    assert_violation(
        &[
            put(1, "x", "a", 0, 1),
            cas_failed(1, "x", (Some("z"), "b"), Some("q"), 2, 3),
        ],
        "x",
    );
    // A failed Cas writes nothing.
    assert_violation(
        &[
            put(1, "x", "a", 0, 1),
            cas_failed(1, "x", (Some("z"), "b"), Some("a"), 2, 3),
            get(1, "x", Some("b"), 4, 5),
        ],
        "x",
    );
}

#[test]
fn concurrent_cas_only_one_wins() {
    let mut h = vec![
        put(1, "x", "0", 0, 1),
        cas_ok(1, "x", Some("0"), "a", 10, 20),
        cas_failed(2, "x", (Some("0"), "b"), Some("a"), 10, 20),
    ];
    assert_linearizable(&h);
    h[2] = cas_ok(2, "x", Some("0"), "b", 10, 20);
    assert_violation(&h, "x");
}

#[test]
fn append_treats_absent_as_empty_and_concatenates() {
    assert_linearizable(&[
        append(1, "x", "a", 0, 1),
        get(1, "x", Some("a"), 2, 3),
        append(1, "x", "b", 4, 5),
        get(1, "x", Some("ab"), 6, 7),
        delete(1, "x", 8, 9),
        append(1, "x", "c", 10, 11),
        get(1, "x", Some("c"), 12, 13),
    ]);
    // Concurrent appends land in some order, which reads must agree on.
    let mut h = vec![
        append(1, "x", "a", 0, 10),
        append(2, "x", "b", 0, 10),
        get(3, "x", Some("ba"), 20, 30),
    ];
    assert_linearizable(&h);
    h.push(get(3, "x", Some("ab"), 40, 50));
    assert_violation(&h, "x");
    // An acknowledged append cannot be lost.
    assert_violation(
        &[
            put(1, "x", "a", 0, 1),
            append(1, "x", "b", 2, 3),
            get(1, "x", Some("a"), 4, 5),
        ],
        "x",
    );
}

#[test]
fn delete_removes_the_key() {
    assert_linearizable(&[
        put(1, "x", "a", 0, 1),
        delete(1, "x", 2, 3),
        get(2, "x", None, 4, 5),
        cas_ok(2, "x", None, "b", 6, 7),
        get(1, "x", Some("b"), 8, 9),
    ]);
    assert_violation(
        &[
            put(1, "x", "a", 0, 1),
            delete(1, "x", 2, 3),
            get(2, "x", Some("a"), 4, 5),
        ],
        "x",
    );
}

// ---------------------------------------------------------------------------------------
// Uncertain operations.

#[test]
fn uncertain_op_may_take_effect() {
    assert_linearizable(&[
        put(1, "x", "old", 0, 1),
        uncertain(put(1, "x", "v", 10, 0)),
        get(2, "x", Some("v"), 20, 30),
        get(2, "x", Some("v"), 40, 50),
    ]);
}

#[test]
fn uncertain_op_may_be_dropped() {
    assert_linearizable(&[
        put(1, "x", "old", 0, 1),
        uncertain(put(1, "x", "v", 10, 0)),
        get(2, "x", Some("old"), 20, 30),
        get(2, "x", Some("old"), 40, 50),
        put(1, "x", "new", 60, 70),
        get(2, "x", Some("new"), 80, 90),
    ]);
}

#[test]
fn uncertain_op_may_take_effect_long_after_the_client_gave_up() {
    // Observed as dropped at first, then it takes effect (e.g. a retransmitted entry is
    // committed late).
    assert_linearizable(&[
        put(1, "x", "old", 0, 1),
        uncertain(put(1, "x", "v", 10, 0)),
        get(2, "x", Some("old"), 1_000, 1_010),
        get(2, "x", Some("v"), 2_000, 2_010),
    ]);
}

#[test]
fn uncertain_op_cannot_take_effect_before_its_invoke() {
    assert_violation(
        &[
            put(1, "x", "old", 0, 1),
            get(2, "x", Some("v"), 5, 8),
            uncertain(put(1, "x", "v", 10, 0)),
        ],
        "x",
    );
}

#[test]
fn uncertain_op_takes_effect_at_most_once() {
    // Seen, then gone again with nothing else writing: impossible.
    assert_violation(
        &[
            put(1, "x", "old", 0, 1),
            uncertain(put(1, "x", "v", 10, 0)),
            get(2, "x", Some("v"), 20, 30),
            get(2, "x", Some("old"), 40, 50),
        ],
        "x",
    );
}

#[test]
fn uncertain_reads_and_late_uncertain_ops_are_ignored() {
    assert_linearizable(&[
        put(1, "x", "a", 0, 1),
        uncertain(get(1, "x", Some("garbage"), 2, 0)),
        get(2, "x", Some("a"), 3, 4),
        uncertain(put(1, "x", "late", 10, 0)),
    ]);
}

#[test]
fn uncertain_cas_swaps_only_on_match() {
    // An uncertain Cas from "a" can explain the read of "b"...
    assert_linearizable(&[
        put(1, "x", "a", 0, 1),
        uncertain(cas_ok(1, "x", Some("a"), "b", 2, 0)),
        get(2, "x", Some("b"), 10, 11),
    ]);
    // ...but not when the value no longer matches by the time it may take effect.
    assert_violation(
        &[
            put(1, "x", "c", 0, 1),
            uncertain(cas_ok(1, "x", Some("a"), "b", 2, 0)),
            get(2, "x", Some("b"), 10, 11),
        ],
        "x",
    );
}

#[test]
fn uncertain_appends_may_land_in_any_subset() {
    let mut h = vec![
        uncertain(append(1, "x", "a", 0, 0)),
        uncertain(append(2, "x", "b", 0, 0)),
        uncertain(append(3, "x", "c", 0, 0)),
        append(4, "x", "d", 0, 10),
    ];
    for seen in ["d", "cd", "adb", "bcad", "cbda"] {
        h.push(get(5, "x", Some(seen), 20, 30));
        assert_linearizable(&h);
        h.pop();
    }
    h.push(get(5, "x", Some("aad"), 20, 30));
    assert_violation(&h, "x");
}

// ---------------------------------------------------------------------------------------
// Partitioning, budget, malformed input.

#[test]
fn violation_on_one_key_among_many_is_found_and_named() {
    let mut h = Vec::new();
    for k in 0..20u64 {
        let key = format!("key-{k:02}");
        let t = k * 100;
        h.push(put(k, &key, "a", t, t + 10));
        h.push(put(k + 1, &key, "b", t + 5, t + 15));
        h.push(get(k + 2, &key, Some("a"), t + 12, t + 20));
        h.push(get(k + 2, &key, Some("b"), t + 30, t + 40));
    }
    assert_linearizable(&h);
    // Key 13 reads "a" again after "b": stale.
    h.push(get(99, "key-13", Some("a"), 2_000, 2_010));
    let explanation = assert_violation(&h, "key-13");
    assert!(!explanation.contains("key-12"), "{explanation}");
}

#[test]
fn budget_exceeded_reports_unknown_never_linearizable() {
    // Twelve concurrent puts, then a read of the value of one of them.
    let mut h: Vec<Operation> = (0..12)
        .map(|c| put(c, "x", &format!("v{c}"), 0, 100))
        .collect();
    h.push(get(99, "x", Some("v0"), 200, 210));
    let tiny = CheckOptions {
        max_states_per_key: 5,
    };
    match check(&h, &tiny) {
        CheckResult::Unknown { key, reason } => {
            assert_eq!(key, "x");
            assert!(reason.contains("budget"), "{reason}");
        }
        other => panic!("expected Unknown, got {other:?}"),
    }
    assert_eq!(run(&h), CheckResult::Linearizable);

    // The same with an impossible read: exhaustive search needs many states.
    h.pop();
    h.push(get(99, "x", Some("nope"), 200, 210));
    let small = CheckOptions {
        max_states_per_key: 1_000,
    };
    assert!(matches!(check(&h, &small), CheckResult::Unknown { .. }));
    assert_violation(&h, "x");
}

#[test]
fn violation_elsewhere_wins_over_unknown() {
    let mut h: Vec<Operation> = (0..12)
        .map(|c| put(c, "a", &format!("v{c}"), 0, 100))
        .collect();
    h.push(get(99, "a", Some("v0"), 200, 210));
    h.push(get(1, "b", Some("ghost"), 0, 1));
    let tiny = CheckOptions {
        max_states_per_key: 5,
    };
    assert!(matches!(
        check(&h, &tiny),
        CheckResult::Violation { key, .. } if key == "b"
    ));
}

#[test]
fn malformed_history_reports_unknown() {
    let wrong_result = op(1, "x", KvOp::Get, 0, 1, KvResult::Done);
    assert!(matches!(
        run(&[wrong_result]),
        CheckResult::Unknown { key, reason } if key == "x" && reason.contains("malformed")
    ));
    let backwards = put(1, "y", "a", 10, 5);
    assert!(matches!(
        run(&[backwards]),
        CheckResult::Unknown { key, reason } if key == "y" && reason.contains("malformed")
    ));
}

// ---------------------------------------------------------------------------------------
// Randomized tests.

/// SplitMix64.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn percent(&mut self, p: u64) -> bool {
        self.below(100) < p
    }
}

/// Applies `kv` to a real register, returning the result.
fn apply_real(store: &mut HashMap<String, String>, key: &str, kv: &KvOp) -> KvResult {
    match kv {
        KvOp::Put { value } => {
            store.insert(key.to_owned(), value.clone());
            KvResult::Done
        }
        KvOp::Get => KvResult::Value(store.get(key).cloned()),
        KvOp::Cas { from, to } => {
            let current = store.get(key).cloned();
            if current == *from {
                store.insert(key.to_owned(), to.clone());
                KvResult::CasOk
            } else {
                KvResult::CasFailed { current }
            }
        }
        KvOp::Append { suffix } => {
            store.entry(key.to_owned()).or_default().push_str(suffix);
            KvResult::Done
        }
        KvOp::Delete => {
            store.remove(key);
            KvResult::Done
        }
    }
}

/// Generates a linearizable history: clients issue operations back to back, each takes
/// effect at a random point of its interval (uncertain ones at a random point after their
/// invocation, possibly after the client gave up, or never) and results come from a real
/// register applied in that order.
fn generate(
    rng: &mut Rng,
    n_ops: usize,
    n_clients: u64,
    n_keys: u64,
    uncertain_pct: u64,
) -> Vec<Operation> {
    let mut client_free = vec![0u64; n_clients as usize];
    let mut history = Vec::with_capacity(n_ops);
    let mut points: Vec<(u64, usize)> = Vec::new();
    let mut written: Vec<Vec<String>> = vec![Vec::new(); n_keys as usize];
    for seq in 0..n_ops {
        // The client that is free first issues the next operation.
        let (c, &free) = client_free
            .iter()
            .enumerate()
            .min_by_key(|&(i, &t)| (t, i))
            .unwrap();
        let k = rng.below(n_keys) as usize;
        let key = format!("k{k}");
        let value = format!("v{seq}");
        let kv = match rng.below(100) {
            0..=39 => KvOp::Get,
            40..=64 => KvOp::Put { value },
            65..=74 => KvOp::Append {
                suffix: format!("+{seq}"),
            },
            75..=89 => {
                let w = &written[k];
                let from = match w.len() {
                    0 => None,
                    n if rng.percent(80) => {
                        Some(w[n - 1 - rng.below(n.min(3) as u64) as usize].clone())
                    }
                    _ => None,
                };
                KvOp::Cas { from, to: value }
            }
            _ => KvOp::Delete,
        };
        if let KvOp::Put { value } | KvOp::Cas { to: value, .. } = &kv {
            written[k].push(value.clone());
        }
        let invoke = free + rng.below(4);
        let complete = invoke + rng.below(25);
        client_free[c] = complete + 1;
        let is_uncertain = rng.percent(uncertain_pct);
        if !is_uncertain {
            points.push((invoke + rng.below(complete - invoke + 1), seq));
        } else if rng.percent(50) {
            points.push((invoke + rng.below(complete - invoke + 60), seq));
        }
        history.push(Operation {
            client: c as u64,
            key,
            op: kv,
            invoke,
            complete,
            outcome: if is_uncertain {
                KvOutcome::Uncertain
            } else {
                KvOutcome::Ok(KvResult::Done)
            },
        });
    }
    points.sort_unstable();
    let mut store = HashMap::new();
    for (_, seq) in points {
        let o = &mut history[seq];
        let result = apply_real(&mut store, &o.key, &o.op);
        if let KvOutcome::Ok(r) = &mut o.outcome {
            *r = result;
        }
    }
    history
}

#[test]
fn large_random_history_is_linearizable_and_a_corrupted_read_is_caught() {
    let mut rng = Rng(0x5eed);
    let mut history = generate(&mut rng, 3_000, 5, 6, 3);
    let uncertain_count = history
        .iter()
        .filter(|o| o.outcome == KvOutcome::Uncertain)
        .count();
    assert!(uncertain_count > 30, "{uncertain_count}");

    let started = Instant::now();
    let result = run(&history);
    let elapsed = started.elapsed();
    eprintln!(
        "large random history: {} ops, {uncertain_count} uncertain, checked in {elapsed:?}",
        history.len()
    );
    assert_eq!(result, CheckResult::Linearizable);

    // Corrupt one read (in the middle of the history) to a value never written.
    let victim = history
        .iter()
        .enumerate()
        .filter(|(_, o)| matches!(o.outcome, KvOutcome::Ok(KvResult::Value(_))))
        .map(|(i, _)| i)
        .nth(600)
        .unwrap();
    history[victim].outcome = KvOutcome::Ok(KvResult::Value(Some("never-written".into())));
    let key = history[victim].key.clone();
    let started = Instant::now();
    let explanation = assert_violation(&history, &key);
    eprintln!(
        "corrupted history: violation found in {:?}",
        started.elapsed()
    );
    assert!(explanation.contains("never-written"), "{explanation}");
}

#[test]
fn five_thousand_ops_over_many_keys_check_quickly() {
    for (seed, n_keys) in [(1u64, 10u64), (2, 25), (3, 50)] {
        let mut rng = Rng(seed);
        let history = generate(&mut rng, 5_000, 4, n_keys, 5);
        let started = Instant::now();
        assert_eq!(run(&history), CheckResult::Linearizable);
        eprintln!("5000 ops / {n_keys} keys: {:?}", started.elapsed());
    }
}

#[test]
fn many_concurrent_clients_and_many_uncertain_ops_check_quickly() {
    let mut rng = Rng(7);
    let mut history = generate(&mut rng, 3_000, 10, 3, 30);
    let started = Instant::now();
    assert_eq!(run(&history), CheckResult::Linearizable);
    let elapsed = started.elapsed();
    let victim = history
        .iter()
        .position(|o| o.invoke > 2_000 && matches!(o.outcome, KvOutcome::Ok(KvResult::Value(_))))
        .unwrap();
    history[victim].outcome = KvOutcome::Ok(KvResult::Value(Some("never-written".into())));
    let key = history[victim].key.clone();
    assert_violation(&history, &key);
    eprintln!("3000 ops / 10 clients / 3 keys / 30% uncertain: {elapsed:?}");
}

#[test]
fn retried_uncertain_puts_are_interchangeable() {
    // A client times out and retries the same Put over and over while readers watch;
    // the value shows up once, late.
    let mut h = vec![put(0, "x", "old", 0, 1)];
    for r in 0..200 {
        h.push(uncertain(put(1, "x", "new", 10 + r * 10, 0)));
        h.push(get(2, "x", Some("old"), 12 + r * 10, 14 + r * 10));
    }
    h.push(get(2, "x", Some("new"), 5_000, 5_010));
    let tight = CheckOptions {
        max_states_per_key: 2_000,
    };
    assert_eq!(check(&h, &tight), CheckResult::Linearizable);
    h.push(get(3, "x", Some("old"), 6_000, 6_010));
    assert!(matches!(check(&h, &tight), CheckResult::Violation { .. }));
}

/// Exhaustive reference: tries every order of the operations that respects real time,
/// with every subset of the uncertain ones.
fn brute_force(history: &[Operation]) -> bool {
    fn go(history: &[Operation], placed: &mut [bool], store: &mut HashMap<String, String>) -> bool {
        let open: Vec<usize> = (0..history.len()).filter(|&i| !placed[i]).collect();
        if open
            .iter()
            .all(|&i| history[i].outcome == KvOutcome::Uncertain)
        {
            return true;
        }
        for &i in &open {
            let o = &history[i];
            // Everything that happens before `o` must be placed already.
            let blocked = open.iter().any(|&j| {
                let p = &history[j];
                j != i && matches!(p.outcome, KvOutcome::Ok(_)) && p.complete < o.invoke
            });
            if blocked {
                continue;
            }
            let saved = store.clone();
            let result = apply_real(store, &o.key, &o.op);
            let allowed = match &o.outcome {
                KvOutcome::Ok(r) => *r == result,
                KvOutcome::Uncertain => true,
            };
            if allowed {
                placed[i] = true;
                let found = go(history, placed, store);
                placed[i] = false;
                if found {
                    return true;
                }
            }
            *store = saved;
        }
        false
    }
    go(
        history,
        &mut vec![false; history.len()],
        &mut HashMap::new(),
    )
}

#[test]
fn agrees_with_brute_force_on_small_random_histories() {
    let values = [
        None,
        Some("a"),
        Some("b"),
        Some("ab"),
        Some("ba"),
        Some("aa"),
        Some(""),
    ];
    for (seed, uncertain_pct) in [(42u64, 0u64), (43, 25), (44, 60)] {
        let mut rng = Rng(seed);
        let (mut yes, mut no) = (0, 0);
        for _ in 0..1_000 {
            let n = 2 + rng.below(7) as usize;
            let mut history = Vec::with_capacity(n);
            for _ in 0..n {
                let invoke = rng.below(12);
                let complete = invoke + rng.below(6);
                let v = values[rng.below(values.len() as u64) as usize];
                let w = ["a", "b", ""][rng.below(3) as usize];
                let client = rng.below(4);
                let mut o = match rng.below(7) {
                    0 => put(client, "x", w, invoke, complete),
                    1 | 2 => get(client, "x", v, invoke, complete),
                    3 | 4 => append(client, "x", w, invoke, complete),
                    5 => delete(client, "x", invoke, complete),
                    _ if rng.percent(50) => cas_ok(client, "x", v, w, invoke, complete),
                    _ => {
                        let current = values[rng.below(values.len() as u64) as usize];
                        cas_failed(client, "x", (v, w), current, invoke, complete)
                    }
                };
                if rng.percent(uncertain_pct) {
                    o = uncertain(o);
                }
                history.push(o);
            }
            let expected = brute_force(&history);
            let got = run(&history);
            assert_eq!(got.is_linearizable(), expected, "{got:?} for {history:#?}");
            if expected {
                yes += 1;
            } else {
                assert!(matches!(got, CheckResult::Violation { .. }), "{got:?}");
                no += 1;
            }
        }
        assert!(yes > 100 && no > 100, "seed {seed}: yes {yes}, no {no}");
    }
}
