//! [`TraceTree`]: a span exporter that keeps the last finished spans (a bounded number) and
//! renders them as an indented tree with durations, for demos and debugging.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry::trace::{SpanId, Status};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};

/// Collects exported spans in memory, the last [`TraceTree::DEFAULT_CAPACITY`] of them
/// unless told otherwise (older ones are dropped and counted, so a long-running process
/// stays bounded); [`TraceTree::render`] prints them as trees.
#[derive(Debug, Clone)]
pub struct TraceTree {
    kept: Arc<Mutex<Kept>>,
}

#[derive(Debug)]
struct Kept {
    spans: VecDeque<SpanData>,
    capacity: usize,
    dropped: u64,
}

impl Default for TraceTree {
    fn default() -> Self {
        Self::with_capacity(Self::DEFAULT_CAPACITY)
    }
}

impl TraceTree {
    /// Spans kept by default: enough for a demo, a few MB at most.
    pub const DEFAULT_CAPACITY: usize = 10_000;

    /// An empty collector keeping the last [`TraceTree::DEFAULT_CAPACITY`] spans.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty collector keeping the last `capacity` spans.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            kept: Arc::new(Mutex::new(Kept {
                spans: VecDeque::new(),
                capacity: capacity.max(1),
                dropped: 0,
            })),
        }
    }

    /// The spans kept, oldest first.
    pub fn spans(&self) -> Vec<SpanData> {
        let kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        kept.spans.iter().cloned().collect()
    }

    /// How many spans were dropped to stay within the capacity.
    pub fn dropped(&self) -> u64 {
        self.kept.lock().unwrap_or_else(|e| e.into_inner()).dropped
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
        let dropped = self.dropped();
        if dropped > 0 {
            let _ = writeln!(
                out,
                "({dropped} older spans dropped: only the last {} are kept)",
                spans.len()
            );
        }
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
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        for span in batch {
            if kept.spans.len() == kept.capacity {
                kept.spans.pop_front();
                kept.dropped += 1;
            }
            kept.spans.push_back(span);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{Tracer as _, TracerProvider as _};
    use opentelemetry_sdk::trace::SdkTracerProvider;

    use super::*;

    #[test]
    fn only_the_last_spans_are_kept() {
        let tree = TraceTree::with_capacity(3);
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(tree.clone())
            .build();
        let tracer = provider.tracer("test");
        for i in 0..10 {
            tracer.in_span(format!("span {i}"), |_| {});
        }
        let names: Vec<_> = tree.spans().iter().map(|s| s.name.to_string()).collect();
        assert_eq!(names, ["span 7", "span 8", "span 9"]);
        assert_eq!(tree.dropped(), 7);
        assert!(tree.render().starts_with("(7 older spans dropped"));
    }
}
