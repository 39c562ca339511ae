//! [`Bus`]: the event bus every part of shs talks to. It owns the subscription table (in its
//! [`Core`]) and applies the rules of publishing (placement, the hop cut, the publish result,
//! the counters); its [`Backend`] moves and keeps the events.

use std::sync::{Arc, Weak};
use std::time::Duration;

use shs_protocol::methods::PublishResult;

use crate::backend::{Backend, Core, Deployment, Fanout, Learned, Publication};
use crate::causation::Causation;
use crate::deliver::{Deliver, DeliveryError};
use crate::event::{Event, now};
use crate::idempotency::{Claimed, KeptAnswer, KeyClaim};
use crate::invocation::{InvocationLimits, Invocations, is_invocation_id};
use crate::local::Embedded;
use crate::rules;
use crate::store::{
    Attempt, DeadLetter, DeadLetterFilter, EventFilter, EventInfo, EventPage, KIND_INVOCATION,
    Store, Traffic,
};
use crate::table::Subscription;
use crate::{BusError, DEFAULT_MAX_HOPS};

/// The event bus: the subscription table and publishing, the same on every backend.
pub struct Bus {
    core: Arc<Core>,
    backend: Box<dyn Backend>,
    /// Asynchronous invocations, when the bus has an embedded store for them.
    invocations: Option<Invocations>,
}

impl Bus {
    /// The bus of one supervisor without a store: synchronous publishing only.
    pub fn new(max_hops: u32) -> Bus {
        let core = Core::new(max_hops);
        Bus::with_backend(core.clone(), Embedded::new(core))
    }

    /// The bus of one supervisor with the embedded store: asynchronous publishing, history,
    /// dead letters, and subscriptions that survive a restart. Settled events older than
    /// `retention` are deleted.
    pub fn with_store(max_hops: u32, store: Arc<Store>, retention: Duration) -> Bus {
        Bus::with_store_limits(max_hops, store, retention, InvocationLimits::default())
    }

    /// [`Bus::with_store`], and asynchronous invocations kept in the store within `limits`.
    pub fn with_store_limits(
        max_hops: u32,
        store: Arc<Store>,
        retention: Duration,
        limits: InvocationLimits,
    ) -> Bus {
        let core = Core::new(max_hops);
        let invocations = Invocations::new(store.clone(), core.clone(), limits);
        let mut bus = Bus::with_backend(core.clone(), Embedded::with_store(core, store, retention));
        bus.invocations = Some(invocations);
        bus
    }

    /// A bus over `backend`, which was made with `core`.
    pub fn with_backend(core: Arc<Core>, backend: impl Backend) -> Bus {
        Bus {
            core,
            backend: Box::new(backend),
            invocations: None,
        }
    }

    /// Keeps asynchronous invocations in `store` (for a backend without an embedded store of
    /// its own, such as NATS: they are then kept and run by this node), within `limits`.
    pub fn keep_invocations(&mut self, store: Arc<Store>, limits: InvocationLimits) {
        self.invocations = Some(Invocations::new(store, self.core.clone(), limits));
    }

    /// The asynchronous invocations, or why there are none (the bus has no store for them).
    pub fn invocations(&self) -> Result<&Invocations, BusError> {
        self.invocations
            .as_ref()
            .ok_or(BusError::Unsupported("asynchronous invocation"))
    }

    /// Deliveries a chain of events may take before a publish in it is cut.
    pub fn max_hops(&self) -> u32 {
        self.core.max_hops()
    }

    /// Attaches whoever delivers events to functions. Called once, at start-up.
    pub fn attach(&self, deliverer: Weak<dyn Deliver>) {
        self.core.attach(deliverer);
    }

    /// Starts delivering what was left pending before a restart, and loads the subscriptions
    /// saved then (for the functions in `known`, the ones deployed now). Called once the
    /// deliverer knows its functions.
    pub async fn start(&self, known: Vec<String>) -> Result<(), BusError> {
        self.backend.start(known).await?;
        if let Some(invocations) = &self.invocations {
            invocations.start().await?;
        }
        Ok(())
    }

    /// Subscribes `function` to `pattern`; `Ok(false)` when it was subscribed already.
    pub fn subscribe(&self, function: &str, pattern: &str) -> Result<bool, BusError> {
        let added = self.core.try_insert(function, pattern)?;
        if added {
            tracing::info!(function, pattern, "subscribed");
            self.backend.subscription_changed(function, pattern, true);
        }
        Ok(added)
    }

