//! [`MetricsTable`]: a metric exporter that keeps the latest RPC durations and renders them
//! as a table per method (calls, errors, p50, p99): the demo's view of the second signal.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::Temporality;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData, ResourceMetrics};
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;

use crate::semconv;

/// Keeps what `rpc.server.call.duration` and `rpc.client.call.duration` recorded, as of
/// the last collection; give it to [`super::TelemetryBuilder::metrics_table`] and call
/// [`super::Telemetry::flush`] before [`MetricsTable::render`].
#[derive(Debug, Clone, Default)]
pub struct MetricsTable {
    rows: Arc<Mutex<BTreeMap<(String, &'static str), Row>>>,
}

/// One method on one side.
#[derive(Debug, Clone, Default)]
struct Row {
    calls: u64,
    errors: u64,
    bounds: Vec<f64>,
    buckets: Vec<u64>,
    max: f64,
}

impl MetricsTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// One line per method and side: calls, failed calls (those with `error.type`), and
    /// the median and 99th percentile duration, estimated from the histogram buckets.
    pub fn render(&self) -> String {
        let rows = self.rows.lock().unwrap_or_else(|e| e.into_inner());
        let width = rows.keys().map(|(m, _)| m.len()).max().unwrap_or(6).max(6);
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:width$}  {:6}  {:>6}  {:>6}  {:>9}  {:>9}",
            "method", "side", "calls", "errors", "p50", "p99"
        );
        for ((method, side), row) in rows.iter() {
            let _ = writeln!(
                out,
                "{method:width$}  {side:6}  {:>6}  {:>6}  {:>9}  {:>9}",
                row.calls,
                row.errors,
                format!("{:.1?}", Duration::from_secs_f64(row.quantile(0.5))),
                format!("{:.1?}", Duration::from_secs_f64(row.quantile(0.99))),
            );
        }
        out
    }
}

impl Row {
    /// The `q` quantile, interpolated within its bucket (and never above the largest
    /// value seen).
    fn quantile(&self, q: f64) -> f64 {
        let rank = q * self.calls as f64;
        let mut seen = 0.0;
        for (i, count) in self.buckets.iter().enumerate() {
            let count = *count as f64;
            if count > 0.0 && seen + count >= rank {
                let low = if i == 0 { 0.0 } else { self.bounds[i - 1] };
                let high = self
                    .bounds
                    .get(i)
                    .copied()
                    .unwrap_or(self.max)
                    .min(self.max);
                let within = ((rank - seen) / count).clamp(0.0, 1.0);
                return (low + (high - low) * within).min(self.max);
            }
            seen += count;
        }
        self.max
    }
}

impl PushMetricExporter for MetricsTable {
    async fn export(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
        let mut rows = BTreeMap::new();
        for scope in metrics.scope_metrics() {
            for metric in scope.metrics() {
                let side = match metric.name() {
                    semconv::RPC_SERVER_CALL_DURATION => "server",
                    semconv::RPC_CLIENT_CALL_DURATION => "client",
                    _ => continue,
                };
                let AggregatedMetrics::F64(MetricData::Histogram(histogram)) = metric.data() else {
                    continue;
                };
                for point in histogram.data_points() {
                    let mut method = String::new();
                    let mut failed = false;
                    for kv in point.attributes() {
                        match kv.key.as_str() {
                            semconv::RPC_METHOD => method = kv.value.to_string(),
                            semconv::ERROR_TYPE => failed = true,
                            _ => {}
                        }
                    }
                    let row: &mut Row = rows.entry((method, side)).or_default();
                    row.calls += point.count();
                    if failed {
                        row.errors += point.count();
                    }
                    if row.bounds.is_empty() {
                        row.bounds = point.bounds().collect();
                        row.buckets = vec![0; row.bounds.len() + 1];
                    }
                    for (total, count) in row.buckets.iter_mut().zip(point.bucket_counts()) {
                        *total += count;
                    }
                    row.max = row.max.max(point.max().unwrap_or(0.0));
                }
            }
        }
        *self.rows.lock().unwrap_or_else(|e| e.into_inner()) = rows;
        Ok(())
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }

    fn temporality(&self) -> Temporality {
        Temporality::Cumulative
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_come_from_the_buckets() {
        let row = Row {
            calls: 100,
            errors: 0,
            bounds: vec![0.001, 0.01, 0.1],
            buckets: vec![0, 90, 9, 1],
            max: 0.5,
        };
        let p50 = row.quantile(0.5);
        assert!((0.001..0.01).contains(&p50), "{p50}");
        let p99 = row.quantile(0.99);
        assert!((0.01..=0.1).contains(&p99), "{p99}");
        assert_eq!(
            row.quantile(1.0),
            0.5,
            "the top bucket ends at the largest value"
        );
    }
}
