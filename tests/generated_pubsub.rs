//! The pub/sub helpers generated for messages with a `(micro_otel.topic)` option (golden case
//! `tests/golden/events`) publish and subscribe typed messages on that topic through real
//! `Service`s and the in-memory broker, top-level and nested messages alike.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use micro_otel::broker::{MemoryBroker, Subscriber};
use micro_otel::discovery::MemoryRegistry;
use micro_otel::{Context, Service};
use micro_otel_tests::golden::events_case::shop::events::{self, Order, OrderPlaced, order};

/// Polls `done` every 5 ms for up to 5 s.
async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A service on `broker` that has not started.
fn service(name: &str, broker: &MemoryBroker) -> Service {
    Service::builder(name)
        .registry(MemoryRegistry::new())
        .broker(broker.clone())
        .instrumentation(micro_otel::Instrumentation::off())
        .build()
}

#[tokio::test]
async fn generated_helpers_publish_and_subscribe_typed_messages_on_the_option_topic() {
    let broker = MemoryBroker::new();
    let placed = Arc::new(Mutex::new(Vec::<OrderPlaced>::new()));
    let shipped = Arc::new(Mutex::new(Vec::<order::Shipped>::new()));
    let warehouse = service("warehouse", &broker);
    let placed_stats = {
        let placed = placed.clone();
        events::subscribe_order_placed(&warehouse, move |_ctx: Context, event: OrderPlaced| {
            let placed = placed.clone();
            async move {
                placed.lock().unwrap().push(event);
                Ok(())
            }
        })
        .expect("before start")
    };
    let shipped_stats = {
        let shipped = shipped.clone();
        events::subscribe_order_shipped(&warehouse, move |_ctx: Context, event: order::Shipped| {
            let shipped = shipped.clone();
            async move {
                shipped.lock().unwrap().push(event);
                Ok(())
            }
        })
        .expect("before start")
    };
    let running = warehouse.start().await.expect("starts");

    let shop = service("shop", &broker);
    let publisher = events::order_placed_publisher(&shop);
    assert_eq!(publisher.topic(), "order.placed");
    assert_eq!(events::ORDER_PLACED_TOPIC, "order.placed");
    assert_eq!(events::ORDER_SHIPPED_TOPIC, "order.shipped");
    let order = Order {
        id: 7,
        item: "book".into(),
    };
    publisher
        .publish(&OrderPlaced {
            order: Some(order.clone()),
        })
        .await
        .unwrap();
    events::order_shipped_publisher(&shop)
        .publish(&order::Shipped { order_id: 7 })
        .await
        .unwrap();

    wait_until("both events", || {
        placed_stats.handled() == 1 && shipped_stats.handled() == 1
    })
    .await;
    assert_eq!(
        *placed.lock().unwrap(),
        [OrderPlaced { order: Some(order) }]
    );
    assert_eq!(*shipped.lock().unwrap(), [order::Shipped { order_id: 7 }]);
    assert_eq!(placed_stats.undecodable() + shipped_stats.undecodable(), 0);
    running.stop().await.unwrap();
}

#[tokio::test]
async fn the_generated_topic_is_the_wire_topic_a_plain_subscriber_sees() {
    let broker = MemoryBroker::new();
    let seen = Arc::new(Mutex::new(Vec::<OrderPlaced>::new()));
    let audit = service("audit", &broker);
    let stats = {
        let seen = seen.clone();
        audit
            .subscribe(Subscriber::new(
                "order.placed",
                move |_ctx: Context, event: OrderPlaced| {
                    let seen = seen.clone();
                    async move {
                        seen.lock().unwrap().push(event);
                        Ok(())
                    }
                },
            ))
            .expect("before start")
    };
    let running = audit.start().await.expect("starts");
    events::order_placed_publisher(&service("shop", &broker))
        .publish(&OrderPlaced { order: None })
        .await
        .unwrap();
    wait_until("the event", || stats.handled() == 1).await;
    assert_eq!(*seen.lock().unwrap(), [OrderPlaced { order: None }]);
    running.stop().await.unwrap();
}

#[tokio::test]
async fn the_generated_subscribe_fails_once_the_service_has_started() {
    let broker = MemoryBroker::new();
    let svc = service("late", &broker);
    let running = svc.start().await.expect("starts");
    let result =
        events::subscribe_order_placed(&svc, |_ctx: Context, _event: OrderPlaced| async { Ok(()) });
    let err = result
        .expect_err("subscribing after start fails")
        .to_string();
    assert!(err.contains("order.placed"), "{err}");
    running.stop().await.unwrap();
}
