//! The etcd registry against a real etcd: each test starts its own on free 127.0.0.1 ports
//! in a temporary folder (Debian `etcd-server`, installed by `.ci/run`). Where the build
//! finds no etcd, these tests are ignored with the reason (`tools.rs`); in CI (`CI=true`)
//! they run, and fail without it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use micro_otel::call::Node;
use micro_otel::discovery::{EtcdRegistry, Registration, Registry, RegistryError, RoundRobin};
use micro_otel::{Client, RunningService, Service};
use micro_otel_tests::discovery::{
    PutNode, answering_port, answering_ports, eventually, ids, lookup, next_change, request,
};
use micro_otel_tests::etcd::{Etcd, free_ports};
use micro_otel_tests::harness::echo::{self, EchoClient};
use micro_otel_tests::harness::{Echo, Spans};

/// A long TTL, for tests where nothing should expire.
const LONG: Duration = Duration::from_secs(60);

#[cfg_attr(not(have_etcd), ignore = "needs etcd: apt-get install etcd-server")]
#[tokio::test]
async fn registered_nodes_are_found_with_their_metadata_until_deregistered() {
    let etcd = Etcd::start().await;
    let registry = etcd.registry().await;
    let a = Node::new("a", "127.0.0.1:1").with_metadata("zone", "east");
    let b = Node::new("b", "127.0.0.1:2")
        .with_metadata("zone", "west")
        .with_metadata("version", "2");
    registry.put_node("svc", &a, LONG).await;
    registry.put_node("svc", &b, LONG).await;
    registry
        .put_node("svc-other", &Node::new("c", "127.0.0.1:3"), LONG)
        .await;
    assert_eq!(lookup(&registry, "svc").await, [a.clone(), b.clone()]);

    // go-micro's layout: one key per node under /micro/registry/{service}/.
    let mut raw = etcd.client().await;
    let stored = raw
        .get(
            "/micro/registry/svc/",
            Some(etcd_client::GetOptions::new().with_prefix()),
        )
        .await
        .unwrap();
    let keys: Vec<&str> = stored
        .kvs()
        .iter()
        .map(|kv| kv.key_str().unwrap())
        .collect();
    assert_eq!(keys, ["/micro/registry/svc/a", "/micro/registry/svc/b"]);
    assert!(
        stored.kvs().iter().all(|kv| kv.lease() != 0),
        "bound to leases"
    );

    // Another registry (another process) sees them too; another prefix does not.
    assert_eq!(lookup(&etcd.registry().await, "svc").await, [a, b.clone()]);
    let elsewhere = etcd.registry().await.with_prefix("/elsewhere");
    assert!(lookup(&elsewhere, "svc").await.is_empty());

    registry.deregister("svc", "a").await.unwrap();
    assert_eq!(lookup(&registry, "svc").await, [b]);
    assert_eq!(ids(&lookup(&registry, "svc-other").await), ["c"]);
    assert!(lookup(&registry, "nobody").await.is_empty());
}

#[cfg_attr(not(have_etcd), ignore = "needs etcd: apt-get install etcd-server")]
#[tokio::test]
async fn an_entry_that_is_not_a_node_is_skipped_by_lookup_and_watch() {
    let etcd = Etcd::start().await;
    let registry = etcd.registry().await;
    let mut raw = etcd.client().await;
    raw.put("/micro/registry/svc/broken", "not json", None)
        .await
        .unwrap();
    registry
        .put_node("svc", &Node::new("a", "127.0.0.1:1"), LONG)
        .await;
    assert_eq!(ids(&lookup(&registry, "svc").await), ["a"]);

    let mut watch = registry.watch("svc");
    assert_eq!(ids(&next_change(&mut watch).await.nodes), ["a"]);
    raw.put(
        "/micro/registry/svc/broken",
        "{\"still\": \"not a node\"}",
        None,
    )
    .await
    .unwrap();
    registry
        .put_node("svc", &Node::new("b", "127.0.0.1:2"), LONG)
        .await;
    let change = next_change(&mut watch).await;
    assert_eq!(
        (ids(&change.nodes), ids(&change.added)),
        (vec!["a", "b"], vec!["b"])
    );
}

