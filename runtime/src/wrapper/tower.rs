//! Tower interop: a wrapper from a tower [`Layer`], a layer from a wrapper, and the HTTP/2
//! layers that go in front of a server or around a client's channels.

use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use tonic::Status;
use tonic::body::Body;
use tower::util::BoxCloneSyncService;
use tower::{BoxError, Layer, Service, ServiceExt};

use super::{BoxFuture, Call, Chain, Next, Reply, Terminal, Wrapper, Wrappers};

/// A wrapper running the services `layer` builds, e.g.
/// `from_layer(tower::limit::ConcurrencyLimitLayer::new(64))`.
///
/// The layer is applied once, around a service that runs the rest of the chain, so layers
/// with shared state (a concurrency limit, a rate limit) share it across calls. The layered
/// service is cloned per call, as tower services are.
pub fn from_layer<L>(layer: L) -> Arc<dyn Wrapper>
where
    L: Layer<RunNext>,
    L::Service: Service<Call, Response = Reply> + Clone + Send + Sync + 'static,
    <L::Service as Service<Call>>::Error: Into<tower::BoxError>,
    <L::Service as Service<Call>>::Future: Send + 'static,
{
    Arc::new(LayerWrapper(layer.layer(RunNext)))
}

struct LayerWrapper<S>(S);

impl<S> Wrapper for LayerWrapper<S>
where
    S: Service<Call, Response = Reply> + Clone + Send + Sync + 'static,
    S::Error: Into<tower::BoxError>,
    S::Future: Send + 'static,
{
    fn call(&self, mut call: Call, next: Next) -> BoxFuture<Result<Reply, Status>> {
        call.ctx.extensions_mut().insert(next);
        let service = self.0.clone();
        Box::pin(async move { service.oneshot(call).await.map_err(status_of) })
    }
}

/// The service at the bottom of a [`from_layer`] wrapper: runs the rest of the chain.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunNext;

impl Service<Call> for RunNext {
    type Response = Reply;
    type Error = Status;
    type Future = BoxFuture<Result<Reply, Status>>;

    fn poll_ready(&mut self, _cx: &mut TaskContext<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut call: Call) -> Self::Future {
        match call.ctx.extensions_mut().remove::<Next>() {
            Some(next) => next.run(call),
            None => Box::pin(std::future::ready(Err(Status::internal(
                "RunNext called outside a from_layer wrapper",
            )))),
        }
    }
}

/// A status for an error a tower layer returned: the status itself if it is one, otherwise
/// UNAVAILABLE (load shed, limit closed), or DEADLINE_EXCEEDED for tower's timeout.
pub(crate) fn status_of(error: impl Into<tower::BoxError>) -> Status {
    let error = error.into();
    match error.downcast::<Status>() {
        Ok(status) => *status,
        Err(error) if error.is::<tower::timeout::error::Elapsed>() => {
            Status::deadline_exceeded(error.to_string())
        }
        Err(error) => Status::unavailable(format!("refused by a tower layer: {error}")),
    }
}

/// A tower layer running a wrapper in front of the service it wraps.
#[derive(Clone)]
pub struct WrapperLayer(Arc<dyn Wrapper>);

impl WrapperLayer {
    /// A layer of `wrapper`.
    pub fn new(wrapper: Arc<dyn Wrapper>) -> Self {
        Self(wrapper)
    }
}

impl std::fmt::Debug for WrapperLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WrapperLayer")
    }
}

impl<S> Layer<S> for WrapperLayer
where
    S: Service<Call, Response = Reply, Error = Status> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
{
    /// The rest of a chain that is the wrapper, then `inner`.
    type Service = Next;

    fn layer(&self, inner: S) -> Next {
        Next::first(Chain::new(
            Wrappers::new(vec![self.0.clone()]),
            ServiceTerminal(inner),
        ))
    }
}

/// A tower service as the terminal step of a chain.
struct ServiceTerminal<S>(S);

impl<S> Terminal for ServiceTerminal<S>
where
    S: Service<Call, Response = Reply, Error = Status> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
{
    fn call(&self, call: Call) -> BoxFuture<Result<Reply, Status>> {
        Box::pin(self.0.clone().oneshot(call))
    }
}

/// One HTTP/2 request in, one response out: a server as its tower layers see it, and a
/// client's channel to one node.
pub type BoxHttpService = BoxCloneSyncService<http::Request<Body>, http::Response<Body>, BoxError>;

/// A tower layer that can go in front of a server or around a client's channels: any layer
/// whose service takes and returns HTTP/2 requests and responses with tonic bodies (a
/// `tower::limit` layer, a tower-http layer…). Its errors are answered as gRPC statuses.
pub trait HttpLayer: Send + Sync + 'static {
    /// Wraps `service`.
    fn wrap(&self, service: BoxHttpService) -> BoxHttpService;
}

impl<L> HttpLayer for L
where
    L: Layer<BoxHttpService> + Send + Sync + 'static,
    L::Service: Service<http::Request<Body>, Response = http::Response<Body>>
        + Clone
        + Send
        + Sync
        + 'static,
    <L::Service as Service<http::Request<Body>>>::Error: Into<BoxError>,
    <L::Service as Service<http::Request<Body>>>::Future: Send + 'static,
{
    fn wrap(&self, service: BoxHttpService) -> BoxHttpService {
        BoxCloneSyncService::new(self.layer(service).map_err(Into::into))
    }
}

/// HTTP layers composed into one, the last added outermost.
#[derive(Clone, Default)]
pub(crate) struct HttpStack(Vec<Arc<dyn HttpLayer>>);

impl HttpStack {
    /// Adds `layer` around the layers added before.
    pub(crate) fn push(&mut self, layer: impl HttpLayer) {
        self.0.push(Arc::new(layer));
    }

    /// Whether no layer was added.
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `service` behind every layer.
    pub(crate) fn wrap(&self, service: BoxHttpService) -> BoxHttpService {
        self.0
            .iter()
            .fold(service, |service, layer| layer.wrap(service))
    }
}

impl std::fmt::Debug for HttpStack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HttpStack({} layers)", self.0.len())
    }
}
