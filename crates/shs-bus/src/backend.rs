//! What lies under a [`Bus`](crate::Bus): the [`Backend`] trait (transport and persistence:
//! the embedded store, NATS JetStream) and the [`Core`] a backend shares with its bus (the
//! subscription table, the deliverer, the hop limit).
//!
//! The bus applies every rule (placement, the hop cut, the publish result, the counters)
//! before and after it calls its backend; a backend moves events and remembers them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};

use futures::future::BoxFuture;
use parking_lot::{Mutex, RwLock};
use shs_protocol::methods::DeliveryFailure;

use crate::BusError;
use crate::causation::Causation;
use crate::deliver::{Deliver, DeliveryError};
use crate::event::SharedEvent;
use crate::idempotency::{Claimed, KeptAnswer, KeyClaim};
use crate::store::{
    Attempt, DeadLetter, DeadLetterFilter, EventFilter, EventInfo, EventPage, Traffic,
};
use crate::table::{Subscription, SubscriptionTable};

/// The part of a bus that its backend sees too: the subscription table (the bus changes it
/// for this node's subscriptions; a backend loads saved ones and applies other nodes'), the
/// deliverer, and the hop limit.
pub struct Core {
    table: RwLock<SubscriptionTable>,
    /// The deployment in force of each function deployed here (see [`Deployment`]). Locked
    /// before `table` when both are.
    deployments: Mutex<HashMap<String, Deployment>>,
    next_deployment: AtomicU64,
    deliverer: OnceLock<Weak<dyn Deliver>>,
    max_hops: u32,
}

/// One deployment of a function on this node: a number no other deployment of any function
/// has had. A process of a deployment that was removed or replaced (one still answering
/// `initialize`, say) subscribes and unsubscribes under its deployment, and is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Deployment(u64);

impl Core {
    /// An empty table, no deliverer yet, and the hop limit `max_hops`.
    pub fn new(max_hops: u32) -> Arc<Core> {
        Arc::new(Core {
            table: RwLock::new(SubscriptionTable::new()),
            deployments: Mutex::new(HashMap::new()),
            next_deployment: AtomicU64::new(1),
            deliverer: OnceLock::new(),
            max_hops,
        })
    }

    /// Deliveries a chain of events may take before a publish in it is cut.
    pub fn max_hops(&self) -> u32 {
        self.max_hops
    }

    /// Whoever delivers events to functions here, unless it is gone (shutting down) or not
    /// attached yet.
    pub fn deliverer(&self) -> Option<Arc<dyn Deliver>> {
        self.deliverer.get().and_then(Weak::upgrade)
    }

    pub(crate) fn attach(&self, deliverer: Weak<dyn Deliver>) {
        if self.deliverer.set(deliverer).is_err() {
            tracing::warn!("a deliverer was attached to the bus twice; keeping the first");
        }
    }

    /// Adds `function`'s subscription to `pattern` to the table without telling the backend
    /// (a saved subscription, or another node's); false when it was there, or is not a valid
    /// pattern.
    pub fn insert(&self, function: &str, pattern: &str) -> bool {
        self.table
            .write()
            .insert(function, pattern)
            .unwrap_or(false)
    }

    pub(crate) fn try_insert(&self, function: &str, pattern: &str) -> Result<bool, BusError> {
        self.table.write().insert(function, pattern)
    }

    /// Drops a subscription from the table without telling the backend; whether it was there.
    pub fn remove(&self, function: &str, pattern: &str) -> bool {
        self.table.write().remove(function, pattern)
    }

    /// Starts a new deployment of `function`: from now on only its processes change the
    /// function's subscriptions.
    pub(crate) fn begin_deployment(&self, function: &str) -> Deployment {
        let deployment = Deployment(self.next_deployment.fetch_add(1, Ordering::Relaxed));
        self.deployments
            .lock()
            .insert(function.to_owned(), deployment);
        deployment
    }

