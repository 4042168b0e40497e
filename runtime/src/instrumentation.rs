//! [`Instrumentation`]: the built-in wrappers, declared once. They run outermost on every
//! side (handlers, calls, publishes, message processing), always in the order of
//! [`Instrumentation::chains`]: tracing first.

use std::sync::Arc;

use opentelemetry_sdk::trace::SdkTracerProvider;

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
    tracer_provider: Option<SdkTracerProvider>,
}

impl Default for Instrumentation {
    /// Tracing on, through the global tracer provider.
    fn default() -> Self {
        Self {
            tracing: true,
            tracer_provider: None,
        }
    }
}

impl Instrumentation {
    /// Tracing on, through the global tracer provider (the default).
    pub fn new() -> Self {
        Self::default()
    }

    /// No built-in wrapper at all.
    pub fn off() -> Self {
        Self::new().tracing(false)
    }

    /// Turns the tracing wrappers on (default) or off.
    pub fn tracing(mut self, enabled: bool) -> Self {
        self.tracing = enabled;
        self
    }

    /// Traces through `provider` instead of the global provider; a service flushes it when
    /// it stops.
    pub fn tracer_provider(mut self, provider: SdkTracerProvider) -> Self {
        self.tracer_provider = Some(provider);
        self
    }

    /// The provider set in code, which the service flushes when it stops.
    pub(crate) fn provider(&self) -> Option<&SdkTracerProvider> {
        self.tracer_provider.as_ref()
    }

    /// The built-in wrappers of each side, outermost first.
    pub(crate) fn chains(&self) -> Chains {
        let tracing = self.tracing.then(|| match &self.tracer_provider {
            Some(provider) => Tracing::new(provider),
            None => Tracing::global(),
        });
        Chains {
            incoming: tracing.iter().map(Tracing::server).collect(),
            outgoing: tracing.iter().map(Tracing::client).collect(),
        }
    }
}

/// The built-in wrappers of both sides, ready to go in front of the user's.
pub(crate) struct Chains {
    incoming: Vec<Arc<dyn Wrapper>>,
    outgoing: Vec<Arc<dyn Wrapper>>,
}

impl Chains {
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
