//! OpenTelemetry semantic-convention names used by the tracing wrappers: RPC and gRPC
//! conventions as of semconv 1.39 (`rpc.system.name`, `rpc.method`,
//! `rpc.response.status_code`) and the messaging conventions (still in development).

use tonic::Code;

/// `rpc.system.name`: always `grpc` here.
pub const RPC_SYSTEM_NAME: &str = "rpc.system.name";
/// `rpc.method`: fully qualified `pkg.Service/Method`.
pub const RPC_METHOD: &str = "rpc.method";
/// `rpc.response.status_code`: the gRPC status code name, e.g. `OK`, `NOT_FOUND`.
pub const RPC_RESPONSE_STATUS_CODE: &str = "rpc.response.status_code";
/// `server.address`: the service name or host called (client), local host (server).
pub const SERVER_ADDRESS: &str = "server.address";
/// `server.port`: the port called (client) or listened on (server).
pub const SERVER_PORT: &str = "server.port";
/// `client.address`: the peer's address on server spans.
pub const CLIENT_ADDRESS: &str = "client.address";
/// `client.port`: the peer's port on server spans.
pub const CLIENT_PORT: &str = "client.port";
/// `error.type`: the status code name when the call failed.
pub const ERROR_TYPE: &str = "error.type";

/// `network.peer.address`: the address of the node a client call was sent to.
pub const NETWORK_PEER_ADDRESS: &str = "network.peer.address";
/// `network.peer.port`: the port of the node a client call was sent to.
pub const NETWORK_PEER_PORT: &str = "network.peer.port";

/// `messaging.system`: the broker (`nats`, `rabbitmq`, `memory`).
pub const MESSAGING_SYSTEM: &str = "messaging.system";
/// `messaging.destination.name`: the topic.
pub const MESSAGING_DESTINATION_NAME: &str = "messaging.destination.name";
/// `messaging.operation.type`: `send` or `process`.
pub const MESSAGING_OPERATION_TYPE: &str = "messaging.operation.type";
/// `messaging.operation.name`: the operation as the system names it.
pub const MESSAGING_OPERATION_NAME: &str = "messaging.operation.name";
/// `messaging.consumer.group.name`: the queue group of a processing subscriber.
pub const MESSAGING_CONSUMER_GROUP_NAME: &str = "messaging.consumer.group.name";
/// `messaging.message.id`: the broker's id of the message.
pub const MESSAGING_MESSAGE_ID: &str = "messaging.message.id";
/// `messaging.message.body.size`: the encoded message's size in bytes.
pub const MESSAGING_MESSAGE_BODY_SIZE: &str = "messaging.message.body.size";

/// The value of `rpc.system.name` for gRPC.
pub const GRPC: &str = "grpc";

/// The canonical upper-case name of a gRPC status code.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Whether a status code marks a server span as failed: per the gRPC conventions only
/// UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE and DATA_LOSS do;
/// the rest are the caller's errors.
pub fn is_server_error(code: Code) -> bool {
    matches!(
        code,
        Code::Unknown
            | Code::DeadlineExceeded
            | Code::Unimplemented
            | Code::Internal
            | Code::Unavailable
            | Code::DataLoss
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_server_side_codes_fail_a_server_span() {
        let failing: Vec<_> = (0..=16)
            .map(Code::from_i32)
            .filter(|c| is_server_error(*c))
            .map(code_name)
            .collect();
        assert_eq!(
            failing,
            [
                "UNKNOWN",
                "DEADLINE_EXCEEDED",
                "UNIMPLEMENTED",
                "INTERNAL",
                "UNAVAILABLE",
                "DATA_LOSS"
            ]
        );
    }
}
