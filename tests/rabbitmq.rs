//! The RabbitMQ broker against a real RabbitMQ (Debian `rabbitmq-server`, installed by
//! `.ci/run`): fan-out and load sharing, bounded redelivery, the dead-letter path, no loss
//! across an instance restart under load, and interop with Python's `pika` both ways.
//!
//! RabbitMQ takes 10-20 s to start, so this test binary starts ONE server (the first test
//! to need it does) on free 127.0.0.1 ports in a temporary folder, and every test uses its
//! own exchange, topics and groups. The server runs under a watchdog shell whose stdin is
//! a pipe from this process: when this process exits, however it exits, the pipe closes
//! and the watchdog kills RabbitMQ and its `epmd` by pid. Where the build finds no
//! RabbitMQ (or python3 with venv), these tests are ignored with the reason (`tools.rs`);
//! in CI (`CI=true`) they run, and fail without it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::options::{BasicGetOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection, ConnectionProperties};
use micro_otel::broker::{Broker, Message, RabbitMqBroker, Subscriber};
use micro_otel::discovery::MemoryRegistry;
use micro_otel::{Context, Service, Status};
use micro_otel_tests::harness::echo::EchoRequest;
use micro_otel_tests::harness::{Spans, missing, span};
use micro_otel_tests::pubsub::{Seen, event, fan_out_and_share, publisher, subscribed, wait_until};
use opentelemetry::trace::{SpanKind, TraceId};
use prost::Message as _;

/// The RabbitMQ of this test binary, with the watchdog that kills it when we exit.
struct Rabbit {
    uri: String,
    /// Held until the process exits: its closing tells the watchdog to stop RabbitMQ.
    _watchdog: Mutex<(Child, ChildStdin)>,
}

/// The shared RabbitMQ, started by the first caller.
fn rabbit() -> &'static Rabbit {
    static RABBIT: OnceLock<Rabbit> = OnceLock::new();
    RABBIT.get_or_init(start_rabbit)
}

/// The watchdog: starts epmd (on its own port, so it is ours to stop) and RabbitMQ, waits
/// for its stdin to close, then kills both by pid.
const WATCHDOG: &str = r#"
dir="$1"
epmd -port "$ERL_EPMD_PORT" -address 127.0.0.1 </dev/null >"$dir/epmd.log" 2>&1 &
epmd_pid=$!
i=0
until epmd -port "$ERL_EPMD_PORT" -names >/dev/null 2>&1 || [ $i -gt 100 ]; do
    sleep 0.1; i=$((i+1))
done
rabbitmq-server </dev/null >"$dir/server.log" 2>&1 &
server_pid=$!
cat >/dev/null
# This process is gone: stop RabbitMQ (its Erlang VM wrote its pid once it started).
i=0
while [ ! -s "$dir/pid" ] && kill -0 "$server_pid" 2>/dev/null && [ $i -lt 600 ]; do
    sleep 0.1; i=$((i+1))
done
[ -s "$dir/pid" ] && kill -9 "$(cat "$dir/pid")" 2>/dev/null
wait "$server_pid" 2>/dev/null
kill "$epmd_pid" 2>/dev/null
wait "$epmd_pid" 2>/dev/null
rm -rf "$dir"
"#;

