//! Asynchronous invocations in the store: the table `invocations` (one row each: the request,
//! its state, the answer or the error, the callback) and `invocation_attempts`. Their writes
//! go through the writer thread like every other write ([`InvocationWrite`]), their reads
//! through the reader connection.

use std::sync::Arc;

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use serde_json::value::RawValue;

use super::{Attempt, Outcome, Store, StoreError, rfc3339_ms};

/// The states an invocation has in the store (`running` is known only in memory).
pub const QUEUED: &str = "queued";
/// The function answered.
pub const SUCCEEDED: &str = "succeeded";
/// Every attempt failed (or one failed that no retry can fix): a dead letter.
pub const FAILED: &str = "failed";

/// An invocation to store.
#[derive(Debug)]
pub struct NewInvocation {
    /// Its id (unique).
    pub id: String,
    /// The function to run.
    pub function: String,
    /// The request, as the deliverer reads it back (opaque to the store).
    pub request: Box<RawValue>,
    /// `context.schedule`, for an occurrence of a schedule.
    pub schedule: Option<Box<RawValue>>,
    /// Where the outcome is POSTed when it ends.
    pub callback: Option<String>,
    /// For an occurrence of a schedule: the schedule's key and the occurrence's time (ms),
    /// recorded as the schedule's last occurrence in the same transaction.
    pub occurrence: Option<(String, i64)>,
}

/// What an attempt of an invocation needs: its id, the request and the schedule.
#[derive(Debug)]
pub struct InvocationWork {
    /// The invocation's id.
    pub id: String,
    /// The request, as it was stored.
    pub request: Box<RawValue>,
    /// `context.schedule`, for an occurrence of a schedule.
    pub schedule: Option<Box<RawValue>>,
    /// Whether its outcome is to be POSTed to a callback URL.
    pub callback: bool,
}

/// An invocation waiting to run.
#[derive(Debug)]
pub struct PendingInvocation {
    /// Its place in the store (invocations of a function run in this order).
    pub seq: i64,
    /// What to run.
    pub work: Arc<InvocationWork>,
    /// Attempts made so far.
    pub attempts: u32,
    /// Not before this time (ms since the epoch).
    pub next_ms: i64,
}

/// Why an invocation failed, as `GET /invocations/{id}` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct InvocationError {
    /// The status the same failure gets on a synchronous `/run`.
    pub status: u16,
    /// What happened.
    pub message: String,
}

/// An invocation, as `GET /invocations/{id}` shows it.
#[derive(Debug, Serialize)]
pub struct InvocationInfo {
    /// Its id.
    pub id: String,
    /// The function.
    pub function: String,
    /// `queued`, `running`, `succeeded` or `failed`.
    pub state: String,
    /// Attempts made so far.
    pub attempts: u32,
    /// When it was accepted, RFC 3339.
    pub accepted_at: String,
    /// When it ended, RFC 3339.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// When the next attempt is due, while it is queued after a failed attempt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_attempt: Option<String>,
    /// The function's answer (its whole HTTP answer when it gave one), once it succeeded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<Box<RawValue>>,
    /// Why it failed, once it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<InvocationError>,
    /// Every attempt, with its status and error.
    pub attempt_log: Vec<Attempt>,
    /// `context.schedule`, for an occurrence of a schedule.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Box<RawValue>>,
    /// Where the outcome is POSTed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<String>,
    /// `pending` (not sent yet), `sent` or `failed` (the receiver kept failing).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub callback_state: Option<String>,
    /// The dead letter it is, once failed (its id: retry or delete it as a dead letter).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dead_letter: Option<String>,
}

/// Which invocations to list.
#[derive(Clone, Debug, Default)]
pub struct InvocationFilter {
    /// Only those of this function.
    pub function: Option<String>,
    /// Only those in this stored state (`queued`, `succeeded`, `failed`).
    pub state: Option<String>,
    /// At most this many (newest first).
    pub limit: usize,
}

/// A failed invocation as a dead letter.
#[derive(Debug)]
pub struct DeadInvocation {
    /// The invocation's id (also the dead letter's).
    pub id: String,
    /// The function.
    pub function: String,
    /// The stored request.
    pub request: Box<RawValue>,
    /// Every attempt.
    pub attempts: Vec<Attempt>,
    /// When it failed (ms since the epoch).
    pub dead_ms: i64,
}

/// The writes of invocations, applied by the writer thread.
pub(super) enum InvocationWrite {
    Accept(NewInvocation),
    Finish {
        seq: i64,
        outcome: Outcome,
        result: Option<Box<RawValue>>,
    },
    Revive {
        id: String,
    },
    Delete {
        id: String,
    },
    Callback {
        id: String,
        state: &'static str,
    },
}

