//! The example's three signals through a real collector, as an operator runs it: `rotel`
//! (from PyPI) receives OTLP from `user-example server` and `client` processes configured
//! only by `OTEL_*` variables, and forwards to a receiver in this test, which parses what
//! arrived: span names and attributes, metric names, units, buckets, values and attributes,
//! log records with their trace and span ids.

use std::collections::BTreeMap;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use micro_otel_tests::otlp::{Receiver, Requests};
use micro_otel_tests::rotel::Rotel;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::metric;

mod common;

use common::BIN;

/// Quick exports, so a test need not wait a minute for metrics.
const QUICK: &[(&str, &str)] = &[
    ("OTEL_METRIC_EXPORT_INTERVAL", "200"),
    ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ("OTEL_BLRP_SCHEDULE_DELAY", "100"),
];

fn text(value: &Option<AnyValue>) -> String {
    match value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

fn attributes(list: &[KeyValue]) -> BTreeMap<String, String> {
    list.iter()
        .map(|kv| (kv.key.clone(), text(&kv.value)))
        .collect()
}

/// One histogram data point as received.
#[derive(Debug, Clone)]
struct Histogram {
    service: String,
    name: String,
    unit: String,
    attributes: BTreeMap<String, String>,
    count: u64,
    sum: f64,
    bounds: Vec<f64>,
}

/// The latest (cumulative) point of every histogram series received.
fn histograms(requests: &Requests) -> Vec<Histogram> {
    let mut latest: BTreeMap<String, Histogram> = BTreeMap::new();
    for request in &requests.metrics {
        for resource in &request.resource_metrics {
            let resource_attributes = attributes(
                resource
                    .resource
                    .as_ref()
                    .map_or(&[][..], |r| &r.attributes),
            );
            let service = resource_attributes
                .get("service.name")
                .cloned()
                .unwrap_or_default();
            for scope in &resource.scope_metrics {
                for metric in &scope.metrics {
                    let Some(metric::Data::Histogram(h)) = &metric.data else {
                        continue;
                    };
                    for point in &h.data_points {
                        let histogram = Histogram {
                            service: service.clone(),
                            name: metric.name.clone(),
                            unit: metric.unit.clone(),
                            attributes: attributes(&point.attributes),
                            count: point.count,
                            sum: point.sum.unwrap_or_default(),
                            bounds: point.explicit_bounds.clone(),
                        };
                        let key = format!("{service}{}{:?}", metric.name, histogram.attributes);
                        latest.insert(key, histogram);
                    }
                }
            }
        }
    }
    latest.into_values().collect()
}

/// The series of `name` from `service` whose attributes include `with`.
fn series<'a>(
    histograms: &'a [Histogram],
    service: &'a str,
    name: &'a str,
    with: &'a [(&str, &str)],
) -> impl Iterator<Item = &'a Histogram> {
    histograms
        .iter()
        .filter(move |h| h.service == service && h.name == name)
        .filter(move |h| {
            with.iter()
                .all(|(k, v)| h.attributes.get(*k).map(String::as_str) == Some(*v))
        })
}

/// The total count of `name`'s series from `service` whose attributes include `with`.
fn count(histograms: &[Histogram], service: &str, name: &str, with: &[(&str, &str)]) -> u64 {
    series(histograms, service, name, with)
        .map(|h| h.count)
        .sum()
}

/// The total sum of `name`'s series from `service` whose attributes include `with`.
fn sum(histograms: &[Histogram], service: &str, name: &str, with: &[(&str, &str)]) -> f64 {
    series(histograms, service, name, with).map(|h| h.sum).sum()
}

/// A receiver, and rotel forwarding to it: the collector the processes export to.
async fn collector() -> (Receiver, Rotel) {
    let receiver = Receiver::start().await.unwrap();
    let rotel = Rotel::start(env!("CARGO_TARGET_TMPDIR"), &receiver.endpoint());
    (receiver, rotel)
}

/// Starts `user-example server` with `env`; returns it and its address.
fn server(env: &[(&str, &str)]) -> (Child, String) {
    common::start_server(&[], env)
}

