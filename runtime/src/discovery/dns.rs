//! [`DnsRegistry`]: the nodes of a service as DNS publishes them, for Kubernetes headless
//! services and any platform whose DNS names a service's instances: a service name
//! resolves to its nodes through A/AAAA records (with a known port) or SRV records.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{Name, RData};
use tokio::sync::OnceCell;

use super::backend::{Follow, Named, follow};
use super::{Node, Registration, Registry, RegistryError, RegistryFuture, WEIGHT, Watch};
use crate::call::address_list;

/// How long one resolution may take unless [`timeout`](DnsRegistry::timeout) says otherwise.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// The shortest time between two resolutions of a watch unless
/// [`min_interval`](DnsRegistry::min_interval) says otherwise.
const DEFAULT_MIN_INTERVAL: Duration = Duration::from_secs(1);

/// The metadata key holding the SRV priority of a node found through SRV records (its SRV
/// weight is under [`WEIGHT`], which the [`Weighted`](super::Weighted) selector reads).
pub const SRV_PRIORITY: &str = "priority";

/// A registry read from DNS: the nodes of a service are the records of a DNS name.
///
/// Two kinds of records, chosen per registry:
/// - [`a_records(port)`](Self::a_records): the A and AAAA records of the name, each address
///   with `port` one node (a Kubernetes headless service: one record per ready pod);
/// - [`srv()`](Self::srv): the SRV records of the name, each target's A/AAAA addresses with
///   the record's port one node, its SRV weight and priority as metadata ([`WEIGHT`],
///   [`SRV_PRIORITY`]). Kubernetes publishes one SRV name per named port of a service:
///   `_<port>._tcp.<service>.<namespace>.svc.cluster.local`.
///
/// A node's id and address are both `ip:port` (`[ip]:port` for IPv6); nodes carry no
/// version or other metadata, as DNS has none to give.
///
/// The DNS name of a service is the service name itself unless [`domain`](Self::domain)
/// appends a suffix or [`map_name`](Self::map_name) maps it. A name without a trailing dot
/// goes through the search domains of the system configuration (in a Kubernetes pod, `user`
/// is found as `user.<namespace>.svc.cluster.local`); with explicit name servers there
/// are no search domains.
///
/// Names are resolved through the system configuration (`/etc/resolv.conf`, and
/// `/etc/hosts` first), or through the [`name_server`](Self::name_server)s given (over UDP,
/// TCP for long answers; the hosts file is then not read). Answers are cached for their
/// TTL.
///
/// **Registering and deregistering succeed and do nothing**: the platform (Kubernetes,
/// Consul, whoever serves the zone) publishes the records, so a service started with
/// `MICRO_REGISTRY=dns` starts and serves, and is found once the platform lists it.
///
/// [`lookup`](Registry::lookup) resolves the name now. [`watch`](Registry::watch) resolves
/// it at once, then again when the answer's TTL runs out but no sooner than the minimum
/// interval (1 s by default), reporting a [`Change`](super::Change) when the set of nodes changed. A name
/// with no records has no nodes. A resolution that fails or takes longer than the
/// [`timeout`](Self::timeout) (5 s by default) is a [`RegistryError::Unavailable`] naming the
/// DNS name and the name servers, and ends the watch (the client's registry cache then keeps
/// the last nodes and watches again).
///
/// Clones share the resolver and its cache; a clone changed by a builder method gets its own.
///
/// ```
/// use micro_otel::discovery::DnsRegistry;
///
/// // Pods of a headless service serving gRPC on 8080; service `user` is
/// // `user.default.svc.cluster.local`.
/// let by_address = DnsRegistry::a_records(8080).domain("default.svc.cluster.local");
/// // The same service through the SRV records of its port named `grpc`.
/// let by_srv = DnsRegistry::srv().map_name(|service| format!("_grpc._tcp.{service}"));
/// // Asking a given name server rather than the system's.
/// let local = DnsRegistry::a_records(8080).name_server(([127, 0, 0, 1], 5353).into());
/// # let _ = (by_address, by_srv, local);
/// ```
#[derive(Clone)]
pub struct DnsRegistry {
    records: Records,
    /// Empty: the system configuration.
    servers: Vec<SocketAddr>,
    /// Service name to DNS name; `None`: the same.
    name: Option<NameMap>,
    min_interval: Duration,
    timeout: Duration,
    /// Made on first use, from the settings above.
    resolver: Arc<OnceCell<Resolver>>,
}

