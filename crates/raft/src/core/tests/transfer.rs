//! Leadership transfer (thesis §3.10): `TimeoutNow` to a caught-up voter, proposals
//! refused meanwhile, the timeout that gives up, and the lease that stops at `TimeoutNow`.

use std::collections::BTreeMap;

use super::harness::*;
use crate::error::Error;
use crate::membership::MembershipError;
use crate::types::{ElectionReason, Role};

#[test]
fn transfer_to_an_up_to_date_follower_is_immediate() {
    let mut c = Cluster::new(3, 1);
    c.elect(1);
    c.propose(1, "a");
    c.deliver_all();
    let term = c.node(1).term();
    c.node_mut(1).core.transfer_leader(id(2)).expect("transfer");
    c.process(&id(1));
    assert!(
        c.queued(1, 2, "TimeoutNow"),
        "the target already holds the log"
    );
    c.deliver_all();
    assert_eq!(c.node(2).role(), Role::Leader);
    assert_eq!(c.node(2).term(), term + 1);
    assert_eq!(c.node(1).role(), Role::Follower);
    let elections = &c.nodes[&id(2)].elections;
    assert_eq!(
        elections.last().map(|e| e.reason),
        Some(ElectionReason::Transfer)
    );
    c.propose(2, "b");
    c.deliver_all();
    assert_eq!(c.applied(1), vec!["a", "b"]);
}

#[test]
fn a_lagging_target_is_caught_up_before_timeout_now() {
    let mut c = Cluster::new(3, 2);
    c.elect(1);
    c.partition(1, 3);
    for i in 0..5 {
        c.propose(1, &format!("e{i}"));
    }
    c.deliver_all();
    c.heal();
    c.node_mut(1).core.transfer_leader(id(3)).expect("transfer");
    c.process(&id(1));
    assert!(
        !c.queued(1, 3, "TimeoutNow"),
        "not before the target caught up"
    );
    c.heartbeat_round(1);
    c.deliver_all();
    assert_eq!(c.node(3).role(), Role::Leader);
    assert_eq!(c.applied(3).len(), 5);
}

#[test]
fn transfers_to_self_learners_unknown_or_removed_nodes_are_refused() {
    let mut c = Cluster::new(3, 3);
    c.elect(1);
    c.deliver_all();
    c.join(4, 44, |_| {});
    let voters = [1, 2, 3].map(id).into_iter().collect();
    c.node_mut(1)
        .core
        .change_membership(voters, [id(4)].into_iter().collect(), BTreeMap::new())
        .expect("learner added");
    c.deliver_all();
    let refused =
        |c: &mut Cluster, to: usize| c.node_mut(1).core.transfer_leader(id(to)).unwrap_err();
    assert!(matches!(
        refused(&mut c, 1),
        Error::Membership(MembershipError::BadTransferTarget { .. })
    ));
    assert!(matches!(
        refused(&mut c, 4),
        Error::Membership(MembershipError::BadTransferTarget { .. })
    ));
    assert!(matches!(
        refused(&mut c, 9),
        Error::Membership(MembershipError::UnknownNode { .. })
    ));
    // Once removed, a former voter is unknown.
    let voters = [1, 2].map(id).into_iter().collect();
    c.node_mut(1)
        .core
        .change_membership(voters, Default::default(), BTreeMap::new())
        .expect("removal");
    c.deliver_all();
    assert!(matches!(
        refused(&mut c, 3),
        Error::Membership(MembershipError::UnknownNode { .. })
    ));
    assert!(c.node(2).transfer_target().is_none());
    assert_eq!(c.node(1).role(), Role::Leader);
}

