//! Asynchronous events, taken from JetStream: the tasks of each function deployed here (a
//! consumer per [`Source`], and the synchronous queue group), and the handling of one message:
//! the attempt and its settling are the bus's ([`shs_bus::settle::attempt`]); this module
//! acknowledges, records the attempt and delays the redelivery, or buries a dead letter.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use shs_bus::settle::{self, Settled};
use shs_bus::{RetryPolicy, SubscriptionTable};
use tokio::task::JoinHandle;

use crate::Inner;
use crate::wire::{self, DeadRecord};

/// Where a consumer's events come from.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Source {
    /// The events that match one pattern the function subscribes to.
    Pattern(String),
    /// The function's retried dead letters.
    Retries,
}

/// The tasks that take one local function's events.
#[derive(Default)]
pub(crate) struct Local {
    consumers: HashMap<Source, JoinHandle<()>>,
    sync: Option<JoinHandle<()>>,
}

impl Inner {
    /// Starts taking the events of a local function: its synchronous requests, its retries,
    /// and a consumer per pattern it is subscribed to.
    pub(crate) fn take_events(&self, function: &str) {
        let Some(this) = self.arc() else { return };
        let patterns = self.core.patterns_of(function);
        let mut local = self.local.lock();
        let entry = local.entry(function.to_owned()).or_default();
        if entry.sync.is_none() {
            entry.sync = Some(tokio::spawn(crate::sync::serve_sync(
                this.clone(),
                function.to_owned(),
            )));
        }
        let sources =
            std::iter::once(Source::Retries).chain(patterns.into_iter().map(Source::Pattern));
        for source in sources {
            entry.consumers.entry(source.clone()).or_insert_with(|| {
                tokio::spawn(consume(this.clone(), function.to_owned(), source))
            });
        }
    }

    /// Stops taking the events of one pattern of a local function.
    pub(crate) fn stop_pattern(&self, function: &str, pattern: &str) {
        let source = Source::Pattern(pattern.to_owned());
        if let Some(entry) = self.local.lock().get_mut(function)
            && let Some(task) = entry.consumers.remove(&source)
        {
            task.abort();
        }
    }

    /// Stops taking any event of a function (it was removed from this node).
    pub(crate) fn stop_function(&self, function: &str) {
        if let Some(local) = self.local.lock().remove(function) {
            for task in local.consumers.into_values().chain(local.sync) {
                task.abort();
            }
        }
    }

    /// Stops every consumer of this node (shutting down); synchronous requests are still served.
    pub(crate) fn stop_consumers(&self) {
        let local = std::mem::take(&mut *self.local.lock());
        for (_, entry) in local {
            for task in entry.consumers.into_values() {
                task.abort();
            }
        }
    }

    pub(crate) fn is_local(&self, function: &str) -> bool {
        self.local.lock().contains_key(function)
    }

    /// Deletes the consumer of `function`'s events that match `pattern` (it unsubscribed).
    pub(crate) async fn delete_consumer(&self, function: &str, pattern: &str) {
        let _ = self
            .events
            .delete_consumer(&self.names.consumer(function, pattern))
            .await;
    }

    /// The consumer of `source` for `function`: its name and configuration.
    fn consumer_config(
        &self,
        function: &str,
        source: &Source,
        policy: &RetryPolicy,
    ) -> consumer::pull::Config {
        let (name, filter) = match source {
            Source::Pattern(p) => (
                self.names.consumer(function, p),
                self.names.event_subject(p),
            ),
            Source::Retries => (
                self.names.retry_consumer(function),
                self.names.retry_subject(function),
            ),
        };
        consumer::pull::Config {
            durable_name: Some(name),
            filter_subject: filter,
            ack_policy: consumer::AckPolicy::Explicit,
            // Short: the supervisor handling an event says it is still at work with a progress
            // ack every quarter of it (`handle`), so a delivery moves to another supervisor
            // within this wait of its supervisor dying, however long the function may take.
            ack_wait: self.config.ack_wait,
            deliver_policy: consumer::DeliverPolicy::New,
            max_ack_pending: i64::try_from(in_flight(policy)).unwrap_or(1),
            ..Default::default()
        }
    }

