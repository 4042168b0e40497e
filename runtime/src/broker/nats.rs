//! [`NatsBroker`]: a [`Broker`] on NATS, in one of two modes chosen when it is made.
//!
//! - **Core NATS** ([`NatsBroker::connect`]): a publish is a NATS publish with headers; a
//!   subscription with a group is a NATS queue subscription (the server gives each message
//!   to one member of the group), one without a group a plain subscription. At most once:
//!   nothing is stored, nothing is settled.
//! - **JetStream** ([`NatsBroker::connect_jetstream`]): messages are stored in a stream and
//!   consumed through durable pull consumers with explicit acknowledgement. At least once:
//!   a message a handler fails is delivered again, and one that can never be handled goes to
//!   a dead-letter subject. [`JetStreamConfig`] says how.
//!
//! Headers travel as NATS headers in both modes, so plain NATS clients see the W3C
//! `traceparent` the runtime writes.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::Acker;
use async_nats::jetstream::stream::{RetentionPolicy, StorageType};
use async_nats::jetstream::{self, AckKind, ErrorCode};
use async_nats::{Client, ConnectOptions, HeaderMap, HeaderName, HeaderValue, ServerAddr};
use futures_util::StreamExt;
use tokio::sync::OnceCell;
use tonic::metadata::MetadataMap;

use super::{Broker, BrokerError, Deliveries, Delivery, Message, Settle};
use crate::call::{BoxFuture, address_list};

/// Where NATS listens unless told otherwise.
const DEFAULT_SERVER: &str = "nats://127.0.0.1:4222";

/// How long connecting, and every JetStream request (stream and consumer management,
/// publish acknowledgements), may take before the broker reports NATS unavailable.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the server keeps the consumer of a subscription without a group once nobody
/// pulls from it (it is also deleted when the subscription is dropped).
const EPHEMERAL_INACTIVE: Duration = Duration::from_secs(60);

/// How long a pull subscription waits before trying again after its consumer could not be
/// made (NATS down, stream deleted).
const REOPEN_DELAY: Duration = Duration::from_millis(500);

/// Durable, at-least-once delivery on JetStream: what [`NatsBroker::jetstream`] sets up.
///
/// On connect, the broker creates (or updates) the stream [`stream`](Self::stream) over
/// [`subjects`](Self::subjects) with *interest* retention (a message is kept until every
/// consumer that existed when it was published has acknowledged it) on file storage, and a
/// second stream, `<stream>_DEAD_LETTER`, over [`dead_letter`](Self::dead_letter) with
/// *limits* retention (dead letters are kept until someone removes them). Topics published
/// to must be covered by `subjects`; a publish to another subject is refused.
///
/// A subscription with a group uses the durable pull consumer of that group and topic
/// (named `<group>_<topic>_<hash>`, with characters NATS does not allow in names replaced
/// by `_`), shared by every instance of the group: competing consumers, and the consumer —
/// with its place in the stream — outlives the instances. A subscription without a group
/// gets a consumer of its own, deleted when the subscription is dropped. Both start with the
/// messages published after the consumer was first made.
///
/// Settling (the runtime acks what a handler handled, nacks what it failed, rejects what
/// does not decode):
/// - ack: `+ACK`.
/// - nack: `-NAK` with [`redeliver_delay`](Self::redeliver_delay), so the message comes
///   back that much later — unless this was delivery number
///   [`max_deliver`](Self::max_deliver): then it is dead-lettered.
/// - reject: dead-lettered at once.
/// - never settled (the instance died, or a handler outlasted
///   [`ack_wait`](Self::ack_wait)): JetStream delivers it again after `ack_wait`; a
///   delivery past `max_deliver` is dead-lettered on arrival, without running the handler.
///
/// Dead-lettering publishes a copy of the message to the dead-letter subject through
/// JetStream (waiting for the stream's acknowledgement): the same body, the original
/// headers except NATS's own `Nats-*` ones, and the headers
/// [`NatsBroker::DEAD_LETTER_SUBJECT`], [`NatsBroker::DEAD_LETTER_REASON`] (`rejected` or
/// `max-deliveries`), [`NatsBroker::DEAD_LETTER_STREAM`],
/// [`NatsBroker::DEAD_LETTER_SEQUENCE`] and [`NatsBroker::DEAD_LETTER_DELIVERIES`]. Only
/// once the copy is stored is the original terminated (`+TERM`: never delivered again); if
/// the copy cannot be stored, the original is nacked and the broker tries again on its next
/// delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JetStreamConfig {
    /// The stream's name (default `MICRO`).
    pub stream: String,
    /// The subjects the stream stores (default `micro.>`): NATS subjects, wildcards
    /// allowed.
    pub subjects: Vec<String>,
    /// How many times a message is delivered at most before it is dead-lettered
    /// (default 5).
    pub max_deliver: u32,
    /// How long a delivered message may stay unsettled before JetStream delivers it again
    /// (default 30 s): longer than a handler takes.
    pub ack_wait: Duration,
    /// How long after a nack the message is delivered again (default 100 ms).
    pub redeliver_delay: Duration,
    /// Where messages go that could never be handled (default `micro-dead-letter`): a
    /// subject outside `subjects`.
    pub dead_letter: String,
    /// How many messages one subscription fetches at a time (default 100). Messages fetched
    /// but not yet handed to the handler when the subscription stops come back after
    /// `ack_wait`.
    pub batch: usize,
}

