//! Elections (the original's ElectionManager): randomized timeouts, PreVote, vote
//! requests and answers, CheckQuorum, and every role transition.

use std::time::Duration;

use super::quorum::VoteResult;
use super::RaftCore;
use crate::message::{Message, MessageBody, RequestVote, RequestVoteResponse};
use crate::types::{ElectionReason, Entry, NodeId, Role, Term};

/// This node started campaigning (reported in [`Ready::elections`](super::Ready::elections)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ElectionStart {
    /// The term campaigned for: the new term of a real election, or the term a pre-vote
    /// round asks about (the current term + 1; the term itself does not change).
    pub term: Term,
    /// Why the campaign started.
    pub reason: ElectionReason,
}

impl RaftCore {
    /// A follower or (pre-)candidate whose timeout expires starts an election if it may
    /// (see `may_campaign`): learners, removed nodes and joining nodes do not.
    pub(super) fn tick_election(&mut self) {
        self.timers.election_elapsed += 1;
        if self.timers.election_elapsed >= self.timers.randomized_timeout {
            self.timers.election_elapsed = 0;
            if self.may_campaign() {
                self.campaign();
            } else {
                self.reset_election_timer();
            }
        }
    }

    /// Whether this node may start an election: it is a voter of its latest
    /// configuration, or that configuration is not committed yet (as far as this node
    /// knows) and it is a voter of the committed one. Thesis §4.2.2: "a server that is not
    /// part of its own latest configuration should still start new elections, as it
    /// might still be needed until the C_new entry is committed"; it counts only the
    /// votes of its latest configuration, so not its own. Without this, a leader that
    /// appended a C_new leaving itself out and crashed before replicating it deadlocks
    /// the cluster: the other voters of the committed joint configuration need its vote,
    /// which its longer log refuses them, and it never campaigns (simulator seed 199,
    /// 3 nodes, profile reconfig: no leader for the 3 s after healing).
    fn may_campaign(&self) -> bool {
        self.tracker.is_voter(&self.id)
            || (self.log.configs.effective().index > self.state.commit
                && self.committed_membership().is_voter(&self.id))
    }

    /// The leader heartbeats and, once per election timeout, checks that a majority is
    /// still answering (CheckQuorum); if not, it steps down so that clients are not held
    /// by a leader that can no longer commit.
    pub(super) fn tick_leader(&mut self) {
        self.tick_transfer();
        self.timers.heartbeat_elapsed += 1;
        self.timers.election_elapsed += 1;
        if self.timers.election_elapsed >= self.config.options.election_tick_count {
            self.timers.election_elapsed = 0;
            if self.config.feature_flags.check_quorum && !self.quorum_active() {
                tracing::info!(
                    term = self.state.term,
                    "leader lost contact with a quorum; stepping down"
                );
                self.become_follower(self.state.term, None);
                return;
            }
            for p in self.tracker.progress.values_mut() {
                p.recent_active = false;
            }
        }
        if self.timers.heartbeat_elapsed >= self.config.options.heartbeat_tick_count {
            self.timers.heartbeat_elapsed = 0;
            self.broadcast_heartbeat();
            self.tick_snapshot_transfers();
        }
    }

    /// CheckQuorum on the clock: whether no heartbeat round sent in the last two election
    /// timeouts (the longest randomized one) has been acknowledged by a majority. The
    /// tick-based check above runs only as ticks arrive; a leader whose process was
    /// stopped, or whose event loop stalled, comes back with its ticks behind real time.
    /// By then its followers have elected another leader, and every proposal it accepted
    /// before its next tick would be lost, leaving the client uncertain instead of
    /// redirected. Two election timeouts never trip a leader whose followers still answer
    /// (they answer every heartbeat), so this check only acts where the tick-based one
    /// would, later.
    pub(super) fn quorum_contact_lost(&self) -> bool {
        self.config.feature_flags.check_quorum
            && !self.tracker.is_sole_voter()
            && matches!(
                (self.clock, self.reads.quorum_deadline),
                (Some(now), Some(deadline)) if now > deadline
            )
    }

