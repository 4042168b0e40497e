//! The Consul registry against a fake Consul agent (`micro_otel_tests::consul_fake`: no
//! Consul server is installed here), which answers the documented Agent and Health
//! endpoints and records every request: the tests assert both on what the registry does
//! and on the exact requests it sent.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use micro_otel::call::Node;
use micro_otel::discovery::{
    Change, ConsulRegistry, Registration, Registry, RegistryError, RoundRobin, Watch,
};
use micro_otel::{Client, RunningService, Service};
use micro_otel_tests::consul_fake::{ConsulFake, Recorded, Status};
use micro_otel_tests::discovery::{
    PutNode, answering_port, answering_ports, eventually, ids, lookup, next_change, request,
};
use micro_otel_tests::harness::Echo;
use micro_otel_tests::harness::Spans;
use micro_otel_tests::harness::echo::{self, EchoClient};
use serde_json::json;

/// A long TTL, for tests where nothing should expire.
const LONG: Duration = Duration::from_secs(60);

/// Follows `watch` in a task of its own (a watch queries only while polled), passing on
/// what it yields until it ends.
fn follow(mut watch: Watch) -> tokio::sync::mpsc::UnboundedReceiver<Result<Change, RegistryError>> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(item) = watch.next().await {
            if tx.send(item).is_err() {
                return;
            }
        }
    });
    rx
}

/// `METHOD target` of each request, for comparing sequences.
fn lines(requests: &[Recorded]) -> Vec<String> {
    requests
        .iter()
        .map(|r| format!("{} {}", r.method, r.target()))
        .collect()
}

/// The message of an `Unavailable`.
fn message(error: RegistryError) -> String {
    match error {
        RegistryError::Unavailable(message) => message,
        other => panic!("not unavailable: {other}"),
    }
}

/// A port nothing listens on now.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("bound").port()
}

#[tokio::test]
async fn registered_nodes_are_found_with_their_metadata_until_deregistered() {
    let consul = ConsulFake::start().await;
    let registry = ConsulRegistry::new(consul.address());
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

    // Another registry (another process) sees them too.
    let other = ConsulRegistry::new(format!("http://{}", consul.address()));
    assert_eq!(lookup(&other, "svc").await, [a, b.clone()]);

    registry.deregister("svc", "a").await.unwrap();
    assert_eq!(lookup(&registry, "svc").await, [b]);
    assert_eq!(ids(&lookup(&registry, "svc-other").await), ["c"]);
    assert!(lookup(&registry, "nobody").await.is_empty());
    // The agent no longer knowing a node is not an error: it is gone either way.
    registry.deregister("svc", "a").await.unwrap();
    assert_eq!(
        consul
            .instances()
            .iter()
            .map(|i| &*i.id)
            .collect::<Vec<_>>(),
        ["b", "c"]
    );
}

