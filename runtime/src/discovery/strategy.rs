//! The selection strategies: random (go-micro's default), round-robin, weighted,
//! least-requests (power of two choices) and consistent hashing on the call's routing key.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use rand::Rng;

use super::{Node, Outcome, Selector};
use crate::call::Context;

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

/// The service a call goes to, as selectors key their state.
fn service(ctx: &Context) -> &str {
    ctx.target().map(|t| t.name()).unwrap_or_default()
}

/// Takes the nodes of each service in turn, one call after the other, across all callers
/// of the client (go-micro's round-robin starts again at a random node on every call).
#[derive(Debug, Default)]
pub struct RoundRobin {
    next: RwLock<HashMap<String, AtomicUsize>>,
}

impl RoundRobin {
    /// A round-robin selector.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Selector for RoundRobin {
    fn select<'a>(&self, ctx: &Context, nodes: &'a [Arc<Node>]) -> Option<&'a Arc<Node>> {
        if nodes.len() < 2 {
            return nodes.first();
        }
        let service = service(ctx);
        let turn = {
            let next = self.next.read().unwrap_or_else(|e| e.into_inner());
            next.get(service).map(|n| n.fetch_add(1, Ordering::Relaxed))
        };
        let turn = turn.unwrap_or_else(|| {
            let mut next = self.next.write().unwrap_or_else(|e| e.into_inner());
            next.entry(service.to_owned())
                .or_default()
                .fetch_add(1, Ordering::Relaxed)
        });
        nodes.get(turn % nodes.len())
    }
}

/// Picks nodes at random in proportion to their `weight` metadata (a whole number; 1 when
/// absent or unreadable, 0 takes a node out of rotation unless every node has 0).
#[derive(Debug, Clone, Copy, Default)]
pub struct Weighted;

/// The metadata key [`Weighted`] reads.
pub const WEIGHT: &str = "weight";

fn weight(node: &Node) -> u64 {
    node.metadata
        .get(WEIGHT)
        .and_then(|w| w.trim().parse().ok())
        .unwrap_or(1)
}

impl Selector for Weighted {
    fn select<'a>(&self, _ctx: &Context, nodes: &'a [Arc<Node>]) -> Option<&'a Arc<Node>> {
        let total: u64 = nodes.iter().map(|n| weight(n)).sum();
        if total == 0 {
            return Random.select(_ctx, nodes);
        }
        let mut point = rand::rng().random_range(0..total);
        nodes.iter().find(|n| {
            let w = weight(n);
            if point < w {
                true
            } else {
                point -= w;
                false
            }
        })
    }
}

/// Picks two nodes at random and sends the call to the one with fewer calls in flight
/// from this client ("power of two choices"): load follows each node's speed without a
/// global view.
#[derive(Debug, Default)]
pub struct LeastRequests {
    in_flight: RwLock<HashMap<String, Arc<AtomicUsize>>>,
}

impl LeastRequests {
    /// A least-requests selector.
    pub fn new() -> Self {
        Self::default()
    }

    fn counter(&self, node: &Node) -> Arc<AtomicUsize> {
        if let Some(c) = self
            .in_flight
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&node.id)
        {
            return c.clone();
        }
        self.in_flight
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(node.id.clone())
            .or_default()
            .clone()
    }

    fn load(&self, node: &Node) -> usize {
        self.in_flight
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&node.id)
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }
}

impl Selector for LeastRequests {
    fn select<'a>(&self, _ctx: &Context, nodes: &'a [Arc<Node>]) -> Option<&'a Arc<Node>> {
        let chosen = match nodes.len() {
            0 => return None,
            1 => &nodes[0],
            n => {
                let mut rng = rand::rng();
                let a = rng.random_range(0..n);
                let b = (a + rng.random_range(1..n)) % n;
                if self.load(&nodes[b]) < self.load(&nodes[a]) {
                    &nodes[b]
                } else {
                    &nodes[a]
                }
            }
        };
        self.counter(chosen).fetch_add(1, Ordering::Relaxed);
        Some(chosen)
    }

    fn feedback(&self, node: &Node, _outcome: Outcome) {
        let _ = self
            .counter(node)
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }
}