#[cfg_attr(not(have_etcd), ignore = "needs etcd: apt-get install etcd-server")]
#[tokio::test]
async fn a_node_that_stops_re_registering_expires_while_one_that_keeps_on_stays() {
    let etcd = Etcd::start().await;
    let registry = etcd.registry().await;
    // etcd's smallest lease (with its default election timeout) is 2 s.
    let ttl = Duration::from_secs(2);
    let gone = Node::new("gone", "127.0.0.1:1");
    let kept = Node::new("kept", "127.0.0.1:2");
    let started = Instant::now();
    registry.put_node("svc", &gone, ttl).await;
    registry.put_node("svc", &kept, ttl).await;
    let heartbeats = Arc::new(AtomicUsize::new(0));
    let heartbeat = tokio::spawn({
        let (registry, kept, heartbeats) = (registry.clone(), kept.clone(), heartbeats.clone());
        async move {
            loop {
                tokio::time::sleep(Duration::from_millis(400)).await;
                registry.put_node("svc", &kept, ttl).await;
                heartbeats.fetch_add(1, Ordering::SeqCst);
            }
        }
    });

    let slack = Duration::from_secs(3);
    let expired = eventually(ttl + slack, "the unrefreshed node expires", async || {
        let nodes = lookup(&registry, "svc").await;
        assert!(nodes.contains(&kept), "the refreshed node stays");
        !nodes.contains(&gone)
    })
    .await;
    eprintln!("the unrefreshed node expired after {:?}", started.elapsed());
    // The refreshed one outlives its TTL several times over.
    while started.elapsed() < expired + 3 * ttl {
        assert_eq!(ids(&lookup(&registry, "svc").await), ["kept"]);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    heartbeat.abort();
    let registrations = heartbeats.load(Ordering::SeqCst) + 1;
    assert!(registrations >= 10, "{registrations} registrations");
    assert_eq!(
        etcd.leases().await.len(),
        1,
        "one lease for the refreshed node after {registrations} registrations"
    );
}

#[cfg_attr(not(have_etcd), ignore = "needs etcd: apt-get install etcd-server")]
#[tokio::test]
async fn re_registering_refreshes_one_lease_per_node_and_deregistering_revokes_it() {
    let etcd = Etcd::start().await;
    let registry = etcd.registry().await;
    let a = Node::new("a", "127.0.0.1:1");
    for _ in 0..20 {
        registry.put_node("svc", &a, LONG).await;
    }
    registry
        .put_node("svc", &Node::new("b", "127.0.0.1:2"), LONG)
        .await;
    assert_eq!(etcd.leases().await.len(), 2, "one lease per node");

    // A new TTL takes a new lease; the old one is revoked.
    let before = etcd.leases().await;
    registry.put_node("svc", &a, Duration::from_secs(30)).await;
    let after = etcd.leases().await;
    assert_eq!(after.len(), 2);
    assert_ne!(before, after);

    // A changed address is written under the same lease.
    let moved = Node::new("a", "127.0.0.1:9");
    registry
        .put_node("svc", &moved, Duration::from_secs(30))
        .await;
    assert_eq!(etcd.leases().await, after);
    assert!(lookup(&registry, "svc").await.contains(&moved));

    registry.deregister("svc", "a").await.unwrap();
    registry.deregister("svc", "b").await.unwrap();
    assert!(etcd.leases().await.is_empty(), "deregistering revokes");
    assert!(lookup(&registry, "svc").await.is_empty());
}

#[cfg_attr(not(have_etcd), ignore = "needs etcd: apt-get install etcd-server")]
#[tokio::test]
async fn re_registering_after_etcd_lost_its_data_creates_the_node_and_lease_again() {
    let mut etcd = Etcd::start().await;
    let registry = etcd.registry().await;
    let a = Node::new("a", "127.0.0.1:1");
    registry.put_node("svc", &a, LONG).await;
    etcd.restart_empty().await;
    assert!(etcd.leases().await.is_empty(), "etcd forgot the lease");

    // The next heartbeat finds the lease gone and takes a new one.
    registry
        .register(Registration::new("svc", &a, LONG))
        .await
        .expect("the first registration after etcd came back succeeds");
    assert_eq!(lookup(&registry, "svc").await, std::slice::from_ref(&a));
    assert_eq!(etcd.leases().await.len(), 1);
    // And the next heartbeat refreshes that lease.
    registry.put_node("svc", &a, LONG).await;
    assert_eq!(etcd.leases().await.len(), 1);
}

#[cfg_attr(not(have_etcd), ignore = "needs etcd: apt-get install etcd-server")]
#[tokio::test]
async fn a_watch_starts_with_the_current_nodes_then_reports_changes_and_fails_when_etcd_goes() {
    let mut etcd = Etcd::start().await;
    let registry = etcd.registry().await;
    let a = Node::new("a", "127.0.0.1:1");
    registry.put_node("svc", &a, LONG).await;

    let mut watch = etcd.registry().await.watch("svc");
    let first = next_change(&mut watch).await;
    assert_eq!(first.nodes, std::slice::from_ref(&a));
    assert_eq!(first.added, std::slice::from_ref(&a));
    assert!(first.removed.is_empty());

    let b = Node::new("b", "127.0.0.1:2").with_metadata("zone", "east");
    registry.put_node("svc", &b, LONG).await;
    let added = next_change(&mut watch).await;
    assert_eq!(ids(&added.nodes), ["a", "b"]);
    assert_eq!(added.added, std::slice::from_ref(&b));
    assert!(added.removed.is_empty());

    // A heartbeat changes nothing; a move is a removal and an addition.
    registry.put_node("svc", &a, LONG).await;
    let b_moved = Node::new("b", "127.0.0.1:3").with_metadata("zone", "east");
    registry.put_node("svc", &b_moved, LONG).await;
    let moved = next_change(&mut watch).await;
    assert_eq!(
        (moved.added, moved.removed),
        (vec![b_moved.clone()], vec![b])
    );

    registry.deregister("svc", "a").await.unwrap();
    let removed = next_change(&mut watch).await;
    assert_eq!(removed.nodes, [b_moved]);
    assert_eq!(removed.removed, [a]);
    assert!(removed.added.is_empty());

    // Nodes of other services are not reported.
    registry
        .put_node("svc-other", &Node::new("c", "127.0.0.1:4"), LONG)
        .await;
    registry.deregister("svc", "b").await.unwrap();
    let last = next_change(&mut watch).await;
    assert!(last.nodes.is_empty());
    assert_eq!(ids(&last.removed), ["b"]);

    // etcd goes away: the watch says so and ends (the client's cache then re-watches).
    etcd.stop();
    let broken = tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .expect("the watch notices within 10 s");
    let Some(Err(RegistryError::Unavailable(why))) = broken else {
        panic!("expected the watch to fail, got {broken:?}");
    };
    assert!(
        why.contains(&etcd.endpoint()) && why.contains("watch"),
        "{why}"
    );
    assert!(watch.next().await.is_none(), "a failed watch ends");
}

#[tokio::test]
async fn without_etcd_every_operation_is_unavailable_naming_the_endpoint() {
    let (port, _) = free_ports();
    let endpoint = format!("http://127.0.0.1:{port}");
    let registry = EtcdRegistry::connect([endpoint.as_str()])
        .await
        .expect("connecting does not need etcd up");
    let started = Instant::now();
    let named = |e: RegistryError, operation: &str| {
        let RegistryError::Unavailable(message) = e else {
            panic!("not unavailable: {e}");
        };
        assert!(
            message.contains(&endpoint) && message.contains(operation),
            "{message}"
        );
    };
    named(registry.lookup("svc").await.unwrap_err(), "get");
    let node = Node::new("a", "127.0.0.1:1");
    named(
        registry
            .register(Registration::new("svc", &node, LONG))
            .await
            .unwrap_err(),
        "lease",
    );
    named(registry.deregister("svc", "a").await.unwrap_err(), "delete");
    let mut watch = registry.watch("svc");
    named(watch.next().await.unwrap().unwrap_err(), "get");
    assert!(watch.next().await.is_none(), "a failed watch ends");
    eprintln!("four failures in {:?}", started.elapsed());

    // A malformed endpoint: refused by `connect`, reported by every operation of `lazy`.
    let malformed = |e: RegistryError| {
        let RegistryError::Unavailable(message) = e else {
            panic!("not unavailable: {e}");
        };
        assert!(message.contains("etcd at not a url: connect"), "{message}");
    };
    malformed(EtcdRegistry::connect(["not a url"]).await.unwrap_err());
    let lazy = EtcdRegistry::lazy(["not a url"]);
    malformed(lazy.lookup("svc").await.unwrap_err());
    assert!(EtcdRegistry::connect(Vec::<String>::new()).await.is_err());
}

/// An echo service registered in `registry`.
async fn start_echo(registry: &EtcdRegistry, spans: &Spans) -> RunningService {
    let service = Service::builder("echo")
        .registry(registry.clone())
        .instrumentation(spans.instrumentation())
        .build();
    echo::register_echo_handler(&service, Echo::default()).expect("registered before start");
    service.start().await.expect("starts and registers in etcd")
}

/// A client that finds services through its own connection to `etcd`.
async fn client(etcd: &Etcd) -> EchoClient {
    // Round robin: every instance answers within a few calls, which the tests count on.
    let client = Client::builder()
        .registry(etcd.registry().await)
        .selector(RoundRobin::new())
        .build();
    EchoClient::new("echo", client)
}

#[cfg_attr(not(have_etcd), ignore = "needs etcd: apt-get install etcd-server")]
#[tokio::test]
async fn services_registered_in_etcd_are_called_and_a_stopped_one_is_left_out() {
    let etcd = Etcd::start().await;
    let spans = Spans::default();
    let registry = etcd.registry().await;
    let first = start_echo(&registry, &spans).await;
    let second = start_echo(&registry, &spans).await;
    let (first_port, second_port) = (first.local_addr().port(), second.local_addr().port());
    assert_eq!(lookup(&registry, "echo").await.len(), 2);

    let echo = client(&etcd).await;
    let reply = echo
        .unary(request("hello"))
        .await
        .expect("found through etcd");
    assert_eq!(reply.message, "hello");
    let mut both = vec![first_port, second_port];
    both.sort_unstable();
    eventually(
        Duration::from_secs(5),
        "both instances answer",
        async || answering_ports(&echo, 20).await == both,
    )
    .await;

    first.stop().await.unwrap();
    let left = eventually(
        Duration::from_secs(5),
        "the client stops calling the stopped instance",
        async || match answering_port(&echo).await {
            Ok(port) => port == second_port,
            // A call may have picked the stopped node before the watch told the client.
            Err(_) => false,
        },
    )
    .await;
    eprintln!("the client left the stopped instance out after {left:?}");
    assert_eq!(answering_ports(&echo, 30).await, [second_port]);
    second.stop().await.unwrap();
    assert!(lookup(&registry, "echo").await.is_empty());
}

#[cfg_attr(not(have_etcd), ignore = "needs etcd: apt-get install etcd-server")]
#[tokio::test]
async fn calls_go_on_through_an_etcd_outage_and_a_node_registered_after_it_is_found() {
    let mut etcd = Etcd::start().await;
    let spans = Spans::default();
    let registry = etcd.registry().await;
    let first = start_echo(&registry, &spans).await;
    let first_port = first.local_addr().port();
    let echo = client(&etcd).await;
    assert_eq!(answering_ports(&echo, 5).await, [first_port]);

    etcd.stop();
    let outage = Instant::now();
    let mut calls = 0;
    while outage.elapsed() < Duration::from_secs(2) {
        assert_eq!(
            answering_port(&echo)
                .await
                .expect("the cached node answers"),
            first_port
        );
        calls += 1;
    }
    assert!(
        registry.lookup("echo").await.is_err(),
        "etcd really is down"
    );
    eprintln!("{calls} calls during 2 s without etcd");

    etcd.restart().await;
    let restarted = Instant::now();
    // Registered through the connection the outage broke.
    let second = start_echo(&registry, &spans).await;
    let second_port = second.local_addr().port();
    let seen = eventually(
        Duration::from_secs(45),
        "the node registered after the restart reaches the client",
        async || answering_ports(&echo, 10).await.contains(&second_port),
    )
    .await;
    eprintln!(
        "etcd was down {:?}; the new node was called {seen:?} after it registered",
        restarted - outage,
    );
    first.stop().await.unwrap();
    second.stop().await.unwrap();
}
