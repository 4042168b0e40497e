//! `user-example [demo|server|client] [--address HOST:PORT]`
//!
//! - `demo` (default): server and client in one process, prints the trace tree;
//! - `server`: serves `user.User` on the address (default 127.0.0.1:50051) until Ctrl-C;
//! - `client`: calls a server at the address and prints the answers and its trace tree.
//!
//! With `OTEL_EXPORTER_OTLP_ENDPOINT` set, `server` and `client` export over OTLP instead.

use std::sync::Arc;

use anyhow::{Context as _, bail};
use futures_util::StreamExt;
use micro_otel::telemetry::{Telemetry, TraceTree};
use micro_otel::{Client, Service};
use user_example::store::Store;
use user_example::user::{
    self, CreateUserRequest, GetUserRequest, ListUsersRequest, WatchUsersRequest,
};
use user_example::{Users, demo};

const DEFAULT_ADDRESS: &str = "127.0.0.1:50051";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let command = args.next().unwrap_or_else(|| "demo".into());
    let address = match (args.next().as_deref(), args.next()) {
        (None, _) => DEFAULT_ADDRESS.to_owned(),
        (Some("--address"), Some(address)) => address,
        (Some(other), _) => bail!(
            "unexpected argument {other:?}; usage: user-example [demo|server|client] [--address HOST:PORT]"
        ),
    };
    match command.as_str() {
        "demo" => print!("{}", demo::run().await?),
        "server" => server(&address).await?,
        "client" => client(&address).await?,
        other => bail!("unknown command {other:?}; expected demo, server or client"),
    }
    Ok(())
}

/// OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, else the tree printer.
fn telemetry(tree: &TraceTree) -> anyhow::Result<Telemetry> {
    let builder = Telemetry::builder(demo::SERVICE_NAME).version("1.0.0");
    let builder = if std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_some() {
        builder
    } else {
        builder.tree(tree.clone())
    };
    Ok(builder.init()?)
}

async fn server(address: &str) -> anyhow::Result<()> {
    let tree = TraceTree::new();
    let telemetry = telemetry(&tree)?;
    let service = Service::builder(demo::SERVICE_NAME)
        .version("1.0.0")
        .address(address)
        .tracer_provider(telemetry.provider().clone())
        .build();
    user::register_user_handler(&service, Users::new(Arc::new(Store::new())))?;
    eprintln!("serving user.User on {address}; Ctrl-C to stop");
    service
        .run()
        .await
        .with_context(|| format!("serving on {address}"))?;
    telemetry.flush();
    print!("{}", tree.render());
    Ok(())
}

async fn client(address: &str) -> anyhow::Result<()> {
    let tree = TraceTree::new();
    let telemetry = telemetry(&tree)?;
    let tracing = micro_otel::trace::Tracing::new(telemetry.provider());
    let users = user::UserClient::new(address, Client::builder().tracing(Some(tracing)).build());
    let created = users
        .create_user(CreateUserRequest {
            name: "Ada".into(),
            email: "ada@example.com".into(),
        })
        .await
        .with_context(|| format!("calling {address}"))?;
    let id = created.user.unwrap_or_default().id;
    println!("CreateUser -> id {id}");
    println!(
        "GetUser({id}) -> {:?}",
        users
            .get_user(GetUserRequest { id })
            .await?
            .user
            .unwrap_or_default()
    );
    let page = users
        .list_users(ListUsersRequest {
            page_size: 10,
            page_token: String::new(),
        })
        .await?;
    println!("ListUsers -> {} users", page.users.len());
    let mut watch = users
        .watch_users(WatchUsersRequest {
            include_existing: true,
        })
        .await?;
    if let Some(event) = watch.next().await {
        println!(
            "WatchUsers -> first event for {:?}",
            event?.user.unwrap_or_default().name
        );
    }
    drop(watch);
    telemetry.flush();
    print!("\n{}", tree.render());
    Ok(())
}