    /// Two election timeouts, the longest a follower waits before campaigning.
    pub(super) fn quorum_timeout(&self) -> Duration {
        let options = &self.config.options;
        options
            .nominal_tick_interval
            .saturating_mul(options.election_tick_count.saturating_mul(2))
    }

    /// Whether a majority (this node included) answered since the last CheckQuorum round.
    fn quorum_active(&self) -> bool {
        self.tracker.quorum_active()
    }

    /// Whether this node leads, or heard from a leader within the (minimum) election
    /// timeout, or restarted less than an election timeout ago with the lease on. Such a
    /// node refuses votes and pre-votes of every term (thesis §4.2.3), so a partitioned
    /// node that comes back cannot disrupt a healthy leader, and a leader lease that
    /// counted this node stays sound.
    ///
    /// The guard runs on its own timer, which only contact with a leader restarts: a
    /// node that moved to a higher term through some other message (the answer to a stale
    /// AppendEntries, say) knows no leader in that term, yet the leader it heard last may
    /// still be serving lease reads that counted it. Keyed on "knows a leader" instead,
    /// the guard dropped at that moment and the node granted a vote that let a second
    /// leader commit while the first still served reads from its lease, whenever PreVote
    /// was off.
    pub(super) fn vote_guard_holds(&self) -> bool {
        let flags = &self.config.feature_flags;
        if !(flags.check_quorum || flags.pre_vote_enabled) {
            return false;
        }
        let timeout = self.config.options.election_tick_count;
        if self.bug(|b| b.guard_follows_known_leader) {
            // The rule before the fix: a known leader and a fresh election timer, or the
            // restart guard still running.
            let restart_guard = self.restarted_with_lease && self.timers.now < u64::from(timeout);
            return self.state.role == Role::Leader
                || restart_guard
                || (self.state.leader.is_some() && self.timers.election_elapsed < timeout);
        }
        self.state.role == Role::Leader || self.timers.since_leader_contact < timeout
    }

    pub(super) fn reset_election_timer(&mut self) {
        let base = self.config.options.election_tick_count as u64;
        self.timers.election_elapsed = 0;
        self.timers.randomized_timeout = self.rand.gen_range(base, 2 * base) as u32;
    }

    /// The election timeout expired: starts a pre-election, or a real one when PreVote is
    /// off.
    fn campaign(&mut self) {
        if self.config.feature_flags.pre_vote_enabled {
            self.note_election(self.state.term + 1, ElectionReason::Timeout);
            self.become_pre_candidate();
        } else {
            self.become_candidate(ElectionReason::Timeout);
        }
    }

    /// Reports a campaign in the next `Ready`.
    fn note_election(&mut self, term: Term, reason: ElectionReason) {
        self.elections.push(ElectionStart { term, reason });
    }

