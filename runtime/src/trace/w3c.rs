//! W3C trace context (`traceparent`, `tracestate`) without per-call formatting machinery.
//!
//! Same behaviour as the SDK's `TraceContextPropagator` (which the tests use as the oracle),
//! except where W3C is stricter (field lengths, nothing after a version-00 header), but the
//! header is written with a lookup table and parsed by position: about 4 000 instructions
//! per call each way became a few hundred.

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
    let mut out = *b"00-00000000000000000000000000000000-0000000000000000-00";
    write_hex(&mut out[3..35], &sc.trace_id().to_bytes());
    write_hex(&mut out[36..52], &sc.span_id().to_bytes());
    write_hex(
        &mut out[53..],
        &[(sc.trace_flags() & TraceFlags::SAMPLED).to_u8()],
    );
    // Only ASCII hex digits and dashes were written.
    String::from_utf8(out.to_vec()).unwrap_or_default()
}

/// Writes `bytes` as lowercase hex into `out`, two digits per byte.
fn write_hex(out: &mut [u8], bytes: &[u8]) {
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = HEX[(b >> 4) as usize];
        pair[1] = HEX[(b & 0xf) as usize];
    }
}

/// Parses a `traceparent` by position, as the W3C parsing rules lay it out:
/// `vv-<32 hex>-<16 hex>-ff`, exactly 55 characters for version 00, and for later versions
/// either 55 or more fields after another dash. `None` for anything malformed (the caller
/// starts a new trace).
fn parse_traceparent(header: &str) -> Option<(TraceId, SpanId, TraceFlags)> {
    let header = header.trim().as_bytes();
    let (fields, rest) = header.split_at_checked(55)?;
    if fields[2] != b'-' || fields[35] != b'-' || fields[52] != b'-' {
        return None;
    }
    let version = hex_array::<1>(&fields[..2])?[0];
    let trace_id = TraceId::from_bytes(hex_array::<16>(&fields[3..35])?);
    let span_id = SpanId::from_bytes(hex_array::<8>(&fields[36..52])?);
    let flags = TraceFlags::new(hex_array::<1>(&fields[53..])?[0]) & TraceFlags::SAMPLED;
    let rest_ok = match version {
        0xff => false,
        0 => rest.is_empty(),
        _ => rest.is_empty() || rest[0] == b'-',
    };
    (rest_ok && trace_id != TraceId::INVALID && span_id != SpanId::INVALID)
        .then_some((trace_id, span_id, flags))
}

/// Exactly `2 * N` lowercase hex digits.
fn hex_array<const N: usize>(s: &[u8]) -> Option<[u8; N]> {
    if s.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    // Checked once at the end: a digit outside the table sets a high bit.
    let mut invalid = 0;
    for (byte, pair) in out.iter_mut().zip(s.chunks_exact(2)) {
        let (high, low) = (UNHEX[pair[0] as usize], UNHEX[pair[1] as usize]);
        invalid |= high | low;
        *byte = (high << 4) | (low & 0xf);
    }
    (invalid & 0xf0 == 0).then_some(out)
}

/// The value of each lowercase hex digit; 0xff for every other byte.
static UNHEX: [u8; 256] = {
    let mut table = [0xff; 256];
    let mut i = 0;
    while i < 16 {
        table[HEX[i] as usize] = i as u8;
        i += 1;
    }
    table
};

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
    fn reads_fields_by_position_as_w3c_says() {
        let id = "0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        // Version 00 is exactly 55 characters; later versions may add fields after a dash.
        for (header, valid) in [
            (format!("00-{id}"), true),
            (format!("00-{id}-"), false),
            (format!("01-{id}-more"), true),
            (format!("01-{id}more"), false),
            (format!("00_{id}"), false),
        ] {
            let parsed = parse_traceparent(&header);
            assert_eq!(parsed.is_some(), valid, "{header}");
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
