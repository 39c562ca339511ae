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

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot};

use crate::event::{Origin, SharedEvent};

/// How many writes the queue holds before writers wait.
const WRITE_QUEUE: usize = 16_384;
/// The history of a synchronous event is not recorded while this many writes wait: under a
/// load the disk cannot follow, history gives way (and memory stays bounded) rather than the
/// writes that matter.
const HISTORY_BACKLOG: usize = 4_096;
/// Most writes applied in one transaction.
const MAX_BATCH: usize = 4_096;
/// How long a batch that nobody waits for (history, subscriptions) gathers company before it
/// is committed: each commit writes every page it touched to the WAL, so history written a few
/// events at a time costs several times what it costs in batches. A write someone waits for
/// ends the wait at once.
const LINGER: Duration = Duration::from_millis(2);
/// How often the writer looks for more writes while it lingers.
const LINGER_STEP: Duration = Duration::from_micros(250);

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
    /// The event's id.
    pub event_id: String,
    /// The event's type.
    pub event_type: String,
    /// The event's hop count.
    pub hops: u32,
    /// The event whose delivery published this one.
    pub cause: Option<String>,
    /// Who published it.
    pub origin: Origin,
    /// The event object.
    pub object: Box<RawValue>,
    /// Attempts made so far.
    pub attempts: u32,
    /// Not before this time (ms since the epoch).
    pub next_ms: i64,
}

/// How a delivery attempt ended.
#[derive(Debug)]
pub enum Outcome {
    /// Delivered.
    Delivered(Attempt),
    /// Failed; tried again at `next_ms`.
    Retry(Attempt, i64),
    /// Failed for good: a dead letter.
    Dead(Attempt),
}

/// Which dead letters to list.
#[derive(Clone, Debug, Default)]
pub struct DeadLetterFilter {
    /// Only those of this function.
    pub function: Option<String>,
    /// Only those of this event type.
    pub event_type: Option<String>,
    /// At most this many (newest first).
    pub limit: usize,
}

/// A delivery that failed for good, with everything needed to act on it.
#[derive(Debug, Serialize)]
pub struct DeadLetter {
    /// The dead letter's id (use it to retry or delete).
    pub id: String,
    /// The subscribing function.
    pub function: String,
    /// The event's id.
    pub event_id: String,
    /// The event's type.
    pub event_type: String,
    /// The event object.
    pub event: Box<RawValue>,
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
}