    /// Whether the consumer of `pattern` delivers an event of `event_type` to `function`.
    ///
    /// When one of the function's patterns matches, yes. When several do, each of their
    /// consumers holds the event, and the first to claim it (message `seq` of the events
    /// stream) in `<NS>_CLAIMS` delivers it: a compare-and-set on the claim's subject
    /// (`Nats-Expected-Last-Subject-Sequence: 0`), so exactly one consumer wins, and the
    /// winner's redelivery (after a retry or a crash) finds its own name there and goes on.
    /// The others acknowledge the event without delivering. This works whenever the
    /// consumers were created (a pattern added later cannot lose what an older consumer holds),
    /// and on NATS servers without multi-filter consumers (2.9).
    async fn claims(&self, function: &str, pattern: &str, event_type: &str, seq: u64) -> Claim {
        let matching = self
            .core
            .patterns_of(function)
            .into_iter()
            .filter(|p| SubscriptionTable::pattern_matches(p, event_type))
            .count();
        if matching <= 1 {
            return Claim::Mine;
        }
        let subject = self.names.claim_subject(function, seq);
        let me = self.names.consumer(function, pattern);
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(EXPECTED_LAST_SUBJECT_SEQUENCE, "0");
        let published = self
            .js
            .publish_with_headers(subject.clone(), headers, me.clone().into())
            .await;
        let error = match published {
            Ok(ack) => match ack.await {
                Ok(_) => return Claim::Mine,
                Err(e) => e,
            },
            Err(e) => e,
        };
        if error.kind() != PublishErrorKind::WrongLastSequence {
            return Claim::Unknown(error.to_string());
        }
        match self.claims.get_last_raw_message_by_subject(&subject).await {
            Ok(claim) if claim.payload.as_ref() == me.as_bytes() => Claim::Mine,
            Ok(_) => Claim::Theirs,
            Err(e) => Claim::Unknown(e.to_string()),
        }
    }
}

/// Header: the compare-and-set of a JetStream publish on the subject's last sequence.
const EXPECTED_LAST_SUBJECT_SEQUENCE: &str = "Nats-Expected-Last-Subject-Sequence";

/// Who delivers an event that several of a function's consumers hold.
enum Claim {
    /// This consumer.
    Mine,
    /// Another consumer of the function.
    Theirs,
    /// Not known (NATS failed): ask again later.
    Unknown(String),
}

/// Deliveries in flight at once from one consumer.
fn in_flight(policy: &RetryPolicy) -> usize {
    if policy.ordered {
        1
    } else {
        policy.max_in_flight.max(1)
    }
}