/// Maps a service name to its DNS name.
type NameMap = Arc<dyn Fn(&str) -> String + Send + Sync>;

/// Which records name the nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Records {
    /// A and AAAA records, all nodes on this port.
    Addresses { port: u16 },
    /// SRV records.
    Srv,
}

/// A resolver, and the name servers it asks as errors name them.
struct Resolver {
    resolver: TokioResolver,
    named: Named,
}

/// The nodes of a name, and how long the answer holds.
struct Resolved {
    nodes: Vec<Node>,
    valid_for: Duration,
}

impl DnsRegistry {
    /// A registry whose nodes are the A and AAAA records of a service's DNS name, each
    /// address serving on `port`.
    pub fn a_records(port: u16) -> Self {
        Self::with(Records::Addresses { port })
    }

    /// A registry whose nodes are the SRV records of a service's DNS name: each record's
    /// target, resolved to its A and AAAA addresses, on the record's port.
    pub fn srv() -> Self {
        Self::with(Records::Srv)
    }

    fn with(records: Records) -> Self {
        Self {
            records,
            servers: Vec::new(),
            name: None,
            min_interval: DEFAULT_MIN_INTERVAL,
            timeout: DEFAULT_TIMEOUT,
            resolver: Arc::default(),
        }
    }

    /// Asks the name server at `server` (e.g. `127.0.0.1:5353` or `[::1]:53`) instead of the
    /// system's; call again to add more (any of them may answer).
    pub fn name_server(mut self, server: SocketAddr) -> Self {
        self.servers.push(server);
        self.changed()
    }

    /// Adds the name servers of a comma-separated list of `ip`, `ip:port` or `[ipv6]:port`
    /// (port 53 unless given), as [`name_server`](Self::name_server) does: the form of
    /// `MICRO_REGISTRY_ADDRESS`. Fails naming the first entry that is not one; empty
    /// entries are skipped.
    pub fn name_servers(mut self, list: &str) -> Result<Self, RegistryError> {
        for entry in address_list(list) {
            let server = parse_name_server(entry).ok_or_else(|| {
                RegistryError::Invalid(format!(
                    "DNS name server {entry:?}: not an IP address with an optional port"
                ))
            })?;
            self.servers.push(server);
        }
        Ok(self.changed())
    }

    /// The registry `MICRO_REGISTRY=dns` names: SRV records (each names its node's port:
    /// from the environment alone, A records would need a port nothing gives), from the
    /// name servers of a comma-separated list (`ip[:port]`, port 53 by default), or the
    /// system's when it is empty.
    pub(crate) fn from_addresses(addresses: &str) -> Result<Self, String> {
        Self::srv().name_servers(addresses).map_err(|e| match e {
            RegistryError::Invalid(why) => why,
            other => other.to_string(),
        })
    }

    /// Resolves `{service}.{suffix}` for a service (e.g. suffix
    /// `default.svc.cluster.local`, or `example.com.` with a trailing dot for a fully
    /// qualified name that skips the search domains). Replaces any [`map_name`](Self::map_name).
    pub fn domain(self, suffix: impl Into<String>) -> Self {
        let suffix = suffix.into();
        let suffix = suffix.trim_start_matches('.').to_owned();
        self.map_name(move |service| format!("{service}.{suffix}"))
    }

    /// Resolves `map(service)` for a service, e.g.
    /// `|s| format!("_grpc._tcp.{s}.default.svc.cluster.local")` for the SRV records of a
    /// Kubernetes service's port named `grpc`. Replaces any [`domain`](Self::domain).
    pub fn map_name(mut self, map: impl Fn(&str) -> String + Send + Sync + 'static) -> Self {
        self.name = Some(Arc::new(map));
        self.changed()
    }