#[tokio::test]
async fn the_requests_are_the_documented_paths_headers_and_json_fields() {
    let consul = ConsulFake::start().await;
    consul.require_token("s3cret");
    let registry = ConsulRegistry::new(consul.address())
        .with_token("s3cret")
        .with_datacenter("dc1");
    let node = Node::new("echo-1", "127.0.0.1:7001")
        .with_metadata("version", "1.2")
        .with_metadata("zone", "east");
    let ttl = Duration::from_secs(90);
    registry.put_node("echo", &node, ttl).await;
    // The heartbeat: nothing changed, so only the check is passed.
    registry.put_node("echo", &node, ttl).await;
    registry.put_node("echo", &node, ttl).await;
    // Changed metadata is registered again.
    let moved = node.clone().with_metadata("zone", "west");
    registry.put_node("echo", &moved, ttl).await;
    assert_eq!(lookup(&registry, "echo").await, [moved]);
    registry.deregister("echo", "echo-1").await.unwrap();

    let requests = consul.requests();
    assert_eq!(
        lines(&requests),
        [
            "PUT /v1/agent/service/register",
            "PUT /v1/agent/check/pass/service:echo-1",
            "PUT /v1/agent/check/pass/service:echo-1",
            "PUT /v1/agent/check/pass/service:echo-1",
            "PUT /v1/agent/service/register",
            "PUT /v1/agent/check/pass/service:echo-1",
            "GET /v1/health/service/echo?passing=true&dc=dc1",
            "PUT /v1/agent/service/deregister/echo-1",
        ]
    );
    assert!(
        requests
            .iter()
            .all(|r| r.token.as_deref() == Some("s3cret")),
        "every request carries X-Consul-Token"
    );
    let registration = |zone: &str| {
        json!({
            "ID": "echo-1",
            "Name": "echo",
            "Address": "127.0.0.1",
            "Port": 7001,
            "Meta": {"version": "1.2", "zone": zone},
            "Tags": [],
            "Check": {
                "CheckID": "service:echo-1",
                "TTL": "90s",
                "DeregisterCriticalServiceAfter": "95s",
            },
        })
    };
    assert_eq!(requests[0].body, registration("east"));
    assert_eq!(requests[4].body, registration("west"));
    assert!(
        requests
            .iter()
            .filter(|r| !r.path.ends_with("/register"))
            .all(|r| r.body.is_null()),
        "passes, lookups and deregistrations have no body"
    );
}

#[tokio::test]
async fn a_node_whose_heartbeats_stop_turns_critical_leaves_lookups_then_is_removed() {
    let consul = ConsulFake::start().await;
    let deregister_after = Duration::from_secs(1);
    let registry = ConsulRegistry::new(consul.address()).with_deregister_after(deregister_after);
    let ttl = Duration::from_secs(1);
    let gone = Node::new("gone", "127.0.0.1:1");
    let kept = Node::new("kept", "127.0.0.1:2");
    let started = Instant::now();
    registry.put_node("svc", &gone, ttl).await;
    registry.put_node("svc", &kept, ttl).await;
    assert_eq!(ids(&lookup(&registry, "svc").await), ["gone", "kept"]);
    let heartbeat = tokio::spawn({
        let (registry, kept) = (registry.clone(), kept.clone());
        async move {
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                registry.put_node("svc", &kept, ttl).await;
            }
        }
    });

    eventually(ttl * 3, "the unrefreshed node leaves lookups", async || {
        let nodes = lookup(&registry, "svc").await;
        assert!(nodes.contains(&kept), "the refreshed node stays");
        !nodes.contains(&gone)
    })
    .await;
    let expired = started.elapsed();
    eprintln!("the unrefreshed node left lookups after {expired:?}");
    assert!(expired >= ttl, "not before its TTL: {expired:?}");
    let critical = consul.instance("gone").expect("still registered, critical");
    assert_eq!(critical.check.map(|c| c.status), Some(Status::Critical));

    eventually(
        deregister_after * 3,
        "the agent removes the node critical for DeregisterCriticalServiceAfter",
        async || consul.instance("gone").is_none(),
    )
    .await;
    eprintln!("the agent removed it after {:?}", started.elapsed());
    assert_eq!(ids(&lookup(&registry, "svc").await), ["kept"]);
    heartbeat.abort();

    // The heartbeats of the kept node only passed its check: registered once.
    let kept_requests: Vec<String> = lines(&consul.requests())
        .into_iter()
        .filter(|l| l.contains("kept"))
        .collect();
    assert!(kept_requests.len() >= 6, "{kept_requests:?}");
    assert_eq!(kept_requests[0], "PUT /v1/agent/check/pass/service:kept");
    assert!(
        kept_requests
            .iter()
            .all(|l| l == "PUT /v1/agent/check/pass/service:kept"),
        "{kept_requests:?}"
    );
    let registrations = consul
        .requests()
        .iter()
        .filter(|r| r.path == "/v1/agent/service/register" && r.body["ID"] == "kept")
        .count();
    assert_eq!(registrations, 1);
}

