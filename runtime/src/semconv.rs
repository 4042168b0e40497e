//! OpenTelemetry semantic-convention names the built-in wrappers use: the RPC and gRPC
//! conventions of semconv v1.44 (`rpc.system.name`, `rpc.method`,
//! `rpc.response.status_code`, `rpc.server.call.duration`...), gRPC's own metrics (gRFC
//! A66 and A96: `grpc.client.attempt.*`, `grpc.client.call.retries`), the messaging
//! conventions (still in development), and the older names emitted beside them when
//! `OTEL_SEMCONV_STABILITY_OPT_IN` asks for `rpc/dup`.

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

/// `exception.type` on an `exception` span event: `panic` for a handler's panic.
pub const EXCEPTION_TYPE: &str = "exception.type";
/// `exception.message` on an `exception` span event: the panic's text.
pub const EXCEPTION_MESSAGE: &str = "exception.message";

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
/// The `rpc.method` of a method the server does not know, so that a scanner probing
/// random paths cannot blow up the number of metric series.
pub const OTHER: &str = "_OTHER";

/// `rpc.system` (before semconv v1.38; emitted beside `rpc.system.name` under `rpc/dup`).
pub const OLD_RPC_SYSTEM: &str = "rpc.system";
/// `rpc.service`: the fully qualified proto service (before v1.38, under `rpc/dup`).
pub const OLD_RPC_SERVICE: &str = "rpc.service";
/// `rpc.grpc.status_code`: the numeric gRPC status (before v1.38, under `rpc/dup`).
pub const OLD_RPC_GRPC_STATUS_CODE: &str = "rpc.grpc.status_code";
/// `rpc.status_code`: the status code's name as semconv's main branch names it (after
/// v1.44, under `rpc/dup`).
pub const NEXT_RPC_STATUS_CODE: &str = "rpc.status_code";

/// `rpc.server.call.duration`: seconds from a request's arrival to its response's end.
pub const RPC_SERVER_CALL_DURATION: &str = "rpc.server.call.duration";
/// `rpc.client.call.duration`: seconds from a call's start to its response's end, retries
/// included.
pub const RPC_CLIENT_CALL_DURATION: &str = "rpc.client.call.duration";

/// `grpc.method` (gRFC A66): the full method name, `pkg.Service/Method`, or `other`.
pub const GRPC_METHOD: &str = "grpc.method";
/// `grpc.status` (gRFC A66): the status code's name.
pub const GRPC_STATUS: &str = "grpc.status";
/// `grpc.target` (gRFC A66): what the client was asked to call (a service name or an
/// address).
pub const GRPC_TARGET: &str = "grpc.target";
/// The `grpc.method` of a method the server does not know (gRFC A66).
pub const GRPC_OTHER: &str = "other";
/// `grpc.client.attempt.started` (gRFC A66): attempts started, retries included.
pub const GRPC_CLIENT_ATTEMPT_STARTED: &str = "grpc.client.attempt.started";
/// `grpc.client.attempt.duration` (gRFC A66): seconds per attempt.
pub const GRPC_CLIENT_ATTEMPT_DURATION: &str = "grpc.client.attempt.duration";
/// `grpc.client.attempt.sent_total_compressed_message_size` (gRFC A66): bytes of
/// messages sent per attempt.
pub const GRPC_CLIENT_ATTEMPT_SENT_SIZE: &str =
    "grpc.client.attempt.sent_total_compressed_message_size";
/// `grpc.client.attempt.rcvd_total_compressed_message_size` (gRFC A66): bytes of
/// messages received per attempt.
pub const GRPC_CLIENT_ATTEMPT_RCVD_SIZE: &str =
    "grpc.client.attempt.rcvd_total_compressed_message_size";
/// `grpc.client.call.retries` (gRFC A96): retries of a call that was retried at least once.
pub const GRPC_CLIENT_CALL_RETRIES: &str = "grpc.client.call.retries";
/// `grpc.server.call.sent_total_compressed_message_size` (gRFC A66).
pub const GRPC_SERVER_CALL_SENT_SIZE: &str = "grpc.server.call.sent_total_compressed_message_size";
/// `grpc.server.call.rcvd_total_compressed_message_size` (gRFC A66).
pub const GRPC_SERVER_CALL_RCVD_SIZE: &str = "grpc.server.call.rcvd_total_compressed_message_size";

/// `messaging.client.operation.duration`: seconds to publish a message.
pub const MESSAGING_CLIENT_OPERATION_DURATION: &str = "messaging.client.operation.duration";
/// `messaging.client.sent.messages`: messages published.
pub const MESSAGING_CLIENT_SENT_MESSAGES: &str = "messaging.client.sent.messages";
/// `messaging.client.consumed.messages`: messages handed to a subscriber.
pub const MESSAGING_CLIENT_CONSUMED_MESSAGES: &str = "messaging.client.consumed.messages";
/// `messaging.process.duration`: seconds a subscriber took over a message.
pub const MESSAGING_PROCESS_DURATION: &str = "messaging.process.duration";

/// Whether `OTEL_SEMCONV_STABILITY_OPT_IN` (a comma-separated list) asks for `rpc/dup`:
/// then the older RPC attribute names are emitted beside the current ones.
pub fn emit_old_rpc_names() -> bool {
    std::env::var("OTEL_SEMCONV_STABILITY_OPT_IN")
        .is_ok_and(|list| list.split(',').any(|v| v.trim() == "rpc/dup"))
}

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
