//! The leader's chores: anchoring its clock when it takes over, and proposing the
//! expiry of what is due (sessions, waits, lock-delays) as its clock passes deadlines.
//! The state machine re-checks every deadline when it applies the expiry.

use std::sync::Arc;
use std::time::Duration;

use raftlock_raft::Role;

use super::clock::{anchor_base, wall_ms};
use super::proposer::Proposer;
use super::state::Shared;
use crate::machine::limits::MAX_EXPIRE_BATCH;
use crate::machine::Command;

/// Anchors the leader's clock in each term it leads, once it has applied every entry of
/// earlier terms (a ReadIndex round commits its first entry and waits for the apply).
pub async fn anchor_clock(proposer: Proposer, shared: Arc<Shared>) {
    let raft = proposer.raft().clone();
    let mut changes = raft.leader_change_channel();
    loop {
        let observed = changes.borrow_and_update().clone();
        if observed.role == Role::Leader && proposer.clock().anchored_term() != Some(observed.term)
        {
            match raft.read_index().await {
                Ok(_) if raft.get_state() == (observed.term, true) => {
                    let base = {
                        let m = shared.read();
                        anchor_base(m.now_ms(), m.gauges().sessions, wall_ms())
                    };
                    proposer.clock().anchor(observed.term, base);
                    tracing::info!(
                        term = observed.term,
                        base_ms = base,
                        "leader clock anchored"
                    );
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "anchoring the leader clock: read barrier failed; retrying");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            }
        }
        if changes.changed().await.is_err() {
            return;
        }
    }
}

/// Every `interval`, on the leader: proposes the expiry of whatever its clock says is due.
pub async fn expire_due(proposer: Proposer, shared: Arc<Shared>, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let Ok(term) = proposer.leader_term() else {
            continue;
        };
        let Some(now) = proposer.clock().stamp(term) else {
            continue;
        };
        let due = shared.read().due(now, MAX_EXPIRE_BATCH);
        if due.is_empty() {
            continue;
        }
        let count = due.len();
        let command = Command::Expire {
            sessions: due.sessions,
            waits: due.waits,
            locks: due.locks,
        };
        match proposer.propose(command).await {
            Ok(response) => tracing::debug!(count, ?response, "expired what was due"),
            Err(e) => tracing::debug!(count, error = %e, "proposing an expiry failed"),
        }
    }
}
