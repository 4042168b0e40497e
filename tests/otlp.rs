//! The OTLP path for real: telemetry set up with an OTLP/gRPC exporter and batching sends
//! the service's spans to a receiver over loopback, with the service's resource.

use std::time::Duration;

use micro_otel::Service;
use micro_otel::discovery::MemoryRegistry;
use micro_otel::telemetry::Telemetry;
use micro_otel_tests::harness::Echo;
use micro_otel_tests::harness::echo::{self, EchoClient, EchoRequest};
use micro_otel_tests::otlp::Receiver;

#[tokio::test(flavor = "multi_thread")]
async fn spans_reach_an_otlp_receiver_in_batches() {
    let receiver = Receiver::start().await.unwrap();
    let telemetry = Telemetry::builder("otlp.test")
        .version("9.9.9")
        .otlp(receiver.endpoint())
        .sample_ratio(1.0)
        .max_queue_size(1024)
        .max_export_batch_size(8)
        .scheduled_delay(Duration::from_millis(100))
        .install_global(false)
        .init()
        .unwrap();
    let service = Service::builder("echo.service")
        .registry(MemoryRegistry::new())
        .instrumentation(telemetry.instrumentation())
        .build();
    echo::register_echo_handler(&service, Echo::default())
        .expect("handler registered before start");
    let running = service.start().await.unwrap();
    let client = EchoClient::new("echo.service", service.client());
    for _ in 0..10 {
        client.unary(EchoRequest::default()).await.unwrap();
    }
    running.stop().await.unwrap();
    tokio::task::spawn_blocking(move || telemetry.shutdown())
        .await
        .unwrap();

    let received = receiver.received();
    assert_eq!(
        received.len(),
        20,
        "10 client + 10 server spans: {received:?}"
    );
    assert!(
        received
            .iter()
            .all(|(service, name)| service == "otlp.test" && name == "echo.v1.Echo/Unary")
    );
}

#[tokio::test]
async fn a_bad_sample_ratio_is_refused_with_its_value() {
    let err = Telemetry::builder("x")
        .no_export()
        .sample_ratio(1.5)
        .install_global(false)
        .init()
        .unwrap_err();
    assert!(err.to_string().contains("1.5"), "{err}");
}

/// A service traced through `telemetry`, answering `calls` echo calls.
async fn make_calls(telemetry: &Telemetry, calls: usize) {
    let service = Service::builder("echo.service")
        .registry(MemoryRegistry::new())
        .instrumentation(telemetry.instrumentation())
        .build();
    echo::register_echo_handler(&service, Echo::default())
        .expect("handler registered before start");
    let running = service.start().await.unwrap();
    let client = EchoClient::new("echo.service", service.client());
    for _ in 0..calls {
        client.unary(EchoRequest::default()).await.unwrap();
    }
    running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn batch_size_and_resource_version_are_applied() {
    let receiver = Receiver::start().await.unwrap();
    let telemetry = Telemetry::builder("otlp.test")
        .version("9.9.9")
        .otlp(receiver.endpoint())
        .max_export_batch_size(4)
        .scheduled_delay(Duration::from_secs(60))
        .install_global(false)
        .init()
        .unwrap();
    make_calls(&telemetry, 8).await;
    tokio::task::spawn_blocking(move || telemetry.shutdown())
        .await
        .unwrap();
    assert_eq!(receiver.received().len(), 16);
    assert!(
        receiver.exports() >= 4,
        "16 spans in batches of at most 4: {} exports",
        receiver.exports()
    );
    assert!(receiver.service_versions().iter().all(|v| v == "9.9.9"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_zero_sample_ratio_exports_nothing_while_calls_work() {
    let receiver = Receiver::start().await.unwrap();
    let telemetry = Telemetry::builder("otlp.test")
        .otlp(receiver.endpoint())
        .sample_ratio(0.0)
        .install_global(false)
        .init()
        .unwrap();
    make_calls(&telemetry, 10).await;
    tokio::task::spawn_blocking(move || telemetry.shutdown())
        .await
        .unwrap();
    assert!(receiver.received().is_empty(), "{:?}", receiver.received());
}

/// The median and 99th percentile latency of `n` echo calls.
async fn latencies(echo: &EchoClient, n: usize) -> (Duration, Duration) {
    let mut took = Vec::with_capacity(n);
    for _ in 0..n {
        let start = std::time::Instant::now();
        echo.unary(EchoRequest::default()).await.unwrap();
        took.push(start.elapsed());
    }
    took.sort();
    (took[n / 2], took[n * 99 / 100])
}

/// The exporter never hurts the service: with the collector down, or accepting connections
/// and never answering, calls keep their latency (a ratio within this run, generous: this
/// is a check that nothing waits on the collector, not a benchmark), spans beyond the
/// bounded queue are dropped and counted, and export resumes by itself once the collector
/// is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_down_or_blackholed_costs_spans_not_latency_and_export_resumes() {
    let receiver = Receiver::start().await.unwrap();
    let address: std::net::SocketAddr = receiver.endpoint()["http://".len()..].parse().unwrap();
    let telemetry = Telemetry::builder("exporter.test")
        .otlp(receiver.endpoint())
        .sample_ratio(1.0)
        .max_queue_size(64)
        .max_export_batch_size(32)
        .scheduled_delay(Duration::from_millis(20))
        .export_timeout(Duration::from_millis(200))
        .logs(false)
        .install_global(false)
        .init()
        .unwrap();
    let service = Service::builder("echo")
        .registry(MemoryRegistry::new())
        .instrumentation(telemetry.instrumentation())
        .build();
    echo::register_echo_handler(&service, Echo::default()).unwrap();
    let running = service.start().await.unwrap();
    let echo = EchoClient::new(&running.local_addr().to_string(), service.client());

    let (up, up_p99) = latencies(&echo, 300).await;
    drop(receiver); // down: connections refused
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (down, down_p99) = latencies(&echo, 300).await;
    // Blackholed: connections accepted, nothing ever answered.
    let hole = tokio::net::TcpListener::bind(address).await.unwrap();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = hole.accept().await {
            open.push(socket);
        }
    });
    let (blackholed, blackholed_p99) = latencies(&echo, 300).await;
    assert!(
        telemetry.dropped_spans() > 0,
        "the queue (64 spans) overflowed and the drops were counted"
    );
    held.abort();
    let _ = held.await;
    let back = Receiver::start_at(address).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while back.received().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "export resumed by itself"
        );
        echo.unary(EchoRequest::default()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "latency p50/p99: up {up:?}/{up_p99:?}, down {down:?}/{down_p99:?}, \
         blackholed {blackholed:?}/{blackholed_p99:?}; {} spans dropped",
        telemetry.dropped_spans()
    );
    for (what, latency) in [("down", down), ("blackholed", blackholed)] {
        assert!(
            latency < up * 3 + Duration::from_millis(1),
            "{what}: {latency:?} against {up:?} with the collector up"
        );
    }
    running.stop().await.unwrap();
    tokio::task::spawn_blocking(move || telemetry.shutdown())
        .await
        .unwrap();
}
