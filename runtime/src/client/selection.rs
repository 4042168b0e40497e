//! The selection step of the client chain, after the wrappers: picks the node a call goes
//! to from the registry cache with the selector, records it, hands the call to the
//! transport, and tells the selector how the call went.

use std::sync::Arc;

use opentelemetry::KeyValue;
use opentelemetry::trace::TraceContextExt;
use tonic::Status;

use super::transport::Transport;
use crate::call::{BoxFuture, Call, Node, Target};
use crate::discovery::{Cache, Nodes, Outcome, Selector};
use crate::trace::semconv;
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
}

impl Selection {
    pub(crate) fn new(cache: Cache, selector: Arc<dyn Selector>, transport: Transport) -> Self {
        Self(Arc::new(Shared {
            cache,
            selector,
            transport,
        }))
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
        record_peer(&call.ctx, &node);
        call.ctx.set_node(Some(node.clone()));
        Ok(node)
    }
}

impl Selection {
    /// Picks the node the call goes to (unless it is direct or already has one), sends it
    /// with `send`, and tells the selector how it went.
    pub(crate) async fn run<Fut>(
        &self,
        call: Call,
        send: impl FnOnce(Call) -> Fut,
    ) -> Result<Reply, Status>
    where
        Fut: Future<Output = Result<Reply, Status>>,
    {
        self.0.run(call, send).await
    }

    /// The transport behind the selection.
    pub(crate) fn transport(&self) -> &Transport {
        &self.0.transport
    }
}

impl Shared {
    async fn run<Fut>(
        &self,
        mut call: Call,
        send: impl FnOnce(Call) -> Fut,
    ) -> Result<Reply, Status>
    where
        Fut: Future<Output = Result<Reply, Status>>,
    {
        let nodes = match call.ctx.target() {
            Some(target) if !target.is_direct() && call.ctx.node().is_none() => {
                match self.cache.known(target.name()) {
                    Some(Ok(nodes)) => nodes,
                    _ => {
                        let target = target.clone();
                        self.nodes(&target).await?
                    }
                }
            }
            // A direct address, or a node already chosen by a wrapper: nothing to pick.
            _ => return send(call).await,
        };
        let node = self.pick(&mut call, &nodes)?;
        let result = send(call).await;
        self.selector.feedback(&node, Outcome::of(&result));
        result.map(|mut reply| {
            reply.set_node(Some(node));
            reply
        })
    }
}

impl Terminal for Selection {
    fn call(&self, call: Call) -> BoxFuture<Result<Reply, Status>> {
        match call.ctx.target() {
            Some(target) if !target.is_direct() && call.ctx.node().is_none() => {
                let shared = self.0.clone();
                Box::pin(async move { shared.run(call, |c| shared.transport.call(c)).await })
            }
            _ => self.0.transport.call(call),
        }
    }
}

/// Records the chosen node on the call's span (`network.peer.address`/`.port`).
fn record_peer(ctx: &crate::call::Context, node: &Node) {
    let span = ctx.otel().span();
    if !span.is_recording() {
        return;
    }
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
