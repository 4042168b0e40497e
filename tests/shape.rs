//! The call chain's shape: wrappers that retry and measure, selectors that see the call and
//! learn how it went, tower layers on both sides, reply metadata, and the registry cache.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::join_all;
use micro_otel::call::Node;
use micro_otel::client::ReplyMetadata;
use micro_otel::discovery::{
    MemoryRegistry, Outcome, Registration, Registry, RegistryFuture, Selector, Watch,
};
use micro_otel::wrapper::{self, Call, Next};
use micro_otel::{Code, Context, Status};
use micro_otel_tests::discovery::PutNode;
use micro_otel_tests::harness::echo::{self, EchoClient, EchoRequest};
use micro_otel_tests::harness::{Echo, Spans, service};

/// Starts an echo instance of `name` with `echo` as its handler.
async fn start_echo(
    name: &str,
    registry: &MemoryRegistry,
    spans: &Spans,
    echo: Echo,
    configure: impl FnOnce(micro_otel::ServiceConfig) -> micro_otel::ServiceConfig,
) -> micro_otel::RunningService {
    let service = configure(service(name, registry, spans)).build();
    echo::register_echo_handler(&service, echo).expect("registered before start");
    service.start().await.expect("starts")
}

fn request(message: &str) -> EchoRequest {
    EchoRequest {
        message: message.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_wrapper_retries_by_running_next_again_with_a_cloned_call() {
    let (registry, spans) = (MemoryRegistry::new(), Spans::default());
    let echo = Echo::default();
    echo.fail_first.store(2, Ordering::SeqCst);
    let server = start_echo("echo", &registry, &spans, echo.clone(), |s| s).await;
    let attempts = Arc::new(AtomicUsize::new(0));
    let counted = attempts.clone();
    let retry = wrapper::from_fn(move |call: Call, next: Next| {
        let attempts = counted.clone();
        async move {
            loop {
                let copy = call.try_clone().expect("a unary call can be cloned");
                attempts.fetch_add(1, Ordering::SeqCst);
                match next.clone().run(copy).await {
                    Err(status) if status.code() == Code::Unavailable => continue,
                    answer => return answer,
                }
            }
        }
    });
    let client = service("caller", &registry, &spans)
        .client(|c| c.wrap_call(retry))
        .build();
    let reply = EchoClient::new("echo", client.client())
        .unary(request("again"))
        .await
        .expect("the third attempt succeeds");
    assert_eq!(reply.message, "again");
    assert_eq!(attempts.load(Ordering::SeqCst), 3);
    assert_eq!(echo.calls.load(Ordering::SeqCst), 3);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_wrapper_reads_the_chosen_node_and_the_request_size() {
    let (registry, spans) = (MemoryRegistry::new(), Spans::default());
    let server = start_echo("echo", &registry, &spans, Echo::default(), |s| s).await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let measure = wrapper::from_fn(move |call: Call, next: Next| {
        let log = log.clone();
        async move {
            let size = call.payload.as_message().map(|m| m.encoded_len());
            let before = call.ctx.node().cloned();
            let reply = next.run(call).await?;
            let node = reply.node().map(|n| n.address.clone());
            log.lock().unwrap().push((size, before, node));
            Ok(reply)
        }
    });
    let client = service("caller", &registry, &spans)
        .client(|c| c.wrap_call(measure))
        .build();
    let sent = request("twelve bytes");
    EchoClient::new("echo", client.client())
        .unary(sent.clone())
        .await
        .unwrap();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        [(
            Some(prost::Message::encoded_len(&sent)),
            None,
            Some(server.node().address.clone())
        )],
        "size known before the call, node chosen inside it and reported on the reply"
    );
    server.stop().await.unwrap();
}

/// Dispatch by the `x-zone` header to the node labelled with that zone, and records what it
/// is told of each call.
#[derive(Default)]
struct ZoneSelector {
    told: Mutex<Vec<(String, Outcome)>>,
}

impl Selector for ZoneSelector {
    fn select<'a>(&self, ctx: &Context, nodes: &'a [Arc<Node>]) -> Option<&'a Arc<Node>> {
        let zone = ctx.metadata().get("x-zone")?.to_str().ok()?;
        nodes
            .iter()
            .find(|n| n.metadata.get("zone").map(String::as_str) == Some(zone))
    }

    fn feedback(&self, node: &Node, outcome: Outcome) {
        self.told.lock().unwrap().push((node.id.clone(), outcome));
    }
}

