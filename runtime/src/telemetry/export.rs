//! The exporters of the three signals, built from resolved [`Settings`]: OTLP over gRPC or
//! http/protobuf, the console, or nothing.

// With neither `otlp` nor `console` there is nothing to build, and the helpers lie idle.
#![cfg_attr(not(any(feature = "otlp", feature = "console")), allow(unused))]

use opentelemetry_sdk::logs::{
    BatchConfigBuilder as LogBatchConfig, BatchLogProcessor, LoggerProviderBuilder,
};
use opentelemetry_sdk::metrics::{MeterProviderBuilder, PeriodicReader};
use opentelemetry_sdk::trace::TracerProviderBuilder;
// Only the console's spans go through the SDK's batch processor; OTLP's go through ours.
#[cfg(feature = "console")]
use opentelemetry_sdk::trace::{BatchConfigBuilder as SpanBatchConfig, BatchSpanProcessor};

use super::TelemetryError;
use super::settings::{Destination, Settings};

/// Builds one signal's OTLP exporter from `$builder` (`SpanExporter::builder()`...) with
/// `$otlp`'s endpoint, protocol, headers, timeout and compression.
#[cfg(feature = "otlp")]
macro_rules! otlp_exporter {
    ($builder:expr, $otlp:expr, $signal:literal) => {{
        use opentelemetry_otlp::{
            Compression, WithExportConfig as _, WithHttpConfig as _, WithTonicConfig as _,
        };
        let otlp = $otlp;
        let built = match otlp.protocol {
            super::Protocol::Grpc => {
                let mut metadata = tonic::metadata::MetadataMap::new();
                for (key, value) in &otlp.headers {
                    let name = tonic::metadata::MetadataKey::from_bytes(key.as_bytes());
                    match (name, value.parse()) {
                        (Ok(name), Ok(value)) => {
                            metadata.insert(name, value);
                        }
                        _ => {
                            return Err(TelemetryError::Header {
                                header: key.clone(),
                            });
                        }
                    }
                }
                let mut builder = $builder
                    .with_tonic()
                    .with_endpoint(otlp.endpoint.clone())
                    .with_timeout(otlp.timeout)
                    .with_metadata(metadata);
                if otlp.gzip {
                    builder = builder.with_compression(Compression::Gzip);
                }
                #[cfg(feature = "tls")]
                if let Some(tls) = &otlp.tls {
                    builder = builder.with_tls_config(tls.tonic());
                }
                builder.build()
            }
            super::Protocol::HttpProtobuf => {
                let mut builder = $builder
                    .with_http()
                    .with_http_client(OnRuntime::new(&otlp, $signal)?)
                    .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                    .with_endpoint(otlp.endpoint.clone())
                    .with_timeout(otlp.timeout)
                    .with_headers(otlp.headers.iter().cloned().collect());
                if otlp.gzip {
                    builder = builder.with_compression(Compression::Gzip);
                }
                builder.build()
            }
        };
        built.map_err(|source| TelemetryError::Exporter {
            signal: $signal,
            endpoint: otlp.endpoint.clone(),
            source,
        })?
    }};
}

/// The http/protobuf exporters' client: hyper's (over rustls for an `https://` endpoint),
/// each request run on the Tokio runtime `Telemetry::init` was called in (the batch
/// processors export from threads of their own, where hyper finds no reactor).
#[cfg(feature = "otlp")]
#[derive(Debug)]
struct OnRuntime {
    runtime: tokio::runtime::Handle,
    client: std::sync::Arc<dyn opentelemetry_http::HttpClient>,
}

#[cfg(feature = "otlp")]
impl OnRuntime {
    fn new(otlp: &super::settings::Otlp, signal: &'static str) -> Result<Self, TelemetryError> {
        let runtime =
            tokio::runtime::Handle::try_current().map_err(|_| TelemetryError::NoRuntime)?;
        #[cfg(feature = "tls")]
        if let Some(tls) = &otlp.tls {
            let refused = |source| TelemetryError::Tls { signal, source };
            let config = tls.rustls().map_err(refused)?;
            let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
            http.enforce_http(false);
            let connector = hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(config)
                .https_only();
            let connector = match tls.checked_server_name().map_err(refused)? {
                Some(name) => connector
                    .with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(name)),
                None => connector,
            };
            let client = opentelemetry_http::hyper::HyperClient::new(
                connector.enable_http1().wrap_connector(http),
                otlp.timeout,
                None,
            );
            return Ok(Self {
                runtime,
                client: std::sync::Arc::new(client),
            });
        }
        let _ = signal;
        let client =
            opentelemetry_http::hyper::HyperClient::with_default_connector(otlp.timeout, None);
        Ok(Self {
            runtime,
            client: std::sync::Arc::new(client),
        })
    }
}

#[cfg(feature = "otlp")]
#[tonic::async_trait]
impl opentelemetry_http::HttpClient for OnRuntime {
    async fn send_bytes(
        &self,
        request: http::Request<bytes::Bytes>,
    ) -> Result<http::Response<bytes::Bytes>, opentelemetry_http::HttpError> {
        let client = self.client.clone();
        self.runtime
            .spawn(async move { client.send_bytes(request).await })
            .await
            .map_err(|e| Box::new(e) as opentelemetry_http::HttpError)?
    }
}

