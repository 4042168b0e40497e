//! Wrappers: ordered middleware around handlers (server side) and calls (client side).
//!
//! A wrapper sees one call as a [`Request`] (its [`Context`] and type-erased body), may act on
//! it, and passes it on with [`Next::run`]. The first wrapper registered is the outermost.
//! Tracing is itself a wrapper, registered first. Write one in a few lines with [`from_fn`]:
//!
//! ```
//! use micro_otel::wrapper::{self, Next, Request};
//!
//! let require_auth = wrapper::from_fn(|req: Request, next: Next| async move {
//!     if req.ctx.metadata().get("authorization").is_none() {
//!         return Err(micro_otel::Status::unauthenticated("missing authorization"));
//!     }
//!     next.run(req).await
//! });
//! # let _ = require_auth;
//! ```

use std::any::Any;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use futures_util::{Stream, StreamExt};
use tonic::Status;

use crate::context::Context;

/// A boxed, sendable future.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// A type-erased message: a request or response of any generated type.
pub type Message = Box<dyn Any + Send>;

/// A type-erased stream of messages.
pub type MessageStream = Pin<Box<dyn Stream<Item = Result<Message, Status>> + Send + 'static>>;

/// The payload of a request or response: one message, or a stream of them.
pub enum Body {
    /// A single message (unary side).
    Message(Message),
    /// A stream of messages (streaming side).
    Stream(MessageStream),
}

impl Body {
    /// Erases a typed message.
    pub fn message<T: Send + 'static>(message: T) -> Self {
        Body::Message(Box::new(message))
    }

    /// Erases a typed stream.
    pub fn stream<T, S>(stream: S) -> Self
    where
        T: Send + 'static,
        S: Stream<Item = Result<T, Status>> + Send + 'static,
    {
        Body::Stream(Box::pin(
            stream.map(|item| item.map(|m| Box::new(m) as Message)),
        ))
    }

    /// The single message as `T`, or an INTERNAL status if the body is something else.
    pub fn into_message<T: 'static>(self) -> Result<T, Status> {
        match self {
            Body::Message(m) => m.downcast::<T>().map(|b| *b).map_err(|_| {
                Status::internal(format!(
                    "wrapper changed the message type; expected {}",
                    std::any::type_name::<T>()
                ))
            }),
            Body::Stream(_) => Err(Status::internal(format!(
                "expected one {} but got a stream",
                std::any::type_name::<T>()
            ))),
        }
    }

    /// The stream, or an INTERNAL status if the body is a single message.
    pub fn into_stream(self) -> Result<MessageStream, Status> {
        match self {
            Body::Stream(s) => Ok(s),
            Body::Message(_) => Err(Status::internal("expected a stream but got one message")),
        }
    }

    /// Whether this is a stream.
    pub fn is_stream(&self) -> bool {
        matches!(self, Body::Stream(_))
    }
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.is_stream() {
            "Body::Stream"
        } else {
            "Body::Message"
        })
    }
}

/// One call as wrappers see it.
#[derive(Debug)]
pub struct Request {
    /// Method, metadata, deadline, trace context.
    pub ctx: Context,
    /// The request message or stream.
    pub body: Body,
}

/// The answer to a call as wrappers see it.
#[derive(Debug)]
pub struct Response {
    /// The response message or stream.
    pub body: Body,
}

/// Middleware around a handler or a call.
pub trait Wrapper: Send + Sync + 'static {
    /// Handles `req`, usually by passing it on with `next.run(req)`.
    fn call(&self, req: Request, next: Next) -> BoxFuture<Result<Response, Status>>;
}

/// The innermost step of a chain: the handler on the server, the transport on the client.
pub(crate) trait Endpoint: Send + Sync + 'static {
    fn call(&self, req: Request) -> BoxFuture<Result<Response, Status>>;
}

/// The rest of the chain after the current wrapper.
pub struct Next {
    wrappers: Wrappers,
    index: usize,
    endpoint: Arc<dyn Endpoint>,
}

impl Next {
    /// Whether wrappers remain before the handler or transport.
    pub fn has_wrappers(&self) -> bool {
        self.index < self.wrappers.0.len()
    }

    /// Runs the remaining wrappers and then the handler or transport.
    pub fn run(self, req: Request) -> BoxFuture<Result<Response, Status>> {
        match self.wrappers.0.get(self.index) {
            Some(wrapper) => {
                let wrapper = wrapper.clone();
                let next = Next {
                    index: self.index + 1,
                    ..self
                };
                wrapper.call(req, next)
            }
            None => self.endpoint.call(req),
        }
    }
}

/// An ordered list of wrappers; the first is the outermost.
#[derive(Clone, Default)]
pub struct Wrappers(Arc<[Arc<dyn Wrapper>]>);

impl Wrappers {
    /// A chain of the given wrappers, outermost first.
    pub fn new(wrappers: Vec<Arc<dyn Wrapper>>) -> Self {
        Self(wrappers.into())
    }

    /// Number of wrappers in the chain.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when the chain has no wrappers.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn run(
        &self,
        endpoint: Arc<dyn Endpoint>,
        req: Request,
    ) -> BoxFuture<Result<Response, Status>> {
        if self.0.is_empty() {
            return endpoint.call(req);
        }
        Next {
            wrappers: self.clone(),
            index: 0,
            endpoint,
        }
        .run(req)
    }
}

impl std::fmt::Debug for Wrappers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Wrappers({})", self.0.len())
    }
}

/// A wrapper made from an async closure `(Request, Next) -> Result<Response, Status>`.
pub fn from_fn<F, Fut>(f: F) -> Arc<dyn Wrapper>
where
    F: Fn(Request, Next) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Response, Status>> + Send + 'static,
{
    Arc::new(FnWrapper(f))
}

struct FnWrapper<F>(F);

impl<F, Fut> Wrapper for FnWrapper<F>
where
    F: Fn(Request, Next) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Response, Status>> + Send + 'static,
{
    fn call(&self, req: Request, next: Next) -> BoxFuture<Result<Response, Status>> {
        Box::pin((self.0)(req, next))
    }
}