    /// The shortest time a watch waits between two resolutions, whatever the TTL
    /// (default 1 s).
    pub fn min_interval(mut self, interval: Duration) -> Self {
        self.min_interval = interval;
        self.changed()
    }

    /// How long one resolution (every query it makes, retries included) may take before
    /// the name servers are reported unavailable (default 5 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self.changed()
    }

    /// The DNS name of `service`.
    pub fn dns_name(&self, service: &str) -> String {
        match &self.name {
            Some(map) => map(service),
            None => service.to_owned(),
        }
    }

    /// After a setting changed: a resolver of its own, made from the new settings.
    fn changed(mut self) -> Self {
        self.resolver = Arc::default();
        self
    }

    /// The resolver, made on first use.
    async fn resolver(&self) -> Result<&Resolver, RegistryError> {
        self.resolver
            .get_or_try_init(|| std::future::ready(self.build()))
            .await
    }

    fn build(&self) -> Result<Resolver, RegistryError> {
        let (config, mut options) = if self.servers.is_empty() {
            system_config()?
        } else {
            let servers = self
                .servers
                .iter()
                .map(|server| {
                    let mut config = NameServerConfig::udp_and_tcp(server.ip());
                    for connection in &mut config.connections {
                        connection.port = server.port();
                    }
                    config
                })
                .collect();
            let mut options = ResolverOpts::default();
            // Only the servers given answer.
            options.use_hosts_file = ResolveHosts::Never;
            (ResolverConfig::from_name_servers(servers), options)
        };
        // Each query is tried twice within the whole resolution's time.
        options.timeout = (self.timeout / 2).max(Duration::from_millis(1));
        options.attempts = 2;
        let servers = config
            .name_servers()
            .iter()
            .flat_map(|server| {
                let ip = server.ip;
                let mut ports: Vec<u16> = server.connections.iter().map(|c| c.port).collect();
                ports.dedup();
                ports.into_iter().map(move |port| SocketAddr::new(ip, port))
            })
            .map(|server| server.to_string())
            .collect::<Vec<_>>()
            .join(",");
        let named = if self.servers.is_empty() {
            Named::new("DNS", format!("{servers} (system configuration)"))
        } else {
            Named::new("DNS", servers)
        };
        let resolver = TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
            .with_options(options)
            .build()
            .map_err(|e| named.unavailable("resolver", e))?;
        Ok(Resolver { resolver, named })
    }

    /// The nodes of `service` now, within the time limit.
    async fn resolve(&self, service: &str) -> Result<Resolved, RegistryError> {
        let dns = self.resolver().await?;
        let name = self.dns_name(service);
        let what = match self.records {
            Records::Addresses { .. } => format!("A/AAAA records of {name}"),
            Records::Srv => format!("SRV records of {name}"),
        };
        let resolving = async {
            match self.records {
                Records::Addresses { port } => addresses(&dns.resolver, &name, port).await,
                Records::Srv => srv(&dns.resolver, &name).await,
            }
        };
        let mut resolved = dns.named.within(what, self.timeout, resolving).await?;
        resolved.nodes.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(resolved)
    }
}

/// `ip`, `ip:port` or `[ipv6]:port`; port 53 unless given.
fn parse_name_server(entry: &str) -> Option<SocketAddr> {
    entry
        .parse::<SocketAddr>()
        .ok()
        .or_else(|| Some(SocketAddr::new(entry.parse::<IpAddr>().ok()?, 53)))
}

/// The system's name servers and options.
#[cfg(any(unix, windows))]
fn system_config() -> Result<(ResolverConfig, ResolverOpts), RegistryError> {
    hickory_resolver::system_conf::read_system_conf().map_err(|e| {
        RegistryError::Unavailable(format!("DNS: reading the system configuration: {e}"))
    })
}

/// The system's name servers and options: none known on this platform.
#[cfg(not(any(unix, windows)))]
fn system_config() -> Result<(ResolverConfig, ResolverOpts), RegistryError> {
    Err(RegistryError::Unavailable(
        "DNS: no system configuration on this platform; give a name server".into(),
    ))
}

