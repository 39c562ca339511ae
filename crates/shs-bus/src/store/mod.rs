//! The embedded durable store: SQLite in WAL mode, in the data folder.
//!
//! It keeps every event published (asynchronous ones with a pending delivery per subscribing
//! function; synchronous ones as history, with each delivery's outcome), every attempt with
//! its status and error, the dead letters, and the dynamic subscriptions.
//!
//! One writer thread owns the write connection. Writes queue up on a channel, and the writer
//! applies everything queued in one transaction (group commit), then answers the writes that
//! wait for durability. So the cost of a disk flush is shared by every event accepted in the
//! meantime. Reads go through a second connection (WAL lets them run beside the writer).
//!
//! This module holds the types and the [`Store`]'s writes; `schema` the tables and their
//! migrations, `writer` the writer thread, `read` the queries, `list` the listing of events,
//! `traffic` the counts of the topology, `invocations` the writes and reads of asynchronous
//! invocations, `keys` the idempotency keys.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use rusqlite::Connection;
use serde::Serialize;
use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot};

use crate::event::SharedEvent;
use crate::idempotency::{Claimed, KeptAnswer, KeyClaim};
use schema::SCHEMA_VERSION;
use writer::Write;

pub use list::{DeliverySummary, EventFilter, EventPage, EventSummary, MAX_PAGE, MAX_SCANNED};
pub use traffic::{DeliveryCount, MAX_COUNTED, PublishCount, Traffic};

mod invocations;
mod keys;
mod list;
mod read;
mod schema;
mod traffic;
mod writer;

pub use invocations::{
    DeadInvocation, FAILED, InvocationError, InvocationFilter, InvocationInfo, InvocationWork,
    NewInvocation, PendingInvocation, QUEUED, SUCCEEDED,
};

/// How many writes the queue holds before writers wait.
const WRITE_QUEUE: usize = 16_384;
/// The history of a synchronous event is not recorded while this many writes wait: under a
/// load the disk cannot follow, history gives way (and memory stays bounded) rather than the
/// writes that matter.
const HISTORY_BACKLOG: usize = 4_096;
/// Nor while the history writes waiting hold this many bytes of events.
pub const HISTORY_BYTES: usize = 8 * 1024 * 1024;
/// The largest event object (payload included) history keeps whole; of a larger one it keeps
/// everything but the data (`payload` null, no `data_base64`). The same when nobody took it.
pub const HISTORY_PAYLOAD_MAX: usize = 64 * 1024;
/// Why history kept an event without its data: nobody was subscribed to it.
pub const OMITTED_NO_SUBSCRIBER: &str = "no subscriber";
/// Why history kept an event without its data: it was larger than [`HISTORY_PAYLOAD_MAX`].
pub const OMITTED_TOO_LARGE: &str = "larger than 64 KiB";

/// What the store could not do.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite failed.
    #[error("the event store failed: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The data folder could not be created.
    #[error("cannot create the data folder {}: {source}", path.display())]
    Folder {
        /// The folder.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The writer thread is gone (the store was closed).
    #[error("the event store is closed")]
    Closed,
    /// A write could not be applied.
    #[error("the event store could not save it: {0}")]
    Write(String),
    /// The database was written by a build of shs with another schema.
    #[error(
        "the event store {} has schema version {found}, this shs uses version {SCHEMA_VERSION}; \
         move it aside (or point --data-dir elsewhere) to start afresh",
        path.display()
    )]
    Schema {
        /// The database file.
        path: PathBuf,
        /// The version it carries.
        found: i64,
    },
}

/// How hard a commit works to be durable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// Flush to disk on every commit (`synchronous = FULL`): survives power loss.
    #[default]
    Full,
    /// Leave flushing to the OS (`synchronous = NORMAL` in WAL mode): survives the process
    /// being killed, not the machine losing power.
    Normal,
}

/// One attempt to deliver an event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Attempt {
    /// 1 for the first attempt (a revived dead letter goes on counting).
    pub attempt: u32,
    /// When it ended, RFC 3339.
    pub time: String,
    /// The status the failure maps to (200 when it succeeded).
    pub status: u16,
    /// What went wrong (empty when it succeeded).
    pub error: String,
}

