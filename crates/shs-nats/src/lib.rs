//! NATS JetStream as the backend of the shs event bus, for several supervisors sharing one set
//! of events.
//!
//! [`connect`] gives a [`shs_bus::Bus`] whose backend is NATS. The bus applies every rule of
//! publishing (placement in the causal context, the hop cut, the publish result) and makes and
//! settles every asynchronous attempt ([`shs_bus::settle::attempt`]) exactly as on the
//! embedded store; this crate moves and keeps the events. Every supervisor started with
//! `--bus nats://HOST:PORT` (and the same `--bus-namespace`) shares:
//!
//! - **The subscription table**, in the stream `<NS>_SUBSCRIPTIONS`, which keeps the last
//!   message of each subject `<ns>.subs.<function>.<hex of the pattern>` ("1" subscribed, "0"
//!   not). Each supervisor reads it at start and follows it, keeping a copy of the table for
//!   matching (`subscriptions`).
//! - **Asynchronous events**, in the stream `<NS>_EVENTS` (subjects `<ns>.events.<type>`,
//!   interest retention: an event stays until every consumer has acknowledged it). There is
//!   one durable pull consumer per (function, pattern), named
//!   `<ns>_<function>_<hash of the pattern>`, shared by every supervisor that runs the
//!   function: JetStream hands each event to one of them (`consume`). The event is
//!   acknowledged after the function answers, and kept alive meanwhile by progress acks; an
//!   event that goes [`DEFAULT_ACK_WAIT`] without either (a supervisor that died) is given to
//!   another supervisor. A failed attempt is recorded (stream `<NS>_ATTEMPTS`)
//!   and negatively acknowledged with the backoff the bus decided as its delay; a dead letter
//!   goes to the stream `<NS>_DEAD` with every attempt (`dead`). A function with several
//!   patterns matching one event gets it from whichever of their consumers claims it first
//!   in the stream `<NS>_CLAIMS` (a compare-and-set per stored message, so once); the others
//!   acknowledge it without delivering. NATS 2.9 has no consumer with several filters, and a
//!   consumer made for a new pattern starts at new events, so the consumers that hold an
//!   event must be able to deliver it whichever was made first.
//! - **Synchronous events**, over core NATS request-reply (`sync`): for each subscribing
//!   function, the publisher sends a request to `<ns>.sync.<function>`, which every
//!   supervisor running the function answers as a queue group (so exactly one of them takes
//!   it). The supervisor that takes it delivers the event and answers with the outcome (and
//!   the failures further down the chain); the publisher waits for every answer, so `publish`
//!   keeps its meaning across nodes. A function that no supervisor runs is reported at once
//!   ("no responders").
//!
//! Hop counts, the cause of an event and the calls waiting on a synchronous publish travel in
//! message headers (`wire`), so the loop cut and the detection of a wait on itself work across
//! nodes (call ids are unique per supervisor). Every name comes from the namespace (`names`).

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::{self, stream};
use futures::future::BoxFuture;
use parking_lot::Mutex;
use shs_bus::{
    Attempt, Backend, Bus, BusError, Causation, Core, DeadLetter, DeadLetterFilter, EventFilter,
    EventInfo, EventPage, Fanout, Publication, SharedEvent, Traffic,
};

mod consume;
mod dead;
mod names;
mod subscriptions;
mod sync;
mod wire;

use consume::Local;
use names::Names;

/// The ack wait of the consumers: a dead supervisor's deliveries move to another within it.
pub const DEFAULT_ACK_WAIT: Duration = Duration::from_secs(4);

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
    /// How long an asynchronous delivery may go without a sign of life before JetStream gives
    /// it to another supervisor. The supervisor working on it sends a progress ack every
    /// quarter of it, so a long delivery keeps its place while its supervisor lives;
    /// [`DEFAULT_ACK_WAIT`] unless a test wants otherwise.
    pub ack_wait: Duration,
    /// Deliveries a chain of events may take before it is cut.
    pub max_hops: u32,
}

/// Connects, creates the streams of the namespace if they are missing, and gives the bus.
pub async fn connect(config: NatsConfig) -> Result<Bus, BusError> {
    let core = Core::new(config.max_hops);
    let inner = Inner::connect(core.clone(), config).await?;
    Ok(Bus::with_backend(core, NatsBackend { inner }))
}

