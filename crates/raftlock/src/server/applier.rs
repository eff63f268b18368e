//! The [`Applier`] the Raft node runs: applies each entry to the shared state machine,
//! then wakes the acquires it ended, records its events and updates the metrics.

use std::sync::Arc;

use bytes::Bytes;
use raftlock_raft::{Applier, ApplierError, Index, SnapshotMeta, Term};

use super::state::Shared;
use crate::machine::codec::encode_response;
use crate::machine::LockMachine;

/// The lock service's applier.
#[derive(Debug)]
pub struct LockApplier {
    shared: Arc<Shared>,
}

impl LockApplier {
    /// An applier of the state in `shared`.
    pub fn new(shared: Arc<Shared>) -> Self {
        LockApplier { shared }
    }
}

impl Applier for LockApplier {
    fn apply(&mut self, index: Index, term: Term, command: &Bytes) -> Result<Bytes, ApplierError> {
        let (response, events, gauges, stats) = {
            let mut m = self.shared.write();
            let response = m.apply_bytes(index, term, command);
            (response, m.take_events(), m.gauges(), m.stats())
        };
        if !events.is_empty() {
            self.shared.waits.publish(&events);
            self.shared.events.extend(events);
        }
        self.shared.metrics.observe(gauges, stats);
        Ok(Bytes::from(encode_response(&response)))
    }

    fn snapshot(&mut self) -> Result<(Index, Bytes), ApplierError> {
        let m = self.shared.read();
        Ok((m.applied(), Bytes::from(m.snapshot())))
    }

    fn restore(&mut self, meta: &SnapshotMeta, data: &Bytes) -> Result<(), ApplierError> {
        let restored = LockMachine::restore(data, meta.last_index)
            .map_err(|e| ApplierError(format!("restoring snapshot {}: {e}", meta.last_index)))?;
        let (gauges, stats) = (restored.gauges(), restored.stats());
        *self.shared.write() = restored;
        self.shared.events.restored(meta.last_index);
        // Outcomes between the old state and the snapshot produced no events here.
        self.shared.waits.recheck_all();
        self.shared.metrics.observe(gauges, stats);
        Ok(())
    }
}
