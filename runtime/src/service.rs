//! [`Service`]: a named service with its server, client, registry and wrappers, and its
//! life cycle (register with TTL and heartbeat, serve, deregister, drain, flush).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_sdk::trace::SdkTracerProvider;
use rand::Rng;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::broker::{Broker, BrokerError, MemoryBroker, Publisher, Subscriber, SubscriberStats};
use crate::client::{Client, ClientConfig};
use crate::discovery::{MemoryRegistry, Node, Registry, RegistryError, Selector};
use crate::environment::{ConfigError, FromEnv};
use crate::server::{BoxHttpService, Router, Routes, RunningServer, ServerLayer};
use crate::trace::Tracing;
use crate::wrapper::{Wrapper, Wrappers};

/// Why a service could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The listen address could not be bound.
    #[error("binding {address}: {source}")]
    Bind {
        /// The address asked for.
        address: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// Registering or deregistering failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// Waiting for a shutdown signal failed.
    #[error("listening for shutdown signals: {0}")]
    Signal(std::io::Error),
    /// A handler or subscriber added after the service started (it would never run), or a
    /// second start.
    #[error("{what}: the service has already started")]
    AlreadyStarted {
        /// What came too late: a handler of a proto service, a subscriber of a topic, a
        /// start.
        what: String,
    },
    /// Subscribing to a topic failed.
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// A `MICRO_*` variable names nothing this build knows.
    #[error("configuration: {0}")]
    Config(#[from] ConfigError),
    /// A second handler for the same proto service.
    #[error("{service} already has a handler on this service")]
    DuplicateHandler {
        /// The proto service served twice.
        service: &'static str,
    },
}

/// A microservice: serves registered handlers and makes calls, with tracing built in.
#[derive(Clone)]
pub struct Service {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    version: String,
    address: String,
    metadata: BTreeMap<String, String>,
    registry: Arc<dyn Registry>,
    /// A bad `MICRO_*` setting, reported by `start`.
    config_error: Option<ConfigError>,
    handler_wrappers: Wrappers,
    layer: Option<ServerLayer>,
    client: Client,
    broker: Arc<dyn Broker>,
    publish_wrappers: Wrappers,
    subscriber_wrappers: Wrappers,
    /// The subscribers to start; `None` once started.
    subscribers: Mutex<Option<Vec<Subscriber>>>,
    /// The routes to serve; `None` once started.
    router: Mutex<Option<Router>>,
    register_ttl: Duration,
    register_interval: Duration,
    grace_period: Duration,
    tracer_provider: Option<SdkTracerProvider>,
}

impl Service {
    /// Configures a service registered as `name` (e.g. `user.service`).
    pub fn builder(name: impl Into<String>) -> ServiceConfig {
        ServiceConfig {
            name: name.into(),
            version: "latest".into(),
            address: "127.0.0.1:0".into(),
            metadata: BTreeMap::new(),
            registry: None,
            selector_in_code: false,
            env: FromEnv::read(),
            client: Client::builder(),
            handler_wrappers: Vec::new(),
            publish_wrappers: Vec::new(),
            subscriber_wrappers: Vec::new(),
            broker: None,
            layer: None,
            tracing: true,
            tracer_provider: None,
            register_ttl: Duration::from_secs(90),
            register_interval: Duration::from_secs(30),
            ttl_in_code: false,
            interval_in_code: false,
            grace_period: Duration::from_secs(30),
        }
    }

    /// The registry name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The version registered with each node.
    pub fn version(&self) -> &str {
        &self.inner.version
    }

    /// A client sharing this service's registry, selector and call wrappers.
    pub fn client(&self) -> Client {
        self.inner.client.clone()
    }

    /// Serves `routes` (what generated `register_*_handler` functions call), behind this
    /// service's handler wrappers. Fails once the service has started, and for a second
    /// handler of the same proto service.
    pub fn handle(&self, routes: impl Into<Routes>) -> Result<(), Error> {
        let routes = routes.into();
        let service = routes.service_name();
        let mut router = self.inner.router.lock().unwrap_or_else(|e| e.into_inner());
        let Some(router) = router.as_mut() else {
            return Err(Error::AlreadyStarted {
                what: format!("a handler of {service}"),
            });
        };
        router
            .add(routes.with_wrappers(self.inner.handler_wrappers.clone()))
            .map_err(|_| Error::DuplicateHandler { service })
    }

    /// A publisher of `M` to `topic` on this service's broker, behind its publish wrappers
    /// (tracing first).
    pub fn publisher<M: prost::Message + Clone + 'static>(&self, topic: &str) -> Publisher<M> {
        Publisher::new(
            self.inner.broker.clone(),
            topic,
            self.inner.publish_wrappers.clone(),
        )
    }

    /// Runs `subscriber` once the service starts, behind the subscriber wrappers (tracing
    /// first), in a queue group named after the service unless the subscriber names one.
    /// Fails once the service has started.
    pub fn subscribe(&self, subscriber: Subscriber) -> Result<SubscriberStats, Error> {
        let mut subscribers = self
            .inner
            .subscribers
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let Some(subscribers) = subscribers.as_mut() else {
            return Err(Error::AlreadyStarted {
                what: format!("a subscriber of {}", subscriber.topic()),
            });
        };
        let stats = subscriber.stats();
        subscribers.push(subscriber.default_group(&self.inner.name));
        Ok(stats)
    }

    /// The broker messages are published to and received from.
    pub fn broker(&self) -> &Arc<dyn Broker> {
        &self.inner.broker
    }

    /// Binds, registers the node and serves until [`RunningService::stop`]. A service
    /// starts once; handlers must be added before.
    pub async fn start(&self) -> Result<RunningService, Error> {
        if let Some(e) = &self.inner.config_error {
            return Err(e.clone().into());
        }
        let inner = self.inner.clone();
        let router = inner
            .router
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .ok_or_else(|| Error::AlreadyStarted {
                what: format!("starting {} again", inner.name),
            })?;
        let server = RunningServer::start(
            &inner.address,
            router,
            inner.layer.clone(),
            inner.grace_period,
        )
        .await
        .map_err(|source| Error::Bind {
            address: inner.address.clone(),
            source,
        })?;
        let node = Node {
            id: format!("{}-{:016x}", inner.name, rand::rng().random::<u64>()),
            address: advertised(server.local_addr()),
            metadata: inner
                .metadata
                .clone()
                .into_iter()
                .chain([
                    ("version".to_owned(), inner.version.clone()),
                    ("transport".to_owned(), "grpc".to_owned()),
                ])
                .collect(),
        };
        if let Err(e) = inner
            .registry
            .register(&inner.name, &node, inner.register_ttl)
            .await
        {
            server.stop().await;
            return Err(e.into());
        }
        let (stop_subscribers, stopped) = watch::channel(false);
        let subscribers = inner
            .subscribers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .unwrap_or_default();
        let mut subscriptions = Vec::new();
        for subscriber in subscribers {
            let started = subscriber
                .start(
                    inner.broker.clone(),
                    inner.subscriber_wrappers.clone(),
                    stopped.clone(),
                )
                .await;
            match started {
                Ok(task) => subscriptions.push(task),
                Err(e) => {
                    let _ = stop_subscribers.send(true);
                    for task in subscriptions {
                        let _ = task.await;
                    }
                    let _ = inner.registry.deregister(&inner.name, &node.id).await;
                    server.stop().await;
                    return Err(e.into());
                }
            }
        }
        let heartbeat = tokio::spawn(heartbeat(inner.clone(), node.clone()));
        tracing::info!(service = %inner.name, address = %node.address, "service started");
        Ok(RunningService {
            inner,
            node,
            server,
            heartbeat,
            stop_subscribers,
            subscriptions,
        })
    }

    /// Starts, serves until Ctrl-C or SIGTERM, then stops gracefully.
    pub async fn run(&self) -> Result<(), Error> {
        self.start().await?.until_signal().await
    }
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("name", &self.inner.name)
            .field("version", &self.inner.version)
            .field("address", &self.inner.address)
            .finish()
    }
}

