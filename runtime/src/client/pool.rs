//! One lazily connected HTTP/2 channel per node address, shared by all calls, behind the
//! client's tower layers if it has any.

use std::collections::BTreeMap;
use std::sync::RwLock;
use std::task::{Context as TaskContext, Poll};

use tonic::Status;
use tonic::body::Body;
use tonic::transport::{Channel, Endpoint};
use tower::util::BoxCloneSyncService;
use tower::{BoxError, Service, ServiceExt};

use crate::wrapper::{BoxHttpService, HttpStack};

/// A connection to one node: the plain channel, or the channel behind the layers.
#[derive(Clone)]
pub(crate) enum Conn {
    Plain(Channel),
    Layered(BoxHttpService),
}

/// Connections by address; a channel multiplexes every call to its node over one HTTP/2
/// connection and reconnects by itself. A sorted map: for the few nodes a client talks to,
/// comparing addresses is cheaper than hashing one per call.
#[derive(Default)]
pub(crate) struct Pool {
    layers: HttpStack,
    conns: RwLock<BTreeMap<String, Conn>>,
}

impl Pool {
    pub(crate) fn new(layers: HttpStack) -> Self {
        Self {
            layers,
            conns: RwLock::default(),
        }
    }

    /// The connection to `address` (`host:port` or a URL), created on first use.
    pub(crate) fn get(&self, address: &str) -> Result<Conn, Status> {
        if let Some(conn) = self
            .conns
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(address)
        {
            return Ok(conn.clone());
        }
        let uri = if address.starts_with("http://") || address.starts_with("https://") {
            address.to_owned()
        } else {
            format!("http://{address}")
        };
        let channel = Endpoint::from_shared(uri)
            .map_err(|e| {
                Status::invalid_argument(format!("invalid node address {address:?}: {e}"))
            })?
            .tcp_nodelay(true)
            .connect_lazy();
        let conn = if self.layers.is_empty() {
            Conn::Plain(channel)
        } else {
            Conn::Layered(
                self.layers
                    .wrap(BoxCloneSyncService::new(channel.map_err(BoxError::from))),
            )
        };
        Ok(self
            .conns
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(address.to_owned())
            .or_insert(conn)
            .clone())
    }

    /// Drops the connection to `address` (its node left the registry).
    pub(crate) fn remove(&self, address: &str) {
        let removed = self
            .conns
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(address);
        if removed.is_some() {
            tracing::debug!(%address, "closed the channel to a node that left");
        }
    }

    /// How many connections the pool holds.
    pub(crate) fn len(&self) -> usize {
        self.conns.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// The addresses with a connection, sorted.
    pub(crate) fn addresses(&self) -> Vec<String> {
        self.conns
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect()
    }
}

impl Service<http::Request<Body>> for Conn {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = futures_util::future::Either<
        futures_util::future::ErrInto<<Channel as Service<http::Request<Body>>>::Future, BoxError>,
        <BoxHttpService as Service<http::Request<Body>>>::Future,
    >;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), BoxError>> {
        match self {
            Conn::Plain(c) => c.poll_ready(cx).map_err(Into::into),
            Conn::Layered(s) => s.poll_ready(cx),
        }
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        use futures_util::TryFutureExt;
        match self {
            Conn::Plain(c) => futures_util::future::Either::Left(c.call(req).err_into()),
            Conn::Layered(s) => futures_util::future::Either::Right(s.call(req)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_channel_per_address_is_reused_and_removed_when_its_node_leaves() {
        let pool = Pool::default();
        for _ in 0..3 {
            pool.get("127.0.0.1:50051").expect("valid address");
            pool.get("http://127.0.0.1:50052").expect("valid URL");
        }
        assert_eq!(
            pool.addresses(),
            ["127.0.0.1:50051", "http://127.0.0.1:50052"]
        );
        pool.remove("127.0.0.1:50051");
        assert_eq!(pool.addresses(), ["http://127.0.0.1:50052"]);
    }

    #[tokio::test]
    async fn an_invalid_address_is_named_in_the_error() {
        let status = Pool::default()
            .get("not an address")
            .err()
            .expect("invalid");
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(
            status.message().contains("not an address"),
            "{}",
            status.message()
        );
    }
}
