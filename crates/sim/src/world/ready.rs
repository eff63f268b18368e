//! Draining one node's `Ready` as the runtime does: writes to the simulated disk, messages
//! to the network, entries to the state machine, snapshots built and restored; and the
//! invariants each of those changes touches.

use super::*;

impl World {
    /// Drains node `i`'s Ready and checks the invariants its changes touch.
    pub(crate) fn process(&mut self, i: usize) -> Result<(), Violation> {
        loop {
            let node = &mut self.nodes[i];
            let Some(core) = node.core.as_mut() else {
                return Ok(());
            };
            if !core.has_ready() {
                break;
            }
            let rd = core.ready();
            if self.cfg.trace {
                for e in &rd.elections {
                    println!("{:>8}ms n{i} campaigns: {e:?}", self.now);
                }
            }
            if let Some(w) = rd.write {
                self.inv.on_written(i, core, &w.log.entries)?;
                node.disk.submit(w);
                let (lo, hi) = (self.plan.disk_min_ms, self.plan.disk_max_ms);
                let latency = self.rng.gen_range(lo, hi + 1);
                let node = &mut self.nodes[i];
                node.disk_busy_until = node.disk_busy_until.max(self.now) + latency;
                let at = node.disk_busy_until - self.now;
                let incarnation = node.incarnation;
                self.schedule(
                    at,
                    Event::WriteDone {
                        node: i,
                        incarnation,
                    },
                );
            }
            // Snapshot chunks carry the bytes of the snapshot on disk; a chunk of one the
            // disk no longer holds is dropped, as the runtime does.
            let disk = &self.nodes[i].disk;
            let chunks: Vec<Message> = rd
                .snapshot_chunks
                .into_iter()
                .filter_map(|c| {
                    let (meta, offset) = c.source()?;
                    let data = disk.read_chunk(meta, offset, c.len)?;
                    Some(c.fill(data))
                })
                .collect();
            for m in rd.messages.into_iter().chain(chunks) {
                let Some(to) = self.index_of(&m.to) else {
                    continue; // an id no slot runs under (wiped): nobody listens
                };
                if self.deafen_on_timeout_now == Some(i)
                    && !self.healed
                    && matches!(m.body, raftlock_raft::MessageBody::TimeoutNow)
                {
                    self.deafen_on_timeout_now = None;
                    for b in 0..self.nodes.len() {
                        if b != i {
                            self.network.cut_one_way(b, i);
                        }
                    }
                    self.trace(|| format!("n{i} sent TimeoutNow: links into n{i} cut"));
                }
                for delay in self.network.route(i, to, &mut self.rng) {
                    self.schedule(delay, Event::Deliver(m.clone()));
                }
            }
            // `rd.snapshot` is restored once the write installing it is done (`WriteDone`).
            if !rd.read_states.is_empty() || !rd.failed_reads.is_empty() {
                self.reads_answered(i, &rd.read_states, &rd.failed_reads);
            }
            if let Some(upto) = rd.compact_to {
                self.nodes[i].disk.durable.log.retain(|e| e.index > upto);
            }
            for e in &rd.committed_entries {
                self.inv.on_apply(i, e)?;
                self.apply_to_kv(i, e)?;
                if self.inv.has_state_at(e.index) {
                    let h = self.nodes[i].kv.state_hash();
                    self.inv.on_state_at(i, e.index, h)?;
                }
            }
            let node = &mut self.nodes[i];
            let Some(core) = node.core.as_mut() else {
                return Ok(());
            };
            if let Some(last) = rd.committed_entries.last().map(|e| e.index) {
                if last <= node.last_applied {
                    return Err(Violation(format!(
                        "applied index of node {i} went backwards: {} -> {last}",
                        node.last_applied
                    )));
                }
                node.last_applied = last;
                core.on_applied(last);
            }
            let commit = core.commit_index();
            if commit < node.last_commit {
                return Err(Violation(format!(
                    "commit index of node {i} went backwards: {} -> {commit}",
                    node.last_commit
                )));
            }
            if commit > node.last_commit {
                let from = node.last_commit + 1;
                node.last_commit = commit;
                if let Some(core) = self.nodes[i].core.as_ref() {
                    let (nodes, ids) = (&self.nodes, &self.ids);
                    let holds =
                        |id: &NodeId, index, term, h| disk_holds(nodes, ids, id, index, term, h);
                    self.inv.on_commit(i, core, from, commit, holds)?;
                }
                self.on_configuration_committed();
            }
            let node = &mut self.nodes[i];
            let Some(core) = node.core.as_mut() else {
                return Ok(());
            };
            if core.role() == Role::Leader && node.last_role != Role::Leader {
                let term = core.term();
                self.inv.on_leader(i, core)?;
                self.trace(|| format!("n{i} became leader of term {term}"));
                self.maybe_crash_new_leader(i);
                if let Some((slow, fast)) = self.adversarial_clocks {
                    for k in 0..self.nodes.len() {
                        // Settle each clock at its old rate before changing the rate.
                        self.sync_clock(k);
                        self.nodes[k].tick_ms = if k == i { slow } else { fast };
                    }
                }
            }
            let node = &mut self.nodes[i];
            node.last_role = node.core.as_ref().map_or(Role::Follower, |c| c.role());
            let applied = node.last_applied;
            self.complete_reads(i, applied);
            if rd.snapshot_request.is_some() {
                // After `on_applied`: the state machine is exactly at the applied index.
                self.build_snapshot(i)?;
            }
        }
        if let Some(core) = self.nodes[i].core.as_ref() {
            let bootstrap = if self.bootstrap[i] {
                &self.initial
            } else {
                &self.empty
            };
            self.inv.check_node(i, core, bootstrap)?;
        }
        Ok(())
    }