impl Default for JetStreamConfig {
    fn default() -> Self {
        Self {
            stream: "MICRO".into(),
            subjects: vec!["micro.>".into()],
            max_deliver: 5,
            ack_wait: Duration::from_secs(30),
            redeliver_delay: Duration::from_millis(100),
            dead_letter: "micro-dead-letter".into(),
            batch: 100,
        }
    }
}

impl JetStreamConfig {
    /// The stream `stream` over `subjects`, with the other settings at their defaults.
    pub fn new<S: Into<String>>(
        stream: impl Into<String>,
        subjects: impl IntoIterator<Item = S>,
    ) -> Self {
        Self {
            stream: stream.into(),
            subjects: subjects.into_iter().map(Into::into).collect(),
            ..Self::default()
        }
    }

    /// The name of the stream that stores dead letters.
    pub fn dead_letter_stream(&self) -> String {
        format!("{}_DEAD_LETTER", self.stream)
    }
}

/// A [`Broker`] on NATS: core NATS (at most once) or JetStream (at least once, see
/// [`JetStreamConfig`]).
///
/// ```no_run
/// # async fn run() -> Result<(), micro_otel::broker::BrokerError> {
/// use micro_otel::broker::{JetStreamConfig, NatsBroker};
/// let core = NatsBroker::connect("nats://127.0.0.1:4222").await?;
/// let durable = NatsBroker::connect_jetstream(
///     "nats://127.0.0.1:4222",
///     JetStreamConfig::new("EVENTS", ["events.>"]),
/// )
/// .await?;
/// # Ok(()) }
/// ```
///
/// Once connected, the client reconnects by itself (core subscriptions are renewed; pull
/// subscriptions pull again, making their consumer again if the server lost it). Errors
/// name the servers and the operation: [`BrokerError::Unavailable`] when NATS cannot be
/// reached or does not answer within 5 s, [`BrokerError::Refused`] when it answers no (a
/// subject no stream takes, a message over the server's size limit) or when a message
/// cannot be carried (a header value that is not visible ASCII, or with leading or trailing
/// whitespace, which NATS headers would lose).
///
/// Clones share the connection.
#[derive(Clone)]
pub struct NatsBroker {
    /// The servers as given, for error messages.
    servers: Arc<str>,
    /// The parsed servers, or why they do not parse.
    addresses: Result<Arc<[ServerAddr]>, String>,
    /// Made by [`connect`](Self::connect), or on first use after [`lazy`](Self::lazy).
    client: Arc<OnceCell<Client>>,
    /// In JetStream mode: the configuration, and the context once the streams exist.
    jetstream: Option<Arc<JetStreamSetup>>,
}

impl std::fmt::Debug for NatsBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsBroker")
            .field("servers", &self.servers)
            .field("jetstream", &self.jetstream.as_ref().map(|js| &js.config))
            .finish_non_exhaustive()
    }
}

/// JetStream mode, before and after the streams are made.
struct JetStreamSetup {
    config: JetStreamConfig,
    live: OnceCell<Arc<Live>>,
}

/// JetStream mode once connected and the streams exist.
struct Live {
    context: jetstream::Context,
    config: JetStreamConfig,
    servers: Arc<str>,
}

impl NatsBroker {
    /// The dead-letter header naming the subject the message was published to.
    pub const DEAD_LETTER_SUBJECT: &'static str = "micro-dead-letter-subject";
    /// The dead-letter header saying why: `rejected` (it did not decode) or
    /// `max-deliveries` (it was delivered `max_deliver` times without being handled).
    pub const DEAD_LETTER_REASON: &'static str = "micro-dead-letter-reason";
    /// The dead-letter header naming the stream the message was stored in.
    pub const DEAD_LETTER_STREAM: &'static str = "micro-dead-letter-stream";
    /// The dead-letter header with the message's sequence number in that stream.
    pub const DEAD_LETTER_SEQUENCE: &'static str = "micro-dead-letter-sequence";
    /// The dead-letter header with how many times the message was delivered.
    pub const DEAD_LETTER_DELIVERIES: &'static str = "micro-dead-letter-deliveries";

