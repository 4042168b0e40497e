//! Load balancing and failover through a real etcd: several instances of a service
//! register themselves, clients spread calls the way their selector says, route around an
//! instance killed with SIGKILL without losing a call, and see a graceful stop at once.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use micro_otel::client::{Idempotent, ReplyMetadata};
use micro_otel::discovery::{
    ConsistentHash, EtcdRegistry, Registry, RoundRobin, Selector, WEIGHT, Weighted,
};
use micro_otel::{Client, RoutingKey, RunningService, Service};
use micro_otel_tests::etcd::Etcd;
use micro_otel_tests::harness::echo::{self, EchoClient, EchoRequest};
use micro_otel_tests::harness::{Echo, Spans};

/// Marks a child process of this test binary that serves Echo (see `echo_server_role`).
const ROLE: &str = "BALANCING_ECHO_SERVER_ETCD";

/// Starts an Echo instance registered in etcd with the given node metadata.
async fn start_echo(
    registry: &EtcdRegistry,
    spans: &Spans,
    metadata: &[(&str, &str)],
) -> RunningService {
    let mut config = Service::builder("echo")
        .registry(registry.clone())
        .instrumentation(spans.instrumentation());
    for (key, value) in metadata {
        config = config.metadata(*key, *value);
    }
    let service = config.build();
    echo::register_echo_handler(&service, Echo::default()).expect("before start");
    service.start().await.expect("starts")
}

fn client(registry: &EtcdRegistry, selector: impl Selector) -> EchoClient {
    let client = Client::builder()
        .registry(Arc::new(registry.clone()))
        .selector(Arc::new(selector))
        .instrumentation(micro_otel::Instrumentation::off())
        .build();
    EchoClient::new("echo", client)
}

/// The port of the instance that answered `request`.
async fn answered_by(client: &EchoClient, mut request: micro_otel::Request<EchoRequest>) -> u16 {
    let reply = ReplyMetadata::capture(&mut request);
    client.unary(request).await.expect("the call succeeds");
    let metadata = reply.get().expect("reply metadata");
    let port = metadata
        .get("x-echo-port")
        .expect("the echo names its port");
    port.to_str().expect("ascii").parse().expect("a port")
}

/// How many of `n` calls each instance answered, by port.
async fn spread(client: &EchoClient, n: usize) -> BTreeMap<u16, usize> {
    let mut counts = BTreeMap::new();
    for _ in 0..n {
        let port = answered_by(client, micro_otel::Request::new(EchoRequest::default())).await;
        *counts.entry(port).or_default() += 1;
    }
    counts
}

#[cfg_attr(not(have_etcd), ignore = "needs etcd: apt-get install etcd-server")]
#[tokio::test]
async fn three_instances_in_etcd_share_calls_as_the_selector_says() {
    let etcd = Etcd::start().await;
    let (registry, spans) = (etcd.registry().await, Spans::default());
    let mut instances = Vec::new();
    for weight in ["1", "2", "3"] {
        instances.push(start_echo(&registry, &spans, &[(WEIGHT, weight)]).await);
    }
    let port_of = |i: usize| instances[i].local_addr().port();

    let round_robin = spread(&client(&registry, RoundRobin::new()), 300).await;
    eprintln!("round-robin over 300 calls: {round_robin:?}");
    assert_eq!(
        round_robin.values().copied().collect::<Vec<_>>(),
        [100, 100, 100]
    );

    let weighted = spread(&client(&registry, Weighted), 3000).await;
    eprintln!("weighted 1:2:3 over 3000 calls: {weighted:?}");
    for (i, expected) in [1.0 / 6.0, 2.0 / 6.0, 3.0 / 6.0].into_iter().enumerate() {
        let share = weighted.get(&port_of(i)).copied().unwrap_or(0) as f64 / 3000.0;
        assert!(
            (share - expected).abs() < 0.05,
            "instance {i}: {share:.3} against {expected:.3}"
        );
    }

    // Consistent hashing: a key stays on one instance; when one leaves, only its keys move.
    let hashing = client(&registry, ConsistentHash::default());
    let keyed = |key: &str| {
        let mut request = micro_otel::Request::new(EchoRequest::default());
        request.extensions_mut().insert(RoutingKey::new(key));
        request
    };
    let keys: Vec<String> = (0..300).map(|i| format!("user-{i}")).collect();
    let mut before = Vec::new();
    for key in &keys {
        let first = answered_by(&hashing, keyed(key)).await;
        assert_eq!(
            first,
            answered_by(&hashing, keyed(key)).await,
            "{key} moved"
        );
        before.push(first);
    }
    let leaving = port_of(1);
    instances.remove(1).stop().await.expect("stops");
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut after = Vec::new();
    loop {
        after.clear();
        for key in &keys {
            after.push(answered_by(&hashing, keyed(key)).await);
        }
        if !after.contains(&leaving) || Instant::now() > deadline {
            break;
        }
    }
    let moved: Vec<bool> = before.iter().zip(&after).map(|(b, a)| b != a).collect();
    for ((b, a), moved) in before.iter().zip(&after).zip(&moved) {
        assert_eq!(
            *moved,
            *b == leaving,
            "only the leaving instance's keys move ({b} -> {a})"
        );
    }
    let share = moved.iter().filter(|m| **m).count() as f64 / keys.len() as f64;
    eprintln!(
        "consistent hash: {:.1}% of keys moved when 1 of 3 left",
        share * 100.0
    );
    assert!(
        (0.15..0.5).contains(&share),
        "about a third moved: {share:.3}"
    );
    for instance in instances {
        instance.stop().await.expect("stops");
    }
}

