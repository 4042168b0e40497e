//! [`Node`]: one running instance of a service, as registries store it and calls reach it.

use std::collections::BTreeMap;

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

impl Node {
    /// A node with no metadata.
    pub fn new(id: impl Into<String>, address: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            address: address.into(),
            metadata: BTreeMap::new(),
        }
    }

    /// The same node with one more metadata entry.
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }
}