enum Write {
    /// An asynchronous event and its deliveries, as rows of their own.
    Accept {
        event: Arc<SharedEvent>,
        pending: Vec<Arc<str>>,
        settled: Vec<(Arc<str>, &'static str, Attempt)>,
        done: oneshot::Sender<Result<(), StoreError>>,
    },
    /// A synchronous event's history: one row, its deliveries (all settled) inside it.
    Record {
        event: Arc<SharedEvent>,
        settled: Vec<(Arc<str>, &'static str, Attempt)>,
    },
    Finish {
        delivery: i64,
        outcome: Outcome,
        done: oneshot::Sender<Result<(), StoreError>>,
    },
    Revive {
        delivery: i64,
        done: oneshot::Sender<Result<Option<String>, StoreError>>,
    },
    Delete {
        delivery: i64,
        done: oneshot::Sender<Result<bool, StoreError>>,
    },
    Subscription {
        function: String,
        pattern: String,
        present: bool,
    },
    ForgetFunction {
        function: String,
    },
    Prune {
        before_ms: i64,
    },
    Flush {
        done: oneshot::Sender<()>,
    },
}

impl Write {
    /// Whether someone waits for this write to be committed.
    fn awaited(&self) -> bool {
        match self {
            Write::Record { .. }
            | Write::Subscription { .. }
            | Write::ForgetFunction { .. }
            | Write::Prune { .. } => false,
            Write::Accept { .. }
            | Write::Finish { .. }
            | Write::Revive { .. }
            | Write::Delete { .. }
            | Write::Flush { .. } => true,
        }
    }
}

/// The SQLite event store.
pub struct Store {
    writes: mpsc::Sender<Write>,
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

/// The version of [`SCHEMA`], kept in SQLite's `user_version`.
const SCHEMA_VERSION: i64 = 2;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL,
    source TEXT NOT NULL,
    type TEXT NOT NULL,
    hops INTEGER NOT NULL,
    cause TEXT,
    origin TEXT NOT NULL,
    mode TEXT NOT NULL,
    object TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    -- A synchronous event's deliveries, all settled when it is written: a JSON array of
    -- DeliveryInfo (history costs one row per event). NULL for asynchronous events, whose
    -- deliveries are rows of their own.
    settled TEXT,
    UNIQUE (id, source)
);
-- Lookups by id use the (id, source) index; an early version of schema 1 had its own.
DROP INDEX IF EXISTS events_id;
CREATE INDEX IF NOT EXISTS events_cause ON events(cause);
CREATE TABLE IF NOT EXISTS deliveries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    event_seq INTEGER NOT NULL REFERENCES events(seq) ON DELETE CASCADE,
    function TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_ms INTEGER NOT NULL DEFAULT 0,
    updated_ms INTEGER NOT NULL,
    UNIQUE (function, event_seq)
);
CREATE INDEX IF NOT EXISTS deliveries_pending ON deliveries(function, event_seq) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS deliveries_dead ON deliveries(updated_ms) WHERE state = 'dead';
CREATE INDEX IF NOT EXISTS deliveries_event ON deliveries(event_seq);
CREATE TABLE IF NOT EXISTS attempts (
    delivery INTEGER NOT NULL REFERENCES deliveries(id) ON DELETE CASCADE,
    n INTEGER NOT NULL,
    time TEXT NOT NULL,
    status INTEGER NOT NULL,
    error TEXT NOT NULL,
    PRIMARY KEY (delivery, n)
);
CREATE TABLE IF NOT EXISTS subscriptions (
    function TEXT NOT NULL,
    pattern TEXT NOT NULL,
    PRIMARY KEY (function, pattern)
);
";

/// Creates the schema in a new database, migrates one of schema 1, and refuses any other.
fn migrate(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let found: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let tables: i64 = conn.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'events'",
        [],
        |r| r.get(0),
    )?;
    let new = found == 0 && tables == 0;
    if !(new || found == 1 || found == SCHEMA_VERSION) {
        return Err(StoreError::Schema {
            path: path.to_owned(),
            found,
        });
    }
    // One transaction: a crash midway leaves the store as it was, to be migrated again.
    let tx = conn.unchecked_transaction()?;
    if found == 1 {
        // Schema 1 kept a synchronous event's deliveries as rows; 2 adds the column that
        // holds them in the event's row (old history stays readable as it is).
        tx.execute_batch("ALTER TABLE events ADD COLUMN settled TEXT")?;
    }
    tx.execute_batch(SCHEMA)?;
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    tx.commit()?;
    Ok(())
}

fn open(path: &Path, durability: Durability) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(
        None,
        "synchronous",
        match durability {
            Durability::Full => "FULL",
            Durability::Normal => "NORMAL",
        },
    )?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.set_prepared_statement_cache_capacity(64);
    conn.busy_timeout(Duration::from_secs(5))?;
    Ok(conn)
}