/// A delivery waiting to be made.
#[derive(Debug)]
pub struct PendingDelivery {
    /// The delivery's id.
    pub id: i64,
    /// The event's place in the store (deliveries are made in this order).
    pub seq: i64,
    /// The event, as stored (its id, type, hop count, cause, publisher and object).
    pub event: Arc<SharedEvent>,
    /// Attempts made so far.
    pub attempts: u32,
    /// Not before this time (ms since the epoch).
    pub next_ms: i64,
}

/// How a delivery attempt ended, as recorded.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// Delivered.
    Delivered(Attempt),
    /// Failed; tried again at `next_ms`.
    Retry(Attempt, i64),
    /// Failed for good: a dead letter.
    Dead(Attempt),
}

/// The kind of a dead letter that is an event's delivery.
pub const KIND_EVENT: &str = "event";
/// The kind of a dead letter that is a failed asynchronous invocation.
pub const KIND_INVOCATION: &str = "invocation";

/// Which dead letters to list.
#[derive(Clone, Debug, Default)]
pub struct DeadLetterFilter {
    /// Only those of this function.
    pub function: Option<String>,
    /// Only those of this event type (no invocation has one).
    pub event_type: Option<String>,
    /// Only those of this kind ([`KIND_EVENT`], [`KIND_INVOCATION`]).
    pub kind: Option<String>,
    /// At most this many (newest first).
    pub limit: usize,
}

/// A delivery (or an asynchronous invocation) that failed for good, with everything needed
/// to act on it.
#[derive(Debug, Serialize)]
pub struct DeadLetter {
    /// The dead letter's id (use it to retry or delete).
    pub id: String,
    /// [`KIND_EVENT`] or [`KIND_INVOCATION`].
    pub kind: &'static str,
    /// The subscribing (or invoked) function.
    pub function: String,
    /// The event's id (kind `event`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    /// The event's type (kind `event`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_type: Option<String>,
    /// The event object (kind `event`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<Box<RawValue>>,
    /// The invocation's id (kind `invocation`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invocation_id: Option<String>,
    /// The invocation's request as stored (kind `invocation`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request: Option<Box<RawValue>>,
    /// Every attempt, with its status and error.
    pub attempts: Vec<Attempt>,
    /// When it became a dead letter.
    pub dead_at: String,
}

/// One function's delivery of an event.
#[derive(Debug, Serialize, serde::Deserialize)]
pub struct DeliveryInfo {
    /// The subscribing function.
    pub function: String,
    /// `pending`, `delivered`, `failed` (a synchronous delivery that failed) or `dead`.
    pub state: String,
    /// The attempts so far.
    pub attempts: Vec<Attempt>,
    /// When the next attempt is due, while pending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt: Option<String>,
    /// The dead letter's id, when it is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter: Option<String>,
}

/// An event, its deliveries and its lineage.
#[derive(Debug, Serialize)]
pub struct EventInfo {
    /// The event object.
    pub event: Box<RawValue>,
    /// `sync` or `async`.
    pub mode: String,
    /// Who published it.
    pub published_by: serde_json::Value,
    /// The event whose delivery published it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub caused_by: Option<String>,
    /// The events published while it was being delivered.
    pub caused: Vec<String>,
    /// Each subscribing function's delivery.
    pub deliveries: Vec<DeliveryInfo>,
    /// Why `event` is kept without its data (`payload` null, no `data_base64`), when it is:
    /// [`OMITTED_NO_SUBSCRIBER`] or [`OMITTED_TOO_LARGE`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload_omitted: Option<String>,
}

