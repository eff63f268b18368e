//! Deliberate protocol bugs, compiled only with the `bug-injection` feature, so the
//! simulator can prove that it catches them. Never enable the feature in a real build.

/// Which deliberate bugs a core runs with (all off by default).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InjectedBugs {
    /// Commit by counting replicas of an entry of an older term (breaks Figure 8).
    pub commit_old_term_by_counting: bool,
    /// Grant a vote to every up-to-date candidate, even after voting in the term.
    pub grant_two_votes_per_term: bool,
    /// Send votes and AppendEntries acknowledgements before the state is durable.
    pub ack_before_durable: bool,
    /// Grant votes without the up-to-date check of §5.4.1.
    pub vote_without_log_check: bool,
    /// Serve ReadIndex reads before the new leader has committed an entry of its term.
    pub read_before_noop_commit: bool,
    /// Let the vote guard lapse whenever no leader is known in the current term (as before
    /// the fix): a node that adopted a higher term from a non-vote message votes while
    /// the lease it acknowledged is still running. Shows with PreVote off.
    pub guard_follows_known_leader: bool,
    /// Accept a membership change before the leader committed an entry of its term.
    pub change_before_term_commit: bool,
    /// Accept a membership change while another is still pending.
    pub two_pending_changes: bool,
    /// Count learners as voters in every quorum.
    pub learners_in_quorum: bool,
    /// Keep a configuration in effect after the entry that set it was truncated.
    pub no_revert_on_truncation: bool,
    /// Build snapshots without their membership (the node falls back to its peers).
    pub snapshot_without_membership: bool,
    /// A leader removed by a committed configuration keeps leading.
    pub removed_leader_keeps_leading: bool,
    /// Serve lease reads after sending `TimeoutNow`.
    pub lease_reads_during_transfer: bool,
}
