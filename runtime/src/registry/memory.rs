//! The in-memory registry: the default, shared by everything in one process.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, RwLock};
use std::time::{Duration, Instant};

use super::{Node, Registry, RegistryError};
use crate::wrapper::BoxFuture;

/// A registry held in memory; nodes expire when their TTL passes without a refresh.
#[derive(Debug, Clone, Default)]
pub struct MemoryRegistry {
    services: Arc<RwLock<HashMap<String, Entry>>>,
}

#[derive(Debug, Default)]
struct Entry {
    nodes: Vec<(Node, Instant)>,
    /// The live nodes as last handed out, rebuilt when nodes change or expire.
    snapshot: Option<(Arc<[Node]>, Instant)>,
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

    fn live_nodes(&self, service: &str) -> Arc<[Node]> {
        let now = Instant::now();
        if let Some(entry) = self
            .services
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(service)
        {
            if let Some((nodes, valid_until)) = &entry.snapshot
                && now < *valid_until
            {
                return nodes.clone();
            }
        } else {
            return Arc::from([]);
        }
        let mut services = self.services.write().unwrap_or_else(|e| e.into_inner());
        let Some(entry) = services.get_mut(service) else {
            return Arc::from([]);
        };
        entry.nodes.retain(|(_, expires)| *expires > now);
        let nodes: Arc<[Node]> = entry.nodes.iter().map(|(n, _)| n.clone()).collect();
        let valid_until = entry
            .nodes
            .iter()
            .map(|(_, e)| *e)
            .min()
            .unwrap_or(now + Duration::from_secs(3600));
        entry.snapshot = Some((nodes.clone(), valid_until));
        nodes
    }
}

impl Registry for MemoryRegistry {
    fn register(
        &self,
        service: &str,
        node: &Node,
        ttl: Duration,
    ) -> BoxFuture<Result<(), RegistryError>> {
        let mut services = self.services.write().unwrap_or_else(|e| e.into_inner());
        let entry = services.entry(service.to_owned()).or_default();
        let expires = Instant::now() + ttl;
        match entry.nodes.iter_mut().find(|(n, _)| n.id == node.id) {
            Some(slot) => *slot = (node.clone(), expires),
            None => entry.nodes.push((node.clone(), expires)),
        }
        entry.snapshot = None;
        Box::pin(std::future::ready(Ok(())))
    }

    fn deregister(&self, service: &str, node_id: &str) -> BoxFuture<Result<(), RegistryError>> {
        let mut services = self.services.write().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = services.get_mut(service) {
            entry.nodes.retain(|(n, _)| n.id != node_id);
            entry.snapshot = None;
        }
        Box::pin(std::future::ready(Ok(())))
    }

    fn lookup(&self, service: &str) -> BoxFuture<Result<Arc<[Node]>, RegistryError>> {
        Box::pin(std::future::ready(Ok(self.live_nodes(service))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str) -> Node {
        Node {
            id: id.into(),
            address: format!("127.0.0.1:{}", 1000 + id.len()),
            metadata: Default::default(),
        }
    }

    #[tokio::test]
    async fn registered_nodes_are_found_until_deregistered() {
        let r = MemoryRegistry::new();
        r.register("svc", &node("a"), Duration::from_secs(60))
            .await
            .unwrap();
        r.register("svc", &node("bb"), Duration::from_secs(60))
            .await
            .unwrap();
        let ids: Vec<_> = r
            .lookup("svc")
            .await
            .unwrap()
            .iter()
            .map(|n| n.id.clone())
            .collect();
        assert_eq!(ids, ["a", "bb"]);
        r.deregister("svc", "a").await.unwrap();
        let ids: Vec<_> = r
            .lookup("svc")
            .await
            .unwrap()
            .iter()
            .map(|n| n.id.clone())
            .collect();
        assert_eq!(ids, ["bb"]);
        assert!(r.lookup("other").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn nodes_expire_after_their_ttl_unless_refreshed() {
        let r = MemoryRegistry::new();
        r.register("svc", &node("a"), Duration::from_millis(30))
            .await
            .unwrap();
        r.register("svc", &node("bb"), Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(r.lookup("svc").await.unwrap().len(), 2);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let ids: Vec<_> = r
            .lookup("svc")
            .await
            .unwrap()
            .iter()
            .map(|n| n.id.clone())
            .collect();
        assert_eq!(ids, ["bb"]);
    }
}