    /// Core NATS at `servers` (comma separated, `nats://host:port` or `host:port`; the
    /// local default `nats://127.0.0.1:4222` when empty). Fails if no server can be reached.
    pub async fn connect(servers: impl AsRef<str>) -> Result<Self, BrokerError> {
        let broker = Self::lazy(servers);
        broker.ready().await?;
        Ok(broker)
    }

    /// JetStream at `servers`, as `config` says: connects and creates (or updates) the
    /// streams. Fails if no server can be reached or the streams cannot be made.
    pub async fn connect_jetstream(
        servers: impl AsRef<str>,
        config: JetStreamConfig,
    ) -> Result<Self, BrokerError> {
        let broker = Self::lazy(servers).jetstream(config);
        broker.ready().await?;
        Ok(broker)
    }

    /// The broker `MICRO_BROKER=nats` names: core NATS (at most once) on the servers of a
    /// comma-separated `nats://host:port` list, connected on first use.
    pub(crate) fn from_addresses(servers: &str) -> Result<Self, String> {
        Ok(Self::lazy(servers))
    }

    /// The broker `MICRO_BROKER=nats-jetstream` names: JetStream (at least once) with the
    /// default stream `MICRO` over `micro.>` topics.
    pub(crate) fn jetstream_from_addresses(servers: &str) -> Result<Self, String> {
        Ok(Self::lazy(servers).jetstream(JetStreamConfig::default()))
    }

    /// Like [`connect`](Self::connect), for code that cannot wait (configuration read when
    /// a service is built): the first operation connects (and, in JetStream mode, makes the
    /// streams); until it can, operations fail with [`BrokerError::Unavailable`], as they do
    /// when `servers` does not parse.
    pub fn lazy(servers: impl AsRef<str>) -> Self {
        let mut listed: Vec<&str> = address_list(servers.as_ref()).collect();
        if listed.is_empty() {
            listed.push(DEFAULT_SERVER);
        }
        let addresses = listed
            .iter()
            .map(|s| ServerAddr::from_str(s).map_err(|e| format!("server {s:?}: {e}")))
            .collect::<Result<Vec<_>, _>>()
            .map(Arc::from);
        Self {
            servers: listed.join(",").into(),
            addresses,
            client: Arc::default(),
            jetstream: None,
        }
    }

    /// Switches to JetStream mode with `config`; the streams are made when the broker
    /// connects ([`ready`](Self::ready), or the first operation).
    pub fn jetstream(mut self, config: JetStreamConfig) -> Self {
        self.jetstream = Some(Arc::new(JetStreamSetup {
            config,
            live: OnceCell::new(),
        }));
        self
    }

    /// Connects, if not yet connected, and in JetStream mode makes the streams.
    pub async fn ready(&self) -> Result<(), BrokerError> {
        match &self.jetstream {
            Some(setup) => self.live(setup).await.map(drop),
            None => self.client().await.map(drop),
        }
    }

    /// The NATS client, connected on first use.
    async fn client(&self) -> Result<Client, BrokerError> {
        let addresses = self
            .addresses
            .clone()
            .map_err(|e| BrokerError::Unavailable(format!("nats at {}: {e}", self.servers)))?;
        let connect = async {
            ConnectOptions::new()
                .name("micro-otel")
                .connection_timeout(REQUEST_TIMEOUT)
                .connect(addresses.to_vec())
                .await
                .map_err(|e| self.unavailable("connect", e))
        };
        let client = tokio::time::timeout(
            REQUEST_TIMEOUT + Duration::from_secs(1),
            self.client.get_or_try_init(|| connect),
        )
        .await
        .map_err(|_| {
            self.unavailable("connect", format!("no answer within {REQUEST_TIMEOUT:?}"))
        })??;
        Ok(client.clone())
    }

    /// JetStream, once the streams exist.
    async fn live(&self, setup: &JetStreamSetup) -> Result<Arc<Live>, BrokerError> {
        let client = self.client().await?;
        let live = setup
            .live
            .get_or_try_init(|| async {
                let live = Live {
                    context: jetstream::ContextBuilder::new()
                        .timeout(REQUEST_TIMEOUT)
                        .build(client),
                    config: setup.config.clone(),
                    servers: self.servers.clone(),
                };
                live.make_streams().await?;
                Ok::<_, BrokerError>(Arc::new(live))
            })
            .await?;
        Ok(live.clone())
    }

