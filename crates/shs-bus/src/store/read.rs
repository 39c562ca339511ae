//! The store's queries, on the reader connection (WAL lets it read beside the writer).

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::value::RawValue;

use super::{
    Attempt, DeadLetter, DeadLetterFilter, DeliveryInfo, EventInfo, PendingDelivery, Store,
    StoreError, rfc3339_ms,
};
use std::sync::Arc;

use crate::event::{Origin, SharedEvent};

impl Store {
    pub(super) async fn read<T: Send + 'static>(
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

    /// What was learned of each function: (function, digest) of those run before.
    pub async fn learned(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.read(|c| {
            let mut stmt = c.prepare("SELECT function, digest FROM learned")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect()
        })
        .await
    }

    /// The event types each function was seen publishing, as (function, type).
    pub async fn publishes(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.read(|c| {
            let mut stmt = c.prepare("SELECT function, type FROM publishes")?;
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
                let event = SharedEvent::from_stored(
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    serde_json::from_str(&origin).unwrap_or(Origin::Http { request_id: None }),
                    RawValue::from_string(object).unwrap_or_else(|_| crate::event::null()),
                );
                Ok(PendingDelivery {
                    id: r.get(0)?,
                    seq: r.get(1)?,
                    event: Arc::new(event),
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
                    kind: super::KIND_EVENT,
                    attempts: attempts_of(c, id)?,
                    function,
                    event_id: Some(event_id),
                    event_type: Some(event_type),
                    event: Some(
                        RawValue::from_string(object).unwrap_or_else(|_| crate::event::null()),
                    ),
                    invocation_id: None,
                    request: None,
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
                    "SELECT seq, object, mode, origin, cause, settled, omitted FROM events WHERE id = ?1 ORDER BY seq DESC LIMIT 1",
                    params![id],
                    |r| {
                        Ok((
                            r.get::<_, i64>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, String>(2)?,
                            r.get::<_, String>(3)?,
                            r.get::<_, Option<String>>(4)?,
                            r.get::<_, Option<String>>(5)?,
                            r.get::<_, Option<String>>(6)?,
                        ))
                    },
                )
                .optional()?;
            let Some((seq, object, mode, origin, cause, settled, payload_omitted)) = row else {
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
                payload_omitted,
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