/// The addresses of `name` (none if it has no A or AAAA record) and when the answer
/// expires.
async fn ips(resolver: &TokioResolver, name: Name) -> Result<(Vec<IpAddr>, Instant), NetError> {
    match resolver.lookup_ip(name).await {
        Ok(answer) => Ok((answer.iter().collect(), answer.valid_until())),
        Err(e) if e.is_no_records_found() => Ok((Vec::new(), Instant::now())),
        Err(e) => Err(e),
    }
}

/// Nodes from the A and AAAA records of `name`, on `port`.
async fn addresses(resolver: &TokioResolver, name: &str, port: u16) -> Result<Resolved, String> {
    let name = Name::from_utf8(name).map_err(|e| e.to_string())?;
    let (ips, valid_until) = ips(resolver, name).await.map_err(|e| e.to_string())?;
    let mut nodes: Vec<Node> = Vec::new();
    for ip in ips {
        let address = SocketAddr::new(ip, port).to_string();
        if !nodes.iter().any(|n| n.id == address) {
            nodes.push(Node::new(address.clone(), address));
        }
    }
    Ok(Resolved {
        nodes,
        valid_for: valid_until.saturating_duration_since(Instant::now()),
    })
}

/// Nodes from the SRV records of `name`: each target's addresses on the record's port.
async fn srv(resolver: &TokioResolver, name: &str) -> Result<Resolved, String> {
    let name = Name::from_utf8(name).map_err(|e| e.to_string())?;
    let answer = match resolver.srv_lookup(name).await {
        Ok(answer) => answer,
        Err(e) if e.is_no_records_found() => {
            return Ok(Resolved {
                nodes: Vec::new(),
                valid_for: Duration::ZERO,
            });
        }
        Err(e) => return Err(e.to_string()),
    };
    let records: Vec<_> = answer
        .answers()
        .iter()
        .filter_map(|record| match &record.data {
            // A target of "." says the service is not available here.
            RData::SRV(srv) if !srv.target.is_root() => Some(srv.clone()),
            _ => None,
        })
        .collect();
    // Each target once, all at the same time.
    let mut targets: Vec<Name> = records.iter().map(|r| r.target.clone()).collect();
    targets.sort();
    targets.dedup();
    let found = futures_util::future::join_all(targets.iter().map(|target| async move {
        ips(resolver, target.clone())
            .await
            .map_err(|e| format!("A/AAAA records of SRV target {target}: {e}"))
    }))
    .await;
    let mut valid_until = answer.valid_until();
    let mut addresses: BTreeMap<&Name, Vec<IpAddr>> = BTreeMap::new();
    for (target, found) in targets.iter().zip(found) {
        let (ips, until) = found?;
        if ips.is_empty() {
            tracing::debug!(%target, "an SRV target has no address; left out");
        }
        valid_until = valid_until.min(until);
        addresses.insert(target, ips);
    }
    let mut nodes: Vec<Node> = Vec::new();
    for record in &records {
        for ip in addresses.get(&record.target).into_iter().flatten() {
            let address = SocketAddr::new(*ip, record.port).to_string();
            if nodes.iter().any(|n| n.id == address) {
                continue;
            }
            nodes.push(
                Node::new(address.clone(), address)
                    .with_metadata(WEIGHT, record.weight.to_string())
                    .with_metadata(SRV_PRIORITY, record.priority.to_string()),
            );
        }
    }
    Ok(Resolved {
        nodes,
        valid_for: valid_until.saturating_duration_since(Instant::now()),
    })
}

/// A watch of one service: it resolves again when the last answer expires.
struct Following {
    registry: DnsRegistry,
    service: String,
    next: tokio::time::Instant,
}

impl Follow for Following {
    async fn next(&mut self) -> Result<Vec<Node>, RegistryError> {
        tokio::time::sleep_until(self.next).await;
        let resolved = self.registry.resolve(&self.service).await?;
        self.next = self.registry.next_resolution(resolved.valid_for);
        Ok(resolved.nodes)
    }
}

