//! A real OTLP/gRPC receiver on loopback, for tests and benchmarks: traces, metrics and
//! logs. It counts span export requests, keeps span names with their resource's service
//! name and version, and every request of the three signals as received (or discards
//! everything).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;

/// One span as received: `(service.name, span name)`.
pub type Received = (String, String);

/// A running receiver; stops when dropped.
pub struct Receiver {
    address: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    collector: Arc<Collector>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Receiver {
    /// Starts a receiver on `127.0.0.1`, on a free port, keeping what it receives.
    pub async fn start() -> std::io::Result<Self> {
        Self::start_with(true).await
    }

    /// Starts a receiver that accepts spans and throws them away (for benchmarks).
    pub async fn start_discarding() -> std::io::Result<Self> {
        Self::start_with(false).await
    }

    /// Starts a receiver keeping what it receives on `address` (a collector coming back).
    pub async fn start_at(address: SocketAddr) -> std::io::Result<Self> {
        Self::start_on(address, true).await
    }

    async fn start_with(keep: bool) -> std::io::Result<Self> {
        Self::start_on("127.0.0.1:0".parse().expect("an address"), keep).await
    }

    async fn start_on(address: SocketAddr, keep: bool) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(address).await?;
        let address = listener.local_addr()?;
        let received = Arc::new(Mutex::new(Vec::new()));
        let collector = Arc::new(Collector {
            received: received.clone(),
            keep,
            exports: AtomicUsize::new(0),
            versions: Mutex::new(Vec::new()),
            requests: Mutex::new(Requests::default()),
        });
        // As collectors do: large requests, and gzip (what rotel sends).
        let (limit, gzip) = (64 * 1024 * 1024, tonic::codec::CompressionEncoding::Gzip);
        let service = TraceServiceServer::from_arc(collector.clone())
            .max_decoding_message_size(limit)
            .accept_compressed(gzip);
        let metrics = MetricsServiceServer::from_arc(collector.clone())
            .max_decoding_message_size(limit)
            .accept_compressed(gzip);
        let logs = LogsServiceServer::from_arc(collector.clone())
            .max_decoding_message_size(limit)
            .accept_compressed(gzip);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let incoming = crate::harness::incoming(listener);
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .add_service(metrics)
                .add_service(logs)
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stopped.await;
                }),
        );
        Ok(Self {
            address,
            received,
            collector,
            _stop: stop,
        })
    }

    /// `http://127.0.0.1:PORT`, for the exporter.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Spans received so far.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Export requests received so far.
    pub fn exports(&self) -> usize {
        self.collector.exports.load(Ordering::SeqCst)
    }

    /// The `service.version` of every resource received.
    pub fn service_versions(&self) -> Vec<String> {
        self.collector.versions.lock().unwrap().clone()
    }

    /// Every export request of the three signals received so far.
    pub fn requests(&self) -> Requests {
        self.collector.requests.lock().unwrap().clone()
    }
}

/// Export requests as received, per signal.
#[derive(Debug, Clone, Default)]
pub struct Requests {
    /// Span exports.
    pub traces: Vec<ExportTraceServiceRequest>,
    /// Metric exports.
    pub metrics: Vec<ExportMetricsServiceRequest>,
    /// Log exports.
    pub logs: Vec<ExportLogsServiceRequest>,
}

struct Collector {
    received: Arc<Mutex<Vec<Received>>>,
    keep: bool,
    exports: AtomicUsize,
    versions: Mutex<Vec<String>>,
    requests: Mutex<Requests>,
}

/// A string attribute of the resource the spans come from.
fn resource_attribute(resource_spans: &ResourceSpans, key: &str) -> String {
    resource_spans
        .resource
        .iter()
        .flat_map(|r| &r.attributes)
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
        .map(|v| match v {
            Value::StringValue(s) => s.clone(),
            other => format!("{other:?}"),
        })
        .unwrap_or_default()
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        if !self.keep {
            return Ok(tonic::Response::new(ExportTraceServiceResponse::default()));
        }
        self.exports.fetch_add(1, Ordering::SeqCst);
        let request = request.into_inner();
        self.requests.lock().unwrap().traces.push(request.clone());
        let mut received = self.received.lock().unwrap();
        for resource_spans in request.resource_spans {
            let service = resource_attribute(&resource_spans, "service.name");
            self.versions
                .lock()
                .unwrap()
                .push(resource_attribute(&resource_spans, "service.version"));
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    received.push((service.clone(), span.name));
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        if self.keep {
            self.requests
                .lock()
                .unwrap()
                .metrics
                .push(request.into_inner());
        }
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl LogsService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        if self.keep {
            self.requests
                .lock()
                .unwrap()
                .logs
                .push(request.into_inner());
        }
        Ok(tonic::Response::new(ExportLogsServiceResponse::default()))
    }
}
