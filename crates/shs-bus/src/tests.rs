//! Bus behaviour with a scripted deliverer (the process layer is tested end to end in `tests/`).

use std::sync::Arc;
use std::time::Duration;

use serde_json::value::RawValue;
use shs_protocol::methods::DeliveryFailure;

use super::*;
use crate::event::Event;
use futures::future::BoxFuture;
use parking_lot::Mutex;
use std::sync::Weak;

type Outcome = Result<(), DeliveryError>;

type Script = dyn Fn(Arc<Bus>, Arc<str>, Arc<SharedEvent>, Causation) -> BoxFuture<'static, Outcome>
    + Send
    + Sync;

/// A deliverer whose behaviour per delivery is a closure.
struct Scripted {
    bus: Arc<Bus>,
    script: Box<Script>,
}

impl Deliver for Scripted {
    fn deliver(
        &self,
        function: Arc<str>,
        event: Arc<SharedEvent>,
        cause: Causation,
    ) -> BoxFuture<'static, Outcome> {
        (self.script)(self.bus.clone(), function, event, cause)
    }
}

fn bus_with(
    max_hops: u32,
    script: impl Fn(Arc<Bus>, Arc<str>, Arc<SharedEvent>, Causation) -> BoxFuture<'static, Outcome>
    + Send
    + Sync
    + 'static,
) -> (Arc<Bus>, Arc<Scripted>) {
    let bus = Arc::new(Bus::new(max_hops));
    let deliverer = Arc::new(Scripted {
        bus: bus.clone(),
        script: Box::new(script),
    });
    let weak: Weak<dyn Deliver> = Arc::downgrade(&deliverer) as Weak<dyn Deliver>;
    bus.attach(weak);
    (bus, deliverer)
}

fn event(event_type: &str) -> Event {
    Event::new(event_type.to_owned(), "/test".to_owned(), None).expect("valid type")
}

#[tokio::test]
async fn publishing_to_nobody_delivers_nothing_and_fails_nothing() {
    let (bus, _d) = bus_with(4, |_, _, _, _| Box::pin(async { Ok(()) }));
    let result = bus
        .publish(event("nobody.listens"), Causation::root())
        .await;
    assert!(result.published);
    assert_eq!(result.delivered, 0);
    assert!(result.errors.is_empty());
    assert!(!result.event_id.is_empty());
}

#[tokio::test]
async fn fan_out_reaches_every_subscriber_in_parallel() {
    let barrier = Arc::new(tokio::sync::Barrier::new(3));
    let (bus, _d) = bus_with(4, move |_, _, _, _| {
        let barrier = barrier.clone();
        // Each delivery waits for the other two: only a parallel fan-out gets past this.
        Box::pin(async move {
            barrier.wait().await;
            Ok(())
        })
    });
    for f in ["a", "b", "c"] {
        bus.subscribe(f, "t").expect("valid");
    }
    let result = tokio::time::timeout(
        Duration::from_secs(10),
        bus.publish(event("t"), Causation::root()),
    )
    .await
    .expect("deliveries run side by side, so the barrier opens");
    assert_eq!(result.delivered, 3);
    assert!(result.errors.is_empty());
}

#[tokio::test]
async fn failures_are_listed_by_function() {
    let (bus, _d) = bus_with(4, |_, function, _, _| {
        Box::pin(async move {
            if &*function == "bad" {
                Err(DeliveryError::retryable(500, "it broke"))
            } else {
                Ok(())
            }
        })
    });
    bus.subscribe("good", "t").expect("valid");
    bus.subscribe("bad", "t").expect("valid");
    let result = bus.publish(event("t"), Causation::root()).await;
    assert_eq!(result.delivered, 1);
    assert_eq!(
        result.errors,
        [DeliveryFailure {
            function: "bad".into(),
            message: "it broke".into()
        }]
    );
}

#[tokio::test]
async fn the_event_object_is_what_functions_receive() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    let (bus, _d) = bus_with(4, move |_, _, event, _| {
        seen2.lock().push(event.json().get().to_owned());
        Box::pin(async { Ok(()) })
    });
    bus.subscribe("f", "user.created").expect("valid");
    let payload = RawValue::from_string(r#"{"name":"Ada"}"#.to_owned()).expect("valid");
    let e = Event::new("user.created".into(), "/http".into(), Some(payload))
        .and_then(|e| e.with_id("id-1".into()))
        .and_then(|e| e.with_time("2026-01-01T00:00:00Z".into()))
        .expect("valid");
    bus.publish(e, Causation::root()).await;
    let seen = seen.lock();
    let object: serde_json::Value = serde_json::from_str(&seen[0]).expect("json");
    assert_eq!(
        object,
        serde_json::json!({"id": "id-1", "type": "user.created", "source": "/http",
                           "time": "2026-01-01T00:00:00Z", "payload": {"name": "Ada"}, "specversion": "1.0", "datacontenttype": "application/json", "shshops": 0})
    );
}

