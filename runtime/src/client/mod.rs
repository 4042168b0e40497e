//! [`Client`]: makes gRPC calls through the call chain.
//!
//! The chain of a call: typed client -> [`Client::unary`] (or a streaming variant) builds
//! the [`Context`] -> call wrappers (tracing first: CLIENT span, `traceparent` into
//! metadata; then the user's) -> selection step (the registry cache's nodes, the
//! [`Selector`]'s pick, recorded in the context; the outcome fed back) -> transport (the
//! pooled channel to that node, through the client's tower layers, then tonic).

mod pool;
mod retry;
mod selection;
mod transport;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::Either;
use futures_util::{FutureExt as _, Stream, StreamExt};
use tonic::Status;
use tonic::metadata::MetadataMap;

use crate::call::{
    AnyMessage, BoxFuture, Call, Context, Deadline, MessageStream, Method, Payload, Reply, Target,
    deadline, decode,
};
use crate::discovery::{Cache, MemoryRegistry, Random, Registry, Selector};
use crate::environment::{ConfigError, FromEnv};
use crate::instrumentation::Instrumentation;
use crate::wrapper::{Chain, HttpLayer, HttpStack, Wrapper};
use pool::Pool;
pub use retry::{Idempotent, RetryPolicy};
use selection::Selection;
use transport::Transport;

/// Makes calls to services: shared by every typed client, cheap to clone.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    chain: Arc<Chain>,
    /// The chain's terminal step, for unary calls that need no chain (see [`Client::unary`]).
    selection: Selection,
    pool: Arc<Pool>,
    timeout: Option<Duration>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("timeout", &self.inner.timeout)
            .finish_non_exhaustive()
    }
}

impl Default for Client {
    fn default() -> Self {
        Self::builder().build()
    }
}

/// Captures the reply metadata of one call made through a typed client, whose methods
/// return only the message: response headers and (unary) trailers, or the metadata of the
/// error status.
///
/// ```no_run
/// # async fn demo(req: micro_otel::Request<()>) {
/// let mut request = req;
/// let reply = micro_otel::client::ReplyMetadata::capture(&mut request);
/// // ... typed_client.get_user(request).await ...
/// let served_by = reply.get().and_then(|md| md.get("x-served-by").cloned());
/// # }
/// ```
#[derive(Debug, Clone, Default)]
pub struct ReplyMetadata(Arc<Mutex<Option<MetadataMap>>>);

impl ReplyMetadata {
    /// Asks for the reply metadata of the call that will send `request`.
    pub fn capture<T>(request: &mut tonic::Request<T>) -> Self {
        let slot = Self::default();
        request.extensions_mut().insert(slot.clone());
        slot
    }

    /// The reply metadata, once the call has finished.
    pub fn get(&self) -> Option<MetadataMap> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set(&self, metadata: &MetadataMap) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(metadata.clone());
    }
}

impl Client {
    /// A client on the process-wide in-memory registry, random selection, tracing through
    /// the global tracer provider.
    pub fn new() -> Self {
        Self::default()
    }

    /// Configures a client.
    pub fn builder() -> ClientConfig {
        ClientConfig::default()
    }

    /// The node addresses this client holds a channel to, sorted: channels to nodes that
    /// left the registry are dropped.
    pub fn connected_addresses(&self) -> Vec<String> {
        self.inner.pool.addresses()
    }

    /// A client configured from go-micro's variables (`MICRO_REGISTRY`,
    /// `MICRO_REGISTRY_ADDRESS`, `MICRO_SELECTOR`) where they are set, with the defaults of
    /// [`Client::builder`] otherwise; what the code sets afterwards wins.
    pub fn from_env() -> Result<ClientConfig, ConfigError> {
        let env = FromEnv::read();
        let mut config = Self::builder();
        config.registry = env.registry.transpose()?;
        config.selector = env.selector.transpose()?;
        Ok(config)
    }