fn start_rabbit() -> Rabbit {
    if !Path::new("/usr/sbin/rabbitmq-server").exists()
        || Command::new("epmd").arg("-help").output().is_err()
    {
        missing("rabbitmq-server not found; `apt-get install rabbitmq-server`");
    }
    // Kept after this process exits: the watchdog removes it once RabbitMQ is down.
    let dir = tempfile::Builder::new()
        .prefix("rabbitmq-test-")
        .tempdir()
        .expect("a temporary folder")
        .keep();
    for sub in ["mnesia", "log"] {
        std::fs::create_dir_all(dir.join(sub)).expect("folders");
    }
    // The Debian wrapper runs the server as the `rabbitmq` user.
    let owned = Command::new("chown")
        .args(["-R", "rabbitmq:rabbitmq"])
        .arg(&dir)
        .status()
        .expect("chown runs");
    assert!(owned.success(), "chown -R rabbitmq: {}", dir.display());
    let [amqp, dist, epmd] = free_ports();
    let path = |name: &str| dir.join(name).display().to_string();
    let started = Instant::now();
    let mut watchdog = Command::new("sh")
        .arg("-c")
        .arg(WATCHDOG)
        .arg("watchdog")
        .arg(&dir)
        .env("ERL_EPMD_PORT", epmd.to_string())
        .env("ERL_EPMD_ADDRESS", "127.0.0.1")
        .env("RABBITMQ_NODE_PORT", amqp.to_string())
        .env("RABBITMQ_DIST_PORT", dist.to_string())
        .env("RABBITMQ_NODENAME", "test@localhost")
        .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
        .env(
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS",
            "-kernel inet_dist_use_interface {127,0,0,1}",
        )
        .env("RABBITMQ_MNESIA_BASE", path("mnesia"))
        .env("RABBITMQ_LOG_BASE", path("log"))
        .env("RABBITMQ_PID_FILE", path("pid"))
        .env("RABBITMQ_FEATURE_FLAGS_FILE", path("ff"))
        .env("RABBITMQ_ENABLED_PLUGINS_FILE", path("plugins"))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sh starts");
    let stdin = watchdog.stdin.take().expect("piped");
    let uri = format!("amqp://guest:guest@127.0.0.1:{amqp}/%2f");
    // Ready when it accepts an AMQP connection (the port opens a little before). Probed
    // from a thread of its own: the caller may be inside a test's runtime.
    let probe = |uri: &str| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(async {
            let connecting = Connection::connect(uri, ConnectionProperties::default());
            match tokio::time::timeout(Duration::from_secs(2), connecting).await {
                Ok(Ok(connection)) => connection.close(200, "OK".into()).await.is_ok(),
                _ => false,
            }
        })
    };
    while !std::thread::scope(|s| s.spawn(|| probe(&uri)).join().expect("probe thread")) {
        let exited = watchdog.try_wait().ok().flatten();
        assert!(
            exited.is_none() && started.elapsed() < Duration::from_secs(60),
            "RabbitMQ did not come up (watchdog exit: {exited:?}); its output:\n{}",
            std::fs::read_to_string(dir.join("server.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("RabbitMQ ready in {:?}", started.elapsed());
    Rabbit {
        uri,
        _watchdog: Mutex::new((watchdog, stdin)),
    }
}

/// Ports nothing listens on now.
fn free_ports<const N: usize>() -> [u16; N] {
    let listeners: Vec<_> = (0..N)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind"))
        .collect();
    std::array::from_fn(|i| listeners[i].local_addr().expect("bound").port())
}

impl Rabbit {
    /// A broker on the exchange `exchange` (one per test).
    fn broker(&self, exchange: &str) -> RabbitMqBroker {
        RabbitMqBroker::lazy(&self.uri).with_exchange(exchange)
    }

    /// A plain AMQP channel, to look behind the broker.
    async fn channel(&self) -> (Connection, Channel) {
        let connection = Connection::connect(&self.uri, ConnectionProperties::default())
            .await
            .expect("connects");
        let channel = connection.create_channel().await.expect("a channel");
        (connection, channel)
    }
}

/// How many messages are ready in `queue` (it must exist).
async fn ready_in(channel: &Channel, queue: &str) -> u32 {
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap_or_else(|e| panic!("queue {queue} exists: {e}"))
        .message_count()
}

#[cfg_attr(
    not(have_rabbitmq),
    ignore = "needs RabbitMQ: apt-get install rabbitmq-server"
)]
#[tokio::test]
async fn every_service_gets_every_message_and_instances_of_one_share_them() {
    let rabbit = rabbit();
    let topic = "fanout.user.created";
    fan_out_and_share(&rabbit.broker("fanout"), topic, Duration::from_secs(20)).await;
    // Both groups' queues are durable quorum queues named <group>.<topic>, now empty.
    let (_connection, channel) = rabbit.channel().await;
    for group in ["audit", "mailer"] {
        let queue = RabbitMqBroker::queue_name(group, topic);
        assert_eq!(
            ready_in(&channel, &queue).await,
            0,
            "{queue} acknowledged everything"
        );
    }
}

#[cfg_attr(
    not(have_rabbitmq),
    ignore = "needs RabbitMQ: apt-get install rabbitmq-server"
)]
#[tokio::test]
async fn a_handler_that_fails_twice_then_succeeds_gets_the_message_three_times_then_acks_it() {
    let rabbit = rabbit();
    let broker = rabbit.broker("retry");
    let topic = "retry.jobs";
    let calls = Arc::new(AtomicU32::new(0));
    let service = Service::builder("worker")
        .registry(MemoryRegistry::new())
        .broker(broker.clone())
        .instrumentation(micro_otel::Instrumentation::off())
        .build();
    let counted = calls.clone();
    let stats = service
        .subscribe(Subscriber::new(topic, move |_: Context, _: EchoRequest| {
            let call = counted.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                if call <= 2 {
                    return Err(Status::unavailable(format!("failure {call}")));
                }
                Ok(())
            }
        }))
        .unwrap();
    let running = service.start().await.unwrap();
    publisher(&broker, topic)
        .publish(&event("job".into()))
        .await
        .unwrap();
    wait_until(Duration::from_secs(10), "the success", || {
        stats.handled() == 1
    })
    .await;
    running.stop().await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 3, "delivered three times");
    assert_eq!((stats.failed(), stats.handled()), (2, 1));
    // Stopping closed the channel: anything unacknowledged would be ready again.
    let (_connection, channel) = rabbit.channel().await;
    let queue = RabbitMqBroker::queue_name("worker", topic);
    assert_eq!(ready_in(&channel, &queue).await, 0, "acknowledged");
    let dead = RabbitMqBroker::dead_letter_queue_name("worker", topic);
    assert_eq!(ready_in(&channel, &dead).await, 0, "not dead-lettered");
}

