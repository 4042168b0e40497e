//! What the registry tests share (etcd, Consul, DNS, mDNS): reading nodes and watches, and
//! finding out which instance answered a call.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use micro_otel::discovery::{Change, Node, Registration, Registry, Watch};

use crate::harness::echo::{EchoClient, EchoRequest};

/// The ids of `nodes`, sorted.
pub fn ids(nodes: &[Node]) -> Vec<&str> {
    let mut ids: Vec<&str> = nodes.iter().map(|n| n.id.as_str()).collect();
    ids.sort_unstable();
    ids
}

/// Registering where the registry must accept it.
pub trait PutNode {
    /// Registers `node` of `service` for `ttl`; panics if the registry refuses.
    fn put_node(&self, service: &str, node: &Node, ttl: Duration) -> impl Future<Output = ()>;
}

impl<R: Registry> PutNode for R {
    async fn put_node(&self, service: &str, node: &Node, ttl: Duration) {
        self.register(Registration::new(service, node, ttl))
            .await
            .unwrap_or_else(|e| panic!("registering {} of {service}: {e}", node.id));
    }
}

/// The nodes of `service` in `registry`, sorted by id; the registry must answer.
pub async fn lookup(registry: &impl Registry, service: &str) -> Vec<Node> {
    let mut nodes = registry
        .lookup(service)
        .await
        .expect("the registry answers");
    nodes.sort_by(|a, b| a.id.cmp(&b.id));
    nodes
}

/// The watch's next change (at most 10 s away).
pub async fn next_change(watch: &mut Watch) -> Change {
    tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .expect("a change within 10 s")
        .expect("the watch goes on")
        .expect("the watch does not fail")
}

/// Polls `check` every 50 ms until it holds and returns how long that took; panics after
/// `limit`.
pub async fn eventually(
    limit: Duration,
    what: &str,
    mut check: impl AsyncFnMut() -> bool,
) -> Duration {
    let started = Instant::now();
    loop {
        if check().await {
            return started.elapsed();
        }
        assert!(started.elapsed() < limit, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An echo request carrying `message`.
pub fn request(message: &str) -> EchoRequest {
    EchoRequest {
        message: message.into(),
        ..Default::default()
    }
}

/// The port of the instance that answered one call (the harness's echo names it).
pub async fn answering_port(client: &EchoClient) -> Result<u16, micro_otel::Status> {
    let mut call = micro_otel::Request::new(request("who?"));
    let reply = micro_otel::client::ReplyMetadata::capture(&mut call);
    client.unary(call).await?;
    let port = reply
        .get()
        .and_then(|md| md.get("x-echo-port")?.to_str().ok()?.parse().ok())
        .expect("the echo service names its port");
    Ok(port)
}

/// The ports that answered `n` calls, sorted and deduplicated; every call must succeed.
pub async fn answering_ports(client: &EchoClient, n: usize) -> Vec<u16> {
    let mut ports = Vec::new();
    for _ in 0..n {
        ports.push(answering_port(client).await.expect("the call succeeds"));
    }
    ports.sort_unstable();
    ports.dedup();
    ports
}
