//! The traffic between functions and event types over a recent window (`GET /topology`): how
//! many events each publisher published of each type, and how each function's deliveries of
//! each type went.

use rusqlite::{Connection, params};
use serde::Serialize;

use super::{Store, StoreError};

/// The most recent events counted in one answer: a busy store answers about its newest ones
/// (and says so) rather than scanning millions of rows.
pub const MAX_COUNTED: i64 = 100_000;

/// Events of one type one publisher published.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PublishCount {
    /// The publishing function; `None` for `POST /events`.
    pub function: Option<String>,
    /// The event type.
    #[serde(rename = "type")]
    pub event_type: String,
    /// How many.
    pub events: u64,
}

/// One function's deliveries of one event type, by state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DeliveryCount {
    /// The event type.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The subscribing function.
    pub function: String,
    /// Delivered.
    pub delivered: u64,
    /// Failed (synchronous deliveries that failed).
    pub failed: u64,
    /// Still pending (waiting for an attempt or a retry).
    pub pending: u64,
    /// Dead letters.
    pub dead: u64,
}

/// What moved since a time.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Traffic {
    /// Events counted.
    pub events: u64,
    /// False when there were more events in the window than [`MAX_COUNTED`] (the newest were
    /// counted).
    pub complete: bool,
    /// Publishes, by publisher and type.
    pub publishes: Vec<PublishCount>,
    /// Deliveries, by type and function.
    pub deliveries: Vec<DeliveryCount>,
}

impl Store {
    /// The traffic of the events stored at or after `since_ms`. Sees every write queued
    /// before it.
    pub async fn traffic(&self, since_ms: i64) -> Result<Traffic, StoreError> {
        self.flush().await;
        self.read(move |c| traffic(c, since_ms)).await
    }
}

