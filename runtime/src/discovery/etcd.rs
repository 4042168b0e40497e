//! [`EtcdRegistry`]: nodes kept in etcd (v3 API) the way go-micro's etcd registry keeps
//! them: one key per node, `{prefix}{service}/{node id}`, whose value is the node as JSON
//! and which is bound to a lease of the registration's TTL, so a node whose process dies
//! disappears when its lease runs out.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{
    Client, ConnectOptions, EventType, GetOptions, KeyValue, PutOptions, WatchOptions, WatchStream,
};
use serde::{Deserialize, Serialize};
use tokio::sync::OnceCell;

use super::backend::{Follow, Named, follow, whole_seconds};
use super::{Node, Registration, Registry, RegistryError, RegistryFuture, Watch};
use crate::call::address_list;

/// go-micro's key prefix.
const DEFAULT_PREFIX: &str = "/micro/registry/";

/// How long one etcd request may take before the registry reports etcd unavailable.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// A registry in etcd: one key per node, `{prefix}{service}/{node id}` (prefix
/// `/micro/registry/` unless [`with_prefix`](Self::with_prefix) says otherwise), its value
/// the node's id, address and metadata as JSON, bound to a lease of the registration's TTL.
///
/// Registering a node again (the service's heartbeat) refreshes its lease rather than
/// granting a new one: the registry remembers the lease of each node it registered, keeps
/// it alive once and writes the key again under it. If etcd no longer knows the lease
/// (it expired, or etcd lost its data) or the TTL changed, a new lease is granted and the
/// old one revoked. Deregistering deletes the key and revokes the lease.
///
/// Every etcd request is given 5 s; a failure, a timeout or an unreachable etcd is a
/// [`RegistryError::Unavailable`] naming the endpoints and the operation. A watch ends
/// with such an error when its etcd stream breaks (the client's registry cache then keeps
/// the last nodes and watches again).
///
/// Clones share the connection and the leases.
#[derive(Clone)]
pub struct EtcdRegistry {
    /// Made by [`connect`](Self::connect), or on first use after [`lazy`](Self::lazy).
    client: Arc<OnceCell<Client>>,
    endpoints: Arc<[String]>,
    /// The endpoints, for error messages.
    named: Named,
    prefix: Arc<str>,
    /// The lease of each node this registry registered, by (service, node id).
    /// Held across a whole register or deregister, so two registrations of one node
    /// cannot both grant a lease.
    leases: Arc<tokio::sync::Mutex<HashMap<(String, String), Lease>>>,
}

/// A lease granted for one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Lease {
    id: i64,
    /// The TTL in seconds it was asked for (etcd may have raised it to its minimum).
    ttl: i64,
}

/// A node as stored in etcd.
#[derive(Serialize, Deserialize)]
struct Stored {
    id: String,
    address: String,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
}

impl EtcdRegistry {
    /// A registry in the etcd cluster at `endpoints` (`http://host:port`, or `host:port`).
    ///
    /// Connections are made on first use, so etcd need not be up yet: until it is,
    /// operations fail with [`RegistryError::Unavailable`]. Fails only if an endpoint
    /// is malformed or the list is empty.
    pub async fn connect<E: AsRef<str>, S: AsRef<[E]>>(
        endpoints: S,
    ) -> Result<Self, RegistryError> {
        let registry = Self::lazy(endpoints);
        registry.client().await?;
        Ok(registry)
    }

    /// Like [`connect`](Self::connect), for code that cannot wait (configuration read
    /// when a service is built): the client is made by the first operation, and a
    /// malformed endpoint fails every operation with [`RegistryError::Unavailable`].
    pub fn lazy<E: AsRef<str>, S: AsRef<[E]>>(endpoints: S) -> Self {
        let endpoints: Arc<[String]> = endpoints
            .as_ref()
            .iter()
            .map(|e| e.as_ref().to_owned())
            .collect();
        Self {
            client: Arc::default(),
            named: Named::new("etcd", endpoints.join(",")),
            endpoints,
            prefix: DEFAULT_PREFIX.into(),
            leases: Arc::default(),
        }
    }

    /// The registry `MICRO_REGISTRY=etcd` names: the endpoints of a comma-separated list,
    /// `http://127.0.0.1:2379` when empty.
    pub(crate) fn from_addresses(addresses: &str) -> Result<Self, String> {
        let mut endpoints: Vec<&str> = address_list(addresses).collect();
        if endpoints.is_empty() {
            endpoints.push("http://127.0.0.1:2379");
        }
        Ok(Self::lazy(&endpoints))
    }

