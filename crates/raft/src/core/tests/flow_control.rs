//! Flow control per follower: probing, the in-flight window, catching up, fast
//! backtracking over conflicting terms, duplicate and reordered answers, and the caps on
//! one AppendEntries request.

use super::harness::*;
use crate::core::InitialState;
use crate::message::{AppendEntriesResponse, ConflictHint, Message, MessageBody};
use crate::types::{HardState, ReplicationMode, Role, Term};

fn is_append_to(m: &Message, to: usize) -> bool {
    m.to == id(to) && is_kind(m, "AppendEntries")
}

fn is_append_response_from(m: &Message, from: usize) -> bool {
    m.from == id(from) && is_kind(m, "AppendEntriesResponse")
}

/// AppendEntries sent to `to` after the first `skip` ones, keeping those that carry entries.
fn appends_with_entries_to(c: &Cluster, to: usize, skip: usize) -> Vec<Vec<u64>> {
    c.appends_sent_to(to)
        .into_iter()
        .skip(skip)
        .filter(|a| !a.entries.is_empty())
        .map(|a| a.entries.iter().map(|e| e.index).collect())
        .collect()
}

/// A new leader probes a follower with a single request and sends it nothing else until
/// that request is answered, however many proposals arrive in between.
#[test]
fn probe_sends_one_request_at_a_time_until_answered() {
    let mut c = Cluster::new(3, 11);
    c.expire_election_timeout(1);
    let probe = c.deliver_all_except(|m| is_append_to(m, 2));
    assert_eq!(c.node(1).role(), Role::Leader);
    assert_eq!(probe.len(), 1, "one probe to the follower in Probe mode");
    let MessageBody::AppendEntries(a) = &probe[0].body else {
        unreachable!()
    };
    assert!(a.entries.len() <= 1, "a probe carries at most one entry");
    assert_eq!(c.progress(1, 2).mode, ReplicationMode::Probe);

    for i in 0..5 {
        c.propose(1, &format!("p{i}"));
    }
    let more = c.deliver_all_except(|m| is_append_to(m, 2));
    assert!(
        more.is_empty(),
        "nothing more goes to a follower whose probe is unanswered: {more:?}"
    );
    assert_eq!(c.progress(1, 2).mode, ReplicationMode::Probe);
    assert_eq!(
        c.node(3).last_index(),
        c.node(1).last_index(),
        "the other follower is served"
    );
    assert_eq!(c.node(1).commit_index(), 6, "n1 and n3 commit without n2");

    // The answer to the probe switches the follower to Replicate and the rest follows.
    c.deliver(probe.into_iter().next().unwrap());
    c.deliver_all();
    assert_eq!(c.progress(1, 2).mode, ReplicationMode::Replicate);
    assert_eq!(c.progress(1, 2).match_index, 6);
    assert_eq!(c.log_terms(2), c.log_terms(1));
    assert_eq!(c.applied(2), c.applied(1));
}

/// With a window of 3 requests of one entry each and the follower's answers lost, exactly
/// 3 requests are outstanding and no more are sent; a heartbeat answer frees one slot.
#[test]
fn window_fills_and_pauses_then_heartbeat_response_resumes() {
    let mut c = Cluster::with(
        3,
        12,
        |cfg| {
            cfg.tuning.max_inflight_msgs = 3;
            cfg.options.max_log_entries_per_request = 1;
        },
        |_| InitialState::default(),
    );
    c.elect(1);
    c.deliver_all();
    assert_eq!(c.progress(1, 2).mode, ReplicationMode::Replicate);
    let before = c.appends_sent_to(2).len();
    let lose_acks = |m: &Message| is_append_response_from(m, 2);

    let cmds: Vec<String> = (0..10).map(|i| format!("c{i}")).collect();
    let cmds: Vec<&str> = cmds.iter().map(String::as_str).collect();
    c.try_propose(1, &cmds).unwrap();
    c.deliver_all_except(lose_acks);
    assert_eq!(
        appends_with_entries_to(&c, 2, before),
        vec![vec![2], vec![3], vec![4]]
    );
    let p = c.progress(1, 2);
    assert_eq!((p.inflight, p.next_index, p.match_index), (3, 5, 1));
    assert_eq!(
        c.node(1).commit_index(),
        11,
        "n3 keeps the cluster committing"
    );

    // Neither another proposal nor the commit traffic opens the window.
    c.propose(1, "late");
    c.deliver_all_except(lose_acks);
    assert_eq!(appends_with_entries_to(&c, 2, before).len(), 3);

    // One heartbeat round: the follower's heartbeat answer frees exactly one slot.
    let hb = c.node(1).config().options.heartbeat_tick_count;
    c.tick_n(1, hb);
    c.deliver_all_except(lose_acks);
    assert_eq!(
        appends_with_entries_to(&c, 2, before),
        vec![vec![2], vec![3], vec![4], vec![5]],
        "a heartbeat answer lets exactly one more request out"
    );
    assert_eq!(c.progress(1, 2).inflight, 3);

    // Once answers get through again the follower catches up.
    c.heartbeat_round(1);
    assert_eq!(c.log_terms(2), c.log_terms(1));
    assert_eq!(c.progress(1, 2).match_index, 12);
    assert_eq!(c.applied(2), c.applied(1));
}

