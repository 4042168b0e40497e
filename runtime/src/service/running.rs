//! [`RunningService`]: a started service, its heartbeat, and the one way it stops.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{Inner, ServiceError};
use crate::discovery::{Node, Registration};
use crate::server::RunningServer;

async fn heartbeat(inner: Arc<Inner>, node: Node) {
    let mut interval = tokio::time::interval(inner.register_interval);
    interval.tick().await;
    loop {
        interval.tick().await;
        if let Err(e) = inner
            .registry
            .register(Registration::new(&inner.name, &node, inner.register_ttl))
            .await
        {
            tracing::warn!(service = %inner.name, error = %e, "re-registering failed; will retry");
        }
    }
}

async fn shutdown_signal() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r,
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await
    }
}

/// A started service.
pub struct RunningService {
    inner: Arc<Inner>,
    node: Node,
    server: RunningServer,
    heartbeat: Option<JoinHandle<()>>,
    stop_subscribers: watch::Sender<bool>,
    subscriptions: Vec<JoinHandle<()>>,
}

impl RunningService {
    /// A service serving as `node` on `server`, its subscriptions not started yet.
    pub(super) fn new(inner: Arc<Inner>, node: Node, server: RunningServer) -> Self {
        Self {
            inner,
            node,
            server,
            heartbeat: None,
            stop_subscribers: watch::channel(false).0,
            subscriptions: Vec::new(),
        }
    }

    /// A receiver that sees `true` when the subscriptions are to stop.
    pub(super) fn stop_signal(&self) -> watch::Receiver<bool> {
        self.stop_subscribers.subscribe()
    }

    /// Keeps `task`, a started subscription, until the service stops.
    pub(super) fn add_subscription(&mut self, task: JoinHandle<()>) {
        self.subscriptions.push(task);
    }

    /// Starts re-registering the node every interval.
    pub(super) fn start_heartbeat(&mut self) {
        self.heartbeat = Some(tokio::spawn(heartbeat(
            self.inner.clone(),
            self.node.clone(),
        )));
    }

    /// The address the server is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// The node registered for this instance.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// What the health service reports, to mark the service not serving while a
    /// dependency is down, say (`None` when health is off).
    #[cfg(feature = "health")]
    pub fn health(&self) -> Option<&crate::server::HealthState> {
        self.inner.health.as_ref()
    }

    /// Serves until Ctrl-C or SIGTERM, then stops gracefully (see [`RunningService::stop`]).
    pub async fn until_signal(self) -> Result<(), ServiceError> {
        shutdown_signal().await.map_err(ServiceError::Signal)?;
        self.stop().await
    }

    /// Deregisters, stops taking messages and calls, waits for the messages and calls in
    /// flight (up to the grace period each) and flushes spans and metrics. Messages taken but not
    /// settled stay with the broker (a redelivering broker sends them again).
    pub async fn stop(self) -> Result<(), ServiceError> {
        #[cfg(feature = "health")]
        if let Some(health) = &self.inner.health {
            health.set_all_serving(false);
        }
        if let Some(heartbeat) = &self.heartbeat {
            heartbeat.abort();
        }
        let deregistered = self
            .inner
            .registry
            .deregister(&self.inner.name, &self.node.id)
            .await;
        self.stop_subscribers.send_replace(true);
        let drained = futures_util::future::join_all(self.subscriptions);
        if tokio::time::timeout(self.inner.grace_period, drained)
            .await
            .is_err()
        {
            tracing::warn!(service = %self.inner.name, "message handlers did not finish within the grace period");
        }
        // Health watches never end by themselves; the drain must not wait for them.
        #[cfg(feature = "health")]
        if let Some(health) = &self.inner.health {
            health.close();
        }
        self.server.stop().await;
        if self.inner.instrumentation.has_providers() {
            let instrumentation = self.inner.instrumentation.clone();
            let _ = tokio::task::spawn_blocking(move || instrumentation.flush()).await;
        }
        tracing::info!(service = %self.inner.name, "service stopped");
        deregistered.map_err(ServiceError::from)
    }
}

impl std::fmt::Debug for RunningService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningService")
            .field("local_addr", &self.local_addr())
            .field("node", &self.node.id)
            .finish()
    }
}
