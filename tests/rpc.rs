//! End to end over 127.0.0.1: every RPC kind, error codes, discovery by name and address,
//! mounting on a plain tonic server, graceful shutdown and registration.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use micro_otel::discovery::{MemoryRegistry, Registry};
use micro_otel::{Client, Code, Service};
use micro_otel_tests::harness::echo::{self, EchoClient, EchoRequest};
use micro_otel_tests::harness::{Echo, Spans, incoming, service};
use user_example::Users;
use user_example::store::Store;
use user_example::user::{
    self, CreateUserRequest, GetUserRequest, ListUsersRequest, UserClient, WatchUsersRequest,
};

fn create(name: &str) -> CreateUserRequest {
    CreateUserRequest {
        name: name.into(),
        email: format!("{}@example.com", name.to_lowercase()),
    }
}

#[tokio::test]
async fn user_service_answers_every_rpc_over_loopback_through_the_registry() {
    let registry = MemoryRegistry::new();
    let spans = Spans::default();
    let service = service("user.service", &registry, &spans).build();
    user::register_user_handler(&service, Users::new(Arc::new(Store::new())))
        .expect("handler registered before start");
    let running = service.start().await.unwrap();
    assert!(running.local_addr().ip().is_loopback());

    let users = UserClient::new("user.service", service.client());
    let mut watch = users
        .watch_users(WatchUsersRequest {
            include_existing: false,
        })
        .await
        .unwrap();
    let mut ids = Vec::new();
    for name in ["Ada", "Grace", "Linus", "Barbara", "Ken"] {
        let user = users.create_user(create(name)).await.unwrap().user.unwrap();
        assert_eq!(user.name, name);
        ids.push(user.id);
    }
    assert_eq!(ids, [1, 2, 3, 4, 5]);

    let got = users
        .get_user(GetUserRequest { id: 3 })
        .await
        .unwrap()
        .user
        .unwrap();
    assert_eq!(
        (got.id, got.name.as_str(), got.email.as_str()),
        (3, "Linus", "linus@example.com")
    );

    let mut names = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = users
            .list_users(ListUsersRequest {
                page_size: 2,
                page_token: token,
            })
            .await
            .unwrap();
        pages += 1;
        names.extend(page.users.into_iter().map(|u| u.name));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(pages, 3);
    assert_eq!(names, ["Ada", "Grace", "Linus", "Barbara", "Ken"]);

    let watched: Vec<String> = (&mut watch)
        .take(5)
        .map(|e| e.unwrap().user.unwrap().name)
        .collect()
        .await;
    assert_eq!(watched, ["Ada", "Grace", "Linus", "Barbara", "Ken"]);
    drop(watch);
    running.stop().await.unwrap();
}

#[tokio::test]
async fn user_service_rejects_bad_input_with_the_right_codes() {
    let registry = MemoryRegistry::new();
    let spans = Spans::default();
    let service = service("user.service", &registry, &spans).build();
    user::register_user_handler(&service, Users::default())
        .expect("handler registered before start");
    let running = service.start().await.unwrap();
    let users = UserClient::new("user.service", service.client());

    let no_name = users
        .create_user(CreateUserRequest {
            name: " ".into(),
            email: "a@b".into(),
        })
        .await;
    assert_eq!(no_name.unwrap_err().code(), Code::InvalidArgument);
    let bad_email = users
        .create_user(CreateUserRequest {
            name: "A".into(),
            email: "nope".into(),
        })
        .await;
    let status = bad_email.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("nope"), "{}", status.message());
    assert_eq!(
        users
            .get_user(GetUserRequest { id: 0 })
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );
    assert_eq!(
        users
            .get_user(GetUserRequest { id: 42 })
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    let bad_size = users
        .list_users(ListUsersRequest {
            page_size: 1000,
            page_token: String::new(),
        })
        .await;
    assert_eq!(bad_size.unwrap_err().code(), Code::InvalidArgument);
    let bad_token = users
        .list_users(ListUsersRequest {
            page_size: 1,
            page_token: "abc".into(),
        })
        .await;
    assert_eq!(bad_token.unwrap_err().code(), Code::InvalidArgument);
    running.stop().await.unwrap();
}

async fn echo_service(
    registry: &MemoryRegistry,
    spans: &Spans,
) -> (Service, micro_otel::RunningService) {
    let service = service("echo.service", registry, spans).build();
    echo::register_echo_handler(&service, Echo::default())
        .expect("handler registered before start");
    let running = service.start().await.unwrap();
    (service, running)
}