fn backend(e: impl std::fmt::Display) -> BusError {
    BusError::Backend(e.to_string())
}

/// An event that cannot be written on NATS (a header value with a line break): refused as
/// invalid input, never a panic.
fn invalid(e: wire::BadHeader) -> BusError {
    BusError::InvalidAttribute {
        name: e.name.to_owned(),
        reason: "a line break cannot travel in a NATS header (CloudEvents attributes hold no control characters)",
    }
}

/// The state every task of the backend shares.
struct Inner {
    client: async_nats::Client,
    js: jetstream::Context,
    names: Names,
    config: NatsConfig,
    core: Arc<Core>,
    events: stream::Stream,
    dead: stream::Stream,
    subscriptions: stream::Stream,
    attempts: stream::Stream,
    claims: stream::Stream,
    /// The tasks taking the events of the functions deployed here.
    local: Mutex<HashMap<String, Local>>,
    me: Weak<Inner>,
}

impl Inner {
    async fn connect(core: Arc<Core>, config: NatsConfig) -> Result<Arc<Inner>, BusError> {
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
                subjects: vec![names.event_subject(">"), names.retry_subject(">")],
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
                subjects: vec![names.dead_subject(">")],
                storage: stream::StorageType::File,
                ..Default::default()
            })
            .await
            .map_err(backend)?;
        let subscriptions = last_per_subject(
            &js,
            &names.subscriptions,
            names.subscriptions_filter(),
            Duration::ZERO,
        )
        .await?;
        let attempts = last_per_subject(
            &js,
            &names.attempts,
            names.attempts_filter(),
            Duration::from_secs(7 * 24 * 3600),
        )
        .await?;
        let claims = last_per_subject(
            &js,
            &names.claims,
            names.claims_filter(),
            Duration::from_secs(7 * 24 * 3600),
        )
        .await?;
        let inner = Arc::new_cyclic(|me| Inner {
            client,
            js,
            names,
            config,
            core,
            events,
            dead,
            subscriptions,
            attempts,
            claims,
            local: Mutex::new(HashMap::new()),
            me: me.clone(),
        });
        tracing::info!(url = %inner.config.url, namespace = %inner.names.ns, "event bus on NATS JetStream");
        Ok(inner)
    }

    fn arc(&self) -> Option<Arc<Inner>> {
        self.me.upgrade()
    }

    /// Stores `event` in the events stream under `subject`, de-duplicated by `msg_id`;
    /// resolves once JetStream has acknowledged it. No acknowledgement in time (the server is
    /// stalled, or the connection is down and the message waits to be sent) is
    /// [`Stored::Unknown`]: the event may be stored, now or once the message goes out.
    async fn store_event(
        &self,
        subject: String,
        event: &SharedEvent,
        msg_id: &str,
    ) -> Result<(), Stored> {
        let failed = |e: BusError| Stored::Failed(e);
        let mut headers = wire::headers_of(event).map_err(invalid).map_err(failed)?;
        wire::set_msg_id(&mut headers, msg_id)
            .map_err(invalid)
            .map_err(failed)?;
        let ack = self
            .js
            .publish_with_headers(subject, headers, wire::body_of(event))
            .await
            .map_err(|e| Stored::Failed(backend(e)))?;
        match ack.await {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == PublishErrorKind::TimedOut => Err(Stored::Unknown(format!(
                "no acknowledgement from JetStream: {e}"
            ))),
            Err(e) => Err(Stored::Failed(backend(e))),
        }
    }

    /// Stores a message in a stream; resolves once JetStream has acknowledged it.
    async fn put(&self, subject: String, body: bytes::Bytes) -> Result<(), String> {
        match self.js.publish(subject, body).await {
            Ok(ack) => ack.await.map(drop).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        }
    }
}

