//! Peer transport: the [`NetworkManager`] trait and [`LocalNetwork`], an in-process
//! implementation for tests and benchmarks that can cut and heal links.
//!
//! The protocol core exchanges one-way [`Message`]s; a transport carries them in order per
//! peer when it can, and may lose them (the protocol recovers). It never blocks the node.
//! On the receiving side it hands each message to the node's [`RpcHandler`], which
//! checks it and queues it for the node.

#[cfg(feature = "grpc")]
pub mod grpc;
mod local;

#[cfg(feature = "grpc")]
pub use grpc::{GrpcNetwork, GrpcOptions};
pub use local::{LocalNetwork, LocalTransport};

use crate::message::Message;
use crate::rpc::RpcHandler;
use crate::types::PeerConfig;

/// Where a transport delivers messages addressed to this node: the node's
/// [`RpcHandler`].
pub type Inbound = RpcHandler;

/// A peer transport (the original's `NetworkManager`).
pub trait NetworkManager: Send + Sync + 'static {
    /// Starts delivering inbound messages to `inbound` (with
    /// [`RpcHandler::deliver`], which validates and counts them). Called once, when the
    /// node starts.
    fn start(&self, inbound: Inbound) -> Result<(), crate::Error>;

    /// Sends messages to their recipients, best effort and without blocking: a message to
    /// an unreachable peer may be dropped.
    fn send(&self, messages: Vec<Message>);

    /// The members of the configuration in effect changed: `peers` are every member
    /// with the peer address the configuration carries for it (this node included; a
    /// member without an address is left out). A transport that dials peers starts links
    /// to new ones and stops links to those no longer listed. Called by the runtime after
    /// `start` and whenever the log changes the configuration. The default does nothing,
    /// for transports that reach every node by id.
    fn set_peers(&self, peers: &[PeerConfig]) {
        let _ = peers;
    }

    /// Stops the transport; no message is delivered afterwards.
    fn stop(&self);
}
