//! What the broker tests share: a recording subscriber, a publisher, and the scenario every
//! broker backend must pass (in-memory, NATS core and JetStream, RabbitMQ).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use micro_otel::broker::{Broker, Publisher, Subscriber};
use micro_otel::discovery::MemoryRegistry;
use micro_otel::{Context, RunningService, Service};

use crate::harness::Spans;
use crate::harness::echo::EchoRequest;

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
        Some(spans) => builder.tracer_provider(spans.provider()),
        None => builder.tracing(false),
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
