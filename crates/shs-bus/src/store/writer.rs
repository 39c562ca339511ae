//! The writer thread: the one connection that writes, applying every queued [`Write`] of a
//! batch in one transaction (group commit) and answering those that wait.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::{mpsc, oneshot};

use super::invocations::{self, InvocationWrite};
use super::{Attempt, DeliveryInfo, Outcome, StoreError, keys, now_ms};
use crate::event::SharedEvent;
use crate::idempotency::{Claimed, KeptAnswer, KeyClaim};

/// Most writes applied in one transaction.
const MAX_BATCH: usize = 4_096;
/// How long a batch that nobody waits for (history, subscriptions) gathers company before it
/// is committed: each commit writes every page it touched to the WAL, so history written a few
/// events at a time costs several times what it costs in batches. A write someone waits for
/// ends the wait at once.
const LINGER: Duration = Duration::from_millis(2);
/// How often the writer looks for more writes while it lingers.
const LINGER_STEP: Duration = Duration::from_micros(250);

/// One write, queued for the writer thread.
pub(super) enum Write {
    /// An asynchronous event and its deliveries, as rows of their own.
    Accept {
        event: Arc<SharedEvent>,
        /// Why its payload is not kept (nobody takes it), when it is not.
        omitted: Option<&'static str>,
        pending: Vec<Arc<str>>,
        settled: Vec<(Arc<str>, &'static str, Attempt)>,
        done: oneshot::Sender<Result<(), StoreError>>,
    },
    /// A synchronous event's history: one row, its deliveries (all settled) inside it.
    Record {
        event: Arc<SharedEvent>,
        /// Why its payload is not kept, when it is not.
        omitted: Option<&'static str>,
        settled: Vec<(Arc<str>, &'static str, Attempt)>,
        /// What it counts against [`super::HISTORY_BYTES`] while it waits.
        bytes: usize,
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
    Learned {
        function: String,
        digest: String,
    },
    Publishes {
        function: String,
        event_type: String,
    },
    Prune {
        before_ms: i64,
    },
    Flush {
        done: oneshot::Sender<()>,
    },
    /// Claims an idempotency key for a request (see [`super::keys::claim`]).
    ClaimKey {
        claim: KeyClaim,
        done: oneshot::Sender<Result<Claimed, StoreError>>,
    },
    /// Keeps the answer under a key, or releases it (`None`).
    SettleKey {
        scope: String,
        key: String,
        answer: Option<KeptAnswer>,
        done: oneshot::Sender<Result<(), StoreError>>,
    },
    /// A write of an asynchronous invocation; answers the function it concerned, if found.
    Invocation {
        write: InvocationWrite,
        done: oneshot::Sender<Result<Option<String>, StoreError>>,
    },
}

impl Write {
    /// Whether someone waits for this write to be committed.
    fn awaited(&self) -> bool {
        match self {
            Write::Record { .. }
            | Write::Subscription { .. }
            | Write::ForgetFunction { .. }
            | Write::Learned { .. }
            | Write::Publishes { .. }
            | Write::Prune { .. } => false,
            Write::Accept { .. }
            | Write::Finish { .. }
            | Write::Revive { .. }
            | Write::Delete { .. }
            | Write::Flush { .. }
            | Write::ClaimKey { .. }
            | Write::SettleKey { .. }
            | Write::Invocation { .. } => true,
        }
    }
}

/// The writer thread: applies everything queued in one transaction, then answers. A batch
/// that nobody waits for lingers up to [`LINGER`] for more writes first.
pub(super) fn write_loop(
    mut conn: Connection,
    mut queue: mpsc::Receiver<Write>,
    history_bytes: Arc<AtomicUsize>,
) {
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
            if let Write::Record { bytes, .. } = &write {
                history_bytes.fetch_sub(*bytes, Ordering::AcqRel);
            }
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
        Write::Accept { done, .. } | Write::Finish { done, .. } | Write::SettleKey { done, .. } => {
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
        Write::ClaimKey { done, .. } => {
            let _ = done.send(result.map(|found| found.claimed.unwrap_or(Claimed::InFlight)));
        }
        Write::Invocation { done, .. } => {
            let _ = done.send(result.map(|found| found.function));
        }
        _ => {}
    }
}

/// What a write found: the function of the dead letter it revived or deleted, what an
/// idempotency key held.
#[derive(Default)]
struct Found {
    function: Option<String>,
    claimed: Option<Claimed>,
}

/// Applies one write.
fn apply_one(tx: &Connection, write: &Write) -> rusqlite::Result<Found> {
    let now = now_ms();
    match write {
        Write::Accept {
            event,
            omitted,
            pending,
            settled,
            ..
        } => {
            let Some(seq) = insert_event(tx, event, "async", None, *omitted, now)? else {
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
        Write::Record {
            event,
            omitted,
            settled,
            ..
        } => {
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
            insert_event(tx, event, "sync", Some(&settled), *omitted, now)?;
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
            Ok(Found {
                function,
                ..Found::default()
            })
        }
        Write::Delete { delivery, .. } => {
            let function = tx
                .query_row(
                    "DELETE FROM deliveries WHERE id = ?1 AND state = 'dead' RETURNING function",
                    params![delivery],
                    |r| r.get(0),
                )
                .optional()?;
            Ok(Found {
                function,
                ..Found::default()
            })
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
            exec(
                tx,
                "DELETE FROM learned WHERE function = ?1",
                params![function],
            )?;
            exec(
                tx,
                "DELETE FROM publishes WHERE function = ?1",
                params![function],
            )?;
            Ok(Found::default())
        }
        Write::Learned { function, digest } => {
            exec(
                tx,
                "INSERT INTO learned (function, digest, updated_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT (function) DO UPDATE SET digest = ?2, updated_ms = ?3",
                params![function, digest, now_ms()],
            )?;
            Ok(Found::default())
        }
        Write::Publishes {
            function,
            event_type,
        } => {
            exec(
                tx,
                "INSERT OR IGNORE INTO publishes (function, type) VALUES (?1, ?2)",
                params![function, event_type],
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
            invocations::prune(tx, *before_ms)?;
            keys::sweep(tx, now)?;
            Ok(Found::default())
        }
        Write::Flush { .. } => Ok(Found::default()),
        Write::ClaimKey { claim, .. } => Ok(Found {
            claimed: Some(keys::claim(tx, claim, now)?),
            ..Found::default()
        }),
        Write::SettleKey {
            scope, key, answer, ..
        } => {
            keys::settle(tx, scope, key, answer.as_ref())?;
            Ok(Found::default())
        }
        Write::Invocation { write, .. } => Ok(Found {
            function: invocations::apply(tx, write, now)?,
            ..Found::default()
        }),
    }
}

/// Inserts an event; its `seq`, or `None` when it is there already (same id and source).
fn insert_event(
    tx: &Connection,
    event: &SharedEvent,
    mode: &str,
    settled: Option<&str>,
    omitted: Option<&str>,
    now: i64,
) -> rusqlite::Result<Option<i64>> {
    let origin = serde_json::to_string(&event.origin).unwrap_or_else(|_| "{}".to_owned());
    let inserted = exec(
        tx,
        "INSERT OR IGNORE INTO events (id, source, type, hops, cause, origin, mode, object, created_ms, settled, omitted)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
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
            settled,
            omitted
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
