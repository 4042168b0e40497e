//! The one-command demo: server and client in one process on embedded defaults (in-memory
//! registry), every RPC kind of the user service, then the trace tree and a table of the
//! RPC metrics recorded.

use std::sync::Arc;

use futures_util::StreamExt;
use micro_otel::Service;
use micro_otel::telemetry::{MetricsTable, Telemetry, TraceTree};
use opentelemetry::context::FutureExt as _;
use opentelemetry::trace::{TraceContextExt, Tracer};

use crate::Users;
use crate::store::Store;
use crate::user::{self, CreateUserRequest, GetUserRequest, ListUsersRequest, WatchUsersRequest};

/// Registry name of the service.
pub const SERVICE_NAME: &str = "user.service";

/// Runs the demo and returns what it prints: the calls made, the trace tree and the metrics
/// table.
pub async fn run() -> anyhow::Result<String> {
    let (tree, table) = (TraceTree::new(), MetricsTable::new());
    let telemetry = Telemetry::builder(SERVICE_NAME)
        .version("1.0.0")
        .no_export()
        .tree(tree.clone())
        .metrics_table(table.clone())
        .init()?;
    let service = Service::builder(SERVICE_NAME)
        .version("1.0.0")
        .instrumentation(telemetry.instrumentation())
        .build();
    let users =
        Users::new(Arc::new(Store::new())).publishing(user::user_created_event_publisher(&service));
    user::register_user_handler(&service, users)?;
    // A subscriber in the same demo: one trace runs from CreateUser through the publish
    // to this handler.
    let welcomed = user::subscribe_user_created_event(
        &service,
        |ctx: micro_otel::Context, event: user::UserCreatedEvent| async move {
            let _mail = ctx.span("send welcome mail");
            tracing::info!("welcome, {}", event.name);
            Ok(())
        },
    )?;
    let running = service.start().await?;

    let tracer = opentelemetry::global::tracer("user-demo");
    let root = tracer.start("user-demo");
    let cx = opentelemetry::Context::current_with_span(root);
    let mut out = format!("user.service listening on {}\n\n", running.local_addr());
    let calls = client_calls(&service, &mut out)
        .with_context(cx.clone())
        .await;
    cx.span().end();
    // The in-memory broker delivers at most once: let the three events be handled first.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while welcomed.handled() < 3 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    running.stop().await?;
    calls?;
    telemetry.flush();
    out.push('\n');
    out.push_str(&tree.render());
    out.push('\n');
    out.push_str(&table.render());
    Ok(out)
}

/// Calls every method once through the registry, including one failing call.
async fn client_calls(service: &Service, out: &mut String) -> anyhow::Result<()> {
    let users = user::UserClient::new(SERVICE_NAME, service.client());
    let mut watch = users
        .watch_users(WatchUsersRequest {
            include_existing: true,
        })
        .await?;
    for (name, email) in [
        ("Ada", "ada@example.com"),
        ("Grace", "grace@example.com"),
        ("Linus", "linus@example.com"),
    ] {
        let created = users
            .create_user(CreateUserRequest {
                name: name.into(),
                email: email.into(),
            })
            .await?;
        out.push_str(&format!(
            "CreateUser -> {:?}\n",
            created.user.unwrap_or_default()
        ));
    }
    let got = users.get_user(GetUserRequest { id: 2 }).await?;
    out.push_str(&format!(
        "GetUser(2) -> {:?}\n",
        got.user.unwrap_or_default()
    ));
    let missing = users.get_user(GetUserRequest { id: 99 }).await;
    out.push_str(&format!(
        "GetUser(99) -> {:?}\n",
        missing.map_err(|s| s.code())
    ));
    let mut page_token = String::new();
    loop {
        let page = users
            .list_users(ListUsersRequest {
                page_size: 2,
                page_token,
            })
            .await?;
        let names: Vec<_> = page.users.iter().map(|u| u.name.as_str()).collect();
        out.push_str(&format!(
            "ListUsers -> {names:?} next={:?}\n",
            page.next_page_token
        ));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    for _ in 0..3 {
        if let Some(event) = watch.next().await {
            out.push_str(&format!(
                "WatchUsers -> {:?}\n",
                event?.user.unwrap_or_default().name
            ));
        }
    }
    drop(watch);
    Ok(())
}
