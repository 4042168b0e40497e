//! Shared pieces of the end-to-end tests: an in-memory span collector, the Echo service
//! (all four RPC kinds, with delays, failures and cancellation tracking) and service helpers.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use micro_otel::discovery::MemoryRegistry;
use micro_otel::{Code, Context, MessageStream, ResponseStream, Service, Status};
use opentelemetry::trace::SpanKind;
use opentelemetry::{Key, Value};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tokio::sync::Notify;

pub use crate::golden::rpc_kinds_case::echo::v1 as echo;
use echo::{EchoClient, EchoHandler, EchoRequest, EchoResponse};

/// Fails a test whose outside program or download is missing, saying which. Tests that
/// need a program are `#[ignore]`d where the build did not find it (see `tests/build.rs`),
/// so this runs only where it was expected: in CI, or after the program went away.
pub fn missing(why: &str) -> ! {
    panic!("{why}")
}

/// The connections `listener` accepts (with TCP_NODELAY), as the stream tonic's
/// `serve_with_incoming` takes: for plain tonic servers on a port chosen by the test.
pub fn incoming(
    listener: tokio::net::TcpListener,
) -> impl futures_util::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    futures_util::stream::unfold(listener, |listener| async move {
        let accepted = listener.accept().await.map(|(stream, _)| {
            let _ = stream.set_nodelay(true);
            stream
        });
        Some((accepted, listener))
    })
}

/// A tracer provider whose finished spans can be inspected.
#[derive(Clone)]
pub struct Spans {
    provider: SdkTracerProvider,
    exporter: InMemorySpanExporter,
}

impl Default for Spans {
    fn default() -> Self {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        Self { provider, exporter }
    }
}

impl Spans {
    /// The provider to give services.
    pub fn provider(&self) -> SdkTracerProvider {
        self.provider.clone()
    }

    /// Built-in wrappers tracing into this collector.
    pub fn instrumentation(&self) -> micro_otel::Instrumentation {
        micro_otel::Instrumentation::new().tracer_provider(self.provider())
    }

    /// Waits until at least `n` spans have finished (at most 5 s), then returns them all.
    pub async fn wait_for(&self, n: usize) -> Vec<SpanData> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let spans = self
                .exporter
                .get_finished_spans()
                .expect("exporter readable");
            if spans.len() >= n || tokio::time::Instant::now() > deadline {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// The one span named `name` of `kind`; panics listing all spans otherwise.
pub fn span<'a>(spans: &'a [SpanData], name: &str, kind: SpanKind) -> &'a SpanData {
    let found: Vec<_> = spans
        .iter()
        .filter(|s| s.name == name && s.span_kind == kind)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected one {kind:?} span {name:?}; have {:?}",
        spans
            .iter()
            .map(|s| (&s.name, &s.span_kind))
            .collect::<Vec<_>>()
    );
    found[0]
}

/// The value of attribute `key` on `span`.
pub fn attr(span: &SpanData, key: &str) -> Option<Value> {
    let key = Key::from(key.to_owned());
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .map(|kv| kv.value.clone())
}

/// A service on loopback with its own registry and span collector.
pub fn service(name: &str, registry: &MemoryRegistry, spans: &Spans) -> micro_otel::ServiceConfig {
    Service::builder(name)
        .registry(registry.clone())
        .instrumentation(spans.instrumentation())
}

/// Two echo services: `front` forwards its unary calls to `back`, which runs
/// `back_wrapper` around its handler. Returns `front` and both running instances
/// (front, back).
pub async fn front_and_back(
    registry: &MemoryRegistry,
    spans: &Spans,
    back_wrapper: Arc<dyn micro_otel::wrapper::Wrapper>,
) -> (
    Service,
    micro_otel::RunningService,
    micro_otel::RunningService,
) {
    let back = service("back", registry, spans)
        .wrap_handler(back_wrapper)
        .build();
    echo::register_echo_handler(&back, Echo::default()).expect("handler registered before start");
    let back_running = back.start().await.expect("back starts");
    let front = service("front", registry, spans).build();
    let forward = EchoClient::new("back", front.client());
    echo::register_echo_handler(
        &front,
        Echo {
            forward: Some(forward),
            ..Default::default()
        },
    )
    .expect("handler registered before start");
    let front_running = front.start().await.expect("front starts");
    (front, front_running, back_running)
}

