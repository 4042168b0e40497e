//! [`Instrumentation`]: the built-in wrappers, declared once. They run outermost on every
//! side (handlers, calls, publishes, message processing), always in the order of
//! [`Instrumentation::chains`]: tracing, then metrics.

use std::sync::Arc;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;

use crate::metrics::{Buckets, Metrics};
use crate::trace::Tracing;
use crate::wrapper::{Wrapper, Wrappers};

/// Which built-in wrappers a service or a client runs, and where they report: given to
/// `ServiceConfig::instrumentation` or `ClientConfig::instrumentation` (a `Telemetry` hands
/// out one reporting to its providers).
///
/// ```
/// use micro_otel::{Instrumentation, Service};
///
/// let quiet = Service::builder("batch.job")
///     .instrumentation(Instrumentation::off())
///     .build();
/// # let _ = quiet;
/// ```
#[derive(Clone, Debug)]
pub struct Instrumentation {
    tracing: bool,
    metrics: bool,
    propagator: Option<Arc<dyn TextMapPropagator + Send + Sync>>,
    tracer_provider: Option<SdkTracerProvider>,
    meter_provider: Option<SdkMeterProvider>,
    buckets: Buckets,
}

impl Default for Instrumentation {
    /// Tracing and metrics on, through the global providers.
    fn default() -> Self {
        Self {
            tracing: true,
            metrics: true,
            propagator: None,
            tracer_provider: None,
            meter_provider: None,
            buckets: Buckets::default(),
        }
    }
}

impl Instrumentation {
    /// Tracing and metrics on, through the global providers (the default).
    pub fn new() -> Self {
        Self::default()
    }

    /// No built-in wrapper at all.
    pub fn off() -> Self {
        Self::new().tracing(false).metrics(false)
    }

    /// Turns the tracing wrappers on (default) or off.
    pub fn tracing(mut self, enabled: bool) -> Self {
        self.tracing = enabled;
        self
    }

    /// Turns the metrics wrappers on (default) or off.
    pub fn metrics(mut self, enabled: bool) -> Self {
        self.metrics = enabled;
        self
    }

    /// Carries trace context across the wire with `propagator` (default: W3C trace context
    /// and baggage; a `Telemetry` passes on what `OTEL_PROPAGATORS` chose).
    pub fn propagator(mut self, propagator: Arc<dyn TextMapPropagator + Send + Sync>) -> Self {
        self.propagator = Some(propagator);
        self
    }

    /// Records metrics through `provider` instead of the global provider; a service flushes
    /// it when it stops.
    pub fn meter_provider(mut self, provider: SdkMeterProvider) -> Self {
        self.meter_provider = Some(provider);
        self
    }

    /// Histogram boundaries, in seconds, of the duration instruments (default:
    /// [`crate::metrics::LATENCY_BOUNDARIES`]). For exponential histograms instead, see
    /// `OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION` in the README.
    pub fn latency_buckets(mut self, boundaries: impl Into<Vec<f64>>) -> Self {
        self.buckets.latency = boundaries.into();
        self
    }

    /// Histogram boundaries, in bytes, of the message-size instruments (default:
    /// [`crate::metrics::SIZE_BOUNDARIES`]).
    pub fn size_buckets(mut self, boundaries: impl Into<Vec<f64>>) -> Self {
        self.buckets.size = boundaries.into();
        self
    }

    /// Traces through `provider` instead of the global provider; a service flushes it when
    /// it stops.
    pub fn tracer_provider(mut self, provider: SdkTracerProvider) -> Self {
        self.tracer_provider = Some(provider);
        self
    }

    /// Whether providers were set in code, which [`Instrumentation::flush`] flushes.
    pub(crate) fn has_providers(&self) -> bool {
        self.tracer_provider.is_some() || self.meter_provider.is_some()
    }

    /// Exports what the providers set in code hold now (a service does it when it stops).
    /// Blocks the calling thread.
    pub(crate) fn flush(&self) {
        if let Some(Err(e)) = self.tracer_provider.as_ref().map(|p| p.force_flush()) {
            tracing::warn!(error = %e, "flushing spans failed");
        }
        if let Some(Err(e)) = self.meter_provider.as_ref().map(|p| p.force_flush()) {
            tracing::warn!(error = %e, "flushing metrics failed");
        }
    }

    /// The built-in wrappers of each side, outermost first, with their instruments
    /// created once.
    pub(crate) fn chains(&self) -> Chains {
        let tracing = self.tracing.then(|| {
            let tracing = match &self.tracer_provider {
                Some(provider) => Tracing::new(provider),
                None => Tracing::global(),
            };
            match &self.propagator {
                Some(propagator) => tracing.with_propagator(propagator.clone()),
                None => tracing,
            }
        });
        let metrics = self.metrics.then(|| {
            use opentelemetry::metrics::MeterProvider as _;
            let scope = crate::metrics::scope();
            let meter = match &self.meter_provider {
                Some(provider) => provider.meter_with_scope(scope),
                None => opentelemetry::global::meter_with_scope(scope),
            };
            Metrics::with_meter(&meter, &self.buckets)
        });
        let incoming = tracing.iter().map(Tracing::server);
        let outgoing = tracing.iter().map(Tracing::client);
        Chains {
            incoming: incoming
                .chain(metrics.iter().map(Metrics::server))
                .collect(),
            outgoing: outgoing
                .chain(metrics.iter().map(Metrics::client))
                .collect(),
            metrics,
        }
    }
}

/// The built-in wrappers of both sides, ready to go in front of the user's, and the
/// instruments the steps after the wrappers record into.
pub(crate) struct Chains {
    incoming: Vec<Arc<dyn Wrapper>>,
    outgoing: Vec<Arc<dyn Wrapper>>,
    metrics: Option<Metrics>,
}

impl Chains {
    /// The metrics instruments, when metrics are on.
    pub(crate) fn metrics(&self) -> Option<&Metrics> {
        self.metrics.as_ref()
    }

    /// The chain of an incoming operation (a handler, a message processing): the built-in
    /// wrappers, then `user`'s in order.
    pub(crate) fn incoming(&self, user: &[Arc<dyn Wrapper>]) -> Wrappers {
        Wrappers::new(self.incoming.iter().chain(user).cloned().collect())
    }

    /// The chain of an outgoing operation (a call, a publish): the built-in wrappers, then
    /// `user`'s in order.
    pub(crate) fn outgoing(&self, user: &[Arc<dyn Wrapper>]) -> Wrappers {
        Wrappers::new(self.outgoing.iter().chain(user).cloned().collect())
    }
}
