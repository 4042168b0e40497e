//! [`Subscriber`]: a typed handler of one topic's messages, run behind the subscriber
//! wrappers (tracing first: a `process <topic>` CONSUMER span, child of and linked to the
//! producer's), settling each message with the broker by how the handler did.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::StreamExt;
use opentelemetry::context::FutureExt as _;
use opentelemetry::trace::TraceContextExt as _;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tonic::Status;

use super::{Broker, BrokerError, Delivery};
use crate::call::{AnyMessage, BoxFuture, Call, Context, Messaging, Payload, Reply};
use crate::wrapper::{Chain, Terminal, Wrappers};

/// How many messages one subscription handles at once unless told otherwise.
const DEFAULT_CONCURRENCY: usize = 16;

/// Handles messages of type `M`: any `Fn(Context, M) -> impl Future<Output = Result<(),
/// Status>>`. An error leaves the message unacknowledged (a redelivering broker sends it
/// again).
pub trait MessageHandler<M>: Send + Sync + 'static {
    /// Handles one message.
    fn handle(&self, ctx: Context, message: M) -> BoxFuture<Result<(), Status>>;
}

impl<M, F, Fut> MessageHandler<M> for F
where
    F: Fn(Context, M) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), Status>> + Send + 'static,
{
    fn handle(&self, ctx: Context, message: M) -> BoxFuture<Result<(), Status>> {
        Box::pin(self(ctx, message))
    }
}

/// Decodes a message body into the subscriber's type.
type Decode = fn(&[u8]) -> Result<AnyMessage, prost::DecodeError>;

fn decode<M: prost::Message + Default + Clone + 'static>(
    body: &[u8],
) -> Result<AnyMessage, prost::DecodeError> {
    M::decode(body).map(AnyMessage::new)
}

/// What a subscription has done so far.
#[derive(Debug, Clone, Default)]
pub struct SubscriberStats(Arc<Counters>);

#[derive(Debug, Default)]
struct Counters {
    handled: AtomicU64,
    /// Failures by status code.
    failed: [AtomicU64; 17],
    undecodable: AtomicU64,
}

impl SubscriberStats {
    /// Messages the handler handled (and that were acknowledged).
    pub fn handled(&self) -> u64 {
        self.0.handled.load(Ordering::Relaxed)
    }

    /// Messages the handler (or a wrapper) failed.
    pub fn failed(&self) -> u64 {
        self.failures().map(|(_, count)| count).sum()
    }

    /// Failed messages by the status code they failed with (codes with none left out).
    pub fn failures(&self) -> impl Iterator<Item = (tonic::Code, u64)> + '_ {
        self.0
            .failed
            .iter()
            .enumerate()
            .filter_map(|(code, count)| {
                let count = count.load(Ordering::Relaxed);
                (count > 0).then(|| (tonic::Code::from_i32(code as i32), count))
            })
    }

    /// Messages that did not decode as the subscriber's type (rejected: a broker with a
    /// dead-letter path sends them there).
    pub fn undecodable(&self) -> u64 {
        self.0.undecodable.load(Ordering::Relaxed)
    }
}

/// A typed subscription to one topic, to register on a [`crate::Service`] before it starts.
pub struct Subscriber {
    topic: Arc<str>,
    group: Option<Arc<str>>,
    decode: Decode,
    handler: Arc<dyn Terminal>,
    concurrency: usize,
    stats: SubscriberStats,
}

impl std::fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscriber")
            .field("topic", &self.topic)
            .field("group", &self.group)
            .finish_non_exhaustive()
    }
}

impl Subscriber {
    /// Handles the `M` messages of `topic` with `handler`.
    pub fn new<M, H>(topic: &str, handler: H) -> Self
    where
        M: prost::Message + Default + Clone + 'static,
        H: MessageHandler<M>,
    {
        Self {
            topic: topic.into(),
            group: None,
            decode: decode::<M>,
            handler: Arc::new(HandlerStep::<M, H> {
                handler,
                _message: std::marker::PhantomData,
            }),
            concurrency: DEFAULT_CONCURRENCY,
            stats: SubscriberStats::default(),
        }
    }

    /// Shares the messages with the other subscribers of `group` (competing consumers).
    /// A [`crate::Service`] puts its subscribers in a group named after itself unless told
    /// otherwise, so its instances share the work while other services each get every
    /// message.
    pub fn group(mut self, group: &str) -> Self {
        self.group = Some(group.into());
        self
    }

    /// How many messages are handled at once (default 16).
    pub fn concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency.max(1);
        self
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// What this subscription's processing is, on a broker of `system`.
    pub(crate) fn messaging(&self, system: &'static str) -> Messaging {
        let messaging = Messaging::process(self.topic.clone(), system);
        match &self.group {
            Some(group) => messaging.group(group.clone()),
            None => messaging,
        }
    }

