//! W3C trace context (`traceparent`, `tracestate`) without per-call formatting machinery.
//!
//! Same behaviour as the SDK's `TraceContextPropagator` (which the tests use as the oracle),
//! but the header is written with a lookup table and parsed without collecting pieces:
//! about 4 000 instructions per call each way became a few hundred.

use std::str::FromStr;

use opentelemetry::Context;
use opentelemetry::propagation::text_map_propagator::FieldIter;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};

const TRACEPARENT: &str = "traceparent";
const TRACESTATE: &str = "tracestate";

/// The W3C trace-context propagator.
#[derive(Debug, Default, Clone, Copy)]
pub struct W3cTraceContext;

impl TextMapPropagator for W3cTraceContext {
    fn inject_context(&self, cx: &Context, injector: &mut dyn Injector) {
        let span = cx.span();
        let sc = span.span_context();
        if !sc.is_valid() {
            return;
        }
        injector.set(TRACEPARENT, traceparent(sc));
        let state = sc.trace_state().header();
        if !state.is_empty() {
            injector.set(TRACESTATE, state);
        }
    }

    fn extract_with_context(&self, cx: &Context, extractor: &dyn Extractor) -> Context {
        let Some((trace_id, span_id, flags)) =
            extractor.get(TRACEPARENT).and_then(parse_traceparent)
        else {
            return cx.clone();
        };
        let state = extractor
            .get(TRACESTATE)
            .filter(|s| !s.is_empty())
            .and_then(|s| TraceState::from_str(s).ok())
            .unwrap_or_default();
        cx.with_remote_span_context(SpanContext::new(trace_id, span_id, flags, true, state))
    }

    fn fields(&self) -> FieldIter<'_> {
        static NAMES: std::sync::LazyLock<[String; 2]> =
            std::sync::LazyLock::new(|| [TRACEPARENT.to_owned(), TRACESTATE.to_owned()]);
        FieldIter::new(NAMES.as_slice())
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// `00-<trace id>-<span id>-<flags>`, only the sampled flag kept.
fn traceparent(sc: &SpanContext) -> String {
    let mut out = Vec::with_capacity(55);
    out.extend_from_slice(b"00-");
    push_hex(&mut out, &sc.trace_id().to_bytes());
    out.push(b'-');
    push_hex(&mut out, &sc.span_id().to_bytes());
    out.push(b'-');
    push_hex(
        &mut out,
        &[(sc.trace_flags() & TraceFlags::SAMPLED).to_u8()],
    );
    // Only ASCII hex digits and dashes were written.
    String::from_utf8(out).unwrap_or_default()
}

fn push_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    for b in bytes {
        out.push(HEX[(b >> 4) as usize]);
        out.push(HEX[(b & 0xf) as usize]);
    }
}

/// Parses a `traceparent`; `None` for anything malformed (the caller starts a new trace).
fn parse_traceparent(header: &str) -> Option<(TraceId, SpanId, TraceFlags)> {
    let mut parts = header.trim().split_terminator('-');
    let version = hex_byte(parts.next()?)?;
    if version == 0xff {
        return None;
    }
    let trace_id = TraceId::from_bytes(hex_array::<16>(parts.next()?)?);
    let span_id = SpanId::from_bytes(hex_array::<8>(parts.next()?)?);
    let flags = TraceFlags::new(hex_byte(parts.next()?)?) & TraceFlags::SAMPLED;
    // Version 00 has exactly four fields; later versions may append more.
    if version == 0 && parts.next().is_some() {
        return None;
    }
    (trace_id != TraceId::INVALID && span_id != SpanId::INVALID)
        .then_some((trace_id, span_id, flags))
}

fn hex_byte(s: &str) -> Option<u8> {
    Some(hex_array::<1>(s)?[0])
}

/// Exactly `2 * N` lowercase hex digits.
fn hex_array<const N: usize>(s: &str) -> Option<[u8; N]> {
    let s = s.as_bytes();
    if s.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (i, pair) in s.chunks_exact(2).enumerate() {
        out[i] = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(out)
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use opentelemetry_sdk::propagation::TraceContextPropagator;

    use super::*;

    fn extract_both(headers: &[(&str, &str)]) -> (SpanContext, SpanContext) {
        let map: HashMap<String, String> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let ours = W3cTraceContext.extract(&map);
        let sdk = TraceContextPropagator::new().extract(&map);
        (
            ours.span().span_context().clone(),
            sdk.span().span_context().clone(),
        )
    }

    #[test]
    fn extracts_exactly_what_the_sdk_extracts_from_well_formed_headers() {
        for (traceparent, tracestate) in [
            (
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                "",
            ),
            (
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00",
                "congo=t61rcWkgMzE",
            ),
            (
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-03",
                "a=1,b=2",
            ),
            (
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-ff",
                "",
            ),
            (
                "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-future",
                "",
            ),
            (
                " 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01 ",
                "",
            ),
        ] {
            let (ours, sdk) =
                extract_both(&[("traceparent", traceparent), ("tracestate", tracestate)]);
            assert!(ours.is_valid(), "{traceparent}");
            assert_eq!(ours, sdk, "{traceparent} / {tracestate}");
        }
    }

    #[test]
    fn rejects_malformed_headers_like_the_sdk() {
        for bad in [
            "",
            "00",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
            "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-B7AD6B7169203331-01",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-xyz-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-0g",
        ] {
            let (ours, sdk) = extract_both(&[("traceparent", bad)]);
            assert!(!ours.is_valid(), "{bad:?} must be rejected");
            assert!(!sdk.is_valid(), "oracle disagrees on {bad:?}");
        }
    }

    #[test]
    fn injects_exactly_what_the_sdk_injects() {
        for (flags, state) in [
            (TraceFlags::SAMPLED, ""),
            (TraceFlags::default(), "k=v,x=y"),
        ] {
            let sc = SpanContext::new(
                TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
                SpanId::from_hex("00f067aa0ba902b7").unwrap(),
                flags,
                true,
                TraceState::from_str(state).unwrap(),
            );
            let cx = Context::new().with_remote_span_context(sc);
            let mut ours: HashMap<String, String> = HashMap::new();
            let mut sdk: HashMap<String, String> = HashMap::new();
            W3cTraceContext.inject_context(&cx, &mut ours);
            TraceContextPropagator::new().inject_context(&cx, &mut sdk);
            sdk.retain(|_, v| !v.is_empty());
            assert_eq!(ours, sdk);
        }
    }
}
