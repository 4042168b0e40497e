//! Wrappers: ordered middleware around handlers, calls, publishes and message processing.
//!
//! A wrapper sees one operation as a [`Call`] (its [`Context`](crate::Context) and
//! [`Payload`](crate::call::Payload)), may act on it, and passes it on with [`Next::run`].
//! The first wrapper registered is the outermost; tracing is itself a wrapper, registered
//! first. [`Next`] is `Clone`, so a wrapper may run the rest of the chain more than once
//! (a retry). Write one in a few lines with [`from_fn`]:
//!
//! ```
//! use micro_otel::wrapper::{self, Call, Next};
//!
//! let require_auth = wrapper::from_fn(|call: Call, next: Next| async move {
//!     if call.ctx.metadata().get("authorization").is_none() {
//!         return Err(micro_otel::Status::unauthenticated("missing authorization"));
//!     }
//!     next.run(call).await
//! });
//! # let _ = require_auth;
//! ```
//!
//! Tower layers work both ways: [`from_layer`] makes a wrapper of a layer, [`WrapperLayer`]
//! a layer of a wrapper.

mod tower;

use std::future::Future;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use tonic::Status;

pub(crate) use self::tower::HttpStack;
pub(crate) use self::tower::status_of;
pub use self::tower::{BoxHttpService, HttpLayer, RunNext, WrapperLayer, from_layer};
pub use crate::call::{BoxFuture, Call, Reply};

/// Middleware around a handler, a call, a publish or a message processing.
pub trait Wrapper: Send + Sync + 'static {
    /// Handles `call`, usually by passing it on with `next.run(call)`.
    fn call(&self, call: Call, next: Next) -> BoxFuture<Result<Reply, Status>>;
}

/// The innermost step of a chain: the handler on the server, the transport on the client.
pub(crate) trait Terminal: Send + Sync + 'static {
    fn call(&self, call: Call) -> BoxFuture<Result<Reply, Status>>;
}

/// An ordered list of wrappers; the first is the outermost.
#[derive(Clone, Default)]
pub(crate) struct Wrappers(Arc<[Arc<dyn Wrapper>]>);

impl Wrappers {
    /// A list of the given wrappers, outermost first.
    pub(crate) fn new(wrappers: Vec<Arc<dyn Wrapper>>) -> Self {
        Self(wrappers.into())
    }

    /// Number of wrappers.
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are no wrappers.
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Wrappers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Wrappers({})", self.0.len())
    }
}

/// Wrappers in front of their terminal step: built once per route or client.
pub(crate) struct Chain {
    wrappers: Wrappers,
    terminal: Box<dyn Terminal>,
}

impl Chain {
    pub(crate) fn new(wrappers: Wrappers, terminal: impl Terminal) -> Arc<Self> {
        Arc::new(Self {
            wrappers,
            terminal: Box::new(terminal),
        })
    }

    /// Whether the chain has no wrappers: only its terminal step.
    pub(crate) fn is_bare(&self) -> bool {
        self.wrappers.is_empty()
    }

    /// Runs `call` through every wrapper and the terminal step.
    pub(crate) fn run(self: &Arc<Self>, call: Call) -> BoxFuture<Result<Reply, Status>> {
        if self.wrappers.is_empty() {
            return self.terminal.call(call);
        }
        Next::first(self.clone()).run(call)
    }
}

/// The rest of the chain after the current wrapper. Cloning it is cheap; each clone can
/// run the rest of the chain again.
#[derive(Clone)]
pub struct Next {
    chain: Arc<Chain>,
    index: usize,
}

impl Next {
    /// The whole of `chain`: its first wrapper, then the rest.
    pub(crate) fn first(chain: Arc<Chain>) -> Self {
        Self { chain, index: 0 }
    }

    /// Whether wrappers remain before the terminal step (the handler, or node selection and
    /// the transport).
    pub(crate) fn has_wrappers(&self) -> bool {
        self.index < self.chain.wrappers.len()
    }

    /// Runs the remaining wrappers and then the handler or transport.
    pub fn run(self, call: Call) -> BoxFuture<Result<Reply, Status>> {
        let Next { chain, index } = self;
        match chain.wrappers.0.get(index) {
            Some(wrapper) => wrapper.call(
                call,
                Next {
                    chain: chain.clone(),
                    index: index + 1,
                },
            ),
            None => chain.terminal.call(call),
        }
    }
}

impl std::fmt::Debug for Next {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Next({} wrappers left)",
            self.chain.wrappers.len() - self.index
        )
    }
}

/// `Next` as a tower service, so tower middleware can sit in front of it.
impl ::tower::Service<Call> for Next {
    type Response = Reply;
    type Error = Status;
    type Future = BoxFuture<Result<Reply, Status>>;

    fn poll_ready(&mut self, _cx: &mut TaskContext<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: Call) -> Self::Future {
        self.clone().run(call)
    }
}

/// A wrapper made from an async closure `(Call, Next) -> Result<Reply, Status>`.
pub fn from_fn<F, Fut>(f: F) -> Arc<dyn Wrapper>
where
    F: Fn(Call, Next) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Reply, Status>> + Send + 'static,
{
    Arc::new(FnWrapper(f))
}

struct FnWrapper<F>(F);

impl<F, Fut> Wrapper for FnWrapper<F>
where
    F: Fn(Call, Next) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Reply, Status>> + Send + 'static,
{
    fn call(&self, call: Call, next: Next) -> BoxFuture<Result<Reply, Status>> {
        Box::pin((self.0)(call, next))
    }
}

/// A shared terminal step is a terminal step.
impl<T: Terminal + ?Sized> Terminal for Arc<T> {
    fn call(&self, call: Call) -> BoxFuture<Result<Reply, Status>> {
        (**self).call(call)
    }
}
