//! The per-operation [`Context`]: what is being done (an RPC or a message), metadata,
//! deadline, addresses, the chosen node and the trace context.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use opentelemetry::trace::TraceContextExt;
use tonic::metadata::MetadataMap;
use tonic::transport::server::TcpConnectInfo;

use super::codec::Decode;
use super::method::Method;
use super::node::Node;
use super::span::{ChildSpan, SpanSource};
use super::target::{NetAddress, Target};

/// What an operation is: an RPC method, or publishing or processing a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    /// A call of an RPC method (either side).
    Rpc(&'static Method),
    /// A pub/sub message, sent or processed (shared, so that a context stays small).
    Message(Arc<Messaging>),
}

impl From<&'static Method> for Operation {
    fn from(method: &'static Method) -> Self {
        Operation::Rpc(method)
    }
}

impl From<Messaging> for Operation {
    fn from(messaging: Messaging) -> Self {
        Operation::Message(Arc::new(messaging))
    }
}

/// A pub/sub operation: which topic, which direction, which consumer group.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Messaging {
    /// The topic (subject, routing key) published to or consumed from.
    pub topic: Arc<str>,
    /// Publishing or processing.
    pub kind: MessagingKind,
    /// The messaging system, as the semantic conventions name it (`nats`, `rabbitmq`...).
    pub system: &'static str,
    /// The queue group a processing subscriber belongs to.
    pub group: Option<Arc<str>>,
    /// The broker's id of the message, when it has one.
    pub message_id: Option<Arc<str>>,
    /// Which delivery of the message this processing is, from 1 (a redelivering broker
    /// counts up); 0 for a publish.
    pub delivery_attempt: u32,
}

impl Messaging {
    /// Publishing to `topic` on `system` (`nats`, `rabbitmq`, `memory`…).
    pub fn publish(topic: impl Into<Arc<str>>, system: &'static str) -> Self {
        Self {
            topic: topic.into(),
            kind: MessagingKind::Publish,
            system,
            group: None,
            message_id: None,
            delivery_attempt: 0,
        }
    }

    /// Processing the first delivery of a message of `topic` from `system`.
    pub fn process(topic: impl Into<Arc<str>>, system: &'static str) -> Self {
        Self {
            kind: MessagingKind::Process,
            delivery_attempt: 1,
            ..Self::publish(topic, system)
        }
    }

    /// The same operation in the consumer group `group`.
    pub fn group(mut self, group: impl Into<Arc<str>>) -> Self {
        self.group = Some(group.into());
        self
    }

    /// The same operation on the message the broker calls `id`.
    pub fn message_id(mut self, id: impl Into<Arc<str>>) -> Self {
        self.message_id = Some(id.into());
        self
    }

    /// The same processing, of delivery `attempt` (from 1).
    pub fn delivery_attempt(mut self, attempt: u32) -> Self {
        self.delivery_attempt = attempt;
        self
    }
}

/// The direction of a pub/sub operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessagingKind {
    /// Sending a message (a PRODUCER span).
    Publish,
    /// Handling a received message (a CONSUMER span).
    Process,
}

/// A key selectors can route by (consistent hashing, sticky sessions). Set it on the
/// context in a wrapper, or put it in a request's extensions:
/// `request.extensions_mut().insert(RoutingKey::new("user-42"))`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RoutingKey(Arc<str>);

impl RoutingKey {
    /// A routing key.
    pub fn new(key: impl Into<Arc<str>>) -> Self {
        Self(key.into())
    }

    /// The key.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Everything a handler or wrapper knows about one operation besides its messages.
///
/// On the server it is built from the incoming request; the tracing wrapper attaches the
/// server span, so [`Context::span`] and any span opened with the `opentelemetry` or `tracing`
/// APIs inside the handler nest under it.
#[derive(Debug, Clone)]
pub struct Context {
    operation: Operation,
    metadata: MetadataMap,
    deadline: Option<Instant>,
    target: Option<Target>,
    node: Option<Arc<Node>>,
    reply_metadata: Option<Arc<Mutex<MetadataMap>>>,
    decode_reply: Option<Decode>,
    extensions: http::Extensions,
    otel: opentelemetry::Context,
    tracer: Option<SpanSource>,
}

/// The deadline of the call being served, carried in the OpenTelemetry context so that
/// calls made from inside a handler inherit it without passing anything by hand.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadline(pub(crate) Instant);

impl Context {
    /// A context for `operation` (an RPC [`Method`] or a [`Messaging`] operation) with the
    /// given metadata and no deadline.
    pub fn new(operation: impl Into<Operation>, metadata: MetadataMap) -> Self {
        Self {
            operation: operation.into(),
            metadata,
            deadline: None,
            target: None,
            node: None,
            reply_metadata: None,
            decode_reply: None,
            extensions: http::Extensions::new(),
            otel: opentelemetry::Context::new(),
            tracer: None,
        }
    }