    /// Subscribes (`subscribe`) or unsubscribes `function` to `pattern` for one of its
    /// processes, started in `deployment`; refused with [`BusError::Retired`] once that
    /// deployment is no longer the one in force (the function was removed or redeployed).
    /// `Ok(false)` when nothing changed.
    pub fn change_as(
        &self,
        function: &str,
        deployment: Deployment,
        pattern: &str,
        subscribe: bool,
    ) -> Result<bool, BusError> {
        let changed = self
            .core
            .change_as(function, deployment, pattern, subscribe)?;
        if changed {
            let what = if subscribe {
                "subscribed"
            } else {
                "unsubscribed"
            };
            tracing::info!(function, pattern, "{what}");
            self.backend
                .subscription_changed(function, pattern, subscribe);
        }
        Ok(changed)
    }

    /// Drops the subscription of `function` to `pattern`; returns whether there was one.
    pub fn unsubscribe(&self, function: &str, pattern: &str) -> bool {
        let removed = self.core.remove(function, pattern);
        if removed {
            tracing::info!(function, pattern, "unsubscribed");
            self.backend.subscription_changed(function, pattern, false);
        }
        removed
    }

    /// `function` was removed from this node: its deployment ends (its processes change no
    /// subscription any more), and its subscriptions are dropped, unless the bus is shared and
    /// other nodes may run it; returns the patterns dropped.
    pub fn remove_function(&self, function: &str) -> Vec<String> {
        self.core.end_deployment(function);
        if self.backend.removed(function) {
            self.core.remove_function(function)
        } else {
            Vec::new()
        }
    }

    /// Starts a deployment of `function` on this node (called at each deployment, before its
    /// processes start): the processes of earlier deployments may no longer change its
    /// subscriptions ([`Bus::change_as`]).
    pub fn begin_deployment(&self, function: &str) -> Deployment {
        self.core.begin_deployment(function)
    }

    /// `function` is deployed on this node (called at each deployment): a distributed bus
    /// starts taking its events here.
    pub fn deployed(&self, function: &str) {
        self.backend.deployed(function);
    }

    /// What earlier runs learned of the functions (`None` when the backend keeps nothing).
    pub async fn learned(&self) -> Result<Option<Learned>, BusError> {
        self.backend.learned().await
    }

    /// Keeps that `function`, deployed as `digest`, has run.
    pub fn save_learned(&self, function: &str, digest: &str) {
        self.backend.save_learned(function, digest);
    }

    /// Keeps that `function` published `event_type` while handling a request.
    pub fn save_publishes(&self, function: &str, event_type: &str) {
        self.backend.save_publishes(function, event_type);
    }

    /// Every subscription, sorted by pattern, then function.
    pub fn subscriptions(&self) -> Vec<Subscription> {
        self.core.subscriptions()
    }

    /// The functions an event of type `event_type` goes to, each once.
    pub fn matching(&self, event_type: &str) -> Vec<Arc<str>> {
        self.core.matching(event_type)
    }

    /// The patterns `function` is subscribed to, sorted.
    pub fn subscriptions_of(&self, function: &str) -> Vec<String> {
        self.core.patterns_of(function)
    }

    /// `event`, placed in the context of `cause`, and the functions it goes to.
    fn publication(&self, event: Event, cause: &Causation) -> Publication {
        let event = rules::place(event, cause).share();
        let subscribers = self.core.matching(&event.event_type);
        Publication { event, subscribers }
    }

    /// The cut of a publication, if it is at the hop limit.
    fn cut(&self, publication: &Publication) -> Option<DeliveryError> {
        let event = &publication.event;
        if !rules::is_cut(event.hops, self.max_hops()) {
            return None;
        }
        if !publication.subscribers.is_empty() {
            tracing::warn!(
                event_id = %event.id,
                event_type = %event.event_type,
                max_hops = self.max_hops(),
                "hop limit reached; event not delivered"
            );
        }
        Some(rules::hop_cut(self.max_hops(), &event.event_type))
    }

    /// Publishes `event` synchronously: resolves once every subscriber has answered, failed or
    /// timed out, with each failure (those further down the chain included).
    pub async fn publish(&self, event: Event, cause: Causation) -> PublishResult {
        let publication = self.publication(event, &cause);
        let Publication { event, subscribers } = &publication;
        tracing::debug!(
            event_id = %event.id,
            event_type = %event.event_type,
            subscribers = subscribers.len(),
            hops = event.hops,
            "publishing"
        );
        let Fanout { outcomes, nested } = if subscribers.is_empty() {
            Fanout::default()
        } else if let Some(cut) = self.cut(&publication) {
            Fanout {
                outcomes: subscribers.iter().map(|_| Err(cut.clone())).collect(),
                nested: Vec::new(),
            }
        } else {
            self.backend.deliver(&publication, &cause).await
        };
        let result = rules::publish_result(&event.id, subscribers, &outcomes, nested);
        crate::count_published("sync");
        for (function, outcome) in subscribers.iter().zip(&outcomes) {
            let counted = if outcome.is_ok() {
                "delivered"
            } else {
                "failed"
            };
            crate::count_delivery(function, counted);
        }
        cause.report(&result.errors);
        self.backend.record(publication, outcomes);
        result
    }

