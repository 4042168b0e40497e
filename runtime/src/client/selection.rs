//! The selection step of the client chain, after the wrappers: picks the node a call goes
//! to from the registry cache with the selector, records it, hands the call to the
//! transport, and tells the selector how the call went.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::Either;
use opentelemetry::KeyValue;
use opentelemetry::trace::TraceContextExt;
use tonic::Status;

use super::retry::{Budget, Idempotent, RetryPolicy, retryable};
use super::transport::Transport;
use crate::call::{BoxFuture, Call, Method, Node, Target};
use crate::discovery::{Cache, Nodes, Outcome, Selector};
use crate::metrics::Attempts;
use crate::metrics::machinery::ClientState;
use crate::semconv;
use crate::wrapper::{Reply, Terminal};

/// Between the call wrappers and the transport: a wrapper sees the chosen node on the
/// reply ([`Reply::node`]); a retry gets a fresh choice per attempt. A call to a direct
/// address, or whose node a wrapper already chose, goes straight to the transport.
#[derive(Clone)]
pub(crate) struct Selection(Arc<Shared>);

struct Shared {
    cache: Cache,
    selector: Arc<dyn Selector>,
    transport: Transport,
    retry: RetryPolicy,
    budget: Budget,
    ejection: Ejection,
    /// Where each attempt is recorded, when metrics are on.
    attempts: Option<Attempts>,
}

impl Selection {
    pub(crate) fn new(
        cache: Cache,
        selector: Arc<dyn Selector>,
        transport: Transport,
        retry: RetryPolicy,
        cooling: Duration,
        attempts: Option<Attempts>,
    ) -> Self {
        Self(Arc::new(Shared {
            cache,
            selector,
            transport,
            budget: retry.new_budget(),
            retry,
            ejection: Ejection::new(cooling),
            attempts,
        }))
    }
}

/// Outlier ejection: nodes that could not be reached are left out for a cooling period.
/// Only transport failures count; a node answering errors is a working node.
struct Ejection {
    cooling: Duration,
    until: Mutex<HashMap<String, Instant>>,
    /// How many nodes are out, so that the common case takes no lock.
    count: AtomicUsize,
}

impl Ejection {
    fn new(cooling: Duration) -> Self {
        Self {
            cooling,
            until: Mutex::default(),
            count: AtomicUsize::new(0),
        }
    }

    /// Leaves `node` out for the cooling period; whether it was in until now.
    fn eject(&self, node: &Node) -> bool {
        if self.cooling.is_zero() {
            return false;
        }
        let mut until = self.until.lock().unwrap_or_else(|e| e.into_inner());
        let newly = until
            .insert(node.id.clone(), Instant::now() + self.cooling)
            .is_none();
        if newly {
            self.count.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(node = %node.id, address = %node.address, cooling = ?self.cooling, "node unreachable; left out for a while");
        }
        newly
    }

    /// The nodes to choose from: all but the ejected and the `tried`, or, if that leaves
    /// none, all but the `tried`, or else all of them.
    fn candidates(&self, nodes: &Nodes, tried: &[Arc<Node>]) -> Nodes {
        if self.count.load(Ordering::Relaxed) == 0 && tried.is_empty() {
            return nodes.clone();
        }
        let now = Instant::now();
        let mut until = self.until.lock().unwrap_or_else(|e| e.into_inner());
        until.retain(|_, t| *t > now);
        self.count.store(until.len(), Ordering::Relaxed);
        let fresh = |n: &&Arc<Node>| !tried.iter().any(|t| Arc::ptr_eq(t, n));
        let healthy: Nodes = nodes
            .iter()
            .filter(fresh)
            .filter(|n| !until.contains_key(&n.id))
            .cloned()
            .collect();
        if !healthy.is_empty() {
            return healthy;
        }
        let untried: Nodes = nodes.iter().filter(fresh).cloned().collect();
        if untried.is_empty() {
            nodes.clone()
        } else {
            untried
        }
    }
}

/// Tells the selector how the call on a node went; dropped before that (the caller gave
/// up), it says [`Outcome::Cancelled`], so that strategies counting calls in flight stay
/// right.
struct Pending<'a> {
    selector: &'a dyn Selector,
    node: Arc<Node>,
    told: bool,
}