    /// Ends the deployment of `function` (removed here): no process of it subscribes again.
    pub(crate) fn end_deployment(&self, function: &str) {
        self.deployments.lock().remove(function);
    }

    /// Inserts (`subscribe`) or removes a subscription of `function` made by a process of
    /// `deployment`, unless that deployment is no longer in force: checked and applied under
    /// one lock, so that it cannot land after the function was removed.
    pub(crate) fn change_as(
        &self,
        function: &str,
        deployment: Deployment,
        pattern: &str,
        subscribe: bool,
    ) -> Result<bool, BusError> {
        let deployments = self.deployments.lock();
        if deployments.get(function) != Some(&deployment) {
            return Err(BusError::Retired {
                function: function.to_owned(),
            });
        }
        let mut table = self.table.write();
        let changed = if subscribe {
            table.insert(function, pattern)?
        } else {
            table.remove(function, pattern)
        };
        drop(deployments);
        Ok(changed)
    }

    pub(crate) fn remove_function(&self, function: &str) -> Vec<String> {
        let _deployments = self.deployments.lock();
        self.table.write().remove_function(function)
    }

    /// The functions subscribed to `event_type`, each once, sorted.
    pub fn matching(&self, event_type: &str) -> Vec<Arc<str>> {
        self.table.read().matching(event_type)
    }

    /// The patterns `function` is subscribed to, sorted.
    pub fn patterns_of(&self, function: &str) -> Vec<String> {
        self.table.read().patterns_of(function)
    }

    pub(crate) fn subscriptions(&self) -> Vec<Subscription> {
        self.table.read().all()
    }

    /// Delivers `event` to `function` on this node, in `cause`; a 503 (not an attempt) when the
    /// deliverer is gone (the supervisor is shutting down).
    pub async fn deliver(
        &self,
        function: Arc<str>,
        event: Arc<SharedEvent>,
        cause: Causation,
    ) -> Result<(), DeliveryError> {
        match self.deliverer() {
            Some(deliverer) => deliverer.deliver(function, event, cause).await,
            None => Err(DeliveryError::not_attempted(
                503,
                "the supervisor is shutting down",
            )),
        }
    }
}

/// A placed event and the functions subscribed to it when it was published: what the bus
/// hands its backend to deliver or to store.
#[derive(Debug)]
pub struct Publication {
    /// The event, placed in its causal context.
    pub event: Arc<SharedEvent>,
    /// The functions it goes to, each once, sorted.
    pub subscribers: Vec<Arc<str>>,
}

/// How the deliveries of a synchronous publish went.
#[derive(Debug, Default)]
pub struct Fanout {
    /// One outcome per subscriber, in the order the subscribers were given.
    pub outcomes: Vec<Result<(), DeliveryError>>,
    /// The failures further down the chain of events the deliveries caused.
    pub nested: Vec<DeliveryFailure>,
}

/// What a node learned of its functions by running them, kept across restarts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Learned {
    /// Each function that has run: the digest of the deployment that ran.
    pub digests: std::collections::HashMap<String, String>,
    /// The functions with saved subscriptions.
    pub subscribed: std::collections::HashSet<String>,
    /// The event types each function was seen publishing, as (function, type).
    pub publishes: Vec<(String, String)>,
}

