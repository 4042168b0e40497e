//! RPC instruments: call durations on both sides (semconv), attempts, retries and message
//! sizes (gRFC A66, A96).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use futures_util::StreamExt as _;
use opentelemetry::KeyValue;
use opentelemetry::metrics::{BoundCounter, BoundHistogram, Counter, Histogram, Meter};
use tonic::{Code, Status};

use super::Buckets;
use super::series::{Outcome, Series, SeriesMap};
use crate::call::{
    AnyMessage, BoxFuture, Call, Ended, Ending, Method, Payload, Reply, Target, Watch,
};
use crate::semconv::{self, code_name};
use crate::wrapper::Next;

/// The RPC instruments of one service or client.
pub(crate) struct Instruments {
    server_duration: Histogram<f64>,
    server_sent: Histogram<u64>,
    server_received: Histogram<u64>,
    client_duration: Histogram<f64>,
    attempt_started: Counter<u64>,
    attempt_duration: Histogram<f64>,
    attempt_sent: Histogram<u64>,
    attempt_received: Histogram<u64>,
    retries: Histogram<u64>,
    /// Whether the older attribute names go beside the current ones (`rpc/dup`).
    old_names: bool,
    /// The server's instruments, bound per method and outcome.
    served: SeriesMap<(), ServedBound>,
    /// The client's instruments, bound per method, target and outcome.
    called: SeriesMap<BoundCounter<u64>, CalledBound>,
}

/// A served method's instruments for one outcome.
struct ServedBound {
    duration: BoundHistogram<f64>,
    sent: BoundHistogram<u64>,
    received: BoundHistogram<u64>,
}

/// A called method's instruments for one target and outcome.
struct CalledBound {
    call: BoundHistogram<f64>,
    attempt: BoundHistogram<f64>,
    sent: BoundHistogram<u64>,
    received: BoundHistogram<u64>,
}

impl Instruments {
    pub(crate) fn new(meter: &Meter, buckets: &Buckets) -> Self {
        let seconds = |name, description| buckets.seconds(meter, name, description);
        let bytes = |name, description| buckets.bytes(meter, name, description);
        Self {
            server_duration: seconds(
                semconv::RPC_SERVER_CALL_DURATION,
                "Duration of calls served, from the request's arrival to the response's end.",
            ),
            server_sent: bytes(
                semconv::GRPC_SERVER_CALL_SENT_SIZE,
                "Bytes of the messages a served call sent.",
            ),
            server_received: bytes(
                semconv::GRPC_SERVER_CALL_RCVD_SIZE,
                "Bytes of the messages a served call received.",
            ),
            client_duration: seconds(
                semconv::RPC_CLIENT_CALL_DURATION,
                "Duration of calls made, retries included.",
            ),
            attempt_started: meter
                .u64_counter(semconv::GRPC_CLIENT_ATTEMPT_STARTED)
                .with_unit("{attempt}")
                .with_description("Attempts started, retries included.")
                .build(),
            attempt_duration: seconds(
                semconv::GRPC_CLIENT_ATTEMPT_DURATION,
                "Duration of each attempt of a call.",
            ),
            attempt_sent: bytes(
                semconv::GRPC_CLIENT_ATTEMPT_SENT_SIZE,
                "Bytes of the messages an attempt sent.",
            ),
            attempt_received: bytes(
                semconv::GRPC_CLIENT_ATTEMPT_RCVD_SIZE,
                "Bytes of the messages an attempt received.",
            ),
            retries: meter
                .u64_histogram(semconv::GRPC_CLIENT_CALL_RETRIES)
                .with_unit("{retry}")
                .with_description("Retries of calls that were retried at least once.")
                .with_boundaries(vec![1.0, 2.0, 3.0, 4.0, 5.0])
                .build(),
            old_names: semconv::emit_old_rpc_names(),
            served: SeriesMap::default(),
            called: SeriesMap::default(),
        }
    }