impl Pending<'_> {
    fn tell(mut self, outcome: Outcome) -> Arc<Node> {
        self.told = true;
        self.selector.feedback(&self.node, outcome);
        self.node.clone()
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if !self.told {
            self.selector.feedback(&self.node, Outcome::Cancelled);
        }
    }
}

impl Shared {
    /// The nodes of the call's service: from the cache's memory, or (the first time) from
    /// the registry.
    async fn nodes(&self, target: &Target) -> Result<Nodes, Status> {
        let service = target.name();
        self.cache
            .nodes(service)
            .await
            .map_err(|e| Status::unavailable(format!("looking up {service}: {e}")))
    }

    fn pick(&self, call: &mut Call, nodes: &Nodes) -> Result<Arc<Node>, Status> {
        let service = call.ctx.target().map(|t| t.name()).unwrap_or_default();
        if nodes.is_empty() {
            return Err(Status::unavailable(format!(
                "service {service} has no registered nodes"
            )));
        }
        let node = self
            .selector
            .select(&call.ctx, nodes)
            .cloned()
            .ok_or_else(|| {
                Status::unavailable(format!("the selector refused every node of {service}"))
            })?;
        call.ctx.set_node(Some(node.clone()));
        Ok(node)
    }
}

impl Selection {
    /// Picks the node the call goes to (unless it is direct or already has one), sends it
    /// with `send`, tells the selector how it went, and retries on another node when the
    /// policy allows.
    pub(crate) fn run<'a, Fut>(
        &'a self,
        call: Call,
        send: impl Fn(Call) -> Fut + 'a,
    ) -> impl Future<Output = Result<Reply, Status>> + 'a
    where
        Fut: Future<Output = Result<Reply, Status>> + 'a,
    {
        if needs_pick(&call) {
            // Boxed: picking and retrying hold a copy of the call and more, which a direct
            // call's future would otherwise carry (and copy on every move) for nothing.
            Either::Right(Box::pin(self.0.run(call, send)))
        } else {
            Either::Left(send(call))
        }
    }

    /// What the machinery gauges read of this client: its cache and pool.
    pub(crate) fn state(&self) -> std::sync::Weak<dyn ClientState> {
        let shared: Arc<dyn ClientState> = self.0.clone();
        Arc::downgrade(&shared)
    }

    /// The transport behind the selection.
    pub(crate) fn transport(&self) -> &Transport {
        &self.0.transport
    }
}

impl Shared {
    /// Picks, sends and retries a call that [`needs_pick`].
    async fn run<Fut>(&self, mut call: Call, send: impl Fn(Call) -> Fut) -> Result<Reply, Status>
    where
        Fut: Future<Output = Result<Reply, Status>>,
    {
        let Some(target) = call.ctx.target().cloned() else {
            return Err(Status::internal("a call to pick a node for has no target"));
        };
        let nodes = match self.cache.known(target.name()) {
            Some(Ok(nodes)) => nodes,
            _ => self.nodes(&target).await?,
        };
        let idempotent = call.ctx.method().is_some_and(|m| m.is_idempotent())
            || call.ctx.extensions().get::<Idempotent>().is_some();
        // The call's span, kept only when it records: it gets the node that answered.
        let recording = call.ctx.otel().has_active_span() && call.ctx.otel().span().is_recording();
        let span = recording.then(|| call.ctx.otel().clone());
        let retries = Retries::of(self.attempts.as_ref(), &call);
        let mut tried: Vec<Arc<Node>> = Vec::new();
        let mut attempt = 1;
        loop {
            let candidates = self.ejection.candidates(&nodes, &tried);
            let node = self.pick(&mut call, &candidates)?;
            let budget_refuses = !self.budget.allows_retry();
            let last = attempt >= self.retry.attempts() || budget_refuses;
            let again = if last { None } else { call.try_clone() };
            let pending = Pending {
                selector: &*self.selector,
                node,
                told: false,
            };
            let result = send(call).await;
            let outcome = Outcome::of(&result);
            let node = pending.tell(outcome);
            self.budget.record(outcome == Outcome::Success);
            if outcome == Outcome::Unreachable
                && self.ejection.eject(&node)
                && let Some(attempts) = &self.attempts
            {
                attempts.ejected(target.name());
            }
            let status = match result {
                Ok(mut reply) => {
                    if let Some(span) = &span {
                        record_peer(span, &node);
                    }
                    reply.set_node(Some(node));
                    retries.record(attempt);
                    return Ok(reply);
                }
                Err(status) => status,
            };
            let retry = again.filter(|next| {
                retryable(outcome, &status, idempotent)
                    && next.ctx.deadline().is_none_or(|d| Instant::now() < d)
            });
            let refused = budget_refuses && attempt < self.retry.attempts();
            if refused
                && retryable(outcome, &status, idempotent)
                && let (Some(attempts), Some(method)) = (&self.attempts, retries.method())
            {
                attempts.refused(method, &target);
            }
            let Some(next) = retry else {
                if let Some(span) = &span {
                    record_peer(span, &node);
                }
                retries.record(attempt);
                return Err(status);
            };
            if let Some(span) = &span {
                record_retry(span, attempt, &node, &status);
            }
            tokio::time::sleep(self.retry.delay(attempt)).await;
            tried.push(node);
            call = next;
            call.ctx.set_node(None);
            attempt += 1;
        }
    }
}

