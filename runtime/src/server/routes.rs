//! [`Routes`]: one proto service's methods bound to a handler, served as a tower service.
//!
//! Generated code builds a `Routes` per service with one call per method; everything that
//! turns HTTP/2 requests into typed handler calls lives here, not in generated code.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use opentelemetry::context::FutureExt as _;
use opentelemetry::trace::TraceContextExt as _;
use tonic::Status;
use tonic::body::Body as HttpBody;
use tonic::server::Grpc;
use tonic_prost::ProstCodec;

use crate::context::{Context, NetAddress};
use crate::deadline;
use crate::method::Method;
use crate::stream::{ResponseStream, Streaming};
use crate::wrapper::{Body, BoxFuture, Endpoint, Request, Response, Wrappers};

/// What the server knows about a connection, handed to every request on it.
#[derive(Debug)]
pub(crate) struct ConnInfo {
    pub(crate) peer: SocketAddr,
    pub(crate) local: Option<NetAddress>,
    pub(crate) client: NetAddress,
}

/// A proto service's methods bound to a handler: a tower service answering gRPC requests.
///
/// Built by generated code (`UserServer::new(handler)`), then either added to a
/// [`crate::Service`] (which sets its wrappers) or mounted on any tonic server.
#[derive(Clone)]
pub struct Routes {
    inner: Arc<Inner>,
}

struct Inner {
    service: &'static str,
    methods: HashMap<&'static str, Route>,
    wrappers: Wrappers,
}

#[derive(Clone)]
struct Route {
    method: &'static Method,
    endpoint: Arc<dyn Endpoint>,
    dispatch: Arc<dyn Dispatch>,
}

impl Routes {
    /// Starts binding the methods of `service` (e.g. `user.User`) to `handler`.
    pub fn builder<H: Send + Sync + 'static>(
        service: &'static str,
        handler: H,
    ) -> RoutesBuilder<H> {
        RoutesBuilder {
            service,
            handler: Arc::new(handler),
            methods: HashMap::new(),
        }
    }

    /// The fully qualified proto service name.
    pub fn service_name(&self) -> &'static str {
        self.inner.service
    }

    /// The methods served, in no particular order.
    pub fn methods(&self) -> impl Iterator<Item = &'static Method> + '_ {
        self.inner.methods.values().map(|r| r.method)
    }

    /// The same routes with a different wrapper chain (first is outermost).
    pub fn with_wrappers(self, wrappers: Wrappers) -> Self {
        let inner = Inner {
            service: self.inner.service,
            methods: self.inner.methods.clone(),
            wrappers,
        };
        Self {
            inner: Arc::new(inner),
        }
    }

    /// Answers one HTTP/2 gRPC request.
    pub fn serve(&self, req: http::Request<HttpBody>) -> BoxFuture<http::Response<HttpBody>> {
        self.serve_on(req, None)
    }

    /// Answers one request that arrived on a connection of our own server.
    pub(crate) fn serve_on(
        &self,
        req: http::Request<HttpBody>,
        conn: Option<Arc<ConnInfo>>,
    ) -> BoxFuture<http::Response<HttpBody>> {
        match self.inner.methods.get(req.uri().path()) {
            Some(route) => route.dispatch.serve(
                req,
                Chain {
                    method: route.method,
                    wrappers: self.inner.wrappers.clone(),
                    endpoint: route.endpoint.clone(),
                    conn,
                },
            ),
            None => {
                let status = Status::unimplemented(format!(
                    "method {} is not implemented by this server",
                    req.uri().path()
                ));
                Box::pin(async move { status.into_http() })
            }
        }
    }
}

impl std::fmt::Debug for Routes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Routes")
            .field("service", &self.inner.service)
            .field("methods", &self.inner.methods.len())
            .field("wrappers", &self.inner.wrappers)
            .finish()
    }
}

impl tower_service::Service<http::Request<HttpBody>> for Routes {
    type Response = http::Response<HttpBody>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut TaskContext<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<HttpBody>) -> Self::Future {
        let fut = self.serve(req);
        Box::pin(async move { Ok(fut.await) })
    }
}

/// Collects one route per method; finish with [`RoutesBuilder::build`].
pub struct RoutesBuilder<H> {
    service: &'static str,
    handler: Arc<H>,
    methods: HashMap<&'static str, Route>,
}

