//! The shs event bus.
//!
//! This crate owns the subscription table (which function takes which event types), publishing
//! (one event, fanned out to every subscribing function in parallel), the rules that keep
//! chains of events finite (the hop limit, and the causal context ([`Causation`]) that lets
//! whoever delivers events tell when a delivery would wait on itself), and durable
//! asynchronous delivery: the embedded [`store::Store`] and the per-function delivery lanes
//! with retries and dead letters. It holds no process code: delivering an event to a function
//! is the job of a [`Deliver`] implementation that the supervisor attaches.
//!
//! # Theory of operation
//!
//! [`Bus`] is one concrete type over a [`Backend`] (transport and persistence): the embedded
//! backend of this crate (one supervisor, events in the embedded store) or NATS JetStream (in
//! `shs-nats`, shared by several supervisors). Every rule lives once, here, so both backends
//! behave the same word for word:
//!
//! - the bus places each event in its causal context (`rules::place`), cuts a publish at the
//!   hop limit with one message and status 508 (`rules::hop_cut`), and assembles what a
//!   synchronous publish answers (`rules::publish_result`); a backend only sees placed events
//!   that were not cut;
//! - every asynchronous delivery attempt, on either backend, is made and settled by
//!   [`settle::attempt`]: delivered, retried after the backoff with jitter, or a dead letter.
//!
//! Publishing comes in two modes:
//!
//! - **Synchronous** ([`Bus::publish`]): resolves once every subscriber has answered, failed or
//!   timed out, and lists each failure, including those further down the chain of events the
//!   publish caused.
//! - **Asynchronous** ([`Bus::publish_async`]): resolves once the event and one pending
//!   delivery per subscriber are stored durably; the deliveries are then made by the backend
//!   (lanes here, consumers on NATS), retried with backoff, and end as dead letters when they
//!   keep failing.
//!
//! The table maps patterns to functions (see [`table`] for the wildcard rules); each matching
//! function gets the event once, however many of its patterns match.
//!
//! Every publish happens in a [`Causation`]: how many deliveries led to it (`hops`), which
//! calls upstream are blocked until it finishes (`waiting`, opaque numbers chosen by the
//! deliverer), which event's delivery it runs in (for lineage), and where failures further
//! down the chain are collected so that the first publisher sees them. A publish at
//! `hops >= max_hops` is cut: it reaches nobody, and each would-be subscriber is reported (in
//! `errors`, or as a dead letter). Deliveries are never cut, so a retried dead letter is
//! delivered whatever its hop count (what it publishes is cut in turn).

mod backend;
mod bus;
mod causation;
mod deliver;
pub mod event;
pub mod idempotency;
pub mod invocation;
mod local;
mod queue;
mod rfc3339;
mod rules;
pub mod settle;
pub mod store;
pub mod table;

pub use backend::{Backend, Core, Deployment, Fanout, Learned, Publication};
pub use bus::Bus;
pub use causation::{Causation, Failures};
pub use deliver::{Deliver, DeliveryError, RetryPolicy};
pub use event::{Event, Origin, SharedEvent};
pub use invocation::{InvocationLimits, Invocations};
pub use rules::LOOP_DETECTED;
pub use settle::Settled;
pub use store::{
    Attempt, DeadLetter, DeadLetterFilter, EventFilter, EventInfo, EventPage, EventSummary, Traffic,
};
pub use table::{
    MAX_SUBSCRIPTIONS_PER_FUNCTION, Subscription, SubscriptionTable, validate_pattern,
    validate_type,
};

/// Counts a publish (`mode` is `sync` or `async`) for `GET /metrics`.
fn count_published(mode: &'static str) {
    metrics::counter!("shs_events_published_total", "mode" => mode).increment(1);
}

/// The outcomes [`count_delivery`] counts, in the order of [`DeliveryCounters`].
const DELIVERY_OUTCOMES: [&str; 3] = ["delivered", "failed", "dead_lettered"];
/// Most functions whose delivery counters are kept registered; past it, each count looks its
/// counter up (as every count did before).
const MAX_COUNTED_FUNCTIONS: usize = 10_000;

/// The delivery counters of one function, one per outcome, registered once.
type DeliveryCounters = [metrics::Counter; 3];

/// The delivery counters of each function that has had deliveries: looked up by name with a
/// read lock instead of building the metric's key and finding it in the registry each time.
static DELIVERY_COUNTERS: std::sync::LazyLock<
    parking_lot::RwLock<std::collections::HashMap<Box<str>, DeliveryCounters>>,
