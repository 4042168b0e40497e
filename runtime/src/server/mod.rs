//! The gRPC server: an HTTP/2 listener (hyper) routing requests to [`Routes`] by service
//! name, through the service's tower layers if it has any, with graceful shutdown.

mod routes;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::Status;
use tonic::body::Body as HttpBody;
use tower::util::BoxCloneSyncService;
use tower::{BoxError, Layer, Service, ServiceExt};

pub use routes::{Routes, RoutesBuilder};
pub use tonic::server::NamedService;

pub(crate) use routes::ConnInfo;

use crate::call::{BoxFuture, NetAddress};

/// The server as its tower layers see it: one HTTP/2 request in, one response out.
pub type BoxHttpService =
    BoxCloneSyncService<http::Request<HttpBody>, http::Response<HttpBody>, BoxError>;

/// The server's tower layers, composed into one function applied per connection.
pub(crate) type ServerLayer = Arc<dyn Fn(BoxHttpService) -> BoxHttpService + Send + Sync>;

/// `layer` around whatever `inner` already does; its errors become gRPC statuses.
pub(crate) fn stack<L>(inner: Option<ServerLayer>, layer: L) -> ServerLayer
where
    L: Layer<BoxHttpService> + Send + Sync + 'static,
    L::Service: Service<http::Request<HttpBody>, Response = http::Response<HttpBody>>
        + Clone
        + Send
        + Sync
        + 'static,
    <L::Service as Service<http::Request<HttpBody>>>::Error: Into<BoxError>,
    <L::Service as Service<http::Request<HttpBody>>>::Future: Send + 'static,
{
    Arc::new(move |service| {
        let service = match &inner {
            Some(inner) => inner(service),
            None => service,
        };
        BoxCloneSyncService::new(layer.layer(service).map_err(Into::into))
    })
}

/// All services of one server, by fully qualified proto service name.
#[derive(Debug, Default, Clone)]
pub(crate) struct Router {
    services: HashMap<&'static str, Routes>,
}

impl Router {
    /// Adds a service; a second set of routes for the same service is refused.
    pub(crate) fn add(&mut self, routes: Routes) -> Result<(), Routes> {
        match self.services.entry(routes.service_name()) {
            std::collections::hash_map::Entry::Occupied(_) => Err(routes),
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(routes);
                Ok(())
            }
        }
    }

    fn serve(
        &self,
        req: http::Request<HttpBody>,
        conn: &Arc<ConnInfo>,
    ) -> BoxFuture<http::Response<HttpBody>> {
        let service = req.uri().path().split('/').nth(1).unwrap_or_default();
        match self.services.get(service) {
            Some(routes) => routes.serve_on(req, Some(conn.clone())),
            None => {
                let status = Status::unimplemented(format!("unknown service {service:?}"));
                Box::pin(async move { status.into_http() })
            }
        }
    }
}

/// A server accepting connections until stopped.
pub(crate) struct RunningServer {
    local_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl RunningServer {
    /// Binds `address` and serves `router` on it.
    pub(crate) async fn start(
        address: &str,
        router: Router,
        layer: Option<ServerLayer>,
        grace: Duration,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(address).await?;
        let local_addr = listener.local_addr()?;
        let (shutdown, signal) = watch::channel(false);
        let task = tokio::spawn(accept(listener, Arc::new(router), layer, signal, grace));
        Ok(Self {
            local_addr,
            shutdown,
            task,
        })
    }

    /// The address actually bound (useful with port 0).
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, lets in-flight calls finish (up to the grace period), then returns.
    pub(crate) async fn stop(self) {
        let _ = self.shutdown.send(true);
        if let Err(e) = self.task.await {
            tracing::warn!(error = %e, "server task failed");
        }
    }
}

async fn accept(
    listener: TcpListener,
    router: Arc<Router>,
    layer: Option<ServerLayer>,
    mut stop: watch::Receiver<bool>,
    grace: Duration,
) {
    let graceful = GracefulShutdown::new();
    let http2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    let local = listener.local_addr().map(NetAddress::from_socket).ok();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let info = Arc::new(ConnInfo {
                        peer,
                        local: local.clone(),
                        client: NetAddress::from_socket(peer),
                    });
                    let router = router.clone();
                    let io = TokioIo::new(stream);
                    let connection: BoxFuture<Result<(), hyper::Error>> = match &layer {
                        None => {
                            // Routing happens in the request's own task, as with tonic's
                            // server: the connection task only reads and writes frames.
                            let service = hyper::service::service_fn(move |req: http::Request<Incoming>| {
                                let (router, info) = (router.clone(), info.clone());
                                async move {
                                    let response = router.serve(req.map(HttpBody::new), &info);
                                    Ok::<_, Infallible>(response.await)
                                }
                            });
                            Box::pin(graceful.watch(http2.serve_connection(io, service)))
                        }
                        Some(layer) => {
                            let inner = tower::service_fn(move |req: http::Request<HttpBody>| {
                                let response = router.serve(req, &info);
                                async move { Ok::<_, BoxError>(response.await) }
                            });
                            let layered = layer(BoxCloneSyncService::new(inner));
                            let service = hyper::service::service_fn(move |req: http::Request<Incoming>| {
                                let answer = layered.clone().oneshot(req.map(HttpBody::new));
                                async move {
                                    Ok::<_, Infallible>(answer.await.unwrap_or_else(|e| {
                                        crate::wrapper::status_of(e).into_http()
                                    }))
                                }
                            });
                            Box::pin(graceful.watch(http2.serve_connection(io, service)))
                        }
                    };
                    tokio::spawn(async move {
                        if let Err(e) = connection.await {
                            tracing::debug!(error = %e, %peer, "connection ended with an error");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
            _ = stop.changed() => break,
        }
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(grace) => {
            tracing::warn!(?grace, "in-flight calls did not finish within the grace period");
        }
    }
}
