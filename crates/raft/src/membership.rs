//! Cluster membership as replicated state: who votes, who only learns, and how a
//! configuration travels in a [`EntryKind::ConfigChange`](crate::types::EntryKind) entry
//! and in a snapshot.
//!
//! A configuration is either simple (`outgoing` empty) or joint (thesis §4.3): while
//! joint, every decision (commit, election, CheckQuorum, read confirmation, the lease)
//! needs a majority of `voters` *and* a majority of `outgoing`. A voter of the outgoing
//! half may at the same time be a learner of the incoming one: that is a voter being
//! demoted, which keeps counting in the outgoing half until the joint phase ends.
//!
//! The encoding is versioned (`RLMB`, version 1) and carries each member's [`NodeInfo`]
//! (address and metadata), so the runtime can learn peers from the log.

use std::collections::{BTreeMap, BTreeSet};

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use crate::types::{NodeId, PeerConfig};

/// What the cluster knows about a member besides its id: where its peer transport
/// listens and opaque application metadata (a server's client address, say).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// `host:port` of the member's peer endpoint (may be empty when unknown).
    pub address: String,
    /// Application metadata, replicated with the configuration.
    pub metadata: BTreeMap<String, String>,
}

impl From<String> for NodeInfo {
    /// Info with this peer address and no metadata.
    fn from(address: String) -> Self {
        NodeInfo {
            address,
            metadata: BTreeMap::new(),
        }
    }
}

impl From<&str> for NodeInfo {
    /// Info with this peer address and no metadata.
    fn from(address: &str) -> Self {
        NodeInfo::from(address.to_string())
    }
}

/// A cluster configuration: simple, or joint while a change of voters is under way.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    /// The voters (of the incoming configuration, while joint).
    pub voters: BTreeSet<NodeId>,
    /// The voters of the outgoing configuration while joint; empty otherwise.
    pub outgoing: BTreeSet<NodeId>,
    /// Members that receive the log but never vote or count toward any quorum.
    pub learners: BTreeSet<NodeId>,
    /// Address and metadata of members (entries of non-members are dropped on change).
    pub nodes: BTreeMap<NodeId, NodeInfo>,
    /// Ids of nodes that were members and were removed. They can never be members again:
    /// a node that comes back under a removed id would carry a log and a vote the
    /// cluster no longer accounts for (openraft's documented pitfall), so a returning
    /// machine must join under a fresh id.
    #[serde(default)]
    pub retired: BTreeSet<NodeId>,
}

