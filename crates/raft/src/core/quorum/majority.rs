//! A simple majority of one set of voters.

use std::collections::BTreeSet;

use super::VoteResult;
use crate::types::{Index, NodeId};

/// Size of a majority of `voters`.
pub(crate) fn majority(voters: usize) -> usize {
    voters / 2 + 1
}

/// The highest index that a majority of `voters` acknowledged; a voter without an
/// acknowledgement counts as 0. An empty set commits everything (`Index::MAX`), so it is
/// neutral in a joint configuration's minimum.
pub(crate) fn committed_index(
    voters: &BTreeSet<NodeId>,
    acked: impl Fn(&NodeId) -> Option<Index>,
) -> Index {
    if voters.is_empty() {
        return Index::MAX;
    }
    // The leader asks after every acknowledgement: up to 7 voters sort on the stack.
    const ON_STACK: usize = 7;
    let mut stack = [0; ON_STACK];
    let mut heap = Vec::new();
    let all: &mut [Index] = if voters.len() <= ON_STACK {
        for (slot, id) in stack.iter_mut().zip(voters) {
            *slot = acked(id).unwrap_or(0);
        }
        &mut stack[..voters.len()]
    } else {
        heap.extend(voters.iter().map(|id| acked(id).unwrap_or(0)));
        &mut heap
    };
    all.sort_unstable_by(|a, b| b.cmp(a));
    all[majority(all.len()) - 1]
}

/// Tallies the votes of `voters` (`Some(granted)`, or `None` for no answer yet). An
/// empty set wins, so it is neutral in a joint configuration.
pub(crate) fn vote_result(
    voters: &BTreeSet<NodeId>,
    vote: impl Fn(&NodeId) -> Option<bool>,
) -> VoteResult {
    if voters.is_empty() {
        return VoteResult::Won;
    }
    let (mut granted, mut missing) = (0, 0);
    for id in voters {
        match vote(id) {
            Some(true) => granted += 1,
            Some(false) => {}
            None => missing += 1,
        }
    }
    let need = majority(voters.len());
    if granted >= need {
        VoteResult::Won
    } else if granted + missing >= need {
        VoteResult::Pending
    } else {
        VoteResult::Lost
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn set(ids: &str) -> BTreeSet<NodeId> {
        ids.split_whitespace().map(NodeId::from).collect()
    }

    #[test]
    fn majorities() {
        assert_eq!(majority(1), 1);
        assert_eq!(majority(3), 2);
        assert_eq!(majority(4), 3);
        assert_eq!(majority(5), 3);
    }

    #[test]
    fn committed_index_is_the_majority_match() {
        let commit = |ids: &str, idx: &[Index]| {
            let voters = set(ids);
            let m: BTreeMap<NodeId, Index> =
                voters.iter().cloned().zip(idx.iter().copied()).collect();
            committed_index(&voters, |id| m.get(id).copied())
        };
        assert_eq!(commit("a", &[5]), 5);
        assert_eq!(commit("a b c", &[5, 3, 1]), 3);
        assert_eq!(commit("a b c d", &[5, 5, 1, 1]), 1);
        assert_eq!(commit("a b c d e", &[9, 7, 7, 2, 0]), 7);
        assert_eq!(commit("", &[]), Index::MAX);
        // Beyond the stack buffer.
        assert_eq!(commit("a b c d e f g h i", &[1, 9, 2, 8, 3, 7, 4, 6, 5]), 5);
        assert_eq!(commit("a b c d e f g h", &[1, 9, 2, 8, 3, 7, 4, 6]), 4);
        // A voter without an acknowledgement counts as 0.
        assert_eq!(commit("a b c", &[5, 5]), 5);
        assert_eq!(commit("a b c", &[5]), 0);
    }

    #[test]
    fn vote_outcomes() {
        let tally = |ids: &str, votes: &[(&str, bool)]| {
            let m: BTreeMap<NodeId, bool> = votes
                .iter()
                .map(|(id, g)| (NodeId::from(*id), *g))
                .collect();
            vote_result(&set(ids), |id| m.get(id).copied())
        };
        assert_eq!(tally("a", &[("a", true)]), VoteResult::Won);
        assert_eq!(tally("a b c", &[("a", true)]), VoteResult::Pending);
        assert_eq!(tally("a b c", &[("a", true), ("b", true)]), VoteResult::Won);
        assert_eq!(
            tally("a b c", &[("a", true), ("b", false), ("c", false)]),
            VoteResult::Lost
        );
        assert_eq!(
            tally("a b c d", &[("a", true), ("b", false)]),
            VoteResult::Pending
        );
        assert_eq!(
            tally("a b c d", &[("a", true), ("b", false), ("c", false)]),
            VoteResult::Lost
        );
        // Votes of non-voters are not counted.
        assert_eq!(
            tally("a b c", &[("a", true), ("x", true)]),
            VoteResult::Pending
        );
        assert_eq!(tally("", &[]), VoteResult::Won);
    }
}
