//! Majority arithmetic: vote tallies and the commit index a set of match indices allows.

use std::collections::BTreeMap;

use crate::types::{Index, NodeId};

/// Size of a majority of `voters`.
pub(crate) fn majority(voters: usize) -> usize {
    voters / 2 + 1
}

/// The highest index that a majority of `matches` has reached.
pub(crate) fn committed_index(matches: impl IntoIterator<Item = Index>) -> Index {
    // The leader asks after every acknowledgement: clusters of up to 7 voters sort on the
    // stack instead of allocating.
    const ON_STACK: usize = 7;
    let mut stack = [0; ON_STACK];
    let mut len = 0;
    let mut heap = Vec::new();
    for m in matches {
        if len < ON_STACK {
            stack[len] = m;
        } else {
            if heap.is_empty() {
                heap.extend_from_slice(&stack);
            }
            heap.push(m);
        }
        len += 1;
    }
    let all: &mut [Index] = if len <= ON_STACK {
        &mut stack[..len]
    } else {
        &mut heap
    };
    if all.is_empty() {
        return 0;
    }
    all.sort_unstable_by(|a, b| b.cmp(a));
    all[majority(all.len()) - 1]
}

/// Outcome of an election so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum VoteResult {
    Won,
    Lost,
    Pending,
}

/// Tallies `votes` (granted or not, one per voter) among `voters` voters.
pub(crate) fn tally(votes: &BTreeMap<NodeId, bool>, voters: usize) -> VoteResult {
    let granted = votes.values().filter(|g| **g).count();
    let rejected = votes.len() - granted;
    let need = majority(voters);
    if granted >= need {
        VoteResult::Won
    } else if rejected > voters - need {
        VoteResult::Lost
    } else {
        VoteResult::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn majorities() {
        assert_eq!(majority(1), 1);
        assert_eq!(majority(3), 2);
        assert_eq!(majority(4), 3);
        assert_eq!(majority(5), 3);
    }

    #[test]
    fn committed_index_is_the_majority_match() {
        assert_eq!(committed_index(vec![5]), 5);
        assert_eq!(committed_index(vec![5, 3, 1]), 3);
        assert_eq!(committed_index(vec![5, 5, 1, 1]), 1);
        assert_eq!(committed_index(vec![9, 7, 7, 2, 0]), 7);
        assert_eq!(committed_index(Vec::new()), 0);
        // Beyond the stack buffer.
        assert_eq!(committed_index(vec![1, 9, 2, 8, 3, 7, 4, 6, 5]), 5);
        assert_eq!(committed_index(vec![1, 9, 2, 8, 3, 7, 4, 6]), 4);
    }

    #[test]
    fn tally_outcomes() {
        let votes = |v: &[(&str, bool)]| {
            v.iter()
                .map(|(id, g)| (NodeId::from(*id), *g))
                .collect::<BTreeMap<_, _>>()
        };
        assert_eq!(tally(&votes(&[("a", true)]), 1), VoteResult::Won);
        assert_eq!(tally(&votes(&[("a", true)]), 3), VoteResult::Pending);
        assert_eq!(
            tally(&votes(&[("a", true), ("b", true)]), 3),
            VoteResult::Won
        );
        assert_eq!(
            tally(&votes(&[("a", true), ("b", false), ("c", false)]), 3),
            VoteResult::Lost
        );
        assert_eq!(
            tally(&votes(&[("a", true), ("b", false)]), 4),
            VoteResult::Pending
        );
        assert_eq!(
            tally(&votes(&[("a", true), ("b", false), ("c", false)]), 4),
            VoteResult::Lost
        );
    }
}
