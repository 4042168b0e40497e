//! Telemetry setup: a tracer provider with OTLP export, sampling and batching, configured in
//! code or through the standard `OTEL_*` environment variables.
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

mod tree;

use std::time::Duration;

use opentelemetry::KeyValue;
#[cfg(feature = "tracing-bridge")]
use opentelemetry::trace::TracerProvider as _;
#[cfg(feature = "otlp")]
use opentelemetry_otlp::{SpanExporter as OtlpExporter, WithExportConfig};
use opentelemetry_sdk::Resource;
#[cfg(feature = "otlp")]
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor};
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
#[cfg(feature = "tracing-bridge")]
use tracing_subscriber::{Layer as _, layer::SubscriberExt, util::SubscriberInitExt};

pub use tree::TraceTree;

/// Why telemetry could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The OTLP exporter could not be built (bad endpoint, no Tokio runtime...).
    #[cfg(feature = "otlp")]
    #[error("building the OTLP exporter for {endpoint}: {source}")]
    Exporter {
        /// The endpoint configured, or `OTEL_EXPORTER_OTLP_ENDPOINT`'s default.
        endpoint: String,
        /// What went wrong.
        source: opentelemetry_otlp::ExporterBuildError,
    },
    /// A sampling ratio outside 0..=1.
    #[error("sample ratio must be between 0 and 1, got {0}")]
    SampleRatio(f64),
}

/// Where finished spans go.
#[derive(Debug, Clone)]
enum Export {
    #[cfg(feature = "otlp")]
    Otlp(Option<String>),
    Tree(TraceTree),
    Nowhere,
}

/// Configures a [`Telemetry`]. Anything not set here falls back to the `OTEL_*` variables
/// (`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_TRACES_SAMPLER[_ARG]`, `OTEL_BSP_*`,
/// `OTEL_RESOURCE_ATTRIBUTES`) and then to the SDK defaults.
#[derive(Debug, Clone)]
pub struct TelemetryBuilder {
    service_name: String,
    version: Option<String>,
    export: Export,
    sample_ratio: Option<f64>,
    max_queue_size: Option<usize>,
    max_export_batch_size: Option<usize>,
    scheduled_delay: Option<Duration>,
    install_global: bool,
}

impl TelemetryBuilder {
    /// `service.version` resource attribute.
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.version = Some(version.into());
        self
    }

    /// Exports over OTLP/gRPC to `endpoint`, e.g. `http://127.0.0.1:4317` (feature `otlp`,
    /// on by default).
    #[cfg(feature = "otlp")]
    pub fn otlp(mut self, endpoint: impl Into<String>) -> Self {
        self.export = Export::Otlp(Some(endpoint.into()));
        self
    }

    /// Keeps spans in `tree` to print them (the console exporter of the demo).
    pub fn tree(mut self, tree: TraceTree) -> Self {
        self.export = Export::Tree(tree);
        self
    }

    /// Drops every span (tracing still propagates context).
    pub fn no_export(mut self) -> Self {
        self.export = Export::Nowhere;
        self
    }

    /// Samples this fraction of new traces; calls with a parent follow the parent's decision.
    pub fn sample_ratio(mut self, ratio: f64) -> Self {
        self.sample_ratio = Some(ratio);
        self
    }

    /// Spans queued for export before new ones are dropped.
    pub fn max_queue_size(mut self, size: usize) -> Self {
        self.max_queue_size = Some(size);
        self
    }

    /// Spans sent in one export.
    pub fn max_export_batch_size(mut self, size: usize) -> Self {
        self.max_export_batch_size = Some(size);
        self
    }

    /// Longest wait between exports.
    pub fn scheduled_delay(mut self, delay: Duration) -> Self {
        self.scheduled_delay = Some(delay);
        self
    }

    /// Whether to install the provider as the global one, the W3C propagators globally, and
    /// a `tracing` subscriber bridging `tracing` spans to OpenTelemetry (default: yes).
    pub fn install_global(mut self, install: bool) -> Self {
        self.install_global = install;
        self
    }

    /// Builds the provider. With OTLP export it must be called inside a Tokio runtime.
    pub fn init(self) -> Result<Telemetry, TelemetryError> {
        let mut resource = Resource::builder().with_service_name(self.service_name.clone());
        if let Some(version) = &self.version {
            resource = resource.with_attribute(KeyValue::new("service.version", version.clone()));
        }
        let mut provider = SdkTracerProvider::builder().with_resource(resource.build());
        if let Some(ratio) = self.sample_ratio {
            if !(0.0..=1.0).contains(&ratio) {
                return Err(TelemetryError::SampleRatio(ratio));
            }
            provider = provider.with_sampler(Sampler::ParentBased(Box::new(
                Sampler::TraceIdRatioBased(ratio),
            )));
        }
        let provider = match self.export {
            #[cfg(feature = "otlp")]
            Export::Otlp(endpoint) => {
                let mut exporter = OtlpExporter::builder().with_tonic();
                if let Some(endpoint) = &endpoint {
                    exporter = exporter.with_endpoint(endpoint.clone());
                }
                let exporter = exporter
                    .build()
                    .map_err(|source| TelemetryError::Exporter {
                        endpoint: endpoint.unwrap_or_else(|| "the default endpoint".into()),
                        source,
                    })?;
                let mut batch = BatchConfigBuilder::default();
                if let Some(n) = self.max_queue_size {
                    batch = batch.with_max_queue_size(n);
                }
                if let Some(n) = self.max_export_batch_size {
                    batch = batch.with_max_export_batch_size(n);
                }
                if let Some(d) = self.scheduled_delay {
                    batch = batch.with_scheduled_delay(d);
                }
                provider.with_span_processor(
                    BatchSpanProcessor::builder(exporter)
                        .with_batch_config(batch.build())
                        .build(),
                )
            }
            Export::Tree(tree) => provider.with_simple_exporter(tree),
            Export::Nowhere => provider,
        }
        .build();
        if self.install_global {
            opentelemetry::global::set_tracer_provider(provider.clone());
            opentelemetry::global::set_text_map_propagator(
                opentelemetry::propagation::TextMapCompositePropagator::new(vec![
                    Box::new(opentelemetry_sdk::propagation::TraceContextPropagator::new()),
                    Box::new(opentelemetry_sdk::propagation::BaggagePropagator::new()),
                ]),
            );
            #[cfg(feature = "tracing-bridge")]
            install_tracing_bridge(&provider);
        }
        Ok(Telemetry { provider })
    }
}