/// A small proposal made while a request to the follower is in flight waits for that
/// request's answer and then leaves with the others in one request; on an idle link it
/// leaves at once; and a full request's worth opens the pipeline without waiting.
#[test]
fn small_proposals_wait_for_the_request_in_flight_and_leave_together() {
    let mut c = Cluster::with(
        3,
        14,
        |cfg| cfg.options.max_log_entries_per_request = 4,
        |_| InitialState::default(),
    );
    c.elect(1);
    c.deliver_all();
    assert_eq!(c.progress(1, 2).mode, ReplicationMode::Replicate);
    let before = c.appends_sent_to(2).len();

    let (a, _) = c.propose(1, "a");
    assert_eq!(
        appends_with_entries_to(&c, 2, before),
        vec![vec![a]],
        "an idle link sends at once"
    );
    let (b, _) = c.propose(1, "b");
    let (c_at, _) = c.try_propose(1, &["c", "d"]).unwrap();
    assert_eq!(
        appends_with_entries_to(&c, 2, before).len(),
        1,
        "b, c and d wait for the answer to a"
    );
    c.deliver_all();
    let sent = appends_with_entries_to(&c, 2, before);
    assert_eq!(sent[1], vec![b, b + 1, b + 2], "they leave together");
    assert_eq!(c_at, b + 1);
    assert_eq!(c.applied(2), c.applied(1));

    // With a request in flight, four waiting entries fill one: it goes at once.
    let before = c.appends_sent_to(2).len();
    let (e, _) = c.propose(1, "e");
    c.try_propose(1, &["f", "g", "h", "i"]).unwrap();
    assert_eq!(
        appends_with_entries_to(&c, 2, before),
        vec![vec![e], vec![e + 1, e + 2, e + 3, e + 4]],
        "a full request does not wait"
    );
    c.deliver_all();
    assert_eq!(c.log_terms(2), c.log_terms(1));
    assert_eq!(c.applied(2), c.applied(1));
}

/// A follower cut off while the leader commits 300 entries (more than the in-flight window
/// of 256 requests) catches up from heartbeats alone, with no new proposal.
#[test]
fn lagging_follower_catches_up_without_new_proposals() {
    let mut c = Cluster::with(
        3,
        13,
        |cfg| cfg.options.max_log_entries_per_request = 10,
        |_| InitialState::default(),
    );
    c.elect(1);
    c.deliver_all();
    c.isolate(3);
    for i in 0..300 {
        c.propose(1, &format!("c{i}"));
    }
    c.deliver_all();
    assert_eq!(c.node(1).commit_index(), 301);
    assert_eq!(c.node(3).last_index(), 1);
    c.heal();

    let proposals_before = c.node(1).last_index();
    let mut rounds = 0;
    while c.log_terms(3) != c.log_terms(1) || c.applied(3) != c.applied(1) {
        rounds += 1;
        assert!(
            rounds <= 3,
            "follower still behind after 3 heartbeat rounds"
        );
        c.heartbeat_round(1);
    }
    assert_eq!(
        c.node(1).last_index(),
        proposals_before,
        "no new entries were needed"
    );
    assert_eq!(c.applied(3).len(), 300);
    assert_eq!(c.node(3).commit_index(), 301);
}

