//! Tracing wrappers: a span around every operation, following the OpenTelemetry RPC and
//! messaging conventions, with W3C context in gRPC metadata and message headers.
//!
//! Two ordinary [`Wrapper`]s, the first of the built-in wrappers (outermost on every side): the
//! outgoing one opens CLIENT spans for calls and PRODUCER spans for publishes; the incoming
//! one SERVER spans for handlers and CONSUMER spans for message processing. A stream gets
//! one span for its whole life, ended when the stream ends.

pub mod propagation;
pub mod w3c;

use std::borrow::Cow;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use futures_util::Stream;
use opentelemetry::context::FutureExt as _;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{
    Link, SpanBuilder, SpanKind, Status as SpanStatus, TraceContextExt, TracerProvider,
};
use opentelemetry::{InstrumentationScope, KeyValue, Value};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tonic::Status;

use crate::call::{
    AnyMessage, AnyMessageStream, BoxFuture, Call, Context, Ended, Ending, MessagingKind,
    Operation, Payload, Reply, SpanSource, Watch,
};
use crate::semconv;
use crate::wrapper::{Next, Wrapper};
use propagation::{MetadataExtractor, MetadataInjector, default_propagator};

/// Where spans go and how context crosses the wire: shared by the server and client
/// tracing wrappers of one service.
#[derive(Clone)]
pub struct Tracing {
    tracer: SpanSource,
    propagator: Arc<dyn TextMapPropagator + Send + Sync>,
    /// Whether the older RPC attribute names go beside the current ones (`rpc/dup`).
    old_names: bool,
}

impl Tracing {
    /// Spans through `provider`, with W3C trace context and baggage propagation.
    pub fn new(provider: &SdkTracerProvider) -> Self {
        Self {
            tracer: SpanSource::Sdk(provider.tracer_with_scope(scope())),
            propagator: default_propagator(),
            old_names: semconv::emit_old_rpc_names(),
        }
    }

    /// Spans through the global tracer provider as it is now.
    pub fn global() -> Self {
        Self {
            tracer: SpanSource::Global(Arc::new(opentelemetry::global::tracer_with_scope(scope()))),
            propagator: default_propagator(),
            old_names: semconv::emit_old_rpc_names(),
        }
    }

    /// The same, with `propagator` carrying context across the wire.
    pub fn with_propagator(mut self, propagator: Arc<dyn TextMapPropagator + Send + Sync>) -> Self {
        self.propagator = propagator;
        self
    }

    /// The wrapper for incoming operations: a SERVER span around each handler, a CONSUMER
    /// span around each message processed.
    pub fn server(&self) -> Arc<dyn Wrapper> {
        Arc::new(ServerTracing(self.clone()))
    }

    /// The wrapper for outgoing operations: a CLIENT span around each call, a PRODUCER span
    /// around each publish.
    pub fn client(&self) -> Arc<dyn Wrapper> {
        Arc::new(ClientTracing(self.clone()))
    }
}

impl std::fmt::Debug for Tracing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tracing")
    }
}

fn scope() -> InstrumentationScope {
    InstrumentationScope::builder("micro-otel")
        .with_version(env!("CARGO_PKG_VERSION"))
        .build()
}

/// Runs `future` inside `span`, a `tracing` span, so that the calls and publishes it makes
/// are children of that span: the root of a trace that starts outside any handler (a job,
/// a command, a demo). Needs the bridge `Telemetry` installs (feature `tracing-bridge`,
/// on by default).
///
/// ```no_run
/// # async fn job() {}
/// # async fn run() {
/// micro_otel::trace::in_span(tracing::info_span!("nightly-report"), job()).await;
/// # }
/// ```
#[cfg(feature = "tracing-bridge")]
pub fn in_span<F: std::future::Future>(
    span: tracing::Span,
    future: F,
) -> impl std::future::Future<Output = F::Output> {
    use tracing::Instrument as _;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    let cx = span.context();
    future.with_context(cx).instrument(span)
}

struct ServerTracing(Tracing);

impl Wrapper for ServerTracing {
    fn call(&self, call: Call, next: Next) -> BoxFuture<Result<Reply, Status>> {
        // The parent comes from the wire only, never from whatever the serving task has.
        let parent = self.0.propagator.extract_with_context(
            &opentelemetry::Context::new(),
            &MetadataExtractor(call.ctx.metadata()),
        );
        let kind = match call.ctx.operation() {
            Operation::Rpc(_) => SpanKind::Server,
            Operation::Message(_) => SpanKind::Consumer,
        };
        let cx = start_span(&self.0, &call, kind, &parent);
        traced(&self.0, cx, call, next)
    }
}

