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
//! A [`Bus`] is the interface; [`LocalBus`] is the implementation for one supervisor (a second
//! backend, NATS JetStream, lives in `shs-nats`). Publishing comes in two modes:
//!
//! - **Synchronous** ([`Bus::publish`]): resolves once every subscriber has answered, failed or
//!   timed out, and lists each failure, including those further down the chain of events the
//!   publish caused.
//! - **Asynchronous** ([`Bus::publish_async`]): resolves once the event and one pending
//!   delivery per subscriber are on disk; the deliveries are then made by lanes, retried with
//!   backoff, and end as dead letters when they keep failing.
//!
//! The table maps patterns to functions (see [`table`] for the wildcard rules); each matching
//! function gets the event once, however many of its patterns match.
//!
//! Every publish happens in a [`Causation`]: how many deliveries led to it (`hops`), which
//! calls upstream are blocked until it finishes (`waiting`, opaque numbers chosen by the
//! deliverer), which event's delivery it runs in (for lineage), and where failures further
//! down the chain are collected so that the first publisher sees them. A publish at
//! `hops >= max_hops` is cut: it reaches nobody, and each would-be subscriber is reported (in
//! `errors`, or as a dead letter).

use std::sync::Weak;

use futures::future::BoxFuture;
use shs_protocol::methods::PublishResult;

mod causation;
mod deliver;
pub mod event;
mod local;
mod queue;
mod rfc3339;
pub mod store;
pub mod table;

pub use causation::{Causation, Failures};
pub use deliver::{Deliver, DeliveryError, RetryPolicy};
pub use event::{Event, Origin, SharedEvent};
pub use local::LocalBus;
pub use store::{DeadLetter, DeadLetterFilter, EventInfo};
pub use table::{Subscription, SubscriptionTable, validate_pattern, validate_type};

/// Counts a publish (`mode` is `sync` or `async`) for `GET /metrics`.
pub fn count_published(mode: &'static str) {
    metrics::counter!("shs_events_published_total", "mode" => mode).increment(1);
}

/// Counts a delivery outcome (`delivered`, `failed` or `dead_lettered`) for `GET /metrics`.
pub fn count_delivery(function: &str, outcome: &'static str) {
    metrics::counter!("shs_event_deliveries_total", "function" => function.to_owned(), "outcome" => outcome)
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
    /// The bus has no durable store, so it cannot do this.
    #[error("{0} needs the event store, which this bus does not have")]
    Unsupported(&'static str),
    /// The durable store failed.
    #[error(transparent)]
    Store(#[from] store::StoreError),
    /// The backend (e.g. NATS) failed.
    #[error("the event bus failed: {0}")]
    Backend(String),
}

impl BusError {
    /// Whether the publisher asked for something invalid (as opposed to the bus failing).
    pub fn is_invalid_input(&self) -> bool {
        matches!(
            self,
            BusError::InvalidType { .. } | BusError::InvalidAttribute { .. }
        )
    }
}

/// The event bus: the subscription table and publishing. A second backend implements this.
pub trait Bus: Send + Sync + 'static {
    /// Attaches whoever delivers events to functions. Called once, at start-up.
    fn attach(&self, deliverer: Weak<dyn Deliver>);

    /// Starts delivering what was left pending before a restart, and loads the subscriptions
    /// saved then (for the functions in `known`, the ones deployed now). Called once the
    /// deliverer knows its functions.
    fn start(&self, known: Vec<String>) -> BoxFuture<'_, Result<(), BusError>>;

    /// Subscribes `function` to `pattern`; `Ok(false)` when it was subscribed already.
    fn subscribe(&self, function: &str, pattern: &str) -> Result<bool, BusError>;

    /// Drops the subscription of `function` to `pattern`; returns whether there was one.
    fn unsubscribe(&self, function: &str, pattern: &str) -> bool;

    /// Drops every subscription of `function` (it was removed); returns its patterns.
    fn remove_function(&self, function: &str) -> Vec<String>;

    /// `function` is deployed on this node (called at each deployment): a distributed bus
    /// starts taking its events here.
    fn deployed(&self, function: &str) {
        let _ = function;
    }

    /// Every subscription, sorted by pattern, then function.
    fn subscriptions(&self) -> Vec<Subscription>;

    /// The patterns `function` is subscribed to, sorted.
    fn subscriptions_of(&self, function: &str) -> Vec<String>;

    /// Publishes `event` synchronously: resolves once every subscriber has answered, failed or
    /// timed out.
    fn publish(&self, event: Event, cause: Causation) -> BoxFuture<'_, PublishResult>;

    /// Publishes `event` asynchronously: resolves with its id once it is stored durably with
    /// a pending delivery for each subscriber.
    fn publish_async(
        &self,
        event: Event,
        cause: Causation,
    ) -> BoxFuture<'_, Result<String, BusError>>;

    /// The dead letters that match `filter`, newest first.
    fn dead_letters(
        &self,
        filter: DeadLetterFilter,
    ) -> BoxFuture<'_, Result<Vec<DeadLetter>, BusError>>;

    /// Delivers a dead letter again (with a fresh count of attempts). False when there is no
    /// such dead letter.
    fn retry_dead_letter(&self, id: &str) -> BoxFuture<'_, Result<bool, BusError>>;

    /// Deletes a dead letter. False when there is no such dead letter.
    fn delete_dead_letter(&self, id: &str) -> BoxFuture<'_, Result<bool, BusError>>;

    /// An event with its deliveries and lineage, if the bus remembers it.
    fn event(&self, id: &str) -> BoxFuture<'_, Result<Option<EventInfo>, BusError>>;

    /// Stops starting asynchronous deliveries (those in flight finish); called first at
    /// shutdown, so that nothing is delivered to functions that are stopping. What was not
    /// delivered stays pending, for after the restart (or for another supervisor).
    fn quiesce(&self);

    /// Makes sure everything accepted is on disk; called last at shutdown.
    fn flush(&self) -> BoxFuture<'_, ()>;
}

#[cfg(test)]
mod tests;
