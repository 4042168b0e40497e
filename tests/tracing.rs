//! Tracing end to end: client and server spans in one trace with correct parents, names,
//! kinds, attributes and statuses; handler spans nest; W3C context crosses the wire.

use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use micro_otel::discovery::MemoryRegistry;
use micro_otel::wrapper::{self, Call, Next};
use micro_otel::{Client, Code};
use micro_otel_tests::harness::echo::{self, EchoClient, EchoRequest};
use micro_otel_tests::harness::{Echo, Spans, attr, front_and_back, service, span};
use opentelemetry::baggage::BaggageExt;
use opentelemetry::context::FutureExt as _;
use opentelemetry::trace::{SpanKind, Status as SpanStatus, TraceContextExt, TraceId};
use opentelemetry::{KeyValue, Value};
use tracing_subscriber::layer::SubscriberExt;
use user_example::Users;
use user_example::user::{self, CreateUserRequest, GetUserRequest, UserClient, WatchUsersRequest};

fn s(v: &str) -> Option<Value> {
    Some(Value::from(v.to_owned()))
}

// Current-thread runtime: the `tracing` subscriber set for this thread sees every task.
#[tokio::test(flavor = "current_thread")]
async fn client_server_and_handler_spans_form_one_trace() {
    let spans = Spans::default();
    let layer = tracing_opentelemetry::layer().with_tracer(
        opentelemetry::trace::TracerProvider::tracer(&spans.provider(), "test"),
    );
    let _subscriber = tracing::subscriber::set_default(tracing_subscriber::registry().with(layer));

    let registry = MemoryRegistry::new();
    let service = service("user.service", &registry, &spans).build();
    user::register_user_handler(&service, Users::default())
        .expect("handler registered before start");
    let running = service.start().await.unwrap();
    let port = i64::from(running.local_addr().port());
    let users = UserClient::new("user.service", service.client());
    users
        .create_user(CreateUserRequest {
            name: "Ada".into(),
            email: "ada@example.com".into(),
        })
        .await
        .unwrap();
    let all = spans.wait_for(4).await;

    let client = span(&all, "user.User/CreateUser", SpanKind::Client);
    let server = span(&all, "user.User/CreateUser", SpanKind::Server);
    let insert = span(&all, "Store.InsertUser", SpanKind::Internal);
    let validate = span(&all, "validate", SpanKind::Internal);
    let trace = client.span_context.trace_id();
    for s in [server, insert, validate] {
        assert_eq!(
            s.span_context.trace_id(),
            trace,
            "{} is in the client's trace",
            s.name
        );
    }
    assert_eq!(server.parent_span_id, client.span_context.span_id());
    assert!(server.parent_span_is_remote);
    assert_eq!(
        insert.parent_span_id,
        server.span_context.span_id(),
        "ctx.span nests under the server span"
    );
    assert_eq!(
        validate.parent_span_id,
        server.span_context.span_id(),
        "tracing spans nest under the server span"
    );

    for (span, address) in [(client, s("user.service")), (server, s("127.0.0.1"))] {
        assert_eq!(attr(span, "rpc.system.name"), s("grpc"));
        assert_eq!(attr(span, "rpc.method"), s("user.User/CreateUser"));
        assert_eq!(attr(span, "rpc.response.status_code"), s("OK"));
        assert_eq!(attr(span, "server.address"), address);
        assert_eq!(attr(span, "error.type"), None);
        assert_eq!(span.status, SpanStatus::Unset);
    }
    assert_eq!(
        attr(client, "server.port"),
        None,
        "a registry name has no port"
    );
    assert_eq!(attr(server, "server.port"), Some(Value::I64(port)));
    assert_eq!(attr(server, "client.address"), s("127.0.0.1"));
    running.stop().await.unwrap();
}

