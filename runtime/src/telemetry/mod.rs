//! Telemetry setup: tracer, meter and logger providers, configured in code or through the
//! standard `OTEL_*` environment variables, flushed together on shutdown.
//!
//! | file | holds |
//! |---|---|
//! | `settings.rs` | code, then `OTEL_*`, then defaults, resolved in one place |
//! | `export.rs` | the exporters: OTLP (gRPC, http/protobuf), console |
//! | `batch.rs` | the bounded span queue in front of the OTLP exporter, its drops counted |
//! | `sampling.rs` | [`Sampling`] and [`SamplingRules`] |
//! | `tree.rs`, `table.rs` | the demo's console views: [`TraceTree`], [`MetricsTable`] |
//!
//! ```no_run
//! # async fn demo() -> Result<(), micro_otel::telemetry::TelemetryError> {
//! let telemetry = micro_otel::telemetry::Telemetry::builder("user.service")
//!     .version("1.0.0")
//!     .otlp("http://127.0.0.1:4317")
//!     .sample_ratio(0.1)
//!     .init()?;
//! // ... run services ...
//! telemetry.shutdown(); // flushes what is queued
//! # Ok(()) }
//! ```

mod batch;
mod export;
mod sampling;
mod settings;
mod table;
mod tree;

use std::sync::Arc;
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::metrics::{
    Aggregation, Instrument, InstrumentKind, PeriodicReader, SdkMeterProvider, Stream,
};
use opentelemetry_sdk::trace::SdkTracerProvider;

pub use sampling::{Sampling, SamplingRules};
pub use settings::Protocol;
pub use table::MetricsTable;
pub use tree::TraceTree;

use crate::environment::ConfigError;
use crate::trace::propagation::propagator;
use settings::{InCode, Settings, process_env};

/// Why telemetry could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TelemetryError {
    /// A setting (in code or an `OTEL_*` variable) that is out of range or names nothing
    /// known.
    #[error("telemetry: {0}")]
    Config(#[from] ConfigError),
    /// An OTLP exporter could not be built (bad endpoint, no Tokio runtime...).
    #[cfg(feature = "otlp")]
    #[error("building the OTLP {signal} exporter for {endpoint}: {source}")]
    Exporter {
        /// `traces`, `metrics` or `logs`.
        signal: &'static str,
        /// The endpoint it was to send to.
        endpoint: String,
        /// What went wrong.
        source: opentelemetry_otlp::ExporterBuildError,
    },
    /// The TLS set up for the collector cannot be used.
    #[cfg(all(feature = "otlp", feature = "tls"))]
    #[error("TLS of the OTLP {signal} exporter: {source}")]
    Tls {
        /// `traces`, `metrics` or `logs`.
        signal: &'static str,
        /// What was wrong.
        source: crate::tls::TlsError,
    },
    /// The span exporting thread could not be started.
    #[error("starting the span export thread: {0}")]
    Thread(std::io::Error),
    /// OTLP export set up outside a Tokio runtime.
    #[error("OTLP export needs a Tokio runtime: call Telemetry::init inside one")]
    NoRuntime,
    /// An OTLP header that is not valid gRPC metadata.
    #[error("the OTLP header {header:?} is not valid gRPC metadata")]
    Header {
        /// The header's name.
        header: String,
    },
}

/// Configures a [`Telemetry`]. What is set here wins over the `OTEL_*` variables, which win
/// over the specification's defaults (the README lists each variable); the one exception
/// is the service name given to [`Telemetry::builder`], which `OTEL_SERVICE_NAME` replaces.
#[derive(Debug, Clone)]
pub struct TelemetryBuilder {
    code: InCode,
    version: Option<String>,
    tree: Option<TraceTree>,
    table: Option<MetricsTable>,
    install_global: bool,
}

