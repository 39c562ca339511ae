//! The shs event bus.
//!
//! This crate owns the subscription table (which function takes which event types), publishing
//! (one event, fanned out to every subscribing function in parallel), and the rules that keep
//! chains of events finite: the hop limit, and the causal context ([`Causation`]) that a publish
//! carries so that whoever delivers events can tell when a delivery would wait on itself. It
//! holds no process code: delivering an event to a function is the job of a [`Deliver`]
//! implementation that the supervisor attaches.
//!
//! # Theory of operation
//!
//! A [`Bus`] is the interface; [`LocalBus`] is the in-memory implementation for one
//! supervisor, with synchronous publishing: [`Bus::publish`] returns once every subscriber has
//! answered, failed or timed out, and lists each failure. The table maps patterns to functions
//! (see [`table`] for the wildcard rules); each matching function gets the event once, however
//! many of its patterns match.
//!
//! Every publish happens in a [`Causation`]: how many deliveries led to it (`hops`), which
//! calls upstream are blocked until it finishes (`waiting`, opaque numbers chosen by the
//! deliverer), and where failures further down the chain are collected so that the first
//! publisher sees them. A publish at `hops >= max_hops` is cut: it reaches nobody and each
//! would-be subscriber is reported in `errors`.

use std::fmt;
use std::sync::{Arc, OnceLock, Weak};
use std::time::SystemTime;

use futures::future::{BoxFuture, join_all};
use parking_lot::{Mutex, RwLock};
use serde_json::value::RawValue;
use shs_protocol::methods::{DeliveryFailure, EventObject, PublishResult};

pub mod table;

pub use table::{Subscription, SubscriptionTable, validate_pattern, validate_type};

/// The default hop limit: how many deliveries a chain of events may take before it is cut.
pub const DEFAULT_MAX_HOPS: u32 = 16;

/// What the bus refuses.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BusError {
    /// An event type or pattern that breaks the naming rules.
    #[error("invalid event type {event_type:?}: {reason}")]
    InvalidType {
        /// The offending type (cut to 80 characters).
        event_type: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
}

/// An event about to be published.
#[derive(Debug)]
pub struct Event {
    id: String,
    event_type: String,
    source: String,
    time: String,
    payload: Box<RawValue>,
}

impl Event {
    /// A new event with a fresh id (a UUID v7, so ids sort by time) and the current time.
    ///
    /// `payload` must be line-safe JSON (see [`shs_protocol::codec::line_safe`]); `None` is
    /// `null`.
    pub fn new(
        event_type: String,
        source: String,
        payload: Option<Box<RawValue>>,
    ) -> Result<Event, BusError> {
        validate_type(&event_type)?;
        Ok(Event {
            id: uuid::Uuid::now_v7().to_string(),
            event_type,
            source,
            time: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            payload: payload.unwrap_or_else(null),
        })
    }

    /// Keeps an id given by the publisher (e.g. a CloudEvents `id`) instead of a fresh one.
    pub fn with_id(mut self, id: String) -> Event {
        self.id = id;
        self
    }

    /// Keeps a time given by the publisher (e.g. a CloudEvents `time`) instead of now.
    pub fn with_time(mut self, time: String) -> Event {
        self.time = time;
        self
    }

    /// The event's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The event's type.
    pub fn event_type(&self) -> &str {
        &self.event_type
    }

    /// Encodes the event once for all its deliveries.
    pub fn share(self) -> Arc<SharedEvent> {
        let object = EventObject {
            id: self.id.as_str(),
            event_type: self.event_type.as_str(),
            source: self.source.as_str(),
            time: self.time.as_str(),
            payload: &*self.payload,
        };
        let json = serde_json::value::to_raw_value(&object).unwrap_or_else(|_| null());
        Arc::new(SharedEvent {
            id: self.id,
            event_type: self.event_type,
            json,
        })
    }
}

fn null() -> Box<RawValue> {
    RawValue::from_string("null".to_owned()).unwrap_or_else(|_| unreachable!("null is JSON"))
}

/// An event encoded as the object a function receives, shared by all its deliveries.
#[derive(Debug)]
pub struct SharedEvent {
    /// The event's id.
    pub id: String,
    /// The event's type.
    pub event_type: String,
    json: Box<RawValue>,
}

impl SharedEvent {
    /// The event object, `{"id", "type", "source", "time", "payload"}`, as one line of JSON.
    pub fn json(&self) -> &RawValue {
        &self.json
    }
}

