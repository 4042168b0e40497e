//! [`Client`]: selects a node and makes gRPC calls through the call wrappers.
//!
//! Flow of a call: typed client -> [`Client::unary`] (or a streaming variant) -> call wrappers
//! (tracing first: CLIENT span, `traceparent` into metadata) -> registry lookup and selector ->
//! pooled channel to that node -> tonic.

mod pool;
mod target;

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{Stream, StreamExt};
use http::uri::PathAndQuery;
use tonic::client::Grpc;
use tonic::{Extensions, Status};
use tonic_prost::ProstCodec;

pub use target::Target;

use crate::context::{Context, Deadline};
use crate::deadline;
use crate::method::Method;
use crate::registry::{MemoryRegistry, Registry};
use crate::selector::{Random, Selector};
use crate::stream::Streaming;
use crate::trace::Tracing;
use crate::wrapper::{Body, BoxFuture, Endpoint, Request, Response, Wrapper, Wrappers};
use pool::Pool;

/// Makes calls to services: shared by every typed client, cheap to clone.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Arc<dyn Registry>,
    selector: Arc<dyn Selector>,
    wrappers: Wrappers,
    timeout: Option<Duration>,
    pool: Pool,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("wrappers", &self.inner.wrappers)
            .field("timeout", &self.inner.timeout)
            .finish()
    }
}

impl Default for Client {
    fn default() -> Self {
        Self::builder().build()
    }
}

impl Client {
    /// A client on the process-wide in-memory registry, random selection, tracing through
    /// the global tracer provider.
    pub fn new() -> Self {
        Self::default()
    }

    /// Configures a client.
    pub fn builder() -> ClientBuilder {
        ClientBuilder {
            registry: Arc::new(MemoryRegistry::global()),
            selector: Arc::new(Random),
            wrappers: Vec::new(),
            tracing: Some(Tracing::global()),
            timeout: None,
        }
    }

    /// Makes a unary call.
    pub async fn unary<Req, Resp>(
        &self,
        target: &Target,
        method: &'static Method,
        request: tonic::Request<Req>,
    ) -> Result<Resp, Status>
    where
        Req: prost::Message + Sync + 'static,
        Resp: prost::Message + Default + Sync + 'static,
    {
        self.call::<Req, Resp, _>(target, method, request, Body::message)
            .await?
            .body
            .into_message()
    }

    /// Makes a server-streaming call; the span ends when the returned stream does.
    pub async fn server_streaming<Req, Resp>(
        &self,
        target: &Target,
        method: &'static Method,
        request: tonic::Request<Req>,
    ) -> Result<Streaming<Resp>, Status>
    where
        Req: prost::Message + Sync + 'static,
        Resp: prost::Message + Default + Sync + 'static,
    {
        let response = self
            .call::<Req, Resp, _>(target, method, request, Body::message)
            .await?;
        Ok(Streaming::new(response.body.into_stream()?))
    }

    /// Makes a client-streaming call.
    pub async fn client_streaming<Req, Resp, S>(
        &self,
        target: &Target,
        method: &'static Method,
        request: tonic::Request<S>,
    ) -> Result<Resp, Status>
    where
        Req: prost::Message + Sync + 'static,
        Resp: prost::Message + Default + Sync + 'static,
        S: Stream<Item = Req> + Send + 'static,
    {
        self.call::<Req, Resp, _>(target, method, request, erase_requests)
            .await?
            .body
            .into_message()
    }

    /// Makes a bidirectional-streaming call; the span ends when the returned stream does.
    pub async fn streaming<Req, Resp, S>(
        &self,
        target: &Target,
        method: &'static Method,
        request: tonic::Request<S>,
    ) -> Result<Streaming<Resp>, Status>
    where
        Req: prost::Message + Sync + 'static,
        Resp: prost::Message + Default + Sync + 'static,
        S: Stream<Item = Req> + Send + 'static,
    {
        let response = self
            .call::<Req, Resp, _>(target, method, request, erase_requests)
            .await?;
        Ok(Streaming::new(response.body.into_stream()?))
    }

