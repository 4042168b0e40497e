//! [`MdnsRegistry`]: zero-configuration discovery between processes on one LAN.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use mdns_sd::{IfKind, ResolvedService, ServiceDaemon, ServiceEvent, ServiceInfo};
use tokio::sync::watch;
use tokio::time::Instant;

use super::backend::{Follow, Named, follow};
use super::{Node, Registration, Registry, RegistryError, RegistryFuture, Watch};
use crate::call::address_list;

/// The TXT key of the micro-otel service name.
const SERVICE_KEY: &str = "micro.service";

/// The TXT key of the node id.
const NODE_KEY: &str = "micro.node";

/// TXT keys starting with this (in any case) are the registry's, not metadata.
const RESERVED_PREFIX: &str = "micro.";

/// The longest TXT entry (`key=value`): its length is one byte (RFC 6763 §6.1).
const TXT_ENTRY_MAX: usize = 255;

/// The largest TXT record this registry announces: what fits one mDNS packet with the
/// other records of the instance (RFC 6763 §6.2).
const TXT_RECORD_MAX: usize = 1300;

/// The longest DNS label (RFC 1035 §2.3.4).
const LABEL_MAX: usize = 63;

/// How long a lookup, or the first answer of a watch, listens for answers by default:
/// `mdns-sd` queries at once and again a second later, and a responder multicasts a record
/// at most once a second (RFC 6762 §6), so a node announced just before the first query
/// may only answer the second.
const DEFAULT_BROWSE_WINDOW: Duration = Duration::from_millis(1500);

/// How long deregistering waits for the daemon to confirm its goodbye.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// A registry on multicast DNS: nodes announce themselves on the local network and
/// clients browse for them, with no server to run (go-micro's default registry).
///
/// It works as go-micro's default mdns registry does, but in standard DNS-SD (RFC 6763)
/// over multicast DNS (RFC 6762), through the `mdns-sd` crate; how a node is published is
/// told below, after the summary:
///
/// - **register** announces the node (after mDNS's probing for name conflicts, about
///   ¾ s) and answers queries for it until it is deregistered or the registry dropped.
///   Registering an unchanged node again (the service's heartbeat) sends nothing; a
///   changed address or metadata is announced again, and watchers see the node removed
///   and added. The TTL is not used: mDNS records carry their own (`mdns-sd`'s: 2 min
///   for SRV and addresses, 75 min for PTR and TXT); browsers refresh records of a live
///   node before they expire, so a node whose process died without saying goodbye
///   disappears within about 2 minutes.
/// - **deregister** sends mDNS goodbyes for a node this registry registered (other
///   responders' nodes cannot be removed: they go away when they say goodbye or expire).
/// - **lookup** browses the service's type and returns what resolved within the browse
///   window (1.5 s unless [`with_browse_window`](Self::with_browse_window) says
///   otherwise). The browse then goes on for the life of the registry, shared by every
///   lookup and watch of the service, so later lookups answer at once from what it
///   knows; mDNS backs its queries off to one an hour, and answers a browser has are
///   only refreshed before they expire.
/// - **watch** follows the same browse: first the nodes that resolved within the browse
///   window, then one [`Change`](super::Change) per change (a node resolved, changed, said goodbye or
///   expired).
///
/// Metadata travels in the TXT record, so it must fit it: keys of printable ASCII other
/// than `=`, not starting with `micro.`, and no two differing only in case (TXT keys are
/// case-insensitive); each `key=value` at most 255 bytes, and the whole record (with the
/// service name and node id) at most 1300 bytes. A node whose metadata does not fit
/// fails to register with a [`RegistryError`] saying why; nothing is truncated.
///
/// The node address must be an IP address and port (`10.0.0.5:8080`, `[fe80::1]:8080`)
/// on one of the interfaces mDNS runs on: a node is announced on an interface only with
/// addresses of that interface's subnets, and a browser resolves a node only once it has
/// its address.
///
/// **Interfaces.** [`new`](Self::new) runs on every interface `mdns-sd` finds, IPv4 and
/// IPv6, loopback included (Apple's peer-to-peer interfaces excepted), and follows
/// interfaces and addresses that come and go (checked every 30 s).
/// [`on_interfaces`](Self::on_interfaces) restricts it to the interfaces named. Either
/// way the daemon (one thread and one UDP socket per IP version on port 5353) starts on
/// first use; note that `mdns-sd` joins the mDNS multicast group on every interface as it
/// starts, before it applies the selection, though it sends nothing on the others.
///
/// Every failure is a [`RegistryError::Unavailable`]: a refused node names the node and
/// why, a daemon failure the interfaces and the operation. Clones share the daemon, the announced nodes and the browses; when the
/// last clone is dropped the daemon says goodbye for every node still registered and
/// stops.
///
/// # Publishing
///
/// Every micro-otel service has a DNS-SD service type of its own,
/// `_micro-<hash>._tcp.local.`, where `<hash>` is 8 hex digits of a hash of the exact
/// service name ([`MdnsRegistry::service_type`]); its nodes are instances of that type.
/// A lookup or a watch browses that type only, so a process hears about the nodes of
/// the services it calls and not of every micro-otel service on the LAN. A hash keeps
/// the type within DNS-SD's 15 characters whatever the name, and clear of real service
/// types (a service named `printer` announced as `_printer._tcp` would show up in print
/// dialogs); the exact service name, carried in the TXT record, tells apart the
/// unlikely two names with one hash.
///
/// (A per-service subtype of one `_micro._tcp` type, RFC 6763 §7.1, would be the textbook
/// choice, but `mdns-sd` 0.21 answers a subtype query with the parent type's PTR record,
/// which its own browser then ignores: a subtype browse only learns of instances from
/// their announcements, never from answers to its queries.)
///
/// One instance, as published:
///
/// - instance name: the node id (shortened with a hash when longer than a DNS label's
///   63 bytes), so `avahi-browse -r _micro-<hash>._tcp` lists node ids;
/// - SRV: port of the node address, on host `<node id as a host label>.local.`, whose
///   A/AAAA record is the node's IP;
/// - TXT: `micro.service=<service>`, `micro.node=<node id>`, then every metadata entry as
///   `key=value`.
#[derive(Clone)]
pub struct MdnsRegistry {
    inner: Arc<Inner>,
    window: Duration,
}