fn in_zone(zone: &str, message: EchoRequest) -> micro_otel::Request<EchoRequest> {
    let mut request = micro_otel::Request::new(message);
    request
        .metadata_mut()
        .insert("x-zone", zone.parse().unwrap());
    request
}

#[tokio::test]
async fn a_selector_routes_by_a_metadata_key_and_hears_business_errors() {
    let (registry, spans) = (MemoryRegistry::new(), Spans::default());
    let (east, west) = (Echo::default(), Echo::default());
    let east_server = start_echo("echo", &registry, &spans, east.clone(), |s| {
        s.metadata("zone", "east")
    })
    .await;
    let west_server = start_echo("echo", &registry, &spans, west.clone(), |s| {
        s.metadata("zone", "west")
    })
    .await;
    let selector = Arc::new(ZoneSelector::default());
    let client = micro_otel::Client::builder()
        .registry(Arc::new(registry.clone()))
        .selector(selector.clone())
        .build();
    let echo_client = EchoClient::new("echo", client);
    for _ in 0..5 {
        echo_client
            .unary(in_zone("west", request("w")))
            .await
            .unwrap();
    }
    echo_client
        .unary(in_zone("east", request("e")))
        .await
        .unwrap();
    let not_found = EchoRequest {
        fail_with: Code::NotFound as i32,
        ..request("missing")
    };
    let status = echo_client
        .unary(in_zone("east", not_found))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let nowhere = echo_client
        .unary(in_zone("north", request("n")))
        .await
        .unwrap_err();
    assert_eq!(nowhere.code(), Code::Unavailable);
    assert!(
        nowhere.message().contains("refused"),
        "{}",
        nowhere.message()
    );

    assert_eq!(
        (
            east.calls.load(Ordering::SeqCst),
            west.calls.load(Ordering::SeqCst)
        ),
        (2, 5)
    );
    let told = selector.told.lock().unwrap().clone();
    let east_id = east_server.node().id.clone();
    assert_eq!(told.len(), 7);
    assert_eq!(told[5], (east_id.clone(), Outcome::Success));
    assert_eq!(told[6], (east_id, Outcome::Failed(Code::NotFound)));
    east_server.stop().await.unwrap();
    west_server.stop().await.unwrap();
}