impl Shared {
    /// Sends one attempt over the transport, recording it when metrics are on.
    fn attempt(&self, call: Call) -> BoxFuture<Result<Reply, Status>> {
        match &self.attempts {
            Some(attempts) => {
                let transport = self.transport.clone();
                Box::pin(attempts.attempt(call, move |c| transport.call(c)))
            }
            None => self.transport.call(call),
        }
    }
}

impl ClientState for Shared {
    fn nodes(&self, each: &mut dyn FnMut(&str, u64)) {
        for (service, nodes) in self.cache.node_counts() {
            each(&service, nodes as u64);
        }
    }

    fn connections(&self) -> u64 {
        self.transport.pool().len() as u64
    }
}

impl Terminal for Selection {
    fn call(&self, call: Call) -> BoxFuture<Result<Reply, Status>> {
        if !needs_pick(&call) {
            return self.0.attempt(call);
        }
        let shared = self.0.clone();
        Box::pin(async move { shared.run(call, |c| shared.attempt(c)).await })
    }
}

/// What the retries of one call are recorded against, when metrics are on.
struct Retries<'a>(Option<(&'a Attempts, &'static Method, Target)>);

impl<'a> Retries<'a> {
    fn of(attempts: Option<&'a Attempts>, call: &Call) -> Self {
        Self(attempts.and_then(|attempts| {
            let method = call.ctx.method()?;
            Some((attempts, method, call.ctx.target()?.clone()))
        }))
    }

    /// The method retried, when metrics are on.
    fn method(&self) -> Option<&'static Method> {
        self.0.as_ref().map(|(_, method, _)| *method)
    }

    /// Records a call that ended on its `attempt`th attempt.
    fn record(&self, attempt: u32) {
        if let Some((attempts, method, target)) = &self.0 {
            attempts.retried(method, target, attempt - 1);
        }
    }
}

/// Whether the call goes through the registry: its target is a service name and no
/// wrapper has chosen its node yet.
fn needs_pick(call: &Call) -> bool {
    call.ctx
        .target()
        .is_some_and(|target| !target.is_direct() && call.ctx.node().is_none())
}

/// Records a failed attempt that will be retried, as an event on the call's span.
fn record_retry(cx: &opentelemetry::Context, attempt: u32, node: &Node, status: &Status) {
    cx.span().add_event(
        "retry",
        vec![
            KeyValue::new("micro_otel.attempt", i64::from(attempt)),
            KeyValue::new(semconv::NETWORK_PEER_ADDRESS, node.address.clone()),
            KeyValue::new(semconv::ERROR_TYPE, semconv::code_name(status.code())),
            KeyValue::new("exception.message", status.message().to_owned()),
        ],
    );
}

/// Records the node that answered on the call's span (`network.peer.address`/`.port`).
fn record_peer(cx: &opentelemetry::Context, node: &Node) {
    let span = cx.span();
    let (host, port) = match node.address.rsplit_once(':') {
        Some((host, port)) => (host, port.parse::<i64>().ok()),
        None => (node.address.as_str(), None),
    };
    span.set_attribute(KeyValue::new(
        semconv::NETWORK_PEER_ADDRESS,
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
    ));
    if let Some(port) = port {
        span.set_attribute(KeyValue::new(semconv::NETWORK_PEER_PORT, port));
    }
}
