//! [`RabbitMqBroker`]: pub/sub through RabbitMQ (AMQP 0-9-1, with `lapin`).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use lapin::message::Delivery as AmqpDelivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    BasicRejectOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{
    Acker, BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind,
};
use tonic::metadata::{
    AsciiMetadataKey, AsciiMetadataValue, BinaryMetadataKey, BinaryMetadataValue, KeyAndValueRef,
    MetadataMap,
};

use super::{Broker, BrokerError, Deliveries, Delivery, Message, Settle};
use crate::call::{BoxFuture, address_list};

/// The exchange messages are published to unless told otherwise.
const DEFAULT_EXCHANGE: &str = "micro";

/// How many unsettled messages one subscription may hold unless told otherwise.
const DEFAULT_PREFETCH: u16 = 64;

/// How many times a message is delivered before it is dead-lettered, unless told otherwise.
const DEFAULT_MAX_DELIVERIES: u32 = 5;

/// How long one request to RabbitMQ may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The header counting deliveries on queues that do not count them (without a group).
const ATTEMPT_HEADER: &str = "x-micro-attempt";

/// The header a quorum queue counts earlier deliveries in.
const DELIVERY_COUNT_HEADER: &str = "x-delivery-count";

/// A broker on RabbitMQ: the exchange and queue layout, settling, dead letters and headers
/// are below.
///
/// Clones share the connection.
///
/// # Layout
///
/// - One durable **topic exchange** (`micro` unless [`with_exchange`](RabbitMqBroker::with_exchange)
///   says otherwise). A message is published to it with its topic as the routing key, as a
///   persistent message (delivery mode 2), with a `message_id`, and its headers as the
///   AMQP headers table; the publish is done when RabbitMQ **confirms** it (publisher
///   confirms), so a published message is stored in every queue bound to the topic.
/// - A subscription **with a group** consumes the durable **quorum queue** `<group>.<topic>`,
///   bound to the exchange with the topic as binding key (so `*` and `#` in a topic are
///   wildcards, as in any topic exchange). Every instance of the group consumes the same
///   queue: competing consumers, each message to one of them; every group has its own
///   queue, so every group gets every message. The queue outlives its consumers: messages
///   published while no instance runs wait for one.
/// - A subscription **without a group** consumes an exclusive, auto-deleted queue of its
///   own (server-named, a classic queue), gone with the subscription: it gets the messages
///   published while it exists.
///
/// # Settling
///
/// Acknowledgements are manual; each subscription has its own channel with a prefetch
/// (`basic.qos`, [`with_prefetch`](RabbitMqBroker::with_prefetch), default 64) bounding the
/// messages handed out and not yet settled. Dropping the subscription closes its channel:
/// RabbitMQ requeues whatever it had not settled, for another instance (or a later one).
///
/// - `ack`: `basic.ack`.
/// - `nack` on a group queue: `basic.nack` with requeue; the quorum queue counts the
///   deliveries (`x-delivery-count`) and, past
///   [`with_max_deliveries`](RabbitMqBroker::with_max_deliveries) (default 5; the queue's
///   `x-delivery-limit` is one less), dead-letters the message instead of delivering it
///   again. A delivery's `attempt` is `x-delivery-count + 1`.
/// - `nack` on a queue without a group (classic queues count nothing): the message is
///   published again to that queue with an `x-micro-attempt` header one higher, then the
///   original is acknowledged; past the maximum it is rejected and dropped (with a warning:
///   such a queue has no dead-letter queue). Its `attempt` is read from that header.
/// - `reject` (a message that does not decode): `basic.reject` without requeue, so it is
///   dead-lettered at once.
///
/// Dead letters go to a durable direct exchange (`<exchange>.dead-letter` unless
/// [`with_dead_letter_exchange`](RabbitMqBroker::with_dead_letter_exchange) says otherwise)
/// with the queue's name as routing key, which routes them to the durable queue
/// `<group>.<topic>.dead-letter`, declared with the group's queue. RabbitMQ records why in
/// the `x-death` header (`rejected`, `delivery_limit`).
///
/// Delivery is therefore **at least once** for groups (a message is stored before the
/// publish returns and removed only when acknowledged), and for a subscription without a
/// group, at least once while it exists.
///
/// # Headers
///
/// Each metadata entry becomes one AMQP header of the same name: an ASCII value as a
/// string (`traceparent` reaches a plain AMQP client as the W3C string), a binary (`-bin`)
/// value as a string of its raw bytes. A header AMQP cannot carry is refused at publish
/// time ([`BrokerError::Refused`]): a name over 255 bytes, a name given twice (a table
/// holds one value per name), or a name RabbitMQ or this broker uses for its own
/// bookkeeping (`x-delivery-count`, `x-death`, `x-first-death-*`, `x-last-death-*`,
/// `x-micro-attempt`). On receipt those bookkeeping headers are left out, integers and
/// booleans are turned into their text, and a header that is not valid metadata (name or
/// value) is skipped with a debug log.
///
/// # Connection
///
/// One AMQP connection per broker (clones share it), made on first use and made again by
/// the next operation after it is lost. Every request to RabbitMQ is given 5 s; a failure
/// is a [`BrokerError::Unavailable`] naming the server (without credentials) and the
/// operation. A subscription whose connection is lost ends (the runtime's subscriber logs
/// it); its queue, if it has a group, keeps the messages.
///
/// Only `amqp://` URIs: this build has no TLS backend.
#[derive(Clone)]
pub struct RabbitMqBroker {
    config: Arc<Config>,
    /// The connection and the publishing channel, made on first use.
    live: Arc<tokio::sync::Mutex<Option<Live>>>,
}