impl TelemetryBuilder {
    /// `service.version` resource attribute.
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.version = Some(version.into());
        self
    }

    /// Exports all three signals over OTLP to `endpoint`, e.g. `http://127.0.0.1:4317`
    /// (for http/protobuf, the base URL: `/v1/traces`... are appended).
    #[cfg(feature = "otlp")]
    pub fn otlp(mut self, endpoint: impl Into<String>) -> Self {
        self.code.endpoint = Some(endpoint.into());
        self.code.export = None;
        self
    }

    /// The TLS of an `https://` OTLP endpoint (instead of `OTEL_EXPORTER_OTLP_CERTIFICATE`,
    /// `_CLIENT_CERTIFICATE` and `_CLIENT_KEY`); without it the system's roots are trusted.
    #[cfg(all(feature = "otlp", feature = "tls"))]
    pub fn otlp_tls(mut self, tls: crate::tls::ClientTls) -> Self {
        self.code.tls = Some(tls);
        self
    }

    /// The OTLP protocol: gRPC (default) or http/protobuf.
    pub fn protocol(mut self, protocol: Protocol) -> Self {
        self.code.protocol = Some(protocol);
        self
    }

    /// Keeps spans in `tree` to print them (the demo's console view) instead of exporting
    /// them.
    pub fn tree(mut self, tree: TraceTree) -> Self {
        self.tree = Some(tree);
        self.code.traces_elsewhere = true;
        self
    }

    /// Also keeps the RPC durations in `table`, to print them per method.
    pub fn metrics_table(mut self, table: MetricsTable) -> Self {
        self.table = Some(table);
        self
    }

    /// Exports nothing (a tree or table set here still fills): tracing still propagates
    /// context and metrics are still recorded.
    pub fn no_export(mut self) -> Self {
        self.code.export = Some(false);
        self.code.endpoint = None;
        self
    }

    /// Samples this fraction of new traces; calls with a parent follow the parent's
    /// decision (`parentbased_traceidratio`).
    pub fn sample_ratio(self, ratio: f64) -> Self {
        self.sampling(Sampling::ParentBased(Box::new(Sampling::Ratio(ratio))))
    }

    /// Which traces are recorded (default: `OTEL_TRACES_SAMPLER`, else every new trace and
    /// what the parent decided for the rest).
    pub fn sampling(mut self, sampling: Sampling) -> Self {
        self.code.sampling = Some(sampling);
        self
    }

    /// Spans queued for export before new ones are dropped (`OTEL_BSP_MAX_QUEUE_SIZE`).
    pub fn max_queue_size(mut self, size: usize) -> Self {
        self.code.spans.max_queue_size = Some(size);
        self
    }

    /// Spans sent in one export (`OTEL_BSP_MAX_EXPORT_BATCH_SIZE`).
    pub fn max_export_batch_size(mut self, size: usize) -> Self {
        self.code.spans.max_export_batch_size = Some(size);
        self
    }

    /// Longest wait between span exports (`OTEL_BSP_SCHEDULE_DELAY`).
    pub fn scheduled_delay(mut self, delay: Duration) -> Self {
        self.code.spans.scheduled_delay = Some(delay);
        self
    }

    /// Longest a span export may take before its batch is given up
    /// (`OTEL_BSP_EXPORT_TIMEOUT`, default 30 s; the OTLP timeout, 10 s, bounds it too).
    pub fn export_timeout(mut self, timeout: Duration) -> Self {
        self.code.spans.export_timeout = Some(timeout);
        self
    }

    /// Time between metric exports (`OTEL_METRIC_EXPORT_INTERVAL`, default 60 s).
    pub fn metric_interval(mut self, interval: Duration) -> Self {
        self.code.metric_interval = Some(interval);
        self
    }

    /// Whether `tracing` events become log records (default: yes, unless
    /// `OTEL_LOGS_EXPORTER=none`).
    pub fn logs(mut self, enabled: bool) -> Self {
        self.code.logs = Some(enabled);
        self
    }

    /// Whether to install the providers and the propagator globally, with a `tracing`
    /// subscriber that bridges `tracing` spans to OpenTelemetry and turns its events into
    /// log records (default: yes).
    pub fn install_global(mut self, install: bool) -> Self {
        self.install_global = install;
        self
    }

    /// Builds the providers. With OTLP export it must be called inside a Tokio runtime.
    pub fn init(self) -> Result<Telemetry, TelemetryError> {
        let settings = Settings::resolve(&self.code, &process_env)?;
        let propagator = propagator(
            settings.propagators.trace_context,
            settings.propagators.baggage,
        );
        if settings.disabled {
            return Ok(Telemetry {
                dropped: batch::Dropped::default(),
                tracer: None,
                meter: None,
                logger: None,
                propagator,
            });
        }
        let resource = resource(&settings.service_name, self.version.as_deref());
        let mut spans = SdkTracerProvider::builder()
            .with_resource(resource.clone())
            .with_sampler(settings.sampling.sampler(&settings.service_name));
        if let Some(tree) = self.tree {
            spans = spans.with_simple_exporter(tree);
        }
        let dropped = batch::Dropped::default();
        let tracer = export::spans(spans, &settings, &dropped)?.build();
        let mut meters = SdkMeterProvider::builder().with_resource(resource.clone());
        if settings.exponential_histograms {
            meters = meters.with_view(exponential);
        }
        if let Some(table) = self.table {
            // Read when flushed; the interval never comes round in a demo.
            let reader = PeriodicReader::builder(table)
                .with_interval(Duration::from_secs(24 * 3600))
                .build();
            meters = meters.with_reader(reader);
        }
        let meter = export::metrics(meters, &settings)?.build();
        {
            use opentelemetry::metrics::MeterProvider as _;
            meter
                .meter_with_scope(crate::metrics::scope())
                .u64_observable_counter(crate::metrics::machinery::SPANS_DROPPED)
                .with_unit("{span}")
                .with_description("Spans dropped because the export queue was full.")
                .with_callback({
                    let dropped = dropped.clone();
                    move |observer| observer.observe(dropped.count(), &[])
                })
                .build();
        }
        let logger = match settings.logs.is_empty() {
            true => None,
            false => {
                let logs = SdkLoggerProvider::builder().with_resource(resource);
                Some(export::logs(logs, &settings)?.build())
            }
        };
        if self.install_global {
            opentelemetry::global::set_tracer_provider(tracer.clone());
            opentelemetry::global::set_meter_provider(meter.clone());
            opentelemetry::global::set_text_map_propagator(SharedPropagator(propagator.clone()));
            #[cfg(feature = "tracing-bridge")]
            install_tracing_bridge(&tracer, logger.as_ref());
        }
        Ok(Telemetry {
            dropped,
            tracer: Some(tracer),
            meter: Some(meter),
            logger,
            propagator,
        })
    }
}

