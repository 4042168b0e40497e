//! go-micro's environment variables for the plumbing: `MICRO_REGISTRY`,
//! `MICRO_REGISTRY_ADDRESS`, `MICRO_SELECTOR`, `MICRO_REGISTER_TTL`,
//! `MICRO_REGISTER_INTERVAL`, `MICRO_BROKER` and `MICRO_BROKER_ADDRESS`.
//!
//! [`crate::Service::builder`] reads them; what the code sets wins. A value that names
//! nothing known is an error at [`crate::Service::start`] that names the variable, the value
//! and what it may be.

use std::sync::Arc;

use crate::broker::{Broker, MemoryBroker};
use crate::discovery::{
    ConsistentHash, LeastRequests, MemoryRegistry, Random, Registry, RoundRobin, Selector, Weighted,
};

/// The registry backend: `memory` (default), `etcd`, `dns`, `consul`, `mdns` (each with
/// the feature of its name).
pub const MICRO_REGISTRY: &str = "MICRO_REGISTRY";
/// Where the registry is: comma-separated addresses (etcd: `http://127.0.0.1:2379`; dns:
/// name servers `ip[:port]`, the system's when empty; consul: one agent, `127.0.0.1:8500`;
/// mdns: network interfaces by name or address, `eth0,192.168.1.10`, all when empty).
pub const MICRO_REGISTRY_ADDRESS: &str = "MICRO_REGISTRY_ADDRESS";
/// The selection strategy: `random` (default), `round_robin`, `weighted`,
/// `least_requests`, `consistent_hash`.
pub const MICRO_SELECTOR: &str = "MICRO_SELECTOR";

/// The broker backend: `memory` (default), `nats`, `nats-jetstream` (feature `nats`),
/// `rabbitmq` (feature `rabbitmq`).
pub const MICRO_BROKER: &str = "MICRO_BROKER";
/// Where the broker is (nats: comma-separated `nats://host:port`, default
/// `nats://127.0.0.1:4222`; rabbitmq: an `amqp://user:password@host:port/vhost` URI, the
/// default vhost being `%2f`).
pub const MICRO_BROKER_ADDRESS: &str = "MICRO_BROKER_ADDRESS";

/// Seconds a registration lives without a heartbeat (default 90).
pub const MICRO_REGISTER_TTL: &str = "MICRO_REGISTER_TTL";
/// Seconds between heartbeats (default 30).
pub const MICRO_REGISTER_INTERVAL: &str = "MICRO_REGISTER_INTERVAL";

/// The selector names [`selector`] knows, as the error lists them.
const SELECTORS: &str = "random, round_robin, weighted, least_requests, consistent_hash";

/// A setting that names nothing known.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{setting}={value:?}: {problem}")]
pub struct ConfigError {
    /// The variable or flag.
    pub setting: String,
    /// The value given.
    pub value: String,
    /// What is wrong, and what it may be.
    pub problem: String,
}

impl ConfigError {
    fn new(setting: &str, value: &str, problem: impl Into<String>) -> Self {
        Self {
            setting: setting.to_owned(),
            value: value.to_owned(),
            problem: problem.into(),
        }
    }
}

/// The selector named `name` (as `MICRO_SELECTOR` or a `--selector` flag spells it;
/// `setting` names where it came from, for the error).
pub fn selector(setting: &str, name: &str) -> Result<Arc<dyn Selector>, ConfigError> {
    Ok(
        match name.trim().to_ascii_lowercase().replace('-', "_").as_str() {
            "random" => Arc::new(Random),
            "round_robin" | "roundrobin" => Arc::new(RoundRobin::new()),
            "weighted" => Arc::new(Weighted),
            "least_requests" | "p2c" => Arc::new(LeastRequests::new()),
            "consistent_hash" | "hash" => Arc::new(ConsistentHash::default()),
            _ => {
                return Err(ConfigError::new(
                    setting,
                    name,
                    format!("unknown selector; expected one of {SELECTORS}"),
                ));
            }
        },
    )
}