    /// Applies the term rules of §5.1 before a message is handled: a newer term makes this
    /// node a follower (except for pre-votes, which change nothing), and an older term is
    /// answered so that a stale sender learns of the newer one. Returns whether the
    /// message should be handled further.
    pub(super) fn step_term(&mut self, m: &Message) -> bool {
        use std::cmp::Ordering;
        match m.term.cmp(&self.state.term) {
            Ordering::Equal => true,
            Ordering::Greater => {
                if let MessageBody::RequestVote(r) = &m.body {
                    if self.vote_guard_holds() && !r.transfer {
                        tracing::debug!(from = %m.from, term = m.term, "ignoring vote request: a leader is live");
                        return false;
                    }
                }
                match &m.body {
                    // A pre-vote request never changes our term; a granted pre-vote answer
                    // carries the term the pre-candidate is about to use.
                    MessageBody::RequestVote(r) if r.pre_vote => {}
                    MessageBody::RequestVoteResponse(r) if r.pre_vote && r.granted => {}
                    MessageBody::AppendEntries(_)
                    | MessageBody::Heartbeat(_)
                    | MessageBody::InstallSnapshot(_) => {
                        self.become_follower(m.term, Some(m.from.clone()));
                    }
                    _ => self.become_follower(m.term, None),
                }
                true
            }
            Ordering::Less => {
                match &m.body {
                    MessageBody::RequestVote(r) if r.pre_vote => {
                        let body = MessageBody::RequestVoteResponse(RequestVoteResponse {
                            pre_vote: true,
                            granted: false,
                        });
                        self.send(m.from.clone(), body);
                    }
                    MessageBody::AppendEntries(_)
                    | MessageBody::Heartbeat(_)
                    | MessageBody::InstallSnapshot(_)
                        if self.config.feature_flags.check_quorum
                            || self.config.feature_flags.pre_vote_enabled =>
                    {
                        // A stale leader learns our term from the answer and steps down.
                        // Without this, a node whose term rose while partitioned could never
                        // rejoin: its pre-votes are refused and it ignores the old leader.
                        let body = MessageBody::HeartbeatResponse(Default::default());
                        self.send(m.from.clone(), body);
                    }
                    _ => {}
                }
                false
            }
        }
    }

    pub(super) fn handle_request_vote(&mut self, from: NodeId, term: Term, req: RequestVote) {
        // A node votes once per term: for the candidate it already voted for, or for anyone
        // if it has not voted and knows no leader. A pre-vote for a future term is granted
        // on the log check alone, since it changes nothing.
        // A vote already cast is repeated (the candidate may have lost the answer); nothing
        // new is granted while the guard holds.
        let already_voted = !req.pre_vote && self.state.voted_for.as_ref() == Some(&from);
        // A campaign the leader started with `TimeoutNow` passes the guard: that leader
        // gave up its lease before asking (see `transfer`).
        let transfer = req.transfer && !req.pre_vote;
        if self.vote_guard_holds() && !already_voted && !transfer {
            tracing::debug!(from = %from, term, pre_vote = req.pre_vote, "refusing vote: a leader was heard within the election timeout");
            let body = MessageBody::RequestVoteResponse(RequestVoteResponse {
                pre_vote: req.pre_vote,
                granted: false,
            });
            self.send(from, body);
            return;
        }
        let can_vote = self.state.voted_for.as_ref() == Some(&from)
            || (self.state.voted_for.is_none() && (self.state.leader.is_none() || transfer))
            || (req.pre_vote && term > self.state.term)
            || self.bug(|b| b.grant_two_votes_per_term);
        let granted = can_vote
            && (self
                .log
                .is_up_to_date(req.last_log_index, req.last_log_term)
                || self.bug(|b| b.vote_without_log_check));
        let answer = |granted| {
            MessageBody::RequestVoteResponse(RequestVoteResponse {
                pre_vote: req.pre_vote,
                granted,
            })
        };
        if req.pre_vote {
            // Answer in the pre-candidate's future term when granting, so it can tell the
            // answer belongs to its campaign; in ours when refusing, so it learns our term.
            let mut m = self.message(from, answer(granted));
            if granted {
                m.term = term;
            }
            self.outbox.push(m);
        } else if granted {
            if self.bug(|b| b.grant_two_votes_per_term) {
                self.state.voted_for = None; // forget the earlier vote of this term
            }
            self.state.vote_for(from.clone());
            self.reset_election_timer();
            // The vote must be durable before the candidate can count it.
            self.send_after_persist(from, answer(true));
        } else {
            self.send(from, answer(false));
        }
    }

    pub(super) fn handle_vote_response(
        &mut self,
        from: NodeId,
        term: Term,
        resp: RequestVoteResponse,
    ) {
        let expected_role = if resp.pre_vote {
            Role::PreCandidate
        } else {
            Role::Candidate
        };
        if self.state.role != expected_role {
            return;
        }
        // Granted pre-votes arrive in our next term; everything else in ours.
        let campaign_term = if resp.pre_vote {
            self.state.term + 1
        } else {
            self.state.term
        };
        if resp.granted && term != campaign_term {
            return;
        }
        match self.tracker.record_vote(from, resp.granted) {
            VoteResult::Won if resp.pre_vote => self.become_candidate(ElectionReason::PreVoteWon),
            VoteResult::Won => self.become_leader(),
            VoteResult::Lost => self.become_follower(self.state.term, None),
            VoteResult::Pending => {}
        }
    }