    fn unavailable(&self, what: &str, error: impl std::fmt::Display) -> BrokerError {
        BrokerError::Unavailable(format!("nats at {}: {what}: {error}", self.servers))
    }

    async fn publish_core(&self, message: Message) -> Result<(), BrokerError> {
        check_subject(&message.topic, false)?;
        let headers = nats_headers(message.headers)?;
        let client = self.client().await?;
        let what = || format!("publish to {}", message.topic);
        let published = match headers {
            Some(headers) => {
                client
                    .publish_with_headers(message.topic.clone(), headers, message.body)
                    .await
            }
            None => client.publish(message.topic.clone(), message.body).await,
        };
        published.map_err(|e| match e.kind() {
            async_nats::client::PublishErrorKind::MaxPayloadExceeded
            | async_nats::client::PublishErrorKind::InvalidSubject => {
                BrokerError::Refused(format!("nats at {}: {}: {e}", self.servers, what()))
            }
            _ => self.unavailable(&what(), e),
        })
    }

    async fn subscribe_core(
        &self,
        topic: String,
        group: Option<String>,
    ) -> Result<Deliveries, BrokerError> {
        check_subject(&topic, true)?;
        let client = self.client().await?;
        let what = || format!("subscribe to {topic}");
        let subscriber = match group {
            Some(group) => client.queue_subscribe(topic.clone(), group).await,
            None => client.subscribe(topic.clone()).await,
        }
        .map_err(|e| self.unavailable(&what(), e))?;
        // The server has the subscription once it answers a ping sent after it: messages
        // published from here on (on any connection) reach it.
        tokio::time::timeout(REQUEST_TIMEOUT, client.flush())
            .await
            .map_err(|_| self.unavailable(&what(), "no answer to flush"))?
            .map_err(|e| self.unavailable(&what(), e))?;
        let deliveries = subscriber.map(|message| Delivery {
            message: Message {
                topic: message.subject.to_string(),
                headers: metadata(message.headers.as_ref()),
                body: message.payload,
                id: None,
            },
            attempt: 1,
            settle: None,
        });
        Ok(Box::pin(deliveries))
    }
}

impl Broker for NatsBroker {
    fn system(&self) -> &'static str {
        "nats"
    }

    fn publish(&self, message: Message) -> BoxFuture<Result<(), BrokerError>> {
        let broker = self.clone();
        Box::pin(async move {
            match &broker.jetstream {
                Some(setup) => broker.live(setup).await?.publish(message).await,
                None => broker.publish_core(message).await,
            }
        })
    }

    fn subscribe(
        &self,
        topic: &str,
        group: Option<&str>,
    ) -> BoxFuture<Result<Deliveries, BrokerError>> {
        let broker = self.clone();
        let (topic, group) = (topic.to_owned(), group.map(str::to_owned));
        Box::pin(async move {
            match &broker.jetstream {
                Some(setup) => {
                    check_subject(&topic, true)?;
                    let live = broker.live(setup).await?;
                    let mut pull = Pull {
                        live,
                        topic,
                        group,
                        ephemeral: None,
                        messages: None,
                    };
                    pull.open().await?;
                    Ok(pull.deliveries())
                }
                None => broker.subscribe_core(topic, group).await,
            }
        })
    }
}

impl Live {
    fn unavailable(&self, what: &str, error: impl std::fmt::Display) -> BrokerError {
        BrokerError::Unavailable(format!("nats at {}: {what}: {error}", self.servers))
    }

    fn refused(&self, what: &str, error: impl std::fmt::Display) -> BrokerError {
        BrokerError::Refused(format!("nats at {}: {what}: {error}", self.servers))
    }