/// Every histogram as a base-2 exponential histogram
/// (`OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION`).
fn exponential(instrument: &Instrument) -> Option<Stream> {
    (instrument.kind() == InstrumentKind::Histogram)
        .then(|| {
            Stream::builder()
                .with_aggregation(Aggregation::Base2ExponentialHistogram {
                    max_size: 160,
                    max_scale: 20,
                    record_min_max: true,
                })
                .build()
                .ok()
        })
        .flatten()
}

/// The resource every signal carries: service, host, process and SDK attributes, and
/// `OTEL_RESOURCE_ATTRIBUTES`.
fn resource(service_name: &str, version: Option<&str>) -> Resource {
    let mut attributes = vec![
        KeyValue::new("process.pid", i64::from(std::process::id())),
        KeyValue::new("process.runtime.name", "rust"),
        KeyValue::new("os.type", std::env::consts::OS),
        KeyValue::new("host.arch", std::env::consts::ARCH),
    ];
    if let Some(host) = host_name() {
        attributes.push(KeyValue::new("host.name", host));
    }
    if let Some(executable) = std::env::current_exe().ok().and_then(|p| {
        p.file_name()
            .map(|name| name.to_string_lossy().into_owned())
    }) {
        attributes.push(KeyValue::new("process.executable.name", executable));
    }
    if let Some(version) = version {
        attributes.push(KeyValue::new("service.version", version.to_owned()));
    }
    Resource::builder()
        .with_service_name(service_name.to_owned())
        .with_attributes(attributes)
        .build()
}

/// The machine's host name, as the kernel reports it.
fn host_name() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .filter(|name| !name.is_empty())
}

/// The configured propagator, as the global one.
#[derive(Debug)]
struct SharedPropagator(Arc<dyn TextMapPropagator + Send + Sync>);

impl TextMapPropagator for SharedPropagator {
    fn inject_context(
        &self,
        cx: &opentelemetry::Context,
        injector: &mut dyn opentelemetry::propagation::Injector,
    ) {
        self.0.inject_context(cx, injector);
    }

    fn extract_with_context(
        &self,
        cx: &opentelemetry::Context,
        extractor: &dyn opentelemetry::propagation::Extractor,
    ) -> opentelemetry::Context {
        self.0.extract_with_context(cx, extractor)
    }

    fn fields(&self) -> opentelemetry::propagation::text_map_propagator::FieldIter<'_> {
        self.0.fields()
    }
}

