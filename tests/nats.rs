//! The NATS broker against a real `nats-server` (Debian `nats-server`, installed by
//! `.ci/run`): each test starts its own, with JetStream, on a free 127.0.0.1 port and a
//! temporary store. Core NATS: fan-out and queue groups, at most once. JetStream: the same,
//! plus redelivery of failed messages, dead letters, nothing lost while an instance is
//! replaced mid-run. Trace context crosses the broker, and plain `nats-py` clients see and
//! send a W3C `traceparent`. Where the build finds no `nats-server` (or python3 with
//! venv), these tests are ignored with the reason (`tools.rs`); in CI (`CI=true`) they
//! run, and fail without it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use micro_otel::broker::{
    Broker, BrokerError, Delivery, JetStreamConfig, Message, NatsBroker, Subscriber,
};
use micro_otel::discovery::MemoryRegistry;
use micro_otel::{Context, RunningService, Service, Status};
use micro_otel_tests::harness::echo::EchoRequest;
use micro_otel_tests::harness::{Spans, attr, span};
use micro_otel_tests::nats::Nats;
use micro_otel_tests::pubsub::{
    Seen, event, fan_out_and_share, one_trace_through_send_and_process, publisher, subscribed,
    wait_until,
};
use opentelemetry::trace::SpanKind;
use prost::Message as _;

/// The tests' JetStream setup: stream `EVENTS` over `user.>` and `jobs.>`, dead letters
/// on `dead.events`, quick redelivery.
fn events() -> JetStreamConfig {
    JetStreamConfig {
        dead_letter: "dead.events".into(),
        redeliver_delay: Duration::from_millis(50),
        ..JetStreamConfig::new("EVENTS", ["user.>", "jobs.>"])
    }
}

#[cfg_attr(
    not(have_nats_server),
    ignore = "needs nats-server: apt-get install nats-server"
)]
#[tokio::test]
async fn core_every_service_gets_every_message_and_instances_of_one_share_them() {
    let nats = Nats::start().await;
    fan_out_and_share(&nats.core().await, "user.created", Duration::from_secs(10)).await;
}

#[cfg_attr(
    not(have_nats_server),
    ignore = "needs nats-server: apt-get install nats-server"
)]
#[tokio::test]
async fn jetstream_every_service_gets_every_message_and_instances_of_one_share_them() {
    let nats = Nats::start().await;
    fan_out_and_share(
        &nats.jetstream(events()).await,
        "user.created",
        Duration::from_secs(10),
    )
    .await;
}