/// The address other processes reach a node at: an unspecified bind address
/// (`0.0.0.0`, `::`) is advertised as loopback.
fn advertised(local: SocketAddr) -> String {
    if local.ip().is_unspecified() {
        let loopback: std::net::IpAddr = if local.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        };
        SocketAddr::new(loopback, local.port()).to_string()
    } else {
        local.to_string()
    }
}

async fn heartbeat(inner: Arc<Inner>, node: Node) {
    let mut interval = tokio::time::interval(inner.register_interval);
    interval.tick().await;
    loop {
        interval.tick().await;
        if let Err(e) = inner
            .registry
            .register(&inner.name, &node, inner.register_ttl)
            .await
        {
            tracing::warn!(service = %inner.name, error = %e, "re-registering failed; will retry");
        }
    }
}

async fn shutdown_signal() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r,
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await
    }
}

/// A started service.
pub struct RunningService {
    inner: Arc<Inner>,
    node: Node,
    server: RunningServer,
    heartbeat: JoinHandle<()>,
    stop_subscribers: watch::Sender<bool>,
    subscriptions: Vec<JoinHandle<()>>,
}

impl RunningService {
    /// The address the server is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// The node registered for this instance.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// Serves until Ctrl-C or SIGTERM, then stops gracefully (see [`RunningService::stop`]).
    pub async fn until_signal(self) -> Result<(), Error> {
        shutdown_signal().await.map_err(Error::Signal)?;
        self.stop().await
    }