    /// Measures a call served by a handler.
    pub(crate) fn served(
        self: &Arc<Self>,
        call: Call,
        next: Next,
    ) -> BoxFuture<Result<Reply, Status>> {
        let Some(method) = call.ctx.method() else {
            return next.run(call);
        };
        let served = Served {
            instruments: self.clone(),
            series: self.served.get(method, ""),
            method,
            start: Instant::now(),
        };
        Box::pin(measured(served, call, |call| next.run(call)))
    }

    /// Records a request for a method this server does not serve.
    pub(crate) fn unknown_method(&self, status: &Status) {
        let code = status.code();
        let attributes = self.attributes(semconv::OTHER, None, code, true, None);
        self.server_duration.record(0.0, &attributes);
        let grpc = [
            KeyValue::new(semconv::GRPC_METHOD, semconv::GRPC_OTHER),
            KeyValue::new(semconv::GRPC_STATUS, code_name(code)),
        ];
        self.server_sent.record(0, &grpc);
        self.server_received.record(0, &grpc);
    }

    /// Measures a call made through a client, from its start to its reply's end.
    pub(crate) fn called(
        self: &Arc<Self>,
        call: Call,
        next: Next,
    ) -> BoxFuture<Result<Reply, Status>> {
        let (Some(method), Some(target)) = (call.ctx.method(), call.ctx.target()) else {
            return next.run(call);
        };
        let (target, deadline) = (target.clone(), call.ctx.deadline());
        Box::pin(self.measure_call(method, target, deadline, || next.run(call)))
    }

    /// Measures the call of `method` on `target` that `start` starts, from now to its end.
    pub(crate) fn measure_call<S, F>(
        self: &Arc<Self>,
        method: &'static Method,
        target: Target,
        deadline: Option<Instant>,
        start: S,
    ) -> impl Future<Output = Result<Reply, Status>> + use<S, F>
    where
        S: FnOnce() -> F,
        F: Future<Output = Result<Reply, Status>>,
    {
        let called = Called {
            instruments: self.clone(),
            series: self.called.get(method, target.name()),
            method,
            target,
            start: Instant::now(),
        };
        let watch = Watch::new(called, deadline);
        let reply = start();
        async move { watch.finish(reply.await) }
    }

    /// The RPC attributes of a finished call: the method, the status, `error.type` when
    /// `error` says the status is a failure, the server's address on the client, and the
    /// older names under `rpc/dup`.
    fn attributes(
        &self,
        method: &'static str,
        service: Option<&'static str>,
        code: Code,
        error: bool,
        server: Option<&Target>,
    ) -> Vec<KeyValue> {
        let name = code_name(code);
        let mut attributes = Vec::with_capacity(if self.old_names { 10 } else { 6 });
        attributes.extend([
            KeyValue::new(semconv::RPC_SYSTEM_NAME, semconv::GRPC),
            KeyValue::new(semconv::RPC_METHOD, method),
            KeyValue::new(semconv::RPC_RESPONSE_STATUS_CODE, name),
        ]);
        if error && code != Code::Ok {
            attributes.push(KeyValue::new(semconv::ERROR_TYPE, name));
        }
        if let Some(target) = server {
            let address = target.address();
            attributes.push(KeyValue::new(
                semconv::SERVER_ADDRESS,
                opentelemetry::Value::String(address.host.clone().into()),
            ));
            if let Some(port) = address.port {
                attributes.push(KeyValue::new(semconv::SERVER_PORT, i64::from(port)));
            }
        }
        if self.old_names {
            attributes.extend([
                KeyValue::new(semconv::OLD_RPC_SYSTEM, semconv::GRPC),
                KeyValue::new(semconv::OLD_RPC_GRPC_STATUS_CODE, code as i64),
                KeyValue::new(semconv::NEXT_RPC_STATUS_CODE, name),
            ]);
            if let Some(service) = service {
                attributes.push(KeyValue::new(semconv::OLD_RPC_SERVICE, service));
            }
        }
        attributes
    }
}

/// Records each attempt of a client's calls and how often calls were retried: what the
/// client's selection step reports through.
#[derive(Clone)]
pub(crate) struct Attempts(Arc<Instruments>, Arc<super::machinery::Instruments>);

impl Attempts {
    pub(crate) fn new(
        instruments: Arc<Instruments>,
        machinery: Arc<super::machinery::Instruments>,
    ) -> Self {
        Self(instruments, machinery)
    }