/// Applies one write; the function it concerned, when it found its invocation.
pub(super) fn apply(
    tx: &Connection,
    write: &InvocationWrite,
    now: i64,
) -> rusqlite::Result<Option<String>> {
    let exec = |sql: &str, p: &[&dyn rusqlite::ToSql]| tx.prepare_cached(sql)?.execute(p);
    match write {
        InvocationWrite::Accept(new) => {
            let callback_state = new.callback.as_ref().map(|_| "pending");
            if let Some((key, time_ms)) = &new.occurrence {
                exec(
                    "INSERT INTO schedules (function, key, last_ms, last_invocation) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (function, key) DO UPDATE SET last_ms = excluded.last_ms,
                         last_invocation = excluded.last_invocation WHERE excluded.last_ms > last_ms",
                    params![new.function, key, time_ms, new.id],
                )?;
            }
            // An occurrence of a schedule has an id of its own: stored once.
            let inserted = exec(
                "INSERT OR IGNORE INTO invocations (id, function, state, request, schedule, callback, callback_state, accepted_ms, updated_ms)
                 VALUES (?1, ?2, 'queued', ?3, ?4, ?5, ?6, ?7, ?7)",
                params![
                    new.id,
                    new.function,
                    new.request.get(),
                    new.schedule.as_ref().map(|s| s.get()),
                    new.callback,
                    callback_state,
                    now
                ],
            )?;
            Ok((inserted > 0).then(|| new.function.clone()))
        }
        InvocationWrite::Finish {
            seq,
            outcome,
            result,
        } => {
            let (state, attempt, next_ms, finished) = match outcome {
                Outcome::Delivered(a) => (SUCCEEDED, a, 0, Some(now)),
                Outcome::Retry(a, next) => (QUEUED, a, *next, None),
                Outcome::Dead(a) => (FAILED, a, 0, Some(now)),
            };
            let error = (state == FAILED).then(|| {
                serde_json::to_string(&InvocationError {
                    status: attempt.status,
                    message: attempt.error.clone(),
                })
                .unwrap_or_default()
            });
            let function: Option<String> = tx
                .prepare_cached(
                    "UPDATE invocations SET state = ?2, attempts = ?3, next_ms = ?4, updated_ms = ?5,
                         finished_ms = ?6, result = ?7, error = ?8
                     WHERE seq = ?1 AND state = 'queued' RETURNING function",
                )?
                .query_row(
                    params![
                        seq,
                        state,
                        attempt.attempt,
                        next_ms,
                        now,
                        finished,
                        result.as_ref().map(|r| r.get()),
                        error
                    ],
                    |r| r.get(0),
                )
                .optional()?;
            if function.is_some() {
                tx.prepare_cached(
                    "INSERT INTO invocation_attempts (invocation, n, time, status, error)
                     VALUES (?1, (SELECT COALESCE(MAX(n), 0) + 1 FROM invocation_attempts WHERE invocation = ?1), ?2, ?3, ?4)",
                )?
                .execute(params![seq, attempt.time, attempt.status, attempt.error])?;
            }
            Ok(function)
        }
        InvocationWrite::Revive { id } => tx
            .query_row(
                "UPDATE invocations SET state = 'queued', attempts = 0, next_ms = 0, updated_ms = ?2,
                     finished_ms = NULL, error = NULL,
                     callback_state = CASE WHEN callback IS NULL THEN NULL ELSE 'pending' END
                 WHERE id = ?1 AND state = 'failed' RETURNING function",
                params![id, now],
                |r| r.get(0),
            )
            .optional(),
        InvocationWrite::Delete { id } => tx
            .query_row(
                "DELETE FROM invocations WHERE id = ?1 AND state = 'failed' RETURNING function",
                params![id],
                |r| r.get(0),
            )
            .optional(),
        InvocationWrite::Callback { id, state } => {
            exec(
                "UPDATE invocations SET callback_state = ?2 WHERE id = ?1",
                params![id, state],
            )?;
            Ok(None)
        }
    }
}

/// Deletes the invocations that succeeded before `before_ms` (failed ones are dead letters:
/// kept until retried or deleted).
pub(super) fn prune(tx: &Connection, before_ms: i64) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "DELETE FROM invocations WHERE state = 'succeeded' AND finished_ms < ?1
             AND (callback_state IS NULL OR callback_state != 'pending')",
    )?
    .execute(params![before_ms])?;
    Ok(())
}