#[tokio::test]
async fn a_heartbeat_after_the_agent_forgot_the_node_registers_it_again() {
    let consul = ConsulFake::start().await;
    let registry = ConsulRegistry::new(consul.address());
    let a = Node::new("a", "127.0.0.1:1");
    registry.put_node("svc", &a, LONG).await;
    consul.forget_everything();
    consul.take_requests();

    registry
        .register(Registration::new("svc", &a, LONG))
        .await
        .expect("the heartbeat registers the node again");
    assert_eq!(
        lines(&consul.take_requests()),
        [
            "PUT /v1/agent/check/pass/service:a",
            "PUT /v1/agent/service/register",
            "PUT /v1/agent/check/pass/service:a",
        ]
    );
    assert_eq!(lookup(&registry, "svc").await, std::slice::from_ref(&a));
    // And the next heartbeat only passes the check again.
    consul.take_requests();
    registry.put_node("svc", &a, LONG).await;
    assert_eq!(
        lines(&consul.take_requests()),
        ["PUT /v1/agent/check/pass/service:a"]
    );
}

#[tokio::test]
async fn a_watch_follows_blocking_queries_reporting_additions_removals_and_expiry() {
    let consul = ConsulFake::start().await;
    let registry = ConsulRegistry::new(consul.address()).with_wait(Duration::from_secs(30));
    let a = Node::new("a", "127.0.0.1:1");
    registry.put_node("svc", &a, LONG).await;

    let mut watch = ConsulRegistry::new(consul.address())
        .with_wait(Duration::from_secs(30))
        .watch("svc");
    let first = next_change(&mut watch).await;
    assert_eq!(first.nodes, std::slice::from_ref(&a));
    assert_eq!(first.added, std::slice::from_ref(&a));
    assert!(first.removed.is_empty());
    let first_index = consul.index();

    let b = Node::new("b", "127.0.0.1:2").with_metadata("zone", "east");
    registry.put_node("svc", &b, LONG).await;
    let added = next_change(&mut watch).await;
    assert_eq!(ids(&added.nodes), ["a", "b"]);
    assert_eq!(added.added, std::slice::from_ref(&b));
    assert!(added.removed.is_empty());

    // A heartbeat moves nothing; a node of another service moves the index but not the
    // nodes; a move is a removal and an addition.
    registry.put_node("svc", &a, LONG).await;
    registry
        .put_node("svc-other", &Node::new("c", "127.0.0.1:3"), LONG)
        .await;
    let b_moved = Node::new("b", "127.0.0.1:4").with_metadata("zone", "east");
    registry.put_node("svc", &b_moved, LONG).await;
    let moved = next_change(&mut watch).await;
    assert_eq!(
        (moved.added, moved.removed),
        (vec![b_moved.clone()], vec![b])
    );

    registry.deregister("svc", "a").await.unwrap();
    let removed = next_change(&mut watch).await;
    assert_eq!(removed.nodes, std::slice::from_ref(&b_moved));
    assert_eq!(removed.removed, [a]);
    assert!(removed.added.is_empty());

    // A node whose heartbeats stop leaves the watch when its check turns critical.
    let short = Node::new("short", "127.0.0.1:5");
    registry
        .put_node("svc", &short, Duration::from_secs(1))
        .await;
    let came = next_change(&mut watch).await;
    assert_eq!(came.added, std::slice::from_ref(&short));
    let started = Instant::now();
    let expired = next_change(&mut watch).await;
    assert_eq!(expired.removed, [short]);
    assert_eq!(expired.nodes, [b_moved]);
    eprintln!(
        "expiry reached the watch {:?} after the node came",
        started.elapsed()
    );

    // The queries: one plain read, then blocking queries each on the index the last
    // answer carried.
    let queries: Vec<Recorded> = consul
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET")
        .collect();
    assert_eq!(queries[0].target(), "/v1/health/service/svc?passing=true");
    assert_eq!(
        queries[1].target(),
        format!("/v1/health/service/svc?passing=true&index={first_index}&wait=30s")
    );
    let mut last = first_index;
    for query in &queries[1..] {
        let (path, blocking) = query
            .target()
            .split_once("&index=")
            .map(|(p, b)| (p.to_owned(), b.to_owned()))
            .expect("a blocking query");
        assert_eq!(path, "/v1/health/service/svc?passing=true");
        let (index, wait) = blocking.split_once("&wait=").expect("with a wait");
        let index: u64 = index.parse().expect("a number");
        assert_eq!(wait, "30s");
        assert!(index >= last, "indexes never go back: {index} after {last}");
        last = index;
    }
    assert!(last > first_index, "the index moved with the changes");
}

