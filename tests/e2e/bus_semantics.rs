//! The semantics of the event bus, one set of cases run against both backends: the embedded
//! store (in a temporary folder) and NATS JetStream (the real server on 127.0.0.1:4222, each
//! test in a namespace of its own whose streams are deleted after, as in [`crate::nats`]).
//! A scripted [`Deliver`] stands in for the supervisor, so the cases speak of the bus alone;
//! the other modules test it through real processes.
//!
//! Without a NATS server the NATS half of each case says so and passes, unless
//! `SHS_REQUIRE_NATS` is set (CI sets it, after starting the server).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use serde_json::{Value, json};
use shs_bus::event::{CAUSE_ATTRIBUTE, HOPS_ATTRIBUTE};
use shs_bus::store::{Durability, Store};
use shs_bus::{
    Bus, Causation, DeadLetter, DeadLetterFilter, Deliver, DeliveryError, Event, RetryPolicy,
    SharedEvent,
};
use shs_nats::NatsConfig;
use shs_protocol::methods::DeliveryFailure;

use crate::nats::{Namespace, nats_available};

const NATS: &str = "127.0.0.1:4222";
/// A guard against hangs, not a timing assertion.
const PATIENCE: Duration = Duration::from_secs(30);

/// The two backends.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Embedded,
    Nats,
}