impl Inner {
    /// Stores an asynchronous publication in the events stream (its consumers deliver it); a
    /// cut one becomes a dead letter for each subscriber instead.
    async fn accept(&self, publication: Publication, cut: Option<Attempt>) -> Result<(), BusError> {
        let Publication { event, subscribers } = publication;
        if let Some(attempt) = cut {
            for function in subscribers {
                let record = wire::DeadRecord::new(&function, &event, vec![attempt.clone()]);
                self.bury(&record).await?;
            }
            return Ok(());
        }
        // An event is unique by id and source (CloudEvents): the same pair again within the
        // stream's duplicate window is stored once.
        let msg_id = format!("{} {}", event.source, event.id);
        let stored = self
            .store_event(self.names.event_subject(&event.event_type), &event, &msg_id)
            .await;
        match stored {
            Err(Stored::Unknown(reason)) => Err(BusError::Unconfirmed {
                event_id: event.id.clone(),
                event_source: event.source.clone(),
                reason,
            }),
            Err(Stored::Failed(e)) => Err(e),
            Ok(()) => Ok(()),
        }
    }
}

/// Why an event was not stored for sure.
enum Stored {
    /// It was not stored.
    Failed(BusError),
    /// JetStream did not acknowledge it in time: it may be stored.
    Unknown(String),
}

impl From<Stored> for BusError {
    fn from(stored: Stored) -> BusError {
        match stored {
            Stored::Failed(e) => e,
            Stored::Unknown(reason) => BusError::Backend(reason),
        }
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

/// The bus's backend on NATS JetStream.
struct NatsBackend {
    inner: Arc<Inner>,
}

impl Backend for NatsBackend {
    fn start(&self, known: Vec<String>) -> BoxFuture<'_, Result<(), BusError>> {
        Box::pin(async move {
            self.inner.follow_table().await?;
            for function in known {
                self.inner.take_events(&function);
            }
            Ok(())
        })
    }

    fn subscription_changed(&self, function: &str, pattern: &str, present: bool) {
        let inner = self.inner.clone();
        if present {
            inner.take_events(function);
        } else {
            inner.stop_pattern(function, pattern);
        }
        let (function, pattern) = (function.to_owned(), pattern.to_owned());
        tokio::spawn(async move {
            inner.share_subscription(&function, &pattern, present).await;
            if !present {
                inner.delete_consumer(&function, &pattern).await;
            }
        });
    }

    fn removed(&self, function: &str) -> bool {
        // Other supervisors may run it still: its subscriptions stay shared; this one only
        // stops taking its events.
        self.inner.stop_function(function);
        false
    }

    fn deployed(&self, function: &str) {
        self.inner.take_events(function);
    }

    fn deliver<'a>(
        &'a self,
        publication: &'a Publication,
        cause: &'a Causation,
    ) -> BoxFuture<'a, Fanout> {
        Box::pin(self.inner.request_all(publication, cause))
    }

    fn accept(
        &self,
        publication: Publication,
        cut: Option<Attempt>,
    ) -> BoxFuture<'_, Result<(), BusError>> {
        Box::pin(self.inner.accept(publication, cut))
    }

    fn dead_letters(
        &self,
        filter: DeadLetterFilter,
    ) -> BoxFuture<'_, Result<Vec<DeadLetter>, BusError>> {
        Box::pin(self.inner.dead_letters(filter))
    }

    fn retry_dead_letter(&self, id: &str) -> BoxFuture<'_, Result<bool, BusError>> {
        let seq = id.parse::<u64>().ok();
        Box::pin(async move {
            match seq {
                Some(seq) => self.inner.retry_dead_letter(seq).await,
                None => Ok(false),
            }
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

    fn events(&self, _filter: EventFilter) -> BoxFuture<'_, Result<EventPage, BusError>> {
        Box::pin(async { Err(BusError::Unsupported("event history on the NATS bus")) })
    }

    fn traffic(&self, _since_ms: i64) -> BoxFuture<'_, Result<Traffic, BusError>> {
        Box::pin(async { Err(BusError::Unsupported("event history on the NATS bus")) })
    }

    fn quiesce(&self) {
        // Stop pulling: what this supervisor has not acknowledged goes to another one (or back
        // to it after a restart) after the ack wait.
        self.inner.stop_consumers();
    }

    fn flush(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let _ = self.inner.client.flush().await;
        })
    }
}
