//! Metrics wrappers: RED metrics for every operation, sampled or not, following the
//! OpenTelemetry RPC and messaging conventions and gRPC's own metrics (gRFC A66, A96).
//!
//! Two ordinary [`Wrapper`]s, next to the tracing ones among the built-in wrappers. The
//! incoming one records `rpc.server.call.duration` (and the server's message sizes) for
//! handlers and `messaging.process.duration` for message processing; the outgoing one
//! `rpc.client.call.duration` for calls and `messaging.client.operation.duration` and
//! `messaging.client.sent.messages` for publishes. The client's selection step records each
//! attempt (`grpc.client.attempt.*`) and the retries of a call (`grpc.client.call.retries`).
//! A stream is measured over its whole life, as its span is.
//!
//! | instrument | unit | attributes |
//! |---|---|---|
//! | `rpc.server.call.duration` | s | `rpc.system.name`, `rpc.method` (`_OTHER` for an unknown method), `rpc.response.status_code`, `error.type` (server errors only) |
//! | `rpc.client.call.duration` | s | `rpc.system.name`, `rpc.method`, `rpc.response.status_code`, `error.type` (every non-OK code but the caller's own cancelling), `server.address`, `server.port` |
//! | `grpc.server.call.{sent,rcvd}_total_compressed_message_size` | By | `grpc.method`, `grpc.status` |
//! | `grpc.client.attempt.started` | {attempt} | `grpc.method`, `grpc.target` |
//! | `grpc.client.attempt.duration` | s | `grpc.method`, `grpc.target`, `grpc.status` |
//! | `grpc.client.attempt.{sent,rcvd}_total_compressed_message_size` | By | `grpc.method`, `grpc.target`, `grpc.status` |
//! | `grpc.client.call.retries` | {retry} | `grpc.method`, `grpc.target` (only calls retried at least once) |
//! | `messaging.client.operation.duration` | s | `messaging.system`, `messaging.operation.name`/`.type`, `messaging.destination.name`, `error.type` |
//! | `messaging.client.sent.messages` | {message} | as above |
//! | `messaging.process.duration` | s | as above, and `messaging.consumer.group.name` |
//!
//! Message sizes are the encoded protobuf sizes: what goes on the wire when the call is not
//! compressed (gRPC's own framing left out).

pub mod machinery;
mod messaging;
mod rpc;
mod series;

use std::sync::Arc;

use opentelemetry::InstrumentationScope;
use opentelemetry::metrics::Meter;
use tonic::Status;

use crate::call::{BoxFuture, Call, Operation, Reply};
use crate::wrapper::{Next, Wrapper};
pub(crate) use rpc::Attempts;

/// Histogram boundaries, in seconds, for operation durations: gRFC A66's latency buckets,
/// from 10 µs to 100 s (the SDK's defaults, 0 to 10 000, suit milliseconds, not seconds).
pub const LATENCY_BOUNDARIES: &[f64] = &[
    0.0, 0.00001, 0.00005, 0.0001, 0.0003, 0.0006, 0.0008, 0.001, 0.002, 0.003, 0.004, 0.005,
    0.006, 0.008, 0.01, 0.013, 0.016, 0.02, 0.025, 0.03, 0.04, 0.05, 0.065, 0.08, 0.1, 0.13, 0.16,
    0.2, 0.25, 0.3, 0.4, 0.5, 0.65, 0.8, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0,
];

/// Histogram boundaries, in bytes, for message sizes: gRFC A66's size buckets, from 1 KiB
/// to 4 GiB.
pub const SIZE_BOUNDARIES: &[f64] = &[
    0.0,
    1024.0,
    2048.0,
    4096.0,
    16384.0,
    65536.0,
    262144.0,
    1048576.0,
    4194304.0,
    16777216.0,
    67108864.0,
    268435456.0,
    1073741824.0,
    4294967296.0,
];

/// The instruments of one service or client, and the wrappers that record into them:
/// created once, by [`crate::Instrumentation`].
#[derive(Clone)]
pub(crate) struct Metrics {
    rpc: Arc<rpc::Instruments>,
    messaging: Arc<messaging::Instruments>,
    machinery: Arc<machinery::Instruments>,
}