/// Runs `user-example client ARGS` with `env` to its end.
fn client(args: &[&str], env: &[(&str, &str)]) -> String {
    let output = Command::new(BIN)
        .arg("client")
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stop(mut server: Child) {
    let terminated = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(terminated.success());
    assert!(
        server.wait().unwrap().success(),
        "SIGTERM stops the server cleanly"
    );
}

/// Waits (at most 15 s) until `done` holds for what the receiver has.
async fn until(
    receiver: &Receiver,
    rotel: &Rotel,
    what: &str,
    done: impl Fn(&Requests) -> bool,
) -> Requests {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let requests = receiver.requests();
        if done(&requests) {
            return requests;
        }
        assert!(
            Instant::now() < deadline,
            "{what} never arrived: {} trace, {} metric, {} log exports; rotel said:\n{}",
            requests.traces.len(),
            requests.metrics.len(),
            requests.logs.len(),
            rotel.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg_attr(
    not(have_python_venv),
    ignore = "needs python3 with venv (rotel comes from PyPI): apt-get install python3-venv"
)]
#[tokio::test(flavor = "multi_thread")]
async fn the_example_s_spans_metrics_and_logs_reach_a_real_collector() {
    let (receiver, rotel) = collector().await;
    let endpoint = rotel.grpc_endpoint();
    let mut env = QUICK.to_vec();
    env.push(("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint));
    let (running, address) = server(&env);
    client(&["--address", &address], &env); // the tour: CreateUser, GetUser, ListUsers, WatchUsers
    let mut calls = env.clone();
    calls.push(("OTEL_SERVICE_NAME", "user.caller"));
    // GetUser 1 to 5: user 1 exists (the tour made it), the other four are NOT_FOUND.
    client(&["--address", &address, "--calls", "5"], &calls);
    stop(running);

    let server_calls = |r: &Requests| {
        count(
            &histograms(r),
            "user.service",
            "rpc.server.call.duration",
            &[("rpc.method", "user.User/GetUser")],
        ) >= 6
    };
    let requests = until(&receiver, &rotel, "the server's metrics", |r| {
        server_calls(r) && !r.logs.is_empty()
    })
    .await;

    // Metrics: names, units, buckets, the status split, each side's error.type.
    let histograms = histograms(&requests);
    let get = ("rpc.method", "user.User/GetUser");
    let server_duration = "rpc.server.call.duration";
    assert_eq!(
        count(&histograms, "user.service", server_duration, &[get]),
        6
    );
    assert_eq!(
        count(
            &histograms,
            "user.service",
            server_duration,
            &[get, ("rpc.response.status_code", "OK")]
        ),
        2
    );
    assert_eq!(
        count(
            &histograms,
            "user.service",
            server_duration,
            &[get, ("rpc.response.status_code", "NOT_FOUND")]
        ),
        4
    );
    assert_eq!(
        count(
            &histograms,
            "user.service",
            server_duration,
            &[get, ("error.type", "NOT_FOUND")]
        ),
        0,
        "a caller's error"
    );
    let client_duration = "rpc.client.call.duration";
    assert_eq!(
        count(
            &histograms,
            "user.caller",
            client_duration,
            &[get, ("error.type", "NOT_FOUND")]
        ),
        4
    );
    assert_eq!(
        count(
            &histograms,
            "user.caller",
            "grpc.client.attempt.duration",
            &[("grpc.method", "user.User/GetUser"), ("grpc.status", "OK")]
        ),
        1
    );
    for h in histograms.iter().filter(|h| h.name.ends_with(".duration")) {
        assert_eq!(h.unit, "s", "{}", h.name);
        assert_eq!(h.bounds.first(), Some(&0.0), "{}", h.name);
        assert_eq!(h.bounds.get(1), Some(&0.00001), "{}: A66's buckets", h.name);
        assert_eq!(h.bounds.last(), Some(&100.0), "{}", h.name);
        if h.attributes.values().any(|v| v.ends_with("/GetUser")) {
            assert!(h.sum < h.count as f64 * 2.0, "{}: seconds: {h:?}", h.name);
        }
        assert_eq!(
            h.attributes
                .get("rpc.system.name")
                .map(String::as_str)
                .unwrap_or("grpc"),
            "grpc"
        );
    }
    for h in histograms
        .iter()
        .filter(|h| h.name.ends_with("message_size"))
    {
        assert_eq!(h.unit, "By", "{}", h.name);
    }

    // Spans: the server's GetUser spans with their attributes, on a described resource.
    let mut server_spans = Vec::new();
    for request in &requests.traces {
        for resource_spans in &request.resource_spans {
            let resource = attributes(
                resource_spans
                    .resource
                    .as_ref()
                    .map_or(&[][..], |r| &r.attributes),
            );
            for scope in &resource_spans.scope_spans {
                for span in &scope.spans {
                    if resource.get("service.name").map(String::as_str) == Some("user.service")
                        && span.name == "user.User/GetUser"
                    {
                        server_spans.push((
                            resource.clone(),
                            attributes(&span.attributes),
                            span.clone(),
                        ));
                    }
                }
            }
        }
    }
    let (resource, span_attributes, _) = server_spans.first().expect("GetUser spans arrived");
    for key in [
        "host.name",
        "process.pid",
        "process.executable.name",
        "telemetry.sdk.name",
        "telemetry.sdk.language",
        "service.version",
    ] {
        assert!(
            resource.contains_key(key),
            "the resource has {key}: {resource:?}"
        );
    }
    assert_eq!(
        span_attributes.get("rpc.system.name").map(String::as_str),
        Some("grpc")
    );
    assert_eq!(
        span_attributes.get("rpc.method").map(String::as_str),
        Some("user.User/GetUser")
    );

    // Logs: the handler's `tracing::info!` as a record carrying its server span's ids.
    let created: Vec<_> = requests
        .logs
        .iter()
        .flat_map(|r| &r.resource_logs)
        .flat_map(|r| &r.scope_logs)
        .flat_map(|s| &s.log_records)
        .filter(|record| text(&record.body) == "user created")
        .collect();
    let record = created.first().expect("the handler's log line arrived");
    assert_eq!(record.severity_text, "INFO");
    assert_eq!(
        attributes(&record.attributes)
            .get("user.id")
            .map(String::as_str),
        Some("1")
    );
    let create_span = requests
        .traces
        .iter()
        .flat_map(|r| &r.resource_spans)
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| &s.spans)
        .find(|s| s.name == "user.User/CreateUser" && s.kind == 2)
        .expect("the CreateUser server span arrived");
    assert_eq!(
        record.trace_id, create_span.trace_id,
        "the log line is in the call's trace"
    );
    assert_eq!(
        record.span_id, create_span.span_id,
        "and names the server span"
    );
    drop(rotel);
}

/// Runs `--calls 2` against a server with `env` on top of the quick exports, and returns
/// once it has ended (its telemetry flushed).
fn calls_with(address: &str, env: &[(&str, &str)]) {
    let mut all = QUICK.to_vec();
    all.extend_from_slice(env);
    client(&["--address", address, "--calls", "2"], &all);
}

/// The service names whose spans, metrics and logs arrived, by signal.
fn services(requests: &Requests) -> [Vec<String>; 3] {
    let name = |resource: &Option<opentelemetry_proto::tonic::resource::v1::Resource>| {
        attributes(resource.as_ref().map_or(&[][..], |r| &r.attributes))
            .get("service.name")
            .cloned()
            .unwrap_or_default()
    };
    let traces = requests
        .traces
        .iter()
        .flat_map(|r| &r.resource_spans)
        .map(|r| name(&r.resource));
    let metrics = requests
        .metrics
        .iter()
        .flat_map(|r| &r.resource_metrics)
        .map(|r| name(&r.resource));
    let logs = requests
        .logs
        .iter()
        .flat_map(|r| &r.resource_logs)
        .map(|r| name(&r.resource));
    [traces.collect(), metrics.collect(), logs.collect()]
}

#[cfg_attr(
    not(have_python_venv),
    ignore = "needs python3 with venv (rotel comes from PyPI): apt-get install python3-venv"
)]
#[tokio::test(flavor = "multi_thread")]
async fn otel_variables_change_what_reaches_the_collector() {
    let (receiver, rotel) = collector().await;
    let (grpc, http) = (rotel.grpc_endpoint(), rotel.http_endpoint());
    // The server exports nothing, so what arrives comes from the clients.
    let (running, address) = server(&[("OTEL_SDK_DISABLED", "true")]);
    let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", grpc.as_str());
    calls_with(&address, &[endpoint, ("OTEL_SERVICE_NAME", "by.grpc")]);
    calls_with(
        &address,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", http.as_str()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_RESOURCE_ATTRIBUTES", "service.name=by.http,team=pay"),
        ],
    );
    calls_with(
        &address,
        &[
            endpoint,
            ("OTEL_SERVICE_NAME", "no.traces"),
            ("OTEL_TRACES_EXPORTER", "none"),
        ],
    );
    calls_with(
        &address,
        &[
            endpoint,
            ("OTEL_SERVICE_NAME", "never.sampled"),
            ("OTEL_TRACES_SAMPLER", "always_off"),
        ],
    );
    calls_with(
        &address,
        &[
            endpoint,
            ("OTEL_SERVICE_NAME", "disabled"),
            ("OTEL_SDK_DISABLED", "true"),
        ],
    );
    calls_with(
        &address,
        &[
            endpoint,
            ("OTEL_SERVICE_NAME", "no.metrics"),
            ("OTEL_METRICS_EXPORTER", "none"),
        ],
    );
    let requests = until(&receiver, &rotel, "every client's telemetry", |r| {
        let [traces, metrics, _] = services(r);
        ["by.grpc", "by.http", "no.metrics"]
            .iter()
            .all(|s| traces.iter().any(|t| t == s))
            && ["by.grpc", "by.http", "no.traces", "never.sampled"]
                .iter()
                .all(|s| metrics.iter().any(|m| m == s))
    })
    .await;
    // Give stragglers a moment, then look at everything.
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(requests);
    let [traces, metrics, _] = services(&receiver.requests());
    let has = |list: &[String], service: &str| list.iter().any(|s| s == service);
    assert!(
        has(&traces, "by.http") && has(&metrics, "by.http"),
        "http/protobuf carries both"
    );
    assert!(
        !has(&traces, "no.traces") && has(&metrics, "no.traces"),
        "OTEL_TRACES_EXPORTER=none"
    );
    assert!(
        !has(&traces, "never.sampled") && has(&metrics, "never.sampled"),
        "always_off"
    );
    assert!(
        has(&traces, "no.metrics") && !has(&metrics, "no.metrics"),
        "OTEL_METRICS_EXPORTER=none"
    );
    assert!(
        !has(&traces, "disabled") && !has(&metrics, "disabled"),
        "OTEL_SDK_DISABLED=true"
    );
    assert!(
        !has(&traces, "user.service"),
        "the disabled server sent nothing"
    );
    stop(running);
}