/// Why a configuration or a change of it was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MembershipError {
    /// A configuration must keep at least one voter.
    #[error("membership: a configuration needs at least one voter")]
    NoVoters,
    /// A node cannot be both a voter and a learner of the same configuration.
    #[error("membership: {id} cannot be both a voter and a learner")]
    LearnerIsVoter {
        /// The node listed twice.
        id: NodeId,
    },
    /// Node ids must not be empty.
    #[error("membership: empty node id")]
    EmptyId,
    /// Another change has not committed yet (one change at a time).
    #[error("membership: another change is pending (configuration entry at index {index} is not committed yet); retry once it is")]
    ChangePending {
        /// Index of the pending configuration entry.
        index: u64,
    },
    /// The leader has not yet committed an entry of its own term, so it does not know the
    /// committed configuration yet (Ongaro, "bug in single-server membership changes").
    #[error("membership: the leader has not committed an entry of its term yet; retry shortly")]
    TermNotCommitted,
    /// A new voter has not caught up with the leader's log: add it as a learner, wait,
    /// then promote it.
    #[error("membership: {id} has not caught up (it holds up to {matched}, the leader's log ends at {last}); add it as a learner and promote it once it has")]
    NotCaughtUp {
        /// The node to become a voter.
        id: NodeId,
        /// The highest index known replicated to it.
        matched: u64,
        /// The leader's last index.
        last: u64,
    },
    /// The node named is not a member of the configuration.
    #[error("membership: {id} is not a member")]
    UnknownNode {
        /// The node named.
        id: NodeId,
    },
    /// The node is a voter already, so it cannot be added as a learner.
    #[error("membership: {id} is a voter already")]
    AlreadyVoter {
        /// The node named.
        id: NodeId,
    },
    /// A leadership transfer target must be another voter.
    #[error("membership: cannot transfer leadership to {id}: {reason}")]
    BadTransferTarget {
        /// The target named.
        id: NodeId,
        /// Why it cannot lead.
        reason: &'static str,
    },
    /// The id belonged to a member that was removed; ids are never reused.
    #[error("membership: {id} was removed from this cluster and its id cannot be reused; give the node a new id and an empty data directory")]
    Retired {
        /// The retired id.
        id: NodeId,
    },
    /// The change would leave fewer reachable voters than a quorum of the new
    /// configuration (or of the current one, which the joint phase also needs), so it
    /// could not commit and the cluster would stall. Repeat it with `force` to proceed.
    #[error("membership: after this change only {reachable} of {voters} voters would be reachable, fewer than the {needed} a quorum needs; repeat with force to proceed anyway")]
    WouldLoseQuorum {
        /// Voters of the configuration that would lack a quorum.
        voters: usize,
        /// How many of them the leader heard from recently.
        reachable: usize,
        /// The quorum size.
        needed: usize,
    },
    /// A configuration could not be decoded.
    #[error("membership: malformed configuration: {reason}")]
    Malformed {
        /// What was wrong.
        reason: String,
    },
}

const MAGIC: &[u8; 4] = b"RLMB";
/// Version 2 adds the retired ids; version 1 (no retired ids) still decodes.
const VERSION: u8 = 2;

impl Membership {
    /// A simple configuration of `voters` and `learners`.
    pub fn new(
        voters: impl IntoIterator<Item = NodeId>,
        learners: impl IntoIterator<Item = NodeId>,
    ) -> Self {
        Membership {
            voters: voters.into_iter().collect(),
            outgoing: BTreeSet::new(),
            learners: learners.into_iter().collect(),
            nodes: BTreeMap::new(),
            retired: BTreeSet::new(),
        }
    }

    /// The bootstrap configuration of a cluster: every configured peer votes.
    pub fn from_peers(peers: &[PeerConfig]) -> Self {
        Membership {
            voters: peers.iter().map(|p| p.id.clone()).collect(),
            outgoing: BTreeSet::new(),
            learners: BTreeSet::new(),
            nodes: peers
                .iter()
                .map(|p| {
                    let info = NodeInfo {
                        address: p.address.clone(),
                        metadata: BTreeMap::new(),
                    };
                    (p.id.clone(), info)
                })
                .collect(),
            retired: BTreeSet::new(),
        }
    }

    /// Whether a change of voters is under way.
    pub fn is_joint(&self) -> bool {
        !self.outgoing.is_empty()
    }

    /// Whether `id` votes in either half.
    pub fn is_voter(&self, id: &NodeId) -> bool {
        self.voters.contains(id) || self.outgoing.contains(id)
    }

    /// Whether `id` is a learner and not a voter of either half.
    pub fn is_learner(&self, id: &NodeId) -> bool {
        self.learners.contains(id) && !self.is_voter(id)
    }

    /// Whether `id` is in the configuration at all.
    pub fn contains(&self, id: &NodeId) -> bool {
        self.is_voter(id) || self.learners.contains(id)
    }

    /// Every member once, in order: voters of both halves and learners.
    pub fn members(&self) -> BTreeSet<NodeId> {
        self.voters
            .iter()
            .chain(&self.outgoing)
            .chain(&self.learners)
            .cloned()
            .collect()
    }

