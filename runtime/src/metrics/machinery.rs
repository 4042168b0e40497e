//! The machinery's own health, under the `micro_otel.` prefix: what a client's registry
//! cache and channel pool hold (read when metrics are collected), the nodes it ejected and
//! the retries its budget refused, and the messages a subscription could not decode.
//!
//! | instrument | kind, unit | attributes |
//! |---|---|---|
//! | `micro_otel.client.registry.nodes` | gauge, {node} | `micro_otel.service` |
//! | `micro_otel.client.connections` | gauge, {connection} | |
//! | `micro_otel.client.ejections` | counter, {node} | `micro_otel.service` |
//! | `micro_otel.client.retries.refused` | counter, {retry} | `grpc.method`, `grpc.target` |
//! | `micro_otel.messaging.undecodable` | counter, {message} | `messaging.*` of the subscription |
//! | `micro_otel.telemetry.spans.dropped` | counter, {span} | (reported by `Telemetry`) |

use std::sync::{Arc, Mutex, Weak};

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Meter};

/// `micro_otel.client.registry.nodes`: nodes per service in a client's registry cache.
pub const REGISTRY_NODES: &str = "micro_otel.client.registry.nodes";
/// `micro_otel.client.connections`: channels a client's pool holds.
pub const CONNECTIONS: &str = "micro_otel.client.connections";
/// `micro_otel.client.ejections`: nodes left out for a while after they could not be
/// reached.
pub const EJECTIONS: &str = "micro_otel.client.ejections";
/// `micro_otel.client.retries.refused`: retries the retry budget did not let through.
pub const RETRIES_REFUSED: &str = "micro_otel.client.retries.refused";
/// `micro_otel.messaging.undecodable`: messages a subscription rejected because they did
/// not decode as its type.
pub const UNDECODABLE_MESSAGES: &str = "micro_otel.messaging.undecodable";
/// `micro_otel.telemetry.spans.dropped`: spans dropped because the export queue was full
/// (the collector down, slow, or not answering).
pub const SPANS_DROPPED: &str = "micro_otel.telemetry.spans.dropped";
/// The attribute naming the registry service of a client's machinery metrics.
pub const SERVICE: &str = "micro_otel.service";

/// What a client tells the gauges when metrics are collected.
pub(crate) trait ClientState: Send + Sync {
    /// Calls `each` with every service the cache knows and its number of nodes.
    fn nodes(&self, each: &mut dyn FnMut(&str, u64));
    /// The channels the pool holds.
    fn connections(&self) -> u64;
}

/// The clients reporting through one set of gauges; dropped clients fall out.
type Clients = Arc<Mutex<Vec<Weak<dyn ClientState>>>>;

/// The machinery instruments of one service or client.
pub(crate) struct Instruments {
    ejections: Counter<u64>,
    refused: Counter<u64>,
    clients: Clients,
}

impl Instruments {
    pub(crate) fn new(meter: &Meter) -> Self {
        let clients = Clients::default();
        let read = clients.clone();
        meter
            .u64_observable_gauge(REGISTRY_NODES)
            .with_unit("{node}")
            .with_description("Nodes per service in the client's registry cache.")
            .with_callback(move |observer| {
                for client in live(&read) {
                    client.nodes(&mut |service, nodes| {
                        observer.observe(nodes, &[KeyValue::new(SERVICE, service.to_owned())]);
                    });
                }
            })
            .build();
        let read = clients.clone();
        meter
            .u64_observable_gauge(CONNECTIONS)
            .with_unit("{connection}")
            .with_description("Channels the client's pool holds, one per node called.")
            .with_callback(move |observer| {
                let total = live(&read).iter().map(|c| c.connections()).sum();
                observer.observe(total, &[]);
            })
            .build();
        Self {
            ejections: meter
                .u64_counter(EJECTIONS)
                .with_unit("{node}")
                .with_description("Nodes left out of selection after they could not be reached.")
                .build(),
            refused: meter
                .u64_counter(RETRIES_REFUSED)
                .with_unit("{retry}")
                .with_description("Retries the retry budget did not let through.")
                .build(),
            clients,
        }
    }

    /// Reports `client`'s cache and pool from now on, for as long as it lives.
    pub(crate) fn observe(&self, client: Weak<dyn ClientState>) {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        clients.retain(|c| c.strong_count() > 0);
        clients.push(client);
    }

    /// Counts a node of `service` ejected.
    pub(crate) fn ejected(&self, service: &str) {
        self.ejections
            .add(1, &[KeyValue::new(SERVICE, service.to_owned())]);
    }

    /// Counts a retry of `method` on `target` that the budget refused.
    pub(crate) fn refused(&self, method: &'static str, target: &str) {
        let attributes = [
            KeyValue::new(crate::semconv::GRPC_METHOD, method),
            KeyValue::new(crate::semconv::GRPC_TARGET, target.to_owned()),
        ];
        self.refused.add(1, &attributes);
    }
}

/// The clients still alive.
fn live(clients: &Clients) -> Vec<Arc<dyn ClientState>> {
    let clients = clients.lock().unwrap_or_else(|e| e.into_inner());
    clients.iter().filter_map(Weak::upgrade).collect()
}