struct Inner {
    /// The interfaces asked for; `None` for all.
    interfaces: Option<Vec<String>>,
    /// The interfaces, for error messages.
    named: Named,
    /// Started by the first operation.
    daemon: Mutex<Option<ServiceDaemon>>,
    /// The nodes this registry announced, by node id.
    announced: Mutex<HashMap<String, Announced>>,
    /// One browse per service type, shared by every lookup and watch of it.
    browses: Mutex<HashMap<String, Arc<Browse>>>,
}

/// A node this registry announced.
struct Announced {
    service: String,
    node: Node,
    /// The instance's full name, as `mdns-sd` knows it.
    fullname: String,
}

/// A browse of one service type, followed by a thread of its own.
struct Browse {
    /// When the browse began: lookups answer no earlier than a window after it.
    started: Instant,
    state: watch::Sender<Browsed>,
}

/// What a browse has found.
#[derive(Debug, Default)]
struct Browsed {
    /// Resolved instances by full name: their micro-otel service and node.
    instances: BTreeMap<String, (String, Node)>,
    /// Why the browse stopped, once it has: a later lookup or watch starts another.
    ended: Option<String>,
}

impl MdnsRegistry {
    /// A registry on every network interface (see [`MdnsRegistry`] on interfaces). The
    /// mDNS daemon starts on first use.
    pub fn new() -> Self {
        Self::with_interfaces(None)
    }

    /// The registry `MICRO_REGISTRY=mdns` names: no server; the addresses list the network
    /// interfaces to run on, by name or address (`eth0,192.168.1.10`), every interface
    /// when empty.
    pub(crate) fn from_addresses(interfaces: &str) -> Result<Self, String> {
        Ok(Self::on_interfaces(address_list(interfaces)))
    }

