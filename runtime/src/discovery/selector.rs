//! Load balancing: which node of a service a call goes to, and what the selector learns
//! from how the call went.

use std::sync::Arc;

use rand::Rng;
use tonic::{Code, Status};

use super::Node;
use crate::call::Context;

/// How a call on a node went, as told to [`Selector::feedback`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The node answered OK.
    Success,
    /// The node answered with an error status (a business error: the node is fine).
    Failed(Code),
    /// The node could not be reached, or the connection broke before it answered.
    Unreachable,
}

impl Outcome {
    /// The outcome of a call that ended with `result`.
    pub fn of<T>(result: &Result<T, Status>) -> Self {
        match result {
            Ok(_) => Outcome::Success,
            Err(status) if is_transport_failure(status) => Outcome::Unreachable,
            Err(status) => Outcome::Failed(status.code()),
        }
    }
}

/// Whether a status came from the transport (connect refused, reset, no answer) rather
/// than from the node: tonic reports those as UNAVAILABLE with the transport error as the
/// source, while a status the node sent has no source.
pub(crate) fn is_transport_failure(status: &Status) -> bool {
    status.code() == Code::Unavailable && std::error::Error::source(status).is_some()
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

/// Picks a node uniformly at random: go-micro's default.
#[derive(Debug, Clone, Copy, Default)]
pub struct Random;

impl Selector for Random {
    fn select<'a>(&self, _ctx: &Context, nodes: &'a [Arc<Node>]) -> Option<&'a Arc<Node>> {
        match nodes.len() {
            0 | 1 => nodes.first(),
            n => nodes.get(rand::rng().random_range(0..n)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::{Method, MethodKind};

    static METHOD: Method = Method {
        service: "svc.Svc",
        name: "Get",
        path: "/svc.Svc/Get",
        kind: MethodKind::Unary,
        idempotent: true,
    };

    #[test]
    fn random_selects_every_node_over_many_calls() {
        let nodes: Vec<Arc<Node>> = (0..3)
            .map(|i| Arc::new(Node::new(i.to_string(), format!("127.0.0.1:{}", 9000 + i))))
            .collect();
        let ctx = Context::new(&METHOD, Default::default());
        let mut hits = [0usize; 3];
        for _ in 0..3000 {
            let n = Random.select(&ctx, &nodes).unwrap();
            hits[n.id.parse::<usize>().unwrap()] += 1;
        }
        assert!(hits.iter().all(|&h| h > 800), "{hits:?}");
        assert!(Random.select(&ctx, &[]).is_none());
    }

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