#[tokio::test]
async fn a_loop_is_cut_at_the_hop_limit_and_reported_to_the_first_publisher() {
    let hops_seen = Arc::new(Mutex::new(Vec::new()));
    let hops2 = hops_seen.clone();
    // "echo" republishes every event it gets, synchronously, in the delivery's causation.
    let (bus, _d) = bus_with(5, move |bus, _, event, cause| {
        hops2.lock().push(cause.hops());
        let event_type = event.event_type.clone();
        Box::pin(async move {
            let inner = bus
                .publish(
                    Event::new(event_type, "/functions/echo".into(), None).expect("valid"),
                    cause.caused_by(u64::from(cause.hops())),
                )
                .await;
            assert!(
                !inner.errors.is_empty(),
                "every level sees the cut below it"
            );
            Ok(())
        })
    });
    bus.subscribe("echo", "ping").expect("valid");
    let result = bus.publish(event("ping"), Causation::root()).await;
    assert_eq!(result.delivered, 1);
    assert_eq!(
        *hops_seen.lock(),
        [1, 2, 3, 4, 5],
        "five deliveries, then the cut"
    );
    assert_eq!(
        result.errors.len(),
        1,
        "the cut is reported once, at the top"
    );
    assert_eq!(result.errors[0].function, "echo");
    assert!(
        result.errors[0].message.contains("hop limit of 5"),
        "{}",
        result.errors[0].message
    );
}

#[tokio::test]
async fn detached_publishes_count_hops_but_report_nowhere() {
    let root = Causation::root();
    let delivery = Causation {
        hops: 3,
        waiting: Arc::from([1u64, 2]),
        sink: Some(crate::causation::FailureSink::default()),
        event: Some(Arc::from("e-1")),
    };
    let sync = delivery.caused_by(9);
    assert_eq!(sync.hops(), 3);
    assert_eq!(sync.waiting(), [1, 2, 9]);
    assert!(sync.sink.is_some());
    assert_eq!(
        sync.event(),
        Some("e-1"),
        "what is published in a delivery is caused by its event"
    );
    let detached = delivery.detached();
    assert_eq!(detached.hops(), 3);
    assert!(detached.waiting().is_empty());
    assert!(detached.sink.is_none());
    assert_eq!(root.hops(), 0);
    let merged = Causation::merged([(&delivery, 7), (&sync, 8)]);
    assert_eq!(merged.hops(), 3);
    assert_eq!(merged.waiting(), [1, 2, 7, 8, 9]);
}

#[tokio::test]
async fn subscriptions_are_listed_and_removed_per_function() {
    let bus = Bus::default();
    assert!(bus.subscribe("f", "a.b").is_ok_and(|added| added));
    assert!(bus.subscribe("f", "a.b").is_ok_and(|added| !added));
    assert!(bus.subscribe("g", "a.*").is_ok_and(|added| added));
    assert!(bus.subscribe("g", "bad type").is_err());
    assert_eq!(bus.subscriptions_of("f"), ["a.b"]);
    assert_eq!(bus.subscriptions().len(), 2);
    assert!(bus.unsubscribe("f", "a.b"));
    assert!(!bus.unsubscribe("f", "a.b"));
    assert_eq!(bus.remove_function("g"), ["a.*"]);
    assert!(bus.subscriptions().is_empty());
}

#[test]
fn a_retired_deployment_changes_no_subscription() {
    let bus = Bus::default();
    let first = bus.begin_deployment("f");
    assert!(
        bus.change_as("f", first, "a.b", true)
            .is_ok_and(|added| added)
    );
    // Redeployed: the first deployment's processes are refused, the second's are not.
    let second = bus.begin_deployment("f");
    assert!(matches!(
        bus.change_as("f", first, "c.d", true),
        Err(BusError::Retired { .. })
    ));
    assert!(matches!(
        bus.change_as("f", first, "a.b", false),
        Err(BusError::Retired { .. })
    ));
    assert!(bus.change_as("f", second, "c.d", true).is_ok());
    // Removed: nobody's are.
    bus.remove_function("f");
    assert!(matches!(
        bus.change_as("f", second, "e.f", true),
        Err(BusError::Retired { .. })
    ));
    assert!(bus.subscriptions().is_empty());
    // A later deployment of the same name starts afresh.
    let third = bus.begin_deployment("f");
    assert!(bus.change_as("f", third, "e.f", true).is_ok());
    assert_eq!(bus.subscriptions_of("f"), ["e.f"]);
}

#[tokio::test]
async fn publishing_without_a_deliverer_reports_every_subscriber() {
    let bus = Bus::default();
    bus.subscribe("f", "t").expect("valid");
    let result = bus.publish(event("t"), Causation::root()).await;
    assert_eq!(result.delivered, 0);
    assert_eq!(result.errors.len(), 1);
}

#[test]
fn event_types_are_validated_at_construction() {
    assert!(Event::new("ok.type".into(), "/x".into(), None).is_ok());
    assert!(Event::new("".into(), "/x".into(), None).is_err());
    assert!(Event::new("a.*".into(), "/x".into(), None).is_err());
}