    /// The etcd client, made on first use.
    async fn client(&self) -> Result<Client, RegistryError> {
        let make = async {
            let options = ConnectOptions::new()
                .with_connect_timeout(REQUEST_TIMEOUT)
                // Detects a watch whose connection died silently.
                .with_keep_alive(Duration::from_secs(10), REQUEST_TIMEOUT)
                .with_keep_alive_while_idle(true);
            Client::connect(&*self.endpoints, Some(options)).await
        };
        let client = self
            .named
            .within(
                "connect",
                REQUEST_TIMEOUT,
                self.client.get_or_try_init(|| make),
            )
            .await?;
        Ok(client.clone())
    }

    /// Keeps nodes under `prefix` instead of `/micro/registry/` (a `/` is appended if it
    /// does not end with one).
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        let mut prefix = prefix.into();
        if !prefix.ends_with('/') {
            prefix.push('/');
        }
        self.prefix = prefix.into();
        self
    }

    /// The prefix of every key of `service`.
    fn service_prefix(&self, service: &str) -> String {
        format!("{}{service}/", self.prefix)
    }

    /// The key of one node.
    fn key(&self, service: &str, node_id: &str) -> String {
        format!("{}{service}/{node_id}", self.prefix)
    }

    /// Runs one etcd request (`call` on a client) with the time limit, naming `what` if
    /// it fails.
    async fn request<T, F, Fut>(&self, what: String, call: F) -> Result<T, RegistryError>
    where
        F: FnOnce(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let client = self.client().await?;
        self.named.within(what, REQUEST_TIMEOUT, call(client)).await
    }

    async fn register_node(&self, registration: Registration<'_>) -> Result<(), RegistryError> {
        let Registration {
            service, node, ttl, ..
        } = registration;
        let key = self.key(service, &node.id);
        let value = serde_json::to_vec(&Stored {
            id: node.id.clone(),
            address: node.address.clone(),
            metadata: node.metadata.clone(),
        })
        .map_err(|e| RegistryError::Unavailable(format!("encoding node {}: {e}", node.id)))?;
        let ttl = i64::try_from(whole_seconds(ttl)).unwrap_or(i64::MAX);
        let slot = (service.to_owned(), node.id.clone());
        let mut leases = self.leases.lock().await;

        // The heartbeat: the lease this registry granted is still there.
        if let Some(lease) = leases.get(&slot).copied()
            && lease.ttl == ttl
        {
            match self.refresh(lease.id, &key, &value).await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    tracing::debug!(%key, lease = lease.id, error = %e, "refreshing the lease failed; granting a new one");
                }
            }
        }
        let granted = self
            .request(
                format!("grant a {ttl}s lease for {key}"),
                |mut client| async move { client.lease_grant(ttl, None).await },
            )
            .await?;
        let lease = Lease {
            id: granted.id(),
            ttl,
        };
        if let Err(e) = self.put(&key, &value, lease.id).await {
            self.revoke(lease.id).await;
            return Err(e);
        }
        if let Some(old) = leases.insert(slot, lease) {
            self.revoke(old.id).await;
        }
        Ok(())
    }

    /// Keeps lease `id` alive once and writes `key` again under it (so a key deleted by
    /// someone else, or a node whose address changed, is current again).
    async fn refresh(&self, id: i64, key: &str, value: &[u8]) -> Result<(), RegistryError> {
        // Fails if etcd no longer knows the lease; dropping the keeper ends the stream.
        self.request(
            format!("keep lease {id:x} of {key} alive"),
            |mut client| async move { client.lease_keep_alive(id).await },
        )
        .await?;
        self.put(key, value, id).await
    }

    async fn put(&self, key: &str, value: &[u8], lease: i64) -> Result<(), RegistryError> {
        self.request(format!("put {key}"), |mut client| async move {
            client
                .put(key, value, Some(PutOptions::new().with_lease(lease)))
                .await
        })
        .await
        .map(drop)
    }

    /// Revokes lease `id`, logging a failure (an unrevoked lease expires by itself).
    async fn revoke(&self, id: i64) {
        if let Err(e) = self
            .request(format!("revoke lease {id:x}"), |mut client| async move {
                client.lease_revoke(id).await
            })
            .await
        {
            tracing::debug!(error = %e, "revoking a lease failed; it will expire");
        }
    }

    async fn deregister_node(&self, service: &str, node_id: &str) -> Result<(), RegistryError> {
        let key = self.key(service, node_id);
        let slot = (service.to_owned(), node_id.to_owned());
        let mut leases = self.leases.lock().await;
        self.request(format!("delete {key}"), |mut client| async move {
            client.delete(key.as_str(), None).await
        })
        .await?;
        if let Some(lease) = leases.remove(&slot) {
            self.revoke(lease.id).await;
        }
        Ok(())
    }

    /// The nodes of `service` by key, and the etcd revision they were read at.
    async fn nodes(&self, service: &str) -> Result<(BTreeMap<Vec<u8>, Node>, i64), RegistryError> {
        let prefix = self.service_prefix(service);
        let mut answer = self
            .request(format!("get {prefix}*"), |mut client| async move {
                client
                    .get(prefix.as_str(), Some(GetOptions::new().with_prefix()))
                    .await
            })
            .await?;
        let revision = answer.header().map_or(0, |h| h.revision());
        let nodes = answer
            .take_kvs()
            .iter()
            .filter_map(|kv| Some((kv.key().to_vec(), decode(kv)?)))
            .collect();
        Ok((nodes, revision))
    }

    /// The current nodes of `service` and an etcd watch of its keys from just after them.
    async fn start_watch(
        &self,
        service: &str,
    ) -> Result<(BTreeMap<Vec<u8>, Node>, WatchStream), RegistryError> {
        let (nodes, revision) = self.nodes(service).await?;
        let prefix = self.service_prefix(service);
        let stream = self
            .request(format!("watch {prefix}*"), |mut client| async move {
                client
                    .watch(
                        prefix.as_str(),
                        Some(
                            WatchOptions::new()
                                .with_prefix()
                                .with_start_revision(revision + 1),
                        ),
                    )
                    .await
            })
            .await?;
        Ok((nodes, stream))
    }

    /// The error that ends a watch of `service`.
    fn watch_broke(&self, service: &str, why: impl std::fmt::Display) -> RegistryError {
        let operation = format!("watch {}*", self.service_prefix(service));
        self.named.unavailable(operation, why)
    }
}

