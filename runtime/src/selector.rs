//! Load balancing: which node of a service a call goes to.

use rand::Rng;

use crate::registry::Node;

/// Picks one node for a call.
pub trait Selector: Send + Sync + 'static {
    /// One of `nodes` (never empty when called) for a call to `service`, or `None` to
    /// refuse all of them.
    fn select<'a>(&self, service: &str, nodes: &'a [Node]) -> Option<&'a Node>;
}

/// Picks a node uniformly at random: go-micro's default.
#[derive(Debug, Clone, Copy, Default)]
pub struct Random;

impl Selector for Random {
    fn select<'a>(&self, _service: &str, nodes: &'a [Node]) -> Option<&'a Node> {
        match nodes.len() {
            0 => None,
            1 => nodes.first(),
            n => nodes.get(rand::rng().random_range(0..n)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_selects_every_node_over_many_calls() {
        let nodes: Vec<Node> = (0..3)
            .map(|i| Node {
                id: i.to_string(),
                address: format!("127.0.0.1:{}", 9000 + i),
                metadata: Default::default(),
            })
            .collect();
        let mut hits = [0usize; 3];
        for _ in 0..3000 {
            let n = Random.select("svc", &nodes).unwrap();
            hits[n.id.parse::<usize>().unwrap()] += 1;
        }
        assert!(hits.iter().all(|&h| h > 800), "{hits:?}");
        assert!(Random.select("svc", &[]).is_none());
    }
}