#[cfg_attr(
    not(have_nats_server),
    ignore = "needs nats-server: apt-get install nats-server"
)]
#[tokio::test]
async fn jetstream_a_handler_failing_twice_sees_the_message_three_times_then_it_is_acknowledged() {
    let nats = Nats::start().await;
    let broker = nats.jetstream(events()).await;
    let service = Service::builder("billing")
        .registry(MemoryRegistry::new())
        .broker(broker.clone())
        .instrumentation(micro_otel::Instrumentation::off())
        .build();
    let ids = Arc::new(Mutex::new(Vec::new()));
    let log = ids.clone();
    let stats = service
        .subscribe(Subscriber::new(
            "jobs.charge",
            move |ctx: Context, _job: EchoRequest| {
                let log = log.clone();
                async move {
                    let messaging = ctx.messaging().expect("a message");
                    let mut ids = log.lock().unwrap();
                    ids.push((messaging.message_id.clone(), messaging.delivery_attempt));
                    if ids.len() <= 2 {
                        return Err(Status::unavailable("not yet"));
                    }
                    Ok(())
                }
            },
        ))
        .unwrap();
    let running = service.start().await.unwrap();
    service
        .publisher::<EchoRequest>("jobs.charge")
        .publish(&event("charge ada".into()))
        .await
        .unwrap();
    wait_until(Duration::from_secs(10), "three deliveries", || {
        stats.handled() == 1
    })
    .await;

    // Acknowledged: the consumer holds nothing, and interest retention dropped the message.
    let js = async_nats::jetstream::new(nats.client().await);
    let mut stream = js.get_stream("EVENTS").await.unwrap();
    let mut consumers: Vec<_> = stream
        .consumers()
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(consumers.len(), 1, "one durable consumer for the group");
    let consumer = consumers.pop().unwrap();
    assert!(
        consumer.name.starts_with("billing_jobs_charge_"),
        "{}",
        consumer.name
    );
    let settled = Instant::now();
    loop {
        let info = stream
            .get_consumer::<async_nats::jetstream::consumer::pull::Config>(&consumer.name)
            .await
            .unwrap()
            .info()
            .await
            .unwrap()
            .clone();
        if info.num_ack_pending == 0 && stream.info().await.unwrap().state.messages == 0 {
            assert_eq!(info.num_pending, 0);
            assert_eq!(info.delivered.stream_sequence, 1);
            break;
        }
        assert!(
            settled.elapsed() < Duration::from_secs(5),
            "not settled: {info:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Not delivered a fourth time, well past the redelivery delay.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ids = ids.lock().unwrap().clone();
    assert_eq!(
        ids,
        [1, 2, 3].map(|attempt| (Some("1".into()), attempt)),
        "the same message (stream sequence 1), three times, the handler seeing each attempt"
    );
    assert_eq!((stats.failed(), stats.handled()), (2, 1));
    running.stop().await.unwrap();
}

/// The subscription's next delivery (at most 10 s away).
async fn next_delivery(deliveries: &mut micro_otel::broker::Deliveries) -> Delivery {
    tokio::time::timeout(Duration::from_secs(10), deliveries.next())
        .await
        .expect("a delivery within 10 s")
        .expect("the subscription goes on")
}

/// A plain subscription to the dead-letter subject, registered with the server.
async fn dead_letters(nats: &Nats) -> (async_nats::Client, async_nats::Subscriber) {
    let client = nats.client().await;
    let subscription = client.subscribe("dead.events").await.unwrap();
    client.flush().await.unwrap();
    (client, subscription)
}

/// The next message on `subscription`, within 10 s.
async fn next_dead_letter(subscription: &mut async_nats::Subscriber) -> async_nats::Message {
    tokio::time::timeout(Duration::from_secs(10), subscription.next())
        .await
        .expect("a dead letter within 10 s")
        .expect("the subscription goes on")
}

fn header<'a>(message: &'a async_nats::Message, name: &str) -> Option<&'a str> {
    message
        .headers
        .as_ref()
        .and_then(|h| h.get(name))
        .map(|v| v.as_str())
}

#[cfg_attr(
    not(have_nats_server),
    ignore = "needs nats-server: apt-get install nats-server"
)]
#[tokio::test]
async fn jetstream_a_message_that_does_not_decode_lands_on_the_dead_letter_subject() {
    let nats = Nats::start().await;
    let broker = nats.jetstream(events()).await;
    let (_client, mut dead) = dead_letters(&nats).await;
    let handled = Arc::new(AtomicUsize::new(0));
    let service = Service::builder("mailer")
        .registry(MemoryRegistry::new())
        .broker(broker.clone())
        .instrumentation(micro_otel::Instrumentation::off())
        .build();
    let count = handled.clone();
    let stats = service
        .subscribe(Subscriber::new(
            "user.created",
            move |_ctx: Context, _e: EchoRequest| {
                count.fetch_add(1, Ordering::SeqCst);
                async { Ok(()) }
            },
        ))
        .unwrap();
    let running = service.start().await.unwrap();
    let mut headers = tonic::metadata::MetadataMap::new();
    headers.insert("x-origin", "the-test".parse().unwrap());
    broker
        .publish(Message {
            topic: "user.created".into(),
            headers,
            body: vec![0xff, 0xff, 0xff].into(),
            id: None,
        })
        .await
        .unwrap();

    let letter = next_dead_letter(&mut dead).await;
    assert_eq!(&letter.payload[..], [0xff, 0xff, 0xff]);
    assert_eq!(
        [
            NatsBroker::DEAD_LETTER_SUBJECT,
            NatsBroker::DEAD_LETTER_REASON,
            NatsBroker::DEAD_LETTER_STREAM,
            NatsBroker::DEAD_LETTER_SEQUENCE,
            NatsBroker::DEAD_LETTER_DELIVERIES,
            "x-origin",
        ]
        .map(|name| header(&letter, name)),
        [
            Some("user.created"),
            Some("rejected"),
            Some("EVENTS"),
            Some("1"),
            Some("1"),
            Some("the-test"),
        ]
    );
    assert_eq!(
        (stats.undecodable(), handled.load(Ordering::SeqCst)),
        (1, 0)
    );
    // Stored in the dead-letter stream; gone from the events stream (terminated).
    let js = async_nats::jetstream::new(nats.client().await);
    let mut stored = js.get_stream("EVENTS_DEAD_LETTER").await.unwrap();
    assert_eq!(stored.info().await.unwrap().state.messages, 1);
    let mut events = js.get_stream("EVENTS").await.unwrap();
    let terminated = Instant::now();
    while events.info().await.unwrap().state.messages != 0 {
        assert!(
            terminated.elapsed() < Duration::from_secs(5),
            "the original is terminated"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    running.stop().await.unwrap();
}

#[cfg_attr(
    not(have_nats_server),
    ignore = "needs nats-server: apt-get install nats-server"
)]
#[tokio::test]
async fn jetstream_a_message_failing_every_delivery_is_dead_lettered_after_max_deliver() {
    let nats = Nats::start().await;
    let broker = nats
        .jetstream(JetStreamConfig {
            max_deliver: 3,
            ..events()
        })
        .await;
    let (_client, mut dead) = dead_letters(&nats).await;
    let service = Service::builder("billing")
        .registry(MemoryRegistry::new())
        .broker(broker.clone())
        .instrumentation(micro_otel::Instrumentation::off())
        .build();
    let stats = service
        .subscribe(Subscriber::new(
            "jobs.charge",
            |_ctx: Context, _job: EchoRequest| async { Err(Status::internal("always fails")) },
        ))
        .unwrap();
    let running = service.start().await.unwrap();
    service
        .publisher::<EchoRequest>("jobs.charge")
        .publish(&event("doomed".into()))
        .await
        .unwrap();
    let letter = next_dead_letter(&mut dead).await;
    assert_eq!(
        EchoRequest::decode(letter.payload.clone()).unwrap().message,
        "doomed"
    );
    assert_eq!(
        header(&letter, NatsBroker::DEAD_LETTER_REASON),
        Some("max-deliveries")
    );
    assert_eq!(
        header(&letter, NatsBroker::DEAD_LETTER_DELIVERIES),
        Some("3")
    );
    assert_eq!(stats.failed(), 3, "three deliveries, all failed");
    running.stop().await.unwrap();
}

