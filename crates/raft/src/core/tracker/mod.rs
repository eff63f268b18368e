//! What the leader (and a candidate) tracks about the cluster, as etcd's `tracker/`: the
//! configuration in effect (voters, outgoing voters while joint, learners), each peer's
//! replication [`Progress`], and the votes of the current (pre-)election. Every quorum
//! decision — commit, elections, CheckQuorum, read confirmation and the lease — asks this
//! module, which counts voters only and both halves of a joint configuration.

mod inflight;
mod progress;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

pub(crate) use self::progress::Progress;
use super::quorum::{JointConfig, VoteResult};
use crate::membership::Membership;
use crate::types::{Index, NodeId};

/// The configuration in effect, per-peer progress and vote tallies.
#[derive(Debug)]
pub(crate) struct Tracker {
    /// This node's id, the very `NodeId` the configuration holds when it is a member
    /// (ids compare by pointer first, so lookups on the hot path skip the text).
    me: NodeId,
    config: Membership,
    /// Every member but this node, computed once per configuration: the leader walks it
    /// for every broadcast.
    peers: Arc<[NodeId]>,
    /// The leader's view of every other member (voters and learners); empty elsewhere.
    pub(crate) progress: BTreeMap<NodeId, Progress>,
    /// Answers received in the current (pre-)election, this node's own included.
    votes: BTreeMap<NodeId, bool>,
    /// Injected bug (simulator self-tests): learners count as voters of the incoming half.
    count_learners: bool,
    /// Voters and learners, for `count_learners`.
    with_learners: BTreeSet<NodeId>,
    /// This node alone is a quorum (asked before every proposal).
    sole_voter: bool,
}

impl Tracker {
    pub(crate) fn new(me: NodeId, config: Membership) -> Self {
        let mut tracker = Tracker {
            me,
            config: Membership::default(),
            peers: Arc::from(Vec::new()),
            progress: BTreeMap::new(),
            votes: BTreeMap::new(),
            count_learners: false,
            with_learners: BTreeSet::new(),
            sole_voter: false,
        };
        tracker.install(config);
        tracker
    }

    fn install(&mut self, config: Membership) {
        let mut members = config.members();
        if let Some(me) = members.take(&self.me) {
            self.me = me;
        }
        self.peers = members.into_iter().collect();
        self.with_learners = config.voters.union(&config.learners).cloned().collect();
        self.config = config;
        self.sole_voter = self
            .joint()
            .vote_result(|id| (*id == self.me).then_some(true))
            == VoteResult::Won;
    }

    /// The configuration in effect.
    pub(crate) fn config(&self) -> &Membership {
        &self.config
    }

    fn joint(&self) -> JointConfig<'_> {
        if self.count_learners {
            return JointConfig {
                incoming: &self.with_learners,
                outgoing: &self.config.outgoing,
            };
        }
        JointConfig {
            incoming: &self.config.voters,
            outgoing: &self.config.outgoing,
        }
    }

    /// Switches to `config`. On a leader (`leader_next` given: next index and window)
    /// members that are new get a progress starting at that index, and members that left
    /// lose theirs.
    pub(crate) fn set_config(&mut self, config: Membership, leader_next: Option<(Index, usize)>) {
        self.install(config);
        if let Some((next, max_inflight)) = leader_next {
            let peers = self.peers.clone();
            self.progress.retain(|id, _| peers.contains(id));
            for id in peers.iter() {
                self.progress
                    .entry(id.clone())
                    .or_insert_with(|| Progress::new(next, max_inflight));
            }
        }
    }

    /// Every other member (voters of both halves and learners): whom a leader replicates
    /// to. Shared, so the caller can walk it while changing the tracker.
    pub(crate) fn peers(&self) -> Arc<[NodeId]> {
        self.peers.clone()
    }

    /// Every other voter: whom a candidate asks for votes.
    pub(crate) fn voting_peers(&self) -> Vec<NodeId> {
        let me = &self.me;
        self.joint()
            .voters()
            .filter(|id| *id != me)
            .cloned()
            .collect()
    }

    /// Whether `id` votes in the configuration in effect.
    pub(crate) fn is_voter(&self, id: &NodeId) -> bool {
        self.config.is_voter(id) || (self.count_learners && self.config.learners.contains(id))
    }

    /// Whether this node alone is a quorum (the only voter of each half).
    pub(crate) fn is_sole_voter(&self) -> bool {
        self.sole_voter
    }

    /// Injected bug: count learners as voters from now on.
    #[cfg(feature = "bug-injection")]
    pub(crate) fn count_learners_as_voters(&mut self, on: bool) {
        self.count_learners = on;
        self.install(self.config.clone());
    }

    /// Starts the positions of every peer afresh (a new leader's first view).
    pub(crate) fn reset_progress(&mut self, next: Index, max_inflight: usize) {
        self.progress = self
            .peers
            .iter()
            .map(|id| (id.clone(), Progress::new(next, max_inflight)))
            .collect();
    }

    /// The highest index a quorum of voters stores: this node counts with `own_match`,
    /// peers with their match index.
    pub(crate) fn committed(&self, own_match: Index) -> Index {
        self.joint().committed_index(|id| {
            if *id == self.me {
                Some(own_match)
            } else {
                self.progress.get(id).map(|p| p.match_index)
            }
        })
    }

    /// The highest heartbeat round a quorum of voters acknowledged; this node has seen
    /// `own_round`.
    pub(crate) fn read_confirmed(&self, own_round: u64) -> u64 {
        self.joint().committed_index(|id| {
            if *id == self.me {
                Some(own_round)
            } else {
                self.progress.get(id).map(|p| p.read_acked)
            }
        })
    }

    /// Whether a quorum of voters (this node included) answered since the last
    /// CheckQuorum round.
    pub(crate) fn quorum_active(&self) -> bool {
        self.joint().vote_result(|id| {
            Some(*id == self.me || self.progress.get(id).is_some_and(|p| p.recent_active))
        }) == VoteResult::Won
    }

    /// Records an answer to this node's (pre-)vote request and tallies the election.
    pub(crate) fn record_vote(&mut self, from: NodeId, granted: bool) -> VoteResult {
        self.votes.insert(from, granted);
        self.tally()
    }

    /// The election so far; only voters count.
    pub(crate) fn tally(&self) -> VoteResult {
        self.joint().vote_result(|id| self.votes.get(id).copied())
    }

    /// Forgets the votes of the last election.
    pub(crate) fn reset_votes(&mut self) {
        self.votes.clear();
    }
}