fn traffic(c: &Connection, since_ms: i64) -> rusqlite::Result<Traffic> {
    // The window: events after `since_ms`, and among the newest MAX_COUNTED (a range of the
    // primary key, so the scan is bounded whatever the store holds).
    let floor: i64 = c.query_row(
        "SELECT coalesce(max(seq), 0) - ?1 FROM events",
        params![MAX_COUNTED],
        |r| r.get(0),
    )?;
    let (events, oldest): (i64, Option<i64>) = c.query_row(
        "SELECT count(*), min(created_ms) FROM events WHERE seq > ?1 AND created_ms >= ?2",
        params![floor, since_ms],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    // Complete unless the window was cut by the bound and older events in it were left out.
    let complete = floor <= 0
        || oldest.is_none()
        || {
            let before: Option<i64> = c.query_row(
            "SELECT created_ms FROM events WHERE seq = (SELECT max(seq) FROM events WHERE seq <= ?1)",
            params![floor],
            |r| r.get(0),
        )
        .ok();
            before.is_none_or(|ms| ms < since_ms)
        };
    let mut stmt = c.prepare_cached(
        "SELECT json_extract(origin, '$.function'), type, count(*) FROM events
         WHERE seq > ?1 AND created_ms >= ?2 GROUP BY 1, 2 ORDER BY 1, 2",
    )?;
    let publishes = stmt
        .query_map(params![floor, since_ms], |r| {
            Ok(PublishCount {
                function: r.get(0)?,
                event_type: r.get(1)?,
                events: r.get::<_, i64>(2)?.unsigned_abs(),
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    // Asynchronous deliveries are rows; a synchronous event holds its own in `settled`.
    let mut stmt = c.prepare_cached(
        "SELECT e.type, d.function, d.state, count(*) FROM deliveries d JOIN events e ON e.seq = d.event_seq
         WHERE e.seq > ?1 AND e.created_ms >= ?2 GROUP BY 1, 2, 3
         UNION ALL
         SELECT e.type, json_extract(j.value, '$.function'), json_extract(j.value, '$.state'), count(*)
         FROM events e, json_each(e.settled) j
         WHERE e.seq > ?1 AND e.created_ms >= ?2 AND e.settled IS NOT NULL GROUP BY 1, 2, 3",
    )?;
    let rows = stmt
        .query_map(params![floor, since_ms], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, Option<String>>(1)?,
                r.get::<_, Option<String>>(2)?,
                r.get::<_, i64>(3)?.unsigned_abs(),
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut deliveries: Vec<DeliveryCount> = Vec::new();
    for (event_type, function, state, n) in rows {
        let Some(function) = function else { continue };
        let at = match deliveries
            .iter()
            .position(|d| d.event_type == event_type && d.function == function)
        {
            Some(at) => at,
            None => {
                deliveries.push(DeliveryCount {
                    event_type,
                    function,
                    ..DeliveryCount::default()
                });
                deliveries.len() - 1
            }
        };
        let count = &mut deliveries[at];
        match state.as_deref() {
            Some("delivered") => count.delivered += n,
            Some("failed") => count.failed += n,
            Some("pending") => count.pending += n,
            Some("dead") => count.dead += n,
            _ => {}
        }
    }
    deliveries.sort_by(|a, b| (&a.event_type, &a.function).cmp(&(&b.event_type, &b.function)));
    Ok(Traffic {
        events: events.unsigned_abs(),
        complete,
        publishes,
        deliveries,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::value::RawValue;

    use super::*;
    use crate::event::{Origin, SharedEvent};
    use crate::store::Durability;
    use crate::store::tests::attempt;

    fn event(id: &str, event_type: &str, publisher: Option<&str>) -> Arc<SharedEvent> {
        let json = format!(
            r#"{{"specversion":"1.0","id":"{id}","source":"/test","type":"{event_type}","payload":{{}}}}"#
        );
        let origin = match publisher {
            Some(f) => Origin::Function {
                function: f.into(),
                request_id: None,
            },
            None => Origin::Http { request_id: None },
        };
        Arc::new(SharedEvent::from_stored(
            id.to_owned(),
            event_type.to_owned(),
            0,
            None,
            origin,
            RawValue::from_string(json).expect("JSON"),
        ))
    }

    #[tokio::test]
    async fn traffic_counts_publishes_and_deliveries_of_both_kinds() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path(), Durability::Normal).expect("store opens");
        for n in 0..3 {
            store.record(
                event(&format!("a{n}"), "order.placed", None),
                vec![
                    ("billing".into(), "delivered", attempt(200, "")),
                    ("audit".into(), "failed", attempt(500, "no")),
                ],
            );
        }
        store
            .accept(
                event("b", "order.billed", Some("billing")),
                vec!["mailer".into()],
                Vec::new(),
            )
            .await
            .expect("accepted");
        let traffic = store.traffic(0).await.expect("counted");
        assert_eq!(traffic.events, 4);
        assert!(traffic.complete);
        assert_eq!(
            traffic.publishes,
            [
                PublishCount {
                    function: None,
                    event_type: "order.placed".into(),
                    events: 3
                },
                PublishCount {
                    function: Some("billing".into()),
                    event_type: "order.billed".into(),
                    events: 1
                },
            ]
        );
        let brief: Vec<_> = traffic
            .deliveries
            .iter()
            .map(|d| {
                (
                    d.event_type.as_str(),
                    d.function.as_str(),
                    d.delivered,
                    d.failed,
                    d.pending,
                )
            })
            .collect();
        assert_eq!(
            brief,
            [
                ("order.billed", "mailer", 0, 0, 1),
                ("order.placed", "audit", 0, 3, 0),
                ("order.placed", "billing", 3, 0, 0),
            ]
        );
        let later = store
            .traffic(super::super::now_ms() + 60_000)
            .await
            .expect("counted");
        assert_eq!(later.events, 0);
        assert!(later.publishes.is_empty() && later.deliveries.is_empty());
    }
}