impl Store {
    async fn invocation_write(&self, write: InvocationWrite) -> Result<Option<String>, StoreError> {
        self.ask(|done| super::writer::Write::Invocation { write, done })
            .await
    }

    /// Stores an invocation, queued; resolves once it is on disk, with false when one with
    /// its id was there already (it is then left as it was).
    pub async fn accept_invocation(&self, invocation: NewInvocation) -> Result<bool, StoreError> {
        self.invocation_write(InvocationWrite::Accept(invocation))
            .await
            .map(|f| f.is_some())
    }

    /// The time (ms) of the last occurrence of schedule `key` of `function` stored.
    pub async fn last_occurrence(
        &self,
        function: &str,
        key: &str,
    ) -> Result<Option<i64>, StoreError> {
        let (function, key) = (function.to_owned(), key.to_owned());
        self.read(move |c| {
            c.query_row(
                "SELECT last_ms FROM schedules WHERE function = ?1 AND key = ?2",
                params![function, key],
                |r| r.get(0),
            )
            .optional()
        })
        .await
    }

    /// Every schedule's last occurrence stored: (function, key, time in ms, invocation id).
    pub async fn schedule_runs(&self) -> Result<Vec<(String, String, i64, String)>, StoreError> {
        self.read(|c| {
            let mut stmt =
                c.prepare("SELECT function, key, last_ms, last_invocation FROM schedules")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
            rows.collect()
        })
        .await
    }

    /// Records how an attempt of the invocation at `seq` ended (with the function's answer
    /// when it succeeded); resolves once it is on disk.
    pub async fn finish_invocation(
        &self,
        seq: i64,
        outcome: Outcome,
        result: Option<Box<RawValue>>,
    ) -> Result<(), StoreError> {
        self.invocation_write(InvocationWrite::Finish {
            seq,
            outcome,
            result,
        })
        .await
        .map(drop)
    }

    /// Queues a failed invocation again, with a fresh count of attempts; its function, or
    /// `None` when no failed invocation has this id.
    pub async fn revive_invocation(&self, id: &str) -> Result<Option<String>, StoreError> {
        self.invocation_write(InvocationWrite::Revive { id: id.to_owned() })
            .await
    }

    /// Deletes a failed invocation; its function, or `None` when no failed invocation has
    /// this id.
    pub async fn delete_invocation(&self, id: &str) -> Result<Option<String>, StoreError> {
        self.invocation_write(InvocationWrite::Delete { id: id.to_owned() })
            .await
    }

    /// Records where the callback of an invocation stands (`sent`, `failed`).
    pub async fn callback_done(&self, id: &str, state: &'static str) -> Result<(), StoreError> {
        self.invocation_write(InvocationWrite::Callback {
            id: id.to_owned(),
            state,
        })
        .await
        .map(drop)
    }

