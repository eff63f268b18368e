//! The replicated state machine: the seed's `KeyValueStore`, an [`Applier`] over a map
//! that the HTTP handlers read through a shared handle.

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard};

use bytes::Bytes;
use raftlock_raft::{Applier, ApplierError, Index, SnapshotMeta, Term};
use serde::{Deserialize, Serialize};

use crate::command::{Applied, Command, Outcome};
use crate::snapshot;

/// The store's contents and how far the log has been applied to them.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct KvState {
    /// Last log index applied (or restored from a snapshot).
    pub applied: Index,
    /// The keys and their values.
    pub data: BTreeMap<String, String>,
}

impl KvState {
    fn apply(&mut self, command: Command) -> Outcome {
        match command {
            Command::Put { key, value } => {
                self.data.insert(key, value);
                Outcome::Stored
            }
            Command::Delete { key } => Outcome::Deleted {
                existed: self.data.remove(&key).is_some(),
            },
            Command::Cas { key, from, to } => {
                let current = self.data.get(&key);
                if current == from.as_ref() {
                    self.data.insert(key, to);
                    Outcome::Swapped
                } else {
                    Outcome::CasFailed {
                        current: current.cloned(),
                    }
                }
            }
        }
    }
}

/// A read handle on the store; clones share it.
#[derive(Clone, Debug, Default)]
pub struct StoreHandle(Arc<RwLock<KvState>>);

impl StoreHandle {
    /// Locks the state for reading. A panic while applying cannot leave the map half
    /// updated (each command is one map operation), so a poisoned lock is still readable.
    pub fn read(&self) -> RwLockReadGuard<'_, KvState> {
        self.0.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn with_mut<T>(&self, f: impl FnOnce(&mut KvState) -> T) -> T {
        f(&mut self.0.write().unwrap_or_else(PoisonError::into_inner))
    }
}

/// The applier the node runs: applies commands to the shared [`KvState`], snapshots it
/// as JSON.
#[derive(Debug, Default)]
pub struct KeyValueStore {
    state: StoreHandle,
}

impl KeyValueStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// A handle for readers.
    pub fn handle(&self) -> StoreHandle {
        self.state.clone()
    }
}

impl Applier for KeyValueStore {
    fn apply(&mut self, index: Index, _term: Term, data: &Bytes) -> Result<Bytes, ApplierError> {
        let outcome = match Command::decode(data) {
            Some(command) => self.state.with_mut(|s| {
                s.applied = index;
                s.apply(command)
            }),
            None => {
                self.state.with_mut(|s| s.applied = index);
                Outcome::Rejected {
                    reason: "not a raftkv command".into(),
                }
            }
        };
        Ok(Bytes::from(Applied { index, outcome }.encode()))
    }

    fn snapshot(&mut self) -> Result<(Index, Bytes), ApplierError> {
        let mut data = Vec::new();
        let index = self.snapshot_to(&mut data)?;
        Ok((index, Bytes::from(data)))
    }

    fn restore(&mut self, meta: &SnapshotMeta, data: &Bytes) -> Result<(), ApplierError> {
        self.restore_from(meta, &mut data.as_ref())
    }

    /// Streams the map into `out` ([`crate::snapshot`]'s format): readers keep reading
    /// meanwhile, and no copy of the store is made.
    fn snapshot_to(&mut self, out: &mut dyn std::io::Write) -> Result<Index, ApplierError> {
        let state = self.state.read();
        snapshot::write(
            out,
            state.applied,
            state.data.len() as u64,
            state.data.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        )
        .map_err(|e| ApplierError(format!("writing the snapshot: {e}")))?;
        Ok(state.applied)
    }

    /// Builds the new map from the stream, then swaps it in: readers see the old store
    /// until the new one is complete, and a bad snapshot changes nothing.
    fn restore_from(
        &mut self,
        meta: &SnapshotMeta,
        input: &mut dyn std::io::Read,
    ) -> Result<(), ApplierError> {
        let mut restored = snapshot::read(input).map_err(|e| {
            ApplierError(format!(
                "restoring the snapshot at {}: {e}",
                meta.last_index
            ))
        })?;
        restored.applied = meta.last_index;
        // The old map is dropped after the lock is released, so readers do not wait for
        // a large store's deallocation.
        let old = self.state.with_mut(|s| std::mem::replace(s, restored));
        drop(old);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(store: &mut KeyValueStore, index: Index, c: Command) -> Applied {
        let out = store.apply(index, 1, &Bytes::from(c.encode())).unwrap();
        Applied::decode(&out).unwrap()
    }

    #[test]
    fn put_delete_cas_follow_the_map() {
        let mut s = KeyValueStore::new();
        let put = |k: &str, v: &str| Command::Put {
            key: k.into(),
            value: v.into(),
        };
        assert_eq!(apply(&mut s, 1, put("a", "1")).outcome, Outcome::Stored);
        let cas = |from: Option<&str>, to: &str| Command::Cas {
            key: "a".into(),
            from: from.map(Into::into),
            to: to.into(),
        };
        assert_eq!(
            apply(&mut s, 2, cas(None, "x")).outcome,
            Outcome::CasFailed {
                current: Some("1".into())
            }
        );
        assert_eq!(
            apply(&mut s, 3, cas(Some("1"), "2")).outcome,
            Outcome::Swapped
        );
        assert_eq!(
            s.handle().read().data.get("a").map(String::as_str),
            Some("2")
        );
        let del = Command::Delete { key: "a".into() };
        assert_eq!(
            apply(&mut s, 4, del.clone()).outcome,
            Outcome::Deleted { existed: true }
        );
        assert_eq!(
            apply(&mut s, 5, del).outcome,
            Outcome::Deleted { existed: false }
        );
        assert_eq!(apply(&mut s, 6, cas(None, "new")).outcome, Outcome::Swapped);
        assert_eq!(s.handle().read().applied, 6);
    }

    #[test]
    fn a_foreign_entry_is_rejected_without_changing_state() {
        let mut s = KeyValueStore::new();
        let out = s.apply(1, 1, &Bytes::from_static(b"SET x=1")).unwrap();
        let applied = Applied::decode(&out).unwrap();
        assert!(matches!(applied.outcome, Outcome::Rejected { .. }));
        assert!(s.handle().read().data.is_empty());
    }

    #[test]
    fn snapshot_restores_into_a_fresh_store() {
        let mut s = KeyValueStore::new();
        for i in 1..=5u64 {
            apply(
                &mut s,
                i,
                Command::Put {
                    key: format!("k{i}"),
                    value: i.to_string(),
                },
            );
        }
        let (index, data) = s.snapshot().unwrap();
        assert_eq!(index, 5);
        let mut fresh = KeyValueStore::new();
        let meta = SnapshotMeta {
            last_index: 5,
            last_term: 1,
            membership: None,
        };
        fresh.restore(&meta, &data).unwrap();
        assert_eq!(fresh.handle().read().data, s.handle().read().data);
        assert!(fresh
            .restore(&meta, &Bytes::from_static(b"not json"))
            .is_err());
        assert_eq!(
            fresh.handle().read().data,
            s.handle().read().data,
            "a bad snapshot changes nothing"
        );
    }
}