struct ClientTracing(Tracing);

impl Wrapper for ClientTracing {
    fn call(&self, mut call: Call, next: Next) -> BoxFuture<Result<Reply, Status>> {
        let kind = match call.ctx.operation() {
            Operation::Rpc(_) => SpanKind::Client,
            Operation::Message(_) => SpanKind::Producer,
        };
        let cx = start_span(&self.0, &call, kind, call.ctx.otel());
        self.0
            .propagator
            .inject_context(&cx, &mut MetadataInjector(call.ctx.metadata_mut()));
        traced(&self.0, cx, call, next)
    }
}

/// Runs the rest of the chain inside the span held by `cx`, and ends the span with the
/// outcome (for a stream, when the stream ends).
fn traced(
    tracing: &Tracing,
    cx: opentelemetry::Context,
    mut call: Call,
    next: Next,
) -> BoxFuture<Result<Reply, Status>> {
    call.ctx.set_otel(cx.clone());
    call.ctx.set_tracer(tracing.tracer.clone());
    let span = Watch::new(
        OpenSpan {
            cx: cx.clone(),
            side: Side::of(&call.ctx),
            old_names: tracing.old_names,
        },
        call.ctx.deadline(),
    );
    let fut = run_in(&cx, next, call);
    Box::pin(async move {
        let mut reply = span.finish(fut.await)?;
        if let Payload::Stream(inner) = reply.payload {
            reply.payload = Payload::Stream(Box::pin(InSpan { inner, cx }));
        }
        Ok(reply)
    })
}

/// What a span describes; decides its outcome attributes and which statuses are errors.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    /// A server span: only the server's own failures are errors.
    RpcServer,
    /// A client span: every non-OK status is an error.
    RpcClient,
    /// A producer or consumer span: no RPC status attribute; every failure is an error.
    Messaging,
}

impl Side {
    fn of(ctx: &Context) -> Self {
        match ctx.operation() {
            Operation::Rpc(_) if ctx.target().is_some() => Side::RpcClient,
            Operation::Rpc(_) => Side::RpcServer,
            Operation::Message(_) => Side::Messaging,
        }
    }
}

/// Runs the rest of the chain with `cx` current, both while it builds its future and while
/// that future runs, so inner wrappers see the call's span. With no inner wrappers there is
/// nothing to attach: the transport runs no user code, and the handler endpoint attaches
/// the call's context itself.
fn run_in(cx: &opentelemetry::Context, next: Next, call: Call) -> BoxFuture<Result<Reply, Status>> {
    if !next.has_wrappers() {
        return next.run(call);
    }
    let _attached = cx.clone().attach();
    Box::pin(next.run(call).with_context(cx.clone()))
}