#[tokio::test]
async fn error_codes_set_span_status_per_the_grpc_rules() {
    let spans = Spans::default();
    let registry = MemoryRegistry::new();
    let service = service("mixed", &registry, &spans).build();
    user::register_user_handler(&service, Users::default())
        .expect("handler registered before start");
    echo::register_echo_handler(&service, Echo::default())
        .expect("handler registered before start");
    let running = service.start().await.unwrap();

    // NOT_FOUND: the caller's error. Client span fails, server span does not.
    let users = UserClient::new("mixed", service.client());
    assert_eq!(
        users
            .get_user(GetUserRequest { id: 7 })
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    // INTERNAL: the server's error. Both fail.
    let echo = EchoClient::new("mixed", service.client());
    let internal = EchoRequest {
        fail_with: Code::Internal as i32,
        ..Default::default()
    };
    assert_eq!(
        echo.unary(internal).await.unwrap_err().code(),
        Code::Internal
    );
    let all = spans.wait_for(5).await;

    let client = span(&all, "user.User/GetUser", SpanKind::Client);
    let server = span(&all, "user.User/GetUser", SpanKind::Server);
    assert_eq!(attr(client, "rpc.response.status_code"), s("NOT_FOUND"));
    assert_eq!(attr(client, "error.type"), s("NOT_FOUND"));
    assert!(
        matches!(&client.status, SpanStatus::Error { description } if description.contains("no user with id 7"))
    );
    assert!(
        client.events.iter().any(|e| e.name == "exception"),
        "the error is recorded"
    );
    assert_eq!(attr(server, "rpc.response.status_code"), s("NOT_FOUND"));
    assert_eq!(attr(server, "error.type"), None);
    assert_eq!(server.status, SpanStatus::Unset);

    let client = span(&all, "echo.v1.Echo/Unary", SpanKind::Client);
    let server = span(&all, "echo.v1.Echo/Unary", SpanKind::Server);
    for span in [client, server] {
        assert_eq!(attr(span, "rpc.response.status_code"), s("INTERNAL"));
        assert_eq!(attr(span, "error.type"), s("INTERNAL"));
        assert!(
            matches!(span.status, SpanStatus::Error { .. }),
            "{:?}",
            span.status
        );
    }
    running.stop().await.unwrap();
}

#[tokio::test]
async fn a_stream_gets_one_span_for_its_whole_life() {
    let spans = Spans::default();
    let registry = MemoryRegistry::new();
    let service = service("echo.service", &registry, &spans).build();
    echo::register_echo_handler(&service, Echo::default())
        .expect("handler registered before start");
    user::register_user_handler(&service, Users::default())
        .expect("handler registered before start");
    let running = service.start().await.unwrap();
    let echo = EchoClient::new("echo.service", service.client());

    let request = EchoRequest {
        repeat: 3,
        delay_ms: 30,
        ..Default::default()
    };
    let started = std::time::SystemTime::now();
    let got = echo
        .server_stream(request)
        .await
        .unwrap()
        .collect::<Vec<_>>()
        .await;
    assert_eq!(got.len(), 3);
    let bidi_in = futures_util::stream::iter((0..3).map(|_| EchoRequest::default()));
    assert_eq!(echo.bidi(bidi_in).await.unwrap().count().await, 3);
    let all = spans.wait_for(4).await;
    assert_eq!(
        all.len(),
        4,
        "one client and one server span per stream, not per message"
    );

    for kind in [SpanKind::Client, SpanKind::Server] {
        let stream = span(&all, "echo.v1.Echo/ServerStream", kind.clone());
        let took = stream.end_time.duration_since(stream.start_time).unwrap();
        assert!(
            took.as_millis() >= 80,
            "{kind:?} span covers all three delayed messages: {took:?}"
        );
        assert!(stream.start_time >= started - std::time::Duration::from_millis(1));
        assert_eq!(attr(stream, "rpc.response.status_code"), s("OK"));
        span(&all, "echo.v1.Echo/Bidi", kind);
    }

    // A stream the caller drops early still ends its spans.
    let users = UserClient::new("echo.service", service.client());
    let watch = users
        .watch_users(WatchUsersRequest {
            include_existing: true,
        })
        .await
        .unwrap();
    drop(watch);
    let all = spans.wait_for(6).await;
    let client = span(&all, "user.User/WatchUsers", SpanKind::Client);
    assert_eq!(attr(client, "rpc.response.status_code"), s("CANCELLED"));
    assert_eq!(
        client.status,
        opentelemetry::trace::Status::Unset,
        "the caller ending its own stream is no failure"
    );
    running.stop().await.unwrap();
}

/// What a wrapper saw inside the server span: trace id, sampled flag, `tenant` baggage.
type Sighting = (TraceId, bool, Option<String>);

/// Captures a [`Sighting`] per call.
#[derive(Default, Clone)]
struct Seen(Arc<Mutex<Vec<Sighting>>>);

impl Seen {
    fn wrapper(&self) -> Arc<dyn micro_otel::wrapper::Wrapper> {
        let seen = self.clone();
        wrapper::from_fn(move |call: Call, next: Next| {
            let cx = opentelemetry::Context::current();
            let sc = cx.span().span_context().clone();
            let baggage = cx.baggage().get("tenant").map(|v| v.to_string());
            seen.0
                .lock()
                .unwrap()
                .push((sc.trace_id(), sc.is_sampled(), baggage));
            next.run(call)
        })
    }

    fn take(&self) -> Vec<Sighting> {
        std::mem::take(&mut self.0.lock().unwrap())
    }
}

#[tokio::test]
async fn incoming_w3c_context_is_continued_and_a_malformed_one_is_ignored() {
    let spans = Spans::default();
    let registry = MemoryRegistry::new();
    let seen = Seen::default();
    let service = service("echo.service", &registry, &spans)
        .wrap_handler(seen.wrapper())
        .build();
    echo::register_echo_handler(&service, Echo::default())
        .expect("handler registered before start");
    let running = service.start().await.unwrap();
    // A caller that is not micro-otel: plain metadata, no client tracing.
    let raw = EchoClient::new(
        &running.local_addr().to_string(),
        Client::builder()
            .instrumentation(micro_otel::Instrumentation::off())
            .build(),
    );

    let send = |traceparent: &'static str| {
        let raw = raw.clone();
        async move {
            let mut request = micro_otel::Request::new(EchoRequest::default());
            request
                .metadata_mut()
                .insert("traceparent", traceparent.parse().unwrap());
            request
                .metadata_mut()
                .insert("baggage", "tenant=acme".parse().unwrap());
            raw.unary(request).await
        }
    };
    // Flags 03: sampled plus an unknown flag, which must still be accepted.
    send("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-03")
        .await
        .unwrap();
    send("00-not-a-valid-header")
        .await
        .expect("a malformed traceparent is not an error");
    let all = spans.wait_for(2).await;

    let continued = &all[0];
    assert_eq!(
        continued.span_context.trace_id(),
        TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").unwrap()
    );
    assert_eq!(continued.parent_span_id.to_string(), "b7ad6b7169203331");
    let fresh = &all[1];
    assert_ne!(
        fresh.span_context.trace_id(),
        continued.span_context.trace_id()
    );
    assert_eq!(
        fresh.parent_span_id,
        opentelemetry::trace::SpanId::INVALID,
        "new root"
    );

    let seen = seen.take();
    assert_eq!(seen[0].0, continued.span_context.trace_id());
    assert!(seen[0].1, "sampled flag carried over");
    assert_eq!(seen[0].2.as_deref(), Some("acme"), "baggage extracted");
    running.stop().await.unwrap();
}