/// Runs each named case once per backend, as two tests.
macro_rules! on_both {
    ($($case:ident),* $(,)?) => {$(
        mod $case {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn embedded() {
                super::$case(super::Kind::Embedded).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn nats() {
                super::$case(super::Kind::Nats).await;
            }
        }
    )*};
}

on_both!(
    sync_fan_out_lists_each_failure_by_function,
    a_loop_is_cut_with_one_message_and_reported_to_the_first_publisher,
    an_async_publish_at_the_limit_is_a_dead_letter_and_its_retry_is_delivered,
    async_delivery_carries_the_cause_and_hops_of_its_chain,
    failures_are_retried_then_dead_lettered_and_a_retry_numbers_on,
    patterns_match_alike_and_each_function_gets_an_event_once,
    a_deliverer_that_is_gone_is_reported_as_shutting_down,
    a_delivery_never_sent_uses_no_attempt,
    a_wider_pattern_added_mid_delivery_loses_no_accepted_event,
);

// ---------------------------------------------------------------------------------------
// The cases.

async fn sync_fan_out_lists_each_failure_by_function(kind: Kind) {
    let Some(rig) = Rig::new(
        kind,
        8,
        &[
            ("a", "order.placed"),
            ("b", "order.placed"),
            ("c", "order.placed"),
        ],
        |call| {
            Box::pin(async move {
                if &*call.function == "b" {
                    Err(DeliveryError::retryable(500, "b broke"))
                } else {
                    Ok(())
                }
            })
        },
    )
    .await
    else {
        return;
    };
    let result = rig
        .bus
        .publish(event("order.placed"), Causation::root())
        .await;
    assert!(result.published);
    assert_eq!(result.delivered, 2, "{result:?}");
    assert_eq!(result.errors, [failure("b", "b broke")]);
    for function in ["a", "b", "c"] {
        let seen = rig.seen(function);
        assert_eq!(seen.len(), 1, "{function} got it once: {seen:?}");
        assert_eq!(seen[0].id, result.event_id);
        assert_eq!(seen[0].object["shshops"], 0);
        assert!(seen[0].object.get("shscause").is_none());
        assert_eq!(seen[0].delivery_hops, 1, "a delivery runs one hop further");
    }

    let nobody = rig
        .bus
        .publish(event("nobody.listens"), Causation::root())
        .await;
    assert_eq!((nobody.delivered, nobody.errors.len()), (0, 0));
    rig.finish().await;
}

async fn a_loop_is_cut_with_one_message_and_reported_to_the_first_publisher(kind: Kind) {
    // "echo" publishes every event it gets again, synchronously, in the delivery's causation.
    let Some(rig) = Rig::new(kind, 3, &[("echo", "loop.ping")], |call| {
        Box::pin(async move {
            let again = Event::new(
                call.event.event_type.clone(),
                "/functions/echo".into(),
                None,
            )
            .expect("valid type");
            let inner = call
                .bus
                .publish(again, call.cause.caused_by(u64::from(call.cause.hops())))
                .await;
            assert!(
                !inner.errors.is_empty(),
                "every level sees the cut below it"
            );
            Ok(())
        })
    })
    .await
    else {
        return;
    };
    let result = rig.bus.publish(event("loop.ping"), Causation::root()).await;
    assert_eq!(result.delivered, 1);
    assert_eq!(
        result.errors,
        [failure(
            "echo",
            "hop limit of 3 reached: event \"loop.ping\" was not delivered (does a chain of events loop?)"
        )],
        "the cut is reported once, at the top, in the same words"
    );
    let hops: Vec<u32> = rig.seen("echo").iter().map(|s| s.delivery_hops).collect();
    assert_eq!(hops, [1, 2, 3], "three deliveries, then the cut");
    rig.finish().await;
}

async fn an_async_publish_at_the_limit_is_a_dead_letter_and_its_retry_is_delivered(kind: Kind) {
    // "last" republishes asynchronously what it gets; "next" takes that.
    let Some(rig) = Rig::new(
        kind,
        3,
        &[("last", "cut.here"), ("next", "cut.next")],
        |call| {
            Box::pin(async move {
                if &*call.function == "last" {
                    let next = Event::new("cut.next".into(), "/functions/last".into(), None)
                        .expect("valid type");
                    call.bus
                        .publish_async(next, call.cause.detached())
                        .await
                        .map_err(|e| DeliveryError::retryable(500, e.to_string()))?;
                }
                Ok(())
            })
        },
    )
    .await
    else {
        return;
    };
    let at_limit = event("cut.here")
        .with_extension(HOPS_ATTRIBUTE, json!(3))
        .expect("valid hops");
    let id = rig
        .bus
        .publish_async(at_limit, Causation::root())
        .await
        .expect("accepted");
    let letters = rig.dead_letters_of("last", 1).await;
    let letter = &letters[0];
    assert_eq!(
        (
            letter.event_id.as_deref().unwrap_or_default(),
            letter.event_type.as_deref().unwrap_or_default()
        ),
        (id.as_str(), "cut.here")
    );
    assert_eq!(letter.attempts.len(), 1);
    let cut = &letter.attempts[0];
    assert_eq!((cut.attempt, cut.status), (1, 508));
    assert_eq!(
        cut.error,
        "hop limit of 3 reached: event \"cut.here\" was not delivered (does a chain of events loop?)"
    );
    assert!(
        rig.seen("last").is_empty(),
        "a cut event is never attempted"
    );

    // Retried, it is delivered (deliveries are never cut), and what it publishes is cut.
    assert!(rig.bus.retry_dead_letter(&letter.id).await.expect("retry"));
    rig.wait_for("last", 1).await;
    assert_eq!(rig.seen("last")[0].delivery_hops, 4);
    let next = rig.dead_letters_of("next", 1).await;
    assert_eq!(next[0].attempts[0].status, 508);
    assert!(rig.dead_letters_of("last", 0).await.is_empty());
    assert!(rig.seen("next").is_empty());
    rig.finish().await;
}

async fn async_delivery_carries_the_cause_and_hops_of_its_chain(kind: Kind) {
    // "paid" publishes, synchronously and while handling its event, an event that claims
    // another cause; "ship" takes it.
    let Some(rig) = Rig::new(
        kind,
        8,
        &[("paid", "order.paid"), ("ship", "order.shipped")],
        |call| {
            Box::pin(async move {
                if &*call.function == "paid" {
                    let shipped =
                        Event::new("order.shipped".into(), "/functions/paid".into(), None)
                            .and_then(|e| e.with_extension(CAUSE_ATTRIBUTE, json!("claimed")))
                            .expect("valid event");
                    let result = call.bus.publish(shipped, call.cause.caused_by(1)).await;
                    if result.delivered != 1 {
                        return Err(DeliveryError::retryable(500, format!("{result:?}")));
                    }
                }
                Ok(())
            })
        },
    )
    .await
    else {
        return;
    };
    let paid = rig
        .bus
        .publish_async(event("order.paid"), Causation::root())
        .await
        .expect("accepted");
    rig.wait_for("ship", 1).await;
    let first = &rig.seen("paid")[0];
    assert_eq!(first.id, paid);
    assert_eq!((first.hops, first.cause.as_deref()), (0, None));
    assert_eq!(first.delivery_hops, 1);
    let child = &rig.seen("ship")[0];
    assert_eq!(
        child.cause.as_deref(),
        Some(paid.as_str()),
        "the delivery's event is the cause, whatever the publisher claims"
    );
    assert_eq!(child.object["shscause"], paid.as_str());
    assert_eq!((child.hops, child.object["shshops"].clone()), (1, json!(1)));
    assert_eq!(child.delivery_hops, 2);
    assert_eq!(rig.seen("paid").len(), 1, "delivered once");
    rig.finish().await;
}

async fn a_delivery_never_sent_uses_no_attempt(kind: Kind) {
    // Two failed attempts of three; the third is never sent (as at shutdown or a redeploy),
    // twice; then the function takes it. Nothing was tried three times: no dead letter.
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = calls.clone();
    let Some(rig) = Rig::new(kind, 8, &[("late", "last.try")], move |_call| {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            match n {
                0 | 1 => Err(DeliveryError::retryable(503, "busy")),
                2 | 3 => Err(DeliveryError::not_attempted(503, "shutting down")),
                _ => Ok(()),
            }
        })
    })
    .await
    else {
        return;
    };
    rig.bus
        .publish_async(event("last.try"), Causation::root())
        .await
        .expect("accepted");
    rig.wait_for("late", 5).await;
    assert!(
        rig.dead_letters_of("late", 0).await.is_empty(),
        "delivered, not buried"
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        5,
        "delivered once it was sent"
    );
    rig.finish().await;
}

