//! The terminal step of the client chain: the gRPC call itself, on the pooled connection to
//! the chosen node (or the direct address).

use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures_util::future::Either;
use futures_util::{FutureExt as _, StreamExt as _, TryFutureExt as _};
use http::uri::PathAndQuery;
use tonic::client::Grpc;
use tonic::metadata::MetadataMap;
use tonic::{Extensions, Status};

use super::pool::{Conn, Pool};
use crate::call::{
    AnyMessage, AnyMessageStream, BoxFuture, Call, Decode, ErasedCodec, Method, Payload, Reply,
    deadline,
};
use crate::wrapper::Terminal;

/// Sends calls over the pool's connections.
#[derive(Clone)]
pub(crate) struct Transport {
    pool: Arc<Pool>,
}

impl Transport {
    pub(crate) fn new(pool: Arc<Pool>) -> Self {
        Self { pool }
    }

    /// The pool the calls go through.
    pub(crate) fn pool(&self) -> &Pool {
        &self.pool
    }
}

impl Transport {
    /// Readies `call` for the wire: its connection, path, codec and metadata.
    fn prepare(&self, call: Call) -> Result<(Outgoing, Payload), Status> {
        let address = match (call.ctx.node(), call.ctx.target()) {
            (Some(node), _) => node.address.as_str(),
            (None, Some(target)) if target.is_direct() => target.name(),
            _ => return Err(Status::internal("no node was selected for the call")),
        };
        let conn = self.pool.get(address)?;
        let Call { ctx, payload } = call;
        let (Some(method), Some(decode)) = (ctx.method(), ctx.decode_reply()) else {
            return Err(Status::internal(
                "the transport was given a call that is not an RPC",
            ));
        };
        let deadline = ctx.deadline();
        let send = Outgoing::new(conn, method, decode, ctx.into_metadata(), deadline);
        Ok((send, payload))
    }

    /// Sends a unary call in the caller's own future, unboxed.
    pub(crate) fn unary(&self, call: Call) -> impl Future<Output = Result<Reply, Status>> {
        match self.prepare(call) {
            Ok((send, Payload::Message(m))) if !send.server_streams => Either::Left(send.unary(m)),
            Ok(_) => Either::Right(std::future::ready(Err(Status::internal(
                "not a unary call",
            )))),
            Err(status) => Either::Right(std::future::ready(Err(status))),
        }
    }

    /// Sends a unary call to `address` without a [`Call`]: for a call that nothing but
    /// the transport would see (no wrappers, a direct address), as a plain tonic client
    /// sends it.
    pub(crate) fn unary_to(
        &self,
        address: &str,
        method: &'static Method,
        decode: Decode,
        metadata: MetadataMap,
        deadline: Option<Instant>,
        message: AnyMessage,
    ) -> impl Future<Output = Result<Reply, Status>> {
        match self.pool.get(address) {
            Ok(conn) => {
                Either::Left(Outgoing::new(conn, method, decode, metadata, deadline).unary(message))
            }
            Err(status) => Either::Right(std::future::ready(Err(status))),
        }
    }
}

impl Terminal for Transport {
    fn call(&self, call: Call) -> BoxFuture<Result<Reply, Status>> {
        let (send, payload) = match self.prepare(call) {
            Ok(prepared) => prepared,
            Err(status) => return failed(status),
        };
        // One future per kind of reply, boxed apart: each is only as large as its own tonic
        // call.
        match (payload, send.server_streams) {
            (Payload::Message(m), false) => Box::pin(send.unary(m)),
            (Payload::Message(m), true) => Box::pin(send.server_streaming(m)),
            (Payload::Stream(s), _) => Box::pin(send.streams(s)),
        }
    }
}

fn failed(status: Status) -> BoxFuture<Result<Reply, Status>> {
    Box::pin(std::future::ready(Err(status)))
}

