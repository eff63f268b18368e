//! The joint majority of two configurations (thesis §4.3): while a change of voters is
//! under way every decision needs a majority of the incoming voters *and* a majority of
//! the outgoing ones. Outside a change the outgoing set is empty and neutral.

use std::collections::BTreeSet;

use super::majority;
use super::VoteResult;
use crate::types::{Index, NodeId};

/// Two voter sets that must both agree; `outgoing` is empty outside a change.
#[derive(Clone, Copy, Debug)]
pub(crate) struct JointConfig<'a> {
    pub(crate) incoming: &'a BTreeSet<NodeId>,
    pub(crate) outgoing: &'a BTreeSet<NodeId>,
}

impl JointConfig<'_> {
    /// The highest index both halves committed: the smaller of their majority indices.
    pub(crate) fn committed_index(&self, acked: impl Fn(&NodeId) -> Option<Index>) -> Index {
        let incoming = majority::committed_index(self.incoming, &acked);
        let outgoing = majority::committed_index(self.outgoing, &acked);
        incoming.min(outgoing)
    }

    /// Won only if both halves won; lost if either lost.
    pub(crate) fn vote_result(&self, vote: impl Fn(&NodeId) -> Option<bool>) -> VoteResult {
        let incoming = majority::vote_result(self.incoming, &vote);
        let outgoing = majority::vote_result(self.outgoing, &vote);
        match (incoming, outgoing) {
            (VoteResult::Won, VoteResult::Won) => VoteResult::Won,
            (VoteResult::Lost, _) | (_, VoteResult::Lost) => VoteResult::Lost,
            _ => VoteResult::Pending,
        }
    }

    /// Every voter of either half, once.
    pub(crate) fn voters(&self) -> impl Iterator<Item = &NodeId> + '_ {
        self.incoming.iter().chain(
            self.outgoing
                .iter()
                .filter(|id| !self.incoming.contains(*id)),
        )
    }
}