    /// What is being done.
    pub fn operation(&self) -> &Operation {
        &self.operation
    }

    /// The RPC method, if this is an RPC.
    pub fn method(&self) -> Option<&'static Method> {
        match self.operation {
            Operation::Rpc(method) => Some(method),
            Operation::Message(_) => None,
        }
    }

    /// The pub/sub operation, if this is one.
    pub fn messaging(&self) -> Option<&Messaging> {
        match &self.operation {
            Operation::Message(m) => Some(m),
            Operation::Rpc(_) => None,
        }
    }

    /// Request metadata (gRPC headers, or message headers).
    pub fn metadata(&self) -> &MetadataMap {
        &self.metadata
    }

    /// Request metadata, to add or change entries (for example in a call wrapper).
    pub fn metadata_mut(&mut self) -> &mut MetadataMap {
        &mut self.metadata
    }

    /// When the operation must be finished, if the caller set a timeout.
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
        self.connection()?.remote_addr()
    }

    /// The local address the request arrived on (server side).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.connection()?.local_addr()
    }

    /// The connection a request being served came on, as tonic's server records it in the
    /// request's extensions (which the context keeps).
    fn connection(&self) -> Option<&TcpConnectInfo> {
        self.extensions.get::<TcpConnectInfo>()
    }

    /// The server side of the call: the service or host called (client), the local
    /// listening address (server).
    pub fn server_address(&self) -> Option<NetAddress> {
        match self.local_addr() {
            Some(local) => Some(NetAddress::from_socket(local)),
            None => self.target.as_ref().map(|t| t.address().clone()),
        }
    }

    /// The calling side, on the server: the peer's address.
    pub fn client_address(&self) -> Option<NetAddress> {
        self.remote_addr().map(NetAddress::from_socket)
    }

    /// What a client call is addressed to: a registry name or a direct address.
    pub fn target(&self) -> Option<&Target> {
        self.target.as_ref()
    }

    pub(crate) fn set_target(&mut self, target: Target) {
        self.target = Some(target);
    }

    /// The node a client call goes to, once the selection step has picked it.
    pub fn node(&self) -> Option<&Arc<Node>> {
        self.node.as_ref()
    }

    /// Sends the call to `node` (what the selection step does; a wrapper inside it may
    /// override the choice).
    pub fn set_node(&mut self, node: Option<Arc<Node>>) {
        self.node = node;
    }

    /// The key selectors may route by (kept in the [`Context::extensions`]).
    pub fn routing_key(&self) -> Option<&RoutingKey> {
        self.extensions.get::<RoutingKey>()
    }

    /// Sets the key selectors may route by.
    pub fn set_routing_key(&mut self, key: Option<RoutingKey>) {
        match key {
            Some(key) => self.extensions.insert(key),
            None => self.extensions.remove::<RoutingKey>(),
        };
    }

    /// Headers a handler sends back with its reply (gRPC's `SetHeader`); on an error they
    /// go with the status. `None` outside a handler, where there is no reply to send.
    pub fn reply_metadata(&self) -> Option<MutexGuard<'_, MetadataMap>> {
        self.reply_metadata
            .as_ref()
            .map(|slot| slot.lock().unwrap_or_else(|e| e.into_inner()))
    }

    pub(crate) fn collect_reply_metadata(&mut self) -> Arc<Mutex<MetadataMap>> {
        self.reply_metadata
            .get_or_insert_with(Default::default)
            .clone()
    }

    pub(crate) fn decode_reply(&self) -> Option<Decode> {
        self.decode_reply
    }

    pub(crate) fn set_decode_reply(&mut self, decode: Decode) {
        self.decode_reply = Some(decode);
    }

    /// Typed values wrappers hand each other, as in tonic's request extensions. On the
    /// server they start as the request's: what tonic's server and tower layers put there.
    pub fn extensions(&self) -> &http::Extensions {
        &self.extensions
    }

    /// Typed values wrappers hand each other, to add or take.
    pub fn extensions_mut(&mut self) -> &mut http::Extensions {
        &mut self.extensions
    }

    /// The OpenTelemetry context of the operation: the server span on the server side, the
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

    /// Starts a span named `name` as a child of the operation's span. It ends when
    /// dropped; with tracing off it records nothing.
    pub fn span(&self, name: impl Into<std::borrow::Cow<'static, str>>) -> ChildSpan {
        ChildSpan::start(self.tracer.as_ref(), name.into(), &self.otel)
    }

    /// The trace id of the operation, if it is traced.
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
