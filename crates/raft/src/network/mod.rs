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

    /// Stops the transport; no message is delivered afterwards.
    fn stop(&self);
}