    /// The counters of this subscription.
    pub fn stats(&self) -> SubscriberStats {
        self.stats.clone()
    }

    /// The group, set to `group` unless one was chosen.
    pub(crate) fn default_group(mut self, group: &str) -> Self {
        self.group.get_or_insert_with(|| group.into());
        self
    }

    /// Subscribes on `broker` and handles messages behind `wrappers` until `stop` turns
    /// true; then handles what it already took and returns.
    pub(crate) async fn start(
        self,
        broker: Arc<dyn Broker>,
        wrappers: Wrappers,
        stop: watch::Receiver<bool>,
    ) -> Result<tokio::task::JoinHandle<()>, BrokerError> {
        let deliveries = broker.subscribe(&self.topic, self.group.as_deref()).await?;
        let chain = Chain::new(wrappers, self.handler.clone());
        let system = broker.system();
        Ok(tokio::spawn(self.consume(deliveries, chain, system, stop)))
    }

    async fn consume(
        self,
        mut deliveries: super::Deliveries,
        chain: Arc<Chain>,
        system: &'static str,
        mut stop: watch::Receiver<bool>,
    ) {
        let this = Arc::new(self);
        let mut running = JoinSet::new();
        loop {
            while running.len() >= this.concurrency {
                let _ = running.join_next().await;
            }
            let delivery = tokio::select! {
                biased;
                _ = stop.wait_for(|stopped| *stopped) => break,
                delivery = deliveries.next() => match delivery {
                    Some(delivery) => delivery,
                    None => {
                        tracing::warn!(topic = %this.topic, "the broker ended the subscription");
                        break;
                    }
                },
            };
            running.spawn(this.clone().process(delivery, chain.clone(), system));
        }
        // Stop taking messages, finish the ones taken; unsettled ones stay with the broker.
        drop(deliveries);
        while running.join_next().await.is_some() {}
    }

    /// Handles one delivery and settles it.
    async fn process(self: Arc<Self>, delivery: Delivery, chain: Arc<Chain>, system: &'static str) {
        let Delivery {
            message,
            settle,
            attempt,
        } = delivery;
        let body = match (self.decode)(&message.body) {
            Ok(body) => body,
            Err(error) => {
                self.stats.0.undecodable.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(topic = %self.topic, %error, "a message did not decode; rejected");
                if let Some(settle) = settle {
                    log_settle_error(settle.reject().await, &self.topic);
                }
                return;
            }
        };
        let mut messaging =
            Messaging::process(self.topic.clone(), system).delivery_attempt(attempt);
        messaging.group = self.group.clone();
        messaging.message_id = message.id.map(Into::into);
        let ctx = Context::new(messaging, message.headers);
        let outcome = chain.run(Call::new(ctx, Payload::Message(body))).await;
        let settled = match (outcome, settle) {
            (Ok(_), settle) => {
                self.stats.0.handled.fetch_add(1, Ordering::Relaxed);
                match settle {
                    Some(settle) => settle.ack().await,
                    None => Ok(()),
                }
            }
            (Err(status), settle) => {
                self.stats.0.failed[status.code() as usize].fetch_add(1, Ordering::Relaxed);
                tracing::debug!(topic = %self.topic, %status, "a message handler failed");
                match settle {
                    Some(settle) => settle.nack().await,
                    None => Ok(()),
                }
            }
        };
        log_settle_error(settled, &self.topic);
    }
}

fn log_settle_error(result: Result<(), BrokerError>, topic: &str) {
    if let Err(error) = result {
        tracing::warn!(%topic, %error, "settling a message with the broker failed");
    }
}

/// The terminal step of a processing chain: the typed handler, with the message's context
/// attached so that what it does (calls, publishes, spans) nests under the CONSUMER span.
struct HandlerStep<M, H> {
    handler: H,
    _message: std::marker::PhantomData<fn(M)>,
}

impl<M, H> Terminal for HandlerStep<M, H>
where
    M: prost::Message + Clone + 'static,
    H: MessageHandler<M>,
{
    fn call(&self, call: Call) -> BoxFuture<Result<Reply, Status>> {
        let Call { ctx, payload } = call;
        let message = match payload.into_message::<M>() {
            Ok(message) => message,
            Err(status) => return Box::pin(std::future::ready(Err(status))),
        };
        let task_cx = ctx.otel().has_active_span().then(|| ctx.task_context());
        let handled = self.handler.handle(ctx, message);
        let answer = async move {
            handled.await?;
            Ok(Reply::new(Payload::message(())))
        };
        match task_cx {
            Some(cx) => Box::pin(answer.with_context(cx)),
            None => Box::pin(answer),
        }
    }
}