async fn failures_are_retried_then_dead_lettered_and_a_retry_numbers_on(kind: Kind) {
    let broken = Arc::new(AtomicBool::new(true));
    let flag = broken.clone();
    let Some(rig) = Rig::new(
        kind,
        8,
        &[("flaky", "job.run"), ("final", "job.final")],
        move |call| {
            let broken = flag.load(Ordering::SeqCst);
            Box::pin(async move {
                match &*call.function {
                    "final" => Err(DeliveryError::permanent(404, "gone")),
                    _ if broken => Err(DeliveryError::retryable(503, "busy")),
                    _ => Ok(()),
                }
            })
        },
    )
    .await
    else {
        return;
    };
    let payload =
        serde_json::value::RawValue::from_string(r#"{"job":7}"#.to_owned()).expect("json");
    let job = Event::new("job.run".into(), "/test".into(), Some(payload)).expect("valid");
    let id = rig
        .bus
        .publish_async(job, Causation::root())
        .await
        .expect("accepted");
    let letters = rig.dead_letters_of("flaky", 1).await;
    let letter = &letters[0];
    assert_eq!(
        (
            letter.function.as_str(),
            letter.event_id.as_deref().unwrap_or_default()
        ),
        ("flaky", id.as_str())
    );
    let object: Value =
        serde_json::from_str(letter.event.as_ref().map_or("null", |e| e.get())).expect("json");
    assert_eq!(object["payload"], json!({"job": 7}));
    assert_eq!(
        attempts_of(letter),
        [(1, 503), (2, 503), (3, 503)],
        "max_attempts, then dead"
    );
    assert!(letter.attempts.iter().all(|a| a.error == "busy"));
    assert_eq!(rig.seen("flaky").len(), 3);

    // Still broken: the retry gets max_attempts new attempts, numbered after the first three.
    assert!(rig.bus.retry_dead_letter(&letter.id).await.expect("retry"));
    rig.wait_for("flaky", 6).await;
    let again = rig.dead_letters_of("flaky", 1).await;
    assert_eq!(
        attempts_of(&again[0]),
        [(1, 503), (2, 503), (3, 503), (4, 503), (5, 503), (6, 503)]
    );

    // Fixed: the next retry delivers it.
    broken.store(false, Ordering::SeqCst);
    assert!(
        rig.bus
            .retry_dead_letter(&again[0].id)
            .await
            .expect("retry")
    );
    rig.wait_for("flaky", 7).await;
    assert!(rig.dead_letters_of("flaky", 0).await.is_empty());

    // A failure no retry can fix is dead at once; dead letters can be deleted.
    rig.bus
        .publish_async(event("job.final"), Causation::root())
        .await
        .expect("accepted");
    let dead = rig.dead_letters_of("final", 1).await;
    assert_eq!(attempts_of(&dead[0]), [(1, 404)]);
    assert_eq!(dead[0].attempts[0].error, "gone");
    let typed = rig
        .bus
        .dead_letters(DeadLetterFilter {
            event_type: Some("job.final".into()),
            limit: 10,
            ..DeadLetterFilter::default()
        })
        .await
        .expect("list");
    assert_eq!(typed.len(), 1, "filtered by type");
    assert!(
        rig.bus
            .delete_dead_letter(&dead[0].id)
            .await
            .expect("delete")
    );
    assert!(rig.dead_letters_of("final", 0).await.is_empty());
    for unknown in ["999999", "not-an-id"] {
        assert!(!rig.bus.retry_dead_letter(unknown).await.expect("retry"));
        assert!(!rig.bus.delete_dead_letter(unknown).await.expect("delete"));
    }
    rig.finish().await;
}

async fn patterns_match_alike_and_each_function_gets_an_event_once(kind: Kind) {
    let subscriptions = [
        ("f", "orders.>"),
        ("f", "orders.*.paid"),
        ("g", "*.created"),
    ];
    let Some(rig) = Rig::new(kind, 8, &subscriptions, |_| Box::pin(async { Ok(()) })).await else {
        return;
    };
    assert!(
        rig.bus.subscribe("f", "orders.>").is_ok_and(|added| !added),
        "already"
    );
    assert!(rig.bus.subscribe("f", "a.>.b").is_err(), "`>` only last");
    assert_eq!(rig.bus.subscriptions_of("f"), ["orders.*.paid", "orders.>"]);
    for (event_type, delivered) in [
        ("orders.eu.paid", 1),
        ("orders", 0),
        ("orders.eu", 1),
        ("user.created", 1),
        ("a.b.created", 0),
    ] {
        let result = rig.bus.publish(event(event_type), Causation::root()).await;
        assert_eq!(result.delivered, delivered, "{event_type}: {result:?}");
    }
    assert_eq!(rig.seen("f").len(), 2, "once, though two patterns match");

    let id = rig
        .bus
        .publish_async(event("orders.us.paid"), Causation::root())
        .await
        .expect("accepted");
    rig.wait_for("f", 3).await;
    rig.quiet().await;
    let ids: Vec<String> = rig.seen("f").into_iter().map(|s| s.id).collect();
    assert_eq!(ids.iter().filter(|i| **i == id).count(), 1, "once: {ids:?}");

    assert!(rig.bus.unsubscribe("g", "*.created"));
    assert!(!rig.bus.unsubscribe("g", "*.created"));
    let result = rig
        .bus
        .publish(event("user.created"), Causation::root())
        .await;
    assert_eq!(result.delivered, 0);
    rig.finish().await;
}

async fn a_deliverer_that_is_gone_is_reported_as_shutting_down(kind: Kind) {
    let Some(mut rig) = Rig::new(kind, 8, &[("f", "late.event")], |_| {
        Box::pin(async { Ok(()) })
    })
    .await
    else {
        return;
    };
    rig.deliverer = None;
    let result = rig
        .bus
        .publish(event("late.event"), Causation::root())
        .await;
    assert_eq!(result.delivered, 0);
    assert_eq!(
        result.errors,
        [failure("f", "the supervisor is shutting down")]
    );
    rig.finish().await;
}

async fn a_wider_pattern_added_mid_delivery_loses_no_accepted_event(kind: Kind) {
    // "f" takes orders.paid; while handling its first event it subscribes to orders.* too,
    // and holds that delivery until a second orders.paid event is accepted.
    let second_accepted = Arc::new(AtomicBool::new(false));
    let subscribed = Arc::new(AtomicBool::new(false));
    let (accepted, first) = (second_accepted.clone(), subscribed.clone());
    let Some(rig) = Rig::new(kind, 8, &[("f", "orders.paid")], move |call| {
        let (accepted, first) = (accepted.clone(), first.clone());
        Box::pin(async move {
            if !first.swap(true, Ordering::SeqCst) {
                call.bus
                    .subscribe(&call.function, "orders.*")
                    .expect("valid pattern");
                assert!(
                    poll(|| async { accepted.load(Ordering::SeqCst) }).await,
                    "the second event is accepted"
                );
            }
            Ok(())
        })
    })
    .await
    else {
        return;
    };
    let one = rig
        .bus
        .publish_async(event("orders.paid"), Causation::root())
        .await
        .expect("accepted");
    rig.wait_for("f", 1).await;
    let two = rig
        .bus
        .publish_async(event("orders.paid"), Causation::root())
        .await
        .expect("accepted");
    second_accepted.store(true, Ordering::SeqCst);
    rig.wait_for("f", 2).await;
    // Both consumers exist now: an event both patterns match is delivered once.
    rig.ready(&[("f", "orders.paid"), ("f", "orders.*")]).await;
    let three = rig
        .bus
        .publish_async(event("orders.paid"), Causation::root())
        .await
        .expect("accepted");
    rig.wait_for("f", 3).await;
    rig.quiet().await;
    let ids: Vec<String> = rig.seen("f").into_iter().map(|s| s.id).collect();
    assert_eq!(ids, [one, two, three], "each once, in order, on {kind:?}");
    let letters = rig.bus.dead_letters(DeadLetterFilter {
        function: None,
        event_type: None,
        kind: None,
        limit: 10,
    });
    assert!(letters.await.expect("listed").is_empty(), "no dead letter");
    rig.finish().await;
}

// ---------------------------------------------------------------------------------------
// The rig: a bus of either kind with a scripted deliverer.

fn event(event_type: &str) -> Event {
    Event::new(event_type.to_owned(), "/test".to_owned(), None).expect("valid type")
}

fn failure(function: &str, message: &str) -> DeliveryFailure {
    DeliveryFailure {
        function: function.to_owned(),
        message: message.to_owned(),
    }
}

fn attempts_of(letter: &DeadLetter) -> Vec<(u32, u16)> {
    letter
        .attempts
        .iter()
        .map(|a| (a.attempt, a.status))
        .collect()
}

/// One delivery the scripted deliverer got.
#[derive(Clone, Debug)]
struct Seen {
    id: String,
    hops: u32,
    cause: Option<String>,
    object: Value,
    /// The hop count of the delivery's causation.
    delivery_hops: u32,
}

/// What a script is called with.
struct Call {
    bus: Arc<Bus>,
    function: Arc<str>,
    event: Arc<SharedEvent>,
    cause: Causation,
}

type Script = dyn Fn(Call) -> BoxFuture<'static, Result<(), DeliveryError>> + Send + Sync;

/// Every delivery made, by function.
type Log = Arc<Mutex<Vec<(Arc<str>, Seen)>>>;

struct Scripted {
    bus: OnceLock<Weak<Bus>>,
    script: Box<Script>,
    seen: Log,
}

impl Deliver for Scripted {
    fn deliver(
        &self,
        function: Arc<str>,
        event: Arc<SharedEvent>,
        cause: Causation,
    ) -> BoxFuture<'static, Result<(), DeliveryError>> {
        let seen = Seen {
            id: event.id.clone(),
            hops: event.hops,
            cause: event.cause.clone(),
            object: serde_json::from_str(event.json().get()).unwrap_or(Value::Null),
            delivery_hops: cause.hops(),
        };
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((function.clone(), seen));
        let Some(bus) = self.bus.get().and_then(Weak::upgrade) else {
            return Box::pin(async { Err(DeliveryError::retryable(503, "no bus")) });
        };
        (self.script)(Call {
            bus,
            function,
            event,
            cause,
        })
    }

    fn retry_policy(&self, _function: &str) -> RetryPolicy {
        RetryPolicy {
            max_attempts: 3,
            backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(200),
            ordered: true,
            max_in_flight: 4,
            timeout: Duration::from_secs(5),
        }
    }
}