#[cfg_attr(
    not(have_python_venv),
    ignore = "needs python3 with venv (rotel comes from PyPI): apt-get install python3-venv"
)]
#[tokio::test(flavor = "multi_thread")]
async fn an_https_collector_with_mutual_tls_receives_over_grpc_and_http() {
    use micro_otel_tests::tls::{Certificates, TlsProxy};
    let (receiver, rotel) = collector().await;
    let certificates = Certificates::new();
    let plain = |endpoint: String| endpoint.trim_start_matches("http://").parse().unwrap();
    let grpc = TlsProxy::start(
        plain(rotel.grpc_endpoint()),
        certificates.server_config(true),
    )
    .await;
    let http = TlsProxy::start(
        plain(rotel.http_endpoint()),
        certificates.server_config(true),
    )
    .await;
    let (ca, certificate, key) = (
        certificates.path("ca.pem"),
        certificates.path("client.pem"),
        certificates.path("client.key"),
    );
    let mutual = [
        ("OTEL_EXPORTER_OTLP_CERTIFICATE", ca.to_str().unwrap()),
        (
            "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
            certificate.to_str().unwrap(),
        ),
        ("OTEL_EXPORTER_OTLP_CLIENT_KEY", key.to_str().unwrap()),
    ];
    let (running, address) = server(&[("OTEL_SDK_DISABLED", "true")]);
    let (grpc_endpoint, http_endpoint) = (grpc.endpoint(), http.endpoint());
    fn by<'a>(
        mutual: &[(&'a str, &'a str)],
        endpoint: &'a str,
        service: &'a str,
    ) -> Vec<(&'a str, &'a str)> {
        let mut env = mutual.to_vec();
        env.extend([
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
            ("OTEL_SERVICE_NAME", service),
        ]);
        env
    }
    calls_with(&address, &by(&mutual, &grpc_endpoint, "tls.grpc"));
    let mut over_http = by(&mutual, &http_endpoint, "tls.http");
    over_http.push(("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"));
    calls_with(&address, &over_http);
    // Without its certificate the client is turned away at the handshake, and its calls
    // are served all the same.
    calls_with(
        &address,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &grpc_endpoint),
            mutual[0],
            ("OTEL_SERVICE_NAME", "tls.anonymous"),
        ],
    );
    let requests = until(&receiver, &rotel, "both TLS clients' telemetry", |r| {
        let [traces, metrics, _] = services(r);
        ["tls.grpc", "tls.http"].iter().all(|service| {
            [&traces, &metrics]
                .iter()
                .all(|signal| signal.iter().any(|s| s == service))
        })
    })
    .await;
    stop(running);
    assert!(
        services(&requests)
            .iter()
            .all(|signal| !signal.iter().any(|s| s == "tls.anonymous")),
        "nothing came through without a client certificate"
    );
    assert!(grpc.handshakes() > 0 && http.handshakes() > 0);
    assert!(grpc.refused() > 0, "the anonymous client was refused");
}

