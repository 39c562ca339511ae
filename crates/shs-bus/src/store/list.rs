//! The listing of recent events (`GET /events`): newest first, filtered by a type pattern, a
//! function (that published or took them) and a time, in pages that go on from a cursor.

use rusqlite::{Connection, params};
use serde::Serialize;

use super::{DeliveryInfo, Store, StoreError, rfc3339_ms};
use crate::table::SubscriptionTable;

/// The most events one page holds.
pub const MAX_PAGE: usize = 1_000;
/// The most stored events one page looks at before it answers with what it found (and a
/// cursor to go on from): a pattern that matches nothing cannot make a query scan the whole
/// store.
pub const MAX_SCANNED: usize = 10_000;
/// Rows read from SQLite at a time while looking for matches.
const BATCH: usize = 500;

/// Which events to list.
#[derive(Clone, Debug, Default)]
pub struct EventFilter {
    /// Only events whose type matches this pattern (`orders.*`, `orders.>`, or a type).
    pub pattern: Option<String>,
    /// Only events this function published or was delivered.
    pub function: Option<String>,
    /// Only events stored at or after this time (ms since the epoch).
    pub since_ms: Option<i64>,
    /// Only events stored before this cursor (a page's `next`).
    pub before: Option<i64>,
    /// At most this many (1 to [`MAX_PAGE`]).
    pub limit: usize,
}

/// One function's delivery of an event, in brief.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DeliverySummary {
    /// The subscribing function.
    pub function: String,
    /// `pending`, `delivered`, `failed` or `dead`.
    pub state: String,
    /// Attempts so far.
    pub attempts: u32,
}

/// An event in a listing.
#[derive(Clone, Debug, Serialize)]
pub struct EventSummary {
    /// The event's id.
    pub id: String,
    /// Its type.
    #[serde(rename = "type")]
    pub event_type: String,
    /// Its source.
    pub source: String,
    /// Its `time` attribute, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    /// When it was stored, RFC 3339.
    pub stored_at: String,
    /// `sync` or `async`.
    pub mode: String,
    /// Who published it.
    pub published_by: serde_json::Value,
    /// The event whose delivery published it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub caused_by: Option<String>,
    /// Each subscribing function's delivery, by function.
    pub deliveries: Vec<DeliverySummary>,
    /// Why its data was not kept, when it was not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload_omitted: Option<String>,
}

/// A page of events, newest first.
#[derive(Debug, Default)]
pub struct EventPage {
    /// The events.
    pub events: Vec<EventSummary>,
    /// The cursor of the next page (its `before`), when older events may match.
    pub next: Option<i64>,
}

type Row = (
    i64,
    String,
    String,
    String,
    Option<String>,
    String,
    String,
    Option<String>,
    Option<String>,
    i64,
    Option<String>,
);

impl Store {
    /// The events that match `filter`, newest first. Sees every write queued before it.
    pub async fn events(&self, filter: EventFilter) -> Result<EventPage, StoreError> {
        self.flush().await;
        self.read(move |c| list(c, &filter)).await
    }
}

