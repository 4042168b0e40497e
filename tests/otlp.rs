//! The OTLP path for real: telemetry set up with an OTLP/gRPC exporter and batching sends
//! the service's spans to a receiver over loopback, with the service's resource.

use std::time::Duration;

use micro_otel::Service;
use micro_otel::registry::MemoryRegistry;
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
        .tracer_provider(telemetry.provider().clone())
        .build();
    echo::register_echo_handler(&service, Echo::default());
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