/// The message that makes the unary handler panic, and a server stream panic after its
/// first item.
pub const PANIC: &str = "panic!";

/// Echoes in all four RPC shapes; records cancellation of unary handlers.
#[derive(Clone, Default)]
pub struct Echo {
    /// Set when a unary handler was dropped before finishing.
    pub cancelled: Arc<AtomicBool>,
    /// Notified when a unary handler starts.
    pub started: Arc<Notify>,
    /// Unary calls are forwarded here when set.
    pub forward: Option<EchoClient>,
    /// Unary calls answered so far (including failures).
    pub calls: Arc<AtomicUsize>,
    /// Unary calls to fail with UNAVAILABLE before answering normally.
    pub fail_first: Arc<AtomicUsize>,
    /// Unary calls running now, and the most ever at once.
    pub in_flight: Arc<AtomicUsize>,
    /// The most unary calls ever running at once.
    pub peak_in_flight: Arc<AtomicUsize>,
}

/// Sets a flag when dropped unless disarmed: detects cancelled handlers.
struct CancelGuard(Option<Arc<AtomicBool>>);

impl Drop for CancelGuard {
    fn drop(&mut self) {
        if let Some(flag) = self.0.take() {
            flag.store(true, Ordering::SeqCst);
        }
    }
}

fn answer(request: &EchoRequest, index: u32) -> EchoResponse {
    EchoResponse {
        message: request.message.clone(),
        index,
        payload: request.payload.clone(),
    }
}

fn requested_failure(request: &EchoRequest) -> Result<(), Status> {
    match request.fail_with {
        0 => Ok(()),
        code => Err(Status::new(
            Code::from_i32(code),
            format!("failure {code} requested"),
        )),
    }
}

impl EchoHandler for Echo {
    async fn unary(&self, ctx: Context, request: EchoRequest) -> Result<EchoResponse, Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        // Which instance answered, as a reply header.
        if let (Some(mut reply), Some(port)) = (
            ctx.reply_metadata(),
            ctx.server_address().and_then(|a| a.port),
        ) {
            reply.insert("x-echo-port", port.into());
        }
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak_in_flight.fetch_max(now, Ordering::SeqCst);
        let mut guard = CancelGuard(Some(self.cancelled.clone()));
        self.started.notify_one();
        if request.delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(request.delay_ms.into())).await;
        }
        guard.0 = None;
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        let failing = self
            .fail_first
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if failing.is_ok() {
            return Err(Status::unavailable("failing as asked"));
        }
        requested_failure(&request)?;
        if request.message == PANIC {
            panic!("the echo handler was asked to panic");
        }
        match &self.forward {
            Some(next) => next.unary(request).await,
            None => Ok(answer(&request, 0)),
        }
    }

    async fn server_stream(
        &self,
        _ctx: Context,
        request: EchoRequest,
    ) -> Result<ResponseStream<EchoResponse>, Status> {
        requested_failure(&request)?;
        let delay = Duration::from_millis(request.delay_ms.into());
        let stream = futures_util::stream::iter(0..request.repeat).then(move |i| {
            let request = request.clone();
            async move {
                tokio::time::sleep(delay).await;
                if request.message == PANIC && i == 1 {
                    panic!("the echo stream was asked to panic");
                }
                Ok(answer(&request, i))
            }
        });
        Ok(Box::pin(stream))
    }

    async fn client_stream(
        &self,
        _ctx: Context,
        mut requests: MessageStream<EchoRequest>,
    ) -> Result<EchoResponse, Status> {
        let mut joined = String::new();
        let mut count = 0;
        while let Some(request) = requests.message().await? {
            requested_failure(&request)?;
            joined.push_str(&request.message);
            count += 1;
        }
        Ok(EchoResponse {
            message: joined,
            index: count,
            payload: Vec::new(),
        })
    }

    async fn bidi(
        &self,
        _ctx: Context,
        requests: MessageStream<EchoRequest>,
    ) -> Result<ResponseStream<EchoResponse>, Status> {
        let answers = requests.enumerate().map(|(i, request)| {
            let request = request?;
            requested_failure(&request)?;
            Ok(answer(&request, i as u32))
        });
        Ok(Box::pin(answers))
    }
}