fn list(c: &Connection, filter: &EventFilter) -> rusqlite::Result<EventPage> {
    let limit = filter.limit.clamp(1, MAX_PAGE);
    // A pattern without wildcards is a type: SQLite compares it; any other is matched here.
    let exact = filter
        .pattern
        .as_deref()
        .filter(|p| !p.split('.').any(|t| t == "*" || t == ">"));
    let mut stmt = c.prepare_cached(
        "SELECT e.seq, e.id, e.type, e.source, json_extract(e.object, '$.time'), e.mode, e.origin,
                e.cause, e.settled, e.created_ms, e.omitted
         FROM events e
         WHERE e.seq < ?1 AND e.created_ms >= ?2 AND (?3 IS NULL OR e.type = ?3)
           AND (?4 IS NULL
                OR json_extract(e.origin, '$.function') = ?4
                OR EXISTS (SELECT 1 FROM deliveries d WHERE d.event_seq = e.seq AND d.function = ?4)
                OR (e.settled IS NOT NULL AND EXISTS (
                    SELECT 1 FROM json_each(e.settled) j WHERE json_extract(j.value, '$.function') = ?4)))
         ORDER BY e.seq DESC LIMIT ?5",
    )?;
    let mut page = EventPage::default();
    let mut cursor = filter.before.unwrap_or(i64::MAX);
    let mut scanned = 0;
    loop {
        let rows: Vec<Row> = stmt
            .query_map(
                params![
                    cursor,
                    filter.since_ms.unwrap_or(i64::MIN),
                    exact,
                    filter.function,
                    BATCH as i64
                ],
                |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get::<_, Option<String>>(4).unwrap_or(None),
                        r.get(5)?,
                        r.get(6)?,
                        r.get(7)?,
                        r.get(8)?,
                        r.get(9)?,
                        r.get(10)?,
                    ))
                },
            )?
            .collect::<rusqlite::Result<_>>()?;
        let exhausted = rows.len() < BATCH;
        for row in rows {
            scanned += 1;
            cursor = row.0;
            let wanted = match &filter.pattern {
                Some(pattern) if exact.is_none() => {
                    SubscriptionTable::pattern_matches(pattern, &row.2)
                }
                _ => true,
            };
            if wanted {
                page.events.push(summary(c, row)?);
                if page.events.len() == limit {
                    // More may match before this one.
                    page.next = Some(cursor);
                    return Ok(page);
                }
            }
            if scanned >= MAX_SCANNED {
                page.next = Some(cursor);
                return Ok(page);
            }
        }
        if exhausted {
            return Ok(page);
        }
    }
}

