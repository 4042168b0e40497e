//! [`ServiceError`]: why a service could not be configured, started or stopped.

use crate::broker::BrokerError;
use crate::discovery::RegistryError;
use crate::environment::ConfigError;

/// Why a service could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
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
    /// Server reflection could not be built from the descriptors the handlers carry.
    #[error("server reflection: {0}")]
    Reflection(String),
    /// A second handler for the same proto service.
    #[error("{service} already has a handler on this service")]
    DuplicateHandler {
        /// The proto service served twice.
        service: &'static str,
    },
}