    /// Becomes a follower in `term` (entering it if newer) with the given leader.
    pub(super) fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        let was_leader = self.state.role == Role::Leader;
        if term > self.state.term {
            self.state.enter_term(term);
        }
        self.state.role = Role::Follower;
        self.state.leader = leader;
        if was_leader {
            self.reads_on_step_down();
        }
        self.tracker.reset_votes();
        self.tracker.progress.clear();
        self.transfer = None;
        self.uncommitted_bytes = 0;
        self.reset_election_timer();
    }

    /// Asks for pre-votes for `term + 1` without changing the term (thesis §9.6).
    fn become_pre_candidate(&mut self) {
        tracing::debug!(term = self.state.term, "starting pre-vote");
        self.state.role = Role::PreCandidate;
        self.state.leader = None;
        self.tracker.progress.clear();
        self.tracker.reset_votes();
        self.reset_election_timer();
        self.request_votes(true, false);
    }

    /// Starts a real election in a new term, voting for itself.
    pub(super) fn become_candidate(&mut self, reason: ElectionReason) {
        let term = self.state.term + 1;
        tracing::debug!(term, ?reason, "starting election");
        self.note_election(term, reason);
        self.state.enter_term(term);
        self.state.role = Role::Candidate;
        self.state.vote_for(self.id.clone());
        self.tracker.progress.clear();
        self.tracker.reset_votes();
        self.reset_election_timer();
        self.request_votes(false, reason == ElectionReason::Transfer);
    }

    fn request_votes(&mut self, pre_vote: bool, transfer: bool) {
        if self.tracker.record_vote(self.id.clone(), true) == VoteResult::Won {
            // A single-node cluster wins at once.
            if pre_vote {
                self.become_candidate(ElectionReason::PreVoteWon);
            } else {
                self.become_leader();
            }
            return;
        }
        let req = RequestVote {
            pre_vote,
            last_log_index: self.log.last_index(),
            last_log_term: self.log.last_term(),
            transfer,
        };
        for peer in self.tracker.voting_peers() {
            let body = MessageBody::RequestVote(req.clone());
            if pre_vote {
                let mut m = self.message(peer, body);
                m.term = self.state.term + 1;
                self.outbox.push(m);
            } else {
                // The candidate's new term and self-vote must be durable first.
                self.send_after_persist(peer, body);
            }
        }
    }

    /// Takes office: resets every follower's progress, appends the no-op of its term (so
    /// entries of earlier terms can be committed, §5.4.2) and replicates it.
    pub(super) fn become_leader(&mut self) {
        debug_assert_eq!(self.state.role, Role::Candidate);
        tracing::info!(term = self.state.term, "became leader");
        self.state.role = Role::Leader;
        self.state.leader = Some(self.id.clone());
        self.tracker.reset_votes();
        self.transfer = None;
        self.timers.election_elapsed = 0;
        self.timers.heartbeat_elapsed = 0;
        self.uncommitted_bytes = 0;
        self.reads_on_taking_office();
        // Winning the election is contact with a majority.
        self.reads.quorum_deadline = self
            .clock
            .map(|now| now.saturating_add(self.quorum_timeout()));
        let next = self.log.last_index() + 1;
        let max_inflight = self.config.tuning.max_inflight_msgs;
        self.tracker.reset_progress(next, max_inflight);
        let noop = Entry::noop(next, self.state.term);
        self.log.append([noop]);
        // A single-node cluster may commit as soon as the no-op is durable.
        self.maybe_commit();
        self.broadcast_append();
    }
}