fn summary(c: &Connection, row: Row) -> rusqlite::Result<EventSummary> {
    let (seq, id, event_type, source, time, mode, origin, cause, settled, created_ms, omitted) =
        row;
    let mut deliveries: Vec<DeliverySummary> = settled
        .and_then(|json| serde_json::from_str::<Vec<DeliveryInfo>>(&json).ok())
        .unwrap_or_default()
        .into_iter()
        .map(|d| DeliverySummary {
            attempts: u32::try_from(d.attempts.len()).unwrap_or(u32::MAX),
            function: d.function,
            state: d.state,
        })
        .collect();
    let mut stmt = c.prepare_cached(
        "SELECT function, state, (SELECT count(*) FROM attempts a WHERE a.delivery = d.id)
         FROM deliveries d WHERE event_seq = ?1",
    )?;
    for row in stmt.query_map(params![seq], |r| {
        Ok(DeliverySummary {
            function: r.get(0)?,
            state: r.get(1)?,
            attempts: r.get(2)?,
        })
    })? {
        deliveries.push(row?);
    }
    deliveries.sort_by(|a, b| a.function.cmp(&b.function));
    Ok(EventSummary {
        id,
        event_type,
        source,
        time,
        stored_at: rfc3339_ms(created_ms),
        mode,
        published_by: serde_json::from_str(&origin).unwrap_or(serde_json::Value::Null),
        caused_by: cause,
        deliveries,
        payload_omitted: omitted,
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

    fn typed(id: &str, event_type: &str, origin: Origin, cause: Option<&str>) -> Arc<SharedEvent> {
        let json = format!(
            r#"{{"specversion":"1.0","id":"{id}","source":"/test","type":"{event_type}","time":"2026-12-06T02:00:00Z","payload":{{}}}}"#
        );
        Arc::new(SharedEvent::from_stored(
            id.to_owned(),
            event_type.to_owned(),
            u32::from(cause.is_some()),
            cause.map(str::to_owned),
            origin,
            RawValue::from_string(json).expect("the test event is JSON"),
        ))
    }

    fn http() -> Origin {
        Origin::Http { request_id: None }
    }

    fn ids(page: &EventPage) -> Vec<&str> {
        page.events.iter().map(|e| e.id.as_str()).collect()
    }

    async fn store_with_a_chain() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path(), Durability::Normal).expect("store opens");
        store.record(
            typed("a", "orders.placed", http(), None),
            vec![("billing".into(), "delivered", attempt(200, ""))],
        );
        store
            .accept(
                typed(
                    "b",
                    "orders.billed",
                    Origin::Function {
                        function: "billing".into(),
                        request_id: None,
                    },
                    Some("a"),
                ),
                vec!["mailer".into()],
                Vec::new(),
            )
            .await
            .expect("accepted");
        store.record(typed("c", "audit.note", http(), None), Vec::new());
        (dir, store)
    }

    fn filter() -> EventFilter {
        EventFilter {
            limit: 100,
            ..EventFilter::default()
        }
    }

    #[tokio::test]
    async fn events_are_listed_newest_first_with_their_deliveries() {
        let (_dir, store) = store_with_a_chain().await;
        let page = store.events(filter()).await.expect("listed");
        assert_eq!(ids(&page), ["c", "b", "a"]);
        assert_eq!(page.next, None);
        let b = &page.events[1];
        assert_eq!(b.mode, "async");
        assert_eq!(b.caused_by.as_deref(), Some("a"));
        assert_eq!(b.published_by["function"], "billing");
        assert_eq!(
            b.deliveries,
            [DeliverySummary {
                function: "mailer".into(),
                state: "pending".into(),
                attempts: 0
            }]
        );
        assert_eq!(page.events[2].deliveries[0].attempts, 1);
        assert_eq!(page.events[2].time.as_deref(), Some("2026-12-06T02:00:00Z"));
    }

    #[tokio::test]
    async fn filters_by_pattern_function_and_time() {
        let (_dir, store) = store_with_a_chain().await;
        let by = |pattern: Option<&str>, function: Option<&str>| EventFilter {
            pattern: pattern.map(str::to_owned),
            function: function.map(str::to_owned),
            ..filter()
        };
        let page = store
            .events(by(Some("orders.*"), None))
            .await
            .expect("listed");
        assert_eq!(ids(&page), ["b", "a"]);
        let page = store
            .events(by(Some("orders.billed"), None))
            .await
            .expect("listed");
        assert_eq!(ids(&page), ["b"]);
        let page = store.events(by(Some(">"), None)).await.expect("listed");
        assert_eq!(ids(&page), ["c", "b", "a"]);
        // billing took a (sync, in the event's row) and published b.
        let page = store
            .events(by(None, Some("billing")))
            .await
            .expect("listed");
        assert_eq!(ids(&page), ["b", "a"]);
        // mailer has b pending (a row of its own).
        let page = store
            .events(by(None, Some("mailer")))
            .await
            .expect("listed");
        assert_eq!(ids(&page), ["b"]);
        let page = store
            .events(by(Some("audit.>"), Some("billing")))
            .await
            .expect("listed");
        assert!(page.events.is_empty());
        let later = EventFilter {
            since_ms: Some(super::super::now_ms() + 60_000),
            ..filter()
        };
        assert!(store.events(later).await.expect("listed").events.is_empty());
    }

    #[tokio::test]
    async fn pages_go_on_from_their_cursor_and_a_scan_is_bounded() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path(), Durability::Normal).expect("store opens");
        for n in 0..(MAX_SCANNED + 20) {
            let event_type = if n < 10 { "rare.one" } else { "common.one" };
            store.record(
                typed(&format!("e{n}"), event_type, http(), None),
                Vec::new(),
            );
            if n % 1_000 == 0 {
                // History gives way to a backlog; this test wants every event kept.
                store.flush().await;
            }
        }
        let mut seen = Vec::new();
        let mut before = None;
        loop {
            let page = store
                .events(EventFilter {
                    limit: 4_000,
                    before,
                    ..filter()
                })
                .await
                .expect("listed");
            seen.extend(page.events.iter().map(|e| e.id.clone()));
            match page.next {
                Some(next) => before = Some(next),
                None => break,
            }
        }
        assert_eq!(seen.len(), MAX_SCANNED + 20, "every event once");
        assert_eq!(seen.first().map(String::as_str), Some("e10019"));
        // A pattern that matches only the oldest: the first page stops at the scan bound
        // with nothing, and says where to go on; the next finds them.
        let rare = EventFilter {
            pattern: Some("rare.*".into()),
            ..filter()
        };
        let first = store.events(rare.clone()).await.expect("listed");
        assert!(first.events.is_empty());
        let next = first.next.expect("a cursor");
        let second = store
            .events(EventFilter {
                before: Some(next),
                ..rare
            })
            .await
            .expect("listed");
        assert_eq!(second.events.len(), 10);
        assert_eq!(second.next, None);
    }
}