    /// Makes a unary call. The call's context (parent span, inherited deadline) is taken
    /// when this is called; generated clients call it when their future is first polled.
    pub fn unary<Req, Resp>(
        &self,
        target: &Target,
        method: &'static Method,
        request: tonic::Request<Req>,
    ) -> impl Future<Output = Result<Resp, Status>>
    where
        Req: prost::Message + Clone + 'static,
        Resp: prost::Message + Default + Clone + 'static,
    {
        // Combinators over the chosen path, not an `async fn`: that would hold the call and
        // the future it awaits side by side, and each move of the future copies both.
        let selection = &self.inner.selection;
        let (reply, capture) = if !self.inner.chain.is_bare() {
            let (call, capture) =
                self.prepare::<Resp, _>(target, method, request, Payload::message);
            (Either::Right(self.inner.chain.run(call)), capture)
        } else if target.is_direct() {
            // No wrapper and no selector: nothing would read a context, so none is built,
            // and the request goes to the transport as a plain tonic client sends it.
            let (metadata, mut extensions, message) = request.into_parts();
            let inherited = opentelemetry::Context::map_current(inherited_deadline);
            let deadline = self.deadline(&metadata, inherited);
            let capture = Capture(extensions.remove::<ReplyMetadata>());
            let send = selection.transport().unary_to(
                target.name(),
                method,
                decode::<Resp>,
                metadata,
                deadline,
                AnyMessage::new(message),
            );
            (Either::Left(Either::Left(send)), capture)
        } else {
            // Nothing needs the erased chain: the call runs in the caller's own future.
            // A unary call's tonic future is over a KiB; boxing one per call (the chain's
            // way) costs a large allocation and copy, which shows under load.
            let (call, capture) =
                self.prepare::<Resp, _>(target, method, request, Payload::message);
            let send = selection.run(call, |c| selection.transport().unary(c));
            (Either::Left(Either::Right(send)), capture)
        };
        reply.map(move |reply| {
            capture.record(&reply);
            reply?.payload.into_message()
        })
    }

    /// Makes a server-streaming call; the span ends when the returned stream does.
    pub async fn server_streaming<Req, Resp>(
        &self,
        target: &Target,
        method: &'static Method,
        request: tonic::Request<Req>,
    ) -> Result<MessageStream<Resp>, Status>
    where
        Req: prost::Message + Clone + 'static,
        Resp: prost::Message + Default + Clone + 'static,
    {
        let reply = self
            .call::<Resp, _>(target, method, request, Payload::message)
            .await?;
        Ok(MessageStream::new(reply.payload.into_stream()?))
    }

    /// Makes a client-streaming call.
    pub async fn client_streaming<Req, Resp, S>(
        &self,
        target: &Target,
        method: &'static Method,
        request: tonic::Request<S>,
    ) -> Result<Resp, Status>
    where
        Req: prost::Message + Clone + 'static,
        Resp: prost::Message + Default + Clone + 'static,
        S: Stream<Item = Req> + Send + 'static,
    {
        self.call::<Resp, _>(target, method, request, requests)
            .await?
            .payload
            .into_message()
    }

    /// Makes a bidirectional-streaming call; the span ends when the returned stream does.
    pub async fn streaming<Req, Resp, S>(
        &self,
        target: &Target,
        method: &'static Method,
        request: tonic::Request<S>,
    ) -> Result<MessageStream<Resp>, Status>
    where
        Req: prost::Message + Clone + 'static,
        Resp: prost::Message + Default + Clone + 'static,
        S: Stream<Item = Req> + Send + 'static,
    {
        let reply = self
            .call::<Resp, _>(target, method, request, requests)
            .await?;
        Ok(MessageStream::new(reply.payload.into_stream()?))
    }

    /// Builds the call's [`Context`] and runs it through the chain.
    fn call<Resp, T>(
        &self,
        target: &Target,
        method: &'static Method,
        request: tonic::Request<T>,
        payload: impl FnOnce(T) -> Payload,
    ) -> BoxFuture<Result<Reply, Status>>
    where
        Resp: prost::Message + Default + Clone + 'static,
    {
        let (call, capture) = self.prepare::<Resp, _>(target, method, request, payload);
        let reply = self.inner.chain.run(call);
        match capture.0 {
            None => reply,
            Some(_) => Box::pin(async move {
                let reply = reply.await;
                capture.record(&reply);
                reply
            }),
        }
    }

    /// Builds the call's [`Context`], with its [`Client::deadline`].
    fn prepare<Resp, T>(
        &self,
        target: &Target,
        method: &'static Method,
        request: tonic::Request<T>,
        payload: impl FnOnce(T) -> Payload,
    ) -> (Call, Capture)
    where
        Resp: prost::Message + Default + Clone + 'static,
    {
        let (metadata, mut extensions, message) = request.into_parts();
        let current = opentelemetry::Context::current();
        let deadline = self.deadline(&metadata, inherited_deadline(&current));
        let mut ctx = Context::new(method, metadata);
        ctx.set_deadline(deadline);
        ctx.set_target(target.clone());
        ctx.set_otel(current);
        ctx.set_decode_reply(decode::<Resp>);
        // The request's extensions (a RoutingKey among them) become the context's.
        let capture = Capture(extensions.remove::<ReplyMetadata>());
        *ctx.extensions_mut() = extensions;
        (Call::new(ctx, payload(message)), capture)
    }

    /// A call's deadline: the earliest of the request's timeout (`grpc-timeout` in its
    /// `metadata`), the client's default timeout, and the `inherited` deadline of the call
    /// being served, if any.
    fn deadline(&self, metadata: &MetadataMap, inherited: Option<Instant>) -> Option<Instant> {
        [
            deadline::from_metadata(metadata),
            self.inner.timeout.map(|t| Instant::now() + t),
            inherited,
        ]
        .into_iter()
        .flatten()
        .min()
    }
}