impl Store {
    /// Opens (creating it if needed) the store `shs.db` in `folder`.
    pub fn open(folder: &Path, durability: Durability) -> Result<Store, StoreError> {
        std::fs::create_dir_all(folder).map_err(|source| StoreError::Folder {
            path: folder.to_owned(),
            source,
        })?;
        let path = folder.join("shs.db");
        let writer = open(&path, durability)?;
        migrate(&writer, &path)?;
        let reader = open(&path, durability)?;
        let (writes, queue) = mpsc::channel(WRITE_QUEUE);
        std::thread::Builder::new()
            .name("shs-store".into())
            .spawn(move || write_loop(writer, queue))
            .map_err(|source| StoreError::Folder {
                path: folder.to_owned(),
                source,
            })?;
        Ok(Store {
            writes,
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
        let (done, wait) = oneshot::channel();
        self.writes
            .send(Write::Accept {
                event,
                pending,
                settled,
                done,
            })
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
        let write = Write::Record { event, settled };
        if self.writes.try_send(write).is_err() {
            metrics::counter!("shs_event_history_dropped_total").increment(1);
            tracing::debug!("event history not recorded: the store's write queue is full");
        }
    }

    /// Records how a delivery attempt ended; resolves once it is on disk.
    pub async fn finish(&self, delivery: i64, outcome: Outcome) -> Result<(), StoreError> {
        let (done, wait) = oneshot::channel();
        self.writes
            .send(Write::Finish {
                delivery,
                outcome,
                done,
            })
            .await
            .map_err(|_| StoreError::Closed)?;
        wait.await.map_err(|_| StoreError::Closed)?
    }

    /// Makes a dead letter pending again, with a fresh count of attempts; returns its function,
    /// or `None` when there is no such dead letter.
    pub async fn revive(&self, delivery: i64) -> Result<Option<String>, StoreError> {
        let (done, wait) = oneshot::channel();
        self.writes
            .send(Write::Revive { delivery, done })
            .await
            .map_err(|_| StoreError::Closed)?;
        wait.await.map_err(|_| StoreError::Closed)?
    }

    /// Deletes a dead letter. False when there is no such dead letter.
    pub async fn delete_dead(&self, delivery: i64) -> Result<bool, StoreError> {
        let (done, wait) = oneshot::channel();
        self.writes
            .send(Write::Delete { delivery, done })
            .await
            .map_err(|_| StoreError::Closed)?;
        wait.await.map_err(|_| StoreError::Closed)?
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

    /// Forgets every subscription of a removed function.
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

    /// Resolves once everything written before has been committed.
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.writes.send(Write::Flush { done }).await.is_ok() {
            let _ = wait.await;
        }
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let reader = self.reader.clone();
        tokio::task::spawn_blocking(move || f(&reader.lock()))
            .await
            .map_err(|_| StoreError::Closed)?
            .map_err(StoreError::from)
    }

    /// The saved subscriptions, as (function, pattern).
    pub async fn subscriptions(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.read(|c| {
            let mut stmt = c.prepare(
                "SELECT function, pattern FROM subscriptions ORDER BY function, pattern",
            )?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect()
        })
        .await
    }

    /// The functions with pending deliveries.
    pub async fn functions_with_pending(&self) -> Result<Vec<String>, StoreError> {
        self.read(|c| {
            let mut stmt =
                c.prepare("SELECT DISTINCT function FROM deliveries WHERE state = 'pending'")?;
            let rows = stmt.query_map([], |r| r.get(0))?;
            rows.collect()
        })
        .await
    }

    /// Up to `limit` pending deliveries of `function` stored after `after_seq`, in order.
    pub async fn pending(
        &self,
        function: &str,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<PendingDelivery>, StoreError> {
        let function = function.to_owned();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT d.id, e.seq, e.id, e.type, e.hops, e.cause, e.origin, e.object, d.attempts, d.next_ms
                 FROM deliveries d JOIN events e ON e.seq = d.event_seq
                 WHERE d.function = ?1 AND d.state = 'pending' AND d.event_seq > ?2
                 ORDER BY d.event_seq LIMIT ?3",
            )?;
            let rows = stmt.query_map(params![function, after_seq, limit], |r| {
                let origin: String = r.get(6)?;
                let object: String = r.get(7)?;
                Ok(PendingDelivery {
                    id: r.get(0)?,
                    seq: r.get(1)?,
                    event_id: r.get(2)?,
                    event_type: r.get(3)?,
                    hops: r.get(4)?,
                    cause: r.get(5)?,
                    origin: serde_json::from_str(&origin).unwrap_or(Origin::Http { request_id: None }),
                    object: RawValue::from_string(object).unwrap_or_else(|_| crate::event::null()),
                    attempts: r.get(8)?,
                    next_ms: r.get(9)?,
                })
            })?;
            rows.collect()
        })
        .await
    }