#[cfg_attr(
    not(have_rabbitmq),
    ignore = "needs RabbitMQ: apt-get install rabbitmq-server"
)]
#[tokio::test]
async fn deliveries_count_their_attempts_and_past_the_limit_the_message_is_dead_lettered() {
    let rabbit = rabbit();
    let broker = rabbit.broker("limit").with_max_deliveries(3);
    let topic = "limit.jobs";
    let mut deliveries = broker.subscribe(topic, Some("limited")).await.unwrap();
    let mut headers = tonic::metadata::MetadataMap::new();
    headers.insert("tenant", "acme".parse().unwrap());
    broker
        .publish(Message {
            topic: topic.into(),
            headers,
            body: b"payload".to_vec().into(),
            id: Some("job-1".into()),
        })
        .await
        .unwrap();
    let mut attempts = Vec::new();
    for _ in 0..3 {
        let delivery = tokio::time::timeout(Duration::from_secs(10), deliveries.next())
            .await
            .expect("a delivery within 10 s")
            .expect("the subscription goes on");
        assert_eq!(delivery.message.topic, topic);
        assert_eq!(delivery.message.id.as_deref(), Some("job-1"));
        assert_eq!(&delivery.message.body[..], b"payload");
        assert_eq!(delivery.message.headers.get("tenant").unwrap(), "acme");
        assert!(delivery.message.headers.get("x-delivery-count").is_none());
        attempts.push(delivery.attempt);
        delivery.settle.expect("settled").nack().await.unwrap();
    }
    assert_eq!(attempts, [1, 2, 3]);
    let (_connection, channel) = rabbit.channel().await;
    let dead = RabbitMqBroker::dead_letter_queue_name("limited", topic);
    let letter = get_eventually(&channel, &dead).await;
    assert_eq!(letter.data, b"payload");
    assert_eq!(death_reason(&letter), Some("delivery_limit".into()));
    drop(deliveries);
}