/// Sends every call with the same routing key ([`Context::routing_key`]) to the same node,
/// on a hash ring with virtual nodes: when a node leaves, only the keys it held move. Calls
/// without a key go to a random node.
///
/// The ring hashes node ids and keys with FNV-1a, so every client agrees on it.
#[derive(Debug)]
pub struct ConsistentHash {
    replicas: usize,
    ring: Mutex<Option<Ring>>,
}

/// The ring of one set of nodes: points sorted, each naming a node's position.
#[derive(Debug)]
struct Ring {
    fingerprint: u64,
    points: Vec<(u64, usize)>,
}

impl Default for ConsistentHash {
    fn default() -> Self {
        Self::new(160)
    }
}

impl ConsistentHash {
    /// A ring with `replicas` virtual nodes per node (160 by default: more spreads keys more
    /// evenly and costs memory).
    pub fn new(replicas: usize) -> Self {
        Self {
            replicas: replicas.max(1),
            ring: Mutex::new(None),
        }
    }

    fn build(&self, fingerprint: u64, nodes: &[Arc<Node>]) -> Ring {
        let mut points: Vec<(u64, usize)> = nodes
            .iter()
            .enumerate()
            .flat_map(|(i, node)| {
                (0..self.replicas).map(move |r| (hash(format!("{}#{r}", node.id).as_bytes()), i))
            })
            .collect();
        points.sort_unstable();
        Ring {
            fingerprint,
            points,
        }
    }
}

