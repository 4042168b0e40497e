//! Pub/sub: the [`Broker`] trait, the in-memory default, and the typed [`Publisher`] and
//! subscriptions that run through wrapper chains like calls do (a PRODUCER span per
//! publish, a CONSUMER span per message processed).

mod memory;
#[cfg(feature = "nats")]
mod nats;
#[cfg(feature = "rabbitmq")]
mod rabbitmq;
mod subscriber;

use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::Stream;
use tonic::Status;
use tonic::metadata::MetadataMap;

pub use memory::MemoryBroker;
#[cfg(feature = "nats")]
pub use nats::{JetStreamConfig, NatsBroker};
#[cfg(feature = "rabbitmq")]
pub use rabbitmq::RabbitMqBroker;
pub use subscriber::{MessageHandler, Subscriber, SubscriberStats};

use crate::call::{AnyMessage, BoxFuture, Call, Context, Messaging, Payload, Reply};
use crate::wrapper::{Chain, Terminal, Wrappers};

/// Why a broker operation failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// The broker could not be reached, did not answer in time, or failed the operation:
    /// worth trying again later.
    #[error("broker unavailable: {0}")]
    Unavailable(String),
    /// The message cannot be carried as it is (a header the backend cannot encode, a
    /// message over the backend's size limit, a topic outside the streams…): trying again
    /// will not help.
    #[error("message refused: {0}")]
    Refused(String),
}

impl From<BrokerError> for Status {
    fn from(error: BrokerError) -> Self {
        match error {
            BrokerError::Unavailable(m) => Status::unavailable(m),
            BrokerError::Refused(m) => Status::invalid_argument(m),
        }
    }
}

/// One message as a broker carries it.
#[derive(Debug, Clone, Default)]
pub struct Message {
    /// The topic (subject, routing key) it is published to.
    pub topic: String,
    /// Headers: trace context, and whatever wrappers add.
    pub headers: MetadataMap,
    /// The encoded message.
    pub body: Bytes,
    /// The broker's id of the message, when it gives one.
    pub id: Option<String>,
}

/// How a processed message is settled with the broker.
pub trait Settle: Send + 'static {
    /// The message was handled: the broker may forget it.
    fn ack(self: Box<Self>) -> BoxFuture<Result<(), BrokerError>>;
    /// The message was not handled: a broker that redelivers sends it again (or to its
    /// dead-letter path once it has been delivered too often); others drop it.
    fn nack(self: Box<Self>) -> BoxFuture<Result<(), BrokerError>>;
    /// The message can never be handled (it does not decode): a broker with a dead-letter
    /// path sends it there at once; by default, the same as [`Settle::nack`].
    fn reject(self: Box<Self>) -> BoxFuture<Result<(), BrokerError>> {
        self.nack()
    }
}

/// A message received from a subscription, with the means to settle it.
pub struct Delivery {
    /// The message.
    pub message: Message,
    /// How many times the broker has delivered it, this time included (1 if unknown).
    pub attempt: u32,
    /// Settles the message; `None` for brokers with nothing to settle (at most once).
    pub settle: Option<Box<dyn Settle>>,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("message", &self.message)
            .field("attempt", &self.attempt)
            .finish_non_exhaustive()
    }
}

/// The messages of one subscription, until it is dropped.
pub type Deliveries = Pin<Box<dyn Stream<Item = Delivery> + Send + 'static>>;

/// Where messages are published and subscribed to.
pub trait Broker: Send + Sync + 'static {
    /// The `messaging.system` name of the backend (`memory`, `nats`, `rabbitmq`).
    fn system(&self) -> &'static str;

    /// Publishes `message`; done when the broker has taken it (for a durable backend, when
    /// it is stored).
    fn publish(&self, message: Message) -> BoxFuture<Result<(), BrokerError>>;

    /// Subscribes to `topic`. Subscriptions in the same `group` share the messages (each
    /// goes to one of them); every group, and every subscription without one, gets every
    /// message.
    fn subscribe(
        &self,
        topic: &str,
        group: Option<&str>,
    ) -> BoxFuture<Result<Deliveries, BrokerError>>;
}

/// A shared broker is a broker.
impl<B: Broker + ?Sized> Broker for Arc<B> {
    fn system(&self) -> &'static str {
        (**self).system()
    }

    fn publish(&self, message: Message) -> BoxFuture<Result<(), BrokerError>> {
        (**self).publish(message)
    }

    fn subscribe(
        &self,
        topic: &str,
        group: Option<&str>,
    ) -> BoxFuture<Result<Deliveries, BrokerError>> {
        (**self).subscribe(topic, group)
    }
}

/// Publishes typed messages to one topic through the publish wrappers (tracing first:
/// a `send <topic>` PRODUCER span, W3C context in the headers).
pub struct Publisher<M> {
    topic: Arc<str>,
    system: &'static str,
    chain: Arc<Chain>,
    _message: PhantomData<fn(M)>,
}

impl<M> Clone for Publisher<M> {
    fn clone(&self) -> Self {
        Self {
            topic: self.topic.clone(),
            system: self.system,
            chain: self.chain.clone(),
            _message: PhantomData,
        }
    }
}

impl<M> std::fmt::Debug for Publisher<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("topic", &self.topic)
            .field("message", &std::any::type_name::<M>())
            .finish()
    }
}

impl<M: prost::Message + Clone + 'static> Publisher<M> {
    /// A publisher of `M` to `topic` on `broker`, behind `wrappers` (outermost first).
    pub(crate) fn new(broker: Arc<dyn Broker>, topic: &str, wrappers: Wrappers) -> Self {
        Self {
            topic: topic.into(),
            system: broker.system(),
            chain: Chain::new(wrappers, Publish(broker)),
            _message: PhantomData,
        }
    }

    /// The topic published to.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Publishes `message`, in the current trace (the span of the call being served, if
    /// any).
    pub async fn publish(&self, message: &M) -> Result<(), Status> {
        self.publish_with(message, MetadataMap::new()).await
    }

    /// Publishes `message` with extra headers.
    pub async fn publish_with(&self, message: &M, headers: MetadataMap) -> Result<(), Status> {
        let mut ctx = Context::new(Messaging::publish(self.topic.clone(), self.system), headers);
        ctx.set_otel(opentelemetry::Context::current());
        let payload = Payload::Message(AnyMessage::new(message.clone()));
        self.chain.run(Call::new(ctx, payload)).await.map(drop)
    }
}

/// The terminal step of a publish chain: encodes the message and hands it to the broker.
struct Publish(Arc<dyn Broker>);

impl Terminal for Publish {
    fn call(&self, call: Call) -> BoxFuture<Result<Reply, Status>> {
        let Call { ctx, payload } = call;
        let Payload::Message(body) = payload else {
            return Box::pin(std::future::ready(Err(Status::internal(
                "a publish carries one message, not a stream",
            ))));
        };
        let topic = ctx
            .messaging()
            .map(|m| m.topic.to_string())
            .unwrap_or_default();
        let message = Message {
            topic,
            headers: ctx.into_metadata(),
            body: body.encode_to_vec().into(),
            id: None,
        };
        let published = self.0.publish(message);
        Box::pin(async move {
            published.await?;
            Ok(Reply::new(Payload::message(())))
        })
    }
}
