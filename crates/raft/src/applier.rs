//! The [`Applier`] trait: the application's state machine (the original's `Applier`).

use bytes::Bytes;

use crate::types::{Index, SnapshotMeta, Term};

/// An error of the application's state machine.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("applier: {0}")]
pub struct ApplierError(pub String);

/// The replicated state machine. The node calls it from one dedicated thread, in log order,
/// so a slow state machine never stalls replication; calls never overlap.
///
/// ```
/// use bytes::Bytes;
/// use raftlock_raft::{Applier, ApplierError, Index, SnapshotMeta, Term};
///
/// #[derive(Default)]
/// struct Counter { value: u64, applied: Index }
///
/// impl Applier for Counter {
///     fn apply(&mut self, index: Index, _term: Term, command: &Bytes) -> Result<Bytes, ApplierError> {
///         self.value += command.len() as u64;
///         self.applied = index;
///         Ok(Bytes::from(self.value.to_string()))
///     }
///     fn snapshot(&mut self) -> Result<(Index, Bytes), ApplierError> {
///         Ok((self.applied, Bytes::from(self.value.to_string())))
///     }
///     fn restore(&mut self, meta: &SnapshotMeta, data: &Bytes) -> Result<(), ApplierError> {
///         let text = std::str::from_utf8(data).map_err(|e| ApplierError(e.to_string()))?;
///         self.value = text.parse().map_err(|e| ApplierError(format!("{e}")))?;
///         self.applied = meta.last_index;
///         Ok(())
///     }
/// }
/// ```
pub trait Applier: Send + 'static {
    /// Applies a committed command. The returned bytes are handed to the proposer that
    /// waits for its command's result.
    fn apply(&mut self, index: Index, term: Term, command: &Bytes) -> Result<Bytes, ApplierError>;

    /// Serializes the state machine; returns the index of the last entry applied to it
    /// (the snapshot covers everything up to that index).
    fn snapshot(&mut self) -> Result<(Index, Bytes), ApplierError>;

    /// Replaces the state machine with a snapshot.
    fn restore(&mut self, meta: &SnapshotMeta, data: &Bytes) -> Result<(), ApplierError>;

    /// Streaming form of [`Applier::snapshot`]: writes the serialized state to `out` and
    /// returns the index of the last entry applied to it. The node streams it into a
    /// temporary file and never holds the whole snapshot in memory, so a state machine
    /// larger than memory allows should override this (and [`Applier::restore_from`]).
    /// The default buffers [`Applier::snapshot`]'s bytes, which suits small state machines.
    fn snapshot_to(&mut self, out: &mut dyn std::io::Write) -> Result<Index, ApplierError> {
        let (index, data) = self.snapshot()?;
        out.write_all(&data)
            .map_err(|e| ApplierError(format!("writing the snapshot: {e}")))?;
        Ok(index)
    }

    /// Streaming form of [`Applier::restore`]: replaces the state machine with the snapshot
    /// read from `input` (exactly the bytes [`Applier::snapshot_to`] wrote, already checked
    /// against their size and CRC32C). The default reads them into memory and calls
    /// [`Applier::restore`].
    fn restore_from(
        &mut self,
        meta: &SnapshotMeta,
        input: &mut dyn std::io::Read,
    ) -> Result<(), ApplierError> {
        let mut data = Vec::new();
        input
            .read_to_end(&mut data)
            .map_err(|e| ApplierError(format!("reading the snapshot: {e}")))?;
        self.restore(meta, &Bytes::from(data))
    }
}