/// The first message of `queue`, polled for up to 10 s.
async fn get_eventually(channel: &Channel, queue: &str) -> lapin::message::BasicGetMessage {
    let started = Instant::now();
    loop {
        let got = channel
            .basic_get(queue.into(), BasicGetOptions { no_ack: true })
            .await
            .expect("basic.get");
        if let Some(message) = got {
            return message;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "nothing in {queue}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Why RabbitMQ dead-lettered a message (the `reason` of its first `x-death` entry).
fn death_reason(message: &lapin::message::BasicGetMessage) -> Option<String> {
    let headers = message.properties.headers().as_ref()?;
    let AMQPValue::FieldArray(deaths) = headers.inner().get("x-death")? else {
        return None;
    };
    let AMQPValue::FieldTable(death) = deaths.as_slice().first()? else {
        return None;
    };
    match death.inner().get("reason")? {
        AMQPValue::LongString(reason) => Some(reason.to_string()),
        other => Some(format!("{other:?}")),
    }
}

#[cfg_attr(
    not(have_rabbitmq),
    ignore = "needs RabbitMQ: apt-get install rabbitmq-server"
)]
#[tokio::test]
async fn a_message_that_does_not_decode_goes_to_the_dead_letter_queue_at_once() {
    let rabbit = rabbit();
    let broker = rabbit.broker("poison");
    let topic = "poison.user.created";
    let seen = Seen::default();
    let service = Service::builder("mailer")
        .registry(MemoryRegistry::new())
        .broker(broker.clone())
        .instrumentation(micro_otel::Instrumentation::off())
        .build();
    let log = seen.clone();
    let stats = service
        .subscribe(Subscriber::new(topic, move |_: Context, e: EchoRequest| {
            let log = log.clone();
            async move {
                log.lock().unwrap().push(("mailer".into(), e.message));
                Ok(())
            }
        }))
        .unwrap();
    let running = service.start().await.unwrap();
    broker
        .publish(Message {
            topic: topic.into(),
            body: vec![0xff, 0xff, 0xff].into(),
            ..Default::default()
        })
        .await
        .unwrap();
    publisher(&broker, topic)
        .publish(&event("after".into()))
        .await
        .unwrap();
    wait_until(Duration::from_secs(10), "the good message", || {
        stats.handled() == 1
    })
    .await;
    assert_eq!(stats.undecodable(), 1);
    running.stop().await.unwrap();

    let (_connection, channel) = rabbit.channel().await;
    let dead = RabbitMqBroker::dead_letter_queue_name("mailer", topic);
    let letter = get_eventually(&channel, &dead).await;
    assert_eq!(letter.data, [0xff, 0xff, 0xff], "the poison message itself");
    assert_eq!(
        death_reason(&letter),
        Some("rejected".into()),
        "rejected, not retried"
    );
    assert_eq!(
        ready_in(&channel, &dead).await,
        0,
        "only the poison message"
    );
    assert_eq!(
        ready_in(&channel, &RabbitMqBroker::queue_name("mailer", topic)).await,
        0
    );
}

#[cfg_attr(
    not(have_rabbitmq),
    ignore = "needs RabbitMQ: apt-get install rabbitmq-server"
)]
#[tokio::test]
async fn a_subscription_without_a_group_counts_its_redeliveries_and_drops_past_the_limit() {
    let rabbit = rabbit();
    let broker = rabbit.broker("nogroup").with_max_deliveries(2);
    let topic = "nogroup.ping";
    let mut deliveries = broker.subscribe(topic, None).await.unwrap();
    broker
        .publish(Message {
            topic: topic.into(),
            body: b"ping".to_vec().into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(10), deliveries.next())
            .await
            .expect("a delivery within 10 s")
            .expect("the subscription goes on")
    };
    let first = next().await;
    assert_eq!(first.attempt, 1);
    first.settle.unwrap().nack().await.unwrap();
    let second = next().await;
    assert_eq!(
        (second.attempt, &second.message.body[..]),
        (2, &b"ping"[..])
    );
    assert!(second.message.headers.get("x-micro-attempt").is_none());
    // The last delivery allowed: a nack drops it (were it published again, it would come
    // before the next message).
    second.settle.unwrap().nack().await.unwrap();
    broker
        .publish(Message {
            topic: topic.into(),
            body: b"pong".to_vec().into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let third = next().await;
    assert_eq!((third.attempt, &third.message.body[..]), (1, &b"pong"[..]));
    third.settle.unwrap().ack().await.unwrap();
}

#[cfg_attr(
    not(have_rabbitmq),
    ignore = "needs RabbitMQ: apt-get install rabbitmq-server"
)]
#[tokio::test]
async fn ten_thousand_messages_survive_an_instance_stopping_and_starting_again() {
    let rabbit = rabbit();
    let broker = rabbit.broker("restart");
    let topic = "restart.orders";
    const TOTAL: usize = 10_000;
    let seen = Seen::default();
    let steady = subscribed("billing", "steady", topic, &broker, None, &seen).await;
    let restarted = subscribed("billing", "first", topic, &broker, None, &seen).await;
    let publisher = publisher(&broker, topic);
    let started = Instant::now();
    let publishing = tokio::spawn(async move {
        futures_util::stream::iter(0..TOTAL)
            .for_each_concurrent(64, |i| {
                let publisher = publisher.clone();
                async move {
                    publisher
                        .publish(&event(format!("order {i}")))
                        .await
                        .unwrap();
                }
            })
            .await;
        started.elapsed()
    });
    // Stop one instance part-way, and start another in its place.
    wait_until(Duration::from_secs(60), "a first share", || {
        seen.lock()
            .unwrap()
            .iter()
            .filter(|(i, _)| i == "first")
            .count()
            >= 500
    })
    .await;
    restarted.stop().await.unwrap();
    let at_stop = seen.lock().unwrap().len();
    let again = subscribed("billing", "again", topic, &broker, None, &seen).await;
    let published_in = publishing.await.unwrap();
    let unique = || -> usize {
        let seen = seen.lock().unwrap();
        seen.iter()
            .map(|(_, m)| m.clone())
            .collect::<BTreeSet<_>>()
            .len()
    };
    wait_until(Duration::from_secs(120), "every message", || {
        unique() == TOTAL
    })
    .await;
    let processed_in = started.elapsed();
    let seen_now = seen.lock().unwrap().clone();
    let by = |instance: &str| seen_now.iter().filter(|(i, _)| i == instance).count();
    eprintln!(
        "{TOTAL} published in {published_in:?} ({:.0}/s, 64 at once), all processed in \
         {processed_in:?} ({:.0}/s); {at_stop} processed when one instance stopped; shares: \
         steady {}, first {}, again {}; {} duplicates",
        TOTAL as f64 / published_in.as_secs_f64(),
        TOTAL as f64 / processed_in.as_secs_f64(),
        by("steady"),
        by("first"),
        by("again"),
        seen_now.len() - TOTAL,
    );
    assert!(by("again") > 0, "the new instance took a share");
    for running in [steady, again] {
        running.stop().await.unwrap();
    }
    let (_connection, channel) = rabbit.channel().await;
    assert_eq!(
        ready_in(&channel, &RabbitMqBroker::queue_name("billing", topic)).await,
        0,
        "nothing left"
    );
}

