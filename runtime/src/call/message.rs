//! Messages as wrappers see them: [`AnyMessage`] (any generated message, cloneable and
//! measurable) and [`Payload`] (one message or a stream of them).

use std::any::Any;
use std::fmt;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use futures_util::{Stream, StreamExt};
use tonic::Status;
use tonic::codec::EncodeBuf;

/// A boxed, sendable stream of erased messages.
pub type AnyMessageStream =
    Pin<Box<dyn Stream<Item = Result<AnyMessage, Status>> + Send + 'static>>;

/// A message of any generated type, erased so that one wrapper handles every call alike.
///
/// It can be cloned (a retry re-sends it), measured ([`AnyMessage::encoded_len`]) and turned
/// back into its type ([`AnyMessage::downcast`]).
pub struct AnyMessage(Box<dyn Erased>);

/// What [`AnyMessage`] needs of a message; implemented for every prost message.
trait Erased: Send + Sync + 'static {
    fn clone_box(&self) -> Box<dyn Erased>;
    fn encoded_len(&self) -> usize;
    fn encode_grpc(&self, buf: &mut EncodeBuf<'_>);
    fn encode_to_vec(&self) -> Vec<u8>;
    fn type_name(&self) -> &'static str;
    fn as_any(&self) -> &dyn Any;
    fn into_any(self: Box<Self>) -> Box<dyn Any>;
}

impl<T: prost::Message + Clone + 'static> Erased for T {
    fn clone_box(&self) -> Box<dyn Erased> {
        Box::new(self.clone())
    }
    fn encoded_len(&self) -> usize {
        prost::Message::encoded_len(self)
    }
    fn encode_grpc(&self, buf: &mut EncodeBuf<'_>) {
        // An `EncodeBuf` grows as needed, so encoding cannot run out of space.
        prost::Message::encode_raw(self, buf);
    }
    fn encode_to_vec(&self) -> Vec<u8> {
        prost::Message::encode_to_vec(self)
    }
    fn type_name(&self) -> &'static str {
        std::any::type_name::<T>()
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
}

impl AnyMessage {
    /// Erases a message.
    pub fn new<T: prost::Message + Clone + 'static>(message: T) -> Self {
        Self(Box::new(message))
    }

    /// Its size on the wire, in bytes (without the gRPC frame header).
    pub fn encoded_len(&self) -> usize {
        self.0.encoded_len()
    }

    /// The Rust type name of the message, for errors and logs.
    pub fn type_name(&self) -> &'static str {
        self.0.type_name()
    }

    /// The message, if it is a `T`.
    pub fn downcast_ref<T: 'static>(&self) -> Option<&T> {
        self.0.as_any().downcast_ref()
    }

    /// The message as a `T`, or itself back if it is something else.
    pub fn downcast<T: 'static>(self) -> Result<T, Self> {
        if self.0.as_any().is::<T>() {
            match self.0.into_any().downcast::<T>() {
                Ok(message) => Ok(*message),
                Err(_) => unreachable!("type checked above"),
            }
        } else {
            Err(self)
        }
    }

    /// The message as a `T`, or an INTERNAL status naming both types.
    pub fn into_typed<T: 'static>(self) -> Result<T, Status> {
        self.downcast::<T>().map_err(|other| {
            Status::internal(format!(
                "expected a {} message but a wrapper passed a {}",
                std::any::type_name::<T>(),
                other.type_name()
            ))
        })
    }

    /// The message's protobuf encoding.
    pub fn encode_to_vec(&self) -> Vec<u8> {
        self.0.encode_to_vec()
    }

    /// Writes the message into a gRPC frame being built.
    pub(crate) fn encode_grpc(&self, buf: &mut EncodeBuf<'_>) {
        self.0.encode_grpc(buf)
    }
}

impl Clone for AnyMessage {
    fn clone(&self) -> Self {
        Self(self.0.clone_box())
    }
}

impl fmt::Debug for AnyMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AnyMessage")
            .field("type", &self.type_name())
            .field("encoded_len", &self.encoded_len())
            .finish()
    }
}

/// What a call carries each way: one message, or a stream of them.
pub enum Payload {
    /// A single message (the unary side of a call, or a pub/sub message).
    Message(AnyMessage),
    /// A stream of messages (the streaming side of a call).
    Stream(AnyMessageStream),
}

