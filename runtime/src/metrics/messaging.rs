//! Messaging instruments (semconv messaging, in development): publish durations and counts,
//! processing durations, and the messages each subscription consumed, read from its
//! [`SubscriberStats`].

use std::sync::{Arc, Mutex};
use std::time::Instant;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram, Meter};
use tonic::Status;

use super::Buckets;
use crate::broker::SubscriberStats;
use crate::call::{BoxFuture, Call, Ended, Ending, Messaging, MessagingKind, Reply, Watch};
use crate::semconv::{self, code_name};
use crate::wrapper::Next;

/// The messaging instruments of one service.
pub(crate) struct Instruments {
    publish_duration: Histogram<f64>,
    sent: Counter<u64>,
    process_duration: Histogram<f64>,
    subscriptions: Subscriptions,
}

/// The subscriptions whose counters the observable instruments report.
type Subscriptions = Arc<Mutex<Vec<(SubscriberStats, Vec<KeyValue>)>>>;

impl Instruments {
    pub(crate) fn new(meter: &Meter, buckets: &Buckets) -> Self {
        let seconds = |name, description| buckets.seconds(meter, name, description);
        let subscriptions = Subscriptions::default();
        let consumed = subscriptions.clone();
        meter
            .u64_observable_counter(semconv::MESSAGING_CLIENT_CONSUMED_MESSAGES)
            .with_unit("{message}")
            .with_description("Messages handed to a subscriber's handler.")
            .with_callback(move |observer| {
                for (stats, attributes) in consumed.lock().unwrap_or_else(|e| e.into_inner()).iter()
                {
                    observer.observe(stats.handled(), attributes);
                    for (code, count) in stats.failures() {
                        let mut failed = attributes.clone();
                        failed.push(KeyValue::new(semconv::ERROR_TYPE, code_name(code)));
                        observer.observe(count, &failed);
                    }
                }
            })
            .build();
        let undecodable = subscriptions.clone();
        meter
            .u64_observable_counter(super::machinery::UNDECODABLE_MESSAGES)
            .with_unit("{message}")
            .with_description(
                "Messages rejected because they did not decode as the subscriber's type.",
            )
            .with_callback(move |observer| {
                for (stats, attributes) in
                    undecodable.lock().unwrap_or_else(|e| e.into_inner()).iter()
                {
                    observer.observe(stats.undecodable(), attributes);
                }
            })
            .build();
        Self {
            publish_duration: seconds(
                semconv::MESSAGING_CLIENT_OPERATION_DURATION,
                "Duration of publishing a message, until the broker accepted it.",
            ),
            sent: meter
                .u64_counter(semconv::MESSAGING_CLIENT_SENT_MESSAGES)
                .with_unit("{message}")
                .with_description("Messages published.")
                .build(),
            process_duration: seconds(
                semconv::MESSAGING_PROCESS_DURATION,
                "Duration of a subscriber's handling of a message.",
            ),
            subscriptions,
        }
    }

    /// Measures a publish or a message processing.
    pub(crate) fn measured(
        self: &Arc<Self>,
        call: Call,
        next: Next,
    ) -> BoxFuture<Result<Reply, Status>> {
        let Some(messaging) = call.ctx.messaging() else {
            return next.run(call);
        };
        let operation = Operation {
            instruments: self.clone(),
            attributes: attributes(messaging),
            kind: messaging.kind,
            start: Instant::now(),
        };
        let watch = Watch::new(operation, call.ctx.deadline());
        let reply = next.run(call);
        Box::pin(async move { watch.finish(reply.await) })
    }

    /// Reports what `stats` counts as the messages consumed from `messaging`'s topic.
    pub(crate) fn observe(&self, messaging: &Messaging, stats: SubscriberStats) {
        self.subscriptions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((stats, attributes(messaging)));
    }
}

/// The attributes every messaging instrument shares.
fn attributes(messaging: &Messaging) -> Vec<KeyValue> {
    let operation = match messaging.kind {
        MessagingKind::Publish => "send",
        MessagingKind::Process => "process",
    };
    let mut attributes = vec![
        KeyValue::new(semconv::MESSAGING_SYSTEM, messaging.system),
        KeyValue::new(semconv::MESSAGING_OPERATION_NAME, operation),
        KeyValue::new(semconv::MESSAGING_OPERATION_TYPE, operation),
        KeyValue::new(
            semconv::MESSAGING_DESTINATION_NAME,
            opentelemetry::Value::String(messaging.topic.clone().into()),
        ),
    ];
    if let Some(group) = &messaging.group {
        attributes.push(KeyValue::new(
            semconv::MESSAGING_CONSUMER_GROUP_NAME,
            opentelemetry::Value::String(group.clone().into()),
        ));
    }
    attributes
}

/// A publish or a processing under way.
struct Operation {
    instruments: Arc<Instruments>,
    attributes: Vec<KeyValue>,
    kind: MessagingKind,
    start: Instant,
}

impl Ending for Operation {
    fn ended(mut self, how: Ended<'_>) {
        if let Some(status) = how.status() {
            self.attributes
                .push(KeyValue::new(semconv::ERROR_TYPE, code_name(status.code())));
        }
        let i = &self.instruments;
        let elapsed = self.start.elapsed().as_secs_f64();
        match self.kind {
            MessagingKind::Publish => {
                i.publish_duration.record(elapsed, &self.attributes);
                i.sent.add(1, &self.attributes);
            }
            MessagingKind::Process => i.process_duration.record(elapsed, &self.attributes),
        }
    }
}
