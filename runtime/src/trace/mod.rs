//! Tracing wrappers: a SERVER span around every handler and a CLIENT span around every
//! call, following the OpenTelemetry RPC conventions, with W3C context in gRPC metadata.
//!
//! Both are ordinary [`Wrapper`]s, registered first (outermost) by [`crate::Service`].
//! A stream gets one span for its whole life, ended when the stream ends.

pub mod propagation;
pub mod semconv;
mod source;
pub mod w3c;

pub use source::ChildSpan;
pub(crate) use source::SpanSource;

use std::borrow::Cow;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Instant;

use futures_util::Stream;
use opentelemetry::context::FutureExt as _;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{
    SpanBuilder, SpanKind, Status as SpanStatus, TraceContextExt, TracerProvider,
};
use opentelemetry::{InstrumentationScope, KeyValue, Value};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tonic::Status;

use crate::context::Context;
use crate::wrapper::{Body, BoxFuture, MessageStream, Next, Request, Response, Wrapper, Wrappers};
use propagation::{MetadataExtractor, MetadataInjector, default_propagator};

/// Where spans go and how context crosses the wire: shared by the server and client
/// tracing wrappers of one service.
#[derive(Clone)]
pub struct Tracing {
    tracer: SpanSource,
    propagator: Arc<dyn TextMapPropagator + Send + Sync>,
}

impl Tracing {
    /// Spans through `provider`, with W3C trace context and baggage propagation.
    pub fn new(provider: &SdkTracerProvider) -> Self {
        Self {
            tracer: SpanSource::Sdk(provider.tracer_with_scope(scope())),
            propagator: default_propagator(),
        }
    }

    /// Spans through the global tracer provider as it is now.
    pub fn global() -> Self {
        Self {
            tracer: SpanSource::Global(Arc::new(opentelemetry::global::tracer_with_scope(scope()))),
            propagator: default_propagator(),
        }
    }

    /// Uses another propagator (e.g. B3) instead of W3C trace context and baggage.
    pub fn with_propagator(mut self, propagator: Arc<dyn TextMapPropagator + Send + Sync>) -> Self {
        self.propagator = propagator;
        self
    }

    /// The wrapper that opens a SERVER span around each handler.
    pub fn server(&self) -> Arc<dyn Wrapper> {
        Arc::new(ServerTracing(self.clone()))
    }

    /// The wrapper that opens a CLIENT span around each call.
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

/// Handler wrappers used when routes are served outside a [`crate::Service`]: tracing
/// through the global provider.
pub(crate) fn default_handler_wrappers() -> Wrappers {
    Wrappers::new(vec![Tracing::global().server()])
}

/// Which end of the call a span describes; decides which status codes are errors.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Server,
    Client,
}

struct ServerTracing(Tracing);

impl Wrapper for ServerTracing {
    fn call(&self, mut req: Request, next: Next) -> BoxFuture<Result<Response, Status>> {
        let parent = self
            .0
            .propagator
            .extract(&MetadataExtractor(req.ctx.metadata()));
        let cx = start_span(&self.0, &req.ctx, SpanKind::Server, parent);
        req.ctx.set_otel(cx.clone());
        req.ctx.set_tracer(self.0.tracer.clone());
        let span = OpenSpan::new(cx.clone(), Side::Server, req.ctx.deadline());
        let fut = run_in(&cx, next, req);
        Box::pin(async move { finish(span, fut.await) })
    }
}

struct ClientTracing(Tracing);

impl Wrapper for ClientTracing {
    fn call(&self, mut req: Request, next: Next) -> BoxFuture<Result<Response, Status>> {
        let parent = req.ctx.otel().clone();
        let cx = start_span(&self.0, &req.ctx, SpanKind::Client, parent);
        self.0
            .propagator
            .inject_context(&cx, &mut MetadataInjector(req.ctx.metadata_mut()));
        req.ctx.set_otel(cx.clone());
        req.ctx.set_tracer(self.0.tracer.clone());
        let span = OpenSpan::new(cx.clone(), Side::Client, req.ctx.deadline());
        let fut = run_in(&cx, next, req);
        Box::pin(async move { finish(span, fut.await) })
    }
}