#[derive(Clone)]
struct Config {
    uri: String,
    /// The URI without credentials, for messages.
    named: String,
    exchange: String,
    dead_letter_exchange: Option<String>,
    prefetch: u16,
    max_deliveries: u32,
}

impl Config {
    fn dead_letter_exchange(&self) -> String {
        self.dead_letter_exchange
            .clone()
            .unwrap_or_else(|| format!("{}.dead-letter", self.exchange))
    }

    fn unavailable(&self, operation: &str, error: impl std::fmt::Display) -> BrokerError {
        BrokerError::Unavailable(format!("RabbitMQ at {}: {operation}: {error}", self.named))
    }

    /// Runs `request` within the time limit, naming `operation` if it fails.
    async fn request<T>(
        &self,
        operation: &str,
        request: impl Future<Output = lapin::Result<T>>,
    ) -> Result<T, BrokerError> {
        match tokio::time::timeout(REQUEST_TIMEOUT, request).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(self.unavailable(operation, error)),
            Err(_) => Err(self.unavailable(
                operation,
                format_args!("no answer within {REQUEST_TIMEOUT:?}"),
            )),
        }
    }
}

/// An open connection and its channel for publishing (in confirm mode).
#[derive(Clone)]
struct Live {
    connection: Arc<Connection>,
    publish: Channel,
}

impl std::fmt::Debug for RabbitMqBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitMqBroker")
            .field("server", &self.config.named)
            .field("exchange", &self.config.exchange)
            .finish_non_exhaustive()
    }
}

impl RabbitMqBroker {
    /// A broker on the RabbitMQ at `uri` (`amqp://user:password@host:port/vhost`; the
    /// default vhost `/` is `%2f`), connected and its exchanges declared. Fails with
    /// [`BrokerError::Unavailable`] if RabbitMQ cannot be reached.
    pub async fn connect(uri: &str) -> Result<Self, BrokerError> {
        let broker = Self::lazy(uri);
        broker.live().await?;
        Ok(broker)
    }

    /// The broker `MICRO_BROKER=rabbitmq` names: one server, the first address (an
    /// `amqp://` URI), else go-micro's default `amqp://guest:guest@127.0.0.1:5672/%2f`.
    pub(crate) fn from_addresses(addresses: &str) -> Result<Self, String> {
        let uri = address_list(addresses)
            .next()
            .unwrap_or("amqp://guest:guest@127.0.0.1:5672/%2f");
        Ok(Self::lazy(uri))
    }

    /// Like [`connect`](Self::connect), for code that cannot wait (configuration read when
    /// a service is built): the connection is made by the first operation, and until
    /// RabbitMQ answers (or if `uri` is malformed) operations fail with
    /// [`BrokerError::Unavailable`].
    pub fn lazy(uri: &str) -> Self {
        Self {
            config: Arc::new(Config {
                uri: uri.to_owned(),
                named: without_credentials(uri),
                exchange: DEFAULT_EXCHANGE.to_owned(),
                dead_letter_exchange: None,
                prefetch: DEFAULT_PREFETCH,
                max_deliveries: DEFAULT_MAX_DELIVERIES,
            }),
            live: Arc::default(),
        }
    }

