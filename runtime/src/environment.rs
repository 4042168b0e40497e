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
    pub(crate) fn new(setting: &str, value: &str, problem: impl Into<String>) -> Self {
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

/// How a backend is made from the comma-separated addresses of its `*_ADDRESS` variable
/// (empty for its defaults); an error says what is wrong with them.
type Build<T> = fn(&str) -> Result<Arc<T>, String>;

/// A backend `MICRO_REGISTRY` or `MICRO_BROKER` may name: each is one line of
/// [`registries`] or [`brokers`], and builds itself from its `*_ADDRESS` value.
struct Kind<T: ?Sized> {
    /// Its names, as the variable spells them (the first is the one errors list).
    names: &'static [&'static str],
    /// The cargo feature that brings it, if it needs one.
    feature: Option<&'static str>,
    /// How it is made; `None` when this build lacks its feature.
    build: Option<Build<T>>,
}

/// A [`Kind`] of `dyn $trait` behind cargo feature `$feature`, made by `$build(addresses)`.
macro_rules! kind {
    ($trait:ident: $names:expr, $feature:literal, $build:path) => {
        Kind {
            names: $names,
            feature: Some($feature),
            build: {
                #[cfg(feature = $feature)]
                let build: Option<Build<dyn $trait>> =
                    Some(|addresses| Ok(Arc::new($build(addresses)?)));
                #[cfg(not(feature = $feature))]
                let build = None;
                build
            },
        }
    };
}

/// Every registry kind: memory, and the backends behind features.
fn registries() -> [Kind<dyn Registry>; 5] {
    [
        Kind {
            names: &["memory", ""],
            feature: None,
            build: Some(|_| Ok(Arc::new(MemoryRegistry::global()))),
        },
        kind!(Registry: &["etcd"], "etcd", crate::discovery::EtcdRegistry::from_addresses),
        kind!(Registry: &["dns"], "dns", crate::discovery::DnsRegistry::from_addresses),
        kind!(Registry: &["consul"], "consul", crate::discovery::ConsulRegistry::from_addresses),
        kind!(Registry: &["mdns"], "mdns", crate::discovery::MdnsRegistry::from_addresses),
    ]
}

/// Every broker kind: memory, and the backends behind features.
fn brokers() -> [Kind<dyn Broker>; 4] {
    [
        Kind {
            names: &["memory", ""],
            feature: None,
            build: Some(|_| Ok(Arc::new(MemoryBroker::global()))),
        },
        kind!(Broker: &["nats"], "nats", crate::broker::NatsBroker::from_addresses),
        kind!(
            Broker: &["nats-jetstream", "jetstream"],
            "nats",
            crate::broker::NatsBroker::jetstream_from_addresses
        ),
        kind!(Broker: &["rabbitmq"], "rabbitmq", crate::broker::RabbitMqBroker::from_addresses),
    ]
}

/// The backend of `kinds` that `kind` (the value of `variable`) names, made from
/// `addresses` (the value of `address_variable`); `what` is `registry` or `broker`.
fn pick<T: ?Sized>(
    kinds: &[Kind<T>],
    (variable, kind): (&str, &str),
    (address_variable, addresses): (&str, &str),
    what: &str,
) -> Result<Arc<T>, ConfigError> {
    let name = kind.trim().to_ascii_lowercase();
    let Some(found) = kinds.iter().find(|k| k.names.contains(&name.as_str())) else {
        let known: Vec<&str> = kinds.iter().map(|k| k.names[0]).collect();
        return Err(ConfigError::new(
            variable,
            kind,
            format!("unknown {what}; expected one of {}", known.join(", ")),
        ));
    };
    match (found.build, found.feature) {
        (Some(build), _) => {
            build(addresses).map_err(|why| ConfigError::new(address_variable, addresses, why))
        }
        (None, feature) => Err(ConfigError::new(
            variable,
            kind,
            format!(
                "this build has no {name} {what} (enable micro-otel's `{}` feature)",
                feature.unwrap_or_default()
            ),
        )),
    }
}

/// The registry `kind` at `addresses` (comma separated; the backend's default when empty).
/// `memory` is the process-wide in-memory registry.
pub fn registry(kind: &str, addresses: &str) -> Result<Arc<dyn Registry>, ConfigError> {
    pick(
        &registries(),
        (MICRO_REGISTRY, kind),
        (MICRO_REGISTRY_ADDRESS, addresses),
        "registry",
    )
}

/// The broker `kind` at `addresses` (comma separated; the backend's default when empty).
/// `memory` is the process-wide in-memory broker.
pub fn broker(kind: &str, addresses: &str) -> Result<Arc<dyn Broker>, ConfigError> {
    pick(
        &brokers(),
        (MICRO_BROKER, kind),
        (MICRO_BROKER_ADDRESS, addresses),
        "broker",
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