    /// Checks the rules every configuration obeys: at least one voter (in each half
    /// while joint), no empty id, no learner that is also an incoming voter.
    pub fn validate(&self) -> Result<(), MembershipError> {
        if self.voters.is_empty() {
            return Err(MembershipError::NoVoters);
        }
        if self.members().iter().any(|id| id.as_str().is_empty()) {
            return Err(MembershipError::EmptyId);
        }
        if let Some(id) = self.learners.intersection(&self.voters).next() {
            return Err(MembershipError::LearnerIsVoter { id: id.clone() });
        }
        if let Some(id) = self
            .members()
            .into_iter()
            .find(|id| self.retired.contains(id))
        {
            return Err(MembershipError::Retired { id });
        }
        if !self.is_joint() {
            if let Some(id) = self.learners.intersection(&self.outgoing).next() {
                return Err(MembershipError::LearnerIsVoter { id: id.clone() });
            }
        }
        Ok(())
    }

    /// The joint configuration that moves from this (simple) one to `voters` and
    /// `learners`; `nodes` adds or updates member info. When the voters do not change the
    /// result is simple: learners alone never need a joint phase.
    pub fn change_to(
        &self,
        voters: BTreeSet<NodeId>,
        learners: BTreeSet<NodeId>,
        nodes: BTreeMap<NodeId, NodeInfo>,
    ) -> Membership {
        let outgoing = if voters == self.voters {
            BTreeSet::new()
        } else {
            self.voters.clone()
        };
        let mut next = Membership {
            voters,
            outgoing,
            learners,
            nodes: self.nodes.clone(),
            retired: self.retired.clone(),
        };
        next.nodes.extend(nodes);
        next.retire_departed(self);
        next
    }

    /// The simple configuration that ends this joint one: the incoming half alone.
    pub fn leave_joint(&self) -> Membership {
        let mut next = Membership {
            voters: self.voters.clone(),
            outgoing: BTreeSet::new(),
            learners: self.learners.clone(),
            nodes: self.nodes.clone(),
            retired: self.retired.clone(),
        };
        next.retire_departed(self);
        next
    }

    /// Retires every member of `previous` that this configuration no longer has, and
    /// drops their info.
    fn retire_departed(&mut self, previous: &Membership) {
        let members = self.members();
        self.retired.extend(
            previous
                .members()
                .into_iter()
                .filter(|id| !members.contains(id)),
        );
        self.nodes.retain(|id, _| members.contains(id));
    }

    /// Every member's peer address, for a transport (members without one are left out).
    pub fn peer_configs(&self) -> Vec<PeerConfig> {
        self.members()
            .into_iter()
            .filter_map(|id| {
                let address = self.nodes.get(&id)?.address.clone();
                (!address.is_empty()).then_some(PeerConfig { id, address })
            })
            .collect()
    }

