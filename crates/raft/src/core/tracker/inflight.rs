//! The window of AppendEntries in flight to one follower: the last index each carried, in
//! send order, bounded by `max_inflight_msgs`.

use std::collections::VecDeque;

use crate::types::Index;

#[derive(Debug, Clone)]
pub(crate) struct Inflights {
    last_indices: VecDeque<Index>,
    capacity: usize,
}

impl Inflights {
    pub(crate) fn new(capacity: usize) -> Self {
        Inflights {
            last_indices: VecDeque::with_capacity(capacity.min(1024)),
            capacity,
        }
    }

    pub(crate) fn full(&self) -> bool {
        self.last_indices.len() >= self.capacity
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.last_indices.is_empty()
    }

    pub(crate) fn len(&self) -> usize {
        self.last_indices.len()
    }

    /// Records a request whose last entry is `last`.
    pub(crate) fn add(&mut self, last: Index) {
        debug_assert!(!self.full(), "sending past the in-flight window");
        debug_assert!(self.last_indices.back().is_none_or(|b| *b < last));
        self.last_indices.push_back(last);
    }

    /// Frees every request acknowledged by a response covering `index`.
    pub(crate) fn free_le(&mut self, index: Index) {
        while self.last_indices.front().is_some_and(|f| *f <= index) {
            self.last_indices.pop_front();
        }
    }

    /// Frees the oldest request (its response was probably lost), so that a heartbeat
    /// response can unblock a full window.
    pub(crate) fn free_first(&mut self) {
        self.last_indices.pop_front();
    }

    pub(crate) fn reset(&mut self) {
        self.last_indices.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_fills_and_frees_in_order() {
        let mut w = Inflights::new(3);
        w.add(2);
        w.add(5);
        w.add(9);
        assert!(w.full());
        w.free_le(4);
        assert_eq!(w.len(), 2);
        assert!(!w.full());
        w.free_le(4); // duplicate response: harmless
        assert_eq!(w.len(), 2);
        w.free_first();
        assert_eq!(w.len(), 1);
        w.free_le(100);
        assert_eq!(w.len(), 0);
    }
}