impl Payload {
    /// Erases a typed message.
    pub fn message<T: prost::Message + Clone + 'static>(message: T) -> Self {
        Payload::Message(AnyMessage::new(message))
    }

    /// Erases a typed stream.
    pub fn stream<T, S>(stream: S) -> Self
    where
        T: prost::Message + Clone + 'static,
        S: Stream<Item = Result<T, Status>> + Send + 'static,
    {
        Payload::Stream(Box::pin(stream.map(|item| item.map(AnyMessage::new))))
    }

    /// The single message as `T`, or an INTERNAL status if it is something else.
    pub fn into_message<T: 'static>(self) -> Result<T, Status> {
        match self {
            Payload::Message(m) => m.into_typed(),
            Payload::Stream(_) => Err(Status::internal(format!(
                "expected one {} but got a stream",
                std::any::type_name::<T>()
            ))),
        }
    }

    /// The stream, or an INTERNAL status if this is a single message.
    pub fn into_stream(self) -> Result<AnyMessageStream, Status> {
        match self {
            Payload::Stream(s) => Ok(s),
            Payload::Message(m) => Err(Status::internal(format!(
                "expected a stream but got one {}",
                m.type_name()
            ))),
        }
    }

    /// The single message, if this is one.
    pub fn as_message(&self) -> Option<&AnyMessage> {
        match self {
            Payload::Message(m) => Some(m),
            Payload::Stream(_) => None,
        }
    }

    /// A copy, if this is a message: a stream can be consumed only once.
    pub fn try_clone(&self) -> Option<Self> {
        self.as_message().cloned().map(Payload::Message)
    }

    /// Whether this is a stream.
    pub fn is_stream(&self) -> bool {
        matches!(self, Payload::Stream(_))
    }

    /// Calls `done` once the payload is finished with: at once for a message; for a stream,
    /// when it ends, fails, or is dropped before its end. This is how a wrapper times or
    /// counts a whole stream rather than its opening.
    pub fn on_end(self, done: impl FnOnce(StreamEnd) + Send + 'static) -> Self {
        match self {
            Payload::Message(m) => {
                done(StreamEnd::Finished);
                Payload::Message(m)
            }
            Payload::Stream(inner) => Payload::Stream(Box::pin(EndWatch {
                inner,
                done: Some(Box::new(done)),
            })),
        }
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Payload::Message(m) => f.debug_tuple("Message").field(m).finish(),
            Payload::Stream(_) => f.write_str("Stream"),
        }
    }
}

/// How a stream watched with [`Payload::on_end`] finished.
#[derive(Debug)]
pub enum StreamEnd<'a> {
    /// It ended normally (or was a single message).
    Finished,
    /// It ended with this error.
    Failed(&'a Status),
    /// It was dropped before its end (the receiver hung up or was cancelled).
    Dropped,
}

type Done = Box<dyn for<'a> FnOnce(StreamEnd<'a>) + Send>;

/// A stream that reports how it ended.
struct EndWatch {
    inner: AnyMessageStream,
    done: Option<Done>,
}

impl Stream for EndWatch {
    type Item = Result<AnyMessage, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        let item = self.inner.as_mut().poll_next(cx);
        let end = match &item {
            Poll::Ready(None) => Some(StreamEnd::Finished),
            Poll::Ready(Some(Err(status))) => Some(StreamEnd::Failed(status)),
            _ => None,
        };
        if let Some(end) = end
            && let Some(done) = self.done.take()
        {
            done(end);
        }
        item
    }
}

impl Drop for EndWatch {
    fn drop(&mut self) {
        if let Some(done) = self.done.take() {
            done(StreamEnd::Dropped);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, PartialEq, prost::Message)]
    struct Ping {
        #[prost(string, tag = "1")]
        text: String,
    }

    #[test]
    fn a_message_clones_measures_and_downcasts() {
        let m = AnyMessage::new(Ping { text: "hey".into() });
        assert_eq!(m.encoded_len(), 5);
        let copy = m.clone();
        assert_eq!(
            copy.downcast_ref::<Ping>().map(|p| p.text.as_str()),
            Some("hey")
        );
        let wrong = m.into_typed::<String>().unwrap_err();
        assert!(wrong.message().contains("Ping"), "{}", wrong.message());
        assert_eq!(copy.downcast::<Ping>().unwrap().text, "hey");
    }

    #[tokio::test]
    async fn on_end_reports_finished_failed_and_dropped_streams() {
        use std::sync::{Arc, Mutex};
        let seen = Arc::new(Mutex::new(Vec::new()));
        let watch = |items: Vec<Result<Ping, Status>>| {
            let seen = seen.clone();
            Payload::stream(futures_util::stream::iter(items)).on_end(move |end| {
                seen.lock()
                    .unwrap()
                    .push(format!("{end:?}").split('(').next().unwrap().to_owned())
            })
        };
        let mut ok = watch(vec![Ok(Ping::default())]).into_stream().unwrap();
        while ok.next().await.is_some() {}
        let mut failed = watch(vec![Err(Status::internal("x"))])
            .into_stream()
            .unwrap();
        let _ = failed.next().await;
        drop(watch(vec![Ok(Ping::default())]));
        assert_eq!(*seen.lock().unwrap(), ["Finished", "Failed", "Dropped"]);
    }
}