    /// Deregisters, stops taking messages and calls, waits for the messages and calls in
    /// flight (up to the grace period each) and flushes spans. Messages taken but not
    /// settled stay with the broker (a redelivering broker sends them again).
    pub async fn stop(self) -> Result<(), Error> {
        self.heartbeat.abort();
        let deregistered = self
            .inner
            .registry
            .deregister(&self.inner.name, &self.node.id)
            .await;
        let _ = self.stop_subscribers.send(true);
        let drained = futures_util::future::join_all(self.subscriptions);
        if tokio::time::timeout(self.inner.grace_period, drained)
            .await
            .is_err()
        {
            tracing::warn!(service = %self.inner.name, "message handlers did not finish within the grace period");
        }
        self.server.stop().await;
        if let Some(provider) = self.inner.tracer_provider.clone() {
            let flushed = tokio::task::spawn_blocking(move || provider.force_flush()).await;
            if let Ok(Err(e)) = flushed {
                tracing::warn!(error = %e, "flushing spans at shutdown failed");
            }
        }
        tracing::info!(service = %self.inner.name, "service stopped");
        deregistered.map_err(Error::from)
    }
}

impl std::fmt::Debug for RunningService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningService")
            .field("local_addr", &self.local_addr())
            .field("node", &self.node.id)
            .finish()
    }
}

/// Configures a [`Service`].
pub struct ServiceConfig {
    name: String,
    version: String,
    address: String,
    metadata: BTreeMap<String, String>,
    registry: Option<Arc<dyn Registry>>,
    selector_in_code: bool,
    env: FromEnv,
    client: ClientConfig,
    handler_wrappers: Vec<Arc<dyn Wrapper>>,
    publish_wrappers: Vec<Arc<dyn Wrapper>>,
    subscriber_wrappers: Vec<Arc<dyn Wrapper>>,
    broker: Option<Arc<dyn Broker>>,
    layer: Option<ServerLayer>,
    tracing: bool,
    tracer_provider: Option<SdkTracerProvider>,
    register_ttl: Duration,
    register_interval: Duration,
    ttl_in_code: bool,
    interval_in_code: bool,
    grace_period: Duration,
}