/// A Python with `pika` (pip installs it from PyPI the first time).
fn pika_python() -> PathBuf {
    micro_otel_tests::python::venv(
        env!("CARGO_TARGET_TMPDIR"),
        "pika-venv",
        &["pika"],
        "import pika",
    )
}

const PIKA_GET: &str = r#"
import json, sys, time, pika
connection = pika.BlockingConnection(pika.URLParameters(sys.argv[1]))
channel = connection.channel()
for _ in range(200):
    method, properties, body = channel.basic_get(sys.argv[2], auto_ack=True)
    if method:
        break
    time.sleep(0.05)
headers = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in (properties.headers or {}).items()}
print(json.dumps({"headers": headers, "body": body.hex(), "routing_key": method.routing_key,
                  "delivery_mode": properties.delivery_mode, "message_id": properties.message_id}))
connection.close()
"#;

const PIKA_PUBLISH: &str = r#"
import sys, pika
connection = pika.BlockingConnection(pika.URLParameters(sys.argv[1]))
channel = connection.channel()
channel.confirm_delivery()
channel.basic_publish(exchange=sys.argv[2], routing_key=sys.argv[3], body=bytes.fromhex(sys.argv[4]),
                      properties=pika.BasicProperties(delivery_mode=2, headers={"traceparent": sys.argv[5]}))
