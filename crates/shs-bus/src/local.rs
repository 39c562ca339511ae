//! The embedded backend, for one supervisor: synchronous deliveries made in this process, and
//! (with a [`Store`]) asynchronous events, history, dead letters and saved subscriptions in
//! the embedded store, delivered by the [`Lanes`].

use std::sync::Arc;
use std::time::Duration;

use futures::future::{BoxFuture, join_all};

use crate::BusError;
use crate::backend::{Backend, Core, Fanout, Learned, Publication};
use crate::causation::{Causation, FailureSink};
use crate::deliver::DeliveryError;
use crate::event::now;
use crate::idempotency::{Claimed, KeptAnswer, KeyClaim};
use crate::queue::Lanes;
use crate::store::{
    Attempt, DeadLetter, DeadLetterFilter, EventFilter, EventInfo, EventPage, Store, Traffic,
    now_ms,
};

/// The backend of one supervisor.
pub(crate) struct Embedded {
    core: Arc<Core>,
    store: Option<Arc<Store>>,
    lanes: Option<Arc<Lanes>>,
    retention: Duration,
}

impl Embedded {
    /// Without a store: synchronous publishing only.
    pub(crate) fn new(core: Arc<Core>) -> Embedded {
        Embedded {
            core,
            store: None,
            lanes: None,
            retention: Duration::from_secs(24 * 3600),
        }
    }

    /// With the embedded store; settled events older than `retention` are deleted.
    pub(crate) fn with_store(core: Arc<Core>, store: Arc<Store>, retention: Duration) -> Embedded {
        Embedded {
            lanes: Some(Lanes::new(store.clone(), core.clone())),
            store: Some(store),
            retention,
            core,
        }
    }

    fn store(&self, what: &'static str) -> Result<&Arc<Store>, BusError> {
        self.store.as_ref().ok_or(BusError::Unsupported(what))
    }
}

/// The record of a delivery settled at once (a synchronous one, or one cut by the hop limit).
fn settled_attempt(status: u16, error: String) -> Attempt {
    Attempt {
        attempt: 1,
        time: now(),
        status,
        error,
    }
}

impl Backend for Embedded {
    fn start(&self, known: Vec<String>) -> BoxFuture<'_, Result<(), BusError>> {
        Box::pin(async move {
            let (Some(store), Some(lanes)) = (&self.store, &self.lanes) else {
                return Ok(());
            };
            for (function, pattern) in store.subscriptions().await? {
                if known.contains(&function) {
                    self.core.insert(&function, &pattern);
                } else {
                    store.save_subscription(&function, &pattern, false);
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

    fn learned(&self) -> BoxFuture<'_, Result<Option<Learned>, BusError>> {
        Box::pin(async move {
            let Some(store) = &self.store else {
                return Ok(None);
            };
            Ok(Some(Learned {
                digests: store.learned().await?.into_iter().collect(),
                subscribed: store
                    .subscriptions()
                    .await?
                    .into_iter()
                    .map(|(function, _)| function)
                    .collect(),
                publishes: store.publishes().await?,
            }))
        })
    }

    fn save_learned(&self, function: &str, digest: &str) {
        if let Some(store) = &self.store {
            store.save_learned(function, digest);
        }
    }

    fn save_publishes(&self, function: &str, event_type: &str) {
        if let Some(store) = &self.store {
            store.save_publishes(function, event_type);
        }
    }

    fn subscription_changed(&self, function: &str, pattern: &str, present: bool) {
        if let Some(store) = &self.store {
            store.save_subscription(function, pattern, present);
        }
    }

    fn removed(&self, function: &str) -> bool {
        if let Some(store) = &self.store {
            store.forget_function(function);
        }
        true
    }

    fn deliver<'a>(
        &'a self,
        publication: &'a Publication,
        cause: &'a Causation,
    ) -> BoxFuture<'a, Fanout> {
        let Publication { event, subscribers } = publication;
        Box::pin(async move {
            let sink = FailureSink::default();
            let delivery = cause.delivery(&event.id, event.hops, Some(sink.clone()));
            let outcomes = join_all(subscribers.iter().map(|function| {
                self.core
                    .deliver(function.clone(), event.clone(), delivery.clone())
            }))
            .await;
            Fanout {
                outcomes,
                nested: sink.take(),
            }
        })
    }

    fn record(&self, publication: Publication, outcomes: Vec<Result<(), DeliveryError>>) {
        let Some(store) = &self.store else { return };
        let Publication { event, subscribers } = publication;
        let settled = subscribers
            .into_iter()
            .zip(outcomes)
            .map(|(function, outcome)| match outcome {
                Ok(()) => (function, "delivered", settled_attempt(200, String::new())),
                Err(e) => (function, "failed", settled_attempt(e.status, e.message)),
            })
            .collect();
        store.record(event, settled);
    }

    fn accept(
        &self,
        publication: Publication,
        cut: Option<Attempt>,
    ) -> BoxFuture<'_, Result<(), BusError>> {
        let Publication { event, subscribers } = publication;
        Box::pin(async move {
            let store = self.store("asynchronous publishing")?;
            let (pending, dead) = match cut {
                Some(attempt) => {
                    let dead = subscribers
                        .into_iter()
                        .map(|function| (function, "dead", attempt.clone()))
                        .collect();
                    (Vec::new(), dead)
                }
                None => (subscribers, Vec::new()),
            };
            store.accept(event, pending.clone(), dead).await?;
            if let Some(lanes) = &self.lanes {
                for function in &pending {
                    lanes.wake(function);
                }
            }
            Ok(())
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
            let Some(function) = store.revive(id).await? else {
                return Ok(false);
            };
            if let Some(lanes) = &self.lanes {
                lanes.reload(&Arc::from(function));
            }
            Ok(true)
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

    fn claim_key(&self, claim: KeyClaim) -> BoxFuture<'_, Result<Claimed, BusError>> {
        Box::pin(async move { Ok(self.store("Idempotency-Key")?.claim_key(claim).await?) })
    }

    fn settle_key(
        &self,
        scope: String,
        key: String,
        answer: Option<KeptAnswer>,
    ) -> BoxFuture<'_, Result<(), BusError>> {
        Box::pin(async move {
            Ok(self
                .store("Idempotency-Key")?
                .settle_key(scope, key, answer)
                .await?)
        })
    }

    fn events(&self, filter: EventFilter) -> BoxFuture<'_, Result<EventPage, BusError>> {
        Box::pin(async move { Ok(self.store("event history")?.events(filter).await?) })
    }

    fn traffic(&self, since_ms: i64) -> BoxFuture<'_, Result<Traffic, BusError>> {
        Box::pin(async move { Ok(self.store("event history")?.traffic(since_ms).await?) })
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
