//! The per-call [`Context`]: method, metadata, deadline and trace context.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use opentelemetry::trace::TraceContextExt;
use tonic::metadata::MetadataMap;

use crate::method::Method;
use crate::trace::{ChildSpan, SpanSource};

/// Everything a handler or wrapper knows about one call besides its messages.
///
/// On the server it is built from the incoming request; the tracing wrapper attaches the
/// server span, so [`Context::span`] and any span opened with the `opentelemetry` or `tracing`
/// APIs inside the handler nest under it.
#[derive(Debug, Clone)]
pub struct Context {
    method: &'static Method,
    metadata: MetadataMap,
    deadline: Option<Instant>,
    remote_addr: Option<SocketAddr>,
    server_address: Option<NetAddress>,
    client_address: Option<NetAddress>,
    otel: opentelemetry::Context,
    tracer: Option<SpanSource>,
}

/// A host (name or IP, pre-rendered once per client or connection) and optional port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetAddress {
    /// Host name, IP address or registry service name.
    pub host: Arc<str>,
    /// Port, when known.
    pub port: Option<u16>,
}

impl NetAddress {
    /// The host and port of a socket address.
    pub fn from_socket(addr: SocketAddr) -> Self {
        Self {
            host: addr.ip().to_string().into(),
            port: Some(addr.port()),
        }
    }
}

/// The deadline of the call being served, carried in the OpenTelemetry context so that
/// calls made from inside a handler inherit it without passing anything by hand.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadline(pub(crate) Instant);

impl Context {
    /// A context for `method` with the given metadata and no deadline.
    pub fn new(method: &'static Method, metadata: MetadataMap) -> Self {
        Self {
            method,
            metadata,
            deadline: None,
            remote_addr: None,
            server_address: None,
            client_address: None,
            otel: opentelemetry::Context::new(),
            tracer: None,
        }
    }

    /// The method being called.
    pub fn method(&self) -> &'static Method {
        self.method
    }

    /// Request metadata (gRPC headers).
    pub fn metadata(&self) -> &MetadataMap {
        &self.metadata
    }

    /// Request metadata, to add or change entries (for example in a call wrapper).
    pub fn metadata_mut(&mut self) -> &mut MetadataMap {
        &mut self.metadata
    }

    /// When the call must be finished, if the caller set a timeout.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Time left before the deadline; `Some(ZERO)` once it has passed.
    pub fn time_remaining(&self) -> Option<Duration> {
        self.deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// Sets or clears the deadline.
    pub fn set_deadline(&mut self, deadline: Option<Instant>) {
        self.deadline = deadline;
    }

    /// Address of the peer that sent the request (server side).
    pub fn remote_addr(&self) -> Option<SocketAddr> {
        self.remote_addr
    }

    pub(crate) fn set_remote_addr(&mut self, addr: Option<SocketAddr>) {
        self.remote_addr = addr;
    }

    /// The server side of the call: the service or host called (client), the local
    /// listening address (server).
    pub fn server_address(&self) -> Option<&NetAddress> {
        self.server_address.as_ref()
    }

    pub(crate) fn set_server_address(&mut self, addr: Option<NetAddress>) {
        self.server_address = addr;
    }

    /// The calling side, on the server: the peer's address.
    pub fn client_address(&self) -> Option<&NetAddress> {
        self.client_address.as_ref()
    }

    pub(crate) fn set_client_address(&mut self, addr: Option<NetAddress>) {
        self.client_address = addr;
    }

    /// The OpenTelemetry context of the call: the server span on the server side, the
    /// caller's context on the client side.
    pub fn otel(&self) -> &opentelemetry::Context {
        &self.otel
    }

    /// Replaces the OpenTelemetry context (wrappers that open spans of their own use this).
    pub fn set_otel(&mut self, otel: opentelemetry::Context) {
        self.otel = otel;
    }

    pub(crate) fn into_metadata(self) -> MetadataMap {
        self.metadata
    }

    pub(crate) fn set_tracer(&mut self, tracer: SpanSource) {
        self.tracer = Some(tracer);
    }

    /// Starts a span named `name` as a child of the call's span. It ends when dropped; with
    /// tracing off it records nothing.
    pub fn span(&self, name: impl Into<std::borrow::Cow<'static, str>>) -> ChildSpan {
        ChildSpan::start(self.tracer.as_ref(), name.into(), &self.otel)
    }

    /// The trace id of the call, if it is traced.
    pub fn trace_id(&self) -> Option<opentelemetry::trace::TraceId> {
        let span = self.otel.span();
        let sc = span.span_context();
        sc.is_valid().then(|| sc.trace_id())
    }

    /// The context attached to the handler's future: the call's OpenTelemetry context plus
    /// its deadline, inherited by outgoing calls.
    pub(crate) fn task_context(&self) -> opentelemetry::Context {
        match self.deadline {
            Some(d) => self.otel.with_value(Deadline(d)),
            None => self.otel.clone(),
        }
    }
}