/// A Python `grpcio` client instrumented with OpenTelemetry: three `GetUser(1)` calls
/// (user 1 does not exist: NOT_FOUND), its spans (OpenTelemetry's grpc instrumentation) and
/// its gRFC A66 metrics (`grpcio-observability`) exported over OTLP to `argv[2]`.
const PYTHON_CALLER: &str = r#"
import sys, grpc, grpc_observability
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.instrumentation.grpc import GrpcInstrumentorClient
resource = Resource.create({"service.name": "python.caller"})
provider = TracerProvider(resource=resource)
provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=sys.argv[2], insecure=True)))
trace.set_tracer_provider(provider)
GrpcInstrumentorClient().instrument()
reader = PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=sys.argv[2], insecure=True), export_interval_millis=200)
meters = MeterProvider(resource=resource, metric_readers=[reader])
# Every method keeps its name (grpcio records a method it was not told about as "other").
plugin = grpc_observability.OpenTelemetryPlugin(meter_provider=meters, generic_method_attribute_filter=lambda method: True)
plugin.register_global()
channel = grpc.insecure_channel(sys.argv[1])
get_user = channel.unary_unary("/user.User/GetUser", request_serializer=lambda b: b, response_deserializer=lambda b: b)
for _ in range(3):
    try:
        get_user(b"\x08\x01")  # GetUserRequest { id: 1 }
    except grpc.RpcError as error:
        print("status", error.code().name, flush=True)