connection.close()
"#;

/// `00-<32 hex>-<16 hex>-<2 hex>`.
fn is_w3c_traceparent(value: &str) -> bool {
    let parts: Vec<&str> = value.split('-').collect();
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    parts.len() == 4
        && parts[0] == "00"
        && hex(parts[1], 32)
        && hex(parts[2], 16)
        && hex(parts[3], 2)
}

#[cfg_attr(
    not(all(have_rabbitmq, have_python_venv)),
    ignore = "needs RabbitMQ: apt-get install rabbitmq-server; python3 with venv: apt-get install python3-venv"
)]
#[tokio::test]
async fn a_plain_pika_client_reads_our_message_with_a_w3c_traceparent() {
    let rabbit = rabbit();
    let python = pika_python();
    let broker = rabbit.broker("interop-out");
    let topic = "interop.out";
    // The broker declares its exchange on first use; a queue of pika's own is bound to it.
    broker
        .publish(Message {
            topic: "warm-up".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let (_connection, channel) = rabbit.channel().await;
    channel
        .queue_declare(
            "pika.out".into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    channel
        .queue_bind(
            "pika.out".into(),
            "interop-out".into(),
            topic.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let spans = Spans::default();
    let publisher = Service::builder("users")
        .registry(MemoryRegistry::new())
        .broker(broker.clone())
        .instrumentation(spans.instrumentation())
        .build()
        .publisher::<EchoRequest>(topic);
    let mut extra = tonic::metadata::MetadataMap::new();
    extra.insert("tenant", "acme".parse().unwrap());
    publisher
        .publish_with(&event("ada".into()), extra)
        .await
        .unwrap();

    let out = tokio::task::spawn_blocking({
        let (python, uri) = (python.clone(), rabbit.uri.clone());
        move || micro_otel_tests::python::run(&python, PIKA_GET, &[&uri, "pika.out"])
    })
    .await
    .unwrap();
    let read: serde_json::Value = serde_json::from_str(out.trim()).expect("json from pika");
    let traceparent = read["headers"]["traceparent"]
        .as_str()
        .expect("a traceparent header");
    assert!(is_w3c_traceparent(traceparent), "{traceparent}");
    assert_eq!(read["headers"]["tenant"], "acme");
    assert_eq!(read["routing_key"], topic);
    assert_eq!(read["delivery_mode"], 2, "persistent");
    let body = read["body"].as_str().unwrap();
    assert_eq!(body, hex(&event("ada".into()).encode_to_vec()));
    let send = spans.wait_for(1).await;
    let send = span(&send, &format!("send {topic}"), SpanKind::Producer);
    assert_eq!(
        traceparent.split('-').nth(1).unwrap(),
        send.span_context.trace_id().to_string(),
        "the send span's trace"
    );
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg_attr(
    not(all(have_rabbitmq, have_python_venv)),
    ignore = "needs RabbitMQ: apt-get install rabbitmq-server; python3 with venv: apt-get install python3-venv"
)]
#[tokio::test]
async fn a_message_a_pika_client_publishes_is_processed_under_its_trace() {
    let rabbit = rabbit();
    let python = pika_python();
    let broker = rabbit.broker("interop-in");
    let topic = "interop.in";
    let spans = Spans::default();
    let seen = Seen::default();
    let service = Service::builder("mailer")
        .registry(MemoryRegistry::new())
        .broker(broker.clone())
        .instrumentation(spans.instrumentation())
        .build();
    let log = seen.clone();
    service
        .subscribe(Subscriber::new(topic, move |_: Context, e: EchoRequest| {
            let log = log.clone();
            async move {
                log.lock().unwrap().push(("mailer".into(), e.message));
                Ok(())
            }
        }))
        .unwrap();
    let running = service.start().await.unwrap();
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let traceparent = format!("00-{trace}-00f067aa0ba902b7-01");
    let body = hex(&event("from pika".into()).encode_to_vec());
    tokio::task::spawn_blocking({
        let (python, uri) = (python.clone(), rabbit.uri.clone());
        let traceparent = traceparent.clone();
        move || {
            micro_otel_tests::python::run(
                &python,
                PIKA_PUBLISH,
                &[&uri, "interop-in", topic, &body, &traceparent],
            )
        }
    })
    .await
    .unwrap();
    wait_until(Duration::from_secs(10), "pika's message", || {
        !seen.lock().unwrap().is_empty()
    })
    .await;
    assert_eq!(seen.lock().unwrap()[0].1, "from pika");
    let finished = spans.wait_for(1).await;
    let process = span(&finished, &format!("process {topic}"), SpanKind::Consumer);
    assert_eq!(
        process.span_context.trace_id(),
        TraceId::from_hex(trace).unwrap(),
        "processed under pika's trace"
    );
    running.stop().await.unwrap();
}

/// Publishes and processes `total` messages through one service on `broker` (tracing on or
/// off); prints and returns (published/s, processed/s).
async fn throughput(
    broker: &RabbitMqBroker,
    topic: &str,
    total: usize,
    traced: bool,
) -> (f64, f64) {
    let spans = Spans::default();
    let service = |name: &str| {
        let builder = Service::builder(name)
            .registry(MemoryRegistry::new())
            .broker(broker.clone());
        match traced {
            true => builder.instrumentation(spans.instrumentation()).build(),
            false => builder
                .instrumentation(micro_otel::Instrumentation::off())
                .build(),
        }
    };
    let consumer = service("bench-consumer");
    let stats = consumer
        .subscribe(
            Subscriber::new(topic, |_: Context, _: EchoRequest| async { Ok(()) }).concurrency(64),
        )
        .unwrap();
    let running = consumer.start().await.unwrap();
    let publisher = service("bench-producer").publisher::<EchoRequest>(topic);
    let started = Instant::now();
    futures_util::stream::iter(0..total)
        .for_each_concurrent(64, |i| {
            let publisher = publisher.clone();
            async move {
                publisher.publish(&event(format!("m {i}"))).await.unwrap();
            }
        })
        .await;
    let published = started.elapsed();
    wait_until(Duration::from_secs(120), "every message", || {
        stats.handled() as usize >= total
    })
    .await;
    let processed = started.elapsed();
    running.stop().await.unwrap();
    let rates = (
        total as f64 / published.as_secs_f64(),
        total as f64 / processed.as_secs_f64(),
    );
    eprintln!(
        "tracing {}: {total} published in {published:?} ({:.0}/s, 64 at once), processed in \
         {processed:?} ({:.0}/s)",
        if traced { "on" } else { "off" },
        rates.0,
        rates.1
    );
    rates
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: cargo test -p micro-otel-tests --test rabbitmq -- --ignored --nocapture"]
async fn throughput_with_tracing_on_and_off() {
    let rabbit = rabbit();
    let broker = rabbit.broker("bench").with_prefetch(128);
    throughput(&broker, "bench.off", 5_000, false).await;
    throughput(&broker, "bench.on", 5_000, true).await;
}