    /// Up to `limit` queued invocations of `function` stored after `after_seq`, in order.
    pub async fn pending_invocations(
        &self,
        function: &str,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<PendingInvocation>, StoreError> {
        let function = function.to_owned();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT seq, id, request, schedule, attempts, next_ms, callback IS NOT NULL FROM invocations
                 WHERE function = ?1 AND state = 'queued' AND seq > ?2 ORDER BY seq LIMIT ?3",
            )?;
            let rows = stmt.query_map(params![function, after_seq, limit], |r| {
                Ok(PendingInvocation {
                    seq: r.get(0)?,
                    work: Arc::new(InvocationWork {
                        id: r.get(1)?,
                        request: raw(r.get(2)?),
                        schedule: r.get::<_, Option<String>>(3)?.map(raw),
                        callback: r.get(6)?,
                    }),
                    attempts: r.get(4)?,
                    next_ms: r.get(5)?,
                })
            })?;
            rows.collect()
        })
        .await
    }

    /// How many invocations each function has queued.
    pub async fn queued_invocations(&self) -> Result<Vec<(String, i64)>, StoreError> {
        self.read(|c| {
            let mut stmt = c.prepare(
                "SELECT function, count(*) FROM invocations WHERE state = 'queued' GROUP BY function",
            )?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect()
        })
        .await
    }

    /// The invocations whose outcome is still to be POSTed to their callback, as ids.
    pub async fn pending_callbacks(&self) -> Result<Vec<String>, StoreError> {
        self.read(|c| {
            let mut stmt = c.prepare(
                "SELECT id FROM invocations WHERE callback_state = 'pending' AND state IN ('succeeded', 'failed') ORDER BY seq",
            )?;
            let rows = stmt.query_map([], |r| r.get(0))?;
            rows.collect()
        })
        .await
    }

    /// An invocation by id.
    pub async fn invocation(&self, id: &str) -> Result<Option<InvocationInfo>, StoreError> {
        let id = id.to_owned();
        self.read(move |c| {
            let mut stmt = c.prepare_cached(&format!("{SELECT_INFO} WHERE id = ?1"))?;
            let row = stmt.query_row(params![id], info_of).optional()?;
            row.map(|info| with_attempts(c, info)).transpose()
        })
        .await
    }

    /// The invocations that match `filter`, newest first.
    pub async fn invocations(
        &self,
        filter: InvocationFilter,
    ) -> Result<Vec<InvocationInfo>, StoreError> {
        self.read(move |c| {
            let limit = i64::try_from(filter.limit.max(1)).unwrap_or(i64::MAX);
            let mut stmt = c.prepare_cached(&format!(
                "{SELECT_INFO} WHERE (?1 IS NULL OR function = ?1) AND (?2 IS NULL OR state = ?2)
                 ORDER BY seq DESC LIMIT ?3"
            ))?;
            let rows = stmt.query_map(params![filter.function, filter.state, limit], info_of)?;
            rows.map(|row| with_attempts(c, row?)).collect()
        })
        .await
    }

    /// The failed invocations (dead letters) of `function` (all when `None`), newest first.
    pub async fn dead_invocations(
        &self,
        function: Option<String>,
        limit: usize,
    ) -> Result<Vec<DeadInvocation>, StoreError> {
        self.read(move |c| {
            let limit = i64::try_from(limit.max(1)).unwrap_or(i64::MAX);
            let mut stmt = c.prepare_cached(
                "SELECT seq, id, function, request, updated_ms FROM invocations
                 WHERE state = 'failed' AND (?1 IS NULL OR function = ?1)
                 ORDER BY updated_ms DESC, seq DESC LIMIT ?2",
            )?;
            let rows = stmt
                .query_map(params![function, limit], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        DeadInvocation {
                            id: r.get(1)?,
                            function: r.get(2)?,
                            request: raw(r.get(3)?),
                            attempts: Vec::new(),
                            dead_ms: r.get(4)?,
                        },
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            rows.into_iter()
                .map(|(seq, mut dead)| {
                    dead.attempts = attempts_of(c, seq)?;
                    Ok(dead)
                })
                .collect()
        })
        .await
    }
}

const SELECT_INFO: &str =
    "SELECT seq, id, function, state, attempts, accepted_ms, finished_ms, next_ms, result, error,
     schedule, callback, callback_state FROM invocations";

fn raw(text: String) -> Box<RawValue> {
    RawValue::from_string(text).unwrap_or_else(|_| crate::event::null())
}

fn info_of(r: &rusqlite::Row<'_>) -> rusqlite::Result<(i64, InvocationInfo)> {
    let state: String = r.get(3)?;
    let next_ms: i64 = r.get(7)?;
    let attempts: u32 = r.get(4)?;
    let id: String = r.get(1)?;
    Ok((
        r.get(0)?,
        InvocationInfo {
            function: r.get(2)?,
            attempts,
            accepted_at: rfc3339_ms(r.get(5)?),
            finished_at: r.get::<_, Option<i64>>(6)?.map(rfc3339_ms),
            next_attempt: (state == QUEUED && attempts > 0).then(|| rfc3339_ms(next_ms)),
            result: r.get::<_, Option<String>>(8)?.map(raw),
            error: r
                .get::<_, Option<String>>(9)?
                .and_then(|e| serde_json::from_str(&e).ok()),
            attempt_log: Vec::new(),
            schedule: r.get::<_, Option<String>>(10)?.map(raw),
            callback_url: r.get(11)?,
            callback_state: r.get(12)?,
            dead_letter: (state == FAILED).then(|| id.clone()),
            state,
            id,
        },
    ))
}

fn with_attempts(
    c: &Connection,
    (seq, mut info): (i64, InvocationInfo),
) -> rusqlite::Result<InvocationInfo> {
    info.attempt_log = attempts_of(c, seq)?;
    Ok(info)
}

fn attempts_of(c: &Connection, seq: i64) -> rusqlite::Result<Vec<Attempt>> {
    let mut stmt = c.prepare_cached(
        "SELECT n, time, status, error FROM invocation_attempts WHERE invocation = ?1 ORDER BY n",
    )?;
    let rows = stmt.query_map(params![seq], |r| {
        Ok(Attempt {
            attempt: r.get(0)?,
            time: r.get(1)?,
            status: r.get(2)?,
            error: r.get(3)?,
        })
    })?;
    rows.collect()
}