    /// Publishes to and binds queues on the topic exchange `exchange` instead of `micro`.
    pub fn with_exchange(mut self, exchange: &str) -> Self {
        Arc::make_mut(&mut self.config).exchange = exchange.to_owned();
        self
    }

    /// Sends dead letters to `exchange` instead of `<exchange>.dead-letter`.
    pub fn with_dead_letter_exchange(mut self, exchange: &str) -> Self {
        Arc::make_mut(&mut self.config).dead_letter_exchange = Some(exchange.to_owned());
        self
    }

    /// How many messages one subscription may hold unsettled (default 64; at least 1).
    /// Keep it at or above the subscriber's concurrency.
    pub fn with_prefetch(mut self, prefetch: u16) -> Self {
        Arc::make_mut(&mut self.config).prefetch = prefetch.max(1);
        self
    }

    /// How many times a message is delivered before a failing one is dead-lettered
    /// (default 5; at least 1). A group's queue is declared with it: changing it for an
    /// existing queue makes RabbitMQ refuse the subscription (delete the queue first).
    pub fn with_max_deliveries(mut self, max_deliveries: u32) -> Self {
        Arc::make_mut(&mut self.config).max_deliveries = max_deliveries.max(1);
        self
    }

    /// The exchange messages are published to.
    pub fn exchange(&self) -> &str {
        &self.config.exchange
    }

    /// The exchange dead letters are sent to.
    pub fn dead_letter_exchange(&self) -> String {
        self.config.dead_letter_exchange()
    }

    /// The queue of `group`'s subscriptions to `topic`.
    pub fn queue_name(group: &str, topic: &str) -> String {
        format!("{group}.{topic}")
    }

    /// The queue receiving the dead letters of `group`'s subscriptions to `topic`.
    pub fn dead_letter_queue_name(group: &str, topic: &str) -> String {
        format!("{group}.{topic}.dead-letter")
    }

    /// The open connection and publishing channel, (re)made if there is none or it was
    /// lost.
    async fn live(&self) -> Result<Live, BrokerError> {
        let config = &self.config;
        let mut live = self.live.lock().await;
        if let Some(current) = live.as_ref() {
            if current.connection.status().connected() && current.publish.status().connected() {
                return Ok(current.clone());
            }
            if current.connection.status().connected() {
                // A publish error closed the channel; the connection is fine.
                let publish = publish_channel(config, &current.connection).await?;
                let renewed = Live {
                    connection: current.connection.clone(),
                    publish,
                };
                *live = Some(renewed.clone());
                return Ok(renewed);
            }
        }
        let connection = config
            .request(
                "connect",
                Connection::connect(&config.uri, ConnectionProperties::default()),
            )
            .await?;
        let publish = publish_channel(config, &connection).await?;
        for (exchange, kind) in [
            (config.exchange.clone(), ExchangeKind::Topic),
            (config.dead_letter_exchange(), ExchangeKind::Direct),
        ] {
            let name = short(&exchange, "exchange name")?;
            config
                .request(
                    &format!("declare exchange {exchange}"),
                    publish.exchange_declare(
                        name,
                        kind,
                        ExchangeDeclareOptions {
                            durable: true,
                            ..Default::default()
                        },
                        FieldTable::default(),
                    ),
                )
                .await?;
        }
        let made = Live {
            connection: Arc::new(connection),
            publish,
        };
        *live = Some(made.clone());
        Ok(made)
    }