fn say(message: &str) -> EchoRequest {
    EchoRequest {
        message: message.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn echo_works_in_all_four_rpc_shapes() {
    let registry = MemoryRegistry::new();
    let spans = Spans::default();
    let (service, running) = echo_service(&registry, &spans).await;
    let client = EchoClient::new("echo.service", service.client());

    assert_eq!(client.unary(say("hi")).await.unwrap().message, "hi");

    let request = EchoRequest {
        repeat: 4,
        ..say("again")
    };
    let indexes: Vec<u32> = client
        .server_stream(request)
        .await
        .unwrap()
        .map(|r| r.unwrap().index)
        .collect()
        .await;
    assert_eq!(indexes, [0, 1, 2, 3]);

    let parts = futures_util::stream::iter(["a", "b", "c"].map(say));
    let joined = client.client_stream(parts).await.unwrap();
    assert_eq!((joined.message.as_str(), joined.index), ("abc", 3));

    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut answers = client.bidi(tokio_stream_from(rx)).await.unwrap();
    for word in ["x", "y"] {
        tx.send(say(word)).await.unwrap();
        let answer = answers.message().await.unwrap().unwrap();
        assert_eq!(answer.message, word, "each message is answered as it comes");
    }
    drop(tx);
    assert!(answers.message().await.unwrap().is_none());
    running.stop().await.unwrap();
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send + 'static {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[tokio::test]
async fn a_client_reaches_a_server_by_address() {
    let registry = MemoryRegistry::new();
    let spans = Spans::default();
    let (_service, running) = echo_service(&registry, &spans).await;
    let client = EchoClient::new(
        &running.local_addr().to_string(),
        Client::builder()
            .instrumentation(micro_otel::Instrumentation::off())
            .build(),
    );
    assert_eq!(client.unary(say("direct")).await.unwrap().message, "direct");
    running.stop().await.unwrap();
}

#[tokio::test]
async fn generated_servers_mount_on_a_plain_tonic_server() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(user::UserServer::new(Users::default()))
            .add_service(echo::EchoServer::new(Echo::default()))
            .serve_with_incoming_shutdown(incoming(listener), async {
                let _ = stopped.await;
            }),
    );
    let client = Client::builder()
        .instrumentation(micro_otel::Instrumentation::off())
        .build();
    let users = UserClient::new(&address.to_string(), client.clone());
    let created = users
        .create_user(create("Tonic"))
        .await
        .unwrap()
        .user
        .unwrap();
    assert_eq!(created.id, 1);
    let echo = EchoClient::new(&address.to_string(), client);
    assert_eq!(echo.unary(say("mounted")).await.unwrap().message, "mounted");
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn unknown_services_and_methods_are_unimplemented() {
    let registry = MemoryRegistry::new();
    let spans = Spans::default();
    let (_service, running) = echo_service(&registry, &spans).await;
    // The user service is not served here: the path is unknown to the server.
    let users = UserClient::new(
        &running.local_addr().to_string(),
        Client::builder()
            .instrumentation(micro_otel::Instrumentation::off())
            .build(),
    );
    let status = users.get_user(GetUserRequest { id: 1 }).await.unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented);
    running.stop().await.unwrap();
}

#[tokio::test]
async fn a_service_with_no_nodes_is_unavailable() {
    let client = Client::builder()
        .registry(Arc::new(MemoryRegistry::new()))
        .instrumentation(micro_otel::Instrumentation::off())
        .build();
    let status = EchoClient::new("nobody.home", client)
        .unary(say("hello?"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert!(
        status.message().contains("nobody.home"),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn stopping_finishes_in_flight_calls_and_deregisters() {
    let registry = MemoryRegistry::new();
    let spans = Spans::default();
    let handler = Echo::default();
    let service = service("echo.service", &registry, &spans).build();
    echo::register_echo_handler(&service, handler.clone())
        .expect("handler registered before start");
    let running = service.start().await.unwrap();
    assert_eq!(registry.lookup("echo.service").await.unwrap().len(), 1);
    let client = EchoClient::new("echo.service", service.client());
    let started = handler.started.notified();
    let slow = tokio::spawn(async move {
        client
            .unary(EchoRequest {
                delay_ms: 300,
                ..say("slow")
            })
            .await
    });
    started.await;
    running.stop().await.unwrap();
    assert_eq!(
        slow.await.unwrap().unwrap().message,
        "slow",
        "the in-flight call completed"
    );
    assert!(
        registry.lookup("echo.service").await.unwrap().is_empty(),
        "deregistered"
    );
}

#[tokio::test]
async fn the_heartbeat_keeps_a_short_ttl_registration_alive() {
    let registry = MemoryRegistry::new();
    let spans = Spans::default();
    let service = service("echo.service", &registry, &spans)
        .register_ttl(Duration::from_millis(400))
        .register_interval(Duration::from_millis(50))
        .build();
    echo::register_echo_handler(&service, Echo::default())
        .expect("handler registered before start");
    let running = service.start().await.unwrap();
    // Three TTLs: without the heartbeat the node would have expired.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let nodes = registry.lookup("echo.service").await.unwrap();
    assert_eq!(nodes.len(), 1);
    assert_eq!(nodes[0].address, running.local_addr().to_string());
    assert_eq!(
        nodes[0].metadata.get("version").map(String::as_str),
        Some("latest")
    );
    running.stop().await.unwrap();
}

#[test]
fn generated_constants_name_the_service_and_its_methods() {
    use micro_otel::MethodKind;
    use user::user_methods;
    assert_eq!(user_methods::SERVICE, "user.User");
    assert_eq!(user_methods::CREATE_USER.path(), "/user.User/CreateUser");
    assert_eq!(
        user_methods::CREATE_USER.full_name(),
        "user.User/CreateUser"
    );
    assert_eq!(user_methods::CREATE_USER.kind(), MethodKind::Unary);
    const { assert!(!user_methods::CREATE_USER.is_idempotent()) };
    // `idempotency_level = NO_SIDE_EFFECTS` in the proto.
    const { assert!(user_methods::GET_USER.is_idempotent()) };
    assert_eq!(
        user_methods::WATCH_USERS.kind(),
        MethodKind::ServerStreaming
    );
    assert_eq!(
        echo::echo_methods::CLIENT_STREAM.kind(),
        MethodKind::ClientStreaming
    );
    assert_eq!(echo::echo_methods::BIDI.kind(), MethodKind::BidiStreaming);
}