#[test]
fn a_transfer_that_times_out_resumes_proposals() {
    let mut c = Cluster::new(3, 4);
    c.elect(1);
    c.deliver_all();
    c.isolate(3);
    // Node 3 never answers: it cannot catch up.
    c.partition(1, 3);
    c.propose(1, "a");
    c.deliver_all();
    c.node_mut(1).core.transfer_leader(id(3)).expect("transfer");
    let err = c.try_propose(1, &["b"]).unwrap_err();
    assert!(matches!(err, Error::TransferInProgress { .. }), "{err}");
    let membership_err = c
        .node_mut(1)
        .core
        .change_membership(Default::default(), Default::default(), BTreeMap::new())
        .unwrap_err();
    assert!(matches!(membership_err, Error::TransferInProgress { .. }));
    let timeout = c.node(1).config().options.election_tick_count;
    for _ in 0..timeout {
        c.tick(1);
        c.deliver_all();
    }
    assert_eq!(c.node(1).role(), Role::Leader);
    assert!(c.node(1).transfer_target().is_none(), "given up");
    c.try_propose(1, &["b"]).expect("proposals resume");
    c.deliver_all();
    assert_eq!(c.applied(2), vec!["a", "b"]);
}

#[test]
fn no_lease_reads_after_timeout_now() {
    let mut c = Cluster::new(3, 5);
    c.elect(1);
    c.tick(1);
    c.deliver_all();
    c.read(1, 1);
    assert_eq!(
        c.nodes[&id(1)].read_states.len(),
        1,
        "a lease read, no round"
    );
    c.node_mut(1).core.transfer_leader(id(2)).expect("transfer");
    c.process(&id(1));
    assert!(c.queued(1, 2, "TimeoutNow"));
    // Nothing delivered yet: the old leader still leads, but its lease is gone.
    c.read(1, 2);
    assert_eq!(
        c.nodes[&id(1)].read_states.len(),
        1,
        "the read waits for a confirmation round instead of the lease"
    );
    assert_eq!(c.node(1).role(), Role::Leader);
}

#[test]
fn a_stale_timeout_now_is_ignored() {
    let mut c = Cluster::new(3, 6);
    c.elect(1);
    c.deliver_all();
    c.node_mut(1).core.transfer_leader(id(2)).expect("transfer");
    c.process(&id(1));
    let stale = c.take(|m| m.kind() == "TimeoutNow");
    assert_eq!(stale.len(), 1);
    // The transfer times out; later node 3 is elected in a higher term.
    let timeout = c.node(1).config().options.election_tick_count;
    for _ in 0..timeout {
        c.tick(1);
        c.deliver_all();
    }
    c.isolate(1);
    let l = c.await_leader(&[2, 3]);
    c.heal();
    c.heartbeat_round(l);
    let term = c.node(l).term();
    for m in stale {
        c.deliver(m);
    }
    c.deliver_all();
    assert_eq!(c.node(l).role(), Role::Leader);
    assert_eq!(c.node(2).term(), term, "the old TimeoutNow started nothing");
}

#[test]
fn the_lease_stays_off_after_a_transfer_times_out() {
    // A TimeoutNow still in flight when the transfer is abandoned can start the target's
    // campaign later, which voters let past their guard: the lease must not come back.
    let mut c = Cluster::new(3, 7);
    c.elect(1);
    c.tick(1);
    c.deliver_all();
    c.node_mut(1).core.transfer_leader(id(2)).expect("transfer");
    c.process(&id(1));
    let late = c.take(|m| m.kind() == "TimeoutNow");
    assert_eq!(late.len(), 1);
    let timeout = c.node(1).config().options.election_tick_count;
    for _ in 0..timeout {
        c.tick(1);
        c.deliver_all();
    }
    assert!(c.node(1).transfer_target().is_none(), "given up");
    let served = c.nodes[&id(1)].read_states.len();
    c.read(1, 9);
    assert_eq!(
        c.nodes[&id(1)].read_states.len(),
        served,
        "no lease read: the read waits for a round"
    );
    c.deliver_all();
    assert_eq!(
        c.nodes[&id(1)].read_states.len(),
        served + 1,
        "served after the round"
    );
    // The late TimeoutNow elects node 2 although everyone heard from node 1.
    for m in late {
        c.deliver(m);
    }
    c.deliver_all();
    assert_eq!(c.node(2).role(), Role::Leader);
}
