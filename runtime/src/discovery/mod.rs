//! Discovery and load balancing: where the nodes of a service are ([`Registry`], kept
//! current by a cache that follows its watch) and which one a call goes to
//! ([`Selector`]).

mod backend;
mod cache;
#[cfg(feature = "consul")]
mod consul;
#[cfg(feature = "dns")]
mod dns;
#[cfg(feature = "etcd")]
mod etcd;
mod filter;
#[cfg(feature = "mdns")]
mod mdns;
mod memory;
mod selector;
mod strategy;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use futures_util::Stream;

pub use crate::call::Node;
pub(crate) use cache::{Cache, Nodes};
#[cfg(feature = "consul")]
pub use consul::ConsulRegistry;
#[cfg(feature = "dns")]
pub use dns::{DnsRegistry, SRV_PRIORITY};
#[cfg(feature = "etcd")]
pub use etcd::EtcdRegistry;
pub use filter::{ENDPOINTS, Filtered};
#[cfg(feature = "mdns")]
pub use mdns::MdnsRegistry;
pub use memory::MemoryRegistry;
pub use selector::{FnSelector, Outcome, Selector, selector_fn};
pub use strategy::{ConsistentHash, LeastRequests, Random, RoundRobin, WEIGHT, Weighted};

/// Why a registry operation failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// The registry backend could not be reached, did not answer in time, or answered with
    /// an error: worth trying again later.
    #[error("registry unavailable: {0}")]
    Unavailable(String),
    /// What was given cannot be used as it is (an address that does not parse, a node the
    /// backend cannot carry): trying again will not help.
    #[error("invalid for the registry: {0}")]
    Invalid(String),
}

/// What a registry operation returns: a future that may borrow the registry and the
/// arguments.
pub type RegistryFuture<'a, T> =
    Pin<Box<dyn Future<Output = Result<T, RegistryError>> + Send + 'a>>;

/// A stream of a service's changes, starting with its nodes at the time of the call.
pub type Watch = Pin<Box<dyn Stream<Item = Result<Change, RegistryError>> + Send + 'static>>;

/// A change in the nodes of one service: all nodes now, and which came and went.
///
/// A node whose address or metadata changed is both removed (as it was) and added (as it
/// is), so whoever holds a connection to the old address knows to drop it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Change {
    /// Every live node after the change.
    pub nodes: Vec<Node>,
    /// Nodes that appeared (or changed).
    pub added: Vec<Node>,
    /// Nodes that left (or changed: as they were).
    pub removed: Vec<Node>,
}

impl Change {
    /// The change from `before` to `after`, or `None` if they hold the same nodes.
    /// Backends that only see whole snapshots (DNS, polling) build their watch with this.
    pub fn between(before: &[Node], after: Vec<Node>) -> Option<Self> {
        let added: Vec<Node> = after
            .iter()
            .filter(|n| !before.contains(n))
            .cloned()
            .collect();
        let removed: Vec<Node> = before
            .iter()
            .filter(|n| !after.contains(n))
            .cloned()
            .collect();
        (!added.is_empty() || !removed.is_empty()).then_some(Self {
            nodes: after,
            added,
            removed,
        })
    }
}

/// One node's registration: what [`Registry::register`] is asked to keep (more may be
/// added, so build it with [`Registration::new`]).
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Registration<'a> {
    /// The service the node serves (`user.service`).
    pub service: &'a str,
    /// The node.
    pub node: &'a Node,
    /// How long the registration lives unless renewed.
    pub ttl: Duration,
}

impl<'a> Registration<'a> {
    /// `node` of `service`, for `ttl`.
    pub fn new(service: &'a str, node: &'a Node, ttl: Duration) -> Self {
        Self { service, node, ttl }
    }
}

/// Where services register their nodes and clients find them.
pub trait Registry: Send + Sync + 'static {
    /// Registers (or refreshes) a node under its service; it expires after the
    /// registration's TTL unless registered again.
    fn register<'a>(&'a self, registration: Registration<'a>) -> RegistryFuture<'a, ()>;

    /// Removes `node_id` from `service`.
    fn deregister<'a>(&'a self, service: &'a str, node_id: &'a str) -> RegistryFuture<'a, ()>;

    /// The live nodes of `service` (empty if none).
    fn lookup<'a>(&'a self, service: &'a str) -> RegistryFuture<'a, Vec<Node>>;

    /// The nodes of `service` as they change: first every node at the time of the call
    /// (possibly none), then one [`Change`] per change. The stream ends or fails when the
    /// backend loses track; the client's registry cache then keeps the last nodes and
    /// watches again.
    fn watch(&self, service: &str) -> Watch;
}

/// A shared registry is a registry.
impl<R: Registry + ?Sized> Registry for std::sync::Arc<R> {
    fn register<'a>(&'a self, registration: Registration<'a>) -> RegistryFuture<'a, ()> {
        (**self).register(registration)
    }

    fn deregister<'a>(&'a self, service: &'a str, node_id: &'a str) -> RegistryFuture<'a, ()> {
        (**self).deregister(service, node_id)
    }

    fn lookup<'a>(&'a self, service: &'a str) -> RegistryFuture<'a, Vec<Node>> {
        (**self).lookup(service)
    }

    fn watch(&self, service: &str) -> Watch {
        (**self).watch(service)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_node_is_both_removed_and_added() {
        let a = Node::new("a", "127.0.0.1:1");
        let b = Node::new("b", "127.0.0.1:2");
        let b_moved = Node::new("b", "127.0.0.1:3");
        let change = Change::between(&[a.clone(), b.clone()], vec![a.clone(), b_moved.clone()])
            .expect("b changed");
        assert_eq!(change.added, [b_moved]);
        assert_eq!(change.removed, [b]);
        assert!(Change::between(std::slice::from_ref(&a), vec![a.clone()]).is_none());
    }
}