    /// Publishes `body` with `properties` to `exchange` under `routing_key` and waits for
    /// RabbitMQ's confirm.
    async fn publish_confirmed(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<(), BrokerError> {
        let config = &self.config;
        let live = self.live().await?;
        let operation = format!("publish to {routing_key:?}");
        let confirm = config
            .request(
                &operation,
                live.publish.basic_publish(
                    short(exchange, "exchange name")?,
                    short(routing_key, "topic")?,
                    BasicPublishOptions::default(),
                    body,
                    properties,
                ),
            )
            .await?;
        match config.request(&operation, confirm).await? {
            Confirmation::Ack(_) | Confirmation::NotRequested => Ok(()),
            Confirmation::Nack(_) => {
                Err(config.unavailable(&operation, "RabbitMQ did not store it"))
            }
        }
    }

    /// Declares the queues of a subscription and binds them; the queue to consume.
    async fn declare(
        &self,
        channel: &Channel,
        topic: &str,
        group: Option<&str>,
    ) -> Result<ShortString, BrokerError> {
        let config = &self.config;
        let routing_key = short(topic, "topic")?;
        let exchange = short(&config.exchange, "exchange name")?;
        let queue = match group {
            Some(group) => {
                let name = Self::queue_name(group, topic);
                let queue = short(&name, "queue name")?;
                let dead_name = Self::dead_letter_queue_name(group, topic);
                let dead = short(&dead_name, "dead-letter queue name")?;
                let durable = QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                };
                config
                    .request(
                        &format!("declare queue {dead_name}"),
                        channel.queue_declare(dead.clone(), durable, FieldTable::default()),
                    )
                    .await?;
                config
                    .request(
                        &format!("bind queue {dead_name}"),
                        channel.queue_bind(
                            dead,
                            short(&config.dead_letter_exchange(), "exchange name")?,
                            queue.clone(),
                            QueueBindOptions::default(),
                            FieldTable::default(),
                        ),
                    )
                    .await?;
                let mut arguments = FieldTable::default();
                arguments.insert("x-queue-type".into(), long_string("quorum"));
                arguments.insert(
                    "x-delivery-limit".into(),
                    AMQPValue::LongLongInt(i64::from(config.max_deliveries) - 1),
                );
                arguments.insert(
                    "x-dead-letter-exchange".into(),
                    long_string(&config.dead_letter_exchange()),
                );
                arguments.insert("x-dead-letter-routing-key".into(), long_string(&name));
                config
                    .request(
                        &format!("declare queue {name}"),
                        channel.queue_declare(queue.clone(), durable, arguments),
                    )
                    .await?;
                queue
            }
            None => {
                let declared = config
                    .request(
                        &format!("declare a queue for {topic}"),
                        channel.queue_declare(
                            ShortString::default(),
                            QueueDeclareOptions {
                                exclusive: true,
                                auto_delete: true,
                                ..Default::default()
                            },
                            FieldTable::default(),
                        ),
                    )
                    .await?;
                declared.name().clone()
            }
        };
        config
            .request(
                &format!("bind queue {queue} to {topic}"),
                channel.queue_bind(
                    queue.clone(),
                    exchange,
                    routing_key,
                    QueueBindOptions::default(),
                    FieldTable::default(),
                ),
            )
            .await?;
        Ok(queue)
    }
}

/// A channel in confirm mode on `connection`.
async fn publish_channel(config: &Config, connection: &Connection) -> Result<Channel, BrokerError> {
    let channel = config
        .request("open a channel", connection.create_channel())
        .await?;
    config
        .request(
            "enable publisher confirms",
            channel.confirm_select(ConfirmSelectOptions::default()),
        )
        .await?;
    Ok(channel)
}

