//! Wrappers run in order (tracing outermost), can reject calls; deadlines and cancellation
//! reach the handler, and a handler's deadline bounds the calls it makes.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use micro_otel::discovery::MemoryRegistry;
use micro_otel::wrapper::{self, Call, Next, Wrapper};
use micro_otel::{Code, Status};
use micro_otel_tests::harness::echo::{self, EchoClient, EchoRequest};
use micro_otel_tests::harness::{Echo, Spans, attr, front_and_back, service, span};
use opentelemetry::Value;
use opentelemetry::trace::{SpanKind, TraceContextExt};

type Log = Arc<Mutex<Vec<String>>>;

/// Logs entry and exit, and whether a span was current on entry.
fn logging(name: &'static str, log: &Log) -> Arc<dyn Wrapper> {
    let log = log.clone();
    wrapper::from_fn(move |call: Call, next: Next| {
        let log = log.clone();
        async move {
            let traced = opentelemetry::Context::current()
                .span()
                .span_context()
                .is_valid();
            log.lock()
                .unwrap()
                .push(format!("{name} in (traced: {traced})"));
            let result = next.run(call).await;
            log.lock().unwrap().push(format!("{name} out"));
            result
        }
    })
}

#[tokio::test]
async fn wrappers_run_in_registration_order_inside_tracing() {
    let spans = Spans::default();
    let registry = MemoryRegistry::new();
    let log = Log::default();
    let service = service("echo.service", &registry, &spans)
        .wrap_handler(logging("handler A", &log))
        .wrap_handler(logging("handler B", &log))
        .client(|c| {
            c.wrap_call(logging("call A", &log))
                .wrap_call(logging("call B", &log))
        })
        .build();
    echo::register_echo_handler(&service, Echo::default())
        .expect("handler registered before start");
    let running = service.start().await.unwrap();
    EchoClient::new("echo.service", service.client())
        .unary(EchoRequest::default())
        .await
        .unwrap();
    assert_eq!(
        *log.lock().unwrap(),
        [
            "call A in (traced: true)",
            "call B in (traced: true)",
            "handler A in (traced: true)",
            "handler B in (traced: true)",
            "handler B out",
            "handler A out",
            "call B out",
            "call A out",
        ]
    );
    running.stop().await.unwrap();
}

#[tokio::test]
async fn a_wrapper_can_reject_a_call_before_the_handler_runs() {
    let spans = Spans::default();
    let registry = MemoryRegistry::new();
    let require_token = wrapper::from_fn(|call: Call, next: Next| async move {
        match call.ctx.metadata().get("authorization") {
            Some(token) if token == "Bearer letmein" => next.run(call).await,
            _ => Err(Status::unauthenticated("missing or wrong token")),
        }
    });
    let echo_handler = Echo::default();
    let service = service("echo.service", &registry, &spans)
        .wrap_handler(require_token)
        .build();
    echo::register_echo_handler(&service, echo_handler.clone())
        .expect("handler registered before start");
    let running = service.start().await.unwrap();
    let client = EchoClient::new("echo.service", service.client());

    let status = client.unary(EchoRequest::default()).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    let mut request = micro_otel::Request::new(EchoRequest {
        message: "in".into(),
        ..Default::default()
    });
    request
        .metadata_mut()
        .insert("authorization", "Bearer letmein".parse().unwrap());
    assert_eq!(client.unary(request).await.unwrap().message, "in");
    running.stop().await.unwrap();
}

