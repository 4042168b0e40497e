//! The in-memory registry: the default, shared by everything in one process.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, RwLock};
use std::time::Instant;

use tokio::sync::watch;

use super::backend::{Follow, follow};
use super::{Node, Registration, Registry, RegistryError, RegistryFuture, Watch};

/// A registry held in memory; nodes expire when their TTL passes without a refresh.
#[derive(Debug, Clone, Default)]
pub struct MemoryRegistry {
    services: Arc<RwLock<HashMap<String, Entry>>>,
}

#[derive(Debug)]
struct Entry {
    nodes: Vec<(Node, Instant)>,
    /// Bumped on every registration change, to wake watchers.
    changed: watch::Sender<u64>,
}

impl Default for Entry {
    fn default() -> Self {
        Self {
            nodes: Vec::new(),
            changed: watch::Sender::new(0),
        }
    }
}

impl MemoryRegistry {
    /// An empty registry of its own.
    pub fn new() -> Self {
        Self::default()
    }

    /// The process-wide registry that services and clients use unless told otherwise, so
    /// a server and a client in one process find each other with no setup.
    pub fn global() -> Self {
        static GLOBAL: LazyLock<MemoryRegistry> = LazyLock::new(MemoryRegistry::new);
        GLOBAL.clone()
    }

    /// Changes the nodes of `service` and wakes its watchers.
    fn update(&self, service: &str, change: impl FnOnce(&mut Vec<(Node, Instant)>)) {
        let mut services = self.services.write().unwrap_or_else(|e| e.into_inner());
        let entry = services.entry(service.to_owned()).or_default();
        change(&mut entry.nodes);
        entry.changed.send_modify(|n| *n += 1);
    }

    /// The live nodes of `service`, when the next one expires, and a receiver woken by
    /// changes (subscribed before reading, so no change is missed).
    fn snapshot(&self, service: &str) -> (Vec<Node>, Option<Instant>, watch::Receiver<u64>) {
        let mut services = self.services.write().unwrap_or_else(|e| e.into_inner());
        let entry = services.entry(service.to_owned()).or_default();
        let now = Instant::now();
        entry.nodes.retain(|(_, expires)| *expires > now);
        let next_expiry = entry.nodes.iter().map(|(_, e)| *e).min();
        let nodes = entry.nodes.iter().map(|(n, _)| n.clone()).collect();
        (nodes, next_expiry, entry.changed.subscribe())
    }
}

impl Registry for MemoryRegistry {
    fn register<'a>(&'a self, registration: Registration<'a>) -> RegistryFuture<'a, ()> {
        let Registration {
            service, node, ttl, ..
        } = registration;
        let expires = Instant::now() + ttl;
        self.update(service, |nodes| {
            match nodes.iter_mut().find(|(n, _)| n.id == node.id) {
                Some(slot) => *slot = (node.clone(), expires),
                None => nodes.push((node.clone(), expires)),
            }
        });
        Box::pin(std::future::ready(Ok(())))
    }

    fn deregister<'a>(&'a self, service: &'a str, node_id: &'a str) -> RegistryFuture<'a, ()> {
        self.update(service, |nodes| nodes.retain(|(n, _)| n.id != node_id));
        Box::pin(std::future::ready(Ok(())))
    }

    fn lookup<'a>(&'a self, service: &'a str) -> RegistryFuture<'a, Vec<Node>> {
        Box::pin(std::future::ready(Ok(self.snapshot(service).0)))
    }

    fn watch(&self, service: &str) -> Watch {
        let (registry, service) = (self.clone(), service.to_owned());
        follow(async move {
            let (nodes, next_expiry, changed) = registry.snapshot(&service);
            let following = Following {
                registry,
                service,
                next_expiry,
                changed,
            };
            Ok((following, nodes))
        })
    }
}

/// A watch of one service: woken by a change or by the next expiry.
struct Following {
    registry: MemoryRegistry,
    service: String,
    next_expiry: Option<Instant>,
    changed: watch::Receiver<u64>,
}

impl Follow for Following {
    async fn next(&mut self) -> Result<Vec<Node>, RegistryError> {
        let expiry = async {
            match self.next_expiry {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = self.changed.changed() => {}
            _ = expiry => {}
        }
        let (nodes, next_expiry, changed) = self.registry.snapshot(&self.service);
        (self.next_expiry, self.changed) = (next_expiry, changed);
        Ok(nodes)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures_util::StreamExt;

    use super::*;

    fn ids(nodes: &[Node]) -> Vec<&str> {
        nodes.iter().map(|n| n.id.as_str()).collect()
    }

    /// Registers node `id` of `svc` at `address` for `ttl`.
    async fn put(r: &MemoryRegistry, id: &str, address: &str, ttl: Duration) {
        let node = Node::new(id, address);
        r.register(Registration::new("svc", &node, ttl))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn registered_nodes_are_found_until_deregistered() {
        let r = MemoryRegistry::new();
        let ttl = Duration::from_secs(60);
        put(&r, "a", "127.0.0.1:1", ttl).await;
        put(&r, "b", "127.0.0.1:2", ttl).await;
        assert_eq!(ids(&r.lookup("svc").await.unwrap()), ["a", "b"]);
        r.deregister("svc", "a").await.unwrap();
        assert_eq!(ids(&r.lookup("svc").await.unwrap()), ["b"]);
        assert!(r.lookup("other").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn nodes_expire_after_their_ttl_unless_refreshed() {
        let r = MemoryRegistry::new();
        let a = Node::new("a", "127.0.0.1:1");
        r.register(Registration::new("svc", &a, Duration::from_millis(30)))
            .await
            .unwrap();
        put(&r, "b", "127.0.0.1:2", Duration::from_secs(60)).await;
        assert_eq!(r.lookup("svc").await.unwrap().len(), 2);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(ids(&r.lookup("svc").await.unwrap()), ["b"]);
    }

    #[tokio::test]
    async fn watch_reports_the_start_then_registrations_removals_and_expiry() {
        let r = MemoryRegistry::new();
        let ttl = Duration::from_secs(60);
        put(&r, "a", "127.0.0.1:1", ttl).await;
        let mut watch = r.watch("svc");
        let first = watch.next().await.unwrap().unwrap();
        assert_eq!(ids(&first.nodes), ["a"]);

        put(&r, "b", "127.0.0.1:2", Duration::from_millis(40)).await;
        let added = watch.next().await.unwrap().unwrap();
        assert_eq!(
            (ids(&added.nodes), ids(&added.added)),
            (vec!["a", "b"], vec!["b"])
        );

        let expired = watch.next().await.unwrap().unwrap();
        assert_eq!(
            (ids(&expired.nodes), ids(&expired.removed)),
            (vec!["a"], vec!["b"])
        );

        r.deregister("svc", "a").await.unwrap();
        let removed = watch.next().await.unwrap().unwrap();
        assert!(removed.nodes.is_empty());
        assert_eq!(ids(&removed.removed), ["a"]);
    }
}