#[tokio::test]
async fn baggage_and_trace_context_flow_from_caller_to_nested_calls() {
    let spans = Spans::default();
    let registry = MemoryRegistry::new();
    let seen = Seen::default();
    let (front, front_running, back_running) =
        front_and_back(&registry, &spans, seen.wrapper()).await;

    let cx = opentelemetry::Context::current_with_baggage([KeyValue::new("tenant", "globex")]);
    EchoClient::new("front", front.client())
        .unary(EchoRequest::default())
        .with_context(cx)
        .await
        .unwrap();
    let all = spans.wait_for(4).await;
    let trace = all[0].span_context.trace_id();
    assert!(
        all.iter().all(|s| s.span_context.trace_id() == trace),
        "one trace across both hops"
    );
    let front_server = all
        .iter()
        .find(|s| {
            s.span_kind == SpanKind::Server
                && attr(s, "server.port")
                    == Some(Value::I64(front_running.local_addr().port().into()))
        })
        .unwrap();
    let hop = all.iter().find(|s| {
        s.span_kind == SpanKind::Client && s.parent_span_id == front_server.span_context.span_id()
    });
    assert!(
        hop.is_some(),
        "the forwarded call is a child of the front server span"
    );
    assert_eq!(
        seen.take()[0].2.as_deref(),
        Some("globex"),
        "baggage reached the second hop"
    );
    front_running.stop().await.unwrap();
    back_running.stop().await.unwrap();
}

#[tokio::test]
async fn with_tracing_off_no_spans_are_made_and_calls_work() {
    let spans = Spans::default();
    let registry = MemoryRegistry::new();
    let service = service("quiet", &registry, &spans)
        .instrumentation(micro_otel::Instrumentation::off())
        .build();
    echo::register_echo_handler(&service, Echo::default())
        .expect("handler registered before start");
    let running = service.start().await.unwrap();
    let echo = EchoClient::new("quiet", service.client());
    assert_eq!(
        echo.unary(EchoRequest {
            message: "shh".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .message,
        "shh"
    );
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert!(spans.wait_for(0).await.is_empty());
    running.stop().await.unwrap();
}