/// Not a test of its own: the body of a child process that serves Echo, registered in the
/// etcd named by `ROLE`, with a 3 s TTL and a 1 s heartbeat, until it is killed.
#[tokio::test]
#[ignore = "run by the SIGKILL test as a child process"]
async fn echo_server_role() {
    let Ok(endpoint) = std::env::var(ROLE) else {
        return;
    };
    let registry = EtcdRegistry::connect([endpoint]).await.expect("endpoint");
    let service = Service::builder("echo")
        .registry(registry)
        .instrumentation(micro_otel::Instrumentation::off())
        .register_ttl(Duration::from_secs(3))
        .register_interval(Duration::from_secs(1))
        .build();
    echo::register_echo_handler(&service, Echo::default()).expect("before start");
    let running = service.start().await.expect("starts");
    println!("listening {}", running.node().id);
    std::future::pending::<()>().await;
}

/// Starts a child serving Echo in etcd; returns it with its node id.
fn spawn_server(etcd: &Etcd) -> (Child, String) {
    use std::io::BufRead;
    let mut child = Command::new(std::env::current_exe().expect("the test binary"))
        .args(["--exact", "echo_server_role", "--ignored", "--nocapture"])
        .env(ROLE, etcd.endpoint())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the child starts");
    let stdout = child.stdout.take().expect("piped");
    let mut lines = std::io::BufReader::new(stdout).lines();
    let id = lines
        .find_map(|line| line.ok()?.strip_prefix("listening ").map(str::to_owned))
        .expect("the child says which node it registered");
    (child, id)
}

#[cfg_attr(not(have_etcd), ignore = "needs etcd: apt-get install etcd-server")]
#[tokio::test]
async fn an_instance_killed_with_sigkill_loses_no_idempotent_call_and_leaves_etcd() {
    let etcd = Etcd::start().await;
    let registry = etcd.registry().await;
    let mut servers: Vec<(Child, String)> = (0..3).map(|_| spawn_server(&etcd)).collect();
    let client = client(&registry, RoundRobin::new());
    // Warm up: every instance known to the client.
    let known = spread(&client, 30).await;
    assert_eq!(known.len(), 3, "{known:?}");

    let (calls, failures) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let stop_at = Instant::now() + Duration::from_secs(4);
    let load: Vec<_> = (0..8)
        .map(|_| {
            let (client, calls, failures) = (client.clone(), calls.clone(), failures.clone());
            tokio::spawn(async move {
                while Instant::now() < stop_at {
                    let mut request = micro_otel::Request::new(EchoRequest::default());
                    request.extensions_mut().insert(Idempotent);
                    match client.unary(request).await {
                        Ok(_) => calls.fetch_add(1, Ordering::SeqCst),
                        Err(status) => {
                            eprintln!("lost a call: {status:?}");
                            failures.fetch_add(1, Ordering::SeqCst)
                        }
                    };
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (mut victim, victim_id) = servers.remove(0);
    let killed = Instant::now();
    victim.kill().expect("SIGKILL");
    let _ = victim.wait();
    for task in load {
        task.await.expect("load task");
    }
    let (calls, failures) = (
        calls.load(Ordering::SeqCst),
        failures.load(Ordering::SeqCst),
    );
    eprintln!("{calls} calls during the kill, {failures} lost");
    assert_eq!(failures, 0, "no idempotent call is lost");
    assert!(calls > 100, "the load ran: {calls} calls");

    // The dead node's lease runs out: it leaves etcd within its TTL (3 s; etcd's lease
    // clock adds up to about a second).
    loop {
        let nodes = registry.lookup("echo").await.expect("etcd answers");
        if nodes.iter().all(|n| n.id != victim_id) {
            eprintln!(
                "the killed node left etcd {:?} after SIGKILL",
                killed.elapsed()
            );
            break;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(6),
            "the killed node is still registered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (mut server, _) in servers {
        let _ = server.kill();
        let _ = server.wait();
    }
}

#[cfg_attr(not(have_etcd), ignore = "needs etcd: apt-get install etcd-server")]
#[tokio::test]
async fn a_gracefully_stopped_instance_deregisters_at_once_and_finishes_its_calls() {
    let etcd = Etcd::start().await;
    let (registry, spans) = (etcd.registry().await, Spans::default());
    let leaving = start_echo(&registry, &spans, &[]).await;
    let staying = start_echo(&registry, &spans, &[]).await;
    let leaving_id = leaving.node().id.clone();
    let client = client(&registry, RoundRobin::new());
    assert_eq!(spread(&client, 10).await.len(), 2);

    // Slow calls in flight on both instances while one stops.
    let slow = EchoRequest {
        delay_ms: 400,
        ..Default::default()
    };
    let in_flight: Vec<_> = (0..6)
        .map(|_| {
            let (client, slow) = (client.clone(), slow.clone());
            tokio::spawn(async move { client.unary(slow).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stopping = tokio::spawn(leaving.stop());
    // Deregistration comes first: etcd forgets the node while its calls still run.
    let deadline = Instant::now() + Duration::from_millis(300);
    loop {
        let nodes = registry.lookup("echo").await.expect("etcd answers");
        if nodes.iter().all(|n| n.id != leaving_id) {
            break;
        }
        assert!(Instant::now() < deadline, "not deregistered at once");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for call in in_flight {
        call.await
            .expect("task")
            .expect("no in-flight call is lost");
    }
    stopping.await.expect("task").expect("stops cleanly");
    let after = spread(&client, 10).await;
    assert_eq!(
        after.keys().copied().collect::<Vec<_>>(),
        [staying.local_addr().port()]
    );
    staying.stop().await.expect("stops");
}
