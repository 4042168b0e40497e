//! [`Meters`]: a meter provider whose recorded metrics the tests read back as flat
//! [`Point`]s, one per data point.

use std::collections::BTreeMap;
use std::time::Duration;

use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData, ResourceMetrics};
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};

/// A meter provider collecting into memory; [`Meters::points`] reads what it holds.
#[derive(Clone)]
pub struct Meters {
    provider: SdkMeterProvider,
    exporter: InMemoryMetricExporter,
}

impl Default for Meters {
    fn default() -> Self {
        let exporter = InMemoryMetricExporter::default();
        // Collected on demand only (`points` flushes): the interval never comes round.
        let reader = PeriodicReader::builder(exporter.clone())
            .with_interval(Duration::from_secs(3600))
            .build();
        let provider = SdkMeterProvider::builder().with_reader(reader).build();
        Self { provider, exporter }
    }
}

/// One data point of one instrument.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// The instrument's name.
    pub name: String,
    /// Its unit.
    pub unit: String,
    /// The point's attributes, as text.
    pub attributes: BTreeMap<String, String>,
    /// A histogram's count, or a sum's or gauge's value.
    pub count: f64,
    /// A histogram's sum (0 for other kinds).
    pub sum: f64,
    /// A histogram's bucket boundaries (empty for other kinds).
    pub bounds: Vec<f64>,
}

impl Point {
    /// The attribute `key`, if the point has it.
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

impl Meters {
    /// The provider to give services.
    pub fn provider(&self) -> SdkMeterProvider {
        self.provider.clone()
    }

    /// Built-in wrappers recording into this collector (tracing off).
    pub fn instrumentation(&self) -> micro_otel::Instrumentation {
        micro_otel::Instrumentation::new()
            .tracing(false)
            .meter_provider(self.provider())
    }

    /// Every data point recorded so far (cumulative).
    pub fn points(&self) -> Vec<Point> {
        self.exporter.reset();
        self.provider.force_flush().expect("metrics flush");
        let exported = self.exporter.get_finished_metrics().expect("metrics read");
        exported.last().map(flatten).unwrap_or_default()
    }

    /// The points of instrument `name`.
    pub fn named(&self, name: &str) -> Vec<Point> {
        self.points()
            .into_iter()
            .filter(|p| p.name == name)
            .collect()
    }

    /// The points of instrument `name` whose attributes include all of `with`.
    pub fn find(&self, name: &str, with: &[(&str, &str)]) -> Vec<Point> {
        self.named(name)
            .into_iter()
            .filter(|p| with.iter().all(|(k, v)| p.attr(k) == Some(*v)))
            .collect()
    }

    /// The total count (histograms) or value (sums) of `name`'s points matching `with`.
    pub fn total(&self, name: &str, with: &[(&str, &str)]) -> f64 {
        self.find(name, with).iter().map(|p| p.count).sum()
    }

    /// Waits until `name` totals at least `at_least` (at most 5 s), then returns its total.
    pub async fn wait_for(&self, name: &str, with: &[(&str, &str)], at_least: f64) -> f64 {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let total = self.total(name, with);
            if total >= at_least || tokio::time::Instant::now() > deadline {
                return total;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// One [`Point`] per data point of every instrument in `metrics`.
pub fn flatten(metrics: &ResourceMetrics) -> Vec<Point> {
    let mut points = Vec::new();
    for scope in metrics.scope_metrics() {
        for metric in scope.metrics() {
            let mut push = |attributes: BTreeMap<String, String>, count, sum, bounds| {
                points.push(Point {
                    name: metric.name().to_owned(),
                    unit: metric.unit().to_owned(),
                    attributes,
                    count,
                    sum,
                    bounds,
                })
            };
            match metric.data() {
                AggregatedMetrics::F64(data) => each(data, |v| v, &mut push),
                AggregatedMetrics::U64(data) => each(data, |v| v as f64, &mut push),
                AggregatedMetrics::I64(data) => each(data, |v| v as f64, &mut push),
            }
        }
    }
    points
}

fn each<T: Copy>(
    data: &MetricData<T>,
    value: impl Fn(T) -> f64,
    push: &mut impl FnMut(BTreeMap<String, String>, f64, f64, Vec<f64>),
) {
    let text = |attributes: &mut dyn Iterator<Item = &opentelemetry::KeyValue>| {
        attributes
            .map(|kv| (kv.key.to_string(), kv.value.to_string()))
            .collect::<BTreeMap<_, _>>()
    };
    match data {
        MetricData::Histogram(h) => {
            for p in h.data_points() {
                let bounds = p.bounds().collect();
                push(
                    text(&mut p.attributes()),
                    p.count() as f64,
                    value(p.sum()),
                    bounds,
                );
            }
        }
        MetricData::Sum(s) => {
            for p in s.data_points() {
                push(text(&mut p.attributes()), value(p.value()), 0.0, Vec::new());
            }
        }
        MetricData::Gauge(g) => {
            for p in g.data_points() {
                push(text(&mut p.attributes()), value(p.value()), 0.0, Vec::new());
            }
        }
        MetricData::ExponentialHistogram(h) => {
            for p in h.data_points() {
                push(
                    text(&mut p.attributes()),
                    p.count() as f64,
                    value(p.sum()),
                    Vec::new(),
                );
            }
        }
    }
}