    /// Publishes `event` asynchronously: resolves with its id once it is stored durably with
    /// a pending delivery for each subscriber (a dead letter each, when it is cut).
    pub async fn publish_async(&self, event: Event, cause: Causation) -> Result<String, BusError> {
        let publication = self.publication(event, &cause);
        let event = publication.event.clone();
        let cut = self.cut(&publication).map(|cut| Attempt {
            attempt: 1,
            time: now(),
            status: cut.status,
            error: cut.message,
        });
        self.backend.accept(publication, cut).await?;
        crate::count_published("async");
        tracing::debug!(event_id = %event.id, event_type = %event.event_type, "accepted");
        Ok(event.id.clone())
    }

    /// The dead letters that match `filter`, newest first: events' deliveries and failed
    /// invocations (`kind`).
    pub async fn dead_letters(
        &self,
        filter: DeadLetterFilter,
    ) -> Result<Vec<DeadLetter>, BusError> {
        let kind = filter.kind.as_deref();
        let invocations = match &self.invocations {
            Some(invocations)
                if filter.event_type.is_none() && kind.is_none_or(|k| k == KIND_INVOCATION) =>
            {
                invocations
                    .dead_letters(filter.function.clone(), filter.limit)
                    .await?
            }
            _ => Vec::new(),
        };
        if kind == Some(KIND_INVOCATION) {
            return Ok(invocations);
        }
        let limit = filter.limit.max(1);
        let mut letters = self.backend.dead_letters(filter).await?;
        if !invocations.is_empty() {
            letters.extend(invocations);
            // RFC 3339 times of one format sort as text.
            letters.sort_by(|a, b| b.dead_at.cmp(&a.dead_at));
            letters.truncate(limit);
        }
        Ok(letters)
    }

    /// Delivers a dead letter again (runs a failed invocation again), with a fresh count of
    /// attempts (its earlier attempts stay in its record). False when there is no such dead
    /// letter.
    pub async fn retry_dead_letter(&self, id: &str) -> Result<bool, BusError> {
        if let Some(invocations) = &self.invocations
            && is_invocation_id(id)
        {
            return invocations.retry(id).await;
        }
        self.backend.retry_dead_letter(id).await
    }

    /// Deletes a dead letter. False when there is no such dead letter.
    pub async fn delete_dead_letter(&self, id: &str) -> Result<bool, BusError> {
        if let Some(invocations) = &self.invocations
            && is_invocation_id(id)
        {
            return invocations.delete(id).await;
        }
        self.backend.delete_dead_letter(id).await
    }

    /// An event with its deliveries and lineage, if the bus remembers it.
    pub async fn event(&self, id: &str) -> Result<Option<EventInfo>, BusError> {
        self.backend.event(id).await
    }

    /// Claims an idempotency key for a request: [`Claimed::Fresh`] when it runs now (then
    /// [`Bus::settle_key`] once it is answered), else what the key holds.
    pub async fn claim_key(&self, claim: KeyClaim) -> Result<Claimed, BusError> {
        self.backend.claim_key(claim).await
    }

    /// Keeps the answer to the request holding a key (`Some`) for the key's time to live, or
    /// releases the key (`None`: the request did not run, and a retry should run it).
    pub async fn settle_key(
        &self,
        scope: String,
        key: String,
        answer: Option<KeptAnswer>,
    ) -> Result<(), BusError> {
        self.backend.settle_key(scope, key, answer).await
    }

    /// The events that match `filter`, newest first, a page at a time, if the bus remembers
    /// events.
    pub async fn events(&self, filter: EventFilter) -> Result<EventPage, BusError> {
        self.backend.events(filter).await
    }

    /// What was published and delivered since `since_ms` (ms since the epoch), by publisher,
    /// type and subscriber, if the bus remembers events.
    pub async fn traffic(&self, since_ms: i64) -> Result<Traffic, BusError> {
        self.backend.traffic(since_ms).await
    }

    /// Stops starting asynchronous deliveries (those in flight finish); called first at
    /// shutdown, so that nothing is delivered to functions that are stopping. What was not
    /// delivered stays pending, for after the restart (or for another supervisor).
    pub fn quiesce(&self) {
        self.backend.quiesce();
        if let Some(invocations) = &self.invocations {
            invocations.quiesce();
        }
    }

    /// Makes sure everything accepted is stored; called last at shutdown.
    pub async fn flush(&self) {
        self.backend.flush().await;
    }
}

impl Default for Bus {
    fn default() -> Self {
        Bus::new(DEFAULT_MAX_HOPS)
    }
}