    /// The latest committed configuration may have changed: members it removed are
    /// decommissioned from the clients' point of view (the load balancer drops them and
    /// operations waiting on them end uncertain), though the nodes keep running, as a
    /// removed server does until an operator stops it.
    fn on_configuration_committed(&mut self) {
        let (index, m) = self.inv.latest_committed_config();
        if index == self.seen_config {
            return;
        }
        let members = m.members();
        let text = m.to_string();
        self.seen_config = index;
        self.trace(|| format!("configuration {text} committed at {index}"));
        for s in 0..self.ids.len() {
            let id = self.ids[s].clone();
            let was_member = !self.removed_ids.contains(&id) && self.inv.was_committed_member(&id);
            if was_member && !members.contains(&id) {
                self.removed_ids.insert(id);
                self.clients_node_removed(s);
            }
        }
    }

    /// Restores node `i`'s state machine from a snapshot received from the leader.
    pub(super) fn restore_snapshot(
        &mut self,
        i: usize,
        snap: &raftlock_raft::Snapshot,
    ) -> Result<(), Violation> {
        let index = snap.meta.last_index;
        self.trace(|| format!("n{i} restores snapshot at {index}"));
        if self.nodes[i].kv.restore(&snap.data).is_none() {
            return Err(Violation(format!(
                "node {i} received a malformed snapshot at {index}"
            )));
        }
        let h = self.nodes[i].kv.state_hash();
        self.inv.on_state_at(i, index, h)?;
        self.clients_skip_to(i, index);
        let node = &mut self.nodes[i];
        node.last_applied = node.last_applied.max(index);
        node.last_commit = node.last_commit.max(index);
        if let Some(core) = node.core.as_mut() {
            core.on_applied(index);
        }
        Ok(())
    }

    /// Node `i` was asked for a snapshot: it captures its state machine at its applied
    /// index, and the snapshot becomes durable after a disk write (a crash first loses it).
    fn build_snapshot(&mut self, i: usize) -> Result<(), Violation> {
        let node = &mut self.nodes[i];
        let Some(core) = node.core.as_mut() else {
            return Ok(());
        };
        let index = core.applied_index();
        let Some(meta) = core.snapshot_meta_at(index) else {
            core.on_snapshot_failed();
            return Ok(());
        };
        self.inv.check_snapshot_meta(i, &meta)?;
        let snapshot = raftlock_raft::Snapshot {
            meta,
            data: node.kv.snapshot().into(),
        };
        let h = node.kv.state_hash();
        let incarnation = node.incarnation;
        self.inv.on_state_at(i, index, h)?;
        let latency = self
            .rng
            .gen_range(self.plan.disk_min_ms, self.plan.disk_max_ms * 3 + 1);
        self.schedule(
            latency,
            Event::SnapshotSaved {
                node: i,
                incarnation,
                snapshot,
            },
        );
        Ok(())
    }
}
