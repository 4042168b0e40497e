//! The in-memory broker: the default, shared by everything in one process. At most once:
//! a message goes to the subscribers present when it is published, nothing is stored.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use tokio::sync::mpsc;

use super::{Broker, BrokerError, Deliveries, Delivery, Message};
use crate::call::BoxFuture;

/// How many messages may wait for one subscription before publishing waits for it.
const DEFAULT_CAPACITY: usize = 1024;

/// A broker in memory: fan-out to every group, one member of a group per message (taken in
/// turn), bounded queues (a slow subscriber slows its publishers down rather than growing
/// memory without end).
#[derive(Debug, Clone)]
pub struct MemoryBroker {
    topics: Arc<Mutex<HashMap<String, Vec<Group>>>>,
    capacity: usize,
}

/// The subscriptions of one group (or one subscription without a group).
#[derive(Debug)]
struct Group {
    name: Option<String>,
    members: Vec<mpsc::Sender<Delivery>>,
    next: usize,
}

impl Default for MemoryBroker {
    fn default() -> Self {
        Self {
            topics: Arc::default(),
            capacity: DEFAULT_CAPACITY,
        }
    }
}

impl MemoryBroker {
    /// An empty broker of its own.
    pub fn new() -> Self {
        Self::default()
    }

    /// The process-wide broker services use unless told otherwise.
    pub fn global() -> Self {
        static GLOBAL: LazyLock<MemoryBroker> = LazyLock::new(MemoryBroker::new);
        GLOBAL.clone()
    }

    /// How many messages may wait for one subscription (default 1024) before publishers
    /// wait.
    pub fn with_capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity.max(1);
        self
    }

    /// One live member of every group subscribed to `topic`, taking turns within a group.
    fn recipients(&self, topic: &str) -> Vec<mpsc::Sender<Delivery>> {
        let mut topics = self.topics.lock().unwrap_or_else(|e| e.into_inner());
        let Some(groups) = topics.get_mut(topic) else {
            return Vec::new();
        };
        for group in groups.iter_mut() {
            group.members.retain(|m| !m.is_closed());
        }
        groups.retain(|g| !g.members.is_empty());
        groups
            .iter_mut()
            .map(|group| {
                let member = group.members[group.next % group.members.len()].clone();
                group.next = group.next.wrapping_add(1);
                member
            })
            .collect()
    }
}

impl Broker for MemoryBroker {
    fn system(&self) -> &'static str {
        "memory"
    }

    fn publish(&self, message: Message) -> BoxFuture<Result<(), BrokerError>> {
        let recipients = self.recipients(&message.topic);
        Box::pin(async move {
            for recipient in recipients {
                let delivery = Delivery {
                    message: message.clone(),
                    attempt: 1,
                    settle: None,
                };
                // A subscription that went away meanwhile just misses the message.
                let _ = recipient.send(delivery).await;
            }
            Ok(())
        })
    }

    fn subscribe(
        &self,
        topic: &str,
        group: Option<&str>,
    ) -> BoxFuture<Result<Deliveries, BrokerError>> {
        let (tx, rx) = mpsc::channel(self.capacity);
        {
            let mut topics = self.topics.lock().unwrap_or_else(|e| e.into_inner());
            let groups = topics.entry(topic.to_owned()).or_default();
            match group.and_then(|name| groups.iter_mut().find(|g| g.name.as_deref() == Some(name)))
            {
                Some(existing) => existing.members.push(tx),
                None => groups.push(Group {
                    name: group.map(str::to_owned),
                    members: vec![tx],
                    next: 0,
                }),
            }
        }
        let deliveries: Deliveries = Box::pin(futures_util::stream::unfold(rx, |mut rx| async {
            rx.recv().await.map(|delivery| (delivery, rx))
        }));
        Box::pin(std::future::ready(Ok(deliveries)))
    }
}