    /// A registry on the network interfaces named (`eth0`), or having an address given
    /// (`192.168.1.10`); an empty list means every interface, like [`new`](Self::new).
    /// A name that matches no interface matches nothing (until such an interface
    /// appears). The mDNS daemon starts on first use.
    pub fn on_interfaces<I: AsRef<str>>(interfaces: impl IntoIterator<Item = I>) -> Self {
        let interfaces: Vec<String> = interfaces
            .into_iter()
            .map(|i| i.as_ref().trim().to_owned())
            .filter(|i| !i.is_empty())
            .collect();
        Self::with_interfaces((!interfaces.is_empty()).then_some(interfaces))
    }

    fn with_interfaces(interfaces: Option<Vec<String>>) -> Self {
        let named = match &interfaces {
            Some(names) => Named::on("mDNS", format_args!("interfaces {}", names.join(","))),
            None => Named::on("mDNS", "every interface"),
        };
        Self {
            inner: Arc::new(Inner {
                interfaces,
                named,
                daemon: Mutex::default(),
                announced: Mutex::default(),
                browses: Mutex::default(),
            }),
            window: DEFAULT_BROWSE_WINDOW,
        }
    }

    /// Listens `window` for answers before a lookup returns, or a watch reports the first
    /// nodes of a service (1.5 s by default). Longer finds nodes on slow or lossy networks;
    /// it only delays the first lookup and watch of a service, later ones answer from the
    /// running browse.
    pub fn with_browse_window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// An error naming the interfaces and `operation`.
    fn error(&self, operation: &str, why: impl std::fmt::Display) -> RegistryError {
        self.inner.named.unavailable(operation, why)
    }

    /// The daemon, started on first use.
    fn daemon(&self) -> Result<ServiceDaemon, RegistryError> {
        let mut slot = lock(&self.inner.daemon);
        if let Some(daemon) = &*slot {
            return Ok(daemon.clone());
        }
        let daemon = ServiceDaemon::new().map_err(|e| self.error("start the daemon", e))?;
        if let Some(names) = &self.inner.interfaces {
            let chosen: Vec<IfKind> = names
                .iter()
                .map(|name| match name.parse::<IpAddr>() {
                    Ok(ip) => IfKind::Addr(ip),
                    Err(_) => IfKind::Name(name.clone()),
                })
                .collect();
            // Applied in order, before anything is sent.
            let selected = daemon
                .disable_interface(IfKind::All)
                .and_then(|()| daemon.enable_interface(chosen));
            if let Err(e) = selected {
                let _ = daemon.shutdown();
                return Err(self.error("select the interfaces", e));
            }
        }
        *slot = Some(daemon.clone());
        Ok(daemon)
    }

    fn register_node(&self, service: &str, node: &Node) -> Result<(), RegistryError> {
        let refuse = |why: String| {
            RegistryError::Invalid(format!(
                "mDNS: cannot announce node {:?} of {service:?}: {why}",
                node.id
            ))
        };
        let info = service_info(service, node).map_err(refuse)?;
        let mut announced = lock(&self.inner.announced);
        if let Some(before) = announced.get(&node.id) {
            if before.service != service {
                return Err(refuse(format!(
                    "this registry announces it for {:?}; a node id names one node",
                    before.service
                )));
            }
            if before.node == *node {
                // The heartbeat: mDNS keeps answering for it.
                return Ok(());
            }
        }
        let fullname = info.get_fullname().to_owned();
        self.daemon()?
            .register(info)
            .map_err(|e| self.error(&format!("announce {fullname}"), e))?;
        announced.insert(
            node.id.clone(),
            Announced {
                service: service.to_owned(),
                node: node.clone(),
                fullname,
            },
        );
        Ok(())
    }

    async fn deregister_node(&self, service: &str, node_id: &str) -> Result<(), RegistryError> {
        let fullname = match lock(&self.inner.announced).entry(node_id.to_owned()) {
            Entry::Occupied(a) if a.get().service == service => a.remove().fullname,
            // Not announced here: nothing to say goodbye for.
            _ => return Ok(()),
        };
        let operation = format!("say goodbye for {fullname}");
        let done = self
            .daemon()?
            .unregister(&fullname)
            .map_err(|e| self.error(&operation, e))?;
        match tokio::time::timeout(REQUEST_TIMEOUT, done.recv_async()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(self.error(&operation, e)),
            Err(_) => Err(self.error(
                &operation,
                format!("the daemon did not answer within {REQUEST_TIMEOUT:?}"),
            )),
        }
    }

