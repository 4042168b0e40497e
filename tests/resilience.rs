//! Retries and outlier ejection: a node that cannot be reached is routed around and left
//! out for a while; business errors are neither retried nor held against a node; retried
//! attempts show in the trace.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use micro_otel::call::Node;
use micro_otel::client::{Idempotent, RetryPolicy};
use micro_otel::discovery::{MemoryRegistry, Outcome, RoundRobin, Selector};
use micro_otel::{Code, Context};
use micro_otel_tests::discovery::PutNode;
use micro_otel_tests::harness::echo::{self, EchoClient, EchoRequest};
use micro_otel_tests::harness::{Echo, Spans, attr, service, span};
use opentelemetry::trace::SpanKind;

/// Round-robin, recording what it is told.
#[derive(Default)]
struct Recording {
    inner: RoundRobin,
    told: Mutex<Vec<(String, Outcome)>>,
}

impl Selector for Recording {
    fn select<'a>(&self, ctx: &Context, nodes: &'a [Arc<Node>]) -> Option<&'a Arc<Node>> {
        self.inner.select(ctx, nodes)
    }
    fn feedback(&self, node: &Node, outcome: Outcome) {
        self.told.lock().unwrap().push((node.id.clone(), outcome));
    }
}

/// Registers a node at an address nothing listens on.
async fn dead_node(registry: &MemoryRegistry, service: &str) -> Node {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let node = Node::new("dead", closed.local_addr().unwrap().to_string());
    drop(closed);
    registry
        .put_node(service, &node, Duration::from_secs(60))
        .await;
    node
}

async fn start_echo(
    registry: &MemoryRegistry,
    spans: &Spans,
    echo: Echo,
) -> micro_otel::RunningService {
    let service = service("echo", registry, spans).build();
    echo::register_echo_handler(&service, echo).unwrap();
    service.start().await.unwrap()
}

#[tokio::test]
async fn an_unreachable_node_is_retried_elsewhere_and_left_out() {
    let (registry, spans) = (MemoryRegistry::new(), Spans::default());
    dead_node(&registry, "echo").await;
    let echo = Echo::default();
    let live = start_echo(&registry, &spans, echo.clone()).await;
    let selector = Arc::new(Recording::default());
    let client = micro_otel::Client::builder()
        .registry(Arc::new(registry.clone()))
        .selector(selector.clone())
        .instrumentation(micro_otel::Instrumentation::off())
        .build();
    let echo_client = EchoClient::new("echo", client);
    for i in 0..20 {
        let reply = echo_client
            .unary(EchoRequest {
                message: format!("call {i}"),
                ..Default::default()
            })
            .await
            .expect("no call is lost");
        assert_eq!(reply.message, format!("call {i}"));
    }
    assert_eq!(echo.calls.load(Ordering::SeqCst), 20);
    let told = selector.told.lock().unwrap().clone();
    let unreachable: Vec<_> = told
        .iter()
        .filter(|(_, o)| *o == Outcome::Unreachable)
        .collect();
    assert_eq!(
        unreachable.len(),
        1,
        "the dead node is tried once, then left out: {told:?}"
    );
    assert_eq!(unreachable[0].0, "dead");
    live.stop().await.unwrap();
}

#[tokio::test]
async fn a_business_error_is_not_retried_and_does_not_mark_the_node() {
    let (registry, spans) = (MemoryRegistry::new(), Spans::default());
    let echo = Echo::default();
    let live = start_echo(&registry, &spans, echo.clone()).await;
    let selector = Arc::new(Recording::default());
    let client = micro_otel::Client::builder()
        .registry(Arc::new(registry.clone()))
        .selector(selector.clone())
        .instrumentation(micro_otel::Instrumentation::off())
        .build();
    let echo_client = EchoClient::new("echo", client);
    let mut missing = micro_otel::Request::new(EchoRequest {
        fail_with: Code::NotFound as i32,
        ..Default::default()
    });
    missing.extensions_mut().insert(Idempotent);
    let status = echo_client.unary(missing).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(
        echo.calls.load(Ordering::SeqCst),
        1,
        "not retried, even when idempotent"
    );
    echo_client.unary(EchoRequest::default()).await.unwrap();
    assert_eq!(
        echo.calls.load(Ordering::SeqCst),
        2,
        "the node still takes calls"
    );
    let told = selector.told.lock().unwrap().clone();
    assert_eq!(told[0].1, Outcome::Failed(Code::NotFound));
    live.stop().await.unwrap();
}