/// Failures collected down a chain of synchronous deliveries, for the first publisher.
#[derive(Clone, Default)]
struct FailureSink(Arc<Mutex<Vec<DeliveryFailure>>>);

impl FailureSink {
    fn extend(&self, failures: &[DeliveryFailure]) {
        self.0.lock().extend_from_slice(failures);
    }

    fn take(&self) -> Vec<DeliveryFailure> {
        std::mem::take(&mut *self.0.lock())
    }
}

/// The causal context of a publish or a delivery.
///
/// The deliverer keeps the causation of each delivery it makes, and derives the causation of a
/// publish made while handling it with [`Causation::caused_by`] (the publisher waits for it) or
/// [`Causation::detached`] (fire-and-forget).
#[derive(Clone, Default)]
pub struct Causation {
    hops: u32,
    waiting: Arc<[u64]>,
    sink: Option<FailureSink>,
}

impl fmt::Debug for Causation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Causation")
            .field("hops", &self.hops)
            .field("waiting", &self.waiting)
            .finish_non_exhaustive()
    }
}

impl Causation {
    /// The causation of a publish or call that nothing led to (an HTTP request).
    pub fn root() -> Causation {
        Causation::default()
    }

    /// How many deliveries led here.
    pub fn hops(&self) -> u32 {
        self.hops
    }

    /// The calls, upstream, that cannot finish before this one does.
    pub fn waiting(&self) -> &[u64] {
        &self.waiting
    }

    /// The causation of a synchronous publish made by the call `call` that runs in `self`:
    /// `call` waits for the publish, and so does everything `self` waits for.
    pub fn caused_by(&self, call: u64) -> Causation {
        let mut waiting = Vec::with_capacity(self.waiting.len() + 1);
        waiting.extend_from_slice(&self.waiting);
        waiting.push(call);
        Causation {
            hops: self.hops,
            waiting: waiting.into(),
            sink: self.sink.clone(),
        }
    }

    /// The causation of a fire-and-forget publish made in `self`: the hops still count, but
    /// nobody waits for it and its failures are only logged.
    pub fn detached(&self) -> Causation {
        Causation {
            hops: self.hops,
            waiting: Arc::from([]),
            sink: None,
        }
    }

    /// The causation of a publish that any of several calls may have made (a process with
    /// several requests in flight that did not say which one publishes): the most hops of
    /// them, and all of them waiting. Erring this way keeps loops counted and never misses a
    /// wait on itself; at worst it reports a cycle where there was only contention.
    pub fn merged<'a>(causes: impl IntoIterator<Item = (&'a Causation, u64)>) -> Causation {
        let mut hops = 0;
        let mut waiting = Vec::new();
        let mut sink = None;
        for (cause, call) in causes {
            hops = hops.max(cause.hops);
            waiting.extend_from_slice(&cause.waiting);
            waiting.push(call);
            sink = sink.or_else(|| cause.sink.clone());
        }
        waiting.sort_unstable();
        waiting.dedup();
        Causation {
            hops,
            waiting: waiting.into(),
            sink,
        }
    }
}

/// Delivers an event to one function. Implemented by the supervisor.
pub trait Deliver: Send + Sync + 'static {
    /// Runs `function` on `event`, and resolves once it has answered. `Err` carries a message
    /// saying what went wrong (the function's error, a crash, a timeout, a cycle).
    fn deliver(
        &self,
        function: Arc<str>,
        event: Arc<SharedEvent>,
        cause: Causation,
    ) -> BoxFuture<'static, Result<(), String>>;
}

/// The event bus: the subscription table and publishing. A second backend implements this.
pub trait Bus: Send + Sync + 'static {
    /// Attaches whoever delivers events to functions. Called once, at start-up.
    fn attach(&self, deliverer: Weak<dyn Deliver>);

    /// Subscribes `function` to `pattern`; `Ok(false)` when it was subscribed already.
    fn subscribe(&self, function: &str, pattern: &str) -> Result<bool, BusError>;

    /// Drops the subscription of `function` to `pattern`; returns whether there was one.
    fn unsubscribe(&self, function: &str, pattern: &str) -> bool;

    /// Drops every subscription of `function` (it was removed); returns its patterns.
    fn remove_function(&self, function: &str) -> Vec<String>;

    /// Every subscription, sorted by pattern, then function.
    fn subscriptions(&self) -> Vec<Subscription>;

    /// The patterns `function` is subscribed to, sorted.
    fn subscriptions_of(&self, function: &str) -> Vec<String>;

    /// Publishes `event` synchronously: resolves once every subscriber has answered, failed or
    /// timed out.
    fn publish(&self, event: Event, cause: Causation) -> BoxFuture<'_, PublishResult>;
}