#[cfg_attr(
    not(have_nats_server),
    ignore = "needs nats-server: apt-get install nats-server"
)]
#[tokio::test]
async fn jetstream_publishing_outside_the_streams_subjects_is_refused_naming_the_stream() {
    let nats = Nats::start().await;
    let broker = nats.jetstream(events()).await;
    let refused = broker
        .publish(Message {
            topic: "orders.created".into(),
            ..Default::default()
        })
        .await;
    assert!(
        matches!(&refused, Err(BrokerError::Refused(m)) if m.contains("orders.created") && m.contains("EVENTS")),
        "{refused:?}"
    );
    // A header NATS cannot carry is refused too, in both modes.
    let mut headers = tonic::metadata::MetadataMap::new();
    headers.insert(
        "x-name",
        tonic::metadata::MetadataValue::try_from(&b"caf\xe9"[..]).unwrap(),
    );
    for broker in [broker, nats.core().await] {
        let refused = broker
            .publish(Message {
                topic: "user.created".into(),
                headers: headers.clone(),
                ..Default::default()
            })
            .await;
        assert!(
            matches!(&refused, Err(BrokerError::Refused(m)) if m.contains("x-name")),
            "{refused:?}"
        );
    }
    // Nothing listens: unavailable, naming the server.
    let gone = NatsBroker::lazy("nats://127.0.0.1:1");
    let unavailable = gone.publish(Message::default()).await;
    assert!(
        matches!(&unavailable, Err(BrokerError::Refused(_))),
        "an empty subject is refused before connecting: {unavailable:?}"
    );
    let unavailable = gone
        .publish(Message {
            topic: "user.created".into(),
            ..Default::default()
        })
        .await;
    assert!(
        matches!(&unavailable, Err(BrokerError::Unavailable(m)) if m.contains("127.0.0.1:1")),
        "{unavailable:?}"
    );
}

