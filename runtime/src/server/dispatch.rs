//! [`Dispatch`]: one proto service's methods bound to a handler, served as a tower service.
//!
//! Generated code builds a `Dispatch` per service with one call per method; everything that
//! turns HTTP/2 requests into typed handler calls lives here, not in generated code.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use futures_util::{FutureExt as _, StreamExt as _, TryFutureExt as _};
use opentelemetry::context::FutureExt as _;
use opentelemetry::trace::TraceContextExt as _;
use tonic::body::Body as HttpBody;
use tonic::server::Grpc;
use tonic::{Extensions, Status};
use tower::service_fn;

use crate::call::{
    AnyMessage, AnyMessageStream, BoxFuture, Call, Context, Decode, ErasedCodec, Method,
    MethodKind, Payload, Reply, deadline, decode,
};
use crate::call::{MessageStream, ResponseStream};
use crate::instrumentation::Instrumentation;
use crate::wrapper::{Chain, Terminal, Wrappers};

/// A proto service's methods bound to a handler: a tower service answering gRPC requests.
///
/// Built by generated code (`UserServer::new(handler)`), then either added to a
/// [`crate::Service`] (which sets its wrappers) or mounted on any tonic server.
#[derive(Clone)]
pub struct Dispatch {
    inner: Arc<Inner>,
}

struct Inner {
    service: &'static str,
    methods: HashMap<&'static str, Route>,
    wrappers: Wrappers,
    descriptors: Option<&'static [u8]>,
}

/// One method: how to decode its requests and the chain that answers them.
#[derive(Clone)]
struct Route {
    method: &'static Method,
    decode: Decode,
    handler: Arc<dyn Terminal>,
    chain: Arc<Chain>,
}

impl Dispatch {
    /// Starts binding the methods of `service` (e.g. `user.User`) to `handler`.
    pub fn builder<H: Send + Sync + 'static>(
        service: &'static str,
        handler: H,
    ) -> DispatchBuilder<H> {
        DispatchBuilder {
            service,
            handler: Arc::new(handler),
            methods: HashMap::new(),
            descriptors: None,
        }
    }

    /// The fully qualified proto service name.
    pub fn service_name(&self) -> &'static str {
        self.inner.service
    }

    /// The encoded `FileDescriptorSet` describing the service, when generated code gave
    /// one: what server reflection serves.
    pub fn file_descriptor_set(&self) -> Option<&'static [u8]> {
        self.inner.descriptors
    }

    /// The same dispatch behind a different wrapper chain (first is outermost).
    pub(crate) fn with_wrappers(self, wrappers: Wrappers) -> Self {
        let methods = self
            .inner
            .methods
            .iter()
            .map(|(path, route)| {
                let chain = Chain::new(wrappers.clone(), route.handler.clone());
                (
                    *path,
                    Route {
                        chain,
                        ..route.clone()
                    },
                )
            })
            .collect();
        Self {
            inner: Arc::new(Inner {
                service: self.inner.service,
                methods,
                wrappers,
                descriptors: self.inner.descriptors,
            }),
        }
    }

    /// Answers one HTTP/2 gRPC request, or says UNIMPLEMENTED for a method this service
    /// does not have.
    pub(crate) fn serve(
        &self,
        req: http::Request<HttpBody>,
    ) -> Result<BoxFuture<http::Response<HttpBody>>, Status> {
        match self.inner.methods.get(req.uri().path()) {
            Some(route) => Ok(Box::pin(dispatch(route.clone(), req))),
            None => Err(Status::unimplemented(format!(
                "method {} is not implemented by this server",
                req.uri().path()
            ))),
        }
    }
}