/// Sends spans of the `tracing` crate to `tracer` too, so that handler code using
/// `tracing` nests under the server span, its events to `logger` as log records carrying
/// the trace and span ids, and its warnings to standard error (feature `tracing-bridge`, on
/// by default).
#[cfg(feature = "tracing-bridge")]
fn install_tracing_bridge(tracer: &SdkTracerProvider, logger: Option<&SdkLoggerProvider>) {
    use opentelemetry::trace::TracerProvider as _;
    use tracing_subscriber::{Layer as _, layer::SubscriberExt, util::SubscriberInitExt};
    // INFO and above unless RUST_LOG says otherwise: keeps hyper's and h2's debug spans out
    // of traces. The SDK's own diagnostics never become log records (they would loop).
    let filter = || {
        tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
    };
    let spans = tracing_opentelemetry::layer()
        .with_tracer(tracer.tracer("micro-otel"))
        .with_filter(filter());
    let logs = logger.map(|logger| {
        let quiet = filter()
            .add_directive("opentelemetry=off".parse().expect("a valid directive"))
            .add_directive("opentelemetry_sdk=off".parse().expect("a valid directive"))
            .add_directive("opentelemetry_otlp=off".parse().expect("a valid directive"));
        opentelemetry_appender_tracing::layer::OpenTelemetryTracingBridge::new(logger)
            .with_filter(quiet)
    });
    // Warnings and errors (the exporters' among them) also go to standard error, so that a
    // collector that cannot be reached is seen; `RUST_LOG` says more or less.
    let console = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        );
    // Another subscriber may be installed already; then `tracing` goes there.
    let _ = tracing_subscriber::registry()
        .with(spans)
        .with(logs)
        .with(console)
        .try_init();
}

/// The providers in use; flushes and shuts them down when dropped.
#[derive(Debug)]
pub struct Telemetry {
    dropped: batch::Dropped,
    tracer: Option<SdkTracerProvider>,
    meter: Option<SdkMeterProvider>,
    logger: Option<SdkLoggerProvider>,
    propagator: Arc<dyn TextMapPropagator + Send + Sync>,
}

impl Telemetry {
    /// Configures telemetry for `service_name` (unless `OTEL_SERVICE_NAME` names it).
    pub fn builder(service_name: impl Into<String>) -> TelemetryBuilder {
        TelemetryBuilder {
            code: InCode {
                service_name: service_name.into(),
                ..Default::default()
            },
            version: None,
            tree: None,
            table: None,
            install_global: true,
        }
    }

    /// The tracer provider (`None` under `OTEL_SDK_DISABLED=true`).
    pub fn tracer_provider(&self) -> Option<&SdkTracerProvider> {
        self.tracer.as_ref()
    }

    /// The meter provider (`None` under `OTEL_SDK_DISABLED=true`).
    pub fn meter_provider(&self) -> Option<&SdkMeterProvider> {
        self.meter.as_ref()
    }

    /// Spans dropped so far because the export queue was full (also reported as
    /// `micro_otel.telemetry.spans.dropped`).
    pub fn dropped_spans(&self) -> u64 {
        self.dropped.count()
    }

    /// The logger provider (`None` when logs are off or not exported).
    pub fn logger_provider(&self) -> Option<&SdkLoggerProvider> {
        self.logger.as_ref()
    }

    /// Built-in wrappers reporting here, for
    /// [`ServiceConfig::instrumentation`](crate::ServiceConfig::instrumentation) and
    /// [`ClientConfig::instrumentation`](crate::client::ClientConfig::instrumentation).
    /// Under `OTEL_SDK_DISABLED=true` calls still carry their callers' trace context on,
    /// and nothing is recorded.
    pub fn instrumentation(&self) -> crate::Instrumentation {
        let mut instrumentation = crate::Instrumentation::new().propagator(self.propagator.clone());
        if let Some(tracer) = &self.tracer {
            instrumentation = instrumentation.tracer_provider(tracer.clone());
        }
        match &self.meter {
            Some(meter) => instrumentation.meter_provider(meter.clone()),
            None => instrumentation.metrics(false),
        }
    }

    /// Exports everything queued now, all three signals. Blocks the calling thread until
    /// the export is done; from async code with OTLP export, call it through
    /// `tokio::task::spawn_blocking` (the exporters need the runtime's threads meanwhile).
    pub fn flush(&self) {
        if let Some(Err(e)) = self.tracer.as_ref().map(SdkTracerProvider::force_flush) {
            tracing::warn!(error = %e, "flushing spans failed");
        }
        if let Some(Err(e)) = self.meter.as_ref().map(SdkMeterProvider::force_flush) {
            tracing::warn!(error = %e, "flushing metrics failed");
        }
        if let Some(Err(e)) = self.logger.as_ref().map(SdkLoggerProvider::force_flush) {
            tracing::warn!(error = %e, "flushing logs failed");
        }
    }

    /// Flushes and shuts the providers down; blocks like [`Telemetry::flush`] (dropping
    /// the value does the same).
    pub fn shutdown(self) {
        drop(self);
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        let results = [
            self.tracer.as_ref().map(SdkTracerProvider::shutdown),
            self.meter.as_ref().map(SdkMeterProvider::shutdown),
            self.logger.as_ref().map(SdkLoggerProvider::shutdown),
        ];
        for result in results.into_iter().flatten() {
            if let Err(e) = result {
                tracing::debug!(error = %e, "telemetry shutdown");
            }
        }
    }
}
