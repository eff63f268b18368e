//! Quorum arithmetic on sets of voters, as etcd's `quorum/` package: a simple majority
//! ([`majority`]) and the joint majority of two configurations during a membership
//! change ([`joint`]). The functions ask for each voter's acknowledgement through a
//! closure, so they neither allocate nor know where the numbers come from (match indices
//! for commit, heartbeat rounds for reads and the lease, votes for elections and
//! CheckQuorum).

pub(crate) mod joint;
pub(crate) mod majority;
#[cfg(test)]
mod tests;

pub(crate) use self::joint::JointConfig;

/// Outcome of an election (or any yes/no poll of the voters) so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum VoteResult {
    /// A quorum said yes.
    Won,
    /// Enough said no (or cannot say yes) that no quorum can say yes any more.
    Lost,
    /// Neither yet.
    Pending,
}