impl<H: Send + Sync + 'static> RoutesBuilder<H> {
    /// Binds `method` to `f`, converting bodies as the RPC shape `S` says.
    fn bind<S, F, Fut>(mut self, method: &'static Method, f: F) -> Self
    where
        S: Shape,
        F: Fn(Arc<H>, Context, S::In) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<S::Out, Status>> + Send + 'static,
    {
        let handler = self.handler.clone();
        let endpoint = HandlerEndpoint::arc(move |ctx, body: Body| {
            let answer = f(handler.clone(), ctx, S::input(body)?);
            Ok(async move {
                Ok(Response {
                    body: S::output(answer.await?),
                })
            })
        });
        let route = Route {
            method,
            endpoint,
            dispatch: Arc::new(S::default()),
        };
        self.methods.insert(method.path, route);
        self
    }

    /// Binds a unary method: `f(handler, ctx, request)`.
    pub fn unary<Req, Resp, F, Fut>(self, method: &'static Method, f: F) -> Self
    where
        Req: prost::Message + Default + 'static,
        Resp: prost::Message + 'static,
        F: Fn(Arc<H>, Context, Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp, Status>> + Send + 'static,
    {
        self.bind::<UnaryDispatch<Req, Resp>, _, _>(method, f)
    }

    /// Binds a server-streaming method: `f(handler, ctx, request)` returns a stream.
    pub fn server_streaming<Req, Resp, F, Fut>(self, method: &'static Method, f: F) -> Self
    where
        Req: prost::Message + Default + 'static,
        Resp: prost::Message + 'static,
        F: Fn(Arc<H>, Context, Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<ResponseStream<Resp>, Status>> + Send + 'static,
    {
        self.bind::<ServerStreamingDispatch<Req, Resp>, _, _>(method, f)
    }

    /// Binds a client-streaming method: `f(handler, ctx, requests)`.
    pub fn client_streaming<Req, Resp, F, Fut>(self, method: &'static Method, f: F) -> Self
    where
        Req: prost::Message + Default + 'static,
        Resp: prost::Message + 'static,
        F: Fn(Arc<H>, Context, Streaming<Req>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp, Status>> + Send + 'static,
    {
        self.bind::<ClientStreamingDispatch<Req, Resp>, _, _>(method, f)
    }

    /// Binds a bidirectional-streaming method: `f(handler, ctx, requests)` returns a stream.
    pub fn streaming<Req, Resp, F, Fut>(self, method: &'static Method, f: F) -> Self
    where
        Req: prost::Message + Default + 'static,
        Resp: prost::Message + 'static,
        F: Fn(Arc<H>, Context, Streaming<Req>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<ResponseStream<Resp>, Status>> + Send + 'static,
    {
        self.bind::<StreamingDispatch<Req, Resp>, _, _>(method, f)
    }

    /// Finishes the routes with the default wrapper chain: tracing through the global
    /// tracer provider. [`crate::Service`] replaces it with the service's own chain.
    pub fn build(self) -> Routes {
        Routes {
            inner: Arc::new(Inner {
                service: self.service,
                methods: self.methods,
                wrappers: crate::trace::default_handler_wrappers(),
            }),
        }
    }
}

/// An RPC shape: what the handler takes and returns, and how both cross the type-erased
/// wrapper chain.
trait Shape: Dispatch + Default {
    /// What the handler is given: a message or a stream of them.
    type In: Send + 'static;
    /// What the handler returns: a message or a stream of them.
    type Out: Send + 'static;
    /// Types the erased request body.
    fn input(body: Body) -> Result<Self::In, Status>;
    /// Erases the handler's answer.
    fn output(out: Self::Out) -> Body;
}

impl<Req, Resp> Shape for UnaryDispatch<Req, Resp>
where
    Req: prost::Message + Default + 'static,
    Resp: prost::Message + 'static,
{
    type In = Req;
    type Out = Resp;
    fn input(body: Body) -> Result<Req, Status> {
        body.into_message()
    }
    fn output(out: Resp) -> Body {
        Body::message(out)
    }
}

impl<Req, Resp> Shape for ServerStreamingDispatch<Req, Resp>
where
    Req: prost::Message + Default + 'static,
    Resp: prost::Message + 'static,
{
    type In = Req;
    type Out = ResponseStream<Resp>;
    fn input(body: Body) -> Result<Req, Status> {
        body.into_message()
    }
    fn output(out: ResponseStream<Resp>) -> Body {
        Body::stream(out)
    }
}

impl<Req, Resp> Shape for ClientStreamingDispatch<Req, Resp>
where
    Req: prost::Message + Default + 'static,
    Resp: prost::Message + 'static,
{
    type In = Streaming<Req>;
    type Out = Resp;
    fn input(body: Body) -> Result<Streaming<Req>, Status> {
        Ok(Streaming::new(body.into_stream()?))
    }
    fn output(out: Resp) -> Body {
        Body::message(out)
    }
}

impl<Req, Resp> Shape for StreamingDispatch<Req, Resp>
where
    Req: prost::Message + Default + 'static,
    Resp: prost::Message + 'static,
{
    type In = Streaming<Req>;
    type Out = ResponseStream<Resp>;
    fn input(body: Body) -> Result<Streaming<Req>, Status> {
        Ok(Streaming::new(body.into_stream()?))
    }
    fn output(out: ResponseStream<Resp>) -> Body {
        Body::stream(out)
    }
}

/// The innermost step on the server: calls the user's handler with the call's context
/// attached, so spans the handler opens nest under the server span, and cancels it (by
/// dropping it) when the caller's deadline passes.
struct HandlerEndpoint<F>(F);

impl<F, Fut> HandlerEndpoint<F>
where
    F: Fn(Context, Body) -> Result<Fut, Status> + Send + Sync + 'static,
    Fut: Future<Output = Result<Response, Status>> + Send + 'static,
{
    fn arc(f: F) -> Arc<dyn Endpoint> {
        Arc::new(Self(f))
    }
}

impl<F, Fut> Endpoint for HandlerEndpoint<F>
where
    F: Fn(Context, Body) -> Result<Fut, Status> + Send + Sync + 'static,
    Fut: Future<Output = Result<Response, Status>> + Send + 'static,
{
    fn call(&self, req: Request) -> BoxFuture<Result<Response, Status>> {
        let deadline = req.ctx.deadline();
        // Nothing to attach without a span or a deadline (tracing off, no timeout).
        let task_cx = (deadline.is_some() || req.ctx.otel().has_active_span())
            .then(|| req.ctx.task_context());
        let fut = match (self.0)(req.ctx, req.body) {
            Ok(fut) => fut,
            Err(status) => return Box::pin(std::future::ready(Err(status))),
        };
        match (deadline, task_cx) {
            (Some(deadline), Some(cx)) => Box::pin(deadline::bound(deadline, fut).with_context(cx)),
            (None, Some(cx)) => Box::pin(fut.with_context(cx)),
            (_, None) => Box::pin(fut),
        }
    }
}

/// Everything needed to run one call through the wrappers to the handler.
struct Chain {
    method: &'static Method,
    wrappers: Wrappers,
    endpoint: Arc<dyn Endpoint>,
    /// The connection, when the request came through our own server.
    conn: Option<Arc<ConnInfo>>,
}

impl Chain {
    /// Builds the [`Context`] from the incoming request and runs wrappers and handler; the
    /// handler is bounded by the caller's deadline.
    fn run<T>(
        &self,
        request: tonic::Request<T>,
        body: impl FnOnce(T) -> Body,
    ) -> BoxFuture<Result<Response, Status>> {
        let (metadata, _, message) = request.into_parts();
        let deadline = deadline::from_metadata(&metadata);
        let mut ctx = Context::new(self.method, metadata);
        ctx.set_deadline(deadline);
        if let Some(conn) = &self.conn {
            ctx.set_remote_addr(Some(conn.peer));
            ctx.set_server_address(conn.local.clone());
            ctx.set_client_address(Some(conn.client.clone()));
        }
        self.wrappers.run(
            self.endpoint.clone(),
            Request {
                ctx,
                body: body(message),
            },
        )
    }
}

/// Turns an HTTP/2 request into a typed tonic call for one RPC kind.
trait Dispatch: Send + Sync + 'static {
    fn serve(
        &self,
        req: http::Request<HttpBody>,
        chain: Chain,
    ) -> BoxFuture<http::Response<HttpBody>>;
}

/// Unary: one message each way.
struct UnaryDispatch<Req, Resp>(PhantomData<fn(Req) -> Resp>);
/// One request, a stream of responses.
struct ServerStreamingDispatch<Req, Resp>(PhantomData<fn(Req) -> Resp>);
/// A stream of requests, one response.
struct ClientStreamingDispatch<Req, Resp>(PhantomData<fn(Req) -> Resp>);
/// Streams both ways.
struct StreamingDispatch<Req, Resp>(PhantomData<fn(Req) -> Resp>);

macro_rules! default_marker {
    ($($name:ident),*) => {$(
        impl<Req, Resp> Default for $name<Req, Resp> {
            fn default() -> Self {
                Self(PhantomData)
            }
        }
    )*};
}
default_marker!(
    UnaryDispatch,
    ServerStreamingDispatch,
    ClientStreamingDispatch,
    StreamingDispatch
);

fn codec<Req, Resp>() -> Grpc<ProstCodec<Resp, Req>>
where
    Req: prost::Message + Default + 'static,
    Resp: prost::Message + 'static,
{
    Grpc::new(ProstCodec::default())
}

impl<Req, Resp> Dispatch for UnaryDispatch<Req, Resp>
where
    Req: prost::Message + Default + 'static,
    Resp: prost::Message + 'static,
{
    fn serve(
        &self,
        req: http::Request<HttpBody>,
        chain: Chain,
    ) -> BoxFuture<http::Response<HttpBody>> {
        let call = ChainCall::new(chain, Body::message, |r: Response| {
            r.body.into_message::<Resp>()
        });
        Box::pin(async move { codec::<Req, Resp>().unary(call, req).await })
    }
}

impl<Req, Resp> Dispatch for ServerStreamingDispatch<Req, Resp>
where
    Req: prost::Message + Default + 'static,
    Resp: prost::Message + 'static,
{
    fn serve(
        &self,
        req: http::Request<HttpBody>,
        chain: Chain,
    ) -> BoxFuture<http::Response<HttpBody>> {
        let call = ChainCall::new(chain, Body::message, |r: Response| {
            Ok(Streaming::<Resp>::new(r.body.into_stream()?))
        });
        Box::pin(async move { codec::<Req, Resp>().server_streaming(call, req).await })
    }
}

impl<Req, Resp> Dispatch for ClientStreamingDispatch<Req, Resp>
where
    Req: prost::Message + Default + 'static,
    Resp: prost::Message + 'static,
{
    fn serve(
        &self,
        req: http::Request<HttpBody>,
        chain: Chain,
    ) -> BoxFuture<http::Response<HttpBody>> {
        let call = ChainCall::new(chain, Body::stream::<Req, _>, |r: Response| {
            r.body.into_message::<Resp>()
        });
        Box::pin(async move { codec::<Req, Resp>().client_streaming(call, req).await })
    }
}

impl<Req, Resp> Dispatch for StreamingDispatch<Req, Resp>
where
    Req: prost::Message + Default + 'static,
    Resp: prost::Message + 'static,
{
    fn serve(
        &self,
        req: http::Request<HttpBody>,
        chain: Chain,
    ) -> BoxFuture<http::Response<HttpBody>> {
        let call = ChainCall::new(chain, Body::stream::<Req, _>, |r: Response| {
            Ok(Streaming::<Resp>::new(r.body.into_stream()?))
        });
        Box::pin(async move { codec::<Req, Resp>().streaming(call, req).await })
    }
}

/// The tower service tonic's `Grpc` calls with the decoded request: erases the input,
/// runs the [`Chain`], and types the output again.
struct ChainCall<In, Out> {
    chain: Chain,
    input: fn(In) -> Body,
    output: fn(Response) -> Result<Out, Status>,
}

impl<In, Out> ChainCall<In, Out> {
    fn new(
        chain: Chain,
        input: fn(In) -> Body,
        output: fn(Response) -> Result<Out, Status>,
    ) -> Self {
        Self {
            chain,
            input,
            output,
        }
    }
}

impl<In, Out: 'static> tower_service::Service<tonic::Request<In>> for ChainCall<In, Out> {
    type Response = tonic::Response<Out>;
    type Error = Status;
    type Future = BoxFuture<Result<tonic::Response<Out>, Status>>;

    fn poll_ready(&mut self, _cx: &mut TaskContext<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: tonic::Request<In>) -> Self::Future {
        let fut = self.chain.run(request, self.input);
        let output = self.output;
        Box::pin(async move { output(fut.await?).map(tonic::Response::new) })
    }
}