    /// Counts a node of `service` ejected.
    pub(crate) fn ejected(&self, service: &str) {
        self.1.ejected(service);
    }

    /// Counts a retry of `method` on `target` that the budget refused.
    pub(crate) fn refused(&self, method: &'static Method, target: &Target) {
        self.1.refused(method.full_name(), target.name());
    }

    /// Sends one attempt of `call` with `send`, and records it.
    pub(crate) fn attempt<S, F>(
        &self,
        call: Call,
        send: S,
    ) -> impl Future<Output = Result<Reply, Status>> + use<S, F>
    where
        S: FnOnce(Call) -> F,
        F: Future<Output = Result<Reply, Status>>,
    {
        let attempt = call
            .ctx
            .method()
            .zip(call.ctx.target())
            .map(|(method, target)| {
                let series = self.0.called.get(method, target.name());
                let grpc = || {
                    [
                        KeyValue::new(semconv::GRPC_METHOD, method.full_name()),
                        KeyValue::new(semconv::GRPC_TARGET, target_value(target)),
                    ]
                };
                series
                    .started(|| self.0.attempt_started.bind(&grpc()))
                    .add(1);
                Attempt {
                    instruments: self.0.clone(),
                    series,
                    method,
                    target: target.clone(),
                    start: Instant::now(),
                }
            });
        measured(attempt, call, send)
    }

    /// Records that `call` was retried `retries` times (nothing for none, as gRFC A96 asks).
    pub(crate) fn retried(&self, method: &'static Method, target: &Target, retries: u32) {
        if retries == 0 {
            return;
        }
        let grpc = [
            KeyValue::new(semconv::GRPC_METHOD, method.full_name()),
            KeyValue::new(semconv::GRPC_TARGET, target_value(target)),
        ];
        self.0.retries.record(u64::from(retries), &grpc);
    }
}

fn target_value(target: &Target) -> opentelemetry::Value {
    opentelemetry::Value::String(target.shared_name().into())
}

/// What a measured RPC reports once it has ended: how, and the bytes of its request and
/// reply messages.
trait Measure: Send + 'static {
    fn record(self, how: Ended<'_>, request: u64, reply: u64);
}

impl<M: Measure> Measure for Option<M> {
    fn record(self, how: Ended<'_>, request: u64, reply: u64) {
        if let Some(measure) = self {
            measure.record(how, request, reply);
        }
    }
}

/// Runs `call` through `run`, counting the bytes of its messages both ways, and reports
/// to `measure` when it ends (a reply stream: when the stream ends).
fn measured<M: Measure, S, F>(
    measure: M,
    call: Call,
    run: S,
) -> impl Future<Output = Result<Reply, Status>> + use<M, S, F>
where
    S: FnOnce(Call) -> F,
    F: Future<Output = Result<Reply, Status>>,
{
    let mut call = call;
    let measuring = Measuring {
        measure,
        request: Bytes::count(&mut call.payload),
        reply: Bytes::Known(0),
    };
    let mut watch = Watch::new(measuring, call.ctx.deadline());
    let reply = run(call);
    async move {
        let result = reply.await.map(|mut reply| {
            let bytes = Bytes::count(&mut reply.payload);
            if let Some(measuring) = watch.ending_mut() {
                measuring.reply = bytes;
            }
            reply
        });
        watch.finish(result)
    }
}

struct Measuring<M> {
    measure: M,
    request: Bytes,
    reply: Bytes,
}

impl<M: Measure> Ending for Measuring<M> {
    fn ended(self, how: Ended<'_>) {
        self.measure
            .record(how, self.request.total(), self.reply.total());
    }
}

/// The encoded size of the messages of one direction of an RPC: known at once for a
/// message, summed as they pass for a stream.
enum Bytes {
    Known(u64),
    Counting(Arc<AtomicU64>),
}

