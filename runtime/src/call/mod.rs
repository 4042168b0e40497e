//! What every operation shares, RPC or message, client or server: the [`Context`], erased
//! messages ([`AnyMessage`], [`Payload`]), and one operation as wrappers see it ([`Call`]
//! in, [`Reply`] out), and the typed message streams of handlers and callers. Nothing here
//! imports the rest of the crate.

mod causes;
mod codec;
mod context;
pub(crate) mod deadline;
mod ending;
mod message;
mod method;
mod node;
mod span;
mod stream;
mod target;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tonic::metadata::MetadataMap;

pub(crate) use causes::causes;
pub(crate) use codec::{Decode, ErasedCodec, decode};
pub(crate) use context::Deadline;
pub use context::{Context, Messaging, MessagingKind, Operation, RoutingKey};
pub(crate) use ending::{Ended, Ending, Watch};
pub use message::{AnyMessage, AnyMessageStream, Payload, StreamEnd};
pub use method::{Method, MethodKind};
pub use node::Node;
pub use span::ChildSpan;
pub(crate) use span::SpanSource;
pub use stream::{MessageStream, ResponseStream, stream_channel, stream_iter};
#[allow(unused_imports)] // read only by the backends behind features
pub(crate) use target::address_list;
pub use target::{NetAddress, Target};

/// A boxed, sendable future.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// One operation as wrappers see it: its context and what it sends.
#[derive(Debug)]
pub struct Call {
    /// Operation, metadata, deadline, trace context.
    pub ctx: Context,
    /// The request message or stream (the message, for pub/sub).
    pub payload: Payload,
}

impl Call {
    /// A call of `ctx` carrying `payload`.
    pub fn new(ctx: Context, payload: Payload) -> Self {
        Self { ctx, payload }
    }

    /// A copy to send again (a retry), or `None` when the payload is a stream.
    pub fn try_clone(&self) -> Option<Self> {
        Some(Self {
            ctx: self.ctx.clone(),
            payload: self.payload.try_clone()?,
        })
    }
}

/// The answer to a [`Call`]: reply metadata (response headers and, for unary calls,
/// trailers) and the reply message or stream.
#[derive(Debug)]
pub struct Reply {
    /// Response headers (and trailers of a unary call) on the client; headers to send on
    /// the server.
    pub metadata: MetadataMap,
    /// The response message or stream (an empty message for a publish).
    pub payload: Payload,
    node: Option<Arc<Node>>,
}

impl Reply {
    /// A reply carrying `payload`, with no metadata.
    pub fn new(payload: Payload) -> Self {
        Self {
            metadata: MetadataMap::new(),
            payload,
            node: None,
        }
    }

    /// The node that answered, on the client, when the call went through a registry.
    pub fn node(&self) -> Option<&Arc<Node>> {
        self.node.as_ref()
    }

    pub(crate) fn set_node(&mut self, node: Option<Arc<Node>>) {
        self.node = node;
    }
}
