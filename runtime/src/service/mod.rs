//! [`Service`]: a named service with its server, client, registry, broker and wrappers, and
//! its life cycle (register with TTL and heartbeat, serve, deregister, drain, flush).
//!
//! | file | holds |
//! |---|---|
//! | `config.rs` | [`ServiceConfig`]: code, then `MICRO_*`, then defaults, resolved in one place |
//! | `running.rs` | [`RunningService`]: the heartbeat and the one way a service stops |
//! | `error.rs` | [`ServiceError`] |

mod config;
mod error;
mod running;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;

pub use config::ServiceConfig;
pub use error::ServiceError;
pub use running::RunningService;

use crate::broker::{Broker, Publisher, Subscriber, SubscriberStats};
use crate::client::Client;
use crate::discovery::{Node, Registration, Registry};
use crate::environment::ConfigError;
use crate::instrumentation::Instrumentation;
use crate::metrics::Metrics;
use crate::server::{Dispatch, Mux, RunningServer};
use crate::wrapper::{HttpStack, Wrappers};

/// A microservice: serves registered handlers and makes calls, with tracing built in.
#[derive(Clone)]
pub struct Service {
    inner: Arc<Inner>,
}

/// A built service: its configuration resolved, its handlers and subscribers until it
/// starts.
struct Inner {
    name: String,
    version: String,
    address: String,
    metadata: BTreeMap<String, String>,
    registry: Arc<dyn Registry>,
    /// A bad `MICRO_*` setting, reported by `start`.
    config_error: Option<ConfigError>,
    handler_wrappers: Wrappers,
    layers: HttpStack,
    client: Client,
    broker: Arc<dyn Broker>,
    publish_wrappers: Wrappers,
    subscriber_wrappers: Wrappers,
    /// The subscribers to start; `None` once started.
    subscribers: Mutex<Option<Vec<Subscriber>>>,
    /// The proto services to serve; `None` once started.
    mux: Mutex<Option<Mux>>,
    register_ttl: Duration,
    register_interval: Duration,
    grace_period: Duration,
    /// The built-in wrappers' settings, whose providers are flushed at stop.
    instrumentation: Instrumentation,
    /// The instruments subscriptions report their counters through, when metrics are on.
    metrics: Option<Metrics>,
    /// What the health service reports, when it is served.
    #[cfg(feature = "health")]
    health: Option<crate::server::HealthState>,
    /// Whether server reflection is served.
    #[cfg_attr(not(feature = "reflection"), allow(dead_code))]
    reflection: bool,
}

impl Service {
    /// Configures a service registered as `name` (e.g. `user.service`).
    pub fn builder(name: impl Into<String>) -> ServiceConfig {
        ServiceConfig::new(name.into())
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
    pub fn handle(&self, dispatch: impl Into<Dispatch>) -> Result<(), ServiceError> {
        let dispatch = dispatch.into();
        let service = dispatch.service_name();
        let mut mux = self.inner.mux.lock().unwrap_or_else(|e| e.into_inner());
        let Some(mux) = mux.as_mut() else {
            return Err(ServiceError::AlreadyStarted {
                what: format!("a handler of {service}"),
            });
        };
        mux.add(dispatch.with_wrappers(self.inner.handler_wrappers.clone()))
            .map_err(|_| ServiceError::DuplicateHandler { service })
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
    pub fn subscribe(&self, subscriber: Subscriber) -> Result<SubscriberStats, ServiceError> {
        let mut subscribers = self
            .inner
            .subscribers
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let Some(subscribers) = subscribers.as_mut() else {
            return Err(ServiceError::AlreadyStarted {
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

    /// Binds, registers the node, starts the subscribers and serves until
    /// [`RunningService::stop`]. A service starts once; handlers and subscribers must be
    /// added before. If a subscriber cannot start, what had started is stopped again.
    pub async fn start(&self) -> Result<RunningService, ServiceError> {
        if let Some(e) = &self.inner.config_error {
            return Err(e.clone().into());
        }
        let inner = self.inner.clone();
        let mut mux = inner
            .mux
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .ok_or_else(|| ServiceError::AlreadyStarted {
                what: format!("starting {} again", inner.name),
            })?;
        inner.add_standard_services(&mut mux)?;
        let server = RunningServer::start(
            &inner.address,
            mux,
            inner.layers.clone(),
            inner.grace_period,
        )
        .await
        .map_err(|source| ServiceError::Bind {
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
            .register(Registration::new(&inner.name, &node, inner.register_ttl))
            .await
        {
            server.stop().await;
            return Err(e.into());
        }
        let mut running = RunningService::new(inner.clone(), node, server);
        let subscribers = inner
            .subscribers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .unwrap_or_default();
        for subscriber in subscribers {
            if let Some(metrics) = &inner.metrics {
                let messaging = subscriber.messaging(inner.broker.system());
                metrics.observe_subscription(&messaging, subscriber.stats());
            }
            let started = subscriber
                .start(
                    inner.broker.clone(),
                    inner.subscriber_wrappers.clone(),
                    running.stop_signal(),
                )
                .await;
            match started {
                Ok(task) => running.add_subscription(task),
                Err(e) => {
                    let _ = running.stop().await;
                    return Err(e.into());
                }
            }
        }
        running.start_heartbeat();
        #[cfg(feature = "health")]
        if let Some(health) = &inner.health {
            health.set_all_serving(true);
        }
        tracing::info!(service = %inner.name, address = %running.node().address, "service started");
        Ok(running)
    }

    /// Starts, serves until Ctrl-C or SIGTERM, then stops gracefully.
    pub async fn run(&self) -> Result<(), ServiceError> {
        self.start().await?.until_signal().await
    }
}

impl Inner {
    /// Adds health and reflection to `mux`, as configured, with every served proto
    /// service known to health (not serving until the service has started).
    fn add_standard_services(&self, mux: &mut Mux) -> Result<(), ServiceError> {
        #[cfg(feature = "health")]
        if let Some(health) = &self.health {
            for service in mux.service_names() {
                health.set_serving(service, false);
            }
            health.set_serving("", false);
            let service = crate::server::BoxedHttpService::new(health.service());
            mux.add_standard(service, "grpc.health.v1.Health");
        }
        #[cfg(feature = "reflection")]
        if self.reflection {
            crate::server::reflection::add(mux)
                .map_err(|e| ServiceError::Reflection(e.to_string()))?;
        }
        let _ = mux;
        Ok(())
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