    /// The stable binary form stored in a `ConfigChange` entry and in snapshots.
    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(64);
        b.put_slice(MAGIC);
        b.put_u8(VERSION);
        for set in [&self.voters, &self.outgoing, &self.learners] {
            b.put_u32_le(set.len() as u32);
            for id in set {
                put_str(&mut b, id.as_str());
            }
        }
        b.put_u32_le(self.nodes.len() as u32);
        for (id, info) in &self.nodes {
            put_str(&mut b, id.as_str());
            put_str(&mut b, &info.address);
            b.put_u32_le(info.metadata.len() as u32);
            for (k, v) in &info.metadata {
                put_str(&mut b, k);
                put_str(&mut b, v);
            }
        }
        b.put_u32_le(self.retired.len() as u32);
        for id in &self.retired {
            put_str(&mut b, id.as_str());
        }
        b.freeze()
    }

    /// Decodes [`Membership::encode`] and checks the result with
    /// [`Membership::validate`].
    pub fn decode(data: &[u8]) -> Result<Self, MembershipError> {
        let mut r = Reader { data, pos: 0 };
        if r.take(4)? != MAGIC {
            return Err(malformed("bad magic"));
        }
        let version = r.take(1)?[0];
        if !(1..=VERSION).contains(&version) {
            return Err(malformed(format!("unknown version {version}")));
        }
        let mut sets: [BTreeSet<NodeId>; 3] = Default::default();
        for set in sets.iter_mut() {
            let n = r.u32()?;
            for _ in 0..n {
                set.insert(NodeId::new(r.str()?));
            }
        }
        let [voters, outgoing, learners] = sets;
        let mut nodes = BTreeMap::new();
        for _ in 0..r.u32()? {
            let id = NodeId::new(r.str()?);
            let address = r.str()?.to_owned();
            let mut metadata = BTreeMap::new();
            for _ in 0..r.u32()? {
                let k = r.str()?.to_owned();
                metadata.insert(k, r.str()?.to_owned());
            }
            nodes.insert(id, NodeInfo { address, metadata });
        }
        let mut retired = BTreeSet::new();
        if version >= 2 {
            for _ in 0..r.u32()? {
                retired.insert(NodeId::new(r.str()?));
            }
        }
        if r.pos != data.len() {
            return Err(malformed("trailing bytes"));
        }
        let m = Membership {
            voters,
            outgoing,
            learners,
            nodes,
            retired,
        };
        m.validate()?;
        Ok(m)
    }
}

impl std::fmt::Display for Membership {
    /// `voters [a b c]`, with `outgoing [...]` while joint and `learners [...]` if any.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        fn list(set: &BTreeSet<NodeId>) -> String {
            set.iter().map(|n| n.as_str()).collect::<Vec<_>>().join(" ")
        }
        write!(f, "voters [{}]", list(&self.voters))?;
        if self.is_joint() {
            write!(f, " outgoing [{}]", list(&self.outgoing))?;
        }
        if !self.learners.is_empty() {
            write!(f, " learners [{}]", list(&self.learners))?;
        }
        Ok(())
    }
}

fn malformed(reason: impl Into<String>) -> MembershipError {
    MembershipError::Malformed {
        reason: reason.into(),
    }
}

