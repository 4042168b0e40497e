//! [`Filtered`]: a selector that only considers nodes passing filters (version, label,
//! endpoint, or any predicate), go-micro's selector filters.

use std::sync::Arc;

use super::{Node, Outcome, Selector};
use crate::call::Context;

type Predicate = Arc<dyn Fn(&Context, &Node) -> bool + Send + Sync>;

/// The metadata key listing the endpoints (`pkg.Service/Method`, comma separated) a node
/// serves; [`Filtered::endpoint`] reads it. A node without it serves every endpoint.
pub const ENDPOINTS: &str = "endpoints";

/// Wraps a selector so that it only sees the nodes every filter accepts; when none passes,
/// the call fails with UNAVAILABLE.
pub struct Filtered<S> {
    inner: S,
    filters: Vec<Predicate>,
}

impl<S: Selector> Filtered<S> {
    /// `inner` with no filters yet.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            filters: Vec::new(),
        }
    }

    /// Only nodes whose metadata `version` is `version`.
    pub fn version(self, version: impl Into<String>) -> Self {
        self.label("version", version)
    }

    /// Only nodes whose metadata `key` is `value`.
    pub fn label(self, key: impl Into<String>, value: impl Into<String>) -> Self {
        let (key, value) = (key.into(), value.into());
        self.filter(move |_, node| node.metadata.get(&key) == Some(&value))
    }

    /// Only nodes that serve the called method: their [`ENDPOINTS`] metadata names it, or
    /// they do not list endpoints at all.
    pub fn endpoint(self) -> Self {
        self.filter(|ctx, node| {
            let (Some(method), Some(list)) = (ctx.method(), node.metadata.get(ENDPOINTS)) else {
                return true;
            };
            list.split(',').any(|e| e.trim() == method.full_name())
        })
    }

    /// Only nodes `accept` returns true for, seeing the call.
    pub fn filter(
        mut self,
        accept: impl Fn(&Context, &Node) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.filters.push(Arc::new(accept));
        self
    }
}

impl<S: Selector> Selector for Filtered<S> {
    fn select<'a>(&self, ctx: &Context, nodes: &'a [Arc<Node>]) -> Option<&'a Arc<Node>> {
        let accepted = |node: &Arc<Node>| self.filters.iter().all(|f| f(ctx, node));
        if nodes.iter().all(accepted) {
            return self.inner.select(ctx, nodes);
        }
        let passing: Vec<Arc<Node>> = nodes.iter().filter(|n| accepted(n)).cloned().collect();
        if passing.is_empty() {
            return None;
        }
        let chosen = self.inner.select(ctx, &passing)?;
        nodes.iter().find(|n| Arc::ptr_eq(n, chosen))
    }

    fn feedback(&self, node: &Node, outcome: Outcome) {
        self.inner.feedback(node, outcome);
    }
}

impl<S> std::fmt::Debug for Filtered<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Filtered")
            .field("filters", &self.filters.len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::{Method, MethodKind};
    use crate::discovery::RoundRobin;

    static GET: Method = Method::new("/svc.Svc/Get", MethodKind::Unary).idempotent();

    #[test]
    fn filters_keep_only_matching_nodes_and_refuse_when_none_match() {
        let nodes: Vec<Arc<Node>> = vec![
            Arc::new(Node::new("old", "127.0.0.1:1").with_metadata("version", "1.0")),
            Arc::new(
                Node::new("new-east", "127.0.0.1:2")
                    .with_metadata("version", "2.0")
                    .with_metadata("zone", "east")
                    .with_metadata(ENDPOINTS, "svc.Svc/Get, svc.Svc/Put"),
            ),
            Arc::new(
                Node::new("new-west", "127.0.0.1:3")
                    .with_metadata("version", "2.0")
                    .with_metadata("zone", "west")
                    .with_metadata(ENDPOINTS, "svc.Svc/Put"),
            ),
        ];
        let ctx = Context::new(&GET, Default::default());
        let pick = |s: &dyn Selector| {
            (0..6)
                .map(|_| s.select(&ctx, &nodes).map(|n| n.id.clone()))
                .collect::<Vec<_>>()
        };
        let v2 = Filtered::new(RoundRobin::new()).version("2.0");
        assert!(pick(&v2).iter().all(|n| n.as_deref() != Some("old")));
        let east = Filtered::new(RoundRobin::new()).label("zone", "east");
        assert!(pick(&east).iter().all(|n| n.as_deref() == Some("new-east")));
        let serves_get = Filtered::new(RoundRobin::new()).endpoint();
        let chosen = pick(&serves_get);
        assert!(
            chosen.iter().all(|n| n.as_deref() != Some("new-west")),
            "{chosen:?}"
        );
        let nobody = Filtered::new(RoundRobin::new()).version("3.0");
        assert!(pick(&nobody).iter().all(Option::is_none));
    }
}
