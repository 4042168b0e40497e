//! [`Batcher`]: the span processor of an exporter. Finished spans wait in a bounded queue
//! for a thread of its own that exports them in batches (on the Tokio runtime the exporter
//! needs); when the queue is full, a span is dropped and counted
//! (`micro_otel.telemetry.spans.dropped`), and the call that ended it never waits. The SDK's
//! `BatchSpanProcessor` does the same but keeps its count to itself.

// Only the OTLP exporter is batched here (feature `otlp`).
#![cfg_attr(not(feature = "otlp"), allow(dead_code))]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use opentelemetry::Context;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter, SpanProcessor};

use super::settings::Batch;

/// What the exporting thread is told.
enum Message {
    Span(Box<SpanData>),
    Resource(Resource),
    Flush(SyncSender<OTelSdkResult>),
    Shutdown(SyncSender<OTelSdkResult>),
}

/// Spans dropped because the queue was full, shared with the metric that reports them.
#[derive(Debug, Clone, Default)]
pub(crate) struct Dropped(Arc<AtomicU64>);

impl Dropped {
    /// Spans dropped so far.
    pub(crate) fn count(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A bounded queue in front of one exporter, emptied by a thread of its own.
#[derive(Debug)]
pub(crate) struct Batcher {
    queue: SyncSender<Message>,
    dropped: Dropped,
    worker: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl Batcher {
    /// Starts the exporting thread; `runtime` is where the exporter's futures run.
    pub(crate) fn new<E: SpanExporter + 'static>(
        exporter: E,
        batch: Batch,
        runtime: tokio::runtime::Handle,
        dropped: Dropped,
    ) -> std::io::Result<Self> {
        let (queue, incoming) = mpsc::sync_channel(batch.max_queue_size.max(1));
        let worker = std::thread::Builder::new()
            .name("micro-otel-spans".into())
            .spawn(move || export_loop(exporter, &incoming, batch, &runtime))?;
        Ok(Self {
            queue,
            dropped,
            worker: std::sync::Mutex::new(Some(worker)),
        })
    }

    /// Sends a control message and waits (at most `timeout`) for its answer.
    fn ask(
        &self,
        message: impl FnOnce(SyncSender<OTelSdkResult>) -> Message,
        timeout: Duration,
    ) -> OTelSdkResult {
        let (answer, answered) = mpsc::sync_channel(1);
        self.queue
            .send(message(answer))
            .map_err(|_| OTelSdkError::AlreadyShutdown)?;
        answered
            .recv_timeout(timeout)
            .map_err(|_| OTelSdkError::Timeout(timeout))?
    }
}

impl SpanProcessor for Batcher {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        match self.queue.try_send(Message::Span(Box::new(span))) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                if self.dropped.0.fetch_add(1, Ordering::Relaxed) == 0 {
                    tracing::warn!(
                        "the span export queue is full: spans are dropped (counted in micro_otel.telemetry.spans.dropped)"
                    );
                }
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.ask(Message::Flush, Duration::from_secs(30))
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        let result = self.ask(Message::Shutdown, timeout);
        if let Some(worker) = self.worker.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = worker.join();
        }
        result
    }

    fn set_resource(&mut self, resource: &Resource) {
        let _ = self.queue.send(Message::Resource(resource.clone()));
    }
}

/// The exporting thread: a batch goes out when it is full, when the oldest span in it has
/// waited `scheduled_delay`, on a flush and on shutdown.
fn export_loop<E: SpanExporter>(
    mut exporter: E,
    incoming: &Receiver<Message>,
    batch: Batch,
    runtime: &tokio::runtime::Handle,
) {
    let mut spans: Vec<SpanData> = Vec::with_capacity(batch.max_export_batch_size);
    let mut due = Instant::now() + batch.scheduled_delay;
    let export = |exporter: &E, spans: &mut Vec<SpanData>| -> OTelSdkResult {
        if spans.is_empty() {
            return Ok(());
        }
        let taken = std::mem::take(spans);
        // The timer is made inside the runtime, whose time driver it needs.
        let sent = runtime.block_on(async {
            tokio::time::timeout(batch.export_timeout, exporter.export(taken)).await
        });
        sent.unwrap_or(Err(OTelSdkError::Timeout(batch.export_timeout)))
    };
    loop {
        let wait = due.saturating_duration_since(Instant::now());
        match incoming.recv_timeout(wait) {
            Ok(Message::Span(span)) => {
                if spans.is_empty() {
                    due = Instant::now() + batch.scheduled_delay;
                }
                spans.push(*span);
                if spans.len() >= batch.max_export_batch_size {
                    report(export(&exporter, &mut spans));
                }
            }
            Ok(Message::Resource(resource)) => exporter.set_resource(&resource),
            Ok(Message::Flush(answer)) => {
                let mut result = export(&exporter, &mut spans);
                // What was queued before the flush goes too.
                while let Ok(Message::Span(span)) = incoming.try_recv() {
                    spans.push(*span);
                    if spans.len() >= batch.max_export_batch_size {
                        result = result.and(export(&exporter, &mut spans));
                    }
                }
                let _ = answer.send(result.and(export(&exporter, &mut spans)));
            }
            Ok(Message::Shutdown(answer)) => {
                while let Ok(Message::Span(span)) = incoming.try_recv() {
                    spans.push(*span);
                }
                let result = export(&exporter, &mut spans).and(exporter.shutdown());
                let _ = answer.send(result);
                return;
            }
            Err(RecvTimeoutError::Timeout) => {
                report(export(&exporter, &mut spans));
                due = Instant::now() + batch.scheduled_delay;
            }
            Err(RecvTimeoutError::Disconnected) => {
                report(export(&exporter, &mut spans));
                return;
            }
        }
    }
}

/// Logs a failed export once per failure (the data is gone; the next batch tries again).
fn report(result: OTelSdkResult) {
    if let Err(error) = result {
        tracing::warn!(%error, "exporting spans failed; the batch is dropped");
    }
}
