//! Membership at run time, end to end in one process: nodes on a `LocalNetwork` with real
//! threads and timers (10 ms ticks), changed through the public `Raft` handle — adding a
//! joining node as a learner and promoting it, `add_voter` waiting for a catch-up,
//! removing a follower and the leader, the quorum check, leadership transfer, and the
//! errors of refused changes. Every wait is bounded; no assertion depends on speed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::future::Future;
use std::time::Duration;

use raftlock_raft::{
    Config, Error, LocalNetwork, MemStorage, Membership, MembershipError, NodeId, NodeInfo,
    PeerConfig, Raft, RaftBuilder, RaftStatus,
};

mod common;
use common::{eventually, leader_of, Recorder};

const TICK: Duration = Duration::from_millis(10);
/// Election timeout in ticks (200 ms): twice the default, so that a test process
/// starved of CPU for a moment does not see spurious elections or quorum refusals.
const ELECTION_TICKS: u32 = 20;
/// Bound on any single wait of these tests.
const WAIT: Duration = Duration::from_secs(10);

fn id(i: usize) -> NodeId {
    NodeId::from(format!("node-{i}"))
}

/// The peer address node `i` is known by (the local network reaches nodes by id; the
/// address only travels in the configuration).
fn address(i: usize) -> String {
    format!("127.0.0.1:{}", 7200 + i)
}

fn ids(list: &[usize]) -> BTreeSet<NodeId> {
    list.iter().map(|&i| id(i)).collect()
}

/// Node `i` of a cluster whose bootstrap voters are `peers`; with no peers at all, a
/// joining node, which learns its configuration from the leader.
fn config(i: usize, peers: &[usize], tweak: &impl Fn(&mut Config)) -> Config {
    let peers = peers
        .iter()
        .map(|&k| PeerConfig {
            id: id(k),
            address: address(k),
        })
        .collect();
    let mut c = Config::new(id(i), peers);
    c.options.nominal_tick_interval = TICK;
    c.options.election_tick_count = ELECTION_TICKS;
    tweak(&mut c);
    c
}

fn start(
    i: usize,
    peers: &[usize],
    net: &LocalNetwork,
    applier: Recorder,
    tweak: &impl Fn(&mut Config),
) -> Raft {
    let node = RaftBuilder::new()
        .with_config(config(i, peers, tweak))
        .with_storage(MemStorage::new())
        .with_applier(applier)
        .with_network(net.transport(id(i)))
        .build()
        .unwrap();
    node.start().unwrap();
    node
}

/// A cluster of three nodes started as node-1..3, plus `joining` more started with no
/// peers (node-4, ...). Appliers are in the same order.
struct Cluster {
    net: LocalNetwork,
    nodes: Vec<Raft>,
    appliers: Vec<Recorder>,
}

impl Cluster {
    fn start(joining: usize, tweak: impl Fn(&mut Config)) -> Self {
        let net = LocalNetwork::new();
        let appliers: Vec<Recorder> = (0..3 + joining).map(|_| Recorder::default()).collect();
        let nodes = (1..=3 + joining)
            .map(|i| {
                let peers: &[usize] = if i > 3 { &[] } else { &[1, 2, 3] };
                start(i, peers, &net, appliers[i - 1].clone(), &tweak)
            })
            .collect();
        Cluster {
            net,
            nodes,
            appliers,
        }
    }

    /// Waits for a leader among the three initial nodes and lets it commit an entry of
    /// its term (a leader refuses changes until it has, `TermNotCommitted`). Returns its
    /// position.
    async fn leader(&self) -> usize {
        let l = leader_of(&self.nodes[..3]).await;
        within("the first write", self.nodes[l].propose_and_wait("first"))
            .await
            .unwrap();
        l
    }

    async fn stop(&self) {
        for n in &self.nodes {
            within("a node stops", n.stop()).await;
        }
    }
}

