//! Helpers shared by the runtime tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use raftlock_raft::{Applier, ApplierError, Index, SnapshotMeta, Term};

/// A state machine that records the commands it applied.
#[derive(Clone, Default)]
pub struct Recorder {
    applied: Arc<Mutex<Vec<String>>>,
    last: Arc<Mutex<Index>>,
}

impl Recorder {
    pub fn commands(&self) -> Vec<String> {
        self.applied.lock().unwrap().clone()
    }
}

impl Applier for Recorder {
    fn apply(&mut self, index: Index, _term: Term, command: &Bytes) -> Result<Bytes, ApplierError> {
        let text = String::from_utf8_lossy(command).into_owned();
        let mut applied = self.applied.lock().unwrap();
        applied.push(text);
        *self.last.lock().unwrap() = index;
        Ok(Bytes::from(format!("applied {} commands", applied.len())))
    }

    fn snapshot(&mut self) -> Result<(Index, Bytes), ApplierError> {
        let data = self.applied.lock().unwrap().join("\n");
        Ok((*self.last.lock().unwrap(), Bytes::from(data)))
    }

    fn restore(&mut self, meta: &SnapshotMeta, data: &Bytes) -> Result<(), ApplierError> {
        let text = String::from_utf8_lossy(data);
        *self.applied.lock().unwrap() = if text.is_empty() {
            Vec::new()
        } else {
            text.split('\n').map(str::to_string).collect()
        };
        *self.last.lock().unwrap() = meta.last_index;
        Ok(())
    }
}