    /// The dead letters that match `filter`, newest first.
    pub async fn dead_letters(
        &self,
        filter: DeadLetterFilter,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        self.read(move |c| {
            let limit = i64::try_from(filter.limit.max(1)).unwrap_or(i64::MAX);
            let mut stmt = c.prepare(
                "SELECT d.id, d.function, e.id, e.type, e.object, d.updated_ms
                 FROM deliveries d JOIN events e ON e.seq = d.event_seq
                 WHERE d.state = 'dead' AND (?1 IS NULL OR d.function = ?1) AND (?2 IS NULL OR e.type = ?2)
                 ORDER BY d.updated_ms DESC, d.id DESC LIMIT ?3",
            )?;
            let rows = stmt.query_map(params![filter.function, filter.event_type, limit], |r| {
                let object: String = r.get(4)?;
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    object,
                    r.get::<_, i64>(5)?,
                ))
            })?;
            let mut letters = Vec::new();
            for row in rows {
                let (id, function, event_id, event_type, object, dead_ms) = row?;
                letters.push(DeadLetter {
                    id: id.to_string(),
                    attempts: attempts_of(c, id)?,
                    function,
                    event_id,
                    event_type,
                    event: RawValue::from_string(object).unwrap_or_else(|_| crate::event::null()),
                    dead_at: rfc3339_ms(dead_ms),
                });
            }
            Ok(letters)
        })
        .await
    }

    /// An event by id, with its deliveries and lineage. Sees every write queued before it
    /// (history included).
    pub async fn event(&self, id: &str) -> Result<Option<EventInfo>, StoreError> {
        self.flush().await;
        let id = id.to_owned();
        self.read(move |c| {
            let row = c
                .query_row(
                    "SELECT seq, object, mode, origin, cause, settled FROM events WHERE id = ?1 ORDER BY seq DESC LIMIT 1",
                    params![id],
                    |r| {
                        Ok((
                            r.get::<_, i64>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, String>(2)?,
                            r.get::<_, String>(3)?,
                            r.get::<_, Option<String>>(4)?,
                            r.get::<_, Option<String>>(5)?,
                        ))
                    },
                )
                .optional()?;
            let Some((seq, object, mode, origin, cause, settled)) = row else {
                return Ok(None);
            };
            let mut stmt = c.prepare("SELECT id FROM events WHERE cause = ?1 ORDER BY seq")?;
            let caused = stmt.query_map(params![id], |r| r.get(0))?.collect::<rusqlite::Result<Vec<String>>>()?;
            let mut stmt = c.prepare(
                "SELECT id, function, state, next_ms FROM deliveries WHERE event_seq = ?1 ORDER BY function",
            )?;
            let rows = stmt
                .query_map(params![seq], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, i64>(3)?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            // A synchronous event's deliveries are in its row (schema 1 wrote them as rows).
            let mut deliveries: Vec<DeliveryInfo> = settled
                .and_then(|json| serde_json::from_str(&json).ok())
                .unwrap_or_default();
            for (delivery, function, state, next_ms) in rows {
                deliveries.push(DeliveryInfo {
                    attempts: attempts_of(c, delivery)?,
                    next_attempt: (state == "pending").then(|| rfc3339_ms(next_ms)),
                    dead_letter: (state == "dead").then(|| delivery.to_string()),
                    function,
                    state,
                });
            }
            deliveries.sort_by(|a, b| a.function.cmp(&b.function));
            Ok(Some(EventInfo {
                event: RawValue::from_string(object).unwrap_or_else(|_| crate::event::null()),
                mode,
                published_by: serde_json::from_str(&origin).unwrap_or(serde_json::Value::Null),
                caused_by: cause,
                caused,
                deliveries,
            }))
        })
        .await
    }
}

fn attempts_of(c: &Connection, delivery: i64) -> rusqlite::Result<Vec<Attempt>> {
    let mut stmt = c.prepare_cached(
        "SELECT n, time, status, error FROM attempts WHERE delivery = ?1 ORDER BY n",
    )?;
    let rows = stmt.query_map(params![delivery], |r| {
        Ok(Attempt {
            attempt: r.get(0)?,
            time: r.get(1)?,
            status: r.get(2)?,
            error: r.get(3)?,
        })
    })?;
    rows.collect()
}