/// Decodes the request as the method's kind says, runs the route's chain, and encodes its
/// reply: the one dispatch for every RPC kind.
async fn dispatch(route: Route, req: http::Request<HttpBody>) -> http::Response<HttpBody> {
    let mut grpc = Grpc::new(ErasedCodec(route.decode));
    let one = |r: tonic::Request<AnyMessage>| route.call(r, Payload::Message);
    let many = |r: tonic::Request<tonic::Streaming<AnyMessage>>| {
        route.call(r, |s| Payload::Stream(Box::pin(s)))
    };
    match route.method.kind() {
        MethodKind::Unary => {
            let answer = |r| reply_message(one(r));
            grpc.unary(service_fn(answer), req).await
        }
        MethodKind::ServerStreaming => {
            let answer = |r| reply_stream(one(r));
            grpc.server_streaming(service_fn(answer), req).await
        }
        MethodKind::ClientStreaming => {
            let answer = |r| reply_message(many(r));
            grpc.client_streaming(service_fn(answer), req).await
        }
        MethodKind::BidiStreaming => {
            let answer = |r| reply_stream(many(r));
            grpc.streaming(service_fn(answer), req).await
        }
    }
}

async fn reply_message(
    reply: BoxFuture<Result<Reply, Status>>,
) -> Result<tonic::Response<AnyMessage>, Status> {
    let reply = reply.await?;
    let message = match reply.payload {
        Payload::Message(m) => m,
        Payload::Stream(_) => return Err(Status::internal("a wrapper replied with a stream")),
    };
    Ok(tonic::Response::from_parts(
        reply.metadata,
        message,
        Extensions::default(),
    ))
}

async fn reply_stream(
    reply: BoxFuture<Result<Reply, Status>>,
) -> Result<tonic::Response<AnyMessageStream>, Status> {
    let reply = reply.await?;
    let stream = reply.payload.into_stream()?;
    Ok(tonic::Response::from_parts(
        reply.metadata,
        stream,
        Extensions::default(),
    ))
}

impl Route {
    /// Builds the [`Context`] from the incoming request (its extensions hold the
    /// connection's addresses, when a tonic server put them there) and runs the chain.
    fn call<T>(
        &self,
        request: tonic::Request<T>,
        payload: impl FnOnce(T) -> Payload,
    ) -> BoxFuture<Result<Reply, Status>> {
        let (metadata, extensions, message) = request.into_parts();
        let deadline = deadline::from_metadata(&metadata);
        let mut ctx = Context::new(self.method, metadata);
        ctx.set_deadline(deadline);
        *ctx.extensions_mut() = extensions;
        self.chain.run(Call::new(ctx, payload(message)))
    }
}

impl std::fmt::Debug for Dispatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatch")
            .field("service", &self.inner.service)
            .field("methods", &self.inner.methods.len())
            .field("wrappers", &self.inner.wrappers)
            .finish()
    }
}

impl tower_service::Service<http::Request<HttpBody>> for Dispatch {
    type Response = http::Response<HttpBody>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut TaskContext<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<HttpBody>) -> Self::Future {
        let answer = self.serve(req);
        Box::pin(async move {
            Ok(match answer {
                Ok(answer) => answer.await,
                Err(status) => status.into_http(),
            })
        })
    }
}

/// Collects one route per method; finish with [`DispatchBuilder::build`].
pub struct DispatchBuilder<H> {
    service: &'static str,
    handler: Arc<H>,
    methods: HashMap<&'static str, Route>,
    descriptors: Option<&'static [u8]>,
}