impl DnsRegistry {
    /// When a watch resolves again after an answer valid for `valid_for`.
    fn next_resolution(&self, valid_for: Duration) -> tokio::time::Instant {
        tokio::time::Instant::now() + valid_for.max(self.min_interval)
    }
}

impl Registry for DnsRegistry {
    /// Succeeds without doing anything: the platform publishes the DNS records.
    fn register<'a>(&'a self, registration: Registration<'a>) -> RegistryFuture<'a, ()> {
        let Registration { service, node, .. } = registration;
        tracing::debug!(%service, node = %node.id, "DNS registry: nothing to register, the platform publishes the records");
        Box::pin(std::future::ready(Ok(())))
    }

    /// Succeeds without doing anything: the platform withdraws the DNS records.
    fn deregister<'a>(&'a self, service: &'a str, node_id: &'a str) -> RegistryFuture<'a, ()> {
        tracing::debug!(%service, node = %node_id, "DNS registry: nothing to deregister, the platform withdraws the records");
        Box::pin(std::future::ready(Ok(())))
    }

    fn lookup<'a>(&'a self, service: &'a str) -> RegistryFuture<'a, Vec<Node>> {
        Box::pin(async move { Ok(self.resolve(service).await?.nodes) })
    }

    fn watch(&self, service: &str) -> Watch {
        let (registry, service) = (self.clone(), service.to_owned());
        follow(async move {
            let resolved = registry.resolve(&service).await?;
            let next = registry.next_resolution(resolved.valid_for);
            let following = Following {
                registry,
                service,
                next,
            };
            Ok((following, resolved.nodes))
        })
    }
}

impl std::fmt::Debug for DnsRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsRegistry")
            .field("records", &self.records)
            .field("servers", &self.servers)
            .field("min_interval", &self.min_interval)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dns_name_is_the_service_name_unless_suffixed_or_mapped() {
        let plain = DnsRegistry::a_records(8080);
        assert_eq!(plain.dns_name("user"), "user");
        let suffixed = plain.clone().domain(".default.svc.cluster.local");
        assert_eq!(suffixed.dns_name("user"), "user.default.svc.cluster.local");
        let mapped = suffixed.map_name(|s| format!("_grpc._tcp.{s}.example.com."));
        assert_eq!(mapped.dns_name("user"), "_grpc._tcp.user.example.com.");
    }

    #[test]
    fn name_servers_are_ips_with_port_53_unless_given() {
        let registry = DnsRegistry::srv()
            .name_servers(" 10.0.0.1, 127.0.0.1:5353,,[::1]:54 ,::2")
            .expect("all well formed");
        let expected: Vec<SocketAddr> = ["10.0.0.1:53", "127.0.0.1:5353", "[::1]:54", "[::2]:53"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(registry.servers, expected);
        let refused = DnsRegistry::srv()
            .name_servers("127.0.0.1,dns.example.com:53")
            .unwrap_err();
        assert!(
            matches!(&refused, RegistryError::Invalid(why) if why.contains("\"dns.example.com:53\"")),
            "{refused}"
        );
    }

    #[tokio::test]
    async fn registering_and_deregistering_succeed_and_change_nothing() {
        let registry = DnsRegistry::a_records(1).name_server("127.0.0.1:9".parse().unwrap());
        let node = Node::new("a", "127.0.0.1:1");
        registry
            .register(Registration::new("svc", &node, Duration::from_secs(1)))
            .await
            .expect("registering is a no-op");
        registry
            .deregister("svc", "a")
            .await
            .expect("deregistering is a no-op");
    }

    #[tokio::test]
    async fn without_name_servers_the_system_configuration_answers() {
        // `localhost` comes from /etc/hosts (or the resolver itself): nothing leaves the host.
        let nodes = DnsRegistry::a_records(80)
            .lookup("localhost")
            .await
            .expect("the system configuration is read");
        assert!(nodes.iter().any(|n| n.id == "127.0.0.1:80"), "{nodes:?}");
    }
}
