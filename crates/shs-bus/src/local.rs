//! The bus of one supervisor: the table in memory, the events in the embedded store.

use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use futures::future::{BoxFuture, join_all};
use parking_lot::RwLock;
use shs_protocol::methods::{DeliveryFailure, PublishResult};

use crate::causation::{Causation, FailureSink};
use crate::deliver::{Deliver, DeliveryError};
use crate::event::{Event, now};
use crate::queue::Lanes;
use crate::store::{Attempt, DeadLetter, DeadLetterFilter, EventInfo, Store, now_ms};
use crate::table::{Subscription, SubscriptionTable};
use crate::{Bus, BusError, DEFAULT_MAX_HOPS};

/// The status recorded for a delivery cut by the hop limit (HTTP's "Loop Detected").
const LOOP_DETECTED: u16 = 508;

/// The bus of one supervisor.
pub struct LocalBus {
    table: RwLock<SubscriptionTable>,
    deliverer: OnceLock<Weak<dyn Deliver>>,
    max_hops: u32,
    store: Option<Arc<Store>>,
    lanes: Option<Arc<Lanes>>,
    retention: Duration,
}

impl LocalBus {
    /// A bus without a store: synchronous publishing only.
    pub fn new(max_hops: u32) -> LocalBus {
        LocalBus {
            table: RwLock::new(SubscriptionTable::new()),
            deliverer: OnceLock::new(),
            max_hops,
            store: None,
            lanes: None,
            retention: Duration::from_secs(24 * 3600),
        }
    }

    /// A bus with the embedded store: asynchronous publishing, history, dead letters, and
    /// subscriptions that survive a restart. Settled events older than `retention` are
    /// deleted.
    pub fn with_store(max_hops: u32, store: Arc<Store>, retention: Duration) -> LocalBus {
        LocalBus {
            lanes: Some(Lanes::new(store.clone())),
            store: Some(store),
            retention,
            ..LocalBus::new(max_hops)
        }
    }

    fn store(&self, what: &'static str) -> Result<&Arc<Store>, BusError> {
        self.store.as_ref().ok_or(BusError::Unsupported(what))
    }

    /// Sets the hop count and cause of `event` from the context it is published in.
    fn place(&self, mut event: Event, cause: &Causation) -> Event {
        event.hops = event.hops.max(cause.hops());
        if event.cause.is_none() {
            event.cause = cause.event().map(str::to_owned);
        }
        event
    }

    fn cut_message(&self, event_type: &str) -> String {
        format!(
            "hop limit of {} reached: event {event_type:?} was not delivered (does a chain of events loop?)",
            self.max_hops
        )
    }
}

impl Default for LocalBus {
    fn default() -> Self {
        LocalBus::new(DEFAULT_MAX_HOPS)
    }
}

fn attempt(status: u16, error: String) -> Attempt {
    Attempt {
        attempt: 1,
        time: now(),
        status,
        error,
    }
}

impl Bus for LocalBus {
    fn attach(&self, deliverer: Weak<dyn Deliver>) {
        if let Some(lanes) = &self.lanes {
            lanes.attach(deliverer.clone());
        }
        if self.deliverer.set(deliverer).is_err() {
            tracing::warn!("a deliverer was attached to the bus twice; keeping the first");
        }
    }

