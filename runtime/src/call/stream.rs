//! Typed message streams handed to handlers and returned to callers.

use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::{Stream, StreamExt};
use tonic::Status;

use super::AnyMessageStream;

/// A stream a handler returns for a server-streaming or bidi RPC: build one with
/// [`stream_iter`] or [`stream_channel`], or box any `Stream` of `Result<T, Status>`.
pub type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// A response stream of `items`, in order, then its end.
pub fn stream_iter<T, I>(items: I) -> ResponseStream<T>
where
    T: Send + 'static,
    I: IntoIterator<Item = T>,
    I::IntoIter: Send + 'static,
{
    Box::pin(futures_util::stream::iter(items.into_iter().map(Ok)))
}

/// A response stream fed through a channel holding up to `capacity` messages: what the
/// sender sends is streamed in order, a `Status` sent ends the stream with that error, and
/// the stream ends when every sender is dropped. A send fails once the caller has gone.
pub fn stream_channel<T: Send + 'static>(
    capacity: usize,
) -> (
    tokio::sync::mpsc::Sender<Result<T, Status>>,
    ResponseStream<T>,
) {
    let (sender, mut receiver) = tokio::sync::mpsc::channel(capacity.max(1));
    let stream = futures_util::stream::poll_fn(move |cx| receiver.poll_recv(cx));
    (sender, Box::pin(stream))
}

/// A typed stream of incoming messages: requests on the server, responses on the client.
pub struct MessageStream<T> {
    inner: AnyMessageStream,
    _type: PhantomData<fn() -> T>,
}

impl<T: 'static> MessageStream<T> {
    pub(crate) fn new(inner: AnyMessageStream) -> Self {
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

impl<T: 'static> Stream for MessageStream<T> {
    type Item = Result<T, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner
            .as_mut()
            .poll_next(cx)
            .map(|item| item.map(|result| result.and_then(|m| m.into_typed::<T>())))
    }
}

impl<T> std::fmt::Debug for MessageStream<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MessageStream<{}>", std::any::type_name::<T>())
    }
}