    /// Builds the call's [`Context`] and runs it through the wrappers to the transport. Its
    /// deadline is the earliest of: the request's timeout, the client's default timeout, and
    /// the deadline of the call being served, if any.
    fn call<Req, Resp, T>(
        &self,
        target: &Target,
        method: &'static Method,
        request: tonic::Request<T>,
        body: impl FnOnce(T) -> Body,
    ) -> BoxFuture<Result<Response, Status>>
    where
        Req: prost::Message + Sync + 'static,
        Resp: prost::Message + Default + Sync + 'static,
    {
        let (metadata, _, message) = request.into_parts();
        let current = opentelemetry::Context::current();
        let deadline = [
            deadline::from_metadata(&metadata),
            self.inner.timeout.map(|t| Instant::now() + t),
            current.get::<Deadline>().map(|d| d.0),
        ]
        .into_iter()
        .flatten()
        .min();
        let mut ctx = Context::new(method, metadata);
        ctx.set_deadline(deadline);
        ctx.set_server_address(Some(target.address().clone()));
        ctx.set_otel(current);
        let transport: Arc<dyn Endpoint> = Arc::new(Transport::<Req, Resp> {
            client: self.inner.clone(),
            target: target.clone(),
            _types: PhantomData,
        });
        self.inner.wrappers.run(
            transport,
            Request {
                ctx,
                body: body(message),
            },
        )
    }
}

fn erase_requests<Req: Send + 'static>(requests: impl Stream<Item = Req> + Send + 'static) -> Body {
    Body::stream(requests.map(Ok::<Req, Status>))
}

/// Configures a [`Client`].
pub struct ClientBuilder {
    registry: Arc<dyn Registry>,
    selector: Arc<dyn Selector>,
    wrappers: Vec<Arc<dyn Wrapper>>,
    tracing: Option<Tracing>,
    timeout: Option<Duration>,
}

impl ClientBuilder {
    /// Where service names are looked up (default: the process-wide in-memory registry).
    pub fn registry(mut self, registry: Arc<dyn Registry>) -> Self {
        self.registry = registry;
        self
    }

    /// How a node is picked (default: [`Random`]).
    pub fn selector(mut self, selector: Arc<dyn Selector>) -> Self {
        self.selector = selector;
        self
    }

    /// Adds a call wrapper; wrappers run in the order added, inside tracing.
    pub fn wrap_call(mut self, wrapper: Arc<dyn Wrapper>) -> Self {
        self.wrappers.push(wrapper);
        self
    }

    /// Traces calls through `tracing`, or not at all with `None`.
    pub fn tracing(mut self, tracing: Option<Tracing>) -> Self {
        self.tracing = tracing;
        self
    }

    /// Default timeout of every call (none unless set).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Builds the client.
    pub fn build(self) -> Client {
        let wrappers = self
            .tracing
            .map(|t| t.client())
            .into_iter()
            .chain(self.wrappers)
            .collect();
        Client {
            inner: Arc::new(Inner {
                registry: self.registry,
                selector: self.selector,
                wrappers: Wrappers::new(wrappers),
                timeout: self.timeout,
                pool: Pool::default(),
            }),
        }
    }
}

/// The innermost step on the client: node selection and the gRPC call itself.
struct Transport<Req, Resp> {
    client: Arc<Inner>,
    target: Target,
    _types: PhantomData<fn(Req) -> Resp>,
}

impl<Req, Resp> Endpoint for Transport<Req, Resp>
where
    Req: prost::Message + Sync + 'static,
    Resp: prost::Message + Default + Sync + 'static,
{
    fn call(&self, req: Request) -> BoxFuture<Result<Response, Status>> {
        let client = self.client.clone();
        let target = self.target.clone();
        Box::pin(async move {
            match req.ctx.deadline() {
                Some(deadline) => {
                    deadline::bound(deadline, send::<Req, Resp>(&client, &target, req)).await
                }
                None => send::<Req, Resp>(&client, &target, req).await,
            }
        })
    }
}