impl<H: Send + Sync + 'static> DispatchBuilder<H> {
    /// Binds `method` to `f`, converting payloads as its input `I` and output `O` say.
    fn bind<I, O, F, Fut>(mut self, method: &'static Method, f: F) -> Self
    where
        I: Input,
        O: Output + 'static,
        F: Fn(Arc<H>, Context, I::Value) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<O::Value, Status>> + Send + 'static,
    {
        let handler = self.handler.clone();
        let handler: Arc<dyn Terminal> = Arc::new(HandlerFn(move |ctx, payload| {
            // Combinators, not `async` blocks: each block would store the handler's future
            // twice (as a capture and as the awaited value), and it is allocated per call.
            Ok(f(handler.clone(), ctx, I::input(payload)?).map_ok(O::output))
        }));
        let route = Route {
            method,
            decode: I::DECODE,
            chain: Chain::new(Wrappers::default(), handler.clone()),
            handler,
        };
        self.methods.insert(method.path(), route);
        self
    }

    /// Binds a unary method: `f(handler, ctx, request)`.
    pub fn unary<Req, Resp, F, Fut>(self, method: &'static Method, f: F) -> Self
    where
        Req: prost::Message + Default + Clone + 'static,
        Resp: prost::Message + Clone + 'static,
        F: Fn(Arc<H>, Context, Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp, Status>> + Send + 'static,
    {
        self.bind::<One<Req>, One<Resp>, _, _>(method, f)
    }

    /// Binds a server-streaming method: `f(handler, ctx, request)` returns a stream.
    pub fn server_streaming<Req, Resp, F, Fut>(self, method: &'static Method, f: F) -> Self
    where
        Req: prost::Message + Default + Clone + 'static,
        Resp: prost::Message + Clone + 'static,
        F: Fn(Arc<H>, Context, Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<ResponseStream<Resp>, Status>> + Send + 'static,
    {
        self.bind::<One<Req>, Many<Resp>, _, _>(method, f)
    }

    /// Binds a client-streaming method: `f(handler, ctx, requests)`.
    pub fn client_streaming<Req, Resp, F, Fut>(self, method: &'static Method, f: F) -> Self
    where
        Req: prost::Message + Default + Clone + 'static,
        Resp: prost::Message + Clone + 'static,
        F: Fn(Arc<H>, Context, MessageStream<Req>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp, Status>> + Send + 'static,
    {
        self.bind::<Many<Req>, One<Resp>, _, _>(method, f)
    }

    /// Binds a bidirectional-streaming method: `f(handler, ctx, requests)` returns a stream.
    pub fn streaming<Req, Resp, F, Fut>(self, method: &'static Method, f: F) -> Self
    where
        Req: prost::Message + Default + Clone + 'static,
        Resp: prost::Message + Clone + 'static,
        F: Fn(Arc<H>, Context, MessageStream<Req>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<ResponseStream<Resp>, Status>> + Send + 'static,
    {
        self.bind::<Many<Req>, Many<Resp>, _, _>(method, f)
    }

    /// The encoded `FileDescriptorSet` of the service's proto files and their imports, for
    /// server reflection (generated code passes its package's `FILE_DESCRIPTOR_SET`).
    pub fn file_descriptor_set(mut self, encoded: &'static [u8]) -> Self {
        self.descriptors = Some(encoded);
        self
    }

    /// Finishes the dispatch with the default chain: the built-in wrappers (tracing and
    /// metrics through the global providers). [`crate::Service`] replaces it with the
    /// service's own.
    pub fn build(self) -> Dispatch {
        Dispatch {
            inner: Arc::new(Inner {
                service: self.service,
                methods: self.methods,
                wrappers: Wrappers::default(),
                descriptors: self.descriptors,
            }),
        }
        .with_wrappers(Instrumentation::default().chains().incoming(&[]))
    }
}

/// What a handler takes: one request message, or a stream of them.
trait Input {
    /// The handler's argument.
    type Value: Send + 'static;
    /// Decodes one request message.
    const DECODE: Decode;
    /// Types the request payload.
    fn input(payload: Payload) -> Result<Self::Value, Status>;
}

/// What a handler returns: one reply message, or a stream of them.
trait Output {
    /// The handler's answer.
    type Value: Send + 'static;
    /// Erases the answer.
    fn output(value: Self::Value) -> Payload;
}

/// One message of type `T`.
struct One<T>(PhantomData<fn() -> T>);
/// A stream of messages of type `T`.
struct Many<T>(PhantomData<fn() -> T>);

impl<T: prost::Message + Default + Clone + 'static> Input for One<T> {
    type Value = T;
    const DECODE: Decode = decode::<T>;
    fn input(payload: Payload) -> Result<T, Status> {
        payload.into_message()
    }
}

impl<T: prost::Message + Default + Clone + 'static> Input for Many<T> {
    type Value = MessageStream<T>;
    const DECODE: Decode = decode::<T>;
    fn input(payload: Payload) -> Result<MessageStream<T>, Status> {
        Ok(MessageStream::new(payload.into_stream()?))
    }
}

impl<T: prost::Message + Clone + 'static> Output for One<T> {
    type Value = T;
    fn output(value: T) -> Payload {
        Payload::message(value)
    }
}

impl<T: prost::Message + Clone + 'static> Output for Many<T> {
    type Value = ResponseStream<T>;
    fn output(value: ResponseStream<T>) -> Payload {
        Payload::stream(value)
    }
}

/// The terminal step on the server: calls the user's handler with the call's context
/// attached, so spans the handler opens nest under the server span, and cancels it (by
/// dropping it) when the caller's deadline passes. Headers the handler sets on the context
/// go out with its reply (or its error). A handler that panics (or a reply stream that
/// does) answers INTERNAL, see [`contained`].
struct HandlerFn<F>(F);

impl<F, Fut> Terminal for HandlerFn<F>
where
    F: Fn(Context, Payload) -> Result<Fut, Status> + Send + Sync + 'static,
    Fut: Future<Output = Result<Payload, Status>> + Send + 'static,
{
    fn call(&self, call: Call) -> BoxFuture<Result<Reply, Status>> {
        let Call { mut ctx, payload } = call;
        let deadline = ctx.deadline();
        // Nothing to attach without a span or a deadline (tracing off, no timeout).
        let task_cx =
            (deadline.is_some() || ctx.otel().has_active_span()).then(|| ctx.task_context());
        let reply_metadata = ctx.collect_reply_metadata();
        let method = ctx.method().map_or("", |m| m.full_name());
        let otel = ctx.otel().clone();
        let called =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (self.0)(ctx, payload)));
        let fut = match called {
            Ok(Ok(fut)) => fut,
            Ok(Err(status)) => return Box::pin(std::future::ready(Err(status))),
            Err(panic) => {
                let status = contained(method, &otel, panic);
                return Box::pin(std::future::ready(Err(status)));
            }
        };
        let answer = std::panic::AssertUnwindSafe(fut)
            .catch_unwind()
            .map(move |answer| {
                let metadata =
                    std::mem::take(&mut *reply_metadata.lock().unwrap_or_else(|e| e.into_inner()));
                let answer = answer.unwrap_or_else(|panic| Err(contained(method, &otel, panic)));
                match answer {
                    Ok(Payload::Stream(stream)) => {
                        let stream =
                            std::panic::AssertUnwindSafe(stream)
                                .catch_unwind()
                                .map(move |item| {
                                    item.unwrap_or_else(|panic| {
                                        Err(contained(method, &otel, panic))
                                    })
                                });
                        let mut reply = Reply::new(Payload::Stream(Box::pin(stream)));
                        reply.metadata = metadata;
                        Ok(reply)
                    }
                    Ok(payload) => {
                        let mut reply = Reply::new(payload);
                        reply.metadata = metadata;
                        Ok(reply)
                    }
                    Err(mut status) => {
                        status
                            .metadata_mut()
                            .as_mut()
                            .extend(metadata.into_headers());
                        Err(status)
                    }
                }
            });
        match (deadline, task_cx) {
            (Some(deadline), Some(cx)) => {
                Box::pin(deadline::bound(deadline, answer).with_context(cx))
            }
            (None, Some(cx)) => Box::pin(answer.with_context(cx)),
            (_, None) => Box::pin(answer),
        }
    }
}

/// What a handler's panic becomes: INTERNAL for the peer, with no panic text (it may hold
/// anything); the text goes to the server's log and onto the call's span, as an `exception`
/// event, where the operator finds it. The server goes on serving.
fn contained(
    method: &'static str,
    otel: &opentelemetry::Context,
    panic: Box<dyn std::any::Any + Send>,
) -> Status {
    let text = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic with a non-text payload".to_owned());
    tracing::error!(rpc.method = method, panic = %text, "the handler panicked");
    otel.span().add_event(
        "exception",
        vec![
            opentelemetry::KeyValue::new(crate::semconv::EXCEPTION_TYPE, "panic"),
            opentelemetry::KeyValue::new(crate::semconv::EXCEPTION_MESSAGE, text),
        ],
    );
    Status::internal("the handler panicked")
}
