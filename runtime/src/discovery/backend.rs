//! What every registry backend shares, so that each backend file holds only what is its
//! own: a watch built from successive snapshots of a service's nodes ([`follow`]), the
//! errors that name the backend and the operation ([`Named`]), and TTLs in whole seconds.

// Only the backends behind features use the error and TTL helpers.
#![cfg_attr(
    not(any(
        feature = "etcd",
        feature = "dns",
        feature = "consul",
        feature = "mdns"
    )),
    allow(dead_code)
)]

use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use super::{Change, Node, RegistryError, Watch};

/// A backend's view of one service as a watch follows it, after its first snapshot.
pub(crate) trait Follow: Send + 'static {
    /// The nodes, once they may have changed since the last answer (the same nodes again
    /// are fine: [`follow`] reports only changes). An error ends the watch.
    fn next(&mut self) -> impl Future<Output = Result<Vec<Node>, RegistryError>> + Send;
}

/// The watch of what `start` opens: its first snapshot whole (every node added, none
/// removed, even when there are none), then a [`Change`] for each later snapshot that
/// differs; it ends after its first error.
pub(crate) fn follow<F: Follow>(
    start: impl Future<Output = Result<(F, Vec<Node>), RegistryError>> + Send + 'static,
) -> Watch {
    enum Watching<S, F> {
        Start(S),
        Following { source: F, nodes: Vec<Node> },
        Done,
    }
    Box::pin(futures_util::stream::unfold(
        Watching::<_, F>::Start(Box::pin(start)),
        |watching| async move {
            match watching {
                Watching::Start(start) => match start.await {
                    Ok((source, nodes)) => {
                        let first = Change {
                            added: nodes.clone(),
                            nodes: nodes.clone(),
                            removed: Vec::new(),
                        };
                        Some((Ok(first), Watching::Following { source, nodes }))
                    }
                    Err(e) => Some((Err(e), Watching::Done)),
                },
                Watching::Following { mut source, nodes } => loop {
                    match source.next().await {
                        Ok(now) => {
                            if let Some(change) = Change::between(&nodes, now) {
                                let nodes = change.nodes.clone();
                                return Some((Ok(change), Watching::Following { source, nodes }));
                            }
                        }
                        Err(e) => return Some((Err(e), Watching::Done)),
                    }
                },
                Watching::Done => None,
            }
        },
    ))
}

/// A backend as its errors name it (`etcd at http://127.0.0.1:2379`, `mDNS on eth0`),
/// shared by clones.
#[derive(Debug, Clone)]
pub(crate) struct Named(Arc<str>);

impl Named {
    /// `kind` at `address`.
    pub(crate) fn new(kind: &str, address: impl Display) -> Self {
        Self(format!("{kind} at {address}").into())
    }

    /// `kind` on `interfaces`, for a backend with no server.
    pub(crate) fn on(kind: &str, interfaces: impl Display) -> Self {
        Self(format!("{kind} on {interfaces}").into())
    }

    /// `{kind} at {address}: {operation}: {why}`, as the backend being unavailable.
    pub(crate) fn unavailable(&self, operation: impl Display, why: impl Display) -> RegistryError {
        RegistryError::Unavailable(format!("{}: {operation}: {why}", self.0))
    }

    /// What `answer` gives, or the error naming the operation: the one it fails with, or
    /// `no answer within {limit}` when it takes longer.
    pub(crate) async fn within<T, E: Display>(
        &self,
        operation: impl Display,
        limit: Duration,
        answer: impl Future<Output = Result<T, E>>,
    ) -> Result<T, RegistryError> {
        match tokio::time::timeout(limit, answer).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(e)) => Err(self.unavailable(operation, e)),
            Err(_) => Err(self.unavailable(operation, format!("no answer within {limit:?}"))),
        }
    }
}

impl Display for Named {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// `ttl` in whole seconds, rounded up, at least 1: what backends that count TTLs in
/// seconds (etcd leases, Consul checks) are given.
pub(crate) fn whole_seconds(ttl: Duration) -> u64 {
    ttl.as_secs()
        .saturating_add(u64::from(ttl.subsec_nanos() > 0))
        .max(1)
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;

    use super::*;

    /// Answers the snapshots it holds, then fails.
    struct Scripted(std::vec::IntoIter<Vec<Node>>);

    impl Follow for Scripted {
        async fn next(&mut self) -> Result<Vec<Node>, RegistryError> {
            self.0
                .next()
                .ok_or_else(|| RegistryError::Unavailable("no more".into()))
        }
    }

    #[tokio::test]
    async fn a_watch_reports_its_first_snapshot_whole_then_only_changes_then_its_error() {
        let a = Node::new("a", "127.0.0.1:1");
        let b = Node::new("b", "127.0.0.1:2");
        let later = vec![vec![a.clone()], vec![a.clone(), b.clone()], vec![b.clone()]];
        let start = async move { Ok((Scripted(later.into_iter()), vec![a.clone()])) };
        let seen: Vec<_> = follow(start).collect().await;
        let seen: Vec<_> = seen
            .into_iter()
            .map(|c| c.map(|c| (c.nodes.len(), c.added.len(), c.removed.len())))
            .collect();
        assert_eq!(seen.len(), 4, "{seen:?}");
        assert_eq!(seen[0].as_ref().ok(), Some(&(1, 1, 0)));
        assert_eq!(
            seen[1].as_ref().ok(),
            Some(&(2, 1, 0)),
            "the same nodes are no change"
        );
        assert_eq!(seen[2].as_ref().ok(), Some(&(1, 0, 1)));
        assert!(seen[3].is_err());
    }

    #[test]
    fn ttls_are_whole_seconds_rounded_up_and_never_zero() {
        assert_eq!(whole_seconds(Duration::from_millis(10)), 1);
        assert_eq!(whole_seconds(Duration::from_millis(1500)), 2);
        assert_eq!(whole_seconds(Duration::from_secs(90)), 90);
        assert_eq!(whole_seconds(Duration::ZERO), 1);
    }

    #[tokio::test]
    async fn an_operation_that_fails_or_takes_too_long_is_named_with_the_backend() {
        let named = Named::new("etcd", "http://127.0.0.1:2379");
        let failed = named
            .within("get x", Duration::from_secs(1), async {
                Err::<(), _>("refused")
            })
            .await
            .unwrap_err();
        assert_eq!(
            failed.to_string(),
            "registry unavailable: etcd at http://127.0.0.1:2379: get x: refused"
        );
        let slow = named
            .within(
                "get x",
                Duration::from_millis(10),
                std::future::pending::<Result<(), &str>>(),
            )
            .await
            .unwrap_err();
        assert!(
            slow.to_string().ends_with("get x: no answer within 10ms"),
            "{slow}"
        );
    }
}