    /// Creates or updates the message stream and the dead-letter stream.
    async fn make_streams(&self) -> Result<(), BrokerError> {
        let config = &self.config;
        let stream = jetstream::stream::Config {
            name: config.stream.clone(),
            subjects: config.subjects.clone(),
            retention: RetentionPolicy::Interest,
            storage: StorageType::File,
            ..Default::default()
        };
        let what = format!("create or update stream {}", config.stream);
        self.context
            .create_or_update_stream(stream)
            .await
            .map_err(|e| self.refused_or_unavailable(&what, e))?;

        let dead = config.dead_letter_stream();
        let stream = jetstream::stream::Config {
            name: dead.clone(),
            subjects: vec![config.dead_letter.clone()],
            retention: RetentionPolicy::Limits,
            storage: StorageType::File,
            ..Default::default()
        };
        let what = format!("create or update stream {dead}");
        match self.context.create_or_update_stream(stream).await {
            Ok(_) => Ok(()),
            // Another stream stores the dead letters already: fine, unless it is ours (where
            // interest retention would drop them).
            Err(e) if jetstream_code(&e) == Some(ErrorCode::STREAM_SUBJECT_OVERLAP) => {
                let owner = self
                    .context
                    .stream_by_subject(config.dead_letter.clone())
                    .await
                    .map_err(|e| self.unavailable(&what, e))?;
                if owner == config.stream {
                    return Err(self.refused(
                        &what,
                        format!(
                            "the dead-letter subject {} is one of stream {}'s subjects; choose one outside {:?}",
                            config.dead_letter, config.stream, config.subjects
                        ),
                    ));
                }
                tracing::debug!(stream = %owner, subject = %config.dead_letter, "dead letters are stored by another stream");
                Ok(())
            }
            Err(e) => Err(self.refused_or_unavailable(&what, e)),
        }
    }

    /// A JetStream error answer is a refusal; anything else (a timeout, no connection)
    /// unavailability.
    fn refused_or_unavailable(
        &self,
        what: &str,
        error: async_nats::jetstream::context::CreateStreamError,
    ) -> BrokerError {
        match jetstream_code(&error) {
            Some(_) => self.refused(what, error),
            None => self.unavailable(what, error),
        }
    }

    /// Publishes to the stream and waits for its acknowledgement.
    async fn publish(&self, message: Message) -> Result<(), BrokerError> {
        check_subject(&message.topic, false)?;
        let headers = nats_headers(message.headers)?;
        let what = format!("publish to {}", message.topic);
        let sent = match headers {
            Some(headers) => {
                self.context
                    .publish_with_headers(message.topic, headers, message.body)
                    .await
            }
            None => self.context.publish(message.topic, message.body).await,
        };
        let acked = match sent {
            Ok(ack) => ack.await,
            Err(e) => Err(e),
        };
        acked.map(drop).map_err(|e| match e.kind() {
            PublishErrorKind::StreamNotFound => self.refused(
                &what,
                format!(
                    "no JetStream stream takes this subject (stream {} takes {:?})",
                    self.config.stream, self.config.subjects
                ),
            ),
            PublishErrorKind::MaxPayloadExceeded => self.refused(&what, e),
            _ => self.unavailable(&what, e),
        })
    }

    /// The consumer configuration of a subscription to `topic`.
    fn consumer_config(&self, topic: &str, group: Option<&str>) -> pull::Config {
        let common = pull::Config {
            deliver_policy: DeliverPolicy::New,
            ack_policy: AckPolicy::Explicit,
            ack_wait: self.config.ack_wait,
            // The broker counts deliveries itself (see JetStreamConfig): the server never
            // gives up on a message, so none is left behind undelivered and not dead-lettered.
            max_deliver: -1,
            filter_subject: topic.to_owned(),
            ..Default::default()
        };
        match group {
            Some(group) => pull::Config {
                durable_name: Some(durable_name(group, topic)),
                description: Some(format!("micro-otel group {group} on {topic}")),
                ..common
            },
            None => pull::Config {
                description: Some(format!("micro-otel subscription to {topic}")),
                inactive_threshold: EPHEMERAL_INACTIVE,
                ..common
            },
        }
    }

    /// Sends a copy of a message to the dead-letter subject, then terminates the original
    /// (or nacks it, if the copy could not be stored).
    async fn dead_letter(
        &self,
        original: &async_nats::Message,
        acker: &Acker,
        sequence: u64,
        deliveries: u32,
        reason: &str,
    ) -> Result<(), BrokerError> {
        let mut headers = HeaderMap::new();
        for (name, values) in original.headers.iter().flat_map(HeaderMap::iter) {
            let text: &str = name.as_ref();
            if text.len() >= 5 && text[..5].eq_ignore_ascii_case("nats-") {
                continue;
            }
            for value in values {
                headers.append(name.clone(), value.clone());
            }
        }
        headers.insert(NatsBroker::DEAD_LETTER_SUBJECT, original.subject.as_str());
        headers.insert(NatsBroker::DEAD_LETTER_REASON, reason);
        headers.insert(NatsBroker::DEAD_LETTER_STREAM, self.config.stream.as_str());
        headers.insert(
            NatsBroker::DEAD_LETTER_SEQUENCE,
            HeaderValue::from(sequence),
        );
        headers.insert(
            NatsBroker::DEAD_LETTER_DELIVERIES,
            HeaderValue::from(deliveries),
        );
        let what = format!(
            "dead-letter message {sequence} of {} to {}",
            original.subject, self.config.dead_letter
        );
        let stored = match self
            .context
            .publish_with_headers(
                self.config.dead_letter.clone(),
                headers,
                original.payload.clone(),
            )
            .await
        {
            Ok(ack) => ack.await,
            Err(e) => Err(e),
        };
        match stored {
            Ok(_) => {
                tracing::info!(subject = %original.subject, sequence, reason, dead_letter = %self.config.dead_letter, "a message was dead-lettered");
                acker
                    .ack_with(AckKind::Term)
                    .await
                    .map_err(|e| self.unavailable(&what, e))
            }
            Err(e) => {
                let _ = acker
                    .ack_with(AckKind::Nak(Some(self.config.redeliver_delay)))
                    .await;
                Err(self.unavailable(&what, e))
            }
        }
    }
}