/// The deadline of the call being served in `cx`, which calls made inside it inherit.
fn inherited_deadline(cx: &opentelemetry::Context) -> Option<Instant> {
    cx.get::<Deadline>().map(|d| d.0)
}

/// Where a call's reply metadata goes, if its caller asked for it.
struct Capture(Option<ReplyMetadata>);

impl Capture {
    fn record(&self, reply: &Result<Reply, Status>) {
        match (&self.0, reply) {
            (Some(slot), Ok(reply)) => slot.set(&reply.metadata),
            (Some(slot), Err(status)) => slot.set(status.metadata()),
            (None, _) => {}
        }
    }
}

fn requests<Req: prost::Message + Clone + 'static>(
    requests: impl Stream<Item = Req> + Send + 'static,
) -> Payload {
    Payload::stream(requests.map(Ok::<Req, Status>))
}

/// Configures a [`Client`].
#[derive(Default)]
pub struct ClientConfig {
    registry: Option<Arc<dyn Registry>>,
    selector: Option<Arc<dyn Selector>>,
    wrappers: Vec<Arc<dyn Wrapper>>,
    instrumentation: Instrumentation,
    timeout: Option<Duration>,
    channel_layers: HttpStack,
    retry: RetryPolicy,
    ejection: Option<Duration>,
}

/// How long a node that could not be reached is left out by default.
const EJECTION: Duration = Duration::from_secs(10);

impl ClientConfig {
    /// Where service names are looked up (default: the process-wide in-memory registry).
    pub fn registry(mut self, registry: impl Registry) -> Self {
        self.registry = Some(Arc::new(registry));
        self
    }

    /// How a node is picked (default: [`crate::discovery::Random`]).
    pub fn selector(mut self, selector: impl Selector) -> Self {
        self.selector = Some(Arc::new(selector));
        self
    }

    /// Adds a call wrapper; wrappers run in the order added, inside the built-in ones and
    /// outside node selection.
    pub fn wrap_call(mut self, wrapper: Arc<dyn Wrapper>) -> Self {
        self.wrappers.push(wrapper);
        self
    }

    /// Which built-in wrappers run, and where they report (default: tracing through the
    /// global tracer provider).
    pub fn instrumentation(mut self, instrumentation: Instrumentation) -> Self {
        self.instrumentation = instrumentation;
        self
    }

    /// When calls through the registry are retried on another node (see [`RetryPolicy`]
    /// for the defaults). Calls to a direct address are never retried.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// How long a node that could not be reached is left out of selection (default 10 s;
    /// zero turns outlier ejection off).
    pub fn ejection(mut self, cooling: Duration) -> Self {
        self.ejection = Some(cooling);
        self
    }

    /// Default timeout of every call (none unless set).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Puts a tower layer around every channel (one per node), e.g. a concurrency limit per
    /// node or a tower-http layer on the HTTP/2 requests. Layers added later are outermost.
    pub fn channel_layer(mut self, layer: impl HttpLayer) -> Self {
        self.channel_layers.push(layer);
        self
    }

    /// The selector the code set, taken out for the service to resolve against the
    /// environment.
    pub(crate) fn take_selector(&mut self) -> Option<Arc<dyn Selector>> {
        self.selector.take()
    }

    /// What a service sets on its client: its registry, selector and instrumentation.
    pub(crate) fn for_service(
        mut self,
        registry: Arc<dyn Registry>,
        selector: Option<Arc<dyn Selector>>,
        instrumentation: Instrumentation,
    ) -> Self {
        self.registry = Some(registry);
        self.selector = selector;
        self.instrumentation = instrumentation;
        self
    }

    /// Builds the client.
    pub fn build(self) -> Client {
        let pool = Arc::new(Pool::new(self.channel_layers));
        let evict = pool.clone();
        let registry = self
            .registry
            .unwrap_or_else(|| Arc::new(MemoryRegistry::global()));
        let cache = Cache::new(registry).on_removed(move |node| evict.remove(&node.address));
        let chains = self.instrumentation.chains();
        let selection = Selection::new(
            cache,
            self.selector.unwrap_or_else(|| Arc::new(Random)),
            Transport::new(pool.clone()),
            self.retry,
            self.ejection.unwrap_or(EJECTION),
            chains.metrics().map(|m| m.attempts()),
        );
        if let Some(metrics) = chains.metrics() {
            metrics.observe_client(selection.state());
        }
        Client {
            inner: Arc::new(Inner {
                chain: Chain::new(chains.outgoing(&self.wrappers), selection.clone()),
                selection,
                pool,
                timeout: self.timeout,
            }),
        }
    }
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("wrappers", &self.wrappers.len())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}
