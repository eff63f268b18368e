//! The table of outgoing peer links. Each link is a sender task (`client.rs`) with its
//! bounded queue. The table follows the configuration in effect
//! ([`NetworkManager::set_peers`](crate::NetworkManager::set_peers)): links to added
//! members start, links to removed ones stop. A link is also opened back to a sender this
//! node has no link to when its message was accepted (a leader this node's log does not
//! name yet, such as the leader of a cluster a node is joining): the sender's stream
//! carries its address in request metadata ([`FROM_ADDRESS`]), so the answers have a way
//! back before the configuration arrives.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::client::PeerLink;
use crate::message::Message;
use crate::types::{NodeId, PeerConfig};

/// Request metadata key under which a sender names the address its own peer endpoint
/// listens on.
pub(crate) const FROM_ADDRESS: &str = "x-raft-from-address";

/// Metadata key of the status that ends a removed node's stream: the id of the member
/// that refused it.
pub(crate) const REMOVED_BY: &str = "x-raft-removed-by";

/// What a new link's task needs; known once the transport starts.
pub(crate) struct LinkSettings {
    pub(crate) cluster_id: Arc<str>,
    pub(crate) connect_timeout: Duration,
    pub(crate) max_message_bytes: usize,
    pub(crate) queue_capacity: usize,
    /// This node's advertised peer address, sent to every peer it dials.
    pub(crate) advertise: Option<Arc<str>>,
    pub(crate) shutdown: watch::Sender<bool>,
    /// The node's entrance, told when a member says this node was removed.
    pub(crate) handler: crate::rpc::RpcHandler,
}

struct Link {
    address: String,
    queue: mpsc::Sender<Message>,
    task: JoinHandle<()>,
}

/// Every outgoing link of one node. Sending takes the read lock once per batch; the
/// write lock is taken only when the membership changes.
pub(crate) struct Links {
    me: NodeId,
    table: RwLock<HashMap<NodeId, Link>>,
    settings: Mutex<Option<LinkSettings>>,
    dropped: Arc<AtomicU64>,
}

impl Links {
    pub(crate) fn new(me: NodeId, dropped: Arc<AtomicU64>) -> Self {
        Links {
            me,
            table: RwLock::new(HashMap::new()),
            settings: Mutex::new(None),
            dropped,
        }
    }

    /// Enables links (called at start, inside the runtime) and opens one per peer.
    pub(crate) fn start(&self, settings: LinkSettings, peers: &[PeerConfig]) {
        *self.settings.lock().unwrap_or_else(PoisonError::into_inner) = Some(settings);
        self.set_peers(peers);
    }

    /// Makes the links exactly `peers` (this node excluded): opens missing ones, reopens
    /// those whose address changed, stops the rest.
    pub(crate) fn set_peers(&self, peers: &[PeerConfig]) {
        let settings = self.settings.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(settings) = settings.as_ref() else {
            return;
        };
        let mut table = self.table.write().unwrap_or_else(PoisonError::into_inner);
        let wanted: HashMap<&NodeId, &str> = peers
            .iter()
            .filter(|p| p.id != self.me && !p.address.is_empty())
            .map(|p| (&p.id, p.address.as_str()))
            .collect();
        table.retain(|id, link| {
            let keep = wanted.get(id) == Some(&link.address.as_str());
            if !keep {
                tracing::info!(node = %self.me, peer = %id, "raft grpc: link stopped");
                link.task.abort();
            }
            keep
        });
        for (id, address) in wanted {
            if !table.contains_key(id) {
                let link = self.open(settings, id.clone(), address.to_string());
                table.insert(id.clone(), link);
            }
        }
    }

    /// Opens a link to `id` at `address` unless one exists: the way back to a sender
    /// this node has no link to.
    pub(crate) fn ensure(&self, id: &NodeId, address: &str) {
        if *id == self.me || address.is_empty() || self.has(id) {
            return;
        }
        let settings = self.settings.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(settings) = settings.as_ref() else {
            return;
        };
        let mut table = self.table.write().unwrap_or_else(PoisonError::into_inner);
        if !table.contains_key(id) {
            tracing::info!(node = %self.me, peer = %id, %address, "raft grpc: link opened back to a sender");
            let link = self.open(settings, id.clone(), address.to_string());
            table.insert(id.clone(), link);
        }
    }

    /// Whether a link to `id` exists.
    pub(crate) fn has(&self, id: &NodeId) -> bool {
        self.table
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(id)
    }

    fn open(&self, settings: &LinkSettings, id: NodeId, address: String) -> Link {
        let (queue, rx) = mpsc::channel(settings.queue_capacity.max(1));
        let link = PeerLink {
            peer: PeerConfig {
                id,
                address: address.clone(),
            },
            cluster_id: settings.cluster_id.clone(),
            connect_timeout: settings.connect_timeout,
            max_message_bytes: settings.max_message_bytes,
            advertise: settings.advertise.clone(),
            handler: settings.handler.clone(),
            dropped: self.dropped.clone(),
            shutdown: settings.shutdown.subscribe(),
        };
        Link {
            address,
            queue,
            task: tokio::spawn(link.run(rx)),
        }
    }

    /// Queues each message on its recipient's link; a message to a node without a link,
    /// or whose queue is full, is dropped and counted.
    pub(crate) fn send(&self, messages: Vec<Message>) {
        let table = self.table.read().unwrap_or_else(PoisonError::into_inner);
        for m in messages {
            let delivered = match table.get(&m.to) {
                Some(link) => link.queue.try_send(m).is_ok(),
                None => false,
            };
            if !delivered {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Ends every link task.
    pub(crate) fn stop(&self) {
        *self.settings.lock().unwrap_or_else(PoisonError::into_inner) = None;
        let mut table = self.table.write().unwrap_or_else(PoisonError::into_inner);
        for (_, link) in table.drain() {
            link.task.abort();
        }
    }
}