    /// The DNS-SD service type of `service`'s nodes, `_micro-<hash>._tcp.local.`: what to
    /// browse for with other mDNS tools (`avahi-browse -r _micro-<hash>._tcp`).
    pub fn service_type(service: &str) -> String {
        let hash = fnv1a(service.as_bytes());
        // Both halves folded into 32 bits: 8 hex digits.
        format!("_micro-{:08x}._tcp.local.", (hash ^ (hash >> 32)) as u32)
    }

    /// The browse of `service`'s type, started if none runs.
    fn browse(&self, service: &str) -> Result<Arc<Browse>, RegistryError> {
        let service_type = Self::service_type(service);
        let mut browses = lock(&self.inner.browses);
        if let Some(browse) = browses.get(&service_type)
            && browse.state.borrow().ended.is_none()
        {
            return Ok(browse.clone());
        }
        let operation = format!("browse {service_type}");
        let events = self
            .daemon()?
            .browse(&service_type)
            .map_err(|e| self.error(&operation, e))?;
        let browse = Arc::new(Browse {
            started: Instant::now(),
            state: watch::Sender::new(Browsed::default()),
        });
        std::thread::Builder::new()
            .name("mdns-browse".to_owned())
            .spawn({
                let browse = browse.clone();
                move || browse.follow(&events)
            })
            .map_err(|e| self.error(&operation, e))?;
        browses.insert(service_type, browse.clone());
        Ok(browse)
    }

    /// The nodes of `service` after the browse window.
    async fn lookup_nodes(&self, service: &str) -> Result<Vec<Node>, RegistryError> {
        let browse = self.browse(service)?;
        tokio::time::sleep_until(browse.started + self.window).await;
        let state = browse.state.borrow();
        self.nodes(&state, service)
    }

    /// The nodes of `service` a browse found, or why it stopped.
    fn nodes(&self, state: &Browsed, service: &str) -> Result<Vec<Node>, RegistryError> {
        if let Some(why) = &state.ended {
            let operation = format!("browse {}", Self::service_type(service));
            return Err(self.error(&operation, why));
        }
        Ok(state
            .instances
            .values()
            .filter(|(s, _)| s == service)
            .map(|(_, node)| node.clone())
            .collect())
    }
}

impl Default for MdnsRegistry {
    fn default() -> Self {
        Self::new()
    }
}

impl Browse {
    /// Keeps the state current with the daemon's events, until the browse stops.
    fn follow(&self, events: &mdns_sd::Receiver<ServiceEvent>) {
        while let Ok(event) = events.recv() {
            match event {
                ServiceEvent::ServiceResolved(resolved) => {
                    let found = decode(&resolved);
                    self.state.send_if_modified(|state| match found {
                        Some(found) => {
                            state
                                .instances
                                .insert(resolved.fullname.clone(), found.clone())
                                != Some(found)
                        }
                        None => state.instances.remove(&resolved.fullname).is_some(),
                    });
                }
                ServiceEvent::ServiceRemoved(_, fullname) => {
                    self.state
                        .send_if_modified(|state| state.instances.remove(&fullname).is_some());
                }
                ServiceEvent::SearchStopped(_) => break,
                _ => {}
            }
        }
        self.state.send_modify(|state| {
            state.ended = Some(
                "the mDNS daemon ended the browse (it shut down, or its events were not read \
                 fast enough)"
                    .to_owned(),
            );
        });
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let daemon = self.daemon.get_mut().unwrap_or_else(|e| e.into_inner());
        if let Some(daemon) = daemon.take() {
            // Says goodbye for every node still announced, then stops.
            let _ = daemon.shutdown();
        }
    }
}

/// Locks `mutex`, even if a panic poisoned it (the data stays consistent: every
/// critical section is a single update).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// `text` with `a-z0-9` kept (lowercased) and everything else made a `-`.
fn host_label(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect()
}

