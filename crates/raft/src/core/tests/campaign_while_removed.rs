//! Elections while a change of voters is under way (thesis §4.2.2).

use std::collections::{BTreeMap, BTreeSet};

use super::harness::*;
use crate::types::Role;

#[test]
fn a_node_left_out_of_its_uncommitted_c_new_still_campaigns() {
    // n2 leads {n1, n2} and removes itself: the joint configuration commits, n2 appends
    // C_new = {n1} and crashes before n1 has it. The committed joint configuration needs
    // n2's vote, which n2's longer log refuses n1; so n2 must campaign itself (counting
    // only n1's vote), commit C_new and step down, and then n1 leads alone. Before the
    // fix n2 never campaigned and the cluster had no leader for good (simulator seed 199,
    // 3 nodes, profile reconfig).
    let mut c = Cluster::new(2, 7);
    c.elect(2);
    c.propose(2, "x");
    c.deliver_all();
    let voters: BTreeSet<_> = [id(1)].into();
    c.node_mut(2)
        .core
        .change_membership(voters.clone(), BTreeSet::new(), BTreeMap::new())
        .expect("the leader committed an entry of its term and nothing is pending");
    c.process_all();
    while c.node(2).membership().is_joint() {
        assert!(c.deliver_one(), "the joint configuration must commit");
    }
    assert_eq!(c.node(2).membership().voters, voters, "n2 appended C_new");
    // C_new never reaches n1.
    c.isolate(2);
    c.queue.clear();
    c.restart(2, 11);
    c.heal();
    for _ in 0..500 {
        if c.node(1).role() == Role::Leader {
            break;
        }
        c.tick_all();
        c.deliver_all();
    }
    assert_eq!(c.node(1).role(), Role::Leader, "n1 leads C_new");
    assert_eq!(c.node(1).membership().voters, voters);
    assert!(!c.node(1).membership().is_joint());
    assert_ne!(c.node(2).role(), Role::Leader);
}