/// The writer thread: applies everything queued in one transaction, then answers. A batch
/// that nobody waits for lingers up to [`LINGER`] for more writes first.
fn write_loop(mut conn: Connection, mut queue: mpsc::Receiver<Write>) {
    let mut batch = Vec::with_capacity(256);
    while let Some(first) = queue.blocking_recv() {
        let mut awaited = first.awaited();
        batch.push(first);
        let deadline = Instant::now() + LINGER;
        loop {
            while batch.len() < MAX_BATCH {
                match queue.try_recv() {
                    Ok(write) => {
                        awaited |= write.awaited();
                        batch.push(write);
                    }
                    Err(_) => break,
                }
            }
            if awaited || batch.len() >= MAX_BATCH || Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(LINGER_STEP);
        }
        let results = apply(&mut conn, &batch);
        for (write, result) in batch.drain(..).zip(results) {
            answer(write, result);
        }
    }
}

/// Runs one statement, parsed once per connection.
fn exec(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> rusqlite::Result<usize> {
    conn.prepare_cached(sql)?.execute(params)
}

/// Applies a batch in one transaction. Writes almost never fail, so the batch first goes in as
/// it is; if one fails, the transaction is rolled back and the batch applied again with each
/// write in a savepoint of its own, so that the failing write is undone alone and told so and
/// the rest commit together.
fn apply(conn: &mut Connection, batch: &[Write]) -> Vec<Result<Found, String>> {
    match apply_all(conn, batch) {
        Ok(found) => found.into_iter().map(Ok).collect(),
        Err(e) => {
            tracing::debug!("a batch of event store writes failed ({e}); applying them one by one");
            apply_each(conn, batch)
        }
    }
}

/// Applies a batch in one transaction, all or nothing.
fn apply_all(conn: &mut Connection, batch: &[Write]) -> rusqlite::Result<Vec<Found>> {
    let tx = conn.transaction()?;
    let found = batch
        .iter()
        .map(|write| apply_one(&tx, write))
        .collect::<rusqlite::Result<Vec<_>>>()?;
    tx.commit()?;
    Ok(found)
}

/// Applies a batch in one transaction, each write in a savepoint of its own.
fn apply_each(conn: &mut Connection, batch: &[Write]) -> Vec<Result<Found, String>> {
    let all_failed = |e: &rusqlite::Error| {
        tracing::error!("event store transaction failed: {e}");
        batch.iter().map(|_| Err(e.to_string())).collect()
    };
    let mut tx = match conn.transaction() {
        Ok(tx) => tx,
        Err(e) => return all_failed(&e),
    };
    let mut results = Vec::with_capacity(batch.len());
    for write in batch {
        let result = tx.savepoint().and_then(|sp| {
            let found = apply_one(&sp, write)?;
            sp.commit()?;
            Ok(found)
        });
        if let Err(e) = &result {
            tracing::error!("event store write failed: {e}");
        }
        results.push(result.map_err(|e| e.to_string()));
    }
    match tx.commit() {
        Ok(()) => results,
        Err(e) => all_failed(&e),
    }
}

fn answer(write: Write, result: Result<Found, String>) {
    let result = result.map_err(StoreError::Write);
    match write {
        Write::Accept { done, .. } | Write::Finish { done, .. } => {
            let _ = done.send(result.map(drop));
        }
        Write::Revive { done, .. } => {
            let _ = done.send(result.map(|found| found.function));
        }
        Write::Delete { done, .. } => {
            let _ = done.send(result.map(|found| found.function.is_some()));
        }
        Write::Flush { done } => {
            let _ = done.send(());
        }
        _ => {}
    }
}

/// What a write found: the function of the dead letter it revived or deleted.
#[derive(Default)]
struct Found {
    function: Option<String>,
}

/// Applies one write.
fn apply_one(tx: &Connection, write: &Write) -> rusqlite::Result<Found> {
    let now = now_ms();
    match write {
        Write::Accept {
            event,
            pending,
            settled,
            ..
        } => {
            let Some(seq) = insert_event(tx, event, "async", None, now)? else {
                // The same event (id and source) again: accepted once, delivered once.
                return Ok(Found::default());
            };
            for function in pending {
                exec(
                    tx,
                    "INSERT INTO deliveries (event_seq, function, state, attempts, next_ms, updated_ms)
                     VALUES (?1, ?2, 'pending', 0, 0, ?3)",
                    params![seq, function.as_ref(), now],
                )?;
            }
            for (function, state, attempt) in settled {
                exec(
                    tx,
                    "INSERT INTO deliveries (event_seq, function, state, attempts, next_ms, updated_ms)
                     VALUES (?1, ?2, ?3, ?4, 0, ?5)",
                    params![seq, function.as_ref(), state, attempt.attempt, now],
                )?;
                let delivery = tx.last_insert_rowid();
                insert_attempt(tx, delivery, attempt)?;
            }
            Ok(Found::default())
        }
        Write::Record { event, settled } => {
            let settled: Vec<DeliveryInfo> = settled
                .iter()
                .map(|(function, state, attempt)| DeliveryInfo {
                    function: function.to_string(),
                    state: (*state).to_owned(),
                    attempts: vec![attempt.clone()],
                    next_attempt: None,
                    dead_letter: None,
                })
                .collect();
            let settled = serde_json::to_string(&settled).unwrap_or_else(|_| "[]".to_owned());
            insert_event(tx, event, "sync", Some(&settled), now)?;
            Ok(Found::default())
        }
        Write::Finish {
            delivery, outcome, ..
        } => {
            let (state, attempt, next_ms) = match outcome {
                Outcome::Delivered(a) => ("delivered", a, 0),
                Outcome::Retry(a, next) => ("pending", a, *next),
                Outcome::Dead(a) => ("dead", a, 0),
            };
            let changed = exec(
                tx,
                "UPDATE deliveries SET state = ?2, attempts = ?3, next_ms = ?4, updated_ms = ?5
                 WHERE id = ?1 AND state = 'pending'",
                params![delivery, state, attempt.attempt, next_ms, now],
            )?;
            // A delivery deleted meanwhile has nothing to record.
            if changed > 0 {
                insert_attempt(tx, *delivery, attempt)?;
            }
            Ok(Found::default())
        }
        Write::Revive { delivery, .. } => {
            let function = tx
                .query_row(
                    "UPDATE deliveries SET state = 'pending', attempts = 0, next_ms = 0, updated_ms = ?2
                     WHERE id = ?1 AND state = 'dead' RETURNING function",
                    params![delivery, now],
                    |r| r.get(0),
                )
                .optional()?;
            Ok(Found { function })
        }
        Write::Delete { delivery, .. } => {
            let function = tx
                .query_row(
                    "DELETE FROM deliveries WHERE id = ?1 AND state = 'dead' RETURNING function",
                    params![delivery],
                    |r| r.get(0),
                )
                .optional()?;
            Ok(Found { function })
        }
        Write::Subscription {
            function,
            pattern,
            present,
        } => {
            if *present {
                exec(
                    tx,
                    "INSERT OR IGNORE INTO subscriptions (function, pattern) VALUES (?1, ?2)",
                    params![function, pattern],
                )?;
            } else {
                exec(
                    tx,
                    "DELETE FROM subscriptions WHERE function = ?1 AND pattern = ?2",
                    params![function, pattern],
                )?;
            }
            Ok(Found::default())
        }
        Write::ForgetFunction { function } => {
            exec(
                tx,
                "DELETE FROM subscriptions WHERE function = ?1",
                params![function],
            )?;
            Ok(Found::default())
        }
        Write::Prune { before_ms } => {
            exec(
                tx,
                "DELETE FROM events WHERE created_ms < ?1 AND NOT EXISTS (
                     SELECT 1 FROM deliveries d WHERE d.event_seq = events.seq AND d.state IN ('pending', 'dead'))",
                params![before_ms],
            )?;
            Ok(Found::default())
        }
        Write::Flush { .. } => Ok(Found::default()),
    }
}