async fn send<Req, Resp>(client: &Inner, target: &Target, req: Request) -> Result<Response, Status>
where
    Req: prost::Message + Sync + 'static,
    Resp: prost::Message + Default + Sync + 'static,
{
    let deadline = req.ctx.deadline();
    send_once::<Req, Resp>(client, target, req)
        .await
        .map_err(|status| match deadline {
            // tonic's channel enforces `grpc-timeout` too, and reports it as CANCELLED.
            Some(d) if status.code() == tonic::Code::Cancelled && Instant::now() >= d => {
                Status::deadline_exceeded("deadline exceeded")
            }
            _ => status,
        })
}

async fn send_once<Req, Resp>(
    client: &Inner,
    target: &Target,
    req: Request,
) -> Result<Response, Status>
where
    Req: prost::Message + Sync + 'static,
    Resp: prost::Message + Default + Sync + 'static,
{
    let Request { ctx, body } = req;
    let method = ctx.method();
    let deadline = ctx.deadline();
    let mut metadata = ctx.into_metadata();
    if let Some(deadline) = deadline {
        deadline::to_metadata(deadline, &mut metadata);
    }
    let mut grpc = Grpc::new(client.channel(target).await?);
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(format!("{target}: {e}")))?;
    let path = PathAndQuery::from_static(method.path);
    let codec = ProstCodec::<Req, Resp>::default();
    let body = match (body, method.kind.server_streams()) {
        (Body::Message(m), false) => {
            let message = Body::Message(m).into_message::<Req>()?;
            Body::message(
                grpc.unary(
                    tonic::Request::from_parts(metadata, Extensions::default(), message),
                    path,
                    codec,
                )
                .await?
                .into_inner(),
            )
        }
        (Body::Message(m), true) => {
            let message = Body::Message(m).into_message::<Req>()?;
            Body::stream(
                grpc.server_streaming(
                    tonic::Request::from_parts(metadata, Extensions::default(), message),
                    path,
                    codec,
                )
                .await?
                .into_inner(),
            )
        }
        (Body::Stream(s), false) => {
            let requests = typed_requests::<Req>(s);
            Body::message(
                grpc.client_streaming(
                    tonic::Request::from_parts(metadata, Extensions::default(), requests),
                    path,
                    codec,
                )
                .await?
                .into_inner(),
            )
        }
        (Body::Stream(s), true) => {
            let requests = typed_requests::<Req>(s);
            Body::stream(
                grpc.streaming(
                    tonic::Request::from_parts(metadata, Extensions::default(), requests),
                    path,
                    codec,
                )
                .await?
                .into_inner(),
            )
        }
    };
    Ok(Response { body })
}

/// Turns an erased request stream back into typed messages; it ends at the first item a
/// wrapper replaced with something else.
fn typed_requests<Req: Send + 'static>(
    stream: crate::wrapper::MessageStream,
) -> impl Stream<Item = Req> + Send + 'static {
    stream
        .map(|item| item.ok().and_then(|m| m.downcast::<Req>().ok()).map(|b| *b))
        .take_while(|m| std::future::ready(m.is_some()))
        .filter_map(std::future::ready)
}

impl Inner {
    /// Resolves the target to a node and returns the pooled channel to it.
    async fn channel(&self, target: &Target) -> Result<tonic::transport::Channel, Status> {
        if target.is_direct() {
            return self.pool.get(target.name());
        }
        let nodes = self
            .registry
            .lookup(target.name())
            .await
            .map_err(|e| Status::unavailable(format!("looking up {target}: {e}")))?;
        if nodes.is_empty() {
            return Err(Status::unavailable(format!(
                "service {target} has no registered nodes"
            )));
        }
        let node = self.selector.select(target.name(), &nodes).ok_or_else(|| {
            Status::unavailable(format!("selector refused every node of {target}"))
        })?;
        self.pool.get(&node.address)
    }
}