/// `label` if it fits a DNS label, else its start and a hash of all of it, together
/// 63 bytes: distinct long labels stay distinct.
fn fit_label(label: &str) -> String {
    if label.len() <= LABEL_MAX {
        return label.to_owned();
    }
    let hash = format!("-{:016x}", fnv1a(label.as_bytes()));
    let mut end = LABEL_MAX - hash.len();
    while !label.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{hash}", &label[..end])
}

/// The 64-bit FNV-1a hash: stable across processes and builds.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The DNS-SD instance announcing `node` of `service`, or why it cannot be.
fn service_info(service: &str, node: &Node) -> Result<ServiceInfo, String> {
    if service.is_empty() {
        return Err("the service name is empty".to_owned());
    }
    if node.id.is_empty() {
        return Err("the node id is empty".to_owned());
    }
    let address: SocketAddr = node.address.parse().map_err(|_| {
        format!(
            "its address {:?} is not an IP address and port; mDNS announces those",
            node.address
        )
    })?;
    if address.ip().is_unspecified() || address.port() == 0 {
        return Err(format!(
            "its address {} names no particular host or port",
            node.address
        ));
    }
    let txt = txt(service, node)?;
    let host = format!("{}.local.", fit_label(&host_label(&node.id)));
    ServiceInfo::new(
        &MdnsRegistry::service_type(service),
        &fit_label(&node.id),
        &host,
        address.ip(),
        address.port(),
        &txt[..],
    )
    .map_err(|e| e.to_string())
}

/// The TXT entries of `node` of `service`, checked against what a TXT record holds.
fn txt(service: &str, node: &Node) -> Result<Vec<(String, String)>, String> {
    let mut entries = vec![
        (SERVICE_KEY.to_owned(), service.to_owned()),
        (NODE_KEY.to_owned(), node.id.clone()),
    ];
    let mut keys: HashMap<String, &str> = HashMap::new();
    for (key, value) in &node.metadata {
        if key.is_empty() || !key.bytes().all(|b| (0x20..=0x7e).contains(&b) && b != b'=') {
            return Err(format!(
                "metadata key {key:?} is not one or more printable ASCII characters other \
                 than '=' (a TXT key, RFC 6763 §6.4)"
            ));
        }
        let folded = key.to_ascii_lowercase();
        if folded.starts_with(RESERVED_PREFIX) {
            return Err(format!(
                "metadata key {key:?} starts with {RESERVED_PREFIX:?}, which the mDNS \
                 registry keeps for itself"
            ));
        }
        if let Some(other) = keys.insert(folded, key) {
            return Err(format!(
                "metadata keys {other:?} and {key:?} differ only in case, and TXT keys are \
                 case-insensitive (RFC 6763 §6.4)"
            ));
        }
        entries.push((key.clone(), value.clone()));
    }
    for (key, value) in &entries {
        let size = key.len() + 1 + value.len();
        if size > TXT_ENTRY_MAX {
            return Err(format!(
                "TXT entry {key:?} (key=value) takes {size} bytes, more than the \
                 {TXT_ENTRY_MAX} one TXT string holds (RFC 6763 §6.1)"
            ));
        }
    }
    let total: usize = entries.iter().map(|(k, v)| 1 + k.len() + 1 + v.len()).sum();
    if total > TXT_RECORD_MAX {
        return Err(format!(
            "its TXT record (service name, node id and metadata) would take {total} bytes, \
             more than the {TXT_RECORD_MAX} that fit one mDNS packet (RFC 6763 §6.2)"
        ));
    }
    Ok(entries)
}