#[cfg_attr(
    not(have_nats_server),
    ignore = "needs nats-server: apt-get install nats-server"
)]
#[tokio::test]
async fn jetstream_subscriptions_without_a_group_each_get_every_message_and_count_deliveries() {
    let nats = Nats::start().await;
    let broker = nats.jetstream(events()).await;
    let mut one = broker.subscribe("user.deleted", None).await.unwrap();
    let mut two = broker.subscribe("user.deleted", None).await.unwrap();
    broker
        .publish(Message {
            topic: "user.deleted".into(),
            body: event("bob".into()).encode_to_vec().into(),
            ..Default::default()
        })
        .await
        .unwrap();
    for deliveries in [&mut one, &mut two] {
        let first = next_delivery(deliveries).await;
        assert_eq!(
            (first.attempt, first.message.id.as_deref()),
            (1, Some("1")),
            "every subscription gets the message, stream sequence 1"
        );
        first
            .settle
            .expect("JetStream settles")
            .nack()
            .await
            .unwrap();
        let again = next_delivery(deliveries).await;
        assert_eq!((again.attempt, again.message.id.as_deref()), (2, Some("1")));
        again.settle.unwrap().ack().await.unwrap();
    }
    // Each had a consumer of its own, deleted with the subscription.
    let js = async_nats::jetstream::new(nats.client().await);
    let stream = js.get_stream("EVENTS").await.unwrap();
    let consumers = async || stream.consumer_names().collect::<Vec<_>>().await.len();
    assert_eq!(consumers().await, 2);
    drop((one, two));
    let dropped = Instant::now();
    while consumers().await != 0 {
        assert!(
            dropped.elapsed() < Duration::from_secs(5),
            "consumers deleted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[cfg_attr(
    not(have_nats_server),
    ignore = "needs nats-server: apt-get install nats-server"
)]
#[tokio::test]
async fn core_deliveries_have_nothing_to_settle() {
    let nats = Nats::start().await;
    let broker = nats.core().await;
    let mut deliveries = broker.subscribe("user.deleted", None).await.unwrap();
    broker
        .publish(Message {
            topic: "user.deleted".into(),
            body: "raw".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let delivery = next_delivery(&mut deliveries).await;
    assert_eq!(
        (
            delivery.attempt,
            delivery.message.id,
            delivery.settle.is_none(),
            &delivery.message.body[..]
        ),
        (1, None, true, &b"raw"[..]),
        "at most once"
    );
}

#[cfg_attr(
    not(have_nats_server),
    ignore = "needs nats-server: apt-get install nats-server"
)]
#[tokio::test]
async fn jetstream_a_message_whose_last_delivery_goes_unsettled_is_dead_lettered_on_return() {
    let nats = Nats::start().await;
    let broker = nats
        .jetstream(JetStreamConfig {
            max_deliver: 1,
            ack_wait: Duration::from_secs(1),
            ..events()
        })
        .await;
    let (_client, mut dead) = dead_letters(&nats).await;
    let mut deliveries = broker.subscribe("jobs.slow", Some("slow")).await.unwrap();
    broker
        .publish(Message {
            topic: "jobs.slow".into(),
            body: "work".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let delivery = next_delivery(&mut deliveries).await;
    // The instance "dies" holding it: never settled. After ack_wait JetStream sends it
    // again, past max_deliver: it goes to the dead letters, not to the subscriber.
    drop(delivery);
    let letter = tokio::select! {
        again = deliveries.next() => panic!("handed over again: {again:?}"),
        letter = next_dead_letter(&mut dead) => letter,
    };
    assert_eq!(&letter.payload[..], b"work");
    assert_eq!(
        [
            NatsBroker::DEAD_LETTER_REASON,
            NatsBroker::DEAD_LETTER_DELIVERIES
        ]
        .map(|name| header(&letter, name)),
        [Some("max-deliveries"), Some("1")]
    );
}

#[cfg_attr(
    not(have_nats_server),
    ignore = "needs nats-server: apt-get install nats-server"
)]
#[tokio::test]
async fn jetstream_a_server_restart_loses_no_stored_message_and_subscriptions_go_on() {
    let mut nats = Nats::start().await;
    let broker = nats.jetstream(events()).await;
    let handled = Arc::new(Mutex::new(HashMap::new()));
    let count = Arc::new(AtomicUsize::new(0));
    let running = worker(&broker, &handled, &count).await;
    let publisher = publisher(&broker, "jobs.work");
    for i in 0..100 {
        publisher.publish(&event(format!("job {i}"))).await.unwrap();
    }
    nats.restart().await;
    // Publishing again once the client has reconnected (a publish meanwhile may fail).
    let back = Instant::now();
    for i in 100..200 {
        while let Err(status) = publisher.publish(&event(format!("job {i}"))).await {
            assert!(
                back.elapsed() < Duration::from_secs(20),
                "publishing after the restart: {status}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let distinct = || handled.lock().unwrap().len();
    wait_until(Duration::from_secs(30), "all 200 handled", || {
        distinct() >= 200
    })
    .await;
    eprintln!(
        "200 handled {} times in all across the restart",
        count.load(Ordering::SeqCst)
    );
    running.stop().await.unwrap();
}

/// One `worker` instance: a service whose handler records the messages it handles.
async fn worker(
    broker: &NatsBroker,
    handled: &Arc<Mutex<HashMap<String, usize>>>,
    count: &Arc<AtomicUsize>,
) -> RunningService {
    let service = Service::builder("worker")
        .registry(MemoryRegistry::new())
        .broker(broker.clone())
        .instrumentation(micro_otel::Instrumentation::off())
        .build();
    let (handled, count) = (handled.clone(), count.clone());
    service
        .subscribe(
            Subscriber::new("jobs.work", move |_ctx: Context, job: EchoRequest| {
                *handled.lock().unwrap().entry(job.message).or_default() += 1;
                count.fetch_add(1, Ordering::SeqCst);
                async { Ok(()) }
            })
            .concurrency(32),
        )
        .unwrap();
    service.start().await.unwrap()
}

#[cfg_attr(
    not(have_nats_server),
    ignore = "needs nats-server: apt-get install nats-server"
)]
#[tokio::test]
async fn jetstream_loses_none_of_10_000_messages_while_an_instance_is_replaced_mid_run() {
    let nats = Nats::start().await;
    // Messages the stopped instance had fetched but not handled come back after ack_wait.
    let broker = nats
        .jetstream(JetStreamConfig {
            ack_wait: Duration::from_secs(2),
            batch: 50,
            ..events()
        })
        .await;
    const TOTAL: usize = 10_000;
    let handled = Arc::new(Mutex::new(HashMap::new()));
    let (first_count, second_count, third_count) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let first = worker(&broker, &handled, &first_count).await;
    let second = worker(&broker, &handled, &second_count).await;

    let started = Instant::now();
    let publisher = publisher(&broker, "jobs.work");
    let publishing = tokio::spawn(async move {
        futures_util::stream::iter(0..TOTAL)
            .map(|i| {
                let publisher = publisher.clone();
                async move { publisher.publish(&event(format!("job {i}"))).await }
            })
            .buffer_unordered(64)
            .for_each(|published| async move { published.expect("published") })
            .await;
        started.elapsed()
    });

    let distinct = || handled.lock().unwrap().len();
    wait_until(Duration::from_secs(30), "2 000 messages handled", || {
        distinct() >= 2_000
    })
    .await;
    second.stop().await.unwrap();
    let stopped_at = distinct();
    wait_until(
        Duration::from_secs(30),
        "1 000 more handled by the first",
        || distinct() >= stopped_at + 1_000,
    )
    .await;
    let third = worker(&broker, &handled, &third_count).await;
    let published_in = publishing.await.unwrap();
    wait_until(Duration::from_secs(60), "every message handled", || {
        distinct() >= TOTAL
    })
    .await;
    let processed_in = started.elapsed();
    first.stop().await.unwrap();
    third.stop().await.unwrap();

    let handled = handled.lock().unwrap();
    let twice = handled.values().filter(|&&n| n > 1).count();
    let counts = [&first_count, &second_count, &third_count].map(|c| c.load(Ordering::SeqCst));
    eprintln!(
        "{TOTAL} messages: published in {published_in:?} ({:.0}/s), all handled in \
         {processed_in:?} ({:.0}/s); per instance {counts:?}; {twice} handled more than once \
         (at least once: redelivered after the stop)",
        TOTAL as f64 / published_in.as_secs_f64(),
        TOTAL as f64 / processed_in.as_secs_f64(),
    );
    assert_eq!(handled.len(), TOTAL, "none lost");
    assert!((0..TOTAL).all(|i| handled.contains_key(&format!("job {i}"))));
    assert!(
        counts.iter().all(|&n| n > 0),
        "every instance took a share: {counts:?}"
    );
}

#[cfg_attr(
    not(have_nats_server),
    ignore = "needs nats-server: apt-get install nats-server"
)]
#[tokio::test]
async fn one_trace_runs_from_the_publisher_through_send_to_process_over_nats() {
    let nats = Nats::start().await;
    for mode in ["core", "jetstream"] {
        let broker = match mode {
            "core" => nats.core().await,
            _ => nats.jetstream(events()).await,
        };
        let process = one_trace_through_send_and_process(&broker, Duration::from_secs(10)).await;
        let system = attr(&process, "messaging.system").map(|v| v.to_string());
        assert_eq!(system.as_deref(), Some("nats"), "{mode}");
        let id = attr(&process, "messaging.message.id").map(|v| v.to_string());
        let expected_id = (mode == "jetstream").then(|| "1".to_owned());
        assert_eq!(id, expected_id, "{mode}: the stream sequence, if any");
    }
}