/// The JetStream error code of a failed stream request, if the server answered one.
fn jetstream_code(error: &async_nats::jetstream::context::CreateStreamError) -> Option<ErrorCode> {
    match error.kind() {
        async_nats::jetstream::context::CreateStreamErrorKind::JetStream(e) => Some(e.error_code()),
        _ => None,
    }
}

/// One JetStream subscription: its consumer and the messages pulled from it.
struct Pull {
    live: Arc<Live>,
    topic: String,
    group: Option<String>,
    /// The server-given name of the consumer of a subscription without a group, deleted
    /// when the subscription is dropped.
    ephemeral: Option<String>,
    messages: Option<pull::Stream>,
}

impl Pull {
    /// Makes (or finds) the consumer and starts pulling.
    async fn open(&mut self) -> Result<(), BrokerError> {
        let live = self.live.clone();
        let what = format!("subscribe to {}", self.topic);
        let config = live.consumer_config(&self.topic, self.group.as_deref());
        let consumer = match live
            .context
            .create_consumer_on_stream(config, live.config.stream.clone())
            .await
        {
            Ok(consumer) => consumer,
            Err(e) => {
                return Err(match e.kind() {
                    async_nats::jetstream::stream::ConsumerErrorKind::JetStream(_) => {
                        live.refused(&what, e)
                    }
                    _ => live.unavailable(&what, e),
                });
            }
        };
        if self.group.is_none() {
            self.delete_ephemeral();
            self.ephemeral = Some(consumer.cached_info().name.clone());
        }
        let messages = consumer
            .stream()
            .max_messages_per_batch(live.config.batch.max(1))
            .messages()
            .await
            .map_err(|e| live.unavailable(&what, e))?;
        self.messages = Some(messages);
        Ok(())
    }

    /// The deliveries of this subscription, until dropped.
    fn deliveries(self) -> Deliveries {
        Box::pin(futures_util::stream::unfold(self, |mut pull| async move {
            let delivery = pull.next().await;
            Some((delivery, pull))
        }))
    }