struct Rig {
    kind: Kind,
    bus: Arc<Bus>,
    deliverer: Option<Arc<Scripted>>,
    /// Every delivery, kept when the deliverer is dropped.
    seen: Log,
    _dir: Option<tempfile::TempDir>,
    ns: Option<Namespace>,
}

impl Rig {
    /// A bus of `kind` with the hop limit `max_hops`, `subscriptions` made and ready to take
    /// events, and `script` deciding each delivery; `None` when NATS is wanted but absent.
    async fn new(
        kind: Kind,
        max_hops: u32,
        subscriptions: &[(&str, &str)],
        script: impl Fn(Call) -> BoxFuture<'static, Result<(), DeliveryError>> + Send + Sync + 'static,
    ) -> Option<Rig> {
        let (bus, dir, ns) = match kind {
            Kind::Embedded => {
                let dir = tempfile::tempdir().expect("temp dir");
                let store = Store::open(dir.path(), Durability::Normal).expect("store");
                let bus = Bus::with_store(max_hops, Arc::new(store), Duration::from_secs(3600));
                (bus, Some(dir), None)
            }
            Kind::Nats => {
                if !nats_available() {
                    return None;
                }
                let ns = Namespace::new();
                let bus = shs_nats::connect(NatsConfig {
                    url: format!("nats://{NATS}"),
                    namespace: ns.name().to_owned(),
                    sync_timeout: Duration::from_secs(10),
                    ack_wait: Duration::from_secs(5),
                    max_hops,
                })
                .await
                .expect("connect to NATS");
                (bus, None, Some(ns))
            }
        };
        let bus = Arc::new(bus);
        let seen = Log::default();
        let deliverer = Arc::new(Scripted {
            bus: OnceLock::new(),
            script: Box::new(script),
            seen: seen.clone(),
        });
        let _ = deliverer.bus.set(Arc::downgrade(&bus));
        bus.attach(Arc::downgrade(&deliverer) as Weak<dyn Deliver>);
        bus.start(Vec::new()).await.expect("start");
        for (function, pattern) in subscriptions {
            assert!(bus.subscribe(function, pattern).expect("valid pattern"));
        }
        let rig = Rig {
            kind,
            bus,
            seen,
            deliverer: Some(deliverer),
            _dir: dir,
            ns,
        };
        rig.ready(subscriptions).await;
        Some(rig)
    }

