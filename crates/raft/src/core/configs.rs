//! The configurations in the log: which configuration is in effect, and where each came
//! from. A configuration takes effect as soon as its entry is appended, committed or not
//! (thesis §4.1), so the log owns this index of its configuration entries: appending one
//! switches to it, a truncation that removes it reverts to the one before, compaction
//! folds old ones into the base, and a snapshot replaces the base with the membership it
//! carries. Every change of the log goes through [`RaftLog`](super::log::RaftLog), which
//! keeps this in step, so no path can forget to revert.

use crate::membership::Membership;
use crate::types::{Entry, EntryKind, Index, Term};

/// One configuration and the log position (index and term) it was set at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ConfigAt {
    pub(crate) index: Index,
    pub(crate) term: Term,
    pub(crate) membership: Membership,
}

#[derive(Debug)]
pub(crate) struct ConfigLog {
    /// The configuration at the log's start: from the snapshot, or the bootstrap peers.
    base: ConfigAt,
    /// Configuration entries after the base still in the log, in log order.
    entries: Vec<ConfigAt>,
    /// Bumped at every change of the configuration in effect, so the core notices cheaply.
    generation: u64,
    /// Injected bug: a truncation keeps the configurations it removes.
    pub(crate) keep_on_truncate: bool,
    /// Whether the base is a configuration the cluster replicated (a configuration entry,
    /// or a snapshot's membership) rather than this node's configured peers. A bootstrap
    /// configuration is in no log, so a joining node, whose peers are empty, cannot know
    /// the configuration below the first configuration entry it receives; what it does
    /// not know it must not write into a snapshot (the simulator caught a joined node's
    /// snapshot claiming an empty configuration, seed 10032, 7 nodes, lossy).
    pub(crate) base_known: bool,
}

impl ConfigLog {
    /// The configurations of a log that starts after `base` and holds `entries`.
    pub(crate) fn new(base: ConfigAt, entries: &[Entry]) -> Self {
        let mut log = ConfigLog {
            base,
            entries: Vec::new(),
            generation: 0,
            keep_on_truncate: false,
            base_known: false,
        };
        for e in entries {
            log.appended(e);
        }
        log
    }

    /// The configuration in effect: the latest in the log.
    pub(crate) fn effective(&self) -> &ConfigAt {
        self.entries.last().unwrap_or(&self.base)
    }

    /// The configuration in effect at `index` (the latest set at or before it).
    pub(crate) fn at(&self, index: Index) -> &ConfigAt {
        self.entries
            .iter()
            .rev()
            .find(|c| c.index <= index)
            .unwrap_or(&self.base)
    }

    /// The configuration at `index` if the cluster replicated it, `None` if it is this
    /// node's bootstrap fallback (see `base_known`): what a snapshot at `index` carries.
    pub(crate) fn replicated_at(&self, index: Index) -> Option<&Membership> {
        match self.entries.iter().rev().find(|c| c.index <= index) {
            Some(c) => Some(&c.membership),
            None => self.base_known.then_some(&self.base.membership),
        }
    }

    /// Changes whenever the configuration in effect does.
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// Notes an appended entry: a configuration entry takes effect at once.
    pub(crate) fn appended(&mut self, e: &Entry) {
        if e.kind != EntryKind::ConfigChange {
            return;
        }
        match Membership::decode(&e.data) {
            Ok(membership) => {
                debug_assert!(self.effective().index < e.index);
                self.entries.push(ConfigAt {
                    index: e.index,
                    term: e.term,
                    membership,
                });
                self.generation += 1;
            }
            // Peer input is checked before it reaches the core and storage checksums
            // what it returns, so this is a bug elsewhere; the entry is kept in the log
            // (removing it would fork the log) but changes nothing.
            Err(err) => {
                tracing::error!(index = e.index, %err, "configuration entry does not decode; ignored")
            }
        }
    }

    /// Entries from `from` on were removed: configurations set there are undone, and the
    /// one before is in effect again.
    pub(crate) fn truncated(&mut self, from: Index) {
        if self.keep_on_truncate {
            return;
        }
        let before = self.entries.len();
        self.entries.retain(|c| c.index < from);
        if self.entries.len() != before {
            self.generation += 1;
        }
    }

    /// The log now starts after `index`: configurations up to it fold into the base.
    pub(crate) fn compacted(&mut self, index: Index) {
        let folded = self.entries.iter().take_while(|c| c.index <= index).count();
        if folded > 0 {
            if let Some(last) = self.entries.drain(..folded).next_back() {
                self.base = last;
                self.base_known = true;
            }
        }
    }

    /// A snapshot ending at (`index`, `term`) with `membership` replaced the log up to
    /// `index`; `kept_log` says whether the entries after it stayed.
    pub(crate) fn installed(
        &mut self,
        index: Index,
        term: Term,
        membership: Membership,
        kept_log: bool,
    ) {
        if kept_log {
            self.entries.retain(|c| c.index > index);
        } else {
            self.entries.clear();
        }
        self.base = ConfigAt {
            index,
            term,
            membership,
        };
        self.generation += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::NodeId;

    fn m(voters: &str) -> Membership {
        Membership::new(voters.split_whitespace().map(NodeId::from), [])
    }

    fn cfg_entry(index: Index, term: Term, voters: &str) -> Entry {
        Entry {
            index,
            term,
            kind: EntryKind::ConfigChange,
            data: m(voters).encode(),
        }
    }

    fn base(voters: &str) -> ConfigAt {
        ConfigAt {
            index: 0,
            term: 0,
            membership: m(voters),
        }
    }

    #[test]
    fn truncation_reverts_to_the_configuration_before() {
        let mut log = ConfigLog::new(base("a b c"), &[cfg_entry(3, 1, "a b")]);
        assert_eq!(log.effective().membership, m("a b"));
        log.appended(&cfg_entry(5, 2, "a"));
        assert_eq!(log.at(4).membership, m("a b"));
        log.truncated(5);
        assert_eq!(log.effective().index, 3);
        log.truncated(2);
        assert_eq!(log.effective().membership, m("a b c"));
        // Normal entries change nothing.
        let g = log.generation();
        log.appended(&Entry::normal(2, 3, "x"));
        assert_eq!(log.generation(), g);
    }

    #[test]
    fn compaction_folds_into_the_base_and_snapshots_replace_it() {
        let mut log = ConfigLog::new(
            base("a"),
            &[cfg_entry(2, 1, "a b"), cfg_entry(4, 1, "a b c")],
        );
        log.compacted(3);
        assert_eq!(log.at(0).membership, m("a b"), "the base is now index 2's");
        assert_eq!(log.effective().membership, m("a b c"));
        log.installed(10, 2, m("x y z"), false);
        assert_eq!(log.effective().membership, m("x y z"));
        assert_eq!(log.effective().index, 10);
    }
}