impl Metrics {
    /// Records through `meter`, with histograms bounded by `buckets`.
    pub(crate) fn with_meter(meter: &Meter, buckets: &Buckets) -> Self {
        Self {
            rpc: Arc::new(rpc::Instruments::new(meter, buckets)),
            messaging: Arc::new(messaging::Instruments::new(meter, buckets)),
            machinery: Arc::new(machinery::Instruments::new(meter)),
        }
    }

    /// The wrapper for incoming operations: server call durations and sizes, message
    /// processing durations.
    pub(crate) fn server(&self) -> Arc<dyn Wrapper> {
        Arc::new(ServerMetrics(self.clone()))
    }

    /// The wrapper for outgoing operations: client call durations, publish durations and
    /// counts.
    pub(crate) fn client(&self) -> Arc<dyn Wrapper> {
        Arc::new(ClientMetrics(self.clone()))
    }

    /// The recorder of a client's attempts, ejections and refused retries, for its
    /// selection step.
    pub(crate) fn attempts(&self) -> Attempts {
        Attempts::new(self.rpc.clone(), self.machinery.clone())
    }

    /// Reports `client`'s registry cache and channel pool for as long as it lives.
    pub(crate) fn observe_client(&self, client: std::sync::Weak<dyn machinery::ClientState>) {
        self.machinery.observe(client);
    }

    /// Reports the messages `stats` counts as consumed from `messaging`'s topic.
    pub(crate) fn observe_subscription(
        &self,
        messaging: &crate::call::Messaging,
        stats: crate::broker::SubscriberStats,
    ) {
        self.messaging.observe(messaging, stats);
    }

    /// Records a request for a method the server does not serve (as `_OTHER`).
    pub(crate) fn unknown_method(&self, status: &Status) {
        self.rpc.unknown_method(status);
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

/// Histogram boundaries of the built-in instruments.
#[derive(Debug, Clone)]
pub(crate) struct Buckets {
    /// Durations, in seconds.
    pub(crate) latency: Vec<f64>,
    /// Message sizes, in bytes.
    pub(crate) size: Vec<f64>,
}

impl Buckets {
    /// A duration histogram, in seconds, with the latency boundaries.
    pub(crate) fn seconds(
        &self,
        meter: &Meter,
        name: &'static str,
        description: &'static str,
    ) -> opentelemetry::metrics::Histogram<f64> {
        meter
            .f64_histogram(name)
            .with_unit("s")
            .with_description(description)
            .with_boundaries(self.latency.clone())
            .build()
    }

    /// A size histogram, in bytes, with the size boundaries.
    pub(crate) fn bytes(
        &self,
        meter: &Meter,
        name: &'static str,
        description: &'static str,
    ) -> opentelemetry::metrics::Histogram<u64> {
        meter
            .u64_histogram(name)
            .with_unit("By")
            .with_description(description)
            .with_boundaries(self.size.clone())
            .build()
    }
}

impl Default for Buckets {
    fn default() -> Self {
        Self {
            latency: LATENCY_BOUNDARIES.to_vec(),
            size: SIZE_BOUNDARIES.to_vec(),
        }
    }
}

/// The instrumentation scope of the built-in instruments.
pub(crate) fn scope() -> InstrumentationScope {
    InstrumentationScope::builder("micro-otel")
        .with_version(env!("CARGO_PKG_VERSION"))
        .build()
}

struct ServerMetrics(Metrics);

impl Wrapper for ServerMetrics {
    fn call(&self, call: Call, next: Next) -> BoxFuture<Result<Reply, Status>> {
        match call.ctx.operation() {
            Operation::Rpc(_) => self.0.rpc.served(call, next),
            Operation::Message(_) => self.0.messaging.measured(call, next),
        }
    }
}

struct ClientMetrics(Metrics);

impl Wrapper for ClientMetrics {
    fn call(&self, call: Call, next: Next) -> BoxFuture<Result<Reply, Status>> {
        match call.ctx.operation() {
            Operation::Rpc(_) => self.0.rpc.called(call, next),
            Operation::Message(_) => self.0.messaging.measured(call, next),
        }
    }
}
