//! [`Cache`]: the nodes of each service a client calls, kept current by the registry's
//! watch, so that calls never wait on the registry once a service is known.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::watch;
use tokio::task::AbortHandle;

use super::{Change, Node, Registry, RegistryError};

/// The nodes of one service as last seen.
pub(crate) type Nodes = Arc<[Arc<Node>]>;

/// Called with every node that left a watched service.
type OnRemoved = Arc<dyn Fn(&Node) + Send + Sync>;

/// What the cache knows of one service.
#[derive(Debug, Clone)]
enum State {
    /// The first answer has not come yet.
    Pending,
    /// The registry has not answered yet, and failed the last time it was asked.
    Failed(RegistryError),
    /// The nodes as last seen (kept when the registry becomes unreachable).
    Known(Nodes),
}

/// Follows the services it is asked about, one watch task each, for as long as it lives.
///
/// When the registry becomes unreachable the last known nodes stay in use (and that is
/// logged once, not per call) while the watch is retried with a growing delay.
pub(crate) struct Cache {
    registry: Arc<dyn Registry>,
    services: RwLock<HashMap<String, watch::Receiver<State>>>,
    tasks: std::sync::Mutex<Vec<AbortHandle>>,
    on_removed: Option<OnRemoved>,
    retry_delay: Duration,
}

impl Cache {
    /// A cache in front of `registry`.
    pub(crate) fn new(registry: Arc<dyn Registry>) -> Self {
        Self {
            registry,
            services: RwLock::default(),
            tasks: std::sync::Mutex::default(),
            on_removed: None,
            retry_delay: Duration::from_millis(500),
        }
    }

    /// Calls `f` with each node that leaves a watched service (the client drops its
    /// connection to it).
    pub(crate) fn on_removed(mut self, f: impl Fn(&Node) + Send + Sync + 'static) -> Self {
        self.on_removed = Some(Arc::new(f));
        self
    }

    /// The nodes of `service`: from memory once the service is watched; the first call for
    /// a service waits for the registry's first answer.
    pub(crate) async fn nodes(&self, service: &str) -> Result<Nodes, RegistryError> {
        if let Some(Ok(nodes)) = self.known(service) {
            return Ok(nodes);
        }
        let mut state = self.watched(service);
        loop {
            match &*state.borrow_and_update() {
                State::Known(nodes) => return Ok(nodes.clone()),
                State::Failed(e) => return Err(e.clone()),
                State::Pending => {}
            }
            if state.changed().await.is_err() {
                return Err(RegistryError::Unavailable(format!(
                    "stopped watching {service}"
                )));
            }
        }
    }

    /// The nodes of `service` without waiting: `None` if the first answer has not come.
    pub(crate) fn known(&self, service: &str) -> Option<Result<Nodes, RegistryError>> {
        let services = self.services.read().unwrap_or_else(|e| e.into_inner());
        match &*services.get(service)?.borrow() {
            State::Known(nodes) => Some(Ok(nodes.clone())),
            State::Failed(e) => Some(Err(e.clone())),
            State::Pending => None,
        }
    }

    /// Every service known, with its number of nodes.
    pub(crate) fn node_counts(&self) -> Vec<(String, usize)> {
        let services = self.services.read().unwrap_or_else(|e| e.into_inner());
        services
            .iter()
            .filter_map(|(service, state)| match &*state.borrow() {
                State::Known(nodes) => Some((service.clone(), nodes.len())),
                _ => None,
            })
            .collect()
    }

    /// The state of `service`, starting its watch task on first use.
    fn watched(&self, service: &str) -> watch::Receiver<State> {
        let mut services = self.services.write().unwrap_or_else(|e| e.into_inner());
        if let Some(state) = services.get(service) {
            return state.clone();
        }
        let (tx, rx) = watch::channel(State::Pending);
        let task = tokio::spawn(follow(
            self.registry.clone(),
            service.to_owned(),
            tx,
            self.on_removed.clone(),
            self.retry_delay,
        ));
        self.tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(task.abort_handle());
        services.insert(service.to_owned(), rx.clone());
        rx
    }
}

impl Drop for Cache {
    fn drop(&mut self) {
        for task in self
            .tasks
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            task.abort();
        }
    }
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let services = self.services.read().unwrap_or_else(|e| e.into_inner());
        f.debug_struct("Cache")
            .field("services", &services.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Watches `service` for as long as anyone holds the state, re-watching after failures.
async fn follow(
    registry: Arc<dyn Registry>,
    service: String,
    state: watch::Sender<State>,
    on_removed: Option<OnRemoved>,
    retry_delay: Duration,
) {
    let mut seen: Option<Vec<Node>> = None;
    let mut failures = 0u32;
    loop {
        let mut changes = registry.watch(&service);
        let mut started = false;
        let error = loop {
            match changes.next().await {
                Some(Ok(change)) => {
                    if failures > 0 {
                        tracing::info!(%service, "registry reachable again");
                    }
                    failures = 0;
                    // A watch starts from the whole set: after a re-watch, what left is
                    // what was known and is not in it. Later changes name what left.
                    let removed = match (std::mem::replace(&mut started, true), &seen) {
                        (false, Some(known)) => Change::between(known, change.nodes.clone())
                            .map(|c| c.removed)
                            .unwrap_or_default(),
                        _ => change.removed,
                    };
                    if let Some(on_removed) = &on_removed {
                        removed.iter().for_each(|n| on_removed(n));
                    }
                    if seen.as_ref() != Some(&change.nodes) {
                        let nodes: Nodes = change.nodes.iter().cloned().map(Arc::new).collect();
                        state.send_replace(State::Known(nodes));
                        seen = Some(change.nodes);
                    }
                }
                Some(Err(e)) => break e,
                None => break RegistryError::Unavailable("the watch ended".into()),
            }
        };
        if state.is_closed() {
            return;
        }
        if failures == 0 {
            tracing::warn!(%service, error = %error, "registry unreachable; using the last known nodes");
        }
        state.send_if_modified(|s| match s {
            State::Known(_) => false,
            _ => {
                *s = State::Failed(error.clone());
                true
            }
        });
        failures += 1;
        // 0.5 s doubling up to 4 s: a registry back from an outage is seen within seconds.
        tokio::time::sleep(retry_delay * 2u32.pow(failures.min(3))).await;
    }
}