/// Transport and persistence under a [`Bus`](crate::Bus).
///
/// A backend is made with the [`Core`] of its bus, and keeps it for the table and the
/// deliverer. It is only called with events the bus has placed in their causal context and
/// checked against the hop limit.
pub trait Backend: Send + Sync + 'static {
    /// Loads what survives a restart (saved subscriptions of the functions in `known`, those
    /// deployed now) and starts delivering what was left pending.
    fn start(&self, known: Vec<String>) -> BoxFuture<'_, Result<(), BusError>>;

    /// This node subscribed `function` to `pattern` (`present`), or unsubscribed it: the table
    /// has it already; the backend saves or shares it.
    fn subscription_changed(&self, function: &str, pattern: &str, present: bool);

    /// `function` was removed from this node. Returns whether its subscriptions go with it (a
    /// shared bus keeps them for the other nodes that may run it).
    fn removed(&self, function: &str) -> bool;

    /// What earlier runs of this node learned of its functions, if the backend keeps it (the
    /// embedded store does; `None` otherwise). Read before the functions are deployed.
    fn learned(&self) -> BoxFuture<'_, Result<Option<Learned>, BusError>> {
        Box::pin(async { Ok(None) })
    }

    /// Keeps that `function`, deployed as `digest`, has run (its start-up subscriptions are
    /// the saved ones), if the backend keeps what is learned.
    fn save_learned(&self, function: &str, digest: &str) {
        let _ = (function, digest);
    }

    /// Keeps that `function` published `event_type` while handling a request, if the backend
    /// keeps what is learned.
    fn save_publishes(&self, function: &str, event_type: &str) {
        let _ = (function, event_type);
    }

    /// `function` is deployed on this node: a distributed backend starts taking its events here.
    fn deployed(&self, function: &str) {
        let _ = function;
    }

    /// Delivers a synchronous publication to every subscriber, in parallel, for a publish
    /// made in `cause`; resolves once each has answered, failed or timed out.
    fn deliver<'a>(
        &'a self,
        publication: &'a Publication,
        cause: &'a Causation,
    ) -> BoxFuture<'a, Fanout>;

    /// Keeps a synchronous publication and how each delivery went (`outcomes`, one per
    /// subscriber), if the backend keeps history.
    fn record(&self, publication: Publication, outcomes: Vec<Result<(), DeliveryError>>) {
        let _ = (publication, outcomes);
    }

    /// Stores an asynchronous publication durably, with a pending delivery for each
    /// subscriber; or, when the publish was `cut`, with a dead letter for each of them holding
    /// that attempt (the event is then never delivered).
    fn accept(
        &self,
        publication: Publication,
        cut: Option<Attempt>,
    ) -> BoxFuture<'_, Result<(), BusError>>;

    /// The dead letters that match `filter`, newest first.
    fn dead_letters(
        &self,
        filter: DeadLetterFilter,
    ) -> BoxFuture<'_, Result<Vec<DeadLetter>, BusError>>;

    /// Makes a dead letter pending again. False when there is no such dead letter.
    fn retry_dead_letter(&self, id: &str) -> BoxFuture<'_, Result<bool, BusError>>;

    /// Deletes a dead letter. False when there is no such dead letter.
    fn delete_dead_letter(&self, id: &str) -> BoxFuture<'_, Result<bool, BusError>>;

    /// An event with its deliveries and lineage, if the backend keeps history.
    fn event(&self, id: &str) -> BoxFuture<'_, Result<Option<EventInfo>, BusError>>;

    /// Claims an idempotency key for a request (see [`crate::idempotency`]).
    fn claim_key(&self, claim: KeyClaim) -> BoxFuture<'_, Result<Claimed, BusError>> {
        let _ = claim;
        Box::pin(async { Err(BusError::Unsupported("Idempotency-Key")) })
    }

    /// Keeps the answer to the request that holds a key, or releases the key (`None`).
    fn settle_key(
        &self,
        scope: String,
        key: String,
        answer: Option<KeptAnswer>,
    ) -> BoxFuture<'_, Result<(), BusError>> {
        let _ = (scope, key, answer);
        Box::pin(async { Err(BusError::Unsupported("Idempotency-Key")) })
    }

    /// The events kept that match `filter`, newest first, if the backend keeps history.
    fn events(&self, filter: EventFilter) -> BoxFuture<'_, Result<EventPage, BusError>>;

    /// What was published and delivered since `since_ms`, if the backend keeps history.
    fn traffic(&self, since_ms: i64) -> BoxFuture<'_, Result<Traffic, BusError>>;

    /// Starts no more asynchronous deliveries; those in flight finish.
    fn quiesce(&self);

    /// Makes sure everything accepted is stored.
    fn flush(&self) -> BoxFuture<'_, ()>;
}
