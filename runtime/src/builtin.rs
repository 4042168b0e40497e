//! The built-in wrappers, declared once: they run outermost on every side (handlers, calls,
//! publishes, message processing), always in the order of [`BuiltIns::chains`]: tracing
//! first.

use std::sync::Arc;

use opentelemetry_sdk::trace::SdkTracerProvider;

use crate::trace::Tracing;
use crate::wrapper::{Wrapper, Wrappers};

/// Which built-in wrappers a service or a client runs, and where they report.
#[derive(Clone, Debug)]
pub(crate) struct BuiltIns {
    tracing: bool,
    tracer_provider: Option<SdkTracerProvider>,
}

impl Default for BuiltIns {
    /// Tracing on, through the global tracer provider.
    fn default() -> Self {
        Self {
            tracing: true,
            tracer_provider: None,
        }
    }
}

impl BuiltIns {
    /// Turns tracing on or off.
    pub(crate) fn set_tracing(&mut self, enabled: bool) {
        self.tracing = enabled;
    }

    /// Traces through `provider` instead of the global provider.
    pub(crate) fn set_tracer_provider(&mut self, provider: SdkTracerProvider) {
        self.tracer_provider = Some(provider);
    }

    /// The provider set in code, which the service flushes when it stops.
    pub(crate) fn tracer_provider(&self) -> Option<&SdkTracerProvider> {
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