/// The micro-otel service and node a resolved instance announces, or `None` if it is not
/// a node (it lacks the registry's TXT entries or an address).
fn decode(resolved: &ResolvedService) -> Option<(String, Node)> {
    let txt = &resolved.txt_properties;
    let text = |key: &str| {
        let value = txt.get(key)?.val().unwrap_or_default();
        std::str::from_utf8(value).ok().map(str::to_owned)
    };
    let (Some(service), Some(id)) = (text(SERVICE_KEY), text(NODE_KEY)) else {
        tracing::debug!(instance = %resolved.fullname, "skipping an mDNS instance that is not a micro-otel node");
        return None;
    };
    // One address per node host; the lowest if another responder added some.
    let ip = resolved.addresses.iter().map(|a| a.to_ip_addr()).min()?;
    let metadata = txt
        .iter()
        .filter(|p| !p.key().to_ascii_lowercase().starts_with(RESERVED_PREFIX))
        .filter_map(|p| {
            let value = std::str::from_utf8(p.val().unwrap_or_default()).ok();
            if value.is_none() {
                tracing::debug!(instance = %resolved.fullname, key = p.key(), "skipping metadata that is not UTF-8");
            }
            Some((p.key().to_owned(), value?.to_owned()))
        })
        .collect();
    Some((
        service,
        Node {
            id,
            address: SocketAddr::new(ip, resolved.port).to_string(),
            metadata,
        },
    ))
}

/// A watch of one service: the shared browse's state, read again each time it changes.
struct Following {
    registry: MdnsRegistry,
    service: String,
    state: watch::Receiver<Browsed>,
}

impl Follow for Following {
    async fn next(&mut self) -> Result<Vec<Node>, RegistryError> {
        if self.state.changed().await.is_err() {
            let operation = format!("browse {}", MdnsRegistry::service_type(&self.service));
            return Err(self.registry.error(&operation, "the browse is gone"));
        }
        self.registry
            .nodes(&self.state.borrow_and_update(), &self.service)
    }
}

impl Registry for MdnsRegistry {
    fn register<'a>(&'a self, registration: Registration<'a>) -> RegistryFuture<'a, ()> {
        let Registration { service, node, .. } = registration;
        Box::pin(std::future::ready(self.register_node(service, node)))
    }

    fn deregister<'a>(&'a self, service: &'a str, node_id: &'a str) -> RegistryFuture<'a, ()> {
        Box::pin(self.deregister_node(service, node_id))
    }

    fn lookup<'a>(&'a self, service: &'a str) -> RegistryFuture<'a, Vec<Node>> {
        Box::pin(self.lookup_nodes(service))
    }

    fn watch(&self, service: &str) -> Watch {
        let (registry, service) = (self.clone(), service.to_owned());
        follow(async move {
            let browse = registry.browse(&service)?;
            let mut state = browse.state.subscribe();
            tokio::time::sleep_until(browse.started + registry.window).await;
            let nodes = registry.nodes(&state.borrow_and_update(), &service)?;
            let following = Following {
                registry,
                service,
                state,
            };
            Ok((following, nodes))
        })
    }
}

