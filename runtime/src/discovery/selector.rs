//! Load balancing: which node of a service a call goes to, and what the selector learns
//! from how the call went.

use std::sync::Arc;

use tonic::{Code, Status};

use super::Node;
use crate::call::{Context, causes};

/// How a call on a node went, as told to [`Selector::feedback`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The node answered OK.
    Success,
    /// The node answered with an error status (a business error: the node is fine).
    Failed(Code),
    /// The node could not be reached, or the connection broke before it answered.
    Unreachable,
    /// The caller gave up (dropped the call, or its deadline passed) before an answer.
    Cancelled,
}

impl Outcome {
    /// The outcome of a call that ended with `result`.
    pub fn of<T>(result: &Result<T, Status>) -> Self {
        match result {
            Ok(_) => Outcome::Success,
            Err(status) if is_transport_failure(status) => Outcome::Unreachable,
            Err(status) if status.code() == Code::DeadlineExceeded => Outcome::Cancelled,
            Err(status) => Outcome::Failed(status.code()),
        }
    }
}

/// Whether a status came from the transport (connection refused, reset, broken pipe) rather
/// than from the node: tonic reports those (as UNAVAILABLE, or UNKNOWN for a connection
/// that broke mid-call) with the transport error as the source, while a status the node
/// sent has none.
pub(crate) fn is_transport_failure(status: &Status) -> bool {
    causes(status).any(|error| {
        error.is::<tonic::transport::Error>()
            || error.is::<hyper::Error>()
            || error.is::<std::io::Error>()
    })
}

/// Picks the node for a call, seeing the call itself (service, method, metadata, routing
/// key) and the candidates.
pub trait Selector: Send + Sync + 'static {
    /// One of `nodes` (never empty when called) for the call described by `ctx`, or `None`
    /// to refuse them all (the call fails with UNAVAILABLE).
    fn select<'a>(&self, ctx: &Context, nodes: &'a [Arc<Node>]) -> Option<&'a Arc<Node>>;

    /// Told how the call on `node` went, once it has; strategies that learn (outlier
    /// ejection, least-loaded) use it. Does nothing by default.
    fn feedback(&self, node: &Node, outcome: Outcome) {
        let _ = (node, outcome);
    }
}

/// A selector made from a closure that sees the call and the candidates and returns the
/// index of the node to use (`None` refuses them all): the user hook.
///
/// ```
/// use micro_otel::discovery::selector_fn;
///
/// // Prefer nodes in the caller's zone, else the first.
/// let by_zone = selector_fn(|ctx, nodes| {
///     let zone = ctx.metadata().get("x-zone").and_then(|z| z.to_str().ok());
///     nodes
///         .iter()
///         .position(|n| n.metadata.get("zone").map(String::as_str) == zone)
///         .or(Some(0))
/// });
/// # let _ = by_zone;
/// ```
pub fn selector_fn<F>(f: F) -> FnSelector<F>
where
    F: Fn(&Context, &[Arc<Node>]) -> Option<usize> + Send + Sync + 'static,
{
    FnSelector(f)
}

/// The selector [`selector_fn`] makes.
pub struct FnSelector<F>(F);

impl<F> Selector for FnSelector<F>
where
    F: Fn(&Context, &[Arc<Node>]) -> Option<usize> + Send + Sync + 'static,
{
    fn select<'a>(&self, ctx: &Context, nodes: &'a [Arc<Node>]) -> Option<&'a Arc<Node>> {
        (self.0)(ctx, nodes).and_then(|i| nodes.get(i))
    }
}

impl<F> std::fmt::Debug for FnSelector<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FnSelector")
    }
}

/// A shared selector is a selector.
impl<S: Selector + ?Sized> Selector for Arc<S> {
    fn select<'a>(&self, ctx: &Context, nodes: &'a [Arc<Node>]) -> Option<&'a Arc<Node>> {
        (**self).select(ctx, nodes)
    }

    fn feedback(&self, node: &Node, outcome: Outcome) {
        (**self).feedback(node, outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_a_node_sent_are_business_errors() {
        let failed = |status| Outcome::of::<()>(&Err(status));
        assert_eq!(
            failed(Status::unavailable("busy")),
            Outcome::Failed(Code::Unavailable)
        );
        assert_eq!(
            failed(Status::not_found("no")),
            Outcome::Failed(Code::NotFound)
        );
    }
}
