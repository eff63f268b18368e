//! [`LocalNetwork`]: an in-process switch between nodes of one process. Messages are moved,
//! not serialized. Links can be cut and healed to test partitions.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, PoisonError, RwLock};

use super::{Inbound, NetworkManager};
use crate::message::Message;
use crate::types::NodeId;

#[derive(Default)]
struct Switch {
    nodes: HashMap<NodeId, Inbound>,
    /// Directed links that drop everything.
    cut: BTreeSet<(NodeId, NodeId)>,
}

/// The switch shared by every node of an in-process cluster.
///
/// ```
/// use raftlock_raft::{LocalNetwork, NodeId};
/// let net = LocalNetwork::new();
/// let transport = net.transport(NodeId::from("node-1"));
/// net.isolate(&NodeId::from("node-1"));
/// net.heal();
/// # drop(transport);
/// ```
#[derive(Clone, Default)]
pub struct LocalNetwork {
    switch: Arc<RwLock<Switch>>,
}

impl LocalNetwork {
    /// An empty switch.
    pub fn new() -> Self {
        Self::default()
    }

    /// The transport of node `id`, to hand to its builder.
    pub fn transport(&self, id: NodeId) -> LocalTransport {
        LocalTransport {
            id,
            switch: self.switch.clone(),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Switch) -> T) -> T {
        // A panic while holding the lock leaves the switch usable: its state is plain data.
        let mut guard = self.switch.write().unwrap_or_else(PoisonError::into_inner);
        f(&mut guard)
    }

    /// Cuts both directions between `a` and `b`.
    pub fn partition(&self, a: &NodeId, b: &NodeId) {
        self.with(|s| {
            s.cut.insert((a.clone(), b.clone()));
            s.cut.insert((b.clone(), a.clone()));
        });
    }

    /// Cuts `a` off from every node registered so far.
    pub fn isolate(&self, a: &NodeId) {
        let others: Vec<NodeId> =
            self.with(|s| s.nodes.keys().filter(|n| *n != a).cloned().collect());
        for b in others {
            self.partition(a, &b);
        }
    }

    /// Restores every link.
    pub fn heal(&self) {
        self.with(|s| s.cut.clear());
    }
}

/// One node's end of a [`LocalNetwork`].
pub struct LocalTransport {
    id: NodeId,
    switch: Arc<RwLock<Switch>>,
}

impl NetworkManager for LocalTransport {
    fn start(&self, inbound: Inbound) -> Result<(), crate::Error> {
        let mut s = self.switch.write().unwrap_or_else(PoisonError::into_inner);
        s.nodes.insert(self.id.clone(), inbound);
        Ok(())
    }

    fn send(&self, messages: Vec<Message>) {
        // Senders share the switch (a read lock); only cutting, healing and joining write.
        let s = self.switch.read().unwrap_or_else(PoisonError::into_inner);
        for m in messages {
            if !s.cut.is_empty() && s.cut.contains(&(m.from.clone(), m.to.clone())) {
                continue;
            }
            if let Some(handler) = s.nodes.get(&m.to) {
                // The handler checks and counts; a full queue drops the message, like a
                // congested network would.
                let _ = handler.deliver(m);
            }
        }
    }

    fn stop(&self) {
        let mut s = self.switch.write().unwrap_or_else(PoisonError::into_inner);
        s.nodes.remove(&self.id);
    }
}