    /// The next message to hand to the subscriber (waiting as long as it takes).
    async fn next(&mut self) -> Delivery {
        loop {
            let Some(messages) = self.messages.as_mut() else {
                if let Err(error) = self.open().await {
                    tracing::warn!(topic = %self.topic, %error, "pulling again failed; trying again");
                    tokio::time::sleep(REOPEN_DELAY).await;
                }
                continue;
            };
            match messages.next().await {
                Some(Ok(message)) => {
                    if let Some(delivery) = self.delivery(message).await {
                        return delivery;
                    }
                }
                Some(Err(error)) => {
                    use async_nats::jetstream::consumer::pull::MessagesErrorKind;
                    if error.kind() == MessagesErrorKind::ConsumerDeleted {
                        tracing::warn!(topic = %self.topic, "the consumer was deleted; making it again");
                        self.messages = None;
                    } else {
                        tracing::debug!(topic = %self.topic, %error, "pulling messages failed; going on");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
                None => {
                    tracing::debug!(topic = %self.topic, "the pull ended; pulling again");
                    self.messages = None;
                }
            }
        }
    }

    /// The delivery of a pulled message; `None` if it was dead-lettered on arrival (or is
    /// not a JetStream message at all).
    async fn delivery(&self, message: jetstream::Message) -> Option<Delivery> {
        let (sequence, delivered) = match message.info() {
            Ok(info) => (
                info.stream_sequence,
                u32::try_from(info.delivered).unwrap_or(u32::MAX).max(1),
            ),
            Err(error) => {
                tracing::warn!(topic = %self.topic, %error, "a pulled message without JetStream metadata; skipped");
                return None;
            }
        };
        let (original, acker) = message.split();
        if delivered > self.live.config.max_deliver {
            // Delivered once more after its last allowed delivery went unsettled.
            let dead = self
                .live
                .dead_letter(&original, &acker, sequence, delivered - 1, "max-deliveries")
                .await;
            if let Err(error) = dead {
                tracing::warn!(topic = %self.topic, %error, "dead-lettering failed; it comes back");
            }
            return None;
        }
        let message = Message {
            topic: original.subject.to_string(),
            headers: metadata(original.headers.as_ref()),
            body: original.payload.clone(),
            id: Some(sequence.to_string()),
        };
        Some(Delivery {
            message,
            attempt: delivered,
            settle: Some(Box::new(JetStreamSettle {
                live: self.live.clone(),
                acker,
                original,
                sequence,
                delivered,
            })),
        })
    }

    /// Deletes the consumer of a subscription without a group, in the background.
    fn delete_ephemeral(&mut self) {
        let Some(name) = self.ephemeral.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return; // The server deletes it once inactive.
        };
        let (context, stream) = (self.live.context.clone(), self.live.config.stream.clone());
        runtime.spawn(async move {
            if let Err(error) = context.delete_consumer_from_stream(&name, &stream).await {
                tracing::debug!(consumer = %name, %error, "deleting a consumer failed; the server drops it once inactive");
            }
        });
    }
}

impl Drop for Pull {
    fn drop(&mut self) {
        self.delete_ephemeral();
    }
}

/// Settles one JetStream delivery (see [`JetStreamConfig`]).
struct JetStreamSettle {
    live: Arc<Live>,
    acker: Acker,
    original: async_nats::Message,
    sequence: u64,
    delivered: u32,
}

impl JetStreamSettle {
    async fn dead_letter(self, reason: &str) -> Result<(), BrokerError> {
        self.live
            .dead_letter(
                &self.original,
                &self.acker,
                self.sequence,
                self.delivered,
                reason,
            )
            .await
    }
}

impl Settle for JetStreamSettle {
    fn ack(self: Box<Self>) -> BoxFuture<Result<(), BrokerError>> {
        Box::pin(async move {
            self.acker.ack().await.map_err(|e| {
                self.live
                    .unavailable(&format!("ack message {}", self.sequence), e)
            })
        })
    }

    fn nack(self: Box<Self>) -> BoxFuture<Result<(), BrokerError>> {
        Box::pin(async move {
            if self.delivered >= self.live.config.max_deliver {
                return self.dead_letter("max-deliveries").await;
            }
            let delay = self.live.config.redeliver_delay;
            self.acker
                .ack_with(AckKind::Nak(Some(delay)))
                .await
                .map_err(|e| {
                    self.live
                        .unavailable(&format!("nack message {}", self.sequence), e)
                })
        })
    }

    fn reject(self: Box<Self>) -> BoxFuture<Result<(), BrokerError>> {
        Box::pin(self.dead_letter("rejected"))
    }
}

/// The durable consumer name of `group` on `topic`: both, with characters NATS names may
/// not hold replaced by `_`, and a hash of the originals so that different groups or
/// topics never share a name.
fn durable_name(group: &str, topic: &str) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    // FNV-1a: stable across builds and platforms, as every instance must agree.
    let hash = group
        .bytes()
        .chain([0])
        .chain(topic.bytes())
        .fold(0x811c_9dc5_u32, |hash, byte| {
            (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
        });
    format!("{}_{}_{hash:08x}", clean(group), clean(topic))
}

/// Checks that `subject` is a NATS subject one may subscribe to (`wildcards`) or publish to.
fn check_subject(subject: &str, wildcards: bool) -> Result<(), BrokerError> {
    let refused = |why: &str| Err(BrokerError::Refused(format!("subject {subject:?}: {why}")));
    if subject.is_empty() {
        return refused("empty");
    }
    if subject.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return refused("NATS subjects hold no whitespace or control characters");
    }
    if subject.split('.').any(str::is_empty) {
        return refused("NATS subjects hold no empty tokens");
    }
    if !wildcards && subject.split('.').any(|t| t == "*" || t == ">") {
        return refused("a wildcard subject cannot be published to");
    }
    Ok(())
}