/// The in-memory bus of one supervisor.
pub struct LocalBus {
    table: RwLock<SubscriptionTable>,
    deliverer: OnceLock<Weak<dyn Deliver>>,
    max_hops: u32,
}

impl LocalBus {
    /// A bus that cuts chains of events after `max_hops` deliveries.
    pub fn new(max_hops: u32) -> LocalBus {
        LocalBus {
            table: RwLock::new(SubscriptionTable::new()),
            deliverer: OnceLock::new(),
            max_hops,
        }
    }
}

impl Default for LocalBus {
    fn default() -> Self {
        LocalBus::new(DEFAULT_MAX_HOPS)
    }
}

impl Bus for LocalBus {
    fn attach(&self, deliverer: Weak<dyn Deliver>) {
        if self.deliverer.set(deliverer).is_err() {
            tracing::warn!("a deliverer was attached to the bus twice; keeping the first");
        }
    }

    fn subscribe(&self, function: &str, pattern: &str) -> Result<bool, BusError> {
        let added = self.table.write().insert(function, pattern)?;
        if added {
            tracing::info!(function, pattern, "subscribed");
        }
        Ok(added)
    }

    fn unsubscribe(&self, function: &str, pattern: &str) -> bool {
        let removed = self.table.write().remove(function, pattern);
        if removed {
            tracing::info!(function, pattern, "unsubscribed");
        }
        removed
    }

    fn remove_function(&self, function: &str) -> Vec<String> {
        self.table.write().remove_function(function)
    }

    fn subscriptions(&self) -> Vec<Subscription> {
        self.table.read().all()
    }

    fn subscriptions_of(&self, function: &str) -> Vec<String> {
        self.table.read().patterns_of(function)
    }

    fn publish(&self, event: Event, cause: Causation) -> BoxFuture<'_, PublishResult> {
        let subscribers = self.table.read().matching(event.event_type());
        let event = event.share();
        Box::pin(async move {
            let mut result = PublishResult {
                published: true,
                event_id: event.id.clone(),
                delivered: 0,
                errors: Vec::new(),
            };
            tracing::debug!(
                event_id = %event.id,
                event_type = %event.event_type,
                subscribers = subscribers.len(),
                hops = cause.hops,
                "publishing"
            );
            if subscribers.is_empty() {
                return result;
            }
            if cause.hops >= self.max_hops {
                tracing::warn!(
                    event_id = %event.id,
                    event_type = %event.event_type,
                    max_hops = self.max_hops,
                    "hop limit reached; event not delivered"
                );
                result.errors = subscribers
                    .iter()
                    .map(|function| DeliveryFailure {
                        function: function.to_string(),
                        message: format!(
                            "hop limit of {} reached: event {:?} was not delivered (does a chain of events loop?)",
                            self.max_hops, event.event_type
                        ),
                    })
                    .collect();
            } else if let Some(deliverer) = self.deliverer.get().and_then(Weak::upgrade) {
                let sink = FailureSink::default();
                let delivery_cause = Causation {
                    hops: cause.hops + 1,
                    waiting: cause.waiting.clone(),
                    sink: Some(sink.clone()),
                };
                let outcomes = join_all(subscribers.iter().map(|function| {
                    deliverer.deliver(function.clone(), event.clone(), delivery_cause.clone())
                }))
                .await;
                for (function, outcome) in subscribers.iter().zip(outcomes) {
                    match outcome {
                        Ok(()) => result.delivered += 1,
                        Err(message) => result.errors.push(DeliveryFailure {
                            function: function.to_string(),
                            message,
                        }),
                    }
                }
                // Failures further down the chain this event started.
                result.errors.extend(sink.take());
            } else {
                result.errors = subscribers
                    .iter()
                    .map(|function| DeliveryFailure {
                        function: function.to_string(),
                        message: "the supervisor is shutting down".to_owned(),
                    })
                    .collect();
            }
            if let Some(parent) = &cause.sink {
                parent.extend(&result.errors);
            }
            result
        })
    }
}

#[cfg(test)]
mod tests;