/// A python with `nats-py` (pip installs it from PyPI the first time).
fn nats_py() -> PathBuf {
    micro_otel_tests::python::venv(
        env!("CARGO_TARGET_TMPDIR"),
        "nats-py-venv",
        &["nats-py"],
        "import nats",
    )
}

/// Reads the nats-py subscriber's first message: it prints `ready` once subscribed, then
/// the message as JSON.
const PY_SUBSCRIBER: &str = r#"
import asyncio, json, sys
import nats

async def main(url, subject):
    nc = await nats.connect(url)
    sub = await nc.subscribe(subject)
    await nc.flush()
    print("ready", flush=True)
    msg = await sub.next_msg(timeout=20)
    print(json.dumps({"subject": msg.subject, "headers": msg.headers or {}, "data": msg.data.hex()}), flush=True)
    await nc.close()

asyncio.run(main(sys.argv[1], sys.argv[2]))
"#;

/// Publishes one message to a JetStream stream with a `traceparent`, waiting for its ack.
const PY_PUBLISHER: &str = r#"
import asyncio, sys
import nats

async def main(url, subject, data, traceparent):
    nc = await nats.connect(url)
    js = nc.jetstream()
    ack = await js.publish(subject, bytes.fromhex(data), headers={"traceparent": traceparent})
    print("stored", ack.stream, ack.seq, flush=True)
    await nc.close()

