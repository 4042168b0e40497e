//! One lazily connected HTTP/2 channel per node address, shared by all calls.

use std::collections::HashMap;
use std::sync::RwLock;

use tonic::Status;
use tonic::transport::{Channel, Endpoint};

/// Channels by address; a channel multiplexes every call to its node over one connection
/// and reconnects by itself.
#[derive(Debug, Default)]
pub(crate) struct Pool {
    channels: RwLock<HashMap<String, Channel>>,
}

impl Pool {
    /// The channel to `address` (`host:port` or a URL), created on first use.
    pub(crate) fn get(&self, address: &str) -> Result<Channel, Status> {
        if let Some(channel) = self
            .channels
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(address)
        {
            return Ok(channel.clone());
        }
        let uri = if address.starts_with("http://") || address.starts_with("https://") {
            address.to_owned()
        } else {
            format!("http://{address}")
        };
        let endpoint = Endpoint::from_shared(uri)
            .map_err(|e| {
                Status::invalid_argument(format!("invalid node address {address:?}: {e}"))
            })?
            .tcp_nodelay(true);
        let channel = endpoint.connect_lazy();
        self.channels
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(address.to_owned())
            .or_insert(channel.clone());
        Ok(channel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_channel_per_address_is_reused() {
        let pool = Pool::default();
        for _ in 0..3 {
            pool.get("127.0.0.1:50051").expect("valid address");
            pool.get("http://127.0.0.1:50052").expect("valid URL");
        }
        let channels = pool.channels.read().unwrap_or_else(|e| e.into_inner());
        assert_eq!(channels.len(), 2);
    }

    #[tokio::test]
    async fn an_invalid_address_is_named_in_the_error() {
        let status = Pool::default().get("not an address").unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(
            status.message().contains("not an address"),
            "{}",
            status.message()
        );
    }
}
