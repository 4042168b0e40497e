//! The gRPC server: tonic's HTTP/2 server routing requests to [`Dispatch`] by service name,
//! through the service's tower layers if it has any, with graceful shutdown.

mod dispatch;
#[cfg(feature = "health")]
mod health;
#[cfg(feature = "reflection")]
pub(crate) mod reflection;

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt as _;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::Status;
use tonic::body::Body as HttpBody;
use tonic::transport::server::TcpIncoming;
use tower::util::BoxCloneSyncService;
use tower::{BoxError, ServiceExt, service_fn};

pub use dispatch::{Dispatch, DispatchBuilder};
#[cfg(feature = "health")]
pub use health::HealthState;
pub use tonic::server::NamedService;

use crate::call::BoxFuture;
use crate::metrics::Metrics;
use crate::wrapper::HttpStack;

/// A standard service (health, reflection) as the server routes to it.
pub(crate) type BoxedHttpService =
    BoxCloneSyncService<http::Request<HttpBody>, http::Response<HttpBody>, Infallible>;

/// All services of one server, by fully qualified proto service name.
#[derive(Default, Clone)]
pub(crate) struct Mux {
    services: HashMap<&'static str, Dispatch>,
    /// Standard gRPC services served beside the user's, outside the wrappers.
    standard: HashMap<&'static str, BoxedHttpService>,
    /// Where requests for unknown methods are counted, when metrics are on.
    metrics: Option<Metrics>,
}

impl std::fmt::Debug for Mux {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mux")
            .field("services", &self.services.keys())
            .field("standard", &self.standard.keys())
            .finish()
    }
}

impl Mux {
    /// A server with no services yet, counting requests for unknown methods in `metrics`.
    pub(crate) fn new(metrics: Option<Metrics>) -> Self {
        Self {
            services: HashMap::new(),
            standard: HashMap::new(),
            metrics,
        }
    }

    /// The proto service names served, sorted.
    #[cfg_attr(not(feature = "health"), allow(dead_code))]
    pub(crate) fn service_names(&self) -> Vec<&'static str> {
        let mut names: Vec<_> = self.services.keys().copied().collect();
        names.sort_unstable();
        names
    }

    /// The descriptor sets the served services carry.
    #[cfg_attr(not(feature = "reflection"), allow(dead_code))]
    pub(crate) fn file_descriptor_sets(&self) -> Vec<&'static [u8]> {
        let mut sets: Vec<_> = self
            .services
            .values()
            .filter_map(Dispatch::file_descriptor_set)
            .collect();
        sets.sort_unstable();
        sets.dedup();
        sets
    }

    /// Serves a standard service (health, reflection) under `name`.
    #[cfg_attr(not(any(feature = "health", feature = "reflection")), allow(dead_code))]
    pub(crate) fn add_standard(&mut self, service: BoxedHttpService, name: &'static str) {
        self.standard.insert(name, service);
    }

    /// Adds a service; a second set of routes for the same service is refused.
    pub(crate) fn add(&mut self, routes: Dispatch) -> Result<(), Dispatch> {
        match self.services.entry(routes.service_name()) {
            std::collections::hash_map::Entry::Occupied(_) => Err(routes),
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(routes);
                Ok(())
            }
        }
    }

    fn serve(&self, req: http::Request<HttpBody>) -> BoxFuture<http::Response<HttpBody>> {
        let service = req.uri().path().split('/').nth(1).unwrap_or_default();
        let status = match self.services.get(service) {
            Some(routes) => match routes.serve(req) {
                Ok(answer) => return answer,
                Err(status) => status,
            },
            None => match self.standard.get(service) {
                Some(standard) => {
                    let answer = standard.clone().oneshot(req);
                    return Box::pin(async move {
                        match answer.await {
                            Ok(response) => response,
                            Err(never) => match never {},
                        }
                    });
                }
                None => Status::unimplemented(format!("unknown service {service:?}")),
            },
        };
        if let Some(metrics) = &self.metrics {
            metrics.unknown_method(&status);
        }
        Box::pin(async move { status.into_http() })
    }
}

/// A server accepting connections until stopped.
pub(crate) struct RunningServer {
    local_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
    grace: Duration,
}

impl RunningServer {
    /// Binds `address` and serves `router` on it.
    ///
    /// Connections are served by tonic's server, as a tonic service would be: with its
    /// HTTP/2 settings, its connection handling, and its per-request extensions (the peer's
    /// address among them). A layer's state (a concurrency limit's permits, say) is shared
    /// by all connections, as with tonic's `Server::layer`.
    pub(crate) async fn start(
        address: &str,
        router: Mux,
        layers: HttpStack,
        grace: Duration,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(address).await?;
        let local_addr = listener.local_addr()?;
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        let (shutdown, mut signal) = watch::channel(false);
        let stopped = async move {
            let _ = signal.changed().await;
        };
        let router = Arc::new(router);
        let serve = service_fn(move |req| router.serve(req).map(Ok::<_, Infallible>));
        // hyper's own default, which tonic's server leaves unlimited.
        let server = tonic::transport::Server::builder().max_concurrent_streams(200);
        let task = if layers.is_empty() {
            tokio::spawn(report(
                server.serve_with_incoming_shutdown(serve, incoming, stopped),
            ))
        } else {
            let layered = layers.wrap(BoxCloneSyncService::new(serve.map_err(BoxError::from)));
            // A layer's error, in readiness or in the call, is answered as a status.
            let answered = service_fn(move |req| {
                layered.clone().oneshot(req).map(|answer| {
                    Ok::<_, Infallible>(
                        answer.unwrap_or_else(|e| crate::wrapper::status_of(e).into_http()),
                    )
                })
            });
            tokio::spawn(report(
                server.serve_with_incoming_shutdown(answered, incoming, stopped),
            ))
        };
        Ok(Self {
            local_addr,
            shutdown,
            task,
            grace,
        })
    }

    /// The address actually bound (useful with port 0).
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, lets in-flight calls finish (up to the grace period), then returns.
    pub(crate) async fn stop(self) {
        let _ = self.shutdown.send(true);
        let mut task = self.task;
        if tokio::time::timeout(self.grace, &mut task).await.is_err() {
            tracing::warn!(grace = ?self.grace, "in-flight calls did not finish within the grace period");
            task.abort();
        }
    }
}

/// Logs how serving ended, if it failed.
async fn report(serving: impl Future<Output = Result<(), tonic::transport::Error>>) {
    if let Err(e) = serving.await {
        tracing::warn!(error = %e, "server failed");
    }
}
