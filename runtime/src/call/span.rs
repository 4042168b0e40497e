//! [`SpanSource`]: the tracer spans come from, held concretely for the SDK so that each span
//! is boxed once (in the context) rather than twice.

use std::borrow::Cow;
use std::sync::Arc;

use opentelemetry::global::BoxedTracer;
use opentelemetry::trace::{Span, SpanBuilder, TraceContextExt, Tracer};
use opentelemetry_sdk::trace::SdkTracer;

/// Where spans are started.
#[derive(Clone)]
pub(crate) enum SpanSource {
    /// An SDK tracer provider given to the service.
    Sdk(SdkTracer),
    /// The global provider, whatever it is.
    Global(Arc<BoxedTracer>),
}

impl std::fmt::Debug for SpanSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SpanSource::Sdk(_) => "SpanSource::Sdk",
            SpanSource::Global(_) => "SpanSource::Global",
        })
    }
}

impl SpanSource {
    /// Starts `builder` under `parent`; `recording` fills in what only recorded spans need.
    /// Returns the context holding the new span.
    pub(crate) fn start(
        &self,
        builder: SpanBuilder,
        parent: &opentelemetry::Context,
        recording: impl FnOnce(&mut dyn FnMut(opentelemetry::KeyValue)),
    ) -> opentelemetry::Context {
        match self {
            SpanSource::Sdk(tracer) => start(tracer, builder, parent, recording),
            SpanSource::Global(tracer) => start(tracer.as_ref(), builder, parent, recording),
        }
    }
}

fn start<T>(
    tracer: &T,
    builder: SpanBuilder,
    parent: &opentelemetry::Context,
    recording: impl FnOnce(&mut dyn FnMut(opentelemetry::KeyValue)),
) -> opentelemetry::Context
where
    T: Tracer,
    T::Span: Send + Sync + 'static,
{
    let mut span = builder.start_with_context(tracer, parent);
    if span.is_recording() {
        recording(&mut |kv| span.set_attribute(kv));
    }
    parent.with_span(span)
}

/// A span opened with [`crate::Context::span`]: a child of the call's span, ended when
/// dropped. With tracing off it records nothing.
#[derive(Debug)]
pub struct ChildSpan {
    cx: opentelemetry::Context,
}

impl ChildSpan {
    pub(crate) fn start(
        source: Option<&SpanSource>,
        name: Cow<'static, str>,
        parent: &opentelemetry::Context,
    ) -> Self {
        let cx = match source {
            Some(source) => source.start(SpanBuilder::from_name(name), parent, |_| {}),
            None => opentelemetry::Context::new(),
        };
        Self { cx }
    }

    /// The span, to add attributes or events.
    pub fn span(&self) -> opentelemetry::trace::SpanRef<'_> {
        self.cx.span()
    }

    /// A context holding the span, to open grandchildren under it.
    pub fn context(&self) -> &opentelemetry::Context {
        &self.cx
    }
}

impl Drop for ChildSpan {
    fn drop(&mut self) {
        self.cx.span().end();
    }
}