channel.close()
plugin.deregister_global()
meters.force_flush()
meters.shutdown()
provider.force_flush()
provider.shutdown()
"#;

#[cfg_attr(
    not(have_python_venv),
    ignore = "needs python3 with venv (rotel, grpcio, grpcio-observability, opentelemetry from PyPI): apt-get install python3-venv"
)]
#[tokio::test(flavor = "multi_thread")]
async fn a_python_grpcio_client_and_our_server_share_traces_and_count_the_same_calls() {
    let python = micro_otel_tests::python::venv(
        env!("CARGO_TARGET_TMPDIR"),
        "grpc-otel-venv",
        &[
            "grpcio",
            "grpcio-observability",
            "opentelemetry-sdk",
            "opentelemetry-instrumentation-grpc",
            "opentelemetry-exporter-otlp-proto-grpc",
        ],
        "import grpc, grpc_observability, opentelemetry.instrumentation.grpc, opentelemetry.exporter.otlp.proto.grpc",
    );
    let (receiver, rotel) = collector().await;
    let endpoint = rotel.grpc_endpoint();
    let mut env = QUICK.to_vec();
    env.push(("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint));
    let (running, address) = server(&env);
    let said = micro_otel_tests::python::run(&python, PYTHON_CALLER, &[&address, &endpoint]);
    assert_eq!(said.matches("status NOT_FOUND").count(), 3, "{said}");
    stop(running);

    let spans = |r: &Requests, service: &str| -> Vec<opentelemetry_proto::tonic::trace::v1::Span> {
        r.traces
            .iter()
            .flat_map(|t| &t.resource_spans)
            .filter(|rs| {
                attributes(rs.resource.as_ref().map_or(&[][..], |r| &r.attributes))
                    .get("service.name")
                    .map(String::as_str)
                    == Some(service)
            })
            .flat_map(|rs| &rs.scope_spans)
            .flat_map(|s| s.spans.clone())
            .filter(|s| s.name == "user.User/GetUser" || s.name == "/user.User/GetUser")
            .collect()
    };
    let requests = until(&receiver, &rotel, "both sides' spans and metrics", |r| {
        let histograms = histograms(r);
        spans(r, "python.caller").len() >= 3
            && spans(r, "user.service").len() >= 3
            && count(
                &histograms,
                "user.service",
                "rpc.server.call.duration",
                &[("rpc.method", "user.User/GetUser")],
            ) >= 3
            && count(
                &histograms,
                "python.caller",
                "grpc.client.attempt.duration",
                &[("grpc.method", "user.User/GetUser")],
            ) >= 3
    })
    .await;
    let callers = spans(&requests, "python.caller");
    let served = spans(&requests, "user.service");
    for caller in &callers {
        let child = served
            .iter()
            .find(|s| s.trace_id == caller.trace_id)
            .expect("each Python call's trace goes on in our server");
        assert_eq!(
            child.parent_span_id, caller.span_id,
            "our SERVER span is the Python CLIENT span's child"
        );
    }
    // Their spans and our metrics describe the same three calls, all NOT_FOUND.
    let histograms = histograms(&requests);
    let get = ("rpc.method", "user.User/GetUser");
    assert_eq!(
        count(
            &histograms,
            "user.service",
            "rpc.server.call.duration",
            &[get]
        ),
        3
    );
    assert_eq!(
        count(
            &histograms,
            "user.service",
            "rpc.server.call.duration",
            &[get, ("rpc.response.status_code", "NOT_FOUND")]
        ),
        3
    );
    let python_codes: Vec<String> = callers
        .iter()
        .map(|s| {
            attributes(&s.attributes)
                .get("rpc.grpc.status_code")
                .cloned()
                .unwrap_or_default()
        })
        .collect();
    assert_eq!(
        python_codes,
        ["5", "5", "5"],
        "grpcio's spans say NOT_FOUND (5) too"
    );
    // grpcio's own A66 metrics describe the same calls as ours: three attempts, all
    // NOT_FOUND, and the bytes it sent are the bytes our server received, and back.
    // Both stacks name the series alike.
    let not_found = [
        ("grpc.method", "user.User/GetUser"),
        ("grpc.status", "NOT_FOUND"),
    ];
    let attempts = count(
        &histograms,
        "python.caller",
        "grpc.client.attempt.duration",
        &not_found,
    );
    assert_eq!(attempts, 3, "grpcio measured three NOT_FOUND attempts");
    for (theirs, mine) in [
        (
            "grpc.client.attempt.sent_total_compressed_message_size",
            "grpc.server.call.rcvd_total_compressed_message_size",
        ),
        (
            "grpc.client.attempt.rcvd_total_compressed_message_size",
            "grpc.server.call.sent_total_compressed_message_size",
        ),
    ] {
        assert_eq!(
            count(&histograms, "python.caller", theirs, &not_found),
            count(&histograms, "user.service", mine, &not_found),
            "{theirs} and {mine} count the same calls"
        );
        assert_eq!(
            sum(&histograms, "python.caller", theirs, &not_found),
            sum(&histograms, "user.service", mine, &not_found),
            "{theirs} and {mine} count the same bytes"
        );
    }
    assert_eq!(
        sum(
            &histograms,
            "python.caller",
            "grpc.client.attempt.sent_total_compressed_message_size",
            &not_found
        ),
        6.0,
        "three 2-byte requests"
    );
}