impl Broker for RabbitMqBroker {
    fn system(&self) -> &'static str {
        "rabbitmq"
    }

    fn publish(&self, message: Message) -> BoxFuture<Result<(), BrokerError>> {
        let this = self.clone();
        Box::pin(async move {
            let headers = table(&message.headers)?;
            let id = message.id.unwrap_or_else(new_message_id);
            let properties = BasicProperties::default()
                .with_delivery_mode(2)
                .with_message_id(short(&id, "message id")?)
                .with_headers(headers);
            let exchange = this.config.exchange.clone();
            this.publish_confirmed(&exchange, &message.topic, &message.body, properties)
                .await
        })
    }

    fn subscribe(
        &self,
        topic: &str,
        group: Option<&str>,
    ) -> BoxFuture<Result<Deliveries, BrokerError>> {
        let this = self.clone();
        let topic = topic.to_owned();
        let group = group.map(str::to_owned);
        Box::pin(async move {
            let config = this.config.clone();
            let live = this.live().await?;
            let channel = config
                .request("open a channel", live.connection.create_channel())
                .await?;
            config
                .request(
                    "set the prefetch",
                    channel.basic_qos(config.prefetch, BasicQosOptions::default()),
                )
                .await?;
            let queue = this.declare(&channel, &topic, group.as_deref()).await?;
            let consumer = config
                .request(
                    &format!("consume {queue}"),
                    channel.basic_consume(
                        queue.clone(),
                        ShortString::default(),
                        BasicConsumeOptions::default(),
                        FieldTable::default(),
                    ),
                )
                .await?;
            let counted = group.is_some();
            let deliveries = consumer
                // The channel lives as long as the stream: dropping the stream closes it
                // and RabbitMQ requeues what was not settled.
                .map(move |delivery| {
                    let _open = &channel;
                    delivery
                })
                .take_while(|delivery| {
                    if let Err(error) = delivery {
                        tracing::warn!(%error, "the RabbitMQ subscription ended");
                    }
                    std::future::ready(delivery.is_ok())
                })
                .filter_map(move |delivery| {
                    let delivery = delivery
                        .ok()
                        .map(|delivery| received(delivery, &this, &queue, counted));
                    std::future::ready(delivery)
                });
            let deliveries: Deliveries = Box::pin(deliveries);
            Ok(deliveries)
        })
    }
}

/// Our delivery of a message RabbitMQ delivered from `queue`.
fn received(
    delivery: AmqpDelivery,
    broker: &RabbitMqBroker,
    queue: &ShortString,
    counted: bool,
) -> Delivery {
    let AmqpDelivery {
        routing_key,
        redelivered,
        properties,
        data,
        acker,
        ..
    } = delivery;
    let headers = properties.headers().clone().unwrap_or_default();
    let attempt = if counted {
        // A quorum queue counts the earlier deliveries.
        integer(headers.inner().get(DELIVERY_COUNT_HEADER))
            .map_or(1, |count| count.saturating_add(1))
    } else {
        integer(headers.inner().get(ATTEMPT_HEADER)).unwrap_or(1) + u32::from(redelivered)
    };
    let body = Bytes::from(data);
    let message = Message {
        topic: routing_key.to_string(),
        headers: metadata(&headers),
        body: body.clone(),
        id: properties.message_id().as_ref().map(ToString::to_string),
    };
    let redelivery = if counted {
        Redelivery::Requeue
    } else {
        Redelivery::Republish {
            broker: broker.clone(),
            queue: queue.to_string(),
            body,
            properties: Box::new(properties),
        }
    };
    Delivery {
        message,
        attempt,
        settle: Some(Box::new(Settlement {
            acker,
            attempt,
            max_deliveries: broker.config.max_deliveries,
            redelivery,
            config: broker.config.clone(),
        })),
    }
}

/// How a nacked message is delivered again.
enum Redelivery {
    /// Requeued: the quorum queue counts, and dead-letters past its limit.
    Requeue,
    /// Published again to the same (classic) queue with the attempt counted in a header.
    Republish {
        broker: RabbitMqBroker,
        queue: String,
        body: Bytes,
        properties: Box<BasicProperties>,
    },
}

/// Settles one delivery with RabbitMQ.
struct Settlement {
    acker: Acker,
    attempt: u32,
    max_deliveries: u32,
    redelivery: Redelivery,
    config: Arc<Config>,
}

impl Settle for Settlement {
    fn ack(self: Box<Self>) -> BoxFuture<Result<(), BrokerError>> {
        Box::pin(async move {
            let acked = self.acker.ack(BasicAckOptions::default());
            self.config.request("ack", acked).await.map(drop)
        })
    }

