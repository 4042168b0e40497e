//! [`ServiceConfig`]: what the code sets, resolved once against go-micro's `MICRO_*`
//! variables and the defaults when the service is built.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{Inner, Service};
use crate::broker::{Broker, MemoryBroker};
use crate::client::ClientConfig;
use crate::discovery::{MemoryRegistry, Registry};
use crate::environment::{ConfigError, FromEnv};
use crate::instrumentation::Instrumentation;
use crate::server::Mux;
use crate::wrapper::{HttpLayer, HttpStack, Wrapper};

/// go-micro's default registration TTL.
const REGISTER_TTL: Duration = Duration::from_secs(90);
/// go-micro's default heartbeat interval.
const REGISTER_INTERVAL: Duration = Duration::from_secs(30);
/// How long shutdown waits for in-flight work by default.
const GRACE_PERIOD: Duration = Duration::from_secs(30);

/// Configures a [`Service`]. What the code leaves unset comes from go-micro's `MICRO_*`
/// variables, read when [`ServiceConfig::build`] runs, else from the defaults each setter
/// names; code always wins over the environment.
pub struct ServiceConfig {
    name: String,
    version: String,
    address: String,
    metadata: BTreeMap<String, String>,
    registry: Option<Arc<dyn Registry>>,
    broker: Option<Arc<dyn Broker>>,
    register_ttl: Option<Duration>,
    register_interval: Option<Duration>,
    grace_period: Duration,
    health: bool,
    reflection: bool,
    client: ClientConfig,
    instrumentation: Instrumentation,
    handler_wrappers: Vec<Arc<dyn Wrapper>>,
    publish_wrappers: Vec<Arc<dyn Wrapper>>,
    subscriber_wrappers: Vec<Arc<dyn Wrapper>>,
    layers: HttpStack,
}

impl ServiceConfig {
    pub(super) fn new(name: String) -> Self {
        Self {
            name,
            version: "latest".into(),
            address: "127.0.0.1:0".into(),
            metadata: BTreeMap::new(),
            registry: None,
            broker: None,
            register_ttl: None,
            register_interval: None,
            grace_period: GRACE_PERIOD,
            health: true,
            reflection: true,
            client: ClientConfig::default(),
            instrumentation: Instrumentation::default(),
            handler_wrappers: Vec::new(),
            publish_wrappers: Vec::new(),
            subscriber_wrappers: Vec::new(),
            layers: HttpStack::default(),
        }
    }

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
    /// process-wide in-memory registry). The service's client uses it too.
    pub fn registry(mut self, registry: impl Registry) -> Self {
        self.registry = Some(Arc::new(registry));
        self
    }

    /// The broker to publish to and subscribe on (default: `MICRO_BROKER`, else the
    /// process-wide in-memory one).
    pub fn broker(mut self, broker: impl Broker) -> Self {
        self.broker = Some(Arc::new(broker));
        self
    }

    /// Configures the service's client: its selector (default: `MICRO_SELECTOR`, else
    /// random), call wrappers, retries, ejection, timeout and channel layers, as
    /// [`ClientConfig`] sets them. Its registry and built-in wrappers are the service's.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let service = micro_otel::Service::builder("user.service")
    ///     .client(|client| client.timeout(Duration::from_secs(2)))
    ///     .build();
    /// # let _ = service;
    /// ```
    pub fn client(mut self, configure: impl FnOnce(ClientConfig) -> ClientConfig) -> Self {
        self.client = configure(self.client);
        self
    }

    /// Adds a handler wrapper; wrappers run in the order added, inside the built-in ones.
    pub fn wrap_handler(mut self, wrapper: Arc<dyn Wrapper>) -> Self {
        self.handler_wrappers.push(wrapper);
        self
    }

    /// Adds a publish wrapper; in the order added, inside the built-in ones.
    pub fn wrap_publish(mut self, wrapper: Arc<dyn Wrapper>) -> Self {
        self.publish_wrappers.push(wrapper);
        self
    }

    /// Adds a subscriber wrapper, around every message a subscriber handles; in the order
    /// added, inside the built-in ones.
    pub fn wrap_subscriber(mut self, wrapper: Arc<dyn Wrapper>) -> Self {
        self.subscriber_wrappers.push(wrapper);
        self
    }

    /// Puts a tower layer in front of the server, per HTTP/2 request (e.g.
    /// `tower::limit::ConcurrencyLimitLayer`, or a tower-http layer). Layers added later are
    /// outermost. A layer's state is shared by all connections, as with tonic's
    /// `Server::layer`. A layer's error is answered as a gRPC status.
    pub fn layer(mut self, layer: impl HttpLayer) -> Self {
        self.layers.push(layer);
        self
    }

