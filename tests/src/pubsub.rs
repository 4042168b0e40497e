//! What the broker tests share: a recording subscriber, a publisher, and the scenario every
//! broker backend must pass (in-memory, NATS core and JetStream, RabbitMQ).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use micro_otel::broker::{Broker, Publisher, Subscriber};
use micro_otel::discovery::MemoryRegistry;
use micro_otel::{Context, RunningService, Service};
use opentelemetry::trace::{SpanKind, TraceContextExt, Tracer, TracerProvider as _};
use opentelemetry_sdk::trace::SpanData;

use crate::harness::echo::EchoRequest;
use crate::harness::{Spans, attr, span};

/// `(instance, message)` for every message a recording subscriber processed.
pub type Seen = Arc<Mutex<Vec<(String, String)>>>;

/// The event the tests publish: an echo request carrying `message`.
pub fn event(message: String) -> EchoRequest {
    EchoRequest {
        message,
        ..Default::default()
    }
}

/// Polls `done` every 5 ms until it holds and returns how long that took; panics after
/// `limit`.
pub async fn wait_until(limit: Duration, what: &str, mut done: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    started.elapsed()
}

/// A started service `name` on `broker` whose subscriber of `topic` records
/// `(instance, message)` in `seen`; traced into `spans` if given.
pub async fn subscribed<B: Broker + Clone>(
    name: &str,
    instance: &str,
    topic: &str,
    broker: &B,
    spans: Option<&Spans>,
    seen: &Seen,
) -> RunningService {
    let service = service(name, broker, spans);
    let (seen, instance) = (seen.clone(), instance.to_owned());
    service
        .subscribe(Subscriber::new(
            topic,
            move |_ctx: Context, event: EchoRequest| {
                let (seen, instance) = (seen.clone(), instance.clone());
                async move {
                    seen.lock().unwrap().push((instance, event.message));
                    Ok(())
                }
            },
        ))
        .expect("subscribed before start");
    service.start().await.expect("starts")
}

/// A publisher of `topic` on `broker`, tracing off.
pub fn publisher<B: Broker + Clone>(broker: &B, topic: &str) -> Publisher<EchoRequest> {
    service("users", broker, None).publisher::<EchoRequest>(topic)
}

fn service<B: Broker + Clone>(name: &str, broker: &B, spans: Option<&Spans>) -> Service {
    let builder = Service::builder(name)
        .registry(MemoryRegistry::new())
        .broker(broker.clone());
    match spans {
        Some(spans) => builder.instrumentation(spans.instrumentation()),
        None => builder.instrumentation(micro_otel::Instrumentation::off()),
    }
    .build()
}

/// Two `audit` instances and a `mailer` on `broker`; 100 messages published on `topic`:
/// the mailer gets every one once, the audit instances share them, none twice. Deliveries
/// must all arrive within `limit`.
pub async fn fan_out_and_share<B: Broker + Clone>(broker: &B, topic: &str, limit: Duration) {
    let seen = Seen::default();
    let audit_1 = subscribed("audit", "audit-1", topic, broker, None, &seen).await;
    let audit_2 = subscribed("audit", "audit-2", topic, broker, None, &seen).await;
    let mailer = subscribed("mailer", "mailer", topic, broker, None, &seen).await;
    let publisher = publisher(broker, topic);
    for i in 0..100 {
        publisher
            .publish(&event(format!("user {i}")))
            .await
            .expect("published");
    }
    wait_until(limit, "200 deliveries", || {
        seen.lock().unwrap().len() >= 200
    })
    .await;
    // Anything more (a message twice) would arrive within moments.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let seen = seen.lock().unwrap().clone();
    let of = |instance: &str| -> Vec<String> {
        seen.iter()
            .filter(|(i, _)| i == instance)
            .map(|(_, m)| m.clone())
            .collect()
    };
    let mailer_got: BTreeSet<_> = of("mailer").into_iter().collect();
    assert_eq!(
        (of("mailer").len(), mailer_got.len()),
        (100, 100),
        "another service gets every message once"
    );
    let (one, two) = (of("audit-1"), of("audit-2"));
    eprintln!(
        "audit instances shared 100 messages: {} + {}",
        one.len(),
        two.len()
    );
    assert!(
        !one.is_empty() && !two.is_empty(),
        "both instances get a share"
    );
    let shared: BTreeSet<_> = one.iter().chain(&two).collect();
    assert_eq!(
        (one.len() + two.len(), shared.len()),
        (100, 100),
        "no message twice"
    );
    for running in [audit_1, audit_2, mailer] {
        running.stop().await.expect("stops");
    }
}

/// A `mailer` subscribed on `broker`; a message published on `user.created` inside a
/// `CreateUser` span: `send` is that span's child, `process` is `send`'s child and links to
/// it, all in one trace, and `process` names the mailer's group. The message must arrive
/// within `limit`. Returns the process span for the backend's own attributes.
pub async fn one_trace_through_send_and_process<B: Broker + Clone>(
    broker: &B,
    limit: Duration,
) -> SpanData {
    let (spans, seen) = (Spans::default(), Seen::default());
    let topic = "user.created";
    let consumer = subscribed("mailer", "mailer", topic, broker, Some(&spans), &seen).await;
    let producer = service("users", broker, Some(&spans));
    let publisher = producer.publisher::<EchoRequest>(topic);
    let root = spans.provider().tracer("test").start("CreateUser");
    let root_cx = opentelemetry::Context::current_with_span(root);
    {
        let _attached = root_cx.clone().attach();
        publisher
            .publish(&event("ada".into()))
            .await
            .expect("published");
    }
    root_cx.span().end();
    wait_until(limit, "the message", || !seen.lock().unwrap().is_empty()).await;
    let finished = spans.wait_for(3).await;
    let root = span(&finished, "CreateUser", SpanKind::Internal);
    let send = span(&finished, "send user.created", SpanKind::Producer);
    let process = span(&finished, "process user.created", SpanKind::Consumer);
    let trace = root.span_context.trace_id();
    assert_eq!(send.span_context.trace_id(), trace);
    assert_eq!(process.span_context.trace_id(), trace);
    assert_eq!(send.parent_span_id, root.span_context.span_id());
    assert_eq!(process.parent_span_id, send.span_context.span_id());
    assert_eq!(
        process
            .links
            .iter()
            .map(|l| l.span_context.span_id())
            .collect::<Vec<_>>(),
        [send.span_context.span_id()]
    );
    let group = attr(process, "messaging.consumer.group.name").map(|v| v.to_string());
    assert_eq!(
        group.as_deref(),
        Some("mailer"),
        "the service's queue group"
    );
    consumer.stop().await.expect("stops");
    process.clone()
}
