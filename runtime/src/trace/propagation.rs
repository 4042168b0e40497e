//! W3C `traceparent`, `tracestate` and `baggage` in gRPC metadata.

use std::sync::{Arc, LazyLock};

use opentelemetry::Context;
use opentelemetry::propagation::text_map_propagator::FieldIter;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry_sdk::propagation::BaggagePropagator;

use super::w3c::W3cTraceContext;
use http::HeaderName;
use tonic::metadata::{KeyRef, MetadataKey, MetadataMap, MetadataValue};

/// The propagator the wrappers use unless told otherwise: W3C trace context and baggage.
/// Held by each wrapper, so the hot path takes no global lock.
pub fn default_propagator() -> Arc<dyn TextMapPropagator + Send + Sync> {
    static DEFAULT: LazyLock<Arc<dyn TextMapPropagator + Send + Sync>> =
        LazyLock::new(|| Arc::new(TraceContextAndBaggage::default()));
    DEFAULT.clone()
}

/// The propagator of `OTEL_PROPAGATORS`: W3C trace context and/or baggage, or none.
pub fn propagator(trace_context: bool, baggage: bool) -> Arc<dyn TextMapPropagator + Send + Sync> {
    match (trace_context, baggage) {
        (true, true) => default_propagator(),
        (true, false) => Arc::new(W3cTraceContext),
        (false, true) => Arc::new(BaggagePropagator::new()),
        (false, false) => Arc::new(opentelemetry::trace::noop::NoopTextMapPropagator::new()),
    }
}

/// W3C trace context, then baggage: what the SDK's composite of the two does, without its
/// loop over boxed propagators and the context clone it starts from.
#[derive(Debug, Default)]
struct TraceContextAndBaggage {
    baggage: BaggagePropagator,
}

impl TextMapPropagator for TraceContextAndBaggage {
    fn inject_context(&self, cx: &Context, injector: &mut dyn Injector) {
        W3cTraceContext.inject_context(cx, injector);
        self.baggage.inject_context(cx, injector);
    }

    fn extract_with_context(&self, cx: &Context, extractor: &dyn Extractor) -> Context {
        let cx = W3cTraceContext.extract_with_context(cx, extractor);
        self.baggage.extract_with_context(&cx, extractor)
    }

    fn fields(&self) -> FieldIter<'_> {
        static NAMES: LazyLock<Vec<String>> = LazyLock::new(|| {
            W3cTraceContext
                .fields()
                .chain(BaggagePropagator::new().fields())
                .map(str::to_owned)
                .collect()
        });
        FieldIter::new(NAMES.as_slice())
    }
}

/// Reads propagation headers from gRPC metadata.
pub struct MetadataExtractor<'a>(pub &'a MetadataMap);

impl Extractor for MetadataExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        // Known keys skip parsing the name on every lookup.
        const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
        const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
        const BAGGAGE: HeaderName = HeaderName::from_static("baggage");
        let headers: &http::HeaderMap = self.0.as_ref();
        let value = match key {
            "traceparent" => headers.get(TRACEPARENT),
            "tracestate" => headers.get(TRACESTATE),
            "baggage" => headers.get(BAGGAGE),
            other => headers.get(other),
        };
        value.and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .keys()
            .map(|k| match k {
                KeyRef::Ascii(k) => k.as_str(),
                KeyRef::Binary(k) => k.as_str(),
            })
            .collect()
    }
}

/// Writes propagation headers into gRPC metadata; values that are not valid header text
/// are skipped rather than failing the call.
pub struct MetadataInjector<'a>(pub &'a mut MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        // An empty `tracestate` says nothing; sending it costs a header on every call.
        if value.is_empty() {
            return;
        }
        // Through `Bytes`, the header keeps the string's buffer instead of copying it.
        let Ok(mut value) = MetadataValue::try_from(bytes::Bytes::from(value)) else {
            return;
        };
        // The W3C keys are static: no allocation for the name on the hot path.
        let key = match key {
            "traceparent" => {
                // Unique per call: never worth a slot in the HPACK table, where it would
                // evict headers that do repeat (content-type, te, user-agent).
                value.set_sensitive(true);
                MetadataKey::from_static("traceparent")
            }
            "tracestate" => MetadataKey::from_static("tracestate"),
            "baggage" => MetadataKey::from_static("baggage"),
            other => match MetadataKey::from_bytes(other.as_bytes()) {
                Ok(key) => key,
                Err(_) => return,
            },
        };
        self.0.insert(key, value);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeSet, HashMap};

    use opentelemetry::KeyValue;
    use opentelemetry::baggage::BaggageExt;
    use opentelemetry::propagation::TextMapCompositePropagator;
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
    };
    use opentelemetry_sdk::propagation::TraceContextPropagator;

    use super::*;

    fn sdk() -> TextMapCompositePropagator {
        TextMapCompositePropagator::new(vec![
            Box::new(TraceContextPropagator::new()),
            Box::new(BaggagePropagator::new()),
        ])
    }

    #[test]
    fn the_default_carries_what_the_sdk_composite_carries() {
        let sc = SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
            SpanId::from_hex("00f067aa0ba902b7").unwrap(),
            TraceFlags::SAMPLED,
            true,
            TraceState::from_key_value([("k", "v")]).unwrap(),
        );
        let cx = Context::new()
            .with_remote_span_context(sc)
            .with_baggage([KeyValue::new("user", "ada")]);
        let (ours, sdk) = (default_propagator(), sdk());
        let (mut ours_sent, mut sdk_sent) = (HashMap::new(), HashMap::new());
        ours.inject_context(&cx, &mut ours_sent);
        sdk.inject_context(&cx, &mut sdk_sent);
        assert_eq!(ours_sent, sdk_sent);

        let back = ours.extract(&sdk_sent);
        assert_eq!(back.span().span_context(), cx.span().span_context());
        assert_eq!(back.baggage().get("user"), Some(&"ada".into()));
        // The composite keeps its names in a set: compare them as sets.
        let names = |fields: FieldIter<'_>| fields.map(str::to_owned).collect::<BTreeSet<_>>();
        assert_eq!(names(ours.fields()), names(sdk.fields()));
    }
}