/// Inserts an event; its `seq`, or `None` when it is there already (same id and source).
fn insert_event(
    tx: &Connection,
    event: &SharedEvent,
    mode: &str,
    settled: Option<&str>,
    now: i64,
) -> rusqlite::Result<Option<i64>> {
    let origin = serde_json::to_string(&event.origin).unwrap_or_else(|_| "{}".to_owned());
    let inserted = exec(
        tx,
        "INSERT OR IGNORE INTO events (id, source, type, hops, cause, origin, mode, object, created_ms, settled)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![
            event.id,
            event.source,
            event.event_type,
            event.hops,
            event.cause,
            origin,
            mode,
            event.json().get(),
            now,
            settled
        ],
    )?;
    Ok((inserted > 0).then(|| tx.last_insert_rowid()))
}

/// Adds an attempt to a delivery's history, numbered after those it has (a revived dead letter
/// keeps the attempts of its first life).
fn insert_attempt(tx: &Connection, delivery: i64, attempt: &Attempt) -> rusqlite::Result<()> {
    exec(
        tx,
        "INSERT INTO attempts (delivery, n, time, status, error)
         VALUES (?1, (SELECT COALESCE(MAX(n), 0) + 1 FROM attempts WHERE delivery = ?1), ?2, ?3, ?4)",
        params![delivery, attempt.time, attempt.status, attempt.error],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &str) -> Arc<SharedEvent> {
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

    fn attempt(status: u16, error: &str) -> Attempt {
        Attempt {
            attempt: 1,
            time: "2026-11-27T10:00:00.000Z".to_owned(),
            status,
            error: error.to_owned(),
        }
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

    #[tokio::test]
    async fn a_schema_1_store_is_migrated_and_keeps_its_history() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("shs.db");
        {
            // A store as schema 1 wrote it: a synchronous event's delivery as rows.
            let conn = Connection::open(&path).expect("open");
            conn.execute_batch(SCHEMA).expect("schema");
            conn.execute_batch(
                "ALTER TABLE events DROP COLUMN settled;
                 PRAGMA user_version = 1;
                 INSERT INTO events (id, source, type, hops, origin, mode, object, created_ms)
                 VALUES ('old', '/test', 't.one', 0, '{}', 'sync', '{\"id\":\"old\"}', 0);
                 INSERT INTO deliveries (event_seq, function, state, attempts, updated_ms)
                 VALUES (1, 'alpha', 'delivered', 1, 0);
                 INSERT INTO attempts (delivery, n, time, status, error)
                 VALUES (1, 1, '2026-11-27T10:00:00.000Z', 200, '');",
            )
            .expect("a schema 1 store");
        }
        let store = Store::open(dir.path(), Durability::Normal).expect("schema 1 is migrated");
        let old = store.event("old").await.expect("read").expect("old event");
        assert_eq!(old.deliveries.len(), 1);
        assert_eq!(old.deliveries[0].attempts, [attempt(200, "")]);
        store.record(
            event("new"),
            vec![("alpha".into(), "delivered", attempt(200, ""))],
        );
        let new = store.event("new").await.expect("read").expect("new event");
        assert_eq!(new.deliveries[0].function, "alpha");
        drop(store);
        let conn = Connection::open(&path).expect("open");
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .expect("version");
        assert_eq!(version, SCHEMA_VERSION);
    }

    #[test]
    fn a_store_of_an_unknown_schema_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        {
            let conn = Connection::open(dir.path().join("shs.db")).expect("open");
            conn.execute_batch(SCHEMA).expect("schema");
            conn.pragma_update(None, "user_version", 99)
                .expect("version");
        }
        match Store::open(dir.path(), Durability::Normal) {
            Err(StoreError::Schema { found: 99, .. }) => {}
            other => panic!("expected a schema error, got {:?}", other.map(|_| ())),
        }
    }
}