#[tokio::test]
async fn a_watch_starts_over_with_a_plain_read_when_the_index_goes_backwards() {
    let consul = ConsulFake::start().await;
    let registry = ConsulRegistry::new(consul.address()).with_wait(Duration::from_secs(1));
    for i in 0..5 {
        registry
            .put_node("svc", &Node::new(format!("n{i}"), "127.0.0.1:1"), LONG)
            .await;
    }
    let mut watch = follow(registry.watch("svc"));
    let first = watch.recv().await.expect("the current nodes").unwrap();
    assert_eq!(first.nodes.len(), 5);
    let before = consul.index();
    assert!(before > 2);

    // The agent's index goes back (a restored snapshot): the blocking query now waits out
    // its wait, answers with the lower index, and the watch starts over.
    consul.set_index(1);
    let late = Node::new("late", "127.0.0.1:2");
    registry.put_node("svc", &late, LONG).await;
    let started = Instant::now();
    let change = tokio::time::timeout(Duration::from_secs(10), watch.recv())
        .await
        .expect("a change within 10 s")
        .expect("the watch goes on")
        .expect("the watch does not fail");
    assert_eq!(change.added, [late]);
    eprintln!(
        "the change after the index went back came in {:?}",
        started.elapsed()
    );

    // The first answer under the index blocked on is followed by a plain read, then by
    // blocking queries on the new, lower index.
    let stale = format!("passing=true&index={before}&wait=1s");
    let after_stale = || {
        let queries: Vec<String> = consul
            .requests()
            .iter()
            .filter(|r| r.method == "GET")
            .map(|r| r.query.clone())
            .collect();
        let last_stale = queries
            .iter()
            .rposition(|q| *q == stale)
            .expect("a blocking query on the index before it went back");
        queries[last_stale + 1..].to_vec()
    };
    eventually(
        Duration::from_secs(5),
        "two queries after the stale one",
        async || after_stale().len() >= 2,
    )
    .await;
    let after = after_stale();
    assert_eq!(after[0], "passing=true", "{after:?}");
    let blocking = after[1]
        .strip_prefix("passing=true&index=")
        .and_then(|rest| rest.strip_suffix("&wait=1s"))
        .and_then(|index| index.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("a blocking query: {after:?}"));
    assert!(
        (1..before).contains(&blocking),
        "{blocking} is the new index"
    );
}