impl std::fmt::Debug for MdnsRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MdnsRegistry")
            .field("on", &self.inner.named)
            .field("browse_window", &self.window)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    //! Pure parts only: nothing here starts a daemon or touches the network (the mDNS
    //! tests run in a private network namespace, in `tests/mdns.rs`).

    use super::*;

    fn node() -> Node {
        Node::new("user.service-00ff", "127.0.0.1:5000")
    }

    fn refused(node: &Node) -> String {
        service_info("user.service", node).expect_err("refused")
    }

    #[test]
    fn each_service_has_a_dns_sd_type_of_its_own() {
        let user = MdnsRegistry::service_type("user.service");
        assert_eq!(user, MdnsRegistry::service_type("user.service"), "stable");
        let label = user
            .strip_prefix('_')
            .and_then(|t| t.strip_suffix("._tcp.local."))
            .unwrap();
        // RFC 6763 §7.2: at most 15 letters, digits and hyphens, no "--", a letter.
        assert_eq!(label.len(), 14, "{label}");
        assert!(label.starts_with("micro-"), "{label}");
        assert!(label[6..].bytes().all(|b| b.is_ascii_hexdigit()), "{label}");
        for other in ["User.service", "user.service ", "printer", &"a".repeat(300)] {
            assert_ne!(MdnsRegistry::service_type(other), user, "{other:?}");
        }
    }

    #[test]
    fn an_instance_carries_the_node_id_service_and_metadata() {
        let node = node()
            .with_metadata("zone", "eu-west-1")
            .with_metadata("Version", "2");
        let info = service_info("user.service", &node).unwrap();
        let service_type = MdnsRegistry::service_type("user.service");
        assert_eq!(info.get_type(), service_type);
        assert_eq!(
            info.get_fullname(),
            format!("user\\.service-00ff.{service_type}")
        );
        assert_eq!(info.get_hostname(), "user-service-00ff.local.");
        assert_eq!(info.get_port(), 5000);
        let txt: Vec<(&str, &str)> = info
            .get_properties()
            .iter()
            .map(|p| (p.key(), p.val_str()))
            .collect();
        assert_eq!(
            txt,
            [
                ("micro.service", "user.service"),
                ("micro.node", "user.service-00ff"),
                ("Version", "2"),
                ("zone", "eu-west-1"),
            ]
        );
    }

    #[test]
    fn a_node_id_longer_than_a_label_is_shortened_with_a_hash() {
        let id = format!("{}-0123456789abcdef", "billing.invoices.".repeat(4));
        let info = service_info("svc", &Node::new(id.as_str(), "127.0.0.1:1")).unwrap();
        let suffix = format!(".{}", MdnsRegistry::service_type("svc"));
        let instance = info.get_fullname().strip_suffix(&suffix).unwrap();
        assert_eq!(instance.replace('\\', "").len(), LABEL_MAX);
        assert_eq!(
            info.get_property_val_str(NODE_KEY),
            Some(id.as_str()),
            "the id itself travels in TXT"
        );
    }

    #[test]
    fn metadata_that_does_not_fit_a_txt_record_is_refused_not_truncated() {
        let one_too_long = node().with_metadata("blob", "x".repeat(251));
        let why = refused(&one_too_long);
        assert!(
            why.contains("\"blob\"") && why.contains("256 bytes"),
            "{why}"
        );
        service_info(
            "user.service",
            &node().with_metadata("blob", "x".repeat(250)),
        )
        .expect("255 bytes fit one TXT string");

        let mut many = node();
        for i in 0..7 {
            many = many.with_metadata(format!("k{i}"), "x".repeat(200));
        }
        let why = refused(&many);
        assert!(why.contains("1300"), "{why}");
    }

    #[test]
    fn metadata_keys_must_be_txt_keys() {
        for (key, says) in [
            ("", "printable ASCII"),
            ("a=b", "printable ASCII"),
            ("zöne", "printable ASCII"),
            ("tab\t", "printable ASCII"),
            ("micro.node", "keeps for itself"),
            ("MICRO.anything", "keeps for itself"),
        ] {
            let why = refused(&node().with_metadata(key, "v"));
            assert!(why.contains(says), "{key:?}: {why}");
        }
        let why = refused(&node().with_metadata("Zone", "a").with_metadata("zone", "b"));
        assert!(why.contains("differ only in case"), "{why}");
    }

    #[test]
    fn a_node_address_must_be_an_ip_and_port() {
        for address in ["localhost:80", "127.0.0.1", "0.0.0.0:80", "127.0.0.1:0"] {
            let why = refused(&Node::new("a", address));
            assert!(why.contains(address), "{address}: {why}");
        }
        service_info("svc", &Node::new("a", "[::1]:80")).expect("IPv6 is fine");
    }

    #[test]
    fn a_resolved_instance_decodes_to_the_node_it_announces() {
        let node = node()
            .with_metadata("zone", "eu-west-1")
            .with_metadata("empty", "")
            .with_metadata("note", "a=b; ünïcødé");
        let resolved = service_info("user.service", &node)
            .unwrap()
            .as_resolved_service();
        assert_eq!(
            decode(&resolved),
            Some(("user.service".to_owned(), node.clone()))
        );

        let foreign = ServiceInfo::new(
            "_ipp._tcp.local.",
            "printer",
            "printer.local.",
            "127.0.0.1",
            631,
            &[("rp", "queue")][..],
        )
        .unwrap()
        .as_resolved_service();
        assert_eq!(decode(&foreign), None, "not a micro-otel node");
    }
}