/// The registry `kind` at `addresses` (comma separated; the backend's default when empty).
/// `memory` is the process-wide in-memory registry.
pub fn registry(kind: &str, addresses: &str) -> Result<Arc<dyn Registry>, ConfigError> {
    #[cfg(not(any(
        feature = "etcd",
        feature = "dns",
        feature = "consul",
        feature = "mdns"
    )))]
    let _ = addresses; // Only the backends behind features read it.
    match kind.trim().to_ascii_lowercase().as_str() {
        "memory" | "" => Ok(Arc::new(MemoryRegistry::global())),
        #[cfg(feature = "etcd")]
        "etcd" => {
            let mut endpoints = list(addresses);
            if endpoints.is_empty() {
                endpoints.push("http://127.0.0.1:2379");
            }
            Ok(Arc::new(crate::discovery::EtcdRegistry::lazy(&endpoints)))
        }
        #[cfg(feature = "dns")]
        "dns" => {
            // SRV records (each names its node's port): from the environment alone, A
            // records would need a port nothing gives. The system's name servers unless
            // MICRO_REGISTRY_ADDRESS lists some (`ip[:port]`, port 53 by default).
            let registry = crate::discovery::DnsRegistry::srv()
                .name_servers(addresses)
                .map_err(|crate::discovery::RegistryError::Unavailable(why)| {
                    ConfigError::new(MICRO_REGISTRY_ADDRESS, addresses, why)
                })?;
            Ok(Arc::new(registry))
        }
        #[cfg(feature = "consul")]
        "consul" => {
            use crate::discovery::ConsulRegistry;
            let registry = match list(addresses).as_slice() {
                [] => ConsulRegistry::new(ConsulRegistry::DEFAULT_ADDRESS),
                [agent] => ConsulRegistry::new(agent),
                _ => {
                    return Err(ConfigError::new(
                        MICRO_REGISTRY_ADDRESS,
                        addresses,
                        "consul talks to one agent (usually the local one): give one address",
                    ));
                }
            };
            // The ACL token Consul's own CLI and Go client read.
            Ok(Arc::new(match var("CONSUL_HTTP_TOKEN") {
                Some(token) => registry.with_token(token.trim()),
                None => registry,
            }))
        }
        #[cfg(feature = "mdns")]
        "mdns" => {
            // No server: MICRO_REGISTRY_ADDRESS lists the network interfaces to run on, by
            // name or address (`eth0,192.168.1.10`); every interface when empty.
            Ok(Arc::new(crate::discovery::MdnsRegistry::on_interfaces(
                list(addresses),
            )))
        }
        #[cfg(not(feature = "etcd"))]
        "etcd" => Err(not_built(kind)),
        #[cfg(not(feature = "dns"))]
        "dns" => Err(not_built(kind)),
        #[cfg(not(feature = "consul"))]
        "consul" => Err(not_built(kind)),
        #[cfg(not(feature = "mdns"))]
        "mdns" => Err(not_built(kind)),
        _ => Err(ConfigError::new(
            MICRO_REGISTRY,
            kind,
            "unknown registry; expected memory, etcd, mdns, consul or dns",
        )),
    }
}

/// The non-empty entries of a comma-separated list.
#[cfg_attr(
    not(any(
        feature = "etcd",
        feature = "consul",
        feature = "mdns",
        feature = "rabbitmq"
    )),
    allow(dead_code)
)]
fn list(addresses: &str) -> Vec<&str> {
    addresses
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .collect()
}

/// The error for a registry kind this build lacks.
#[cfg_attr(
    all(
        feature = "etcd",
        feature = "dns",
        feature = "consul",
        feature = "mdns"
    ),
    allow(dead_code)
)]
fn not_built(kind: &str) -> ConfigError {
    ConfigError::new(
        MICRO_REGISTRY,
        kind,
        format!("this build has no {kind} registry (enable micro-otel's `{kind}` feature)"),
    )
}

/// The broker `kind` at `addresses` (comma separated; the backend's default when empty).
/// `memory` is the process-wide in-memory broker.
pub fn broker(kind: &str, addresses: &str) -> Result<Arc<dyn Broker>, ConfigError> {
    #[cfg(not(any(feature = "rabbitmq", feature = "nats")))]
    let _ = addresses; // Only the backends behind features read it.
    match kind.trim().to_ascii_lowercase().as_str() {
        "memory" | "" => Ok(Arc::new(MemoryBroker::global())),
        // Core NATS (at most once), comma-separated `nats://host:port`, connected on first use.
        #[cfg(feature = "nats")]
        "nats" => Ok(Arc::new(crate::broker::NatsBroker::lazy(addresses))),
        // JetStream (at least once) with the default stream `MICRO` over `micro.>` topics.
        #[cfg(feature = "nats")]
        "nats-jetstream" | "jetstream" => Ok(Arc::new(
            crate::broker::NatsBroker::lazy(addresses)
                .jetstream(crate::broker::JetStreamConfig::default()),
        )),
        #[cfg(not(feature = "nats"))]
        "nats" | "nats-jetstream" | "jetstream" => Err(not_built_broker("nats")),
        #[cfg(feature = "rabbitmq")]
        "rabbitmq" => {
            // One server: the first address (an amqp:// URI), else go-micro's default.
            let uri = list(addresses)
                .first()
                .copied()
                .unwrap_or("amqp://guest:guest@127.0.0.1:5672/%2f");
            Ok(Arc::new(crate::broker::RabbitMqBroker::lazy(uri)))
        }
        #[cfg(not(feature = "rabbitmq"))]
        "rabbitmq" => Err(not_built_broker(kind)),
        _ => Err(ConfigError::new(
            MICRO_BROKER,
            kind,
            "unknown broker; expected memory, nats, nats-jetstream or rabbitmq",
        )),
    }
}

