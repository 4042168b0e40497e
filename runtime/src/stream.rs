//! Typed message streams handed to handlers and returned to callers.

use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::{Stream, StreamExt};
use tonic::Status;

use crate::call::MessageStream;

/// A stream a handler returns for a server-streaming or bidi RPC.
pub type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// A typed stream of incoming messages: requests on the server, responses on the client.
pub struct Streaming<T> {
    inner: MessageStream,
    _type: PhantomData<fn() -> T>,
}

impl<T: 'static> Streaming<T> {
    pub(crate) fn new(inner: MessageStream) -> Self {
        Self {
            inner,
            _type: PhantomData,
        }
    }

    /// The next message, `Ok(None)` at the end of the stream.
    pub async fn message(&mut self) -> Result<Option<T>, Status> {
        self.next().await.transpose()
    }
}

impl<T: 'static> Stream for Streaming<T> {
    type Item = Result<T, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner
            .as_mut()
            .poll_next(cx)
            .map(|item| item.map(|result| result.and_then(|m| m.into_typed::<T>())))
    }
}

impl<T> std::fmt::Debug for Streaming<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Streaming<{}>", std::any::type_name::<T>())
    }
}