impl Bytes {
    /// The size of `payload`: a message's now; a stream's, watched in place, as it passes.
    fn count(payload: &mut Payload) -> Self {
        match payload {
            Payload::Message(message) => Bytes::Known(message.encoded_len() as u64),
            Payload::Stream(stream) => {
                let total = Arc::new(AtomicU64::new(0));
                let sum = total.clone();
                let inner = std::mem::replace(stream, Box::pin(futures_util::stream::empty()));
                let counted = inner.inspect(move |item: &Result<AnyMessage, Status>| {
                    if let Ok(message) = item {
                        sum.fetch_add(message.encoded_len() as u64, Ordering::Relaxed);
                    }
                });
                *stream = Box::pin(counted);
                Bytes::Counting(total)
            }
        }
    }

    fn total(&self) -> u64 {
        match self {
            Bytes::Known(size) => *size,
            Bytes::Counting(total) => total.load(Ordering::Relaxed),
        }
    }
}

/// A call served by a handler.
struct Served {
    instruments: Arc<Instruments>,
    series: Arc<Series<(), ServedBound>>,
    method: &'static Method,
    start: Instant,
}

impl Measure for Served {
    fn record(self, how: Ended<'_>, request: u64, reply: u64) {
        let (i, method) = (&self.instruments, self.method);
        let bound = self.series.outcome(Outcome::of(how), |outcome| {
            let code = outcome.code();
            let error = semconv::is_server_error(code);
            let attributes = i.attributes(
                method.full_name(),
                Some(method.service()),
                code,
                error,
                None,
            );
            let grpc = [
                KeyValue::new(semconv::GRPC_METHOD, method.full_name()),
                KeyValue::new(semconv::GRPC_STATUS, code_name(code)),
            ];
            ServedBound {
                duration: i.server_duration.bind(&attributes),
                sent: i.server_sent.bind(&grpc),
                received: i.server_received.bind(&grpc),
            }
        });
        bound.duration.record(self.start.elapsed().as_secs_f64());
        bound.sent.record(reply);
        bound.received.record(request);
    }
}

/// The client's instruments of `method` on `target` for `outcome`, bound.
fn bind_called(
    i: &Instruments,
    method: &'static Method,
    target: &Target,
    outcome: Outcome,
) -> CalledBound {
    let code = outcome.code();
    // A caller that stopped waiting chose to: CANCELLED, but no failure (as on its span).
    let error = !outcome.given_up();
    let attributes = i.attributes(
        method.full_name(),
        Some(method.service()),
        code,
        error,
        Some(target),
    );
    let grpc = [
        KeyValue::new(semconv::GRPC_METHOD, method.full_name()),
        KeyValue::new(semconv::GRPC_TARGET, target_value(target)),
        KeyValue::new(semconv::GRPC_STATUS, code_name(code)),
    ];
    CalledBound {
        call: i.client_duration.bind(&attributes),
        attempt: i.attempt_duration.bind(&grpc),
        sent: i.attempt_sent.bind(&grpc),
        received: i.attempt_received.bind(&grpc),
    }
}

/// A call made through a client, retries included.
struct Called {
    instruments: Arc<Instruments>,
    series: Arc<Series<BoundCounter<u64>, CalledBound>>,
    method: &'static Method,
    target: Target,
    start: Instant,
}

impl Ending for Called {
    fn ended(self, how: Ended<'_>) {
        let bound = self.series.outcome(Outcome::of(how), |outcome| {
            bind_called(&self.instruments, self.method, &self.target, outcome)
        });
        bound.call.record(self.start.elapsed().as_secs_f64());
    }
}

/// One attempt of a client call.
struct Attempt {
    instruments: Arc<Instruments>,
    series: Arc<Series<BoundCounter<u64>, CalledBound>>,
    method: &'static Method,
    target: Target,
    start: Instant,
}

impl Measure for Attempt {
    fn record(self, how: Ended<'_>, request: u64, reply: u64) {
        // An attempt the caller gave up on reports CANCELLED like any other.
        let outcome = match how {
            Ended::Cancelled(status) => Outcome::failed(status),
            how => Outcome::of(how),
        };
        let bound = self.series.outcome(outcome, |outcome| {
            bind_called(&self.instruments, self.method, &self.target, outcome)
        });
        bound.attempt.record(self.start.elapsed().as_secs_f64());
        bound.sent.record(request);
        bound.received.record(reply);
    }
}
