//! Service discovery: where the nodes of a named service are.

mod memory;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

pub use memory::MemoryRegistry;

use crate::wrapper::BoxFuture;

/// One running instance of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Unique id of the instance, e.g. `user.service-6f1c…`.
    pub id: String,
    /// `host:port` it serves gRPC on.
    pub address: String,
    /// Free-form labels (version, zone, weight…) selectors and filters can read.
    pub metadata: BTreeMap<String, String>,
}

/// Why a registry operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The registry backend could not be reached or answered with an error.
    #[error("registry unavailable: {0}")]
    Unavailable(String),
}

/// Where services register their nodes and clients look them up.
pub trait Registry: Send + Sync + 'static {
    /// Registers (or refreshes) `node` under `service`; it expires after `ttl` unless
    /// registered again.
    fn register(
        &self,
        service: &str,
        node: &Node,
        ttl: Duration,
    ) -> BoxFuture<Result<(), RegistryError>>;

    /// Removes `node_id` from `service`.
    fn deregister(&self, service: &str, node_id: &str) -> BoxFuture<Result<(), RegistryError>>;

    /// The live nodes of `service` (empty if none).
    fn lookup(&self, service: &str) -> BoxFuture<Result<Arc<[Node]>, RegistryError>>;
}