/// The NATS headers carrying `metadata`; `None` when it is empty. Binary (`-bin`) values
/// travel base64-encoded, as gRPC sends them.
fn nats_headers(metadata: MetadataMap) -> Result<Option<HeaderMap>, BrokerError> {
    if metadata.is_empty() {
        return Ok(None);
    }
    let mut headers = HeaderMap::new();
    for (name, value) in metadata.into_headers().iter() {
        let refused = |why: String| BrokerError::Refused(format!("header {name}: {why}"));
        let text = value.to_str().map_err(|_| {
            refused("a value that is not visible ASCII cannot be a NATS header value".into())
        })?;
        if text.trim() != text {
            return Err(refused(
                "NATS headers lose a value's leading and trailing whitespace".into(),
            ));
        }
        let nats_name = HeaderName::from_str(name.as_str()).map_err(|e| refused(e.to_string()))?;
        let nats_value = HeaderValue::from_str(text).map_err(|e| refused(e.to_string()))?;
        headers.append(nats_name, nats_value);
    }
    Ok(Some(headers))
}

/// The metadata of received NATS headers. Names that are not valid metadata keys, and
/// values that are not valid metadata values, are skipped (with a debug log).
fn metadata(headers: Option<&HeaderMap>) -> MetadataMap {
    let Some(headers) = headers else {
        return MetadataMap::new();
    };
    let mut map = http::HeaderMap::with_capacity(headers.len());
    for (name, values) in headers.iter() {
        let name: &str = name.as_ref();
        let Ok(key) = http::HeaderName::from_bytes(name.as_bytes()) else {
            tracing::debug!(
                header = name,
                "a NATS header whose name is no metadata key; skipped"
            );
            continue;
        };
        for value in values {
            match http::HeaderValue::from_bytes(value.as_str().as_bytes()) {
                Ok(value) => {
                    map.append(key.clone(), value);
                }
                Err(_) => {
                    tracing::debug!(
                        header = name,
                        "a NATS header value that is no metadata value; skipped"
                    );
                }
            }
        }
    }
    MetadataMap::from_headers(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durable_names_are_valid_nats_names_and_differ_where_the_originals_do() {
        let a = durable_name("go.micro.srv.mailer", "user.created");
        assert!(a.starts_with("go_micro_srv_mailer_user_created_"), "{a}");
        assert!(
            a.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        );
        assert_ne!(a, durable_name("go_micro_srv_mailer", "user.created"));
        assert_ne!(
            durable_name("mailer", "user.created"),
            durable_name("mailer", "user.deleted")
        );
        assert_eq!(a, durable_name("go.micro.srv.mailer", "user.created"));
    }

    #[test]
    fn subjects_are_checked_before_they_reach_nats() {
        assert!(check_subject("user.created", false).is_ok());
        assert!(check_subject("user.*", true).is_ok());
        for (bad, wildcards) in [
            ("", true),
            ("user created", true),
            ("user..created", true),
            ("user.", true),
            ("user.*", false),
            ("user.>", false),
        ] {
            assert!(
                matches!(check_subject(bad, wildcards), Err(BrokerError::Refused(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn metadata_round_trips_through_nats_headers_binary_values_base64() {
        let mut sent = MetadataMap::new();
        sent.insert(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
                .parse()
                .unwrap(),
        );
        sent.append("x-tag", "a".parse().unwrap());
        sent.append("x-tag", "b".parse().unwrap());
        sent.insert_bin(
            "x-blob-bin",
            tonic::metadata::MetadataValue::from_bytes(&[0, 1, 255]),
        );
        let headers = nats_headers(sent).unwrap().unwrap();
        let blob: &str = headers.get("x-blob-bin").unwrap().as_ref();
        assert_eq!(blob, "AAH/");
        let received = metadata(Some(&headers));
        assert_eq!(
            received.get("traceparent").unwrap(),
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        );
        let tags: Vec<_> = received.get_all("x-tag").iter().collect();
        assert_eq!(tags.len(), 2);
        assert_eq!(
            received.get_bin("x-blob-bin").unwrap().to_bytes().unwrap(),
            &[0, 1, 255][..]
        );
    }

    #[test]
    fn a_header_nats_cannot_carry_is_refused_and_a_received_one_that_is_no_metadata_skipped() {
        let mut sent = MetadataMap::new();
        let latin1 = tonic::metadata::MetadataValue::try_from(&b"caf\xe9"[..]).unwrap();
        sent.insert("x-name", latin1);
        assert!(matches!(nats_headers(sent), Err(BrokerError::Refused(m)) if m.contains("x-name")));
        let mut sent = MetadataMap::new();
        sent.insert("x-padded", " v ".parse().unwrap());
        assert!(matches!(nats_headers(sent), Err(BrokerError::Refused(_))));

        let mut received = HeaderMap::new();
        received.insert("x(y)", "not a token");
        received.insert("Nats-Msg-Id", "42");
        received.insert("traceparent", "t");
        let map = metadata(Some(&received));
        assert_eq!(map.len(), 2);
        assert_eq!(map.get("nats-msg-id").unwrap(), "42");
    }
}