/// Sends spans of the `tracing` crate to `provider` too, so that handler code using
/// `tracing` nests under the server span (feature `tracing-bridge`, on by default).
#[cfg(feature = "tracing-bridge")]
fn install_tracing_bridge(provider: &SdkTracerProvider) {
    // INFO and above unless RUST_LOG says otherwise: keeps hyper's and h2's debug spans out
    // of traces.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let layer = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("micro-otel"))
        .with_filter(filter);
    // Another subscriber may be installed already; then `tracing` spans go there.
    let _ = tracing_subscriber::registry().with(layer).try_init();
}

/// The tracer provider in use; flushes and shuts it down when dropped.
#[derive(Debug)]
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl Telemetry {
    /// Configures telemetry for `service_name`.
    pub fn builder(service_name: impl Into<String>) -> TelemetryBuilder {
        TelemetryBuilder {
            service_name: service_name.into(),
            version: None,
            #[cfg(feature = "otlp")]
            export: Export::Otlp(None),
            #[cfg(not(feature = "otlp"))]
            export: Export::Nowhere,
            sample_ratio: None,
            max_queue_size: None,
            max_export_batch_size: None,
            scheduled_delay: None,
            install_global: true,
        }
    }

    /// The tracer provider.
    pub fn provider(&self) -> &SdkTracerProvider {
        &self.provider
    }

    /// Built-in wrappers reporting here, for
    /// [`ServiceConfig::instrumentation`](crate::ServiceConfig::instrumentation) and
    /// [`ClientConfig::instrumentation`](crate::client::ClientConfig::instrumentation).
    pub fn instrumentation(&self) -> crate::Instrumentation {
        crate::Instrumentation::new().tracer_provider(self.provider.clone())
    }

    /// Exports everything queued now. Blocks the calling thread until the export is done;
    /// from async code with OTLP export, call it through `tokio::task::spawn_blocking`
    /// (the exporter itself needs the runtime's threads meanwhile).
    pub fn flush(&self) {
        if let Err(e) = self.provider.force_flush() {
            tracing::warn!(error = %e, "flushing spans failed");
        }
    }

    /// Flushes and shuts the provider down; blocks like [`Telemetry::flush`] (dropping the
    /// value does the same).
    pub fn shutdown(self) {
        drop(self);
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::debug!(error = %e, "telemetry shutdown");
        }
    }
}