#[tokio::test]
async fn acl_refusals_bad_metadata_and_unknown_datacenters_name_the_address_and_request() {
    let consul = ConsulFake::start().await;
    consul.require_token("s3cret");
    let node = Node::new("a", "127.0.0.1:1");

    let anonymous = ConsulRegistry::new(consul.address());
    let refused = message(
        anonymous
            .register(Registration::new("svc", &node, LONG))
            .await
            .unwrap_err(),
    );
    assert!(
        refused.contains(&consul.address())
            && refused.contains("PUT /v1/agent/service/register")
            && refused.contains("403")
            && refused.contains("Permission denied"),
        "{refused}"
    );
    let wrong = ConsulRegistry::new(consul.address()).with_token("guess");
    let refused = message(wrong.lookup("svc").await.unwrap_err());
    assert!(
        refused.contains("GET /v1/health/service/svc?passing=true")
            && refused.contains("ACL not found"),
        "{refused}"
    );

    let registry = ConsulRegistry::new(consul.address()).with_token("s3cret");
    // Consul refuses metadata keys outside [A-Za-z0-9_-].
    let dotted = node.clone().with_metadata("app.tier", "web");
    let refused = message(
        registry
            .register(Registration::new("svc", &dotted, LONG))
            .await
            .unwrap_err(),
    );
    assert!(
        refused.contains("400") && refused.contains("Invalid Service Meta"),
        "{refused}"
    );
    // Refused before anything is sent: invalid, not the agent being unavailable.
    let no_port = Node::new("b", "127.0.0.1");
    let refused = registry
        .register(Registration::new("svc", &no_port, LONG))
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, RegistryError::Invalid(why) if why.contains("not host:port")),
        "{refused}"
    );

    let elsewhere = registry.clone().with_datacenter("dc2");
    let refused = message(elsewhere.lookup("svc").await.unwrap_err());
    assert!(
        refused.contains("dc=dc2") && refused.contains("No path to datacenter"),
        "{refused}"
    );
    let mut watch = elsewhere.watch("svc");
    assert!(message(watch.next().await.unwrap().unwrap_err()).contains("No path to datacenter"));
    assert!(watch.next().await.is_none(), "a failed watch ends");
}

#[tokio::test]
async fn an_instance_without_an_address_is_found_at_its_agent_node_address() {
    let consul = ConsulFake::start().await;
    consul
        .register(json!({"ID": "bare", "Name": "svc", "Port": 9000, "Meta": {"zone": "east"}}))
        .expect("registered");
    let registry = ConsulRegistry::new(consul.address());
    assert_eq!(
        lookup(&registry, "svc").await,
        [Node::new("bare", "127.0.0.1:9000").with_metadata("zone", "east")]
    );
}

#[tokio::test]
async fn without_an_agent_every_operation_is_unavailable_naming_the_address_and_request() {
    let address = format!("127.0.0.1:{}", free_port());
    let registry = ConsulRegistry::new(&address);
    let started = Instant::now();
    let named = |e: RegistryError, request: &str| {
        let message = message(e);
        assert!(
            message.contains(&address) && message.contains(request),
            "{message}"
        );
    };
    named(
        registry.lookup("svc").await.unwrap_err(),
        "GET /v1/health/service/svc?passing=true",
    );
    let node = Node::new("a", "127.0.0.1:1");
    named(
        registry
            .register(Registration::new("svc", &node, LONG))
            .await
            .unwrap_err(),
        "PUT /v1/agent/service/register",
    );
    named(
        registry.deregister("svc", "a").await.unwrap_err(),
        "PUT /v1/agent/service/deregister/a",
    );
    let mut watch = registry.watch("svc");
    named(
        watch.next().await.unwrap().unwrap_err(),
        "GET /v1/health/service/svc",
    );
    assert!(watch.next().await.is_none(), "a failed watch ends");
    eprintln!("four failures in {:?}", started.elapsed());

    let https = ConsulRegistry::new("https://127.0.0.1:8501");
    let refused = message(https.lookup("svc").await.unwrap_err());
    assert!(refused.contains("https is not supported"), "{refused}");
}

