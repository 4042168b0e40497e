//! [`Target`]: what a client calls, a registry service name or a direct address.

use std::fmt;
use std::sync::Arc;

use std::net::SocketAddr;

/// A host (name or IP, rendered once per client or connection) and optional port: what
/// spans report as `server.address`/`server.port` and `client.address`/`client.port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetAddress {
    /// Host name, IP address or registry service name.
    pub host: Arc<str>,
    /// Port, when known.
    pub port: Option<u16>,
}

impl NetAddress {
    /// The host and port of a socket address.
    pub fn from_socket(addr: SocketAddr) -> Self {
        Self {
            host: addr.ip().to_string().into(),
            port: Some(addr.port()),
        }
    }
}

/// The entries of a comma-separated list of addresses (`MICRO_REGISTRY_ADDRESS`,
/// `MICRO_BROKER_ADDRESS`, a NATS server list), trimmed, empty ones left out.
#[cfg_attr(
    not(any(
        feature = "etcd",
        feature = "dns",
        feature = "consul",
        feature = "mdns",
        feature = "nats",
        feature = "rabbitmq"
    )),
    allow(dead_code)
)]
pub(crate) fn address_list(list: &str) -> impl Iterator<Item = &str> {
    list.split(',').map(str::trim).filter(|a| !a.is_empty())
}

/// What a typed client calls: a service name looked up in the registry (`user.service`),
/// or a direct address (`127.0.0.1:50051`, `http://host:port`) when it contains a `:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target(Arc<Parsed>);

/// A target as parsed once, shared by every call to it.
#[derive(Debug, PartialEq, Eq)]
struct Parsed {
    name: Arc<str>,
    address: NetAddress,
    direct: bool,
}

impl Target {
    /// Parses a service name or address.
    pub fn new(target: &str) -> Self {
        let direct = target.contains(':');
        let address = if direct {
            let hostport = target
                .trim_start_matches("http://")
                .trim_start_matches("https://")
                .trim_end_matches('/');
            match hostport.rsplit_once(':') {
                Some((host, port)) => NetAddress {
                    host: host.trim_start_matches('[').trim_end_matches(']').into(),
                    port: port.parse().ok(),
                },
                None => NetAddress {
                    host: hostport.into(),
                    port: None,
                },
            }
        } else {
            NetAddress {
                host: target.into(),
                port: None,
            }
        };
        Self(Arc::new(Parsed {
            name: target.into(),
            address,
            direct,
        }))
    }

    /// The target as given.
    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// The target as given, shared (an attribute value without a copy).
    pub(crate) fn shared_name(&self) -> Arc<str> {
        self.0.name.clone()
    }

    /// Whether the target is an address rather than a registry name.
    pub fn is_direct(&self) -> bool {
        self.0.direct
    }

    /// Host and port reported as `server.address`/`server.port`.
    pub fn address(&self) -> &NetAddress {
        &self.0.address
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_names_and_addresses_are_told_apart() {
        let named = Target::new("user.service");
        assert!(!named.is_direct());
        assert_eq!(&*named.address().host, "user.service");
        assert_eq!(named.address().port, None);

        let direct = Target::new("127.0.0.1:50051");
        assert!(direct.is_direct());
        assert_eq!(&*direct.address().host, "127.0.0.1");
        assert_eq!(direct.address().port, Some(50051));

        let url = Target::new("http://[::1]:8080");
        assert_eq!(&*url.address().host, "::1");
        assert_eq!(url.address().port, Some(8080));
    }
}
