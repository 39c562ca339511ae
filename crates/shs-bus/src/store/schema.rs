//! The store's tables, the version they carry (SQLite's `user_version`), the migration of
//! older stores, and how each connection is opened.

use std::path::Path;
use std::time::Duration;

use rusqlite::Connection;

use super::{Durability, StoreError};

/// The version of [`SCHEMA`], kept in SQLite's `user_version`.
pub(super) const SCHEMA_VERSION: i64 = 6;

pub(super) const SCHEMA: &str = "
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
    -- Why `object` is kept without its data (no subscriber, too large); NULL when it is whole.
    omitted TEXT,
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
-- Asynchronous invocations (schema 4): the request as the function will get it, its state
-- (`queued`, `succeeded`, `failed`; `running` is only known in memory), the function's answer
-- or the error, and where the outcome is to be POSTed.
CREATE TABLE IF NOT EXISTS invocations (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    function TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_ms INTEGER NOT NULL DEFAULT 0,
    request TEXT NOT NULL,
    schedule TEXT,
    callback TEXT,
    -- `pending` until the outcome was POSTed to `callback`, then `sent` (or `failed`).
    callback_state TEXT,
    result TEXT,
    error TEXT,
    accepted_ms INTEGER NOT NULL,
    finished_ms INTEGER,
    updated_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS invocations_queued ON invocations(function, seq) WHERE state = 'queued';
CREATE INDEX IF NOT EXISTS invocations_failed ON invocations(updated_ms) WHERE state = 'failed';
CREATE INDEX IF NOT EXISTS invocations_callback ON invocations(seq) WHERE callback_state = 'pending';
CREATE INDEX IF NOT EXISTS invocations_function ON invocations(function, seq);
-- The last occurrence of each schedule stored as an invocation (`catch_up`, `GET /schedules`).
CREATE TABLE IF NOT EXISTS schedules (
    function TEXT NOT NULL,
    key TEXT NOT NULL,
    last_ms INTEGER NOT NULL,
    last_invocation TEXT NOT NULL,
    PRIMARY KEY (function, key)
);
CREATE TABLE IF NOT EXISTS invocation_attempts (
    invocation INTEGER NOT NULL REFERENCES invocations(seq) ON DELETE CASCADE,
    n INTEGER NOT NULL,
    time TEXT NOT NULL,
    status INTEGER NOT NULL,
    error TEXT NOT NULL,
    PRIMARY KEY (invocation, n)
);
-- Idempotency keys (schema 5): the first answer to a request, given again to its retries.
-- `scope` is a SHA-256 of the API key the request used (empty without keys); the key itself
-- is the client's. `state` is 'in-flight' while the first request runs, then 'done' with its
-- answer (`headers` a JSON array of [name, bytes]; `body` NULL when too large to keep).
CREATE TABLE IF NOT EXISTS idempotency_keys (
    scope TEXT NOT NULL,
    key TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    state TEXT NOT NULL,
    status INTEGER,
    headers TEXT,
    body BLOB,
    created_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL,
    PRIMARY KEY (scope, key)
);
CREATE INDEX IF NOT EXISTS idempotency_keys_expiry ON idempotency_keys(expires_ms);
-- What the supervisor learned of each function by running it (no schema version of its own:
-- created if missing, ignored by older versions). `digest` names the deployment (its files)
-- whose start-up subscriptions are those saved above; a function whose digest matches need
-- not be started to learn them again.
CREATE TABLE IF NOT EXISTS learned (
    function TEXT PRIMARY KEY,
    digest TEXT NOT NULL,
    updated_ms INTEGER NOT NULL
);
-- The event types each function has published while handling a request (or declared with
-- `publishes` in function.toml): the edges of the chains the supervisor prewarms.
CREATE TABLE IF NOT EXISTS publishes (
    function TEXT NOT NULL,
    type TEXT NOT NULL,
    PRIMARY KEY (function, type)
);
";

/// Creates the schema in a new database, migrates one of an older schema (1 to 4), and refuses
/// any other.
pub(super) fn migrate(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let found: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let tables: i64 = conn.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'events'",
        [],
        |r| r.get(0),
    )?;
    let new = found == 0 && tables == 0;
    if !(new || (1..=SCHEMA_VERSION).contains(&found)) {
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
    if found == 1 || found == 2 {
        // 3 adds why an event's data was not kept.
        tx.execute_batch("ALTER TABLE events ADD COLUMN omitted TEXT")?;
    }
    // 4 adds the tables `invocations` and `invocation_attempts`: new tables only, which
    // `SCHEMA` creates.
    // 5 adds the table `idempotency_keys`, which `SCHEMA` creates too.
    // 6 adds the table `schedules` (each schedule's last occurrence), which `SCHEMA` creates.
    tx.execute_batch(SCHEMA)?;
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    tx.commit()?;
    Ok(())
}

/// Opens a connection to the database at `path`, in WAL mode.
pub(super) fn open(path: &Path, durability: Durability) -> Result<Connection, StoreError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::idempotency::{Claimed, KeptAnswer, KeyClaim};
    use crate::store::Store;
    use crate::store::tests::{attempt, event};

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
                 ALTER TABLE events DROP COLUMN omitted;
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

    #[tokio::test]
    async fn a_schema_3_store_is_migrated_and_takes_invocations() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("shs.db");
        {
            // A store as schema 3 wrote it: no invocation tables.
            let conn = Connection::open(&path).expect("open");
            conn.execute_batch(SCHEMA).expect("schema");
            conn.execute_batch(
                "DROP TABLE idempotency_keys;
                 DROP TABLE invocation_attempts;
                 DROP TABLE invocations;
                 DROP TABLE schedules;
                 PRAGMA user_version = 3;
                 INSERT INTO events (id, source, type, hops, origin, mode, object, created_ms)
                 VALUES ('old', '/test', 't.one', 0, '{}', 'async', '{\"id\":\"old\"}', 0);",
            )
            .expect("a schema 3 store");
        }
        let store = Store::open(dir.path(), Durability::Normal).expect("schema 3 is migrated");
        assert!(store.event("old").await.expect("read").is_some());
        let request = serde_json::value::RawValue::from_string("{}".into()).expect("json");
        store
            .accept_invocation(crate::store::NewInvocation {
                id: "inv1".into(),
                function: "alpha".into(),
                request,
                schedule: None,
                callback: None,
                occurrence: None,
            })
            .await
            .expect("an invocation is stored");
        let info = store.invocation("inv1").await.expect("read").expect("kept");
        assert_eq!(
            (info.function.as_str(), info.state.as_str()),
            ("alpha", "queued")
        );
        drop(store);
        let conn = Connection::open(&path).expect("open");
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .expect("version");
        assert_eq!(version, SCHEMA_VERSION);
    }

    fn claim(key: &str, fingerprint: &str, ttl_ms: u64) -> KeyClaim {
        KeyClaim {
            scope: String::new(),
            key: key.to_owned(),
            fingerprint: fingerprint.to_owned(),
            ttl: Duration::from_millis(ttl_ms),
        }
    }

    #[tokio::test]
    async fn a_schema_5_store_is_migrated_and_keeps_schedules() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("shs.db");
        {
            // A store as schema 5 wrote it: no table of schedules.
            let conn = Connection::open(&path).expect("open");
            conn.execute_batch(SCHEMA).expect("schema");
            conn.execute_batch("DROP TABLE schedules; PRAGMA user_version = 5;")
                .expect("a schema 5 store");
        }
        let store = Store::open(dir.path(), Durability::Normal).expect("schema 5 is migrated");
        let occurrence = |id: &str, ms: i64| crate::store::NewInvocation {
            id: id.into(),
            function: "alpha".into(),
            request: serde_json::value::RawValue::from_string("{}".into()).expect("json"),
            schedule: None,
            callback: None,
            occurrence: Some(("* * * * * * UTC".into(), ms)),
        };
        assert!(
            store
                .accept_invocation(occurrence("o1", 1_000))
                .await
                .expect("stored")
        );
        // The same occurrence again is stored once.
        assert!(
            !store
                .accept_invocation(occurrence("o1", 1_000))
                .await
                .expect("stored")
        );
        assert!(
            store
                .accept_invocation(occurrence("o2", 2_000))
                .await
                .expect("stored")
        );
        assert_eq!(
            store
                .last_occurrence("alpha", "* * * * * * UTC")
                .await
                .expect("read"),
            Some(2_000)
        );
        drop(store);
        let conn = Connection::open(&path).expect("open");
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .expect("version");
        assert_eq!(version, SCHEMA_VERSION);
    }

    #[tokio::test]
    async fn a_schema_4_store_is_migrated_and_takes_idempotency_keys() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("shs.db");
        {
            // A store as schema 4 wrote it: no idempotency keys.
            let conn = Connection::open(&path).expect("open");
            conn.execute_batch(SCHEMA).expect("schema");
            conn.execute_batch(
                "DROP TABLE idempotency_keys;
                 PRAGMA user_version = 4;
                 INSERT INTO events (id, source, type, hops, origin, mode, object, created_ms)
                 VALUES ('kept', '/test', 't.one', 0, '{}', 'async', '{\"id\":\"kept\"}', 0);",
            )
            .expect("a schema 4 store");
        }
        let store = Store::open(dir.path(), Durability::Normal).expect("schema 4 is migrated");
        assert!(store.event("kept").await.expect("read").is_some());
        let answer = KeptAnswer {
            status: 201,
            headers: vec![("content-type".into(), b"application/json".to_vec())],
            body: Some(b"{}".to_vec()),
        };
        assert_eq!(
            store
                .claim_key(claim("k", "f1", 60_000))
                .await
                .expect("claim"),
            Claimed::Fresh
        );
        assert_eq!(
            store
                .claim_key(claim("k", "f1", 60_000))
                .await
                .expect("claim"),
            Claimed::InFlight
        );
        assert_eq!(
            store
                .claim_key(claim("k", "f2", 60_000))
                .await
                .expect("claim"),
            Claimed::Mismatch
        );
        store
            .settle_key(String::new(), "k".into(), Some(answer.clone()))
            .await
            .expect("settle");
        assert_eq!(
            store
                .claim_key(claim("k", "f1", 60_000))
                .await
                .expect("claim"),
            Claimed::Done(answer.clone())
        );
        // A released key is free again; a key in flight at a restart is released.
        assert_eq!(
            store
                .claim_key(claim("r", "f", 60_000))
                .await
                .expect("claim"),
            Claimed::Fresh
        );
        store
            .settle_key(String::new(), "r".into(), None)
            .await
            .expect("release");
        assert_eq!(
            store
                .claim_key(claim("r", "g", 60_000))
                .await
                .expect("claim"),
            Claimed::Fresh
        );
        // An expired key is another request's to take.
        assert_eq!(
            store.claim_key(claim("x", "f", 1)).await.expect("claim"),
            Claimed::Fresh
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(
            store.claim_key(claim("x", "g", 1)).await.expect("claim"),
            Claimed::Fresh
        );
        // A done key that expires is kept until the sweep.
        store.claim_key(claim("d", "f", 1)).await.expect("claim");
        store
            .settle_key(String::new(), "d".into(), Some(answer.clone()))
            .await
            .expect("settle");
        drop(store);
        let store = Store::open(dir.path(), Durability::Normal).expect("reopen");
        assert_eq!(
            store
                .claim_key(claim("r", "h", 60_000))
                .await
                .expect("claim"),
            Claimed::Fresh
        );
        assert!(matches!(
            store
                .claim_key(claim("k", "f1", 60_000))
                .await
                .expect("claim"),
            Claimed::Done(_)
        ));
        // Expired keys are swept.
        store.prune(0);
        store.flush().await;
        drop(store);
        let conn = Connection::open(&path).expect("open");
        let keys: Vec<String> = conn
            .prepare("SELECT key FROM idempotency_keys ORDER BY key")
            .expect("query")
            .query_map([], |r| r.get(0))
            .expect("rows")
            .collect::<Result<_, _>>()
            .expect("keys");
        assert_eq!(keys, ["k", "r"], "the expired key d is swept");
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