    /// Which built-in wrappers run on every side (handlers, calls, publishes, messages),
    /// and where they report (default: tracing through the global tracer provider). A
    /// provider set here is flushed when the service stops.
    pub fn instrumentation(mut self, instrumentation: Instrumentation) -> Self {
        self.instrumentation = instrumentation;
        self
    }

    /// How long a registration lives without a heartbeat (default: `MICRO_REGISTER_TTL`
    /// seconds, else 90 s).
    pub fn register_ttl(mut self, ttl: Duration) -> Self {
        self.register_ttl = Some(ttl);
        self
    }

    /// How often the node re-registers (default: `MICRO_REGISTER_INTERVAL` seconds, else
    /// 30 s).
    pub fn register_interval(mut self, interval: Duration) -> Self {
        self.register_interval = Some(interval);
        self
    }

    /// How long shutdown waits for in-flight calls and messages (default 30 s).
    pub fn grace_period(mut self, grace: Duration) -> Self {
        self.grace_period = grace;
        self
    }

    /// Whether the standard health service (`grpc.health.v1.Health`) is served (default:
    /// yes, with the `health` feature): SERVING once started, NOT_SERVING from the moment a
    /// stop begins. Health checks run outside the wrappers: no spans, no metrics.
    pub fn health(mut self, enabled: bool) -> Self {
        self.health = enabled;
        self
    }

    /// Whether server reflection (v1 and v1alpha) is served (default: yes, with the
    /// `reflection` feature), from the descriptors generated code embeds, so that grpcurl
    /// and other tools can list, describe and call the services with no `.proto` at hand.
    pub fn reflection(mut self, enabled: bool) -> Self {
        self.reflection = enabled;
        self
    }

    /// Builds the service. Settings left to the environment are read now; a variable that
    /// names nothing known is reported by [`Service::start`].
    pub fn build(self) -> Service {
        let env = FromEnv::read();
        let mut errors = Vec::new();
        let registry = resolve(self.registry, env.registry, &mut errors)
            .unwrap_or_else(|| Arc::new(MemoryRegistry::global()));
        let broker = resolve(self.broker, env.broker, &mut errors)
            .unwrap_or_else(|| Arc::new(MemoryBroker::global()));
        let register_ttl =
            resolve(self.register_ttl, env.register_ttl, &mut errors).unwrap_or(REGISTER_TTL);
        let register_interval = resolve(self.register_interval, env.register_interval, &mut errors)
            .unwrap_or(REGISTER_INTERVAL);
        let mut client = self.client;
        let selector = resolve(client.take_selector(), env.selector, &mut errors);
        let client = client
            .for_service(registry.clone(), selector, self.instrumentation.clone())
            .build();
        let chains = self.instrumentation.chains();
        Service {
            inner: Arc::new(Inner {
                name: self.name,
                version: self.version,
                address: self.address,
                metadata: self.metadata,
                registry,
                config_error: errors.into_iter().next(),
                handler_wrappers: chains.incoming(&self.handler_wrappers),
                layers: self.layers,
                client,
                broker,
                publish_wrappers: chains.outgoing(&self.publish_wrappers),
                subscriber_wrappers: chains.incoming(&self.subscriber_wrappers),
                subscribers: Mutex::new(Some(Vec::new())),
                mux: Mutex::new(Some(Mux::new(chains.metrics().cloned()))),
                register_ttl,
                register_interval,
                grace_period: self.grace_period,
                metrics: chains.metrics().cloned(),
                #[cfg(feature = "health")]
                health: self.health.then(crate::server::HealthState::default),
                reflection: self.reflection,
                instrumentation: self.instrumentation,
            }),
        }
    }
}

/// One setting: the code's value, else the environment's, else `None` (the default). A bad
/// variable is recorded in `errors` unless the code overrides it.
fn resolve<T>(
    in_code: Option<T>,
    from_env: Option<Result<T, ConfigError>>,
    errors: &mut Vec<ConfigError>,
) -> Option<T> {
    match (in_code, from_env) {
        (Some(value), _) => Some(value),
        (None, Some(Ok(value))) => Some(value),
        (None, Some(Err(error))) => {
            errors.push(error);
            None
        }
        (None, None) => None,
    }
}

impl std::fmt::Debug for ServiceConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceConfig")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}