/// The node stored in `kv`, or `None` (with a warning) if its value is not one.
fn decode(kv: &KeyValue) -> Option<Node> {
    match serde_json::from_slice::<Stored>(kv.value()) {
        Ok(stored) => Some(Node {
            id: stored.id,
            address: stored.address,
            metadata: stored.metadata,
        }),
        Err(e) => {
            tracing::warn!(key = %String::from_utf8_lossy(kv.key()), error = %e, "skipping a registry entry that is not a node");
            None
        }
    }
}

/// A watch of one service: etcd's event stream, and the nodes it has reported, by key.
struct Following {
    registry: EtcdRegistry,
    service: String,
    stream: WatchStream,
    nodes: BTreeMap<Vec<u8>, Node>,
}

impl Follow for Following {
    async fn next(&mut self) -> Result<Vec<Node>, RegistryError> {
        let broke = |why: String| self.registry.watch_broke(&self.service, why);
        let answer = match self.stream.message().await {
            Ok(Some(answer)) => answer,
            Ok(None) => return Err(broke("the stream ended".into())),
            Err(e) => return Err(broke(e.to_string())),
        };
        if answer.canceled() {
            return Err(broke(format!(
                "cancelled by etcd ({}; compacted at revision {})",
                answer.cancel_reason(),
                answer.compact_revision()
            )));
        }
        for event in answer.events() {
            let Some(kv) = event.kv() else { continue };
            let node = match event.event_type() {
                EventType::Put => decode(kv),
                EventType::Delete => None,
            };
            match node {
                Some(node) => self.nodes.insert(kv.key().to_vec(), node),
                None => self.nodes.remove(kv.key()),
            };
        }
        Ok(self.nodes.values().cloned().collect())
    }
}

impl Registry for EtcdRegistry {
    fn register<'a>(&'a self, registration: Registration<'a>) -> RegistryFuture<'a, ()> {
        Box::pin(self.register_node(registration))
    }

    fn deregister<'a>(&'a self, service: &'a str, node_id: &'a str) -> RegistryFuture<'a, ()> {
        Box::pin(self.deregister_node(service, node_id))
    }

    fn lookup<'a>(&'a self, service: &'a str) -> RegistryFuture<'a, Vec<Node>> {
        Box::pin(async move { Ok(self.nodes(service).await?.0.into_values().collect()) })
    }

    fn watch(&self, service: &str) -> Watch {
        let (registry, service) = (self.clone(), service.to_owned());
        follow(async move {
            let (nodes, stream) = registry.start_watch(&service).await?;
            let first = nodes.values().cloned().collect();
            let following = Following {
                registry,
                service,
                stream,
                nodes,
            };
            Ok((following, first))
        })
    }
}

impl std::fmt::Debug for EtcdRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdRegistry")
            .field("endpoints", &self.named)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}
