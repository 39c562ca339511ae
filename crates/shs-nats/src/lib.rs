//! NATS JetStream as the shs event bus, for several supervisors sharing one set of events.
//!
//! This crate owns [`NatsBus`], a second implementation of [`shs_bus::Bus`]. Every supervisor
//! started with `--bus nats://HOST:PORT` (and the same `--bus-namespace`) shares:
//!
//! - **The subscription table**, in the stream `<NS>_SUBSCRIPTIONS`, which keeps the last
//!   message of each subject `<ns>.subs.<function>.<hex of the pattern>` ("1" subscribed, "0"
//!   not). Each supervisor reads it at start and follows it, keeping a copy of the table for
//!   matching.
//! - **Asynchronous events**, in the stream `<NS>_EVENTS` (subjects `<ns>.events.<type>`,
//!   interest retention: an event stays until every consumer has acknowledged it). There is
//!   one durable pull consumer per (function, pattern), named
//!   `<ns>_<function>_<hash of the pattern>`, shared by every supervisor that runs the
//!   function: JetStream hands each event to one of them. The event is acknowledged after the
//!   function answers; an unacknowledged event (a supervisor that died) is redelivered after
//!   the ack wait. A failed attempt is recorded (stream `<NS>_ATTEMPTS`) and negatively
//!   acknowledged with a delay (exponential backoff with jitter); after the last attempt, or at
//!   once when the failure cannot be fixed by retrying, it becomes a dead letter in the stream
//!   `<NS>_DEAD` with the reason of every attempt. A function with several patterns matching
//!   one event gets it from the consumer of the first of them (in sort order); the others
//!   acknowledge it without delivering.
//! - **Synchronous events**, over core NATS request-reply: for each subscribing function, the
//!   publisher sends a request to `<ns>.sync.<function>`, which every supervisor running the
//!   function answers as a queue group (so exactly one of them takes it). The supervisor that
//!   takes it delivers the event and answers with the outcome (and the failures further down
//!   the chain); the publisher waits for every answer, so `publish` keeps its meaning across
//!   nodes. A function that no supervisor runs is reported at once ("no responders").
//!
//! Hop counts, the cause of an event and the calls waiting on a synchronous publish travel in
//! message headers, so the loop cut and the detection of a wait on itself work across nodes
//! (call ids are unique per supervisor).

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, consumer, stream};
use bytes::Bytes;
use futures::StreamExt;
use futures::future::{BoxFuture, join_all};
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use shs_bus::event::now;
use shs_bus::store::Attempt;
use shs_bus::{
    Bus, BusError, Causation, DeadLetter, DeadLetterFilter, Deliver, DeliveryError, Event,
    EventInfo, Origin, SharedEvent, Subscription, SubscriptionTable,
};
use shs_protocol::methods::{DeliveryFailure, PublishResult};
use tokio::task::JoinHandle;

/// Header: the hop count of the event.
const HOPS: &str = "Shs-Hops";
/// Header: the id of the event that caused this one.
const CAUSE: &str = "Shs-Cause";
/// Header: who published it (JSON).
const ORIGIN: &str = "Shs-Origin";
/// Header: the event's id.
const EVENT_ID: &str = "Shs-Event-Id";
/// Header: the event's type.
const EVENT_TYPE: &str = "Shs-Event-Type";
/// Header: the calls waiting for a synchronous publish (comma-separated).
const WAITING: &str = "Shs-Waiting";
/// The status recorded for a delivery cut by the hop limit.
const LOOP_DETECTED: u16 = 508;

/// How the NATS bus runs.
#[derive(Clone, Debug)]
pub struct NatsConfig {
    /// The server, e.g. `nats://127.0.0.1:4222`.
    pub url: String,
    /// Prefix of every stream, bucket, consumer and subject: supervisors with the same
    /// namespace share events.
    pub namespace: String,
    /// How long a synchronous publish waits for each subscriber's answer.
    pub sync_timeout: Duration,
    /// How long an asynchronous delivery may stay unacknowledged before JetStream gives it to
    /// another supervisor.
    pub ack_wait: Duration,
    /// Deliveries a chain of events may take before it is cut.
    pub max_hops: u32,
}

/// Names derived from the namespace.
struct Names {
    ns: String,
    stream: String,
    dead_stream: String,
    subscriptions: String,
    attempts: String,
}

// The subscription table and the attempt records are streams that keep the last message of
// each subject (a key-value store built by hand: the buckets of recent clients ask for
// features that older servers refuse).

impl Names {
    fn new(namespace: &str) -> Names {
        let ns: String = namespace
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let upper = ns.to_ascii_uppercase();
        Names {
            stream: format!("{upper}_EVENTS"),
            dead_stream: format!("{upper}_DEAD"),
            subscriptions: format!("{upper}_SUBSCRIPTIONS"),
            attempts: format!("{upper}_ATTEMPTS"),
            ns,
        }
    }