fn put_str(b: &mut BytesMut, s: &str) {
    b.put_u32_le(s.len() as u32);
    b.put_slice(s.as_bytes());
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], MembershipError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|end| *end <= self.data.len())
            .ok_or_else(|| malformed(format!("truncated at byte {}", self.pos)))?;
        let out = &self.data[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn u32(&mut self) -> Result<u32, MembershipError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn str(&mut self) -> Result<&'a str, MembershipError> {
        let n = self.u32()? as usize;
        std::str::from_utf8(self.take(n)?).map_err(|_| malformed("id or text is not UTF-8"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(s: &str) -> BTreeSet<NodeId> {
        s.split_whitespace().map(NodeId::from).collect()
    }

    #[test]
    fn encoding_round_trips() {
        let mut m = Membership::new(ids("a b c"), ids("d"));
        m.outgoing = ids("a b e");
        m.nodes.insert(
            NodeId::from("a"),
            NodeInfo {
                address: "127.0.0.1:1".into(),
                metadata: [("http".to_string(), "127.0.0.1:2".to_string())].into(),
            },
        );
        let decoded = Membership::decode(&m.encode()).unwrap();
        assert_eq!(decoded, m);
        assert_eq!(
            decoded.to_string(),
            "voters [a b c] outgoing [a b e] learners [d]"
        );
    }

    #[test]
    fn every_truncation_and_a_bad_magic_are_refused() {
        let m = Membership::new(ids("a b"), ids("c"));
        let bytes = m.encode();
        for n in 0..bytes.len() {
            assert!(Membership::decode(&bytes[..n]).is_err(), "prefix of {n}");
        }
        let mut bad = bytes.to_vec();
        bad[0] = b'X';
        assert!(Membership::decode(&bad).is_err());
    }

    #[test]
    fn validation_rules() {
        assert_eq!(
            Membership::new(ids(""), ids("a")).validate(),
            Err(MembershipError::NoVoters)
        );
        assert_eq!(
            Membership::new(ids("a"), ids("a")).validate(),
            Err(MembershipError::LearnerIsVoter { id: "a".into() })
        );
        // A demotion: an outgoing voter that is an incoming learner.
        let joint = Membership::new(ids("a b c"), ids("d")).change_to(
            ids("a b"),
            ids("c d"),
            BTreeMap::new(),
        );
        assert!(joint.is_joint());
        assert!(joint.validate().is_ok());
        assert!(joint.is_voter(&"c".into()) && !joint.is_learner(&"c".into()));
        let left = joint.leave_joint();
        assert_eq!(left, Membership::new(ids("a b"), ids("c d")));
        assert!(left.is_learner(&"c".into()));
    }

    #[test]
    fn a_change_of_learners_alone_is_simple_and_drops_stale_info() {
        let peers: Vec<PeerConfig> = ["a", "b"]
            .iter()
            .map(|id| PeerConfig {
                id: (*id).into(),
                address: format!("{id}:1"),
            })
            .collect();
        let m = Membership::from_peers(&peers);
        let next = m.change_to(ids("a b"), ids("c"), BTreeMap::new());
        assert!(!next.is_joint());
        let next = next.change_to(ids("a c"), BTreeSet::new(), BTreeMap::new());
        assert!(next.is_joint());
        let done = next.leave_joint();
        assert_eq!(
            done.nodes.keys().cloned().collect::<BTreeSet<_>>(),
            ids("a")
        );
        assert_eq!(done.retired, ids("b"), "b left with the joint phase");
    }

    #[test]
    fn removed_ids_are_retired_and_never_come_back() {
        let m = Membership::new(ids("a b c"), ids("d"));
        // Removing a learner retires it at once; removing a voter when the joint phase ends.
        let m = m.change_to(ids("a b c"), ids(""), BTreeMap::new());
        assert_eq!(m.retired, ids("d"));
        let joint = m.change_to(ids("a b"), ids(""), BTreeMap::new());
        assert_eq!(
            joint.retired,
            ids("d"),
            "c still votes in the outgoing half"
        );
        let m = joint.leave_joint();
        assert_eq!(m.retired, ids("c d"));
        let back = m.change_to(ids("a b"), ids("c"), BTreeMap::new());
        assert_eq!(
            back.validate(),
            Err(MembershipError::Retired { id: "c".into() })
        );
        let decoded = Membership::decode(&m.encode()).unwrap();
        assert_eq!(decoded, m);
        assert!(Membership::decode(&back.encode()).is_err());
    }

    #[test]
    fn version_1_encodings_still_decode() {
        // voters [a], outgoing [], learners [b], nodes {a: "x:1", no metadata}: version 1
        // had no retired ids after the nodes.
        let mut v1 = Vec::new();
        v1.extend_from_slice(b"RLMB\x01");
        let s = |v: &mut Vec<u8>, t: &str| {
            v.extend_from_slice(&(t.len() as u32).to_le_bytes());
            v.extend_from_slice(t.as_bytes());
        };
        v1.extend_from_slice(&1u32.to_le_bytes());
        s(&mut v1, "a");
        v1.extend_from_slice(&0u32.to_le_bytes());
        v1.extend_from_slice(&1u32.to_le_bytes());
        s(&mut v1, "b");
        v1.extend_from_slice(&1u32.to_le_bytes());
        s(&mut v1, "a");
        s(&mut v1, "x:1");
        v1.extend_from_slice(&0u32.to_le_bytes());
        let m = Membership::decode(&v1).unwrap();
        assert_eq!(m.to_string(), "voters [a] learners [b]");
        assert_eq!(m.nodes[&NodeId::from("a")].address, "x:1");
        assert!(m.retired.is_empty());
    }
}