/// Starts the operation's span under `parent`, with the attributes samplers may look at.
fn start_span(
    tracing: &Tracing,
    call: &Call,
    kind: SpanKind,
    parent: &opentelemetry::Context,
) -> opentelemetry::Context {
    let ctx = &call.ctx;
    let builder = match ctx.operation() {
        Operation::Rpc(method) => {
            let name = method.full_name();
            let mut attributes = Vec::with_capacity(if tracing.old_names { 5 } else { 3 });
            attributes.extend([
                KeyValue::new(semconv::RPC_SYSTEM_NAME, semconv::GRPC),
                KeyValue::new(semconv::RPC_METHOD, name),
            ]);
            // Where a call goes is known at its start, for samplers to route by.
            if let (SpanKind::Client, Some(target)) = (&kind, ctx.target()) {
                let host = target.address().host.clone();
                attributes.push(KeyValue::new(
                    semconv::SERVER_ADDRESS,
                    Value::String(host.into()),
                ));
            }
            if tracing.old_names {
                attributes.extend([
                    KeyValue::new(semconv::OLD_RPC_SYSTEM, semconv::GRPC),
                    KeyValue::new(semconv::OLD_RPC_SERVICE, method.service()),
                ]);
            }
            SpanBuilder::from_name(Cow::Borrowed(name))
                .with_kind(kind.clone())
                .with_attributes(attributes)
        }
        Operation::Message(m) => {
            let operation = match m.kind {
                MessagingKind::Publish => "send",
                MessagingKind::Process => "process",
            };
            let mut attributes = vec![
                KeyValue::new(semconv::MESSAGING_SYSTEM, m.system),
                KeyValue::new(semconv::MESSAGING_DESTINATION_NAME, m.topic.to_string()),
                KeyValue::new(semconv::MESSAGING_OPERATION_TYPE, operation),
                KeyValue::new(semconv::MESSAGING_OPERATION_NAME, operation),
            ];
            if let Some(group) = &m.group {
                attributes.push(KeyValue::new(
                    semconv::MESSAGING_CONSUMER_GROUP_NAME,
                    group.to_string(),
                ));
            }
            if let Some(id) = &m.message_id {
                attributes.push(KeyValue::new(semconv::MESSAGING_MESSAGE_ID, id.to_string()));
            }
            if let Some(message) = call.payload.as_message() {
                attributes.push(KeyValue::new(
                    semconv::MESSAGING_MESSAGE_BODY_SIZE,
                    message.encoded_len() as i64,
                ));
            }
            let mut builder = SpanBuilder::from_name(format!("{operation} {}", m.topic))
                .with_kind(kind.clone())
                .with_attributes(attributes);
            // The process span is the producer's child and also links to it, so the link
            // survives backends and batch consumers that re-parent.
            let producer = parent.span().span_context().clone();
            if kind == SpanKind::Consumer && producer.is_valid() {
                builder = builder.with_links(vec![Link::with_context(producer)]);
            }
            builder
        }
    };
    tracing.tracer.start(builder, parent, |set| {
        let addresses = [
            (
                ctx.server_address(),
                semconv::SERVER_ADDRESS,
                semconv::SERVER_PORT,
            ),
            (
                ctx.client_address(),
                semconv::CLIENT_ADDRESS,
                semconv::CLIENT_PORT,
            ),
        ];
        for (addr, host_key, port_key) in addresses {
            if let Some(addr) = addr {
                if host_key != semconv::SERVER_ADDRESS || kind != SpanKind::Client {
                    set(KeyValue::new(host_key, Value::String(addr.host.into())));
                }
                if let Some(port) = addr.port {
                    set(KeyValue::new(port_key, i64::from(port)));
                }
            }
        }
    })
}

/// An operation's span until its outcome is recorded.
struct OpenSpan {
    cx: opentelemetry::Context,
    side: Side,
    old_names: bool,
}

impl Ending for OpenSpan {
    fn ended(self, how: Ended<'_>) {
        // The caller's own choice to stop waiting is no failure of the call.
        let side = match (how, self.side) {
            (Ended::Cancelled(_), Side::RpcClient) => Side::RpcServer,
            (_, side) => side,
        };
        let span = self.cx.span();
        if self.old_names && self.side != Side::Messaging && span.is_recording() {
            let code = how.status().map_or(tonic::Code::Ok, Status::code);
            span.set_attribute(KeyValue::new(
                semconv::OLD_RPC_GRPC_STATUS_CODE,
                code as i64,
            ));
            span.set_attribute(KeyValue::new(
                semconv::NEXT_RPC_STATUS_CODE,
                semconv::code_name(code),
            ));
        }
        end_span(&self.cx, side, how.status());
    }
}

/// Records the outcome on the span and ends it.
fn end_span(cx: &opentelemetry::Context, side: Side, error: Option<&Status>) {
    let span = cx.span();
    if !span.is_recording() {
        span.end();
        return;
    }
    let rpc = side != Side::Messaging;
    match error {
        None if rpc => span.set_attribute(KeyValue::new(semconv::RPC_RESPONSE_STATUS_CODE, "OK")),
        None => {}
        Some(status) => {
            let code = semconv::code_name(status.code());
            if rpc {
                span.set_attribute(KeyValue::new(semconv::RPC_RESPONSE_STATUS_CODE, code));
            }
            if side != Side::RpcServer || semconv::is_server_error(status.code()) {
                span.set_attribute(KeyValue::new(semconv::ERROR_TYPE, code));
                span.set_status(SpanStatus::error(status.message().to_owned()));
                span.add_event(
                    "exception",
                    vec![
                        KeyValue::new("exception.type", code),
                        KeyValue::new("exception.message", status.message().to_owned()),
                    ],
                );
            }
        }
    }
    span.end();
}

/// A reply stream polled inside its call's context, so spans opened while producing or
/// consuming items nest under the call's span.
struct InSpan {
    inner: AnyMessageStream,
    cx: opentelemetry::Context,
}

impl Stream for InSpan {
    type Item = Result<AnyMessage, Status>;

    fn poll_next(mut self: Pin<&mut Self>, task: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        let _guard = self.cx.clone().attach();
        self.inner.as_mut().poll_next(task)
    }
}