/// `otlp` with its timeout no longer than `limit` (a processor's export timeout: the
/// exporter is what enforces it).
#[cfg(feature = "otlp")]
fn within(otlp: &super::settings::Otlp, limit: std::time::Duration) -> super::settings::Otlp {
    let mut otlp = otlp.clone();
    otlp.timeout = otlp.timeout.min(limit);
    otlp
}

/// Adds a batching processor per destination of the spans: ours for OTLP (bounded, its
/// drops counted in `dropped`), the SDK's for the console.
#[cfg_attr(not(feature = "otlp"), allow(unused_variables))]
pub(crate) fn spans(
    mut provider: TracerProviderBuilder,
    settings: &Settings,
    dropped: &super::batch::Dropped,
) -> Result<TracerProviderBuilder, TelemetryError> {
    let batch = settings.spans;
    for destination in &settings.traces {
        provider = match destination {
            #[cfg(feature = "otlp")]
            Destination::Otlp(otlp) => {
                let otlp = within(otlp, batch.export_timeout);
                let exporter =
                    otlp_exporter!(opentelemetry_otlp::SpanExporter::builder(), &otlp, "traces");
                let runtime =
                    tokio::runtime::Handle::try_current().map_err(|_| TelemetryError::NoRuntime)?;
                let batcher = super::batch::Batcher::new(exporter, batch, runtime, dropped.clone())
                    .map_err(TelemetryError::Thread)?;
                provider.with_span_processor(batcher)
            }
            #[cfg(not(feature = "otlp"))]
            Destination::Otlp(_) => provider,
            #[cfg(feature = "console")]
            Destination::Console => provider.with_span_processor(
                BatchSpanProcessor::builder(opentelemetry_stdout::SpanExporter::default())
                    .with_batch_config(
                        SpanBatchConfig::default()
                            .with_max_queue_size(batch.max_queue_size)
                            .with_max_export_batch_size(batch.max_export_batch_size)
                            .with_scheduled_delay(batch.scheduled_delay)
                            .build(),
                    )
                    .build(),
            ),
            #[cfg(not(feature = "console"))]
            Destination::Console => provider,
        };
    }
    Ok(provider)
}

/// Adds a periodic reader per destination of the metrics.
pub(crate) fn metrics(
    mut provider: MeterProviderBuilder,
    settings: &Settings,
) -> Result<MeterProviderBuilder, TelemetryError> {
    for destination in &settings.metrics {
        provider = match destination {
            #[cfg(feature = "otlp")]
            Destination::Otlp(otlp) => {
                let otlp = within(otlp, settings.metric_timeout);
                let builder = opentelemetry_otlp::MetricExporter::builder()
                    .with_temporality(settings.temporality);
                let exporter = otlp_exporter!(builder, &otlp, "metrics");
                provider.with_reader(
                    PeriodicReader::builder(exporter)
                        .with_interval(settings.metric_interval)
                        .build(),
                )
            }
            #[cfg(not(feature = "otlp"))]
            Destination::Otlp(_) => provider,
            #[cfg(feature = "console")]
            Destination::Console => provider.with_reader(
                PeriodicReader::builder(opentelemetry_stdout::MetricExporter::default())
                    .with_interval(settings.metric_interval)
                    .build(),
            ),
            #[cfg(not(feature = "console"))]
            Destination::Console => provider,
        };
    }
    Ok(provider)
}

/// Adds a batching processor per destination of the log records.
pub(crate) fn logs(
    mut provider: LoggerProviderBuilder,
    settings: &Settings,
) -> Result<LoggerProviderBuilder, TelemetryError> {
    let batch = settings.log_records;
    let config = || {
        LogBatchConfig::default()
            .with_max_queue_size(batch.max_queue_size)
            .with_max_export_batch_size(batch.max_export_batch_size)
            .with_scheduled_delay(batch.scheduled_delay)
            .build()
    };
    for destination in &settings.logs {
        provider = match destination {
            #[cfg(feature = "otlp")]
            Destination::Otlp(otlp) => {
                let otlp = within(otlp, batch.export_timeout);
                let exporter =
                    otlp_exporter!(opentelemetry_otlp::LogExporter::builder(), &otlp, "logs");
                provider.with_log_processor(
                    BatchLogProcessor::builder(exporter)
                        .with_batch_config(config())
                        .build(),
                )
            }
            #[cfg(not(feature = "otlp"))]
            Destination::Otlp(_) => provider,
            #[cfg(feature = "console")]
            Destination::Console => provider.with_log_processor(
                BatchLogProcessor::builder(opentelemetry_stdout::LogExporter::default())
                    .with_batch_config(config())
                    .build(),
            ),
            #[cfg(not(feature = "console"))]
            Destination::Console => provider,
        };
    }
    Ok(provider)
}
