//! A real OTLP/gRPC trace receiver on loopback, for tests and benchmarks: it counts export
//! requests and keeps span names with their resource's service name and version (or
//! discards everything).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

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

    async fn start_with(keep: bool) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let received = Arc::new(Mutex::new(Vec::new()));
        let collector = Arc::new(Collector {
            received: received.clone(),
            keep,
            exports: AtomicUsize::new(0),
            versions: Mutex::new(Vec::new()),
        });
        let service = TraceServiceServer::from_arc(collector.clone())
            .max_decoding_message_size(64 * 1024 * 1024);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let incoming = crate::harness::incoming(listener);
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
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
}

struct Collector {
    received: Arc<Mutex<Vec<Received>>>,
    keep: bool,
    exports: AtomicUsize,
    versions: Mutex<Vec<String>>,
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
        let mut received = self.received.lock().unwrap();
        for resource_spans in request.into_inner().resource_spans {
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