/// Runs a cluster where n1 (with `leader_log`) is elected while cut off from n2 (with
/// `follower_log`), then heals; returns how many AppendEntries n2 rejected until its log
/// equals n1's.
fn rejections_until_repaired(seed: u64, leader_log: &[Term], follower_log: &[Term]) -> usize {
    let term = leader_log
        .iter()
        .chain(follower_log)
        .max()
        .copied()
        .unwrap_or(0)
        + 1;
    let mut c = Cluster::with(
        3,
        seed,
        |_| {},
        |i| InitialState {
            hard_state: HardState {
                term,
                voted_for: None,
            },
            entries: entries_with_terms(if i == 2 { follower_log } else { leader_log }),
            ..Default::default()
        },
    );
    c.partition(1, 2);
    c.elect(1);
    c.heal();
    for _ in 0..3 {
        c.heartbeat_round(1);
    }
    let mut expected = leader_log.to_vec();
    expected.push(term + 1);
    assert_eq!(
        c.log_terms(2),
        expected,
        "the follower's log equals the leader's"
    );
    c.append_responses_from(2)
        .iter()
        .filter(|r| !r.success)
        .count()
}

/// The follower's conflict hint lets the leader skip a whole term per round trip: a log
/// that diverges over 100 entries in 3 terms costs at most one rejection per term (plus
/// one), and a log that is merely shorter costs exactly one.
#[test]
fn fast_backtracking_round_trips_proportional_to_diverging_terms() {
    let prefix = [1; 5];
    let leader: Vec<Term> = prefix.iter().copied().chain([5; 100]).collect();

    // 100 diverging entries in terms 2, 3 and 4, none of which the leader has.
    let follower: Vec<Term> = prefix
        .iter()
        .copied()
        .chain([2; 34])
        .chain([3; 33])
        .chain([4; 33])
        .collect();
    let rejections = rejections_until_repaired(14, &leader, &follower);
    assert!(rejections >= 1);
    assert!(
        rejections <= 3 + 1,
        "{rejections} rejections for 3 diverging terms (100 entries)"
    );

    // The follower's conflicting term is one the leader holds too, but shorter: the leader
    // resumes right after its own last entry of that term.
    let leader2: Vec<Term> = prefix
        .iter()
        .copied()
        .chain([4; 10])
        .chain([5; 90])
        .collect();
    let follower2: Vec<Term> = prefix.iter().copied().chain([4; 100]).collect();
    let rejections = rejections_until_repaired(14, &leader2, &follower2);
    assert_eq!(
        rejections, 1,
        "one rejection when the leader holds the conflicting term"
    );

    // A much shorter follower: the last-index hint takes the leader there in one step.
    let rejections = rejections_until_repaired(14, &leader, &prefix);
    assert_eq!(
        rejections, 1,
        "one rejection when the follower's log is a shorter prefix"
    );
}

/// Duplicated and reordered answers (an older success after a newer one, an old rejection
/// after both) move nothing backwards and trigger no resend.
#[test]
fn duplicate_and_reordered_responses_are_harmless() {
    let mut c = Cluster::new(3, 15);
    c.elect(1);
    c.deliver_all();
    let term = c.node(1).term();
    c.propose(1, "a");
    let r1 = c.deliver_all_except(|m| is_append_response_from(m, 2));
    c.propose(1, "b");
    let r2 = c.deliver_all_except(|m| is_append_response_from(m, 2));
    // n2 answers the request carrying the entry and the empty one spreading its commit.
    let index_of = |m: &Message| match &m.body {
        MessageBody::AppendEntriesResponse(r) if r.success => r.index,
        other => panic!("unexpected {other:?}"),
    };
    assert!(!r1.is_empty() && r1.iter().all(|m| index_of(m) == 2));
    assert!(!r2.is_empty() && r2.iter().all(|m| index_of(m) == 3));
    assert_eq!(c.node(1).commit_index(), 3, "committed through n3");
    assert_eq!(c.progress(1, 2).match_index, 1);

    let stale_rejection = msg(
        2,
        1,
        term,
        MessageBody::AppendEntriesResponse(AppendEntriesResponse {
            success: false,
            index: 1,
            conflict: Some(ConflictHint {
                term: None,
                index: 1,
            }),
        }),
    );
    let appends_before = c.appends_sent_to(2).len();
    let mut last_match = 0;
    let replay = r2.iter().chain(&r1).chain(&r2).chain(&r1).cloned();
    for m in replay.chain([stale_rejection]) {
        c.deliver(m);
        c.deliver_all();
        let p = c.progress(1, 2);
        assert!(
            p.match_index >= last_match,
            "match index went back to {}",
            p.match_index
        );
        last_match = p.match_index;
        assert_eq!(p.mode, ReplicationMode::Replicate);
        assert_eq!(p.next_index, 4);
    }
    assert_eq!(last_match, 3);
    assert_eq!(
        c.appends_sent_to(2).len(),
        appends_before,
        "nothing was re-sent"
    );
    assert_eq!(c.node(1).commit_index(), 3);

    c.propose(1, "c");
    c.deliver_all();
    assert_eq!(c.node(1).commit_index(), 4);
    for i in 2..=3 {
        assert_eq!(c.log_terms(i), c.log_terms(1), "node {i}");
        assert_eq!(c.applied(i), vec!["a", "b", "c"], "node {i}");
    }
}

