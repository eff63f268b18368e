//! Code generated from `proto/` by `build.rs`: the client API (`raftlock.v1`) and the
//! replicated log and snapshot formats (`raftlock.log.v1`).

/// `proto/raftlock.proto`: the gRPC client API, service `RaftLock`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod api {
    tonic::include_proto!("raftlock.v1");
}

/// `proto/raftlock_log.proto`: log entries, the applier's answers, snapshots.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod log {
    tonic::include_proto!("raftlock.log.v1");
}

/// The standard rich-error form of gRPC (`google.rpc.Status` in `grpc-status-details-bin`
/// with `ErrorDetails` packed as a `google.protobuf.Any`), so that clients in any language
/// read the details with their usual helpers. Declared here, wire-compatible, rather than
/// pulling in the well-known-types crates for two messages.
pub mod rich {
    use prost::Message;

    use super::api::ErrorDetails;

    /// The `type_url` under which `ErrorDetails` travels.
    pub const DETAILS_TYPE_URL: &str = "type.googleapis.com/raftlock.v1.ErrorDetails";

    /// `google.rpc.Status`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct RpcStatus {
        /// The gRPC code.
        #[prost(int32, tag = "1")]
        pub code: i32,
        /// The message.
        #[prost(string, tag = "2")]
        pub message: String,
        /// Typed details.
        #[prost(message, repeated, tag = "3")]
        pub details: Vec<AnyMessage>,
    }

    /// `google.protobuf.Any`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AnyMessage {
        /// Names the message type of `value`.
        #[prost(string, tag = "1")]
        pub type_url: String,
        /// The encoded message.
        #[prost(bytes = "vec", tag = "2")]
        pub value: Vec<u8>,
    }

    /// The bytes of `grpc-status-details-bin` for a status with `details`.
    pub fn encode(code: tonic::Code, message: &str, details: &ErrorDetails) -> Vec<u8> {
        RpcStatus {
            code: code as i32,
            message: message.to_string(),
            details: vec![AnyMessage {
                type_url: DETAILS_TYPE_URL.to_string(),
                value: details.encode_to_vec(),
            }],
        }
        .encode_to_vec()
    }

    /// The `ErrorDetails` inside a status's details, if there are any.
    pub fn decode(bytes: &[u8]) -> Option<ErrorDetails> {
        let status = RpcStatus::decode(bytes).ok()?;
        let any = status
            .details
            .into_iter()
            .find(|a| a.type_url == DETAILS_TYPE_URL)?;
        ErrorDetails::decode(any.value.as_slice()).ok()
    }
}