    /// Waits until NATS takes the events of every subscribed function: its synchronous queue
    /// group answers, and its consumers (one per pattern, and the retries) exist.
    async fn ready(&self, subscriptions: &[(&str, &str)]) {
        let Some(ns) = &self.ns else { return };
        let client = async_nats::connect(NATS).await.expect("connect");
        let mut functions: Vec<&str> = subscriptions.iter().map(|(f, _)| *f).collect();
        functions.sort_unstable();
        functions.dedup();
        for function in &functions {
            let subject = format!("{}.sync.{function}", ns.name());
            let answers = || async { client.request(subject.clone(), "".into()).await.is_ok() };
            assert!(poll(answers).await, "{function} takes synchronous events");
        }
        let js = async_nats::jetstream::new(client);
        let consumers = subscriptions.len() + functions.len();
        let counted = || async {
            let Ok(stream) = js.get_stream(ns.stream("EVENTS")).await else {
                return false;
            };
            stream.consumer_names().count().await >= consumers
        };
        assert!(poll(counted).await, "{consumers} consumers");
    }

    /// Waits until NATS has nothing in flight or waiting for any consumer (a no-op on the
    /// embedded store, where each function has one pending delivery per event by construction).
    async fn quiet(&self) {
        let Some(ns) = &self.ns else { return };
        let client = async_nats::connect(NATS).await.expect("connect");
        let js = async_nats::jetstream::new(client);
        let idle = || async {
            let Ok(stream) = js.get_stream(ns.stream("EVENTS")).await else {
                return false;
            };
            let infos: Vec<_> = stream.consumers().collect().await;
            infos
                .into_iter()
                .all(|info| info.is_ok_and(|i| i.num_pending == 0 && i.num_ack_pending == 0))
        };
        assert!(poll(idle).await, "the consumers settle");
    }