asyncio.run(main(*sys.argv[1:]))
"#;

#[cfg_attr(
    not(all(have_nats_server, have_python_venv)),
    ignore = "needs nats-server: apt-get install nats-server; python3 with venv: apt-get install python3-venv"
)]
#[tokio::test]
async fn a_message_we_publish_reaches_a_nats_py_subscriber_with_a_w3c_traceparent() {
    let nats = Nats::start().await;
    let python = nats_py();
    let broker = nats.jetstream(events()).await;
    let mut reader = Command::new(&python)
        .args(["-c", PY_SUBSCRIBER, &nats.url(), "user.created"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("python runs");
    let mut lines = lines_of(reader.stdout.take().unwrap());
    let mut next_line = async || {
        tokio::time::timeout(Duration::from_secs(20), lines.recv())
            .await
            .expect("python answers within 20 s")
            .expect("a line")
    };
    assert_eq!(next_line().await, "ready");

    let spans = Spans::default();
    let producer = Service::builder("users")
        .registry(MemoryRegistry::new())
        .broker(broker.clone())
        .instrumentation(spans.instrumentation())
        .build();
    let sent = event("ada".into());
    producer
        .publisher::<EchoRequest>("user.created")
        .publish(&sent)
        .await
        .unwrap();
    let read: serde_json::Value = serde_json::from_str(&next_line().await).unwrap();
    let traceparent = read["headers"]["traceparent"]
        .as_str()
        .expect("a traceparent header");
    let parts: Vec<&str> = traceparent.split('-').collect();
    let hex = |s: &str, n: usize| s.len() == n && s.chars().all(|c| c.is_ascii_hexdigit());
    assert!(
        parts.len() == 4
            && parts[0] == "00"
            && hex(parts[1], 32)
            && hex(parts[2], 16)
            && hex(parts[3], 2),
        "W3C traceparent: {traceparent}"
    );
    let finished = spans.wait_for(1).await;
    let send = span(&finished, "send user.created", SpanKind::Producer);
    assert_eq!(parts[1], send.span_context.trace_id().to_string());
    assert_eq!(parts[2], send.span_context.span_id().to_string());
    assert_eq!(read["subject"], "user.created");
    let body = read["data"].as_str().unwrap();
    assert_eq!(
        EchoRequest::decode(&*decode_hex(body)).unwrap(),
        sent,
        "the body is the encoded message"
    );
    assert!(reader.wait().unwrap().success());
}

/// The lines `output` prints, read on a thread of their own.
fn lines_of(output: std::process::ChildStdout) -> tokio::sync::mpsc::UnboundedReceiver<String> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(output).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn decode_hex(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

#[cfg_attr(
    not(all(have_nats_server, have_python_venv)),
    ignore = "needs nats-server: apt-get install nats-server; python3 with venv: apt-get install python3-venv"
)]
#[tokio::test]
async fn a_message_nats_py_publishes_is_processed_under_its_traceparent() {
    let nats = Nats::start().await;
    let python = nats_py();
    let broker = nats.jetstream(events()).await;
    let (spans, seen) = (Spans::default(), Seen::default());
    let consumer = subscribed(
        "mailer",
        "mailer",
        "user.created",
        &broker,
        Some(&spans),
        &seen,
    )
    .await;
    let (trace_id, parent_id) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let body: String = event("from python".into())
        .encode_to_vec()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut command = Command::new(&python);
    command.args([
        "-c",
        PY_PUBLISHER,
        &nats.url(),
        "user.created",
        &body,
        &format!("00-{trace_id}-{parent_id}-01"),
    ]);
    let published = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .expect("python runs");
    assert!(
        published.status.success(),
        "nats-py publishes: {}",
        String::from_utf8_lossy(&published.stderr)
    );
    assert!(String::from_utf8_lossy(&published.stdout).starts_with("stored EVENTS"));
    wait_until(Duration::from_secs(10), "the message", || {
        !seen.lock().unwrap().is_empty()
    })
    .await;
    assert_eq!(
        seen.lock().unwrap().clone(),
        [("mailer".to_owned(), "from python".to_owned())]
    );
    let finished = spans.wait_for(1).await;
    let process = span(&finished, "process user.created", SpanKind::Consumer);
    assert_eq!(process.span_context.trace_id().to_string(), trace_id);
    assert_eq!(process.parent_span_id.to_string(), parent_id);
    consumer.stop().await.unwrap();
}

/// Messages per second published and processed, core and JetStream, tracing on and off.
/// Run with `cargo test -p micro-otel-tests --release --test nats -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "a measurement, not a check"]
async fn throughput_core_and_jetstream_with_tracing_on_and_off() {
    let nats = Nats::start().await;
    const N: usize = 20_000;
    for (mode, broker) in [
        ("core", nats.core().await),
        ("jetstream", nats.jetstream(events()).await),
    ] {
        for tracing in [false, true] {
            let topic = format!("jobs.bench.{mode}.{tracing}");
            let count = Arc::new(AtomicUsize::new(0));
            let spans = Spans::default();
            let service = Service::builder("bench")
                .registry(MemoryRegistry::new())
                .broker(broker.clone())
                .instrumentation(spans.instrumentation().tracing(tracing))
                .build();
            let counter = count.clone();
            service
                .subscribe(
                    Subscriber::new(&topic, move |_ctx: Context, _e: EchoRequest| {
                        counter.fetch_add(1, Ordering::Relaxed);
                        async { Ok(()) }
                    })
                    .concurrency(64),
                )
                .unwrap();
            let running = service.start().await.unwrap();
            let publisher = service.publisher::<EchoRequest>(&topic);
            let started = Instant::now();
            futures_util::stream::iter(0..N)
                .map(|i| {
                    let publisher = publisher.clone();
                    async move { publisher.publish(&event(format!("job {i}"))).await }
                })
                .buffer_unordered(64)
                .for_each(|published| async move { published.expect("published") })
                .await;
            let published = started.elapsed();
            // Core NATS is at most once: a slow consumer may drop; wait for what arrives.
            let deadline = Instant::now() + Duration::from_secs(60);
            while count.load(Ordering::Relaxed) < N && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let processed = started.elapsed();
            eprintln!(
                "{mode:9} tracing {:3}: published {N} in {published:?} ({:.0}/s), processed {} in {processed:?} ({:.0}/s)",
                if tracing { "on" } else { "off" },
                N as f64 / published.as_secs_f64(),
                count.load(Ordering::Relaxed),
                count.load(Ordering::Relaxed) as f64 / processed.as_secs_f64(),
            );
            running.stop().await.unwrap();
        }
    }
}