#[tokio::test]
async fn a_watch_fails_naming_the_blocking_query_when_the_agent_goes_away() {
    let consul = ConsulFake::start().await;
    let address = consul.address();
    let registry = ConsulRegistry::new(&address);
    registry
        .put_node("svc", &Node::new("a", "127.0.0.1:1"), LONG)
        .await;
    let mut watch = follow(registry.watch("svc"));
    let first = watch.recv().await.expect("the current nodes").unwrap();
    assert_eq!(ids(&first.nodes), ["a"]);
    // Wait until the blocking query is in flight, then stop the agent under it.
    eventually(
        Duration::from_secs(5),
        "a blocking query is sent",
        async || consul.requests().iter().any(|r| r.query.contains("index=")),
    )
    .await;
    drop(consul);
    let broken = tokio::time::timeout(Duration::from_secs(10), watch.recv())
        .await
        .expect("the watch notices within 10 s");
    let Some(Err(error)) = broken else {
        panic!("expected the watch to fail, got {broken:?}");
    };
    let why = message(error);
    assert!(
        why.contains(&address) && why.contains("index=") && why.contains("wait="),
        "{why}"
    );
    assert!(watch.recv().await.is_none(), "a failed watch ends");
}

/// An echo service registered in `registry`, re-registering every 200 ms with a 2 s TTL.
async fn start_echo(registry: &ConsulRegistry, spans: &Spans) -> RunningService {
    let service = Service::builder("echo")
        .registry(registry.clone())
        .register_ttl(Duration::from_secs(2))
        .register_interval(Duration::from_millis(200))
        .instrumentation(spans.instrumentation())
        .build();
    echo::register_echo_handler(&service, Echo::default()).expect("registered before start");
    service
        .start()
        .await
        .expect("starts and registers in consul")
}

#[tokio::test]
async fn services_registered_in_consul_are_called_and_a_stopped_one_is_left_out() {
    let consul = ConsulFake::start().await;
    let spans = Spans::default();
    let registry = ConsulRegistry::new(consul.address());
    let first = start_echo(&registry, &spans).await;
    let second = start_echo(&registry, &spans).await;
    let (first_port, second_port) = (first.local_addr().port(), second.local_addr().port());
    assert_eq!(lookup(&registry, "echo").await.len(), 2);

    // A client following Consul through its own registry.
    // Round robin: both instances answer within a few calls, which the test counts on.
    let client = Client::builder()
        .registry(ConsulRegistry::new(consul.address()))
        .selector(RoundRobin::new())
        .build();
    let echo = EchoClient::new("echo", client);
    let reply = echo
        .unary(request("hello"))
        .await
        .expect("found through consul");
    assert_eq!(reply.message, "hello");
    let mut both = vec![first_port, second_port];
    both.sort_unstable();
    eventually(
        Duration::from_secs(5),
        "both instances answer",
        async || answering_ports(&echo, 20).await == both,
    )
    .await;

    // Past their TTL, both are still there: their heartbeats passed their checks.
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(2500) {
        assert_eq!(answering_ports(&echo, 10).await, both);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let instances = consul.instances();
    assert_eq!(instances.len(), 2);
    assert!(
        instances
            .iter()
            .all(|i| i.check.as_ref().map(|c| c.status) == Some(Status::Passing))
    );
    for instance in &instances {
        let registered = consul
            .requests()
            .iter()
            .filter(|r| r.path == "/v1/agent/service/register" && r.body["ID"] == *instance.id)
            .count();
        let passed = consul
            .requests()
            .iter()
            .filter(|r| r.path == format!("/v1/agent/check/pass/service:{}", instance.id))
            .count();
        assert_eq!(registered, 1, "{} registered once", instance.id);
        assert!(
            passed >= 5,
            "{} passed its check {passed} times",
            instance.id
        );
        assert_eq!(
            instance.meta.get("version").map(String::as_str),
            Some("latest")
        );
        assert_eq!(
            instance.meta.get("transport").map(String::as_str),
            Some("grpc")
        );
    }

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
    assert_eq!(
        consul.instances().len(),
        1,
        "stopping deregistered the node"
    );
    second.stop().await.unwrap();
    assert!(lookup(&registry, "echo").await.is_empty());
    assert!(consul.instances().is_empty());
}
