//! The terminal step of the client chain: the gRPC call itself, on the pooled connection to
//! the chosen node (or the direct address).

use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures_util::StreamExt;
use http::uri::PathAndQuery;
use tonic::client::Grpc;
use tonic::{Extensions, Status};

use super::pool::{Conn, Pool};
use crate::call::{
    AnyMessage, BoxFuture, Call, ErasedCodec, MessageStream, Payload, Reply, deadline,
};
use crate::wrapper::Terminal;

/// Sends calls over the pool's connections.
pub(crate) struct Transport {
    pool: Arc<Pool>,
}

impl Transport {
    pub(crate) fn new(pool: Arc<Pool>) -> Self {
        Self { pool }
    }
}

impl Terminal for Transport {
    fn call(&self, call: Call) -> BoxFuture<Result<Reply, Status>> {
        let address = match (call.ctx.node(), call.ctx.target()) {
            (Some(node), _) => node.address.as_str(),
            (None, Some(target)) if target.is_direct() => target.name(),
            _ => return failed(Status::internal("no node was selected for the call")),
        };
        let conn = match self.pool.get(address) {
            Ok(conn) => conn,
            Err(status) => return failed(status),
        };
        let deadline = call.ctx.deadline();
        Box::pin(async move {
            bounded(deadline, send(Grpc::new(conn), call))
                .await
                .map_err(|status| match deadline {
                    // tonic's channel enforces `grpc-timeout` too, and reports it as CANCELLED.
                    Some(d) if status.code() == tonic::Code::Cancelled && Instant::now() >= d => {
                        Status::deadline_exceeded("deadline exceeded")
                    }
                    _ => status,
                })
        })
    }
}

fn failed(status: Status) -> BoxFuture<Result<Reply, Status>> {
    Box::pin(std::future::ready(Err(status)))
}

async fn bounded(
    deadline: Option<Instant>,
    send: impl Future<Output = Result<Reply, Status>>,
) -> Result<Reply, Status> {
    match deadline {
        Some(deadline) => deadline::bound(deadline, send).await,
        None => send.await,
    }
}

/// Sends one call of any kind: the method's kind and the payload pick tonic's entry point.
async fn send(mut grpc: Grpc<Conn>, call: Call) -> Result<Reply, Status> {
    let Call { ctx, payload } = call;
    let (Some(method), Some(decode)) = (ctx.method(), ctx.decode_reply()) else {
        return Err(Status::internal(
            "the transport was given a call that is not an RPC",
        ));
    };
    let deadline = ctx.deadline();
    let mut metadata = ctx.into_metadata();
    if let Some(deadline) = deadline {
        deadline::to_metadata(deadline, &mut metadata);
    }
    grpc.ready().await.map_err(Status::from_error)?;
    let path = PathAndQuery::from_static(method.path);
    let codec = ErasedCodec(decode);
    let stream = |s| Payload::Stream(Box::pin(s));
    match (payload, method.kind.server_streams()) {
        (Payload::Message(m), false) => Ok(reply(
            grpc.unary(
                tonic::Request::from_parts(metadata, Extensions::default(), m),
                path,
                codec,
            )
            .await?,
            Payload::Message,
        )),
        (Payload::Message(m), true) => Ok(reply(
            grpc.server_streaming(
                tonic::Request::from_parts(metadata, Extensions::default(), m),
                path,
                codec,
            )
            .await?,
            stream,
        )),
        (Payload::Stream(s), server_streams) => {
            let (requests, failure) = RequestFailure::watch(s);
            let result = if server_streams {
                let response = grpc
                    .streaming(
                        tonic::Request::from_parts(metadata, Extensions::default(), requests),
                        path,
                        codec,
                    )
                    .await;
                response.map(|r| reply(r, stream))
            } else {
                let response = grpc
                    .client_streaming(
                        tonic::Request::from_parts(metadata, Extensions::default(), requests),
                        path,
                        codec,
                    )
                    .await;
                response.map(|r| reply(r, Payload::Message))
            };
            failure.check()?;
            result
        }
    }
}

fn reply<T>(response: tonic::Response<T>, payload: impl FnOnce(T) -> Payload) -> Reply {
    let (metadata, message, _) = response.into_parts();
    let mut reply = Reply::new(payload(message));
    reply.metadata = metadata;
    reply
}

/// The first error in a request stream: tonic sends plain messages, so the stream ends
/// there and the call fails with that error rather than stopping quietly.
#[derive(Clone, Default)]
struct RequestFailure(Arc<Mutex<Option<Status>>>);

impl RequestFailure {
    fn watch(
        requests: MessageStream,
    ) -> (impl futures_util::Stream<Item = AnyMessage> + Send, Self) {
        let failure = Self::default();
        let slot = failure.clone();
        let requests = requests
            .map(move |item| match item {
                Ok(message) => Some(message),
                Err(status) => {
                    *slot.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(status);
                    None
                }
            })
            .take_while(|m| std::future::ready(m.is_some()))
            .filter_map(std::future::ready);
        (requests, failure)
    }

    fn check(&self) -> Result<(), Status> {
        match self.0.lock().unwrap_or_else(|e| e.into_inner()).take() {
            Some(status) => Err(status),
            None => Ok(()),
        }
    }
}