    fn nack(self: Box<Self>) -> BoxFuture<Result<(), BrokerError>> {
        Box::pin(async move {
            let this = *self;
            match this.redelivery {
                Redelivery::Requeue => {
                    let nacked = this.acker.nack(BasicNackOptions {
                        requeue: true,
                        ..Default::default()
                    });
                    this.config.request("nack", nacked).await.map(drop)
                }
                Redelivery::Republish { .. } if this.attempt >= this.max_deliveries => {
                    tracing::warn!(
                        attempt = this.attempt,
                        "a message failed on every delivery allowed; dropped (a subscription \
                         without a group has no dead-letter queue)"
                    );
                    let rejected = this.acker.reject(BasicRejectOptions { requeue: false });
                    this.config.request("reject", rejected).await.map(drop)
                }
                Redelivery::Republish {
                    broker,
                    queue,
                    body,
                    properties,
                } => {
                    let mut headers = properties.headers().clone().unwrap_or_default();
                    headers.insert(
                        ATTEMPT_HEADER.into(),
                        AMQPValue::LongUInt(this.attempt.saturating_add(1)),
                    );
                    let properties = properties.with_headers(headers);
                    // Into the queue itself, through the default exchange.
                    broker
                        .publish_confirmed("", &queue, &body, properties)
                        .await?;
                    let acked = this.acker.ack(BasicAckOptions::default());
                    this.config.request("ack", acked).await.map(drop)
                }
            }
        })
    }

    fn reject(self: Box<Self>) -> BoxFuture<Result<(), BrokerError>> {
        Box::pin(async move {
            let rejected = self.acker.reject(BasicRejectOptions { requeue: false });
            self.config.request("reject", rejected).await.map(drop)
        })
    }
}

/// Whether `name` is a header RabbitMQ or this broker keeps its books in.
fn reserved(name: &str) -> bool {
    name == DELIVERY_COUNT_HEADER
        || name == ATTEMPT_HEADER
        || name == "x-death"
        || name.starts_with("x-first-death-")
        || name.starts_with("x-last-death-")
}

/// The AMQP headers table carrying `headers`; refused if one cannot be carried.
fn table(headers: &MetadataMap) -> Result<FieldTable, BrokerError> {
    let mut table = FieldTable::default();
    for entry in headers.iter() {
        let (name, value) = match entry {
            KeyAndValueRef::Ascii(name, value) => (name.as_str(), value.as_bytes().to_vec()),
            KeyAndValueRef::Binary(name, value) => {
                let raw = value.to_bytes().map_err(|_| {
                    BrokerError::Refused(format!("header {:?}: invalid base64", name.as_str()))
                })?;
                (name.as_str(), raw.to_vec())
            }
        };
        if reserved(name) {
            return Err(BrokerError::Refused(format!(
                "header {name:?} is RabbitMQ's (or this broker's) own bookkeeping"
            )));
        }
        let key = ShortString::try_new(name).map_err(|_| {
            BrokerError::Refused(format!(
                "header name of {} bytes: AMQP header names hold at most 255",
                name.len()
            ))
        })?;
        if table.contains_key(name) {
            return Err(BrokerError::Refused(format!(
                "header {name:?} has several values: an AMQP headers table holds one per name"
            )));
        }
        table.insert(key, AMQPValue::LongString(LongString::from(value)));
    }
    Ok(table)
}

/// The metadata carried by an AMQP headers table, leaving out bookkeeping and what is not
/// valid metadata.
fn metadata(table: &FieldTable) -> MetadataMap {
    let mut headers = MetadataMap::new();
    for (name, value) in table.inner() {
        let name = name.as_str();
        if reserved(name) {
            continue;
        }
        let text: Vec<u8> = match value {
            AMQPValue::LongString(s) => s.as_bytes().to_vec(),
            AMQPValue::ShortString(s) => s.as_str().as_bytes().to_vec(),
            AMQPValue::ByteArray(b) => b.as_slice().to_vec(),
            AMQPValue::Boolean(b) => b.to_string().into_bytes(),
            other => match integer_text(other) {
                Some(text) => text.into_bytes(),
                None => {
                    tracing::debug!(
                        header = name,
                        "an AMQP header of a kind metadata cannot hold; skipped"
                    );
                    continue;
                }
            },
        };
        if name.ends_with("-bin") {
            match BinaryMetadataKey::from_bytes(name.as_bytes()) {
                Ok(key) => {
                    headers.append_bin(key, BinaryMetadataValue::from_bytes(&text));
                }
                Err(_) => tracing::debug!(header = name, "not a metadata name; skipped"),
            }
            continue;
        }
        let key = match AsciiMetadataKey::from_bytes(name.as_bytes()) {
            Ok(key) => key,
            Err(_) => {
                tracing::debug!(header = name, "not a metadata name; skipped");
                continue;
            }
        };
        match AsciiMetadataValue::try_from(text.as_slice()) {
            Ok(value) => {
                headers.append(key, value);
            }
            Err(_) => tracing::debug!(header = name, "not a metadata value; skipped"),
        }
    }
    headers
}