    fn event_subject(&self, event_type: &str) -> String {
        format!("{}.events.{event_type}", self.ns)
    }

    fn retry_subject(&self, function: &str) -> String {
        format!("{}.retry.{function}", self.ns)
    }

    fn sync_subject(&self, function: &str) -> String {
        format!("{}.sync.{function}", self.ns)
    }

    fn dead_subject(&self, function: &str) -> String {
        format!("{}.dead.{function}", self.ns)
    }

    fn subscription_subject(&self, function: &str, pattern: &str) -> String {
        format!("{}.subs.{function}.{}", self.ns, hex(pattern))
    }

    fn attempts_subject(&self, event_id: &str, function: &str) -> String {
        format!("{}.attempts.{}.{function}", self.ns, hex(event_id))
    }

    fn consumer(&self, function: &str, pattern: &str) -> String {
        format!("{}_{function}_{:016x}", self.ns, fnv(pattern))
    }

    fn retry_consumer(&self, function: &str) -> String {
        format!("{}_{function}__retry", self.ns)
    }
}

/// FNV-1a, for stable short names of patterns.
fn fnv(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn hex(text: &str) -> String {
    text.bytes().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<String> {
    let bytes: Option<Vec<u8>> = (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect();
    bytes.and_then(|b| String::from_utf8(b).ok())
}

fn backend(e: impl std::fmt::Display) -> BusError {
    BusError::Backend(e.to_string())
}

/// What a supervisor answers to a synchronous delivery request.
#[derive(Serialize, Deserialize)]
struct SyncReply {
    ok: bool,
    #[serde(default)]
    status: u16,
    #[serde(default)]
    message: String,
    #[serde(default)]
    nested: Vec<DeliveryFailure>,
}

/// A dead letter as stored in the dead-letter stream.
#[derive(Serialize, Deserialize)]
struct DeadRecord {
    function: String,
    event_id: String,
    event_type: String,
    hops: u32,
    #[serde(default)]
    cause: Option<String>,
    event: Box<RawValue>,
    attempts: Vec<Attempt>,
    dead_at: String,
}

/// The tasks that take one local function's events.
#[derive(Default)]
struct Local {
    /// Consumer loops by pattern (and "" for the retry consumer).
    consumers: HashMap<String, JoinHandle<()>>,
    sync: Option<JoinHandle<()>>,
}

struct Inner {
    client: async_nats::Client,
    js: jetstream::Context,
    names: Names,
    config: NatsConfig,
    events: stream::Stream,
    dead: stream::Stream,
    subscriptions: stream::Stream,
    attempts: stream::Stream,
    table: RwLock<SubscriptionTable>,
    deliverer: OnceLock<Weak<dyn Deliver>>,
    local: Mutex<HashMap<String, Local>>,
    me: Weak<Inner>,
}

/// The event bus on NATS JetStream.
pub struct NatsBus {
    inner: Arc<Inner>,
}

impl NatsBus {
    /// Connects, and creates the streams and buckets of the namespace if they are missing.
    pub async fn connect(config: NatsConfig) -> Result<NatsBus, BusError> {
        let names = Names::new(&config.namespace);
        let client = async_nats::ConnectOptions::new()
            .name("shs")
            .connect(config.url.as_str())
            .await
            .map_err(|e| {
                BusError::Backend(format!("cannot connect to NATS at {}: {e}", config.url))
            })?;
        let js = jetstream::new(client.clone());
        let events = js
            .get_or_create_stream(stream::Config {
                name: names.stream.clone(),
                subjects: vec![
                    format!("{}.events.>", names.ns),
                    format!("{}.retry.>", names.ns),
                ],
                retention: stream::RetentionPolicy::Interest,
                storage: stream::StorageType::File,
                duplicate_window: Duration::from_secs(120),
                ..Default::default()
            })
            .await
            .map_err(|e| {
                BusError::Backend(format!(
                    "cannot create the stream {}: {e} (is JetStream on? run nats-server with -js)",
                    names.stream
                ))
            })?;
        let dead = js
            .get_or_create_stream(stream::Config {
                name: names.dead_stream.clone(),
                subjects: vec![format!("{}.dead.>", names.ns)],
                storage: stream::StorageType::File,
                ..Default::default()
            })
            .await
            .map_err(backend)?;
        let subscriptions = last_per_subject(
            &js,
            &names.subscriptions,
            format!("{}.subs.>", names.ns),
            Duration::ZERO,
        )
        .await?;
        let attempts = last_per_subject(
            &js,
            &names.attempts,
            format!("{}.attempts.>", names.ns),
            Duration::from_secs(7 * 24 * 3600),
        )
        .await?;
        let inner = Arc::new_cyclic(|me| Inner {
            client,
            js,
            names,
            config,
            events,
            dead,
            subscriptions,
            attempts,
            table: RwLock::new(SubscriptionTable::new()),
            deliverer: OnceLock::new(),
            local: Mutex::new(HashMap::new()),
            me: me.clone(),
        });
        tracing::info!(url = %inner.config.url, namespace = %inner.names.ns, "event bus on NATS JetStream");
        Ok(NatsBus { inner })
    }
}

/// A stream that keeps the last message of each subject.
async fn last_per_subject(
    js: &jetstream::Context,
    name: &str,
    subjects: String,
    max_age: Duration,
) -> Result<stream::Stream, BusError> {
    js.get_or_create_stream(stream::Config {
        name: name.to_owned(),
        subjects: vec![subjects],
        max_messages_per_subject: 1,
        max_age,
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await
    .map_err(|e| BusError::Backend(format!("cannot create the stream {name}: {e}")))
}

impl Inner {
    fn arc(&self) -> Option<Arc<Inner>> {
        self.me.upgrade()
    }

    fn deliverer(&self) -> Option<Arc<dyn Deliver>> {
        self.deliverer.get().and_then(Weak::upgrade)
    }

    /// Starts taking the events of a local function: its synchronous requests, its retries,
    /// and a consumer per pattern it is subscribed to.
    fn take_events(&self, function: &str) {
        let Some(this) = self.arc() else { return };
        let patterns = self.table.read().patterns_of(function);
        let mut local = self.local.lock();
        let entry = local.entry(function.to_owned()).or_default();
        if entry.sync.is_none() {
            entry.sync = Some(tokio::spawn(serve_sync(this.clone(), function.to_owned())));
        }
        entry
            .consumers
            .entry(String::new())
            .or_insert_with(|| tokio::spawn(consume(this.clone(), function.to_owned(), None)));
        for pattern in patterns {
            entry.consumers.entry(pattern.clone()).or_insert_with(|| {
                tokio::spawn(consume(this.clone(), function.to_owned(), Some(pattern)))
            });
        }
    }

    /// Stops taking the events of one pattern of a local function.
    fn stop_pattern(&self, function: &str, pattern: &str) {
        if let Some(entry) = self.local.lock().get_mut(function)
            && let Some(task) = entry.consumers.remove(pattern)
        {
            task.abort();
        }
    }

    fn is_local(&self, function: &str) -> bool {
        self.local.lock().contains_key(function)
    }

    /// Applies a change of the shared table (from this node or another).
    fn table_changed(&self, function: &str, pattern: &str, present: bool) {
        if present {
            let added = self
                .table
                .write()
                .insert(function, pattern)
                .unwrap_or(false);
            if added && self.is_local(function) {
                self.take_events(function);
            }
        } else {
            self.table.write().remove(function, pattern);
            self.stop_pattern(function, pattern);
        }
    }

    /// Records a failed attempt; returns every attempt so far.
    async fn record_attempt(
        &self,
        event_id: &str,
        function: &str,
        attempt: Attempt,
    ) -> Vec<Attempt> {
        let subject = self.names.attempts_subject(event_id, function);
        let mut attempts: Vec<Attempt> = match self
            .attempts
            .get_last_raw_message_by_subject(&subject)
            .await
        {
            Ok(message) => serde_json::from_slice(&message.payload).unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        attempts.push(Attempt {
            attempt: u32::try_from(attempts.len() + 1).unwrap_or(u32::MAX),
            ..attempt
        });
        match serde_json::to_vec(&attempts) {
            Ok(bytes) => {
                let stored = match self.js.publish(subject, bytes.into()).await {
                    Ok(ack) => ack.await.map(drop).map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                if let Err(e) = stored {
                    tracing::warn!(function, event_id, "cannot record an attempt: {e}");
                }
            }
            Err(e) => tracing::warn!("cannot encode attempts: {e}"),
        }
        attempts
    }

    async fn forget_attempts(&self, event_id: &str, function: &str) {
        let _ = self
            .attempts
            .purge()
            .filter(self.names.attempts_subject(event_id, function))
            .await;
    }

    /// Shares a subscription change with every supervisor.
    async fn share_subscription(&self, function: &str, pattern: &str, present: bool) {
        let subject = self.names.subscription_subject(function, pattern);
        let body = Bytes::from_static(if present { b"1" } else { b"0" });
        let stored = match self.js.publish(subject, body).await {
            Ok(ack) => ack.await.map(drop).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = stored {
            tracing::error!(
                function,
                pattern,
                "cannot share the subscription change: {e}"
            );
        }
    }

    /// Reads a change of the shared table from a message of the subscriptions stream.
    fn subscription_of(&self, subject: &str, payload: &[u8]) -> Option<(String, String, bool)> {
        let rest = subject.strip_prefix(&format!("{}.subs.", self.names.ns))?;
        let (function, pattern) = rest.split_once('.')?;
        Some((function.to_owned(), unhex(pattern)?, payload == b"1"))
    }

    /// Stores a dead letter; true once it is stored.
    async fn bury(&self, record: &DeadRecord) -> bool {
        let Ok(body) = serde_json::to_vec(record) else {
            return false;
        };
        let subject = self.names.dead_subject(&record.function);
        match self.js.publish(subject, body.into()).await {
            Ok(ack) => ack.await.is_ok(),
            Err(_) => false,
        }
    }
}

fn headers_of(event: &SharedEvent) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(EVENT_ID, event.id.as_str());
    headers.insert(EVENT_TYPE, event.event_type.as_str());
    headers.insert(HOPS, event.hops.to_string().as_str());
    if let Some(cause) = &event.cause {
        headers.insert(CAUSE, cause.as_str());
    }
    if let Ok(origin) = serde_json::to_string(&event.origin) {
        headers.insert(ORIGIN, origin.as_str());
    }
    headers
}

/// Rebuilds an event from a message's headers and body.
fn event_of(headers: Option<&HeaderMap>, payload: &Bytes) -> Option<SharedEvent> {
    let headers = headers?;
    let get = |name: &str| headers.get(name).map(|v| v.as_str().to_owned());
    let json = RawValue::from_string(String::from_utf8(payload.to_vec()).ok()?).ok()?;
    Some(SharedEvent::from_stored(
        get(EVENT_ID)?,
        get(EVENT_TYPE)?,
        get(HOPS).and_then(|h| h.parse().ok()).unwrap_or(0),
        get(CAUSE),
        get(ORIGIN)
            .and_then(|o| serde_json::from_str(&o).ok())
            .unwrap_or(Origin::Http { request_id: None }),
        json,
    ))
}

/// Answers the synchronous delivery requests of one local function (a queue group shared
/// with the other supervisors that run it).
async fn serve_sync(inner: Arc<Inner>, function: String) {
    let subject = inner.names.sync_subject(&function);
    let group = format!("{}-{function}", inner.names.ns);
    let mut requests = loop {
        match inner
            .client
            .queue_subscribe(subject.clone(), group.clone())
            .await
        {
            Ok(s) => break s,
            Err(e) => {
                tracing::warn!(%function, "cannot take synchronous events, retrying: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    let function: Arc<str> = Arc::from(function);
    while let Some(message) = requests.next().await {
        let Some(reply) = message.reply.clone() else {
            continue;
        };
        let inner = inner.clone();
        let function = function.clone();
        tokio::spawn(async move {
            let answer = match (
                event_of(message.headers.as_ref(), &message.payload),
                inner.deliverer(),
            ) {
                (Some(event), Some(deliverer)) => {
                    let waiting = message
                        .headers
                        .as_ref()
                        .and_then(|h| h.get(WAITING))
                        .map(|w| {
                            w.as_str()
                                .split(',')
                                .filter_map(|c| c.parse().ok())
                                .collect()
                        })
                        .unwrap_or_default();
                    let (cause, failures) =
                        Causation::remote_delivery(event.hops, waiting, &event.id);
                    let result = deliverer
                        .deliver(function.clone(), Arc::new(event), cause)
                        .await;
                    let nested = failures.take();
                    match result {
                        Ok(()) => SyncReply {
                            ok: true,
                            status: 200,
                            message: String::new(),
                            nested,
                        },
                        Err(e) => SyncReply {
                            ok: false,
                            status: e.status,
                            message: e.message,
                            nested,
                        },
                    }
                }
                (None, _) => SyncReply {
                    ok: false,
                    status: 400,
                    message: "the request is not an shs event".to_owned(),
                    nested: Vec::new(),
                },
                (_, None) => SyncReply {
                    ok: false,
                    status: 503,
                    message: "the supervisor is shutting down".to_owned(),
                    nested: Vec::new(),
                },
            };
            if let Ok(body) = serde_json::to_vec(&answer) {
                let _ = inner.client.publish(reply, body.into()).await;
            }
        });
    }
}

/// Takes the asynchronous events of one consumer of a local function: the consumer of one
/// pattern, or (with `None`) the consumer of the retries of its dead letters.
async fn consume(inner: Arc<Inner>, function: String, pattern: Option<String>) {
    let Some(deliverer) = inner.deliverer() else {
        return;
    };
    let policy = deliverer.retry_policy(&function);
    drop(deliverer);
    let (name, filter) = match &pattern {
        Some(p) => (
            inner.names.consumer(&function, p),
            inner.names.event_subject(p),
        ),
        None => (
            inner.names.retry_consumer(&function),
            inner.names.retry_subject(&function),
        ),
    };
    let config = consumer::pull::Config {
        durable_name: Some(name.clone()),
        filter_subject: filter,
        ack_policy: consumer::AckPolicy::Explicit,
        // Long enough for the function's own timeout, twice (waiting for a process, then the
        // call), before JetStream gives the event to another supervisor.
        ack_wait: inner
            .config
            .ack_wait
            .max(policy.timeout * 2 + Duration::from_secs(2)),
        deliver_policy: consumer::DeliverPolicy::New,
        max_ack_pending: if policy.ordered {
            1
        } else {
            i64::try_from(policy.max_in_flight.max(1)).unwrap_or(1)
        },
        ..Default::default()
    };
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
    let limit = Arc::new(tokio::sync::Semaphore::new(if policy.ordered {
        1
    } else {
        policy.max_in_flight.max(1)
    }));
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
            let inner = inner.clone();
            let function = function.clone();
            let pattern = pattern.clone();
            let task = async move {
                handle(&inner, &function, pattern.as_deref(), message).await;
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

/// Delivers one asynchronous event, then acknowledges it, retries it later, or buries it.
async fn handle(
    inner: &Inner,
    function: &Arc<str>,
    pattern: Option<&str>,
    message: jetstream::Message,
) {
    let Some(event) = event_of(message.headers.as_ref(), &message.payload) else {
        tracing::warn!(%function, "dropping a message that is not an shs event");
        let _ = message.ack_with(jetstream::AckKind::Term).await;
        return;
    };
    // A function with several matching patterns takes the event from the first one only.
    if let Some(pattern) = pattern {
        let first = {
            let table = inner.table.read();
            table
                .patterns_of(function)
                .into_iter()
                .find(|p| SubscriptionTable::pattern_matches(p, &event.event_type))
        };
        if first.as_deref().is_some_and(|f| f != pattern) {
            let _ = message.ack().await;
            return;
        }
    }
    let Some(deliverer) = inner.deliverer() else {
        // Shutting down: leave it to another supervisor, or to this one after a restart.
        let _ = message.ack_with(jetstream::AckKind::Nak(None)).await;
        return;
    };
    let policy = deliverer.retry_policy(function);
    let attempt = message
        .info()
        .map(|i| u32::try_from(i.delivered).unwrap_or(u32::MAX))
        .unwrap_or(1);
    let event = Arc::new(event);
    let cause = Causation::async_delivery(event.hops, &event.id);
    // A retry from the dead letters is delivered whatever its hop count (as on the embedded
    // store): someone asked for it.
    let result = if pattern.is_some() && event.hops >= inner.config.max_hops {
        Err(DeliveryError::permanent(
            LOOP_DETECTED,
            format!(
                "hop limit of {} reached: event {:?} was not delivered (does a chain of events loop?)",
                inner.config.max_hops, event.event_type
            ),
        ))
    } else {
        deliverer
            .deliver(function.clone(), event.clone(), cause)
            .await
    };
    match result {
        Ok(()) => {
            shs_bus::count_delivery(function, "delivered");
            if let Err(e) = message.double_ack().await {
                tracing::warn!(%function, event_id = %event.id, "cannot acknowledge: {e}");
            }
            if attempt > 1 {
                inner.forget_attempts(&event.id, function).await;
            }
        }
        Err(e) => {
            shs_bus::count_delivery(function, "failed");
            let attempts = inner
                .record_attempt(
                    &event.id,
                    function,
                    Attempt {
                        attempt,
                        time: now(),
                        status: e.status,
                        error: e.message.clone(),
                    },
                )
                .await;
            if !e.retryable || attempt >= policy.max_attempts.max(1) {
                tracing::warn!(%function, event_id = %event.id, attempt, "delivery failed for good, kept as a dead letter: {}", e.message);
                let record = DeadRecord {
                    function: function.to_string(),
                    event_id: event.id.clone(),
                    event_type: event.event_type.clone(),
                    hops: event.hops,
                    cause: event.cause.clone(),
                    event: event.json().to_owned(),
                    attempts,
                    dead_at: now(),
                };
                if inner.bury(&record).await {
                    shs_bus::count_delivery(function, "dead_lettered");
                    let _ = message.ack_with(jetstream::AckKind::Term).await;
                    inner.forget_attempts(&event.id, function).await;
                } else {
                    // Not buried: leave it to be delivered again rather than lose it.
                    let _ = message
                        .ack_with(jetstream::AckKind::Nak(Some(policy.backoff)))
                        .await;
                }
            } else {
                let delay = policy.delay(attempt, jitter());
                tracing::info!(%function, event_id = %event.id, attempt, retry_in_ms = delay.as_millis() as u64, "delivery failed; retrying: {}", e.message);
                let _ = message.ack_with(jetstream::AckKind::Nak(Some(delay))).await;
            }
        }
    }
}

/// A number in [0, 1) that differs from call to call.
fn jitter() -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    f64::from(nanos % 1_000_000) / 1_000_000.0
}

impl Bus for NatsBus {
    fn attach(&self, deliverer: Weak<dyn Deliver>) {
        let _ = self.inner.deliverer.set(deliverer);
    }

    fn start(&self, known: Vec<String>) -> BoxFuture<'_, Result<(), BusError>> {
        Box::pin(async move {
            let inner = &self.inner;
            // The shared table: the last message of each subject, then every change.
            let consumer = inner
                .subscriptions
                .create_consumer(consumer::pull::OrderedConfig {
                    filter_subject: format!("{}.subs.>", inner.names.ns),
                    deliver_policy: consumer::DeliverPolicy::LastPerSubject,
                    ..Default::default()
                })
                .await
                .map_err(backend)?;
            let mut changes = consumer.messages().await.map_err(backend)?;
            let mut subscriptions = inner.subscriptions.clone();
            let mut to_load = subscriptions.info().await.map_err(backend)?.state.messages;
            while to_load > 0 {
                let Some(Ok(message)) = changes.next().await else {
                    break;
                };
                if let Some((function, pattern, present)) =
                    inner.subscription_of(&message.subject, &message.payload)
                {
                    if present {
                        let _ = inner.table.write().insert(&function, &pattern);
                    } else {
                        inner.table.write().remove(&function, &pattern);
                    }
                }
                to_load = message.info().map_or(0, |i| i.pending);
            }
            let weak = inner.me.clone();
            tokio::spawn(async move {
                while let Some(message) = changes.next().await {
                    let (Ok(message), Some(inner)) = (message, weak.upgrade()) else {
                        continue;
                    };
                    if let Some((function, pattern, present)) =
                        inner.subscription_of(&message.subject, &message.payload)
                    {
                        inner.table_changed(&function, &pattern, present);
                    }
                }
            });
            for function in known {
                self.deployed(&function);
            }
            Ok(())
        })
    }

    fn deployed(&self, function: &str) {
        self.inner.take_events(function);
    }

    fn subscribe(&self, function: &str, pattern: &str) -> Result<bool, BusError> {
        let added = self.inner.table.write().insert(function, pattern)?;
        if added {
            tracing::info!(function, pattern, "subscribed");
            let inner = self.inner.clone();
            let (function, pattern) = (function.to_owned(), pattern.to_owned());
            inner.take_events(&function);
            tokio::spawn(async move { inner.share_subscription(&function, &pattern, true).await });
        }
        Ok(added)
    }

    fn unsubscribe(&self, function: &str, pattern: &str) -> bool {
        let removed = self.inner.table.write().remove(function, pattern);
        if removed {
            tracing::info!(function, pattern, "unsubscribed");
            self.inner.stop_pattern(function, pattern);
            let inner = self.inner.clone();
            let (function, pattern) = (function.to_owned(), pattern.to_owned());
            tokio::spawn(async move {
                inner.share_subscription(&function, &pattern, false).await;
                let _ = inner
                    .events
                    .delete_consumer(&inner.names.consumer(&function, &pattern))
                    .await;
            });
        }
        removed
    }

    fn remove_function(&self, function: &str) -> Vec<String> {
        // Other supervisors may run it still: its subscriptions stay shared; this one only
        // stops taking its events.
        if let Some(local) = self.inner.local.lock().remove(function) {
            for task in local.consumers.into_values().chain(local.sync) {
                task.abort();
            }
        }
        Vec::new()
    }

    fn subscriptions(&self) -> Vec<Subscription> {
        self.inner.table.read().all()
    }

    fn subscriptions_of(&self, function: &str) -> Vec<String> {
        self.inner.table.read().patterns_of(function)
    }

    fn publish(&self, event: Event, cause: Causation) -> BoxFuture<'_, PublishResult> {
        let inner = self.inner.clone();
        let event = place(event, &cause);
        Box::pin(async move {
            let subscribers = inner.table.read().matching(event.event_type());
            let event = event.share();
            let mut result = PublishResult {
                published: true,
                event_id: event.id.clone(),
                delivered: 0,
                errors: Vec::new(),
                accepted: None,
            };
            if subscribers.is_empty() {
                return result;
            }
            if event.hops >= inner.config.max_hops {
                result.errors = subscribers
                    .iter()
                    .map(|f| DeliveryFailure {
                        function: f.to_string(),
                        message: format!(
                            "hop limit of {} reached: event {:?} was not delivered (does a chain of events loop?)",
                            inner.config.max_hops, event.event_type
                        ),
                    })
                    .collect();
                cause.report(&result.errors);
                return result;
            }
            let mut headers = headers_of(&event);
            let waiting: Vec<String> = cause.waiting().iter().map(u64::to_string).collect();
            headers.insert(WAITING, waiting.join(",").as_str());
            let body = Bytes::from(event.json().get().to_owned());
            let replies = join_all(subscribers.iter().map(|function| {
                let request = async_nats::Request::new()
                    .headers(headers.clone())
                    .payload(body.clone())
                    .timeout(Some(inner.config.sync_timeout));
                let subject = inner.names.sync_subject(function);
                let client = inner.client.clone();
                async move { client.send_request(subject, request).await }
            }))
            .await;
            let mut nested = Vec::new();
            shs_bus::count_published("sync");
            for (function, reply) in subscribers.iter().zip(replies) {
                let failure = |message: String| DeliveryFailure {
                    function: function.to_string(),
                    message,
                };
                match reply {
                    Ok(message) => match serde_json::from_slice::<SyncReply>(&message.payload) {
                        Ok(reply) => {
                            nested.extend(reply.nested);
                            if reply.ok {
                                result.delivered += 1;
                            } else {
                                result.errors.push(failure(reply.message));
                            }
                        }
                        Err(e) => result.errors.push(failure(format!(
                            "a malformed answer from the supervisor that took it: {e}"
                        ))),
                    },
                    Err(e) => result.errors.push(failure(match e.kind() {
                        async_nats::RequestErrorKind::NoResponders => {
                            format!("no supervisor on the bus runs function {function:?}")
                        }
                        async_nats::RequestErrorKind::TimedOut => format!(
                            "no answer within {:?} from the supervisor that took it",
                            inner.config.sync_timeout
                        ),
                        _ => format!("cannot reach the bus: {e}"),
                    })),
                }
            }
            result.errors.extend(nested);
            cause.report(&result.errors);
            result
        })
    }

    fn publish_async(
        &self,
        event: Event,
        cause: Causation,
    ) -> BoxFuture<'_, Result<String, BusError>> {
        let inner = self.inner.clone();
        let event = place(event, &cause);
        Box::pin(async move {
            let event = event.share();
            if event.hops >= inner.config.max_hops {
                // Cut: each subscriber gets a dead letter, so that nothing is lost silently.
                let subscribers = inner.table.read().matching(&event.event_type);
                for function in subscribers {
                    let record = DeadRecord {
                        function: function.to_string(),
                        event_id: event.id.clone(),
                        event_type: event.event_type.clone(),
                        hops: event.hops,
                        cause: event.cause.clone(),
                        event: event.json().to_owned(),
                        attempts: vec![Attempt {
                            attempt: 1,
                            time: now(),
                            status: LOOP_DETECTED,
                            error: format!("hop limit of {} reached", inner.config.max_hops),
                        }],
                        dead_at: now(),
                    };
                    inner.bury(&record).await;
                }
                return Ok(event.id.clone());
            }
            let mut headers = headers_of(&event);
            // An event is unique by id and source (CloudEvents): the same pair again within
            // the stream's duplicate window is stored once.
            headers.insert(
                "Nats-Msg-Id",
                format!("{} {}", event.source, event.id).as_str(),
            );
            let ack = inner
                .js
                .publish_with_headers(
                    inner.names.event_subject(&event.event_type),
                    headers,
                    Bytes::from(event.json().get().to_owned()),
                )
                .await
                .map_err(backend)?;
            ack.await.map_err(backend)?;
            shs_bus::count_published("async");
            Ok(event.id.clone())
        })
    }

    fn dead_letters(
        &self,
        filter: DeadLetterFilter,
    ) -> BoxFuture<'_, Result<Vec<DeadLetter>, BusError>> {
        Box::pin(async move {
            let inner = &self.inner;
            let mut letters = Vec::new();
            let mut dead = inner.dead.clone();
            let info = dead.info().await.map_err(backend)?.clone();
            if info.state.messages == 0 {
                return Ok(letters);
            }
            let exact = filter
                .function
                .as_ref()
                .map(|f| inner.names.dead_subject(f));
            let prefix = format!("{}.dead.", inner.names.ns);
            for seq in info.state.first_sequence..=info.state.last_sequence {
                let Ok(message) = inner.dead.get_raw_message(seq).await else {
                    continue;
                };
                let subject = message.subject.as_str();
                let wanted = match &exact {
                    Some(exact) => subject == exact,
                    None => subject.starts_with(&prefix),
                };
                if !wanted {
                    continue;
                };
                if !message.subject.as_str().starts_with(&prefix) {
                    continue;
                }
                let Ok(record) = serde_json::from_slice::<DeadRecord>(&message.payload) else {
                    continue;
                };
                if filter
                    .event_type
                    .as_ref()
                    .is_some_and(|t| *t != record.event_type)
                {
                    continue;
                }
                letters.push(DeadLetter {
                    id: message.sequence.to_string(),
                    function: record.function,
                    event_id: record.event_id,
                    event_type: record.event_type,
                    event: record.event,
                    attempts: record.attempts,
                    dead_at: record.dead_at,
                });
            }
            letters.reverse();
            letters.truncate(filter.limit.max(1));
            Ok(letters)
        })
    }

    fn retry_dead_letter(&self, id: &str) -> BoxFuture<'_, Result<bool, BusError>> {
        let seq = id.parse::<u64>().ok();
        Box::pin(async move {
            let inner = &self.inner;
            let Some(seq) = seq else { return Ok(false) };
            let Ok(message) = inner.dead.get_raw_message(seq).await else {
                return Ok(false);
            };
            let record: DeadRecord = serde_json::from_slice(&message.payload).map_err(backend)?;
            let event = SharedEvent::from_stored(
                record.event_id.clone(),
                record.event_type.clone(),
                record.hops,
                record.cause.clone(),
                Origin::Http { request_id: None },
                record.event,
            );
            let mut headers = headers_of(&event);
            headers.insert("Nats-Msg-Id", format!("{}.retry.{seq}", event.id).as_str());
            let ack = inner
                .js
                .publish_with_headers(
                    inner.names.retry_subject(&record.function),
                    headers,
                    Bytes::from(event.json().get().to_owned()),
                )
                .await
                .map_err(backend)?;
            ack.await.map_err(backend)?;
            inner.dead.delete_message(seq).await.map_err(backend)?;
            inner
                .forget_attempts(&record.event_id, &record.function)
                .await;
            Ok(true)
        })
    }

    fn delete_dead_letter(&self, id: &str) -> BoxFuture<'_, Result<bool, BusError>> {
        let seq = id.parse::<u64>().ok();
        Box::pin(async move {
            match seq {
                Some(seq) => Ok(self.inner.dead.delete_message(seq).await.unwrap_or(false)),
                None => Ok(false),
            }
        })
    }

    fn event(&self, _id: &str) -> BoxFuture<'_, Result<Option<EventInfo>, BusError>> {
        Box::pin(async { Err(BusError::Unsupported("event history on the NATS bus")) })
    }

    fn quiesce(&self) {
        // Stop pulling: what this supervisor has not acknowledged goes to another one (or back
        // to it after a restart) after the ack wait.
        let local = std::mem::take(&mut *self.inner.local.lock());
        for (_, entry) in local {
            for task in entry.consumers.into_values() {
                task.abort();
            }
        }
    }

    fn flush(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let _ = self.inner.client.flush().await;
        })
    }
}

/// Sets the hop count and cause of an event from the context it is published in.
fn place(event: Event, cause: &Causation) -> Event {
    let mut event = event;
    if cause.hops() > 0 {
        event = event
            .with_extension(
                shs_bus::event::HOPS_ATTRIBUTE,
                serde_json::Value::from(cause.hops()),
            )
            .unwrap_or_else(|_| unreachable!("a hop count is valid"));
    }
    if let Some(cause_event) = cause.event() {
        event = event
            .with_extension(
                shs_bus::event::CAUSE_ATTRIBUTE,
                serde_json::Value::from(cause_event),
            )
            .unwrap_or_else(|_| unreachable!("a cause is valid"));
    }
    event
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_safe_for_nats() {
        let names = Names::new("t.e st");
        assert_eq!(names.ns, "t_e_st");
        assert_eq!(names.stream, "T_E_ST_EVENTS");
        assert_eq!(
            names.event_subject("user.created"),
            "t_e_st.events.user.created"
        );
        let consumer = names.consumer("f-1", "orders.>");
        assert!(consumer.starts_with("t_e_st_f-1_"));
        assert!(!consumer.contains(['.', '*', '>', ' ']));
        assert_ne!(names.consumer("f", "a.*"), names.consumer("f", "a.>"));
    }

    #[test]
    fn hex_round_trips() {
        for text in ["orders.>", "user.*", "ü.x"] {
            assert_eq!(unhex(&hex(text)).as_deref(), Some(text));
        }
        assert_eq!(unhex("zz"), None);
    }
}
