//! W3C `traceparent`, `tracestate` and `baggage` in gRPC metadata.

use std::sync::{Arc, LazyLock};

use opentelemetry::propagation::{
    Extractor, Injector, TextMapCompositePropagator, TextMapPropagator,
};
use opentelemetry_sdk::propagation::BaggagePropagator;

use super::w3c::W3cTraceContext;
use http::HeaderName;
use tonic::metadata::{KeyRef, MetadataKey, MetadataMap, MetadataValue};

/// The propagator the wrappers use unless told otherwise: W3C trace context and baggage.
/// Held by each wrapper, so the hot path takes no global lock.
pub fn default_propagator() -> Arc<dyn TextMapPropagator + Send + Sync> {
    static DEFAULT: LazyLock<Arc<dyn TextMapPropagator + Send + Sync>> = LazyLock::new(|| {
        Arc::new(TextMapCompositePropagator::new(vec![
            Box::new(W3cTraceContext),
            Box::new(BaggagePropagator::new()),
        ]))
    });
    DEFAULT.clone()
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
        let Ok(mut value) = MetadataValue::try_from(value) else {
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