#[tokio::test]
async fn a_deadline_cancels_the_handler_and_is_reported_on_both_sides() {
    let spans = Spans::default();
    let registry = MemoryRegistry::new();
    let handler = Echo::default();
    let service = service("echo.service", &registry, &spans).build();
    echo::register_echo_handler(&service, handler.clone())
        .expect("handler registered before start");
    let running = service.start().await.unwrap();
    let client = EchoClient::new("echo.service", service.client());

    let mut request = micro_otel::Request::new(EchoRequest {
        delay_ms: 5_000,
        ..Default::default()
    });
    request.set_timeout(Duration::from_millis(150));
    let started = Instant::now();
    let status = client.unary(request).await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    let all = spans.wait_for(2).await;
    let client = span(&all, "echo.v1.Echo/Unary", SpanKind::Client);
    assert_eq!(
        attr(client, "rpc.response.status_code"),
        Some(Value::from("DEADLINE_EXCEEDED"))
    );
    // The server's own timer and the caller's reset race (both sides hold the same
    // deadline); either way the server span ends with a status, never without one.
    let server = span(&all, "echo.v1.Echo/Unary", SpanKind::Server);
    let status = attr(server, "rpc.response.status_code").map(|v| v.to_string());
    assert!(
        matches!(status.as_deref(), Some("DEADLINE_EXCEEDED" | "CANCELLED")),
        "{status:?}"
    );
    wait_until(|| handler.cancelled.load(Ordering::SeqCst)).await;
    running.stop().await.unwrap();
}

#[tokio::test]
async fn dropping_a_call_cancels_the_handler() {
    let spans = Spans::default();
    let registry = MemoryRegistry::new();
    let handler = Echo::default();
    let service = service("echo.service", &registry, &spans).build();
    echo::register_echo_handler(&service, handler.clone())
        .expect("handler registered before start");
    let running = service.start().await.unwrap();
    let client = EchoClient::new("echo.service", service.client());

    let started = handler.started.notified();
    let call = tokio::spawn(async move {
        client
            .unary(EchoRequest {
                delay_ms: 5_000,
                ..Default::default()
            })
            .await
    });
    started.await;
    call.abort();
    wait_until(|| handler.cancelled.load(Ordering::SeqCst)).await;
    running.stop().await.unwrap();
}

#[tokio::test]
async fn a_handlers_deadline_bounds_the_calls_it_makes() {
    let spans = Spans::default();
    let registry = MemoryRegistry::new();
    let deadlines = Arc::new(Mutex::new(Vec::new()));
    let record = {
        let deadlines = deadlines.clone();
        wrapper::from_fn(move |call: Call, next: Next| {
            deadlines.lock().unwrap().push(call.ctx.time_remaining());
            next.run(call)
        })
    };
    let (front, front_running, back_running) = front_and_back(&registry, &spans, record).await;

    let mut request = micro_otel::Request::new(EchoRequest::default());
    request.set_timeout(Duration::from_secs(3));
    EchoClient::new("front", front.client())
        .unary(request)
        .await
        .unwrap();
    let left = deadlines.lock().unwrap()[0].expect("the nested call carries a deadline");
    assert!(
        left <= Duration::from_secs(3) && left > Duration::from_secs(2),
        "{left:?}"
    );
    front_running.stop().await.unwrap();
    back_running.stop().await.unwrap();
}

async fn wait_until(condition: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !condition() {
        assert!(Instant::now() < deadline, "condition not met within 5 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn an_abandoned_call_still_ends_both_spans_as_cancelled() {
    let spans = Spans::default();
    let registry = MemoryRegistry::new();
    let handler = Echo::default();
    let service = service("echo.service", &registry, &spans).build();
    echo::register_echo_handler(&service, handler.clone())
        .expect("handler registered before start");
    let running = service.start().await.unwrap();
    let client = EchoClient::new("echo.service", service.client());

    let started = handler.started.notified();
    let call = tokio::spawn(async move {
        client
            .unary(EchoRequest {
                delay_ms: 5_000,
                ..Default::default()
            })
            .await
    });
    started.await;
    call.abort();
    let all = spans.wait_for(2).await;
    for kind in [SpanKind::Client, SpanKind::Server] {
        let s = span(&all, "echo.v1.Echo/Unary", kind.clone());
        assert_eq!(
            attr(s, "rpc.response.status_code"),
            Some(Value::from("CANCELLED")),
            "{kind:?}"
        );
    }
    for kind in [SpanKind::Client, SpanKind::Server] {
        assert_eq!(
            span(&all, "echo.v1.Echo/Unary", kind.clone()).status,
            opentelemetry::trace::Status::Unset,
            "{kind:?}: CANCELLED is the caller's doing, not a failure"
        );
    }
    running.stop().await.unwrap();
}