    fn start(&self, known: Vec<String>) -> BoxFuture<'_, Result<(), BusError>> {
        Box::pin(async move {
            let (Some(store), Some(lanes)) = (&self.store, &self.lanes) else {
                return Ok(());
            };
            let saved = store.subscriptions().await?;
            {
                let mut table = self.table.write();
                for (function, pattern) in saved {
                    if known.contains(&function) {
                        let _ = table.insert(&function, &pattern);
                    } else {
                        store.save_subscription(&function, &pattern, false);
                    }
                }
            }
            let pending = store.functions_with_pending().await?;
            if !pending.is_empty() {
                tracing::info!(functions = ?pending, "resuming pending deliveries");
            }
            for function in pending {
                lanes.wake(&Arc::from(function));
            }
            let (store, retention) = (store.clone(), self.retention);
            tokio::spawn(async move {
                let every =
                    (retention / 24).clamp(Duration::from_secs(60), Duration::from_secs(3600));
                let mut tick = tokio::time::interval(every);
                loop {
                    tick.tick().await;
                    store
                        .prune(now_ms() - i64::try_from(retention.as_millis()).unwrap_or(i64::MAX));
                }
            });
            Ok(())
        })
    }

    fn subscribe(&self, function: &str, pattern: &str) -> Result<bool, BusError> {
        let added = self.table.write().insert(function, pattern)?;
        if added {
            tracing::info!(function, pattern, "subscribed");
            if let Some(store) = &self.store {
                store.save_subscription(function, pattern, true);
            }
        }
        Ok(added)
    }

    fn unsubscribe(&self, function: &str, pattern: &str) -> bool {
        let removed = self.table.write().remove(function, pattern);
        if removed {
            tracing::info!(function, pattern, "unsubscribed");
            if let Some(store) = &self.store {
                store.save_subscription(function, pattern, false);
            }
        }
        removed
    }

    fn remove_function(&self, function: &str) -> Vec<String> {
        if let Some(store) = &self.store {
            store.forget_function(function);
        }
        self.table.write().remove_function(function)
    }

    fn subscriptions(&self) -> Vec<Subscription> {
        self.table.read().all()
    }

    fn subscriptions_of(&self, function: &str) -> Vec<String> {
        self.table.read().patterns_of(function)
    }

    fn publish(&self, event: Event, cause: Causation) -> BoxFuture<'_, PublishResult> {
        let event = self.place(event, &cause);
        let subscribers = self.table.read().matching(event.event_type());
        let event = event.share();
        Box::pin(async move {
            let mut result = PublishResult {
                published: true,
                event_id: event.id.clone(),
                delivered: 0,
                errors: Vec::new(),
                accepted: None,
            };
            tracing::debug!(
                event_id = %event.id,
                event_type = %event.event_type,
                subscribers = subscribers.len(),
                hops = event.hops,
                "publishing"
            );
            let mut nested = Vec::new();
            let outcomes: Vec<Result<(), DeliveryError>> =
                if event.hops >= self.max_hops && !subscribers.is_empty() {
                    tracing::warn!(
                        event_id = %event.id,
                        event_type = %event.event_type,
                        max_hops = self.max_hops,
                        "hop limit reached; event not delivered"
                    );
                    let message = self.cut_message(&event.event_type);
                    subscribers
                        .iter()
                        .map(|_| Err(DeliveryError::permanent(LOOP_DETECTED, message.clone())))
                        .collect()
                } else if let Some(deliverer) = self.deliverer.get().and_then(Weak::upgrade) {
                    let sink = FailureSink::default();
                    let delivery_cause = cause.delivery(&event.id, event.hops, Some(sink.clone()));
                    let outcomes = join_all(subscribers.iter().map(|function| {
                        deliverer.deliver(function.clone(), event.clone(), delivery_cause.clone())
                    }))
                    .await;
                    // Failures further down the chain this event started come after its own.
                    nested = sink.take();
                    outcomes
                } else {
                    subscribers
                        .iter()
                        .map(|_| {
                            Err(DeliveryError::retryable(
                                503,
                                "the supervisor is shutting down",
                            ))
                        })
                        .collect()
                };
            result.errors = subscribers
                .iter()
                .zip(&outcomes)
                .filter_map(|(f, o)| {
                    o.as_ref().err().map(|e| DeliveryFailure {
                        function: f.to_string(),
                        message: e.message.clone(),
                    })
                })
                .collect();
            result.errors.extend(nested);
            result.delivered = outcomes.iter().filter(|o| o.is_ok()).count();
            crate::count_published("sync");
            for (function, outcome) in subscribers.iter().zip(&outcomes) {
                crate::count_delivery(
                    function,
                    if outcome.is_ok() {
                        "delivered"
                    } else {
                        "failed"
                    },
                );
            }
            cause.report(&result.errors);
            if let Some(store) = &self.store {
                let settled = subscribers
                    .iter()
                    .zip(outcomes)
                    .map(|(f, o)| match o {
                        Ok(()) => (f.clone(), "delivered", attempt(200, String::new())),
                        Err(e) => (f.clone(), "failed", attempt(e.status, e.message)),
                    })
                    .collect();
                store.record(event, settled);
            }
            result
        })
    }

    fn publish_async(
        &self,
        event: Event,
        cause: Causation,
    ) -> BoxFuture<'_, Result<String, BusError>> {
        let event = self.place(event, &cause);
        Box::pin(async move {
            let store = self.store("asynchronous publishing")?;
            let subscribers = self.table.read().matching(event.event_type());
            let event = event.share();
            let (pending, settled) = if event.hops >= self.max_hops {
                let message = self.cut_message(&event.event_type);
                let dead = subscribers
                    .into_iter()
                    .map(|f| (f, "dead", attempt(LOOP_DETECTED, message.clone())))
                    .collect();
                (Vec::new(), dead)
            } else {
                (subscribers, Vec::new())
            };
            store
                .accept(event.clone(), pending.clone(), settled)
                .await?;
            tracing::debug!(event_id = %event.id, event_type = %event.event_type, subscribers = pending.len(), "accepted");
            if let Some(lanes) = &self.lanes {
                for function in &pending {
                    lanes.wake(function);
                }
            }
            Ok(event.id.clone())
        })
    }

    fn dead_letters(
        &self,
        filter: DeadLetterFilter,
    ) -> BoxFuture<'_, Result<Vec<DeadLetter>, BusError>> {
        Box::pin(async move { Ok(self.store("dead letters")?.dead_letters(filter).await?) })
    }

    fn retry_dead_letter(&self, id: &str) -> BoxFuture<'_, Result<bool, BusError>> {
        let id = id.parse::<i64>().ok();
        Box::pin(async move {
            let store = self.store("dead letters")?;
            let Some(id) = id else { return Ok(false) };
            match store.revive(id).await? {
                Some(function) => {
                    if let Some(lanes) = &self.lanes {
                        lanes.reload(&Arc::from(function));
                    }
                    Ok(true)
                }
                None => Ok(false),
            }
        })
    }

    fn delete_dead_letter(&self, id: &str) -> BoxFuture<'_, Result<bool, BusError>> {
        let id = id.parse::<i64>().ok();
        Box::pin(async move {
            let store = self.store("dead letters")?;
            match id {
                Some(id) => Ok(store.delete_dead(id).await?),
                None => Ok(false),
            }
        })
    }

    fn event(&self, id: &str) -> BoxFuture<'_, Result<Option<EventInfo>, BusError>> {
        let id = id.to_owned();
        Box::pin(async move { Ok(self.store("event history")?.event(&id).await?) })
    }

    fn quiesce(&self) {
        if let Some(lanes) = &self.lanes {
            lanes.quiesce();
        }
    }

    fn flush(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if let Some(store) = &self.store {
                store.flush().await;
            }
        })
    }
}