/// The SQLite event store.
pub struct Store {
    writes: mpsc::Sender<Write>,
    /// Bytes of events in the history writes waiting (at most [`HISTORY_BYTES`]).
    history_bytes: Arc<AtomicUsize>,
    reader: Arc<Mutex<Connection>>,
    path: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// RFC 3339 for milliseconds since the epoch.
pub fn rfc3339_ms(ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_millis(t).to_string()
}

impl Store {
    /// Opens (creating it if needed) the store `shs.db` in `folder`.
    pub fn open(folder: &Path, durability: Durability) -> Result<Store, StoreError> {
        std::fs::create_dir_all(folder).map_err(|source| StoreError::Folder {
            path: folder.to_owned(),
            source,
        })?;
        let path = folder.join("shs.db");
        let writer = schema::open(&path, durability)?;
        schema::migrate(&writer, &path)?;
        let abandoned = keys::release_abandoned(&writer)?;
        if abandoned > 0 {
            tracing::info!(
                keys = abandoned,
                "idempotency keys of requests cut short by the last stop released"
            );
        }
        let reader = schema::open(&path, durability)?;
        let (writes, queue) = mpsc::channel(WRITE_QUEUE);
        let history_bytes = Arc::new(AtomicUsize::new(0));
        let counted = history_bytes.clone();
        std::thread::Builder::new()
            .name("shs-store".into())
            .spawn(move || writer::write_loop(writer, queue, counted))
            .map_err(|source| StoreError::Folder {
                path: folder.to_owned(),
                source,
            })?;
        Ok(Store {
            writes,
            history_bytes,
            reader: Arc::new(Mutex::new(reader)),
            path,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stores an asynchronously published event with a pending delivery for each function in
    /// `pending` (and `settled` ones that are dead at once); resolves once it is on disk.
    pub async fn accept(
        &self,
        event: Arc<SharedEvent>,
        pending: Vec<Arc<str>>,
        settled: Vec<(Arc<str>, &'static str, Attempt)>,
    ) -> Result<(), StoreError> {
        // Nobody will be delivered it: its data is not kept.
        let (event, omitted) = if pending.is_empty() && settled.is_empty() {
            (
                Arc::new(event.without_payload()),
                Some(OMITTED_NO_SUBSCRIBER),
            )
        } else {
            (event, None)
        };
        self.ask(|done| Write::Accept {
            event,
            omitted,
            pending,
            settled,
            done,
        })
        .await
    }

    /// Queues the write `make` builds around the sender of its answer, and waits for the answer.
    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Write,
    ) -> Result<T, StoreError> {
        let (done, wait) = oneshot::channel();
        self.writes
            .send(make(done))
            .await
            .map_err(|_| StoreError::Closed)?;
        wait.await.map_err(|_| StoreError::Closed)?
    }

    /// Records a synchronously published event and how each delivery ended, as history. Not
    /// waited for; dropped (and counted in `shs_event_history_dropped_total`) while the store
    /// is [`HISTORY_BACKLOG`] writes behind.
    pub fn record(&self, event: Arc<SharedEvent>, settled: Vec<(Arc<str>, &'static str, Attempt)>) {
        let waiting = self.writes.max_capacity() - self.writes.capacity();
        if waiting >= HISTORY_BACKLOG {
            metrics::counter!("shs_event_history_dropped_total").increment(1);
            tracing::debug!("event history not recorded: the store is {waiting} writes behind");
            return;
        }
        let omitted = if settled.is_empty() {
            Some(OMITTED_NO_SUBSCRIBER)
        } else if event.json().get().len() > HISTORY_PAYLOAD_MAX {
            Some(OMITTED_TOO_LARGE)
        } else {
            None
        };
        // Only what is kept waits in the queue: the event with its data goes now.
        let event = match omitted {
            Some(_) => Arc::new(event.without_payload()),
            None => event,
        };
        let bytes = event.json().get().len();
        let before = self.history_bytes.fetch_add(bytes, Ordering::AcqRel);
        if before.saturating_add(bytes) > HISTORY_BYTES {
            self.history_bytes.fetch_sub(bytes, Ordering::AcqRel);
            metrics::counter!("shs_event_history_dropped_total").increment(1);
            tracing::debug!("event history not recorded: {before} bytes of history wait");
            return;
        }
        let write = Write::Record {
            event,
            omitted,
            settled,
            bytes,
        };
        if self.writes.try_send(write).is_err() {
            self.history_bytes.fetch_sub(bytes, Ordering::AcqRel);
            metrics::counter!("shs_event_history_dropped_total").increment(1);
            tracing::debug!("event history not recorded: the store's write queue is full");
        }
    }

    /// Records how a delivery attempt ended; resolves once it is on disk.
    pub async fn finish(&self, delivery: i64, outcome: Outcome) -> Result<(), StoreError> {
        self.ask(|done| Write::Finish {
            delivery,
            outcome,
            done,
        })
        .await
    }

    /// Makes a dead letter pending again, with a fresh count of attempts; returns its function,
    /// or `None` when there is no such dead letter.
    pub async fn revive(&self, delivery: i64) -> Result<Option<String>, StoreError> {
        self.ask(|done| Write::Revive { delivery, done }).await
    }

    /// Deletes a dead letter. False when there is no such dead letter.
    pub async fn delete_dead(&self, delivery: i64) -> Result<bool, StoreError> {
        self.ask(|done| Write::Delete { delivery, done }).await
    }

    /// Remembers (or forgets) a subscription, so that it survives a restart.
    pub fn save_subscription(&self, function: &str, pattern: &str, present: bool) {
        let write = Write::Subscription {
            function: function.to_owned(),
            pattern: pattern.to_owned(),
            present,
        };
        if self.writes.try_send(write).is_err() {
            tracing::warn!(
                function,
                pattern,
                "the store's write queue is full: subscription change not saved"
            );
        }
    }

    /// Remembers that `function`, deployed as `digest`, has been run: its start-up
    /// subscriptions are those saved.
    pub fn save_learned(&self, function: &str, digest: &str) {
        let _ = self.writes.try_send(Write::Learned {
            function: function.to_owned(),
            digest: digest.to_owned(),
        });
    }

    /// Remembers that `function` published `event_type` while handling a request.
    pub fn save_publishes(&self, function: &str, event_type: &str) {
        let _ = self.writes.try_send(Write::Publishes {
            function: function.to_owned(),
            event_type: event_type.to_owned(),
        });
    }

    /// Forgets every subscription (and what was learned) of a removed function.
    pub fn forget_function(&self, function: &str) {
        let _ = self.writes.try_send(Write::ForgetFunction {
            function: function.to_owned(),
        });
    }

    /// Deletes events older than `before_ms` whose deliveries are all settled (not pending,
    /// not dead letters).
    pub fn prune(&self, before_ms: i64) {
        let _ = self.writes.try_send(Write::Prune { before_ms });
    }

    /// Claims an idempotency key for a request; resolves once the claim is on disk.
    pub async fn claim_key(&self, claim: KeyClaim) -> Result<Claimed, StoreError> {
        self.ask(|done| Write::ClaimKey { claim, done }).await
    }

    /// Keeps the answer to the request holding a key (`Some`), or releases the key (`None`);
    /// resolves once it is on disk.
    pub async fn settle_key(
        &self,
        scope: String,
        key: String,
        answer: Option<KeptAnswer>,
    ) -> Result<(), StoreError> {
        self.ask(|done| Write::SettleKey {
            scope,
            key,
            answer,
            done,
        })
        .await
    }

    /// Resolves once everything written before has been committed.
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.writes.send(Write::Flush { done }).await.is_ok() {
            let _ = wait.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Origin;

    pub(super) fn event(id: &str) -> Arc<SharedEvent> {
        let json = format!(
            r#"{{"specversion":"1.0","id":"{id}","source":"/test","type":"t.one","payload":{{"n":1}}}}"#
        );
        Arc::new(SharedEvent::from_stored(
            id.to_owned(),
            "t.one".to_owned(),
            0,
            None,
            Origin::Http { request_id: None },
            RawValue::from_string(json).expect("the test event is JSON"),
        ))
    }

    pub(super) fn attempt(status: u16, error: &str) -> Attempt {
        Attempt {
            attempt: 1,
            time: "2026-11-27T10:00:00.000Z".to_owned(),
            status,
            error: error.to_owned(),
        }
    }

    /// An event whose payload is a string of `len` bytes.
    fn big_event(id: &str, len: usize) -> Arc<SharedEvent> {
        let json = format!(
            r#"{{"specversion":"1.0","id":"{id}","source":"/test","type":"t.big","payload":"{}","data_base64":"AAAA"}}"#,
            "x".repeat(len)
        );
        Arc::new(SharedEvent::from_stored(
            id.to_owned(),
            "t.big".to_owned(),
            0,
            None,
            Origin::Http { request_id: None },
            RawValue::from_string(json).expect("the test event is JSON"),
        ))
    }

    fn stored_bytes(dir: &Path) -> u64 {
        ["shs.db", "shs.db-wal"]
            .iter()
            .filter_map(|f| std::fs::metadata(dir.join(f)).ok())
            .map(|m| m.len())
            .sum()
    }

    fn took(function: &str) -> Vec<(Arc<str>, &'static str, Attempt)> {
        vec![(function.into(), "delivered", attempt(200, ""))]
    }

    #[tokio::test]
    async fn history_keeps_the_data_only_of_small_events_someone_took() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path(), Durability::Normal).expect("store opens");
        store.flush().await;
        let before = stored_bytes(dir.path());
        for n in 0..5 {
            store.record(big_event(&format!("nobody{n}"), 900 * 1024), Vec::new());
        }
        store.record(big_event("large", 900 * 1024), took("alpha"));
        store.record(big_event("small", 1_000), took("alpha"));
        let nobody = store.event("nobody0").await.expect("read").expect("kept");
        assert_eq!(
            nobody.payload_omitted.as_deref(),
            Some(OMITTED_NO_SUBSCRIBER)
        );
        let object: serde_json::Value = serde_json::from_str(nobody.event.get()).expect("json");
        assert_eq!(object["payload"], serde_json::Value::Null);
        assert!(object.get("data_base64").is_none());
        assert_eq!(
            (object["id"].as_str(), object["type"].as_str()),
            (Some("nobody0"), Some("t.big"))
        );
        let large = store.event("large").await.expect("read").expect("kept");
        assert_eq!(large.payload_omitted.as_deref(), Some(OMITTED_TOO_LARGE));
        assert_eq!(large.deliveries[0].function, "alpha");
        let small = store.event("small").await.expect("read").expect("kept");
        assert_eq!(small.payload_omitted, None);
        assert!(small.event.get().contains(&"x".repeat(1_000)));
        let grown = stored_bytes(dir.path()) - before;
        assert!(
            grown < 512 * 1024,
            "six 900 KiB events grew the store by {grown} bytes"
        );
    }

    #[tokio::test]
    async fn an_async_event_nobody_takes_keeps_no_data() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path(), Durability::Normal).expect("store opens");
        store
            .accept(big_event("lonely", 900 * 1024), Vec::new(), Vec::new())
            .await
            .expect("accepted");
        let info = store.event("lonely").await.expect("read").expect("kept");
        assert_eq!(info.mode, "async");
        assert_eq!(info.payload_omitted.as_deref(), Some(OMITTED_NO_SUBSCRIBER));
        assert!(info.event.get().len() < 1_024, "{}", info.event.get().len());
    }

    #[tokio::test]
    async fn a_flood_of_history_holds_at_most_the_byte_bound() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path(), Durability::Full).expect("store opens");
        // Objects of 60 KiB are kept whole; 2,000 of them (120 MiB) come faster than the disk.
        let mut most = 0;
        for n in 0..2_000 {
            store.record(big_event(&format!("e{n}"), 60 * 1024), took("alpha"));
            most = most.max(store.history_bytes.load(Ordering::Acquire));
        }
        assert!(most <= HISTORY_BYTES, "{most} bytes of history waited");
        store.flush().await;
        assert_eq!(store.history_bytes.load(Ordering::Acquire), 0);
    }

    #[tokio::test]
    async fn a_synchronous_event_is_read_back_with_its_deliveries() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path(), Durability::Normal).expect("store opens");
        store.record(
            event("e1"),
            vec![
                (
                    "zeta".into(),
                    "failed",
                    attempt(502, "the function crashed"),
                ),
                ("alpha".into(), "delivered", attempt(200, "")),
            ],
        );
        // No flush: reading an event sees every write queued before it.
        let info = store
            .event("e1")
            .await
            .expect("read")
            .expect("the event is there");
        assert_eq!(info.mode, "sync");
        let functions: Vec<_> = info
            .deliveries
            .iter()
            .map(|d| d.function.as_str())
            .collect();
        assert_eq!(functions, ["alpha", "zeta"]);
        assert_eq!(info.deliveries[1].state, "failed");
        assert_eq!(
            info.deliveries[1].attempts,
            [attempt(502, "the function crashed")]
        );
        assert!(info.deliveries[0].next_attempt.is_none());
        assert!(store.event("e2").await.expect("read").is_none());
    }
}