/// The error for a broker kind this build lacks.
#[cfg_attr(all(feature = "nats", feature = "rabbitmq"), allow(dead_code))]
fn not_built_broker(kind: &str) -> ConfigError {
    ConfigError::new(
        MICRO_BROKER,
        kind,
        format!("this build has no {kind} broker (enable micro-otel's `{kind}` feature)"),
    )
}

/// The broker `MICRO_BROKER` (at `MICRO_BROKER_ADDRESS`) names, if it is set.
pub fn broker_from_env() -> Option<Result<Arc<dyn Broker>, ConfigError>> {
    let address = var(MICRO_BROKER_ADDRESS).unwrap_or_default();
    var(MICRO_BROKER).map(|kind| broker(&kind, &address))
}

/// The registry `MICRO_REGISTRY` (at `MICRO_REGISTRY_ADDRESS`) names, if it is set.
pub fn registry_from_env() -> Option<Result<Arc<dyn Registry>, ConfigError>> {
    let address = var(MICRO_REGISTRY_ADDRESS).unwrap_or_default();
    var(MICRO_REGISTRY).map(|kind| registry(&kind, &address))
}

/// The selector `MICRO_SELECTOR` names, if it is set.
pub fn selector_from_env() -> Option<Result<Arc<dyn Selector>, ConfigError>> {
    var(MICRO_SELECTOR).map(|name| selector(MICRO_SELECTOR, &name))
}

/// A whole number of seconds from `name`, if it is set.
fn seconds_from_env(name: &str) -> Option<Result<std::time::Duration, ConfigError>> {
    var(name).map(|value| match value.trim().parse::<u64>() {
        Ok(seconds) if seconds > 0 => Ok(std::time::Duration::from_secs(seconds)),
        _ => Err(ConfigError::new(
            name,
            &value,
            "expected a whole number of seconds above 0",
        )),
    })
}

/// A variable's value, unless unset or blank.
fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// What the environment asks for: a registry and a selector, each when its variable is set.
#[derive(Default)]
pub(crate) struct FromEnv {
    pub(crate) registry: Option<Result<Arc<dyn Registry>, ConfigError>>,
    pub(crate) selector: Option<Result<Arc<dyn Selector>, ConfigError>>,
    pub(crate) broker: Option<Result<Arc<dyn Broker>, ConfigError>>,
    pub(crate) register_ttl: Option<Result<std::time::Duration, ConfigError>>,
    pub(crate) register_interval: Option<Result<std::time::Duration, ConfigError>>,
}

impl FromEnv {
    /// Reads the variables now.
    pub(crate) fn read() -> Self {
        Self {
            registry: registry_from_env(),
            selector: selector_from_env(),
            broker: broker_from_env(),
            register_ttl: seconds_from_env(MICRO_REGISTER_TTL),
            register_interval: seconds_from_env(MICRO_REGISTER_INTERVAL),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_selector_name_is_known_and_a_wrong_one_is_named() {
        for name in [
            "random",
            "round_robin",
            "roundrobin",
            "Round-Robin",
            "weighted",
            "least_requests",
            "consistent_hash",
        ] {
            assert!(selector(MICRO_SELECTOR, name).is_ok(), "{name}");
        }
        let error = selector("--selector", "fastest").err().expect("unknown");
        let text = error.to_string();
        assert!(
            text.starts_with("--selector=\"fastest\": unknown selector"),
            "{text}"
        );
        assert!(text.contains("round_robin"), "{text}");
    }

    #[test]
    fn a_registry_kind_this_build_lacks_says_which_feature_brings_it() {
        assert!(registry("memory", "").is_ok());
        let kinds = [
            ("etcd", cfg!(feature = "etcd")),
            ("dns", cfg!(feature = "dns")),
            ("consul", cfg!(feature = "consul")),
            ("mdns", cfg!(feature = "mdns")),
        ];
        for (kind, built) in kinds {
            let made = registry(kind, "");
            match (built, made) {
                (true, made) => assert!(made.is_ok(), "{kind} is built in"),
                (false, Ok(_)) => panic!("{kind} is not built in"),
                (false, Err(error)) => {
                    assert!(
                        error.to_string().contains(&format!("`{kind}` feature")),
                        "{error}"
                    )
                }
            }
        }
        let error = registry("zookeeper", "").err().expect("unknown");
        assert!(
            error.to_string().contains("MICRO_REGISTRY=\"zookeeper\""),
            "{error}"
        );
    }

    #[test]
    fn broker_names_are_checked_like_registry_names() {
        assert!(broker("memory", "").is_ok());
        let error = broker("kafka", "").err().expect("unknown");
        assert!(
            error
                .to_string()
                .starts_with("MICRO_BROKER=\"kafka\": unknown broker"),
            "{error}"
        );
    }
}