#[tokio::test]
async fn a_selector_is_told_of_a_transport_failure() {
    let registry = MemoryRegistry::new();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = Node::new("dead-1", closed.local_addr().unwrap().to_string());
    drop(closed);
    registry
        .put_node("echo", &dead, Duration::from_secs(60))
        .await;
    #[derive(Default)]
    struct Recorder(Mutex<Vec<(String, Outcome)>>);
    impl Selector for Recorder {
        fn select<'a>(&self, _: &Context, nodes: &'a [Arc<Node>]) -> Option<&'a Arc<Node>> {
            nodes.first()
        }
        fn feedback(&self, node: &Node, outcome: Outcome) {
            self.0.lock().unwrap().push((node.id.clone(), outcome));
        }
    }
    let selector = Arc::new(Recorder::default());
    let client = micro_otel::Client::builder()
        .registry(Arc::new(registry))
        .selector(selector.clone())
        .instrumentation(micro_otel::Instrumentation::off())
        .retry(micro_otel::client::RetryPolicy::none())
        .build();
    let status = EchoClient::new("echo", client)
        .unary(request("hello?"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(
        *selector.0.lock().unwrap(),
        [("dead-1".to_owned(), Outcome::Unreachable)]
    );
}

#[tokio::test]
async fn a_handler_sets_reply_headers_that_a_typed_client_reads() {
    let (registry, spans) = (MemoryRegistry::new(), Spans::default());
    let server = start_echo("echo", &registry, &spans, Echo::default(), |s| s).await;
    let client = service("caller", &registry, &spans).build();
    let mut call = micro_otel::Request::new(request("who answers?"));
    let reply = ReplyMetadata::capture(&mut call);
    EchoClient::new("echo", client.client())
        .unary(call)
        .await
        .unwrap();
    let port = echo_port(&reply).expect("the handler's header reached the typed client");
    assert_eq!(
        port.to_str().unwrap(),
        server.local_addr().port().to_string()
    );

    let mut failing = micro_otel::Request::new(EchoRequest {
        fail_with: Code::NotFound as i32,
        ..request("x")
    });
    let on_error = ReplyMetadata::capture(&mut failing);
    let status = EchoClient::new("echo", client.client())
        .unary(failing)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert!(
        echo_port(&on_error).is_some(),
        "headers set before an error go with the status"
    );
    server.stop().await.unwrap();
}

/// The port the echo handler reported in its reply headers, if they were captured.
fn echo_port(
    reply: &ReplyMetadata,
) -> Option<micro_otel::metadata::MetadataValue<micro_otel::metadata::Ascii>> {
    reply.get()?.get("x-echo-port").cloned()
}

#[tokio::test]
async fn a_bare_client_calling_an_address_keeps_its_deadline_and_reply_headers() {
    // No wrappers, no tracing and no registry: such a call builds no context, but it still
    // sends its deadline and hands back the reply's headers.
    let (registry, spans) = (MemoryRegistry::new(), Spans::default());
    let echo = Echo::default();
    let server = start_echo("echo", &registry, &spans, echo.clone(), |s| s).await;
    let client = micro_otel::Client::builder()
        .instrumentation(micro_otel::Instrumentation::off())
        .timeout(Duration::from_millis(200))
        .build();
    let client = EchoClient::new(&server.local_addr().to_string(), client);

    let mut call = micro_otel::Request::new(request("direct"));
    let reply = ReplyMetadata::capture(&mut call);
    assert_eq!(client.unary(call).await.unwrap().message, "direct");
    assert!(
        echo_port(&reply).is_some(),
        "the handler's header reached the caller"
    );

    let slow = EchoRequest {
        delay_ms: 5_000,
        ..request("slow")
    };
    let status = client.unary(slow).await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    tokio::time::timeout(Duration::from_secs(2), async {
        while !echo.cancelled.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the server was told the deadline and dropped the handler");
    server.stop().await.unwrap();
}

/// Sends `n` slow calls at once; returns how many succeeded.
async fn concurrent_calls(client: &EchoClient, n: usize) -> usize {
    let slow = EchoRequest {
        delay_ms: 50,
        ..request("slow")
    };
    join_all((0..n).map(|_| client.unary(slow.clone())))
        .await
        .into_iter()
        .filter(Result::is_ok)
        .count()
}

#[tokio::test]
async fn tower_layers_limit_concurrency_on_the_server_the_channel_and_in_the_chain() {
    use tower::limit::ConcurrencyLimitLayer;
    let (registry, spans) = (MemoryRegistry::new(), Spans::default());

    // On the server, per request.
    let echo = Echo::default();
    let server = start_echo("limited", &registry, &spans, echo.clone(), |s| {
        s.layer(ConcurrencyLimitLayer::new(1))
    })
    .await;
    let caller = service("caller", &registry, &spans).build();
    let client = EchoClient::new("limited", caller.client());
    assert_eq!(concurrent_calls(&client, 4).await, 4);
    assert_eq!(echo.peak_in_flight.load(Ordering::SeqCst), 1);
    server.stop().await.unwrap();

    // On the client's channel to each node.
    let echo = Echo::default();
    let server = start_echo("open", &registry, &spans, echo.clone(), |s| s).await;
    let caller = service("caller", &registry, &spans)
        .client(|c| c.channel_layer(ConcurrencyLimitLayer::new(1)))
        .build();
    let client = EchoClient::new("open", caller.client());
    assert_eq!(concurrent_calls(&client, 4).await, 4);
    assert_eq!(echo.peak_in_flight.load(Ordering::SeqCst), 1);

    // In the call chain, as a wrapper made from a layer.
    let echo_peak = echo.peak_in_flight.clone();
    echo_peak.store(0, Ordering::SeqCst);
    let caller = service("caller", &registry, &spans)
        .client(|c| c.wrap_call(wrapper::from_layer(ConcurrencyLimitLayer::new(1))))
        .build();
    let client = EchoClient::new("open", caller.client());
    assert_eq!(concurrent_calls(&client, 4).await, 4);
    assert_eq!(echo_peak.load(Ordering::SeqCst), 1);

    // Without a limit, the same calls overlap.
    echo_peak.store(0, Ordering::SeqCst);
    let caller = service("caller", &registry, &spans).build();
    let client = EchoClient::new("open", caller.client());
    assert_eq!(concurrent_calls(&client, 4).await, 4);
    assert!(echo_peak.load(Ordering::SeqCst) > 1);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn tower_http_layers_set_headers_on_both_sides() {
    use http::HeaderValue;
    use http::header::HeaderName;
    use tower_http::set_header::{SetRequestHeaderLayer, SetResponseHeaderLayer};
    let (registry, spans) = (MemoryRegistry::new(), Spans::default());
    /// What a server layer puts in the request's extensions.
    #[derive(Clone)]
    struct Tenant(&'static str);
    let seen = Arc::new(Mutex::new(None));
    let tenant = Arc::new(Mutex::new(None));
    let (log, log_tenant) = (seen.clone(), tenant.clone());
    let read_header = wrapper::from_fn(move |call: Call, next: Next| {
        *log.lock().unwrap() = call.ctx.metadata().get("x-from-client").cloned();
        *log_tenant.lock().unwrap() = call.ctx.extensions().get::<Tenant>().map(|t| t.0);
        next.run(call)
    });
    let server = start_echo("echo", &registry, &spans, Echo::default(), |s| {
        s.wrap_handler(read_header)
            .layer(SetResponseHeaderLayer::overriding(
                HeaderName::from_static("x-from-server"),
                HeaderValue::from_static("yes"),
            ))
            .layer(tower::util::MapRequestLayer::new(
                |mut req: http::Request<micro_otel::codegen::Body>| {
                    req.extensions_mut().insert(Tenant("acme"));
                    req
                },
            ))
    })
    .await;
    let caller = service("caller", &registry, &spans)
        .client(|c| {
            c.channel_layer(SetRequestHeaderLayer::overriding(
                HeaderName::from_static("x-from-client"),
                HeaderValue::from_static("hello"),
            ))
        })
        .build();
    let mut call = micro_otel::Request::new(request("headers"));
    let reply = ReplyMetadata::capture(&mut call);
    EchoClient::new("echo", caller.client())
        .unary(call)
        .await
        .unwrap();
    assert_eq!(
        seen.lock()
            .unwrap()
            .as_ref()
            .map(|v| v.to_str().unwrap().to_owned()),
        Some("hello".to_owned())
    );
    let server_header = reply.get().and_then(|md| md.get("x-from-server").cloned());
    assert_eq!(server_header.unwrap().to_str().unwrap(), "yes");
    assert_eq!(
        *tenant.lock().unwrap(),
        Some("acme"),
        "a server layer's request extension reaches the handler's context"
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_wrapper_is_a_tower_layer_too() {
    use tower::{Layer, ServiceExt};
    let tagged = wrapper::from_fn(|mut call: Call, next: Next| {
        call.ctx
            .metadata_mut()
            .insert("x-tag", "wrapped".parse().unwrap());
        next.run(call)
    });
    let inner = tower::service_fn(|call: Call| async move {
        let tag = call.ctx.metadata().get("x-tag").cloned();
        let mut reply = micro_otel::call::Reply::new(call.payload);
        if let Some(tag) = tag {
            reply.metadata.insert("x-tag", tag);
        }
        Ok::<_, Status>(reply)
    });
    let service = wrapper::WrapperLayer::new(tagged).layer(inner);
    let ctx = Context::new(&echo::echo_methods::UNARY, Default::default());
    let call = Call::new(ctx, micro_otel::call::Payload::message(request("x")));
    let reply = service.oneshot(call).await.unwrap();
    assert_eq!(reply.metadata.get("x-tag").unwrap(), "wrapped");
}

/// A registry that counts how often it is asked.
#[derive(Clone, Default)]
struct Counting {
    inner: MemoryRegistry,
    lookups: Arc<AtomicUsize>,
    watches: Arc<AtomicUsize>,
}

impl Registry for Counting {
    fn register<'a>(&'a self, registration: Registration<'a>) -> RegistryFuture<'a, ()> {
        self.inner.register(registration)
    }
    fn deregister<'a>(&'a self, service: &'a str, id: &'a str) -> RegistryFuture<'a, ()> {
        self.inner.deregister(service, id)
    }
    fn lookup<'a>(&'a self, service: &'a str) -> RegistryFuture<'a, Vec<Node>> {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        self.inner.lookup(service)
    }
    fn watch(&self, service: &str) -> Watch {
        self.watches.fetch_add(1, Ordering::SeqCst);
        self.inner.watch(service)
    }
}

/// The ports that answered `n` calls, sorted and deduplicated.
async fn answering_ports(client: &EchoClient, n: usize) -> Vec<String> {
    let mut ports = Vec::new();
    for _ in 0..n {
        let mut call = micro_otel::Request::new(request("who?"));
        let reply = ReplyMetadata::capture(&mut call);
        client.unary(call).await.unwrap();
        let md = reply.get().unwrap();
        ports.push(md.get("x-echo-port").unwrap().to_str().unwrap().to_owned());
    }
    ports.sort();
    ports.dedup();
    ports
}

async fn eventually(mut check: impl AsyncFnMut() -> bool) {
    for _ in 0..200 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition not met within 2 s");
}

#[tokio::test]
async fn the_cache_follows_the_watch_and_the_pool_drops_departed_nodes() {
    let spans = Spans::default();
    let counting = Counting::default();
    let memory = counting.inner.clone();
    let start = async |registry: &Counting| {
        let service = micro_otel::Service::builder("echo")
            .registry(registry.clone())
            .instrumentation(spans.instrumentation())
            .build();
        echo::register_echo_handler(&service, Echo::default()).unwrap();
        service.start().await.unwrap()
    };
    let first = start(&counting).await;
    let client = micro_otel::Client::builder()
        .registry(Arc::new(counting.clone()))
        .instrumentation(micro_otel::Instrumentation::off())
        .build();
    let echo_client = EchoClient::new("echo", client.clone());
    let first_port = first.local_addr().port().to_string();
    assert_eq!(answering_ports(&echo_client, 20).await, [first_port]);

    let second = start(&counting).await;
    let second_port = second.local_addr().port().to_string();
    eventually(async || answering_ports(&echo_client, 20).await.len() == 2).await;

    first.stop().await.unwrap();
    eventually(async || client.connected_addresses() == [second.node().address.clone()]).await;
    assert_eq!(answering_ports(&echo_client, 20).await, [second_port]);

    assert_eq!(
        counting.lookups.load(Ordering::SeqCst),
        0,
        "no lookup per call"
    );
    assert_eq!(
        counting.watches.load(Ordering::SeqCst),
        1,
        "one watch for the service"
    );
    second.stop().await.unwrap();
    assert!(memory.lookup("echo").await.unwrap().is_empty());
}

#[tokio::test]
async fn a_wrapper_times_a_whole_stream_with_on_end() {
    use micro_otel::call::StreamEnd;
    use std::time::Instant;
    let (registry, spans) = (MemoryRegistry::new(), Spans::default());
    let server = start_echo("echo", &registry, &spans, Echo::default(), |s| s).await;
    let timings = Arc::new(Mutex::new(Vec::new()));
    let log = timings.clone();
    let timer = wrapper::from_fn(move |call: Call, next: Next| {
        let log = log.clone();
        async move {
            let started = Instant::now();
            let mut reply = next.run(call).await?;
            reply.payload = reply.payload.on_end(move |end| {
                let finished = matches!(end, StreamEnd::Finished);
                log.lock().unwrap().push((started.elapsed(), finished));
            });
            Ok(reply)
        }
    });
    let caller = service("caller", &registry, &spans)
        .client(|c| c.wrap_call(timer))
        .build();
    let mut stream = EchoClient::new("echo", caller.client())
        .server_stream(EchoRequest {
            repeat: 3,
            delay_ms: 30,
            ..request("tick")
        })
        .await
        .unwrap();
    assert!(
        timings.lock().unwrap().is_empty(),
        "not ended at the stream's opening"
    );
    let mut items = 0;
    while stream.message().await.unwrap().is_some() {
        items += 1;
    }
    assert_eq!(items, 3);
    let timings = timings.lock().unwrap().clone();
    assert_eq!(timings.len(), 1);
    assert!(timings[0].1, "ended normally");
    assert!(
        timings[0].0 >= Duration::from_millis(90),
        "{:?}",
        timings[0].0
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn publish_and_process_operations_get_producer_and_consumer_spans() {
    use micro_otel::call::{Messaging, MessagingKind, Operation, Payload, Reply};
    use micro_otel::trace::Tracing;
    use opentelemetry::trace::SpanKind;
    use tower::{Layer, ServiceExt};

    let spans = Spans::default();
    let tracing = Tracing::new(&spans.provider());
    let message = |kind, group: Option<&str>| {
        let messaging = match kind {
            MessagingKind::Publish => Messaging::publish("user.created", "memory"),
            MessagingKind::Process => Messaging::process("user.created", "memory"),
        };
        let messaging = messaging.message_id("m-1");
        Operation::from(match group {
            Some(group) => messaging.group(group),
            None => messaging,
        })
    };
    let delivered = Arc::new(Mutex::new(None));
    let broker = {
        let delivered = delivered.clone();
        tower::service_fn(move |call: Call| {
            *delivered.lock().unwrap() = Some(call.ctx.metadata().clone());
            async { Ok::<_, Status>(Reply::new(Payload::message(()))) }
        })
    };
    let event = request("created");
    let publish = wrapper::WrapperLayer::new(tracing.client()).layer(broker);
    let ctx = Context::new(message(MessagingKind::Publish, None), Default::default());
    publish
        .oneshot(Call::new(ctx, Payload::message(event.clone())))
        .await
        .unwrap();

    let headers = delivered.lock().unwrap().take().expect("published");
    assert!(
        headers.get("traceparent").is_some(),
        "W3C context in the headers"
    );
    let handler = tower::service_fn(|_call: Call| async {
        Ok::<_, Status>(Reply::new(Payload::message(())))
    });
    let process = wrapper::WrapperLayer::new(tracing.server()).layer(handler);
    let ctx = Context::new(message(MessagingKind::Process, Some("users")), headers);
    process
        .oneshot(Call::new(ctx, Payload::message(event.clone())))
        .await
        .unwrap();

    let finished = spans.wait_for(2).await;
    let send = micro_otel_tests::harness::span(&finished, "send user.created", SpanKind::Producer);
    let processed =
        micro_otel_tests::harness::span(&finished, "process user.created", SpanKind::Consumer);
    assert_eq!(processed.parent_span_id, send.span_context.span_id());
    assert_eq!(
        processed.span_context.trace_id(),
        send.span_context.trace_id()
    );
    let links: Vec<_> = processed
        .links
        .iter()
        .map(|l| l.span_context.span_id())
        .collect();
    assert_eq!(links, [send.span_context.span_id()]);
    let attr = |span, key| micro_otel_tests::harness::attr(span, key).map(|v| v.to_string());
    assert_eq!(attr(send, "messaging.system").as_deref(), Some("memory"));
    assert_eq!(
        attr(send, "messaging.destination.name").as_deref(),
        Some("user.created")
    );
    assert_eq!(
        attr(send, "messaging.operation.type").as_deref(),
        Some("send")
    );
    assert_eq!(
        attr(processed, "messaging.operation.type").as_deref(),
        Some("process")
    );
    assert_eq!(
        attr(processed, "messaging.consumer.group.name").as_deref(),
        Some("users")
    );
    assert_eq!(
        attr(processed, "messaging.message.id").as_deref(),
        Some("m-1")
    );
    let size = prost::Message::encoded_len(&event).to_string();
    assert_eq!(attr(send, "messaging.message.body.size"), Some(size));
    assert_eq!(attr(send, "rpc.response.status_code"), None);
}

#[tokio::test]
async fn adding_a_handler_after_start_or_twice_or_starting_twice_is_an_error() {
    let (registry, spans) = (MemoryRegistry::new(), Spans::default());
    let service = service("echo", &registry, &spans).build();
    echo::register_echo_handler(&service, Echo::default()).unwrap();
    let twice = echo::register_echo_handler(&service, Echo::default()).unwrap_err();
    assert!(
        twice
            .to_string()
            .contains("echo.v1.Echo already has a handler"),
        "{twice}"
    );
    let running = service.start().await.unwrap();
    let late = echo::register_echo_handler(&service, Echo::default()).unwrap_err();
    assert!(late.to_string().contains("already started"), "{late}");
    let again = service.start().await.unwrap_err();
    assert!(
        again.to_string().contains("already started"),
        "a service starts once: {again}"
    );
    running.stop().await.unwrap();
}

#[tokio::test]
async fn a_bad_item_in_a_request_stream_fails_the_call_loudly() {
    use futures_util::StreamExt;
    use micro_otel::call::Payload;
    let (registry, spans) = (MemoryRegistry::new(), Spans::default());
    let server = start_echo("echo", &registry, &spans, Echo::default(), |s| s).await;
    let spoil_second = wrapper::from_fn(|mut call: Call, next: Next| async move {
        if let Payload::Stream(items) = call.payload {
            call.payload = Payload::Stream(Box::pin(items.enumerate().map(|(i, item)| match i {
                1 => Err(Status::invalid_argument("item 1 is bad")),
                _ => item,
            })));
        }
        next.run(call).await
    });
    let caller = service("caller", &registry, &spans)
        .client(|c| c.wrap_call(spoil_second))
        .build();
    let requests = futures_util::stream::iter(vec![request("a"), request("b"), request("c")]);
    let status = EchoClient::new("echo", caller.client())
        .client_stream(requests)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(status.message(), "item 1 is bad");
    server.stop().await.unwrap();
}