    /// The deliveries made to `function`, in order.
    fn seen(&self, function: &str) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|(f, _)| &**f == function)
            .map(|(_, s)| s.clone())
            .collect()
    }

    /// Waits until `function` has had `count` deliveries.
    async fn wait_for(&self, function: &str, count: usize) {
        let enough = || async { self.seen(function).len() >= count };
        assert!(
            poll(enough).await,
            "{function}: {} of {count} deliveries on {:?}",
            self.seen(function).len(),
            self.kind
        );
    }

    /// Waits until `function` has exactly `count` dead letters, and returns them.
    async fn dead_letters_of(&self, function: &str, count: usize) -> Vec<DeadLetter> {
        let list = || async {
            self.bus
                .dead_letters(DeadLetterFilter {
                    function: Some(function.to_owned()),
                    event_type: None,
                    kind: None,
                    limit: 100,
                })
                .await
                .expect("list dead letters")
        };
        let counted = || async { list().await.len() == count };
        assert!(
            poll(counted).await,
            "{function}: {count} dead letters on {:?}, not {:?}",
            self.kind,
            list().await
        );
        list().await
    }

    async fn finish(self) {
        self.bus.quiesce();
        self.bus.flush().await;
    }
}

/// Polls `check` until it holds, for up to [`PATIENCE`].
async fn poll<F, Fut>(mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
