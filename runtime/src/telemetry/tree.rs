//! [`TraceTree`]: a span exporter that keeps finished spans and renders them as an indented
//! tree with durations, for demos and debugging.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry::trace::{SpanId, Status};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};

/// Collects exported spans in memory; [`TraceTree::render`] prints them as trees.
#[derive(Debug, Clone, Default)]
pub struct TraceTree {
    spans: Arc<Mutex<Vec<SpanData>>>,
}

impl TraceTree {
    /// An empty collector.
    pub fn new() -> Self {
        Self::default()
    }

    /// The spans collected so far.
    pub fn spans(&self) -> Vec<SpanData> {
        self.spans.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// One tree per trace, children indented under parents, each line with the span's kind,
    /// duration and status, e.g. `user.User/GetUser [server] 1.2ms`.
    pub fn render(&self) -> String {
        let spans = self.spans();
        let ids: std::collections::HashSet<SpanId> =
            spans.iter().map(|s| s.span_context.span_id()).collect();
        let mut children: HashMap<SpanId, Vec<&SpanData>> = HashMap::new();
        let mut roots = Vec::new();
        for span in &spans {
            if ids.contains(&span.parent_span_id) {
                children.entry(span.parent_span_id).or_default().push(span);
            } else {
                roots.push(span);
            }
        }
        for list in children.values_mut() {
            list.sort_by_key(|s| s.start_time);
        }
        roots.sort_by_key(|s| s.start_time);
        let mut out = String::new();
        for root in roots {
            let _ = writeln!(out, "trace {}", root.span_context.trace_id());
            write_span(&mut out, root, &children, 1);
        }
        out
    }
}

fn write_span(
    out: &mut String,
    span: &SpanData,
    children: &HashMap<SpanId, Vec<&SpanData>>,
    depth: usize,
) {
    let took = span
        .end_time
        .duration_since(span.start_time)
        .unwrap_or(Duration::ZERO);
    let kind = format!("{:?}", span.span_kind).to_lowercase();
    let status = match &span.status {
        Status::Error { description } => format!(" ERROR: {description}"),
        _ => String::new(),
    };
    let _ = writeln!(
        out,
        "{:indent$}{} [{kind}] {:.1?}{status}",
        "",
        span.name,
        took,
        indent = depth * 2
    );
    for child in children
        .get(&span.span_context.span_id())
        .into_iter()
        .flatten()
    {
        write_span(out, child, children, depth + 1);
    }
}

impl SpanExporter for TraceTree {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        self.spans
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(batch);
        Ok(())
    }
}