/// With `max_log_entries_per_request = 5` and a 200-byte cap, every request carries at
/// most 5 entries and at most 200 bytes, except that an entry larger than the cap travels
/// alone.
#[test]
fn max_log_entries_per_request_and_byte_cap_bound_each_request() {
    const CAP: usize = 200;
    let mut c = Cluster::with(
        3,
        16,
        |cfg| {
            cfg.options.max_log_entries_per_request = 5;
            cfg.tuning.max_append_bytes = CAP;
        },
        |_| InitialState::default(),
    );
    c.elect(1);
    c.deliver_all();
    let skip = [c.appends_sent_to(2).len(), c.appends_sent_to(3).len()];

    // Small entries (22 bytes each): the count cap binds.
    c.try_propose(1, &["x"; 12]).unwrap();
    c.deliver_all();
    // 50-byte payloads (71 bytes each): two fit in 200 bytes, three do not.
    let fifty = "f".repeat(50);
    c.try_propose(1, &[fifty.as_str(); 6]).unwrap();
    c.deliver_all();
    // One entry larger than the cap, between two small ones.
    let big = "B".repeat(500);
    c.try_propose(1, &["y", big.as_str(), "z"]).unwrap();
    c.deliver_all();

    let mut saw_count_cap = false;
    let mut saw_byte_cap = false;
    let mut saw_big_alone = false;
    for (k, follower) in [2, 3].into_iter().enumerate() {
        for a in c.appends_sent_to(follower).into_iter().skip(skip[k]) {
            let bytes: usize = a.entries.iter().map(|e| e.size_hint()).sum();
            assert!(
                a.entries.len() <= 5,
                "{} entries in one request",
                a.entries.len()
            );
            assert!(
                bytes <= CAP || a.entries.len() == 1,
                "{bytes} bytes in {} entries",
                a.entries.len()
            );
            saw_count_cap |= a.entries.len() == 5;
            saw_byte_cap |= a.entries.len() == 2 && a.entries.iter().all(|e| e.data.len() == 50);
            saw_big_alone |= a.entries.len() == 1 && a.entries[0].data.len() == 500;
        }
    }
    assert!(saw_count_cap, "some request was filled to the count cap");
    assert!(saw_byte_cap, "50-byte entries travelled two per request");
    assert!(saw_big_alone, "the oversized entry was sent alone");
    for i in 2..=3 {
        assert_eq!(c.log_terms(i), c.log_terms(1), "node {i}");
        assert_eq!(c.applied(i), c.applied(1), "node {i}");
    }
    assert_eq!(c.applied(1).len(), 21);
}

/// A follower still being probed when an entry commits is told the commit index as soon
/// as its answer arrives, not a heartbeat later. Here a new leader's no-op commits through
/// n2 while n3's answer to its probe is delayed; then n3's answer arrives.
#[test]
fn follower_answering_after_commit_learns_commit_index_at_once() {
    let mut c = Cluster::new(3, 17);
    c.expire_election_timeout(1);
    let late = c.deliver_all_except(|m| is_append_response_from(m, 3));
    assert_eq!(c.node(1).role(), Role::Leader);
    assert_eq!(
        c.node(1).commit_index(),
        1,
        "the no-op committed through n2"
    );
    assert_eq!(c.node(2).commit_index(), 1);
    assert_eq!(late.len(), 1);
    assert_eq!(c.node(3).last_index(), 1, "n3 holds the no-op");
    for m in late {
        c.deliver(m);
    }
    c.deliver_all();
    assert_eq!(c.progress(1, 3).match_index, 1);
    assert_eq!(
        c.node(3).commit_index(),
        1,
        "n3 learns the commit without a heartbeat"
    );
    assert_eq!(c.node(3).applied_index(), 1);
}