#[tokio::test]
async fn unavailable_is_retried_only_for_idempotent_calls() {
    let (registry, spans) = (MemoryRegistry::new(), Spans::default());
    let echo = Echo::default();
    let live = start_echo(&registry, &spans, echo.clone()).await;
    let client = micro_otel::Client::builder()
        .registry(Arc::new(registry.clone()))
        .instrumentation(micro_otel::Instrumentation::off())
        .build();
    let echo_client = EchoClient::new("echo", client);

    echo.fail_first.store(1, Ordering::SeqCst);
    let status = echo_client.unary(EchoRequest::default()).await.unwrap_err();
    assert_eq!(
        status.code(),
        Code::Unavailable,
        "not idempotent: not retried"
    );

    echo.fail_first.store(2, Ordering::SeqCst);
    let mut safe = micro_otel::Request::new(EchoRequest::default());
    safe.extensions_mut().insert(Idempotent);
    echo_client
        .unary(safe)
        .await
        .expect("idempotent: retried until it succeeds");
    assert_eq!(echo.calls.load(Ordering::SeqCst), 4);

    echo.fail_first.store(5, Ordering::SeqCst);
    let mut safe = micro_otel::Request::new(EchoRequest::default());
    safe.extensions_mut().insert(Idempotent);
    let status = echo_client.unary(safe).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "three attempts at most");
    assert_eq!(echo.calls.load(Ordering::SeqCst), 7);

    let none = micro_otel::Client::builder()
        .registry(Arc::new(registry.clone()))
        .instrumentation(micro_otel::Instrumentation::off())
        .retry(RetryPolicy::none())
        .build();
    echo.fail_first.store(1, Ordering::SeqCst);
    let mut safe = micro_otel::Request::new(EchoRequest::default());
    safe.extensions_mut().insert(Idempotent);
    assert!(EchoClient::new("echo", none).unary(safe).await.is_err());
    live.stop().await.unwrap();
}

#[tokio::test]
async fn the_trace_of_a_retried_call_shows_both_attempts() {
    let (registry, spans) = (MemoryRegistry::new(), Spans::default());
    let dead = dead_node(&registry, "echo").await;
    let live = start_echo(&registry, &spans, Echo::default()).await;
    // Round-robin starts with the first node registered: the dead one.
    let caller = service("caller", &registry, &spans)
        .client(|c| c.selector(RoundRobin::new()))
        .build();
    EchoClient::new("echo", caller.client())
        .unary(EchoRequest::default())
        .await
        .unwrap();
    let finished = spans.wait_for(2).await;
    let client = span(&finished, "echo.v1.Echo/Unary", SpanKind::Client);
    let retries: Vec<_> = client.events.iter().filter(|e| e.name == "retry").collect();
    assert_eq!(retries.len(), 1, "{:?}", client.events);
    let tried = retries[0]
        .attributes
        .iter()
        .find(|kv| kv.key.as_str() == "network.peer.address")
        .map(|kv| kv.value.to_string());
    assert_eq!(tried, Some(dead.address.clone()));
    let answered = attr(client, "network.peer.port").map(|v| v.to_string());
    assert_eq!(answered, Some(live.local_addr().port().to_string()));
    live.stop().await.unwrap();
}

/// A handler that panics answers INTERNAL without the panic's text, once (an idempotent
/// call is not retried: the peer got an answer, not a broken stream), the panic is on the
/// server span and in the metrics, and the server goes on serving. A reply stream that
/// panics ends with INTERNAL after the items sent before.
#[tokio::test]
async fn a_panicking_handler_answers_internal_and_the_server_goes_on() {
    use futures_util::StreamExt as _;
    use micro_otel_tests::harness::PANIC;
    let (registry, spans) = (MemoryRegistry::new(), Spans::default());
    let meters = micro_otel_tests::meters::Meters::default();
    let echo = Echo::default();
    let instrumentation = spans.instrumentation().meter_provider(meters.provider());
    let service = micro_otel::Service::builder("echo")
        .registry(registry.clone())
        .instrumentation(instrumentation)
        .build();
    echo::register_echo_handler(&service, echo.clone()).unwrap();
    let running = service.start().await.unwrap();
    let client = EchoClient::new("echo", service.client());
    let request = EchoRequest {
        message: PANIC.into(),
        ..Default::default()
    };
    let mut safe = micro_otel::Request::new(request.clone());
    safe.extensions_mut().insert(Idempotent);
    let status = client.unary(safe).await.unwrap_err();
    assert_eq!(status.code(), Code::Internal, "{status:?}");
    assert_eq!(status.message(), "the handler panicked");
    assert_eq!(echo.calls.load(Ordering::SeqCst), 1, "not retried");

    let all = spans.wait_for(2).await;
    let server = span(&all, "echo.v1.Echo/Unary", SpanKind::Server);
    assert!(
        matches!(&server.status, opentelemetry::trace::Status::Error { .. }),
        "{:?}",
        server.status
    );
    let event = server
        .events
        .iter()
        .find(|e| e.name == "exception")
        .expect("an exception event");
    assert!(
        event
            .attributes
            .iter()
            .any(|kv| kv.key.as_str() == "exception.message"
                && kv.value.as_str().contains("asked to panic")),
        "{event:?}"
    );
    let internal = [
        ("rpc.method", "echo.v1.Echo/Unary"),
        ("rpc.response.status_code", "INTERNAL"),
        ("error.type", "INTERNAL"),
    ];
    assert_eq!(meters.total("rpc.server.call.duration", &internal), 1.0);

    let stream = client
        .server_stream(EchoRequest {
            repeat: 3,
            ..request
        })
        .await
        .unwrap();
    let items: Vec<_> = stream.collect().await;
    assert!(items[0].is_ok(), "{items:?}");
    let status = items[1].as_ref().unwrap_err();
    assert_eq!(
        (status.code(), status.message()),
        (Code::Internal, "the handler panicked")
    );
    assert_eq!(items.len(), 2);

    let reply = client
        .unary(EchoRequest {
            message: "still here".into(),
            ..Default::default()
        })
        .await
        .expect("the server goes on serving");
    assert_eq!(reply.message, "still here");
    running.stop().await.unwrap();
}