/// Awaits `fut`, failing the test if it takes longer than [`WAIT`].
async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT, fut).await {
        Ok(out) => out,
        Err(_) => panic!("timed out after {WAIT:?} waiting for {what}"),
    }
}

/// Waits (bounded, 10 s) until the status of `node` satisfies `f`; returns that status.
async fn status_until(what: &str, node: &Raft, f: impl Fn(&RaftStatus) -> bool) -> RaftStatus {
    let mut last = None;
    for _ in 0..1000 {
        let s = node.status().await.unwrap();
        if f(&s) {
            return s;
        }
        last = Some(s);
        tokio::time::sleep(TICK).await;
    }
    panic!("timed out waiting until {what}; last status: {last:?}");
}

/// Writes `n` commands named `{prefix}-{k}` on `leader`, each waited for.
async fn write(leader: &Raft, prefix: &str, n: usize) {
    for k in 0..n {
        within("a write", leader.propose_and_wait(format!("{prefix}-{k}")))
            .await
            .unwrap();
    }
}

fn is_simple_with(m: &Membership, voters: &[usize], learners: &[usize]) -> bool {
    !m.is_joint() && m.voters == ids(voters) && m.learners == ids(learners)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_node_is_added_as_a_learner_gets_every_entry_and_is_promoted() {
    let c = Cluster::start(1, |_| {});
    let l = c.leader().await;
    let leader = &c.nodes[l];
    write(leader, "before", 10).await;
    let joining = &c.nodes[3];
    assert!(
        joining.membership().members().is_empty(),
        "a joining node has no configuration until the leader sends one"
    );
    assert!(!joining.get_state().1);

    let m = within(
        "add_learner",
        leader.add_learner(id(4), address(4).as_str()),
    )
    .await
    .unwrap();
    assert!(is_simple_with(&m, &[1, 2, 3], &[4]), "{m}");
    assert!(m.is_learner(&id(4)));
    assert_eq!(m.nodes[&id(4)], NodeInfo::from(address(4)));
    write(leader, "after", 10).await;

    // The learner receives everything, written before and after it was added.
    let want = c.appliers[l].commands();
    assert_eq!(want.len(), 21);
    let learner = c.appliers[3].clone();
    eventually("the learner applied every entry", || {
        learner.commands() == want
    })
    .await;
    // Every node, the learner included, has it as a learner in the configuration in
    // effect, and knows that configuration committed.
    let nodes = &c.nodes;
    eventually("every node sees node-4 as a learner", || {
        nodes
            .iter()
            .all(|n| is_simple_with(&n.membership(), &[1, 2, 3], &[4]))
    })
    .await;
    for n in nodes {
        let s = status_until("the learner configuration is committed", n, |s| {
            s.membership_committed
        })
        .await;
        assert!(is_simple_with(&s.membership, &[1, 2, 3], &[4]), "{s:?}");
        assert!(s.membership.is_learner(&id(4)));
        assert_eq!(s.membership.nodes[&id(4)].address, address(4));
    }
    assert!(!joining.get_state().1, "a learner never leads");

    let m = within("promote", leader.promote(id(4), false))
        .await
        .unwrap();
    assert!(is_simple_with(&m, &[1, 2, 3, 4], &[]), "{m}");
    assert!(m.is_voter(&id(4)));
    let s = leader.status().await.unwrap();
    assert_eq!(s.membership, *m);
    assert!(s.membership_committed, "the final configuration committed");
    for n in nodes {
        let s = status_until("the promotion is committed everywhere", n, |s| {
            s.membership_committed && s.membership == *m
        })
        .await;
        assert!(!s.membership.is_joint());
    }
    // The handles' view follows once each node has carried out the change (it may trail
    // `status()` by a turn of the event loop).
    eventually("every handle shows the final configuration", || {
        nodes.iter().all(|n| *n.membership() == *m)
    })
    .await;
    // The cluster of four keeps committing, and the new voter applies it.
    write(leader, "four", 3).await;
    let want = c.appliers[l].commands();
    eventually("the new voter applied the new writes", || {
        learner.commands() == want
    })
    .await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_voter_waits_for_a_learner_far_behind_to_catch_up_then_promotes_it() {
    let c = Cluster::start(1, |cfg| cfg.tuning.max_promotion_lag = 10);
    let l = c.leader().await;
    let leader = &c.nodes[l];
    // Node-4 is added as a learner while cut off: it gets nothing of what follows.
    c.net.isolate(&id(4));
    within(
        "add_learner",
        leader.add_learner(id(4), address(4).as_str()),
    )
    .await
    .unwrap();
    for batch in 0..6 {
        let commands: Vec<String> = (0..50).map(|k| format!("w{batch}-{k}")).collect();
        let results = within("a batch", leader.propose_batch_and_wait(commands))
            .await
            .unwrap();
        assert!(results.iter().all(Result::is_ok));
    }
    // Far behind: promoting it now is refused, and `add_voter` gives up after its
    // catch-up bound, leaving it a learner.
    let refused = within("promote", leader.promote(id(4), false)).await;
    match refused {
        Err(Error::Membership(MembershipError::NotCaughtUp { id: who, last, .. })) => {
            assert_eq!(who, id(4));
            assert!(last >= 300, "the leader's log ends at {last}");
        }
        other => panic!("expected NotCaughtUp, got {other:?}"),
    }
    let gave_up = within(
        "add_voter with a short catch-up",
        leader.add_voter(id(4), address(4).as_str(), TICK * 20),
    )
    .await;
    assert!(
        matches!(
            gave_up,
            Err(Error::Membership(MembershipError::NotCaughtUp { .. }))
        ),
        "{gave_up:?}"
    );
    assert!(is_simple_with(&leader.membership(), &[1, 2, 3], &[4]));

    // With a longer bound it waits for the learner to catch up once it is reachable.
    let adding = {
        let leader = leader.clone();
        tokio::spawn(async move {
            leader
                .add_voter(id(4), address(4).as_str(), Duration::from_secs(8))
                .await
        })
    };
    // Let it start while the learner is still cut off (not an assertion of timing: it
    // cannot finish before the learner is reachable, however long this takes).
    tokio::time::sleep(TICK * 5).await;
    assert!(
        !adding.is_finished(),
        "add_voter cannot succeed while the learner is far behind"
    );
    c.net.heal();
    let m = within("add_voter", adding).await.unwrap().unwrap();
    assert!(is_simple_with(&m, &[1, 2, 3, 4], &[]), "{m}");
    let s = leader.status().await.unwrap();
    assert!(s.membership_committed);
    assert_eq!(s.membership, *m);
    let want = c.appliers[l].commands();
    assert_eq!(want.len(), 301);
    let new_voter = c.appliers[3].clone();
    eventually("the new voter applied every entry", || {
        new_voter.commands() == want
    })
    .await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_follower_retires_its_id_and_the_rest_keep_committing() {
    let c = Cluster::start(0, |_| {});
    let l = c.leader().await;
    let leader = &c.nodes[l];
    let f = (l + 1) % 3;
    let rest = [l + 1, (l + 2) % 3 + 1];
    let m = within("remove_member", leader.remove_member(id(f + 1), false))
        .await
        .unwrap();
    assert!(!m.contains(&id(f + 1)), "{m}");
    assert!(is_simple_with(&m, &rest, &[]), "{m}");
    assert!(m.retired.contains(&id(f + 1)));
    assert!(!m.nodes.contains_key(&id(f + 1)));
    assert!(leader.status().await.unwrap().membership_committed);

    // The id can never come back.
    let again = within("add_learner", leader.add_learner(id(f + 1), address(f + 1))).await;
    match again {
        Err(Error::Membership(MembershipError::Retired { id: who })) => {
            assert_eq!(who, id(f + 1))
        }
        other => panic!("expected Retired, got {other:?}"),
    }
    // Removing it again is a no-op.
    let same = within(
        "remove_member again",
        leader.remove_member(id(f + 1), false),
    )
    .await
    .unwrap();
    assert_eq!(*same, *m);

    // The two that remain commit on their own.
    write(leader, "after", 5).await;
    let other = (l + 2) % 3;
    let want = c.appliers[l].commands();
    let follower = c.appliers[other].clone();
    eventually("the remaining follower applied the writes", || {
        follower.commands() == want
    })
    .await;
    let s = leader.status().await.unwrap();
    assert!(
        !s.replication.contains_key(&id(f + 1)),
        "no replication to a removed node"
    );
    status_until("the follower has the configuration", &c.nodes[other], |s| {
        s.membership == *m && s.membership_committed
    })
    .await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_the_leader_makes_it_step_down_and_the_others_elect_a_leader() {
    let c = Cluster::start(0, |_| {});
    let l = c.leader().await;
    let old = &c.nodes[l];
    let (old_term, _) = old.get_state();
    let m = within(
        "remove_member of the leader",
        old.remove_member(id(l + 1), false),
    )
    .await
    .unwrap();
    let rest: Vec<usize> = (1..=3).filter(|&i| i != l + 1).collect();
    assert!(is_simple_with(&m, &rest, &[]), "{m}");
    assert!(m.retired.contains(&id(l + 1)));
    eventually("the removed leader stepped down", || !old.get_state().1).await;

    let others: Vec<Raft> = c
        .nodes
        .iter()
        .enumerate()
        .filter(|(k, _)| *k != l)
        .map(|(_, n)| n.clone())
        .collect();
    let k = leader_of(&others).await;
    let new = &others[k];
    assert_ne!(new.id(), &id(l + 1));
    assert!(new.get_state().0 > old_term);
    let result = within("a write on the new leader", new.propose_and_wait("after"))
        .await
        .unwrap();
    assert!(!result.is_empty());
    let pos = c.nodes.iter().position(|n| n.id() == new.id()).unwrap();
    let want = c.appliers[pos].commands();
    assert_eq!(want.last().map(String::as_str), Some("after"));
    let s = new.status().await.unwrap();
    assert_eq!(s.membership, *m);
    assert!(!s.replication.contains_key(&id(l + 1)));
    assert!(!old.get_state().1, "the removed node never leads again");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_that_would_lose_quorum_is_refused_unless_forced() {
    let c = Cluster::start(0, |_| {});
    let l = c.leader().await;
    let leader = &c.nodes[l];
    let cut = (l + 1) % 3;
    let healthy = (l + 2) % 3;
    c.net.isolate(&id(cut + 1));
    let election_timeout = TICK * ELECTION_TICKS;
    status_until(
        "the leader has not heard from the cut follower for an election timeout",
        leader,
        |s| {
            s.replication[&id(cut + 1)]
                .last_active_ago
                .is_some_and(|ago| ago > election_timeout)
        },
    )
    .await;
    assert!(
        leader.get_state().1,
        "the leader keeps its quorum with the healthy follower"
    );

    // Without the healthy follower, the leader and the cut one would have to commit.
    let before = leader.status().await.unwrap();
    let refused = within(
        "remove_member",
        leader.remove_member(id(healthy + 1), false),
    )
    .await;
    match refused {
        Err(Error::Membership(MembershipError::WouldLoseQuorum {
            voters,
            reachable,
            needed,
        })) => assert_eq!((voters, reachable, needed), (2, 1, 2)),
        other => panic!("expected WouldLoseQuorum, got {other:?}"),
    }
    let after = leader.status().await.unwrap();
    assert_eq!(
        after.membership_index, before.membership_index,
        "nothing appended"
    );
    assert!(is_simple_with(&after.membership, &[1, 2, 3], &[]));

    // Forced, it is accepted: the joint configuration is appended (it cannot commit
    // without the cut follower, so the call may time out or stall).
    let forced = tokio::time::timeout(
        Duration::from_secs(1),
        leader.remove_member(id(healthy + 1), true),
    )
    .await;
    match forced {
        Err(_elapsed) => {}
        Ok(Err(Error::Timeout | Error::LeadershipLost)) => {}
        Ok(other) => panic!("expected the forced change to be accepted and stall, got {other:?}"),
    }
    let m = leader.membership();
    assert!(m.is_joint(), "{m}");
    assert!(!m.voters.contains(&id(healthy + 1)), "{m}");
    assert!(m.outgoing.contains(&id(healthy + 1)), "{m}");
    c.net.heal();
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_leader_moves_leadership_and_refuses_bad_targets() {
    let c = Cluster::start(1, |_| {});
    let l = c.leader().await;
    let old = &c.nodes[l];
    let x = (l + 1) % 3;
    let moved = within("transfer_leader", old.transfer_leader(Some(id(x + 1))))
        .await
        .unwrap();
    assert_eq!(moved, id(x + 1));
    let new = &c.nodes[x];
    eventually("the target leads", || new.get_state().1).await;
    assert!(!old.get_state().1, "the old leader no longer leads");
    assert_eq!(old.leader(), Some(id(x + 1)));
    within("a write on the new leader", new.propose_and_wait("moved"))
        .await
        .unwrap();

    // Without a target, some other voter takes over.
    let picked = within("transfer_leader(None)", new.transfer_leader(None))
        .await
        .unwrap();
    assert_ne!(picked, id(x + 1));
    assert!(ids(&[1, 2, 3]).contains(&picked));
    let y: usize = picked.as_str()[5..].parse().unwrap();
    let next = &c.nodes[y - 1];
    eventually("the picked voter leads", || next.get_state().1).await;
    assert!(!new.get_state().1);
    within(
        "a write on the picked leader",
        next.propose_and_wait("picked"),
    )
    .await
    .unwrap();

    // Bad targets: a learner, an unknown node; and a follower cannot transfer.
    within("add_learner", next.add_learner(id(4), address(4)))
        .await
        .unwrap();
    match within("transfer to a learner", next.transfer_leader(Some(id(4)))).await {
        Err(Error::Membership(MembershipError::BadTransferTarget { id: who, .. })) => {
            assert_eq!(who, id(4))
        }
        other => panic!("expected BadTransferTarget, got {other:?}"),
    }
    match within(
        "transfer to an unknown node",
        next.transfer_leader(Some(id(9))),
    )
    .await
    {
        Err(Error::Membership(MembershipError::UnknownNode { id: who })) => {
            assert_eq!(who, id(9))
        }
        other => panic!("expected UnknownNode, got {other:?}"),
    }
    let follower = &c.nodes[y % 3];
    eventually("the follower knows the leader", || {
        follower.leader().as_ref() == Some(&picked)
    })
    .await;
    match within("transfer on a follower", follower.transfer_leader(None)).await {
        Err(Error::NotLeader { leader }) => assert_eq!(leader, Some(picked.clone())),
        other => panic!("expected NotLeader, got {other:?}"),
    }
    assert!(
        next.get_state().1,
        "refused transfers leave the leader in place"
    );
    within("a write after the refusals", next.propose_and_wait("still"))
        .await
        .unwrap();
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_and_idempotent_changes() {
    let c = Cluster::start(1, |_| {});
    let l = c.leader().await;
    let leader = &c.nodes[l];
    match within("promote an unknown node", leader.promote(id(9), false)).await {
        Err(Error::Membership(MembershipError::UnknownNode { id: who })) => {
            assert_eq!(who, id(9))
        }
        other => panic!("expected UnknownNode, got {other:?}"),
    }
    let voter = id((l + 1) % 3 + 1);
    match within(
        "add a voter as a learner",
        leader.add_learner(voter.clone(), "x:1"),
    )
    .await
    {
        Err(Error::Membership(MembershipError::AlreadyVoter { id: who })) => {
            assert_eq!(who, voter)
        }
        other => panic!("expected AlreadyVoter, got {other:?}"),
    }
    let first = within("add_learner", leader.add_learner(id(4), address(4)))
        .await
        .unwrap();
    let index = leader.status().await.unwrap().membership_index;
    let second = within("add_learner again", leader.add_learner(id(4), address(4)))
        .await
        .unwrap();
    assert_eq!(*first, *second);
    let s = leader.status().await.unwrap();
    assert_eq!(
        s.membership_index, index,
        "the second call appended nothing"
    );
    assert!(s.membership_committed);
    assert!(is_simple_with(&s.membership, &[1, 2, 3], &[4]));
    // Asking for the configuration in effect appends nothing either.
    let same = within(
        "change_membership to the same sets",
        leader.change_membership(ids(&[1, 2, 3]), ids(&[4]), false),
    )
    .await
    .unwrap();
    assert_eq!(*same, *second);
    assert_eq!(leader.status().await.unwrap().membership_index, index);
    // Member info changes without a joint phase, and reaches every member.
    let mut info = raftlock_raft::NodeInfo::from(address(4));
    info.metadata
        .insert("client_address".into(), "127.0.0.1:9".into());
    let updated = within(
        "update_member_info",
        leader.update_member_info([(id(4), info.clone())]),
    )
    .await
    .unwrap();
    assert_eq!(updated.nodes[&id(4)], info);
    assert!(is_simple_with(&updated, &[1, 2, 3], &[4]));
    for n in &c.nodes {
        status_until("the info reaches every member", n, |s| {
            s.membership.nodes.get(&id(4)) == Some(&info)
        })
        .await;
    }
    match within(
        "update_member_info of a non-member",
        leader.update_member_info([(id(9), info.clone())]),
    )
    .await
    {
        Err(Error::Membership(MembershipError::UnknownNode { .. })) => {}
        other => panic!("expected UnknownNode, got {other:?}"),
    }
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_voter_grows_a_one_node_cluster_once_the_new_node_catches_up() {
    let net = LocalNetwork::new();
    let appliers = [Recorder::default(), Recorder::default()];
    let nodes = [
        start(1, &[1], &net, appliers[0].clone(), &|_| {}),
        start(2, &[], &net, appliers[1].clone(), &|_| {}),
    ];
    assert_eq!(leader_of(&nodes[..1]).await, 0);
    let leader = &nodes[0];
    write(leader, "alone", 5).await;
    // Cut off, the new node never answers: it has not caught up, and that is what
    // add_voter reports once its catch-up bound passes (the promotion would also lack a
    // quorum without it, but catching up is what the caller can wait for).
    net.isolate(&id(2));
    let gave_up = within(
        "add_voter with a short catch-up",
        leader.add_voter(id(2), address(2), TICK * 20),
    )
    .await;
    match gave_up {
        Err(Error::Membership(MembershipError::NotCaughtUp { id: who, .. })) => {
            assert_eq!(who, id(2))
        }
        other => panic!("expected NotCaughtUp, got {other:?}"),
    }
    assert!(is_simple_with(&leader.membership(), &[1], &[2]));
    net.heal();
    let m = within(
        "add_voter",
        leader.add_voter(id(2), address(2), Duration::from_secs(8)),
    )
    .await
    .unwrap();
    assert!(is_simple_with(&m, &[1, 2], &[]), "{m}");
    // Both voters now commit every write.
    write(leader, "pair", 3).await;
    let want = appliers[0].commands();
    assert_eq!(want.len(), 8);
    let joined = appliers[1].clone();
    eventually("the new voter applied every entry", || {
        joined.commands() == want
    })
    .await;
    status_until("the new voter has the configuration", &nodes[1], |s| {
        s.membership == *m && s.membership_committed
    })
    .await;
    for n in &nodes {
        within("a node stops", n.stop()).await;
    }
}