/// Takes the asynchronous events of one consumer of a local function, until the task is
/// stopped.
async fn consume(inner: Arc<Inner>, function: String, source: Source) {
    let Some(deliverer) = inner.core.deliverer() else {
        return;
    };
    let policy = deliverer.retry_policy(&function);
    drop(deliverer);
    let config = inner.consumer_config(&function, &source, &policy);
    let name = config.durable_name.clone().unwrap_or_default();
    let consumer: consumer::PullConsumer = loop {
        match inner
            .events
            .get_or_create_consumer(&name, config.clone())
            .await
        {
            Ok(c) => break c,
            Err(e) => {
                tracing::warn!(%function, consumer = %name, "cannot create the consumer, retrying: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    let limit = Arc::new(tokio::sync::Semaphore::new(in_flight(&policy)));
    let function: Arc<str> = Arc::from(function);
    // The pull goes on until the task is stopped: a stream that ends or fails (a lost
    // connection, missed heartbeats under load) is opened again.
    loop {
        let mut messages = match consumer.messages().await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(%function, consumer = %name, "cannot pull, retrying: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        while let Some(message) = messages.next().await {
            let message = match message {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(%function, consumer = %name, "pull failed, pulling again: {e}");
                    break;
                }
            };
            let Ok(permit) = limit.clone().acquire_owned().await else {
                return;
            };
            let (inner, function, source) = (inner.clone(), function.clone(), source.clone());
            let task = async move {
                handle(&inner, &function, &source, message).await;
                drop(permit);
            };
            if policy.ordered {
                task.await;
            } else {
                tokio::spawn(task);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Tells JetStream every quarter of the ack wait that `message` is still being worked on
/// (`AckKind::Progress`), so that it is not given to another supervisor while this one lives;
/// never ends.
async fn keep_alive(message: &jetstream::Message, ack_wait: Duration) -> std::convert::Infallible {
    let every = (ack_wait / 4).max(Duration::from_millis(100));
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = message.ack_with(jetstream::AckKind::Progress).await {
            tracing::debug!("cannot send a progress ack: {e}");
        }
    }
}

/// Delivers one asynchronous event, then acknowledges it, retries it later, or buries it.
async fn handle(inner: &Inner, function: &Arc<str>, source: &Source, message: jetstream::Message) {
    let Some(event) = wire::event_of(message.headers.as_ref(), &message.payload) else {
        tracing::warn!(%function, "dropping a message that is not an shs event");
        let _ = message.ack_with(jetstream::AckKind::Term).await;
        return;
    };
    // A message without its stream sequence (never from JetStream) is delivered unclaimed:
    // twice at worst, never zero times.
    if let Source::Pattern(pattern) = source
        && let Ok(info) = message.info()
    {
        match inner
            .claims(function, pattern, &event.event_type, info.stream_sequence)
            .await
        {
            Claim::Mine => {}
            Claim::Theirs => {
                // Another consumer of this function delivers it.
                let _ = message.ack().await;
                return;
            }
            Claim::Unknown(e) => {
                tracing::warn!(%function, event_id = %event.id, "cannot claim the delivery, trying again: {e}");
                let _ = message
                    .ack_with(jetstream::AckKind::Nak(Some(Duration::from_secs(1))))
                    .await;
                return;
            }
        }
    }
    let Some(deliverer) = inner.core.deliverer() else {
        // Shutting down: leave it to another supervisor, or to this one after a restart.
        let _ = message.ack_with(jetstream::AckKind::Nak(None)).await;
        return;
    };
    let policy = deliverer.retry_policy(function);
    // JetStream's count of deliveries: a redelivery after the ack wait counts as an attempt.
    let number = message
        .info()
        .map(|i| u32::try_from(i.delivered).unwrap_or(u32::MAX))
        .unwrap_or(1);
    let event = Arc::new(event);
    let attempt = settle::attempt(&deliverer, function, event.clone(), number, &policy);
    let settled = tokio::select! {
        settled = attempt => settled,
        never = keep_alive(&message, inner.config.ack_wait) => match never {},
    };
    match settled {
        Settled::Delivered(_) => {
            if let Err(e) = message.double_ack().await {
                tracing::warn!(%function, event_id = %event.id, "cannot acknowledge: {e}");
            }
            // A retried dead letter comes with the attempts of its first life.
            if number > 1 || *source == Source::Retries {
                inner.forget_attempts(&event.id, function).await;
            }
        }
        Settled::Retry(attempt, delay) => {
            inner.record_attempt(&event.id, function, attempt).await;
            let _ = message.ack_with(jetstream::AckKind::Nak(Some(delay))).await;
        }
        Settled::Postponed(delay) => {
            // Never sent (this supervisor is stopping, or the function was redeployed): no
            // attempt is recorded. JetStream's count still grows, but a redelivery is always
            // made before it is settled, so it is never buried untried.
            let _ = message.ack_with(jetstream::AckKind::Nak(Some(delay))).await;
        }
        Settled::Dead(attempt) => {
            let attempts = inner.record_attempt(&event.id, function, attempt).await;
            let record = DeadRecord::new(function, &event, attempts);
            match inner.bury(&record).await {
                Ok(()) => {
                    let _ = message.ack_with(jetstream::AckKind::Term).await;
                    inner.forget_attempts(&event.id, function).await;
                }
                Err(e) => {
                    // Not buried: leave it to be delivered again rather than lose it.
                    tracing::warn!(%function, event_id = %event.id, "cannot keep a dead letter, redelivering: {e}");
                    let _ = message
                        .ack_with(jetstream::AckKind::Nak(Some(policy.backoff)))
                        .await;
                }
            }
        }
    }
}