impl ServiceConfig {
    /// Version registered with each node (default `latest`).
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.version = version.into();
        self
    }

    /// Listen address (default `127.0.0.1:0`: loopback, any free port).
    pub fn address(mut self, address: impl Into<String>) -> Self {
        self.address = address.into();
        self
    }

    /// Adds a label to the node registered for each instance (zone, weight…), for
    /// selectors and filters to read; `version` and `transport` are set already.
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// Registry to register in and look services up (default: `MICRO_REGISTRY`, else the
    /// process-wide in-memory registry).
    pub fn registry(mut self, registry: impl Registry) -> Self {
        self.registry = Some(Arc::new(registry));
        self
    }

    /// How the client picks nodes (default: `MICRO_SELECTOR`, else random).
    pub fn selector(mut self, selector: impl Selector) -> Self {
        self.client = self.client.selector(Arc::new(selector));
        self.selector_in_code = true;
        self
    }

    /// Adds a handler wrapper; wrappers run in the order added, inside tracing.
    pub fn wrap_handler(mut self, wrapper: Arc<dyn Wrapper>) -> Self {
        self.handler_wrappers.push(wrapper);
        self
    }

    /// The broker to publish to and subscribe on (default: `MICRO_BROKER`, else the
    /// process-wide in-memory one).
    pub fn broker(mut self, broker: impl Broker) -> Self {
        self.broker = Some(Arc::new(broker));
        self
    }

    /// Adds a publish wrapper; in the order added, inside tracing.
    pub fn wrap_publish(mut self, wrapper: Arc<dyn Wrapper>) -> Self {
        self.publish_wrappers.push(wrapper);
        self
    }

    /// Adds a subscriber wrapper, around every message a subscriber handles; in the order
    /// added, inside tracing.
    pub fn wrap_subscriber(mut self, wrapper: Arc<dyn Wrapper>) -> Self {
        self.subscriber_wrappers.push(wrapper);
        self
    }

    /// Adds a call wrapper for the service's client; in the order added, inside tracing
    /// and outside node selection.
    pub fn wrap_call(mut self, wrapper: Arc<dyn Wrapper>) -> Self {
        self.client = self.client.wrap_call(wrapper);
        self
    }

    /// Puts a tower layer in front of the server, per HTTP/2 request (e.g.
    /// `tower::limit::ConcurrencyLimitLayer`, or a tower-http layer). Layers added later are
    /// outermost. A layer's state is shared by all connections, as with tonic's
    /// `Server::layer`. A layer's error is answered as a gRPC status.
    pub fn layer<L>(mut self, layer: L) -> Self
    where
        L: tower::Layer<BoxHttpService> + Send + Sync + 'static,
        L::Service: tower::Service<
                http::Request<tonic::body::Body>,
                Response = http::Response<tonic::body::Body>,
            > + Clone
            + Send
            + Sync
            + 'static,
        <L::Service as tower::Service<http::Request<tonic::body::Body>>>::Error:
            Into<tower::BoxError>,
        <L::Service as tower::Service<http::Request<tonic::body::Body>>>::Future: Send + 'static,
    {
        self.layer = Some(crate::server::stack(self.layer.take(), layer));
        self
    }

    /// Puts a tower layer around each of the client's channels (one per node); see
    /// [`ClientConfig::channel_layer`].
    pub fn channel_layer(mut self, layer: impl crate::client::ChannelLayerFor) -> Self {
        self.client = self.client.channel_layer(layer);
        self
    }

    /// Turns the built-in tracing wrappers on (default) or off.
    pub fn tracing(mut self, enabled: bool) -> Self {
        self.tracing = enabled;
        self
    }

    /// Traces through `provider` (flushed at shutdown) instead of the global provider.
    pub fn tracer_provider(mut self, provider: SdkTracerProvider) -> Self {
        self.tracer_provider = Some(provider);
        self
    }

    /// How long a registration lives without a heartbeat (default: `MICRO_REGISTER_TTL`
    /// seconds, else 90 s).
    pub fn register_ttl(mut self, ttl: Duration) -> Self {
        self.register_ttl = ttl;
        self.ttl_in_code = true;
        self
    }

    /// How often the node re-registers (default: `MICRO_REGISTER_INTERVAL` seconds, else
    /// 30 s).
    pub fn register_interval(mut self, interval: Duration) -> Self {
        self.register_interval = interval;
        self.interval_in_code = true;
        self
    }

    /// How long shutdown waits for in-flight calls (default 30 s).
    pub fn grace_period(mut self, grace: Duration) -> Self {
        self.grace_period = grace;
        self
    }

    /// How the service's client retries calls through the registry; see
    /// [`ClientConfig::retry`].
    pub fn retry(mut self, policy: crate::client::RetryPolicy) -> Self {
        self.client = self.client.retry(policy);
        self
    }

    /// How long the service's client leaves out a node it could not reach; see
    /// [`ClientConfig::ejection`].
    pub fn ejection(mut self, cooling: Duration) -> Self {
        self.client = self.client.ejection(cooling);
        self
    }

    /// Default timeout of calls made by the service's client.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.client = self.client.timeout(timeout);
        self
    }

    /// Builds the service.
    pub fn build(self) -> Service {
        let tracing = self.tracing.then(|| match &self.tracer_provider {
            Some(provider) => Tracing::new(provider),
            None => Tracing::global(),
        });
        let inbound = |wrappers: Vec<Arc<dyn Wrapper>>| {
            Wrappers::new(
                tracing
                    .as_ref()
                    .map(Tracing::server)
                    .into_iter()
                    .chain(wrappers)
                    .collect(),
            )
        };
        let outbound = |wrappers: Vec<Arc<dyn Wrapper>>| {
            Wrappers::new(
                tracing
                    .as_ref()
                    .map(Tracing::client)
                    .into_iter()
                    .chain(wrappers)
                    .collect(),
            )
        };
        let handler_wrappers = inbound(self.handler_wrappers);
        let subscriber_wrappers = inbound(self.subscriber_wrappers);
        let publish_wrappers = outbound(self.publish_wrappers);
        // Code wins over the environment; a bad variable the code overrides is no error.
        let mut config_error = None;
        let registry = match (self.registry, self.env.registry) {
            (Some(registry), _) => registry,
            (None, Some(Ok(registry))) => registry,
            (None, from_env) => {
                config_error = from_env.and_then(Result::err);
                Arc::new(MemoryRegistry::global())
            }
        };
        let mut register_ttl = self.register_ttl;
        let mut register_interval = self.register_interval;
        for (in_code, from_env, value) in [
            (self.ttl_in_code, self.env.register_ttl, &mut register_ttl),
            (
                self.interval_in_code,
                self.env.register_interval,
                &mut register_interval,
            ),
        ] {
            match from_env {
                Some(Ok(seconds)) if !in_code => *value = seconds,
                Some(Err(e)) if !in_code => config_error = config_error.or(Some(e)),
                _ => {}
            }
        }
        let broker = match (self.broker, self.env.broker) {
            (Some(broker), _) => broker,
            (None, Some(Ok(broker))) => broker,
            (None, from_env) => {
                config_error = config_error.or(from_env.and_then(Result::err));
                Arc::new(MemoryBroker::global())
            }
        };
        let mut client = self.client;
        match self.env.selector {
            Some(Ok(selector)) if !self.selector_in_code => client = client.selector(selector),
            Some(Err(e)) if !self.selector_in_code => config_error = config_error.or(Some(e)),
            _ => {}
        }
        let client = client.registry(registry.clone()).tracing(tracing).build();
        Service {
            inner: Arc::new(Inner {
                name: self.name,
                version: self.version,
                address: self.address,
                metadata: self.metadata,
                registry,
                config_error,
                handler_wrappers,
                layer: self.layer,
                client,
                broker,
                publish_wrappers,
                subscriber_wrappers,
                subscribers: Mutex::new(Some(Vec::new())),
                router: Mutex::new(Some(Router::default())),
                register_ttl,
                register_interval,
                grace_period: self.grace_period,
                tracer_provider: self.tracer_provider,
            }),
        }
    }
}
