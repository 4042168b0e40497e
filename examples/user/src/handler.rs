//! [`Users`]: the `user.User` handler over the [`Store`].

use std::sync::Arc;

use futures_util::{StreamExt, stream};
use micro_otel::{Context, ResponseStream, Status};
use tokio::sync::broadcast::error::RecvError;

use micro_otel::broker::Publisher;

use crate::store::Store;
use crate::user::{
    CreateUserRequest, CreateUserResponse, GetUserRequest, GetUserResponse, ListUsersRequest,
    ListUsersResponse, UserCreatedEvent, UserEvent, UserHandler, UserRecord, WatchUsersRequest,
    user_event,
};

const DEFAULT_PAGE_SIZE: i32 = 10;
const MAX_PAGE_SIZE: i32 = 100;
const MAX_NAME_LEN: usize = 100;

/// Serves `user.User` from a shared [`Store`], publishing `user.created` when asked to.
#[derive(Debug, Clone, Default)]
pub struct Users {
    store: Arc<Store>,
    created: Option<Publisher<UserCreatedEvent>>,
}

impl Users {
    /// A handler over `store`.
    pub fn new(store: Arc<Store>) -> Self {
        Self {
            store,
            created: None,
        }
    }

    /// Publishes a [`UserCreatedEvent`] with `publisher` for every user created.
    pub fn publishing(mut self, publisher: Publisher<UserCreatedEvent>) -> Self {
        self.created = Some(publisher);
        self
    }
}

impl UserHandler for Users {
    async fn create_user(
        &self,
        ctx: Context,
        request: CreateUserRequest,
    ) -> Result<CreateUserResponse, Status> {
        {
            // A `tracing` span: it nests under the server span with nothing passed by hand.
            let _validate = tracing::info_span!("validate").entered();
            validate(&request)?;
        }
        let user = {
            let _insert = ctx.span("Store.InsertUser");
            self.store.insert(request.name, request.email)
        };
        // A `tracing` event: a log record carrying this call's trace and span ids.
        tracing::info!(user.id = user.id, "user created");
        if let Some(created) = &self.created {
            // A PRODUCER span under this server span; the subscribers' CONSUMER spans follow.
            created
                .publish(&UserCreatedEvent {
                    user_id: user.id,
                    name: user.name.clone(),
                })
                .await?;
        }
        Ok(CreateUserResponse { user: Some(user) })
    }

    async fn get_user(
        &self,
        ctx: Context,
        request: GetUserRequest,
    ) -> Result<GetUserResponse, Status> {
        if request.id <= 0 {
            return Err(Status::invalid_argument(format!(
                "id must be positive, got {}",
                request.id
            )));
        }
        let _read = ctx.span("Store.GetUser");
        match self.store.get(request.id) {
            Some(user) => Ok(GetUserResponse { user: Some(user) }),
            None => Err(Status::not_found(format!("no user with id {}", request.id))),
        }
    }

    async fn list_users(
        &self,
        ctx: Context,
        request: ListUsersRequest,
    ) -> Result<ListUsersResponse, Status> {
        let size = match request.page_size {
            0 => DEFAULT_PAGE_SIZE,
            n @ 1..=MAX_PAGE_SIZE => n,
            n => {
                return Err(Status::invalid_argument(format!(
                    "page_size must be between 0 and {MAX_PAGE_SIZE}, got {n}"
                )));
            }
        };
        let after = match request.page_token.as_str() {
            "" => 0,
            token => token
                .parse::<i64>()
                .ok()
                .filter(|id| *id > 0)
                .ok_or_else(|| {
                    Status::invalid_argument(format!(
                        "page_token {token:?} is not one this service issued"
                    ))
                })?,
        };
        let _read = ctx.span("Store.ListUsers");
        let (users, more) = self.store.page(after, size as usize);
        let next_page_token = match (more, users.last()) {
            (true, Some(last)) => last.id.to_string(),
            _ => String::new(),
        };
        Ok(ListUsersResponse {
            users,
            next_page_token,
        })
    }

    async fn watch_users(
        &self,
        _ctx: Context,
        request: WatchUsersRequest,
    ) -> Result<ResponseStream<UserEvent>, Status> {
        let (existing, receiver) = self.store.snapshot_and_watch();
        let existing = if request.include_existing {
            existing
        } else {
            Vec::new()
        };
        let new_users = stream::unfold(receiver, |mut receiver| async move {
            loop {
                match receiver.recv().await {
                    Ok(user) => return Some((user, receiver)),
                    Err(RecvError::Lagged(skipped)) => {
                        tracing::warn!(skipped, "watcher fell behind; skipping events");
                    }
                    Err(RecvError::Closed) => return None,
                }
            }
        });
        let events = stream::iter(existing)
            .chain(new_users)
            .map(|user| Ok(created(user)));
        Ok(Box::pin(events))
    }
}

fn created(user: UserRecord) -> UserEvent {
    UserEvent {
        kind: user_event::Kind::Created.into(),
        user: Some(user),
    }
}

fn validate(request: &CreateUserRequest) -> Result<(), Status> {
    let name = request.name.trim();
    if name.is_empty() {
        return Err(Status::invalid_argument("name is required"));
    }
    if name.chars().count() > MAX_NAME_LEN {
        return Err(Status::invalid_argument(format!(
            "name must be at most {MAX_NAME_LEN} characters"
        )));
    }
    if !request.email.contains('@') {
        return Err(Status::invalid_argument(format!(
            "email {:?} has no @",
            request.email
        )));
    }
    Ok(())
}
