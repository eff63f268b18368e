//! The end of a run: liveness once the faults stopped (one leader, a voter of a final,
//! simple configuration; every member converged), exactly-once application, and the
//! linearizability of the client history.

use super::*;

impl World {
    /// End-of-run checks: liveness after healing, exactly-once application, and the
    /// linearizability of the client history.
    pub(super) fn check_end(&mut self) -> Result<(), Violation> {
        if self.cfg.trace {
            for (i, n) in self.nodes.iter().enumerate() {
                if let Some(c) = n.core.as_ref() {
                    println!(
                        "end: slot {i} {} {:?} t{} last {} (term {:?}) commit {} applied {}; {} at {}",
                        c.id(),
                        c.role(),
                        c.term(),
                        c.last_index(),
                        c.term_at(c.last_index()),
                        c.commit_index(),
                        c.applied_index(),
                        c.membership(),
                        c.membership_index()
                    );
                }
            }
        }
        self.check_convergence()?;
        self.finish_clients()
    }

    /// After healing: exactly one leader, a voter of the final (latest committed)
    /// configuration, which is simple and is the one in effect on the leader; and every
    /// member of it applied everything the leader committed. Nodes the final
    /// configuration removed (or never added) are not asked to converge, but none of
    /// them may still lead.
    fn check_convergence(&self) -> Result<(), Violation> {
        let leaders: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| {
                self.nodes[i]
                    .core
                    .as_ref()
                    .is_some_and(|c| c.role() == Role::Leader)
            })
            .collect();
        let [leader] = leaders[..] else {
            return Err(Violation(format!(
                "liveness: {} leaders {LIVENESS_BOUND_TICKS} ticks after healing (expected exactly one): {:?}",
                leaders.len(),
                leaders.iter().map(|&i| self.ids[i].to_string()).collect::<Vec<_>>()
            )));
        };
        let Some(lc) = self.nodes[leader].core.as_ref() else {
            return Err(Violation("liveness: leader vanished".into()));
        };
        let (ci, fin) = self.inv.latest_committed_config();
        if fin.is_joint() || lc.membership().is_joint() {
            return Err(Violation(format!(
                "liveness: the configuration is still joint {LIVENESS_BOUND_TICKS} ticks after healing: committed {fin} at {ci}, in effect on the leader {}",
                lc.membership()
            )));
        }
        if !fin.is_voter(lc.id()) {
            return Err(Violation(format!(
                "liveness: leader {} is not a voter of the final configuration {fin}",
                lc.id()
            )));
        }
        let commit = lc.commit_index();
        if commit < lc.last_index() {
            return Err(Violation(format!(
                "liveness: leader n{leader} has not committed its log (commit {commit}, last {})",
                lc.last_index()
            )));
        }
        // By shape: after a restart from a snapshot the configuration's index is the
        // snapshot's, not its entry's.
        let shape = |m: &Membership| (m.voters.clone(), m.outgoing.clone(), m.learners.clone());
        if shape(lc.membership()) != shape(fin) || lc.membership_index() > commit {
            return Err(Violation(format!(
                "liveness: the leader's configuration {} (at {}) is not the latest committed {fin} (at {ci})",
                lc.membership(),
                lc.membership_index()
            )));
        }
        for id in fin.members() {
            let Some(i) = self.index_of(&id) else {
                return Err(Violation(format!(
                    "liveness: member {id} of the final configuration has no slot"
                )));
            };
            let Some(c) = self.nodes[i].core.as_ref() else {
                return Err(Violation(format!("liveness: node {id} is still down")));
            };
            if c.applied_index() < commit {
                return Err(Violation(format!(
                    "liveness: node {id} applied {} of {commit} committed entries {LIVENESS_BOUND_TICKS} ticks after healing",
                    c.applied_index()
                )));
            }
        }
        Ok(())
    }
}