/// An integer header as text.
fn integer_text(value: &AMQPValue) -> Option<String> {
    Some(match value {
        AMQPValue::ShortShortInt(v) => v.to_string(),
        AMQPValue::ShortShortUInt(v) => v.to_string(),
        AMQPValue::ShortInt(v) => v.to_string(),
        AMQPValue::ShortUInt(v) => v.to_string(),
        AMQPValue::LongInt(v) => v.to_string(),
        AMQPValue::LongUInt(v) => v.to_string(),
        AMQPValue::LongLongInt(v) => v.to_string(),
        _ => return None,
    })
}

/// An integer header as a count (none if absent, negative or not an integer).
fn integer(value: Option<&AMQPValue>) -> Option<u32> {
    integer_text(value?)?
        .parse::<i64>()
        .ok()
        .and_then(|n| u32::try_from(n).ok())
}

/// A string header value.
fn long_string(text: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(text))
}

/// `text` as an AMQP short string, refused if over 255 bytes.
fn short(text: &str, what: &str) -> Result<ShortString, BrokerError> {
    ShortString::try_new(text).map_err(|_| {
        BrokerError::Refused(format!(
            "{what} of {} bytes: AMQP allows at most 255",
            text.len()
        ))
    })
}

/// A fresh message id: 128 random bits in hex.
fn new_message_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// `uri` without a password, for messages.
fn without_credentials(uri: &str) -> String {
    match (uri.find("://"), uri.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}{}", &uri[..scheme + 3], &uri[at + 1..])
        }
        _ => uri.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_through_an_amqp_table() {
        let mut headers = MetadataMap::new();
        headers.insert(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
                .parse()
                .unwrap(),
        );
        headers.insert_bin("trace-bin", BinaryMetadataValue::from_bytes(&[0, 1, 255]));
        let table = table(&headers).unwrap();
        assert_eq!(
            table.inner().get("traceparent"),
            Some(&long_string(
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
            ))
        );
        let back = metadata(&table);
        assert_eq!(
            back.get("traceparent").unwrap(),
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        );
        assert_eq!(
            back.get_bin("trace-bin")
                .unwrap()
                .to_bytes()
                .unwrap()
                .as_ref(),
            [0, 1, 255]
        );
    }

    #[test]
    fn headers_amqp_cannot_carry_are_refused() {
        let mut twice = MetadataMap::new();
        twice.append("k", "1".parse().unwrap());
        twice.append("k", "2".parse().unwrap());
        let mut reserved = MetadataMap::new();
        reserved.insert("x-delivery-count", "1".parse().unwrap());
        let mut long = MetadataMap::new();
        long.insert(
            AsciiMetadataKey::from_bytes("k".repeat(300).as_bytes()).unwrap(),
            "v".parse().unwrap(),
        );
        for headers in [twice, reserved, long] {
            assert!(
                matches!(table(&headers), Err(BrokerError::Refused(_))),
                "{headers:?}"
            );
        }
    }

    #[test]
    fn received_headers_skip_bookkeeping_and_invalid_names_and_keep_numbers_as_text() {
        let mut table = FieldTable::default();
        table.insert("x-delivery-count".into(), AMQPValue::LongLongInt(2));
        table.insert("Bad Name".into(), long_string("v"));
        table.insert("retries".into(), AMQPValue::LongInt(3));
        table.insert(
            "x-death".into(),
            AMQPValue::FieldTable(FieldTable::default()),
        );
        table.insert("tenant".into(), long_string("acme"));
        let headers = metadata(&table);
        assert_eq!(headers.len(), 2, "{headers:?}");
        assert_eq!(headers.get("retries").unwrap(), "3");
        assert_eq!(headers.get("tenant").unwrap(), "acme");
        assert_eq!(integer(table.inner().get("x-delivery-count")), Some(2));
    }

    #[test]
    fn credentials_stay_out_of_messages() {
        assert_eq!(
            without_credentials("amqp://user:secret@host:5672/%2f"),
            "amqp://host:5672/%2f"
        );
        assert_eq!(without_credentials("amqp://host"), "amqp://host");
    }
}