impl Selector for ConsistentHash {
    fn select<'a>(&self, ctx: &Context, nodes: &'a [Arc<Node>]) -> Option<&'a Arc<Node>> {
        let Some(key) = ctx.routing_key() else {
            return Random.select(ctx, nodes);
        };
        if nodes.len() < 2 {
            return nodes.first();
        }
        let fingerprint = nodes
            .iter()
            .fold(FNV_OFFSET, |h, n| fnv(h, n.id.as_bytes()) ^ 0xff);
        let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        if ring.as_ref().is_none_or(|r| r.fingerprint != fingerprint) {
            *ring = Some(self.build(fingerprint, nodes));
        }
        let points = &ring.as_ref()?.points;
        let at = hash(key.as_str().as_bytes());
        let slot = points.partition_point(|(p, _)| *p < at) % points.len();
        nodes.get(points[slot].1)
    }
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// FNV-1a, finished with a 64-bit mix so that similar keys spread over the ring.
fn hash(bytes: &[u8]) -> u64 {
    let mut h = fnv(FNV_OFFSET, bytes);
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::{Method, MethodKind, RoutingKey, Target};

    static METHOD: Method = Method::new("/svc.Svc/Get", MethodKind::Unary).idempotent();

    fn nodes(n: usize) -> Vec<Arc<Node>> {
        (0..n)
            .map(|i| {
                Arc::new(Node::new(
                    format!("n{i}"),
                    format!("127.0.0.1:{}", 9000 + i),
                ))
            })
            .collect()
    }

    fn ctx(service: &str) -> Context {
        let mut ctx = Context::new(&METHOD, Default::default());
        ctx.set_target(Target::new(service));
        ctx
    }

    fn counts(
        selector: &dyn Selector,
        ctx: &Context,
        nodes: &[Arc<Node>],
        calls: usize,
    ) -> Vec<usize> {
        let mut hits = vec![0; nodes.len()];
        for _ in 0..calls {
            let n = selector.select(ctx, nodes).expect("a node");
            hits[nodes
                .iter()
                .position(|m| Arc::ptr_eq(m, n))
                .expect("one of them")] += 1;
            selector.feedback(n, Outcome::Success);
        }
        hits
    }

    #[test]
    fn random_selects_every_node_over_many_calls() {
        let hits = counts(&Random, &ctx("svc"), &nodes(3), 3000);
        assert!(hits.iter().all(|&h| h > 800), "{hits:?}");
        assert!(Random.select(&ctx("svc"), &[]).is_none());
    }

    #[test]
    fn round_robin_rotates_per_service_across_calls() {
        let rr = RoundRobin::new();
        let three = nodes(3);
        assert_eq!(counts(&rr, &ctx("a"), &three, 300), [100, 100, 100]);
        // Another service keeps its own turn.
        let first_b = rr.select(&ctx("b"), &three).map(|n| n.id.clone());
        assert_eq!(first_b.as_deref(), Some("n0"));
        let order: Vec<_> = (0..4)
            .map(|_| rr.select(&ctx("a"), &three).map(|n| n.id.clone()).unwrap())
            .collect();
        assert_eq!(order, ["n0", "n1", "n2", "n0"]);
    }

    #[test]
    fn weighted_follows_the_weight_metadata() {
        let weighted: Vec<Arc<Node>> = (1..=3)
            .map(|w| {
                Arc::new(
                    Node::new(format!("w{w}"), format!("127.0.0.1:{w}"))
                        .with_metadata(WEIGHT, w.to_string()),
                )
            })
            .collect();
        let hits = counts(&Weighted, &ctx("svc"), &weighted, 6000);
        for (hit, expected) in hits.iter().zip([1000.0, 2000.0, 3000.0]) {
            assert!((*hit as f64 - expected).abs() < 300.0, "{hits:?}");
        }
        let zero: Vec<Arc<Node>> = vec![
            Arc::new(Node::new("off", "127.0.0.1:1").with_metadata(WEIGHT, "0")),
            Arc::new(Node::new("on", "127.0.0.1:2")),
        ];
        assert_eq!(counts(&Weighted, &ctx("svc"), &zero, 100), [0, 100]);
    }

    #[test]
    fn least_requests_avoids_the_busier_node() {
        let lr = LeastRequests::new();
        let two = nodes(2);
        // Five calls in flight on n0, none on n1: the next calls go to n1.
        for _ in 0..5 {
            lr.counter(&two[0]).fetch_add(1, Ordering::Relaxed);
        }
        for _ in 0..3 {
            let n = lr.select(&ctx("svc"), &two).unwrap();
            assert_eq!(n.id, "n1");
        }
        // Feedback releases them.
        for _ in 0..3 {
            lr.feedback(&two[1], Outcome::Success);
        }
        assert_eq!(lr.load(&two[1]), 0);
    }

    #[test]
    fn consistent_hash_keeps_keys_and_moves_about_one_in_n_when_a_node_leaves() {
        let ch = ConsistentHash::default();
        let four = nodes(4);
        let keyed = |key: &str| {
            let mut c = ctx("svc");
            c.set_routing_key(Some(RoutingKey::new(key)));
            c
        };
        let pick = |nodes: &[Arc<Node>], key: &str| {
            ch.select(&keyed(key), nodes).map(|n| n.id.clone()).unwrap()
        };
        let keys: Vec<String> = (0..2000).map(|i| format!("user-{i}")).collect();
        let before: Vec<String> = keys.iter().map(|k| pick(&four, k)).collect();
        assert_eq!(
            before,
            keys.iter().map(|k| pick(&four, k)).collect::<Vec<_>>()
        );
        let three: Vec<Arc<Node>> = four.iter().filter(|n| n.id != "n2").cloned().collect();
        let after: Vec<String> = keys.iter().map(|k| pick(&three, k)).collect();
        let moved = before.iter().zip(&after).filter(|(b, a)| b != a).count();
        let held_by_n2 = before.iter().filter(|b| *b == "n2").count();
        assert_eq!(moved, held_by_n2, "only the leaving node's keys move");
        let share = moved as f64 / keys.len() as f64;
        assert!(
            (0.15..0.35).contains(&share),
            "about 1/4 of keys moved: {share}"
        );
    }
}