> = std::sync::LazyLock::new(Default::default);

fn delivery_counter(function: &str, outcome: &'static str) -> metrics::Counter {
    metrics::counter!("shs_event_deliveries_total", "function" => function.to_owned(), "outcome" => outcome)
}

/// Counts a delivery outcome (`delivered`, `failed` or `dead_lettered`) for `GET /metrics`.
fn count_delivery(function: &str, outcome: &'static str) {
    let Some(index) = DELIVERY_OUTCOMES.iter().position(|o| *o == outcome) else {
        delivery_counter(function, outcome).increment(1);
        return;
    };
    if let Some(counters) = DELIVERY_COUNTERS.read().get(function) {
        counters[index].increment(1);
        return;
    }
    let counters = DELIVERY_OUTCOMES.map(|o| delivery_counter(function, o));
    counters[index].increment(1);
    let mut all = DELIVERY_COUNTERS.write();
    if all.len() < MAX_COUNTED_FUNCTIONS {
        all.insert(function.into(), counters);
    }
}

/// Counts an asynchronous invocation's step (`accepted`, `succeeded`, `failed`) for
/// `GET /metrics`.
fn count_invocation(function: &str, outcome: &'static str) {
    metrics::counter!("shs_invocations_total", "function" => function.to_owned(), "outcome" => outcome)
        .increment(1);
}

/// The default hop limit: how many deliveries a chain of events may take before it is cut.
pub const DEFAULT_MAX_HOPS: u32 = 16;

/// What the bus refuses, or fails to do.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// An event type or pattern that breaks the naming rules.
    #[error("invalid event type {event_type:?}: {reason}")]
    InvalidType {
        /// The offending type (cut to 80 characters).
        event_type: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// A CloudEvents attribute with a bad name or value.
    #[error("invalid attribute {name:?}: {reason}")]
    InvalidAttribute {
        /// The attribute.
        name: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A process of a deployment that was removed or replaced tried to change its function's
    /// subscriptions.
    #[error(
        "function {function:?} was removed or redeployed: this process may no longer change its subscriptions"
    )]
    Retired {
        /// The function.
        function: String,
    },
    /// The bus has no durable store, so it cannot do this.
    #[error("{0} needs the event store, which this bus does not have")]
    Unsupported(&'static str),
    /// The durable store failed.
    #[error(transparent)]
    Store(#[from] store::StoreError),
    /// A function has as many queued invocations as it may have.
    #[error(
        "function {function:?} has {queued} invocations queued, the most it may have: try again \
         once some have run"
    )]
    TooManyInvocations {
        /// The function.
        function: String,
        /// How many are queued.
        queued: u64,
    },
    /// The store holds as many queued invocations as it may.
    #[error(
        "{queued} invocations are queued, the most this server keeps: try again once some have run"
    )]
    InvocationsFull {
        /// How many are queued.
        queued: u64,
    },
    /// The backend (e.g. NATS) failed.
    #[error("the event bus failed: {0}")]
    Backend(String),
    /// The backend did not confirm in time that it stored an asynchronous event: it may have
    /// stored it or not. Publishing it again with the same `source` and `id` is safe (a repeat
    /// is dropped).
    #[error(
        "the event bus did not confirm in time that it stored event {event_id:?} ({reason}): it \
         may or may not be accepted. Publish it again with the same source ({event_source:?}) and id \
         (as a CloudEvents event, in structured or binary mode, if you sent the simple form): a \
         repeat within 2 minutes is dropped, so it is accepted once"
    )]
    Unconfirmed {
        /// The event's id.
        event_id: String,
        /// The event's `source`.
        event_source: String,
        /// What happened (e.g. the acknowledgement timed out).
        reason: String,
    },
    /// A function subscribing to one more pattern than it may.
    #[error(
        "function {function:?} is subscribed to {limit} patterns, the most a function may have; unsubscribe from one first"
    )]
    TooManySubscriptions {
        /// The function.
        function: String,
        /// The limit.
        limit: usize,
    },
}

impl BusError {
    /// Whether the publisher asked for something invalid (as opposed to the bus failing).
    pub fn is_invalid_input(&self) -> bool {
        matches!(
            self,
            BusError::InvalidType { .. }
                | BusError::InvalidAttribute { .. }
                | BusError::TooManySubscriptions { .. }
        )
    }
}

#[cfg(test)]
mod tests;