/// Runs the rest of the chain with `cx` current, both while it builds its future and while
/// that future runs, so inner wrappers see the call's span. With no inner wrappers there is
/// nothing to attach: the transport runs no user code, and the handler endpoint attaches
/// the call's context itself.
fn run_in(
    cx: &opentelemetry::Context,
    next: Next,
    req: Request,
) -> BoxFuture<Result<Response, Status>> {
    if !next.has_wrappers() {
        return next.run(req);
    }
    let _attached = cx.clone().attach();
    Box::pin(next.run(req).with_context(cx.clone()))
}

/// Starts the call's span under `parent`, with the attributes samplers may look at.
fn start_span(
    tracing: &Tracing,
    ctx: &Context,
    kind: SpanKind,
    parent: opentelemetry::Context,
) -> opentelemetry::Context {
    let name = ctx.method().full_name();
    // What samplers may look at goes in at creation; the rest only if the span records.
    let builder = SpanBuilder::from_name(Cow::Borrowed(name))
        .with_kind(kind)
        .with_attributes([
            KeyValue::new(semconv::RPC_SYSTEM_NAME, semconv::GRPC),
            KeyValue::new(semconv::RPC_METHOD, name),
        ]);
    tracing.tracer.start(builder, &parent, |set| {
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
                set(KeyValue::new(
                    host_key,
                    Value::String(addr.host.clone().into()),
                ));
                if let Some(port) = addr.port {
                    set(KeyValue::new(port_key, i64::from(port)));
                }
            }
        }
    })
}

/// Ends the span of a finished call, or hands it to the response stream to end later.
fn finish(span: OpenSpan, result: Result<Response, Status>) -> Result<Response, Status> {
    match result {
        Ok(Response {
            body: Body::Stream(stream),
        }) => Ok(Response {
            body: Body::Stream(Box::pin(TracedStream {
                inner: stream,
                span: Some(span),
            })),
        }),
        Ok(response) => {
            span.end(None);
            Ok(response)
        }
        Err(status) => {
            span.end(Some(&status));
            Err(status)
        }
    }
}

/// A call's span until the call's outcome is recorded. Dropped before that (the caller
/// reset the stream, a deadline cut the call short, a stream was abandoned), it still
/// ends the span with a status: DEADLINE_EXCEEDED once the deadline has passed, else
/// CANCELLED.
struct OpenSpan {
    cx: opentelemetry::Context,
    side: Side,
    deadline: Option<Instant>,
    ended: bool,
}

impl OpenSpan {
    fn new(cx: opentelemetry::Context, side: Side, deadline: Option<Instant>) -> Self {
        Self {
            cx,
            side,
            deadline,
            ended: false,
        }
    }

    /// Records the outcome (`None` for OK) and ends the span.
    fn end(mut self, error: Option<&Status>) {
        self.ended = true;
        end_span(&self.cx, self.side, error);
    }
}

impl Drop for OpenSpan {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        let status = match self.deadline {
            Some(deadline) if Instant::now() >= deadline => {
                Status::deadline_exceeded("deadline exceeded")
            }
            _ => Status::cancelled("cancelled by the caller before the call finished"),
        };
        end_span(&self.cx, self.side, Some(&status));
    }
}

/// Records the outcome on the span and ends it.
fn end_span(cx: &opentelemetry::Context, side: Side, error: Option<&Status>) {
    let span = cx.span();
    if !span.is_recording() {
        span.end();
        return;
    }
    match error {
        None => span.set_attribute(KeyValue::new(semconv::RPC_RESPONSE_STATUS_CODE, "OK")),
        Some(status) => {
            let code = semconv::code_name(status.code());
            span.set_attribute(KeyValue::new(semconv::RPC_RESPONSE_STATUS_CODE, code));
            if side == Side::Client || semconv::is_server_error(status.code()) {
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

/// A response stream that keeps its call's span open until the stream ends, and polls the
/// inner stream inside the call's context.
struct TracedStream {
    inner: MessageStream,
    /// Taken when the stream ends; dropping it unended records the abandonment.
    span: Option<OpenSpan>,
}

impl Stream for TracedStream {
    type Item = Result<crate::wrapper::Message, Status>;

    fn poll_next(mut self: Pin<&mut Self>, task: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        let Some(span) = &self.span else {
            return Poll::Ready(None);
        };
        let item = {
            let _guard = span.cx.clone().attach();
            self.inner.as_mut().poll_next(task)
        };
        match &item {
            Poll::Ready(None) => self.span.take().map(|s| s.end(None)),
            Poll::Ready(Some(Err(status))) => self.span.take().map(|s| s.end(Some(status))),
            _ => None,
        };
        item
    }
}
