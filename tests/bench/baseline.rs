//! The baseline: plain tonic-build code for the same protos, with equivalent handlers.

use std::sync::Arc;

use user_example::store::Store;

/// tonic-prost-build output for `user.proto` (only part of it is used).
#[allow(dead_code)]
pub mod user {
    tonic::include_proto!("user");
}

/// tonic-prost-build output for `echo.proto`.
pub mod echo {
    tonic::include_proto!("echo.v1");
}

/// `user.User` served by plain tonic; only `GetUser` is benchmarked.
pub struct Users(pub Arc<Store>);

#[tonic::async_trait]
impl user::user_server::User for Users {
    async fn create_user(
        &self,
        _request: tonic::Request<user::CreateUserRequest>,
    ) -> Result<tonic::Response<user::CreateUserResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("not benchmarked"))
    }

    async fn get_user(
        &self,
        request: tonic::Request<user::GetUserRequest>,
    ) -> Result<tonic::Response<user::GetUserResponse>, tonic::Status> {
        let id = request.into_inner().id;
        let found = self
            .0
            .get(id)
            .ok_or_else(|| tonic::Status::not_found(format!("no user with id {id}")))?;
        Ok(tonic::Response::new(user::GetUserResponse {
            user: Some(user::UserRecord {
                id: found.id,
                name: found.name,
                email: found.email,
            }),
        }))
    }

    async fn list_users(
        &self,
        _request: tonic::Request<user::ListUsersRequest>,
    ) -> Result<tonic::Response<user::ListUsersResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("not benchmarked"))
    }

    type WatchUsersStream = futures_util::stream::Empty<Result<user::UserEvent, tonic::Status>>;

    async fn watch_users(
        &self,
        _request: tonic::Request<user::WatchUsersRequest>,
    ) -> Result<tonic::Response<Self::WatchUsersStream>, tonic::Status> {
        Err(tonic::Status::unimplemented("not benchmarked"))
    }
}

/// `echo.v1.Echo` served by plain tonic; only `Unary` is benchmarked.
pub struct Echo;

type EchoStream = futures_util::stream::Empty<Result<echo::EchoResponse, tonic::Status>>;

#[tonic::async_trait]
impl echo::echo_server::Echo for Echo {
    async fn unary(
        &self,
        request: tonic::Request<echo::EchoRequest>,
    ) -> Result<tonic::Response<echo::EchoResponse>, tonic::Status> {
        let request = request.into_inner();
        Ok(tonic::Response::new(echo::EchoResponse {
            message: request.message,
            index: 0,
            payload: request.payload,
        }))
    }

    type ServerStreamStream = EchoStream;

    async fn server_stream(
        &self,
        _request: tonic::Request<echo::EchoRequest>,
    ) -> Result<tonic::Response<EchoStream>, tonic::Status> {
        Err(tonic::Status::unimplemented("not benchmarked"))
    }

    async fn client_stream(
        &self,
        _request: tonic::Request<tonic::Streaming<echo::EchoRequest>>,
    ) -> Result<tonic::Response<echo::EchoResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("not benchmarked"))
    }

    type BidiStream = EchoStream;

    async fn bidi(
        &self,
        _request: tonic::Request<tonic::Streaming<echo::EchoRequest>>,
    ) -> Result<tonic::Response<EchoStream>, tonic::Status> {
        Err(tonic::Status::unimplemented("not benchmarked"))
    }
}