/// One call on its way out: the connection, the method's path and codec, the metadata
/// (with `grpc-timeout`) and the deadline that bounds it.
struct Outgoing {
    grpc: Grpc<Conn>,
    path: PathAndQuery,
    server_streams: bool,
    codec: ErasedCodec,
    metadata: MetadataMap,
    deadline: Option<Instant>,
}

impl Outgoing {
    fn new(
        conn: Conn,
        method: &'static Method,
        decode: Decode,
        mut metadata: MetadataMap,
        deadline: Option<Instant>,
    ) -> Self {
        if let Some(deadline) = deadline {
            deadline::to_metadata(deadline, &mut metadata);
        }
        Self {
            grpc: Grpc::new(conn),
            path: PathAndQuery::from_static(method.path()),
            server_streams: method.kind().server_streams(),
            codec: ErasedCodec(decode),
            metadata,
            deadline,
        }
    }

    fn request<T>(metadata: MetadataMap, message: T) -> tonic::Request<T> {
        tonic::Request::from_parts(metadata, Extensions::default(), message)
    }

    // Plain functions returning futures, not `async fn`s: an `async fn` would keep its
    // argument and the future it awaits apart, twice the size of tonic's call per call.

    fn unary(mut self, message: AnyMessage) -> impl Future<Output = Result<Reply, Status>> {
        let request = Self::request(self.metadata, message);
        bounded(self.deadline, async move {
            self.grpc.ready().await.map_err(Status::from_error)?;
            let response = self.grpc.unary(request, self.path, self.codec).await?;
            Ok(reply(response, Payload::Message))
        })
    }

    fn server_streaming(
        mut self,
        message: AnyMessage,
    ) -> impl Future<Output = Result<Reply, Status>> {
        let request = Self::request(self.metadata, message);
        bounded(self.deadline, async move {
            self.grpc.ready().await.map_err(Status::from_error)?;
            let response = self
                .grpc
                .server_streaming(request, self.path, self.codec)
                .await?;
            Ok(reply(response, stream))
        })
    }

    /// A client-streaming or bidi call: one future for both, whose reply is one message or
    /// a stream as the method says (streams are not the hot path that unary calls are).
    fn streams(
        mut self,
        requests: AnyMessageStream,
    ) -> impl Future<Output = Result<Reply, Status>> {
        let (requests, failure) = RequestFailure::watch(requests);
        let request = Self::request(self.metadata, requests);
        let send = bounded(self.deadline, async move {
            self.grpc.ready().await.map_err(Status::from_error)?;
            if self.server_streams {
                let response = self.grpc.streaming(request, self.path, self.codec).await?;
                Ok(reply(response, stream))
            } else {
                let response = self
                    .grpc
                    .client_streaming(request, self.path, self.codec)
                    .await?;
                Ok(reply(response, Payload::Message))
            }
        });
        failure.after(send)
    }
}

/// Runs `send` within the call's deadline. tonic's channel enforces `grpc-timeout` too, and
/// reports it as CANCELLED: that is DEADLINE_EXCEEDED to the caller.
fn bounded(
    deadline: Option<Instant>,
    send: impl Future<Output = Result<Reply, Status>>,
) -> impl Future<Output = Result<Reply, Status>> {
    match deadline {
        None => Either::Left(send),
        Some(deadline) => Either::Right(deadline::bound(deadline, send).map_err(move |status| {
            if status.code() == tonic::Code::Cancelled && Instant::now() >= deadline {
                Status::deadline_exceeded("deadline exceeded")
            } else {
                status
            }
        })),
    }
}

fn stream(responses: tonic::Streaming<AnyMessage>) -> Payload {
    Payload::Stream(Box::pin(responses))
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
        requests: AnyMessageStream,
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

    /// `send`'s result, unless the request stream failed first.
    fn after(
        self,
        send: impl Future<Output = Result<Reply, Status>>,
    ) -> impl Future<Output = Result<Reply, Status>> {
        send.map(
            move |result| match self.0.lock().unwrap_or_else(|e| e.into_inner()).take() {
                Some(status) => Err(status),
                None => result,
            },
        )
    }
}
