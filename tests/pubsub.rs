//! Pub/sub on the in-memory broker: fan-out across services, load sharing within a
//! service's queue group, one trace from the publisher through every handler, bad messages
//! counted rather than fatal, and a stop that finishes the messages in flight.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use micro_otel::broker::{Broker, MemoryBroker, Message, Subscriber};
use micro_otel::{Context, Service, Status};
use micro_otel_tests::harness::Spans;
use micro_otel_tests::harness::echo::EchoRequest;
use micro_otel_tests::pubsub::{
    event, fan_out_and_share, one_trace_through_send_and_process, wait_until,
};

#[tokio::test]
async fn every_service_gets_every_message_and_instances_of_one_share_them() {
    fan_out_and_share(&MemoryBroker::new(), "user.created", Duration::from_secs(5)).await;
}

#[tokio::test]
async fn one_trace_runs_from_the_publisher_through_send_to_process() {
    one_trace_through_send_and_process(&MemoryBroker::new(), Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_message_that_does_not_decode_is_counted_and_the_subscriber_goes_on() {
    let broker = MemoryBroker::new();
    let handled = Arc::new(Mutex::new(Vec::new()));
    let service = Service::builder("mailer")
        .broker(broker.clone())
        .instrumentation(micro_otel::Instrumentation::off())
        .build();
    let log = handled.clone();
    let stats = service
        .subscribe(Subscriber::new(
            "user.created",
            move |_ctx: Context, e: EchoRequest| {
                let log = log.clone();
                async move {
                    log.lock().unwrap().push(e.message);
                    Ok(())
                }
            },
        ))
        .unwrap();
    let running = service.start().await.unwrap();
    broker
        .publish(Message {
            topic: "user.created".into(),
            body: vec![0xff, 0xff, 0xff].into(),
            ..Default::default()
        })
        .await
        .unwrap();
    service
        .publisher::<EchoRequest>("user.created")
        .publish(&event("after".into()))
        .await
        .unwrap();
    wait_until(Duration::from_secs(5), "the good message", || {
        !handled.lock().unwrap().is_empty()
    })
    .await;
    assert_eq!(*handled.lock().unwrap(), ["after"]);
    assert_eq!((stats.undecodable(), stats.handled()), (1, 1));
    running.stop().await.unwrap();
}

#[tokio::test]
async fn failures_are_counted_and_stop_finishes_messages_in_flight() {
    let broker = MemoryBroker::new();
    let done = Arc::new(Mutex::new(0));
    let service = Service::builder("slow")
        .broker(broker.clone())
        .instrumentation(micro_otel::Instrumentation::off())
        .build();
    let count = done.clone();
    let stats = service
        .subscribe(Subscriber::new(
            "jobs",
            move |_ctx: Context, e: EchoRequest| {
                let count = count.clone();
                async move {
                    if e.fail_with != 0 {
                        return Err(Status::internal("this job fails"));
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    *count.lock().unwrap() += 1;
                    Ok(())
                }
            },
        ))
        .unwrap();
    let running = service.start().await.unwrap();
    let jobs = service.publisher::<EchoRequest>("jobs");
    jobs.publish(&EchoRequest {
        fail_with: 13,
        ..Default::default()
    })
    .await
    .unwrap();
    for i in 0..3 {
        jobs.publish(&event(format!("job {i}"))).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    running.stop().await.unwrap();
    assert_eq!(
        *done.lock().unwrap(),
        3,
        "the three jobs in flight finished"
    );
    assert_eq!((stats.handled(), stats.failed()), (3, 1));
    let late = service.subscribe(Subscriber::new(
        "jobs",
        |_: Context, _: EchoRequest| async { Ok(()) },
    ));
    assert!(late.is_err(), "no subscriber after start");
}

/// Messages per second through the in-memory broker, published and processed, tracing on
/// and off: `cargo test --release -p micro-otel-tests --test pubsub -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check"]
async fn throughput_in_memory_with_tracing_on_and_off() {
    for tracing in [false, true] {
        let (broker, spans) = (MemoryBroker::new(), Spans::default());
        let config = |name| {
            let config = Service::builder(name).broker(broker.clone());
            if tracing {
                config.instrumentation(spans.instrumentation())
            } else {
                config.instrumentation(micro_otel::Instrumentation::off())
            }
        };
        let consumer = config("consumer").build();
        let stats = consumer
            .subscribe(
                Subscriber::new("load", |_ctx: Context, _e: EchoRequest| async { Ok(()) })
                    .concurrency(64),
            )
            .unwrap();
        let running = consumer.start().await.unwrap();
        let publisher = config("producer").build().publisher::<EchoRequest>("load");
        let n = 20_000u64;
        let started = Instant::now();
        let tasks: Vec<_> = (0..64)
            .map(|_| {
                let publisher = publisher.clone();
                tokio::spawn(async move {
                    for _ in 0..n / 64 {
                        publisher.publish(&event("x".into())).await.unwrap();
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        let published = started.elapsed();
        let sent = (n / 64) * 64;
        wait_until(Duration::from_secs(5), "every message", || {
            stats.handled() >= sent
        })
        .await;
        let processed = started.elapsed();
        println!(
            "in-memory, tracing {}: {:.0} published/s, {:.0} processed/s",
            if tracing { "on" } else { "off" },
            sent as f64 / published.as_secs_f64(),
            sent as f64 / processed.as_secs_f64()
        );
        running.stop().await.unwrap();
    }
}
