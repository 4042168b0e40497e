//! The README's tour as one program, the way a service of your own starts: the code the
//! README shows is cut from this file (a test checks it), so it compiles as shown.
//!
//! `cargo run -p user-example --bin tour` serves `user.User` with its handler, calls it
//! through the registry, streams, publishes an event and handles it, stops, and prints
//! the trace tree.

use std::sync::Mutex;
use std::time::Duration;

use micro_otel::prelude::*;

mod user {
    include!(concat!(env!("OUT_DIR"), "/user.rs"));
}
use user::{
    CreateUserRequest, CreateUserResponse, GetUserRequest, GetUserResponse, ListUsersRequest,
    ListUsersResponse, UserCreatedEvent, UserEvent, UserRecord, WatchUsersRequest,
};

#[derive(Default)]
struct Users {
    records: Mutex<Vec<UserRecord>>,
}

impl user::UserHandler for Users {
    async fn create_user(
        &self,
        ctx: Context,
        request: CreateUserRequest,
    ) -> Result<CreateUserResponse, Status> {
        let _insert = ctx.span("Store.InsertUser"); // nests under the server span
        tracing::info!("creating {}", request.name); // `tracing` works too
        let mut records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        let user = UserRecord {
            id: records.len() as i64 + 1,
            name: request.name,
            email: request.email,
        };
        records.push(user.clone());
        Ok(CreateUserResponse { user: Some(user) })
    }

    async fn get_user(
        &self,
        _ctx: Context,
        request: GetUserRequest,
    ) -> Result<GetUserResponse, Status> {
        let records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        match records.iter().find(|user| user.id == request.id) {
            Some(user) => Ok(GetUserResponse {
                user: Some(user.clone()),
            }),
            None => Err(Status::not_found(format!("no user with id {}", request.id))),
        }
    }

    async fn list_users(
        &self,
        _ctx: Context,
        _request: ListUsersRequest,
    ) -> Result<ListUsersResponse, Status> {
        let users = self
            .records
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        Ok(ListUsersResponse {
            users,
            next_page_token: String::new(),
        })
    }

    async fn watch_users(
        &self,
        _ctx: Context,
        _request: WatchUsersRequest,
    ) -> Result<ResponseStream<UserEvent>, Status> {
        let users = self
            .records
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        Ok(stream_iter(users.into_iter().map(|user| UserEvent {
            kind: user::user_event::Kind::Created.into(),
            user: Some(user),
        })))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Console views of traces and metrics; `.otlp(url)` exports all three signals instead.
    let (tree, table) = (TraceTree::new(), MetricsTable::new());
    let telemetry = Telemetry::builder("user.service")
        .no_export()
        .tree(tree.clone())
        .metrics_table(table.clone())
        .init()?;

    let require_caller = wrapper::from_fn(|call: Call, next: Next| async move {
        match call.ctx.metadata().get("x-caller") {
            Some(_) => next.run(call).await,
            None => Err(Status::unauthenticated("say who calls in x-caller")),
        }
    });
    let service = Service::builder("user.service")
        .version("1.0.0")
        .instrumentation(telemetry.instrumentation())
        .wrap_handler(require_caller) // your wrappers run inside tracing, in the order added
        .client(|client| client.timeout(Duration::from_secs(2)))
        .build();
    user::register_user_handler(&service, Users::default())?;
    let welcomed = user::subscribe_user_created_event(
        &service,
        |ctx: Context, event: UserCreatedEvent| async move {
            let _mail = ctx.span("send welcome mail"); // nests under the CONSUMER span
            tracing::info!("welcome, {}", event.name);
            Ok(()) // Err(status) leaves the message unacknowledged
        },
    )?;
    let running = service.start().await?; // binds, registers (TTL 90 s, heartbeat 30 s)

    let calls = async {
        let users = user::UserClient::from_registry(service.client());
        let mut request = Request::new(CreateUserRequest {
            name: "Ada".into(),
            email: "ada@example.com".into(),
        });
        request.metadata_mut().insert("x-caller", "tour".parse()?);
        let created = users.create_user(request).await?;
        let event = UserCreatedEvent {
            user_id: created.user.map_or(0, |u| u.id),
            name: "Ada".into(),
        };
        user::user_created_event_publisher(&service)
            .publish(&event)
            .await?; // a PRODUCER span

        let mut request = Request::new(WatchUsersRequest {
            include_existing: true,
        });
        request.metadata_mut().insert("x-caller", "tour".parse()?);
        let mut events = users.watch_users(request).await?;
        while let Some(event) = events.message().await? {
            println!("event: {:?}", event.user.map(|u| u.name));
        }

        let mut request = Request::new(GetUserRequest { id: 99 });
        request.metadata_mut().insert("x-caller", "tour".parse()?);
        let reply = ReplyMetadata::capture(&mut request);
        let missing = users.get_user(request).await;
        let headers = reply.get(); // Some(MetadataMap) once the call has finished
        println!(
            "GetUser 99: {:?}, with {} reply headers",
            missing.err().map(|status| status.code()),
            headers.map_or(0, |h| h.len())
        );
        Ok::<_, Box<dyn std::error::Error>>(())
    };
    micro_otel::trace::in_span(tracing::info_span!("tour"), calls).await?;

    // The in-memory broker hands the event to the subscriber in the background.
    while welcomed.handled() < 1 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    running.stop().await?; // deregisters, drains calls and messages, flushes telemetry
    print!("{}\n{}", tree.render(), table.render());
    Ok(())
}
