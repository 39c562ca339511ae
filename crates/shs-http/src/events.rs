//! `/events`: publishing from outside, the listing of recent events, dead letters, and event
//! history.
//!
//! `POST /events` takes an event in one of three forms:
//!
//! - the simple body `{"type": str, "payload": any}` (`data` is accepted for `payload`);
//! - a CloudEvents 1.0 event in structured mode: a JSON body with `specversion`, chosen by
//!   `Content-Type: application/cloudevents+json` (any other `application/cloudevents...` type,
//!   batched mode or another format, is a 415), or by the member `specversion` in a JSON body
//!   of any other content type;
//! - a CloudEvents 1.0 event in binary mode, chosen by a `ce-specversion` header: the attributes
//!   in `ce-*` headers (percent-decoded, as the HTTP binding says), the body as the data.
//!
//! It publishes synchronously (200, after every subscriber answered), or asynchronously with
//! `Prefer: respond-async` (202, once the event is stored durably). The parsing of the three forms
//! is in [`crate::cloudevents`].

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use shs_bus::event::TRACEPARENT;
use shs_bus::store::{KIND_EVENT, KIND_INVOCATION};
use shs_bus::{BusError, Causation, DeadLetterFilter, EventFilter};

use crate::cloudevents::*;
use crate::{AppState, error_response, idempotency, read_body};

/// The status and answer for a failure of the bus.
pub(crate) fn bus_error(error: &BusError) -> HttpResponse {
    let status = match error {
        e if e.is_invalid_input() => StatusCode::BAD_REQUEST,
        BusError::Unsupported(_) => StatusCode::NOT_IMPLEMENTED,
        BusError::Unconfirmed { .. } => StatusCode::GATEWAY_TIMEOUT,
        BusError::TooManyInvocations { .. } => StatusCode::TOO_MANY_REQUESTS,
        BusError::InvocationsFull { .. } => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let mut extra = Map::new();
    if let BusError::Unconfirmed {
        event_id,
        event_source,
        ..
    } = error
    {
        tracing::warn!("{error}");
        extra.insert("event_id".into(), Value::String(event_id.clone()));
        extra.insert("source".into(), Value::String(event_source.clone()));
    }
    if status == StatusCode::INTERNAL_SERVER_ERROR {
        tracing::error!("event bus failure: {error}");
    }
    if let BusError::TooManyInvocations { function, queued } = error {
        extra.insert("function".into(), Value::String(function.clone()));
        extra.insert("queued".into(), Value::from(*queued));
    }
    if let BusError::InvocationsFull { queued } = error {
        extra.insert("queued".into(), Value::from(*queued));
    }
    let mut response = error_response(status, error.to_string(), extra);
    if matches!(
        error,
        BusError::TooManyInvocations { .. } | BusError::InvocationsFull { .. }
    ) {
        response.headers_mut().insert(
            actix_web::http::header::RETRY_AFTER,
            actix_web::http::header::HeaderValue::from_static("1"),
        );
    }
    response
}

/// Whether the client asked for an answer as soon as the event is stored.
pub(crate) fn wants_async(req: &HttpRequest) -> bool {
    req.headers().get_all("prefer").any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|p| p.trim().eq_ignore_ascii_case("respond-async"))
        })
    })
}

/// `POST /events`: publishes the event, once per `Idempotency-Key` ([`crate::idempotency`]).
pub(crate) async fn publish(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let key = match idempotency::key_of(&req) {
        Ok(key) => key,
        Err(response) => return response,
    };
    let body = match read_body(&req, payload, state.max_body).await {
        Ok(body) => body.freeze(),
        Err(response) => return response,
    };
    let Some(key) = key else {
        return publish_event(&req, &body, &state).await;
    };
    // The request is its body, and the headers that make the event or how it is published.
    let mut headers: Vec<(&str, &[u8])> = req
        .headers()
        .iter()
        .filter(|(name, _)| name.as_str().starts_with("ce-") || name.as_str() == "content-type")
        .map(|(name, value)| (name.as_str(), value.as_bytes()))
        .collect();
    headers.sort_unstable();
    let mut parts: Vec<&[u8]> = vec![
        b"events",
        if wants_async(&req) { b"async" } else { b"sync" },
    ];
    for (name, value) in &headers {
        parts.push(name.as_bytes());
        parts.push(value);
    }
    parts.push(&body);
    let fingerprint = idempotency::fingerprint(&parts);
    let bus = state.supervisor.bus().clone();
    idempotency::once(
        &req,
        &bus,
        state.idempotency_ttl,
        key,
        fingerprint,
        publish_event(&req, &body, &state),
        // A refused event was not published: a retry publishes it.
        |response| response.status().is_success(),
    )
    .await
}

/// Publishes the event of a request whose body is read.
async fn publish_event(req: &HttpRequest, body: &[u8], state: &AppState) -> HttpResponse {
    let attributes = match mode_of(req.headers()) {
        Err(response) => return response,
        Ok(Mode::Binary) => from_binary(req.headers(), body),
        Ok(_) if is_blank(body) => {
            return bad_request(
                "the request body is empty; send {\"type\": str, \"payload\": any}",
            );
        }
        Ok(Mode::Structured) => from_json(body, true),
        Ok(Mode::Json) => from_json(body, false),
    };
    let (request_id, trace) = crate::request_meta(req);
    let attributes = attributes.map(|mut a| {
        // The request's trace context goes with the event, unless the event has its own.
        if let Some(trace) = trace
            && !a.extensions.iter().any(|(name, _)| name == TRACEPARENT)
        {
            a.extensions
                .push((TRACEPARENT.to_owned(), Value::String(trace)));
        }
        a
    });
    let event = match attributes.and_then(|a| event_of(a, Some(request_id))) {
        Ok(event) => event,
        Err(response) => return response,
    };
    let bus = state.supervisor.bus();
    if wants_async(req) {
        return match bus.publish_async(event, Causation::root()).await {
            Ok(event_id) => HttpResponse::Accepted()
                .insert_header(("preference-applied", "respond-async"))
                .json(json!({"status": "accepted", "event_id": event_id})),
            Err(e) => bus_error(&e),
        };
    }
    let result = bus.publish(event, Causation::root()).await;
    HttpResponse::Ok().json(json!({
        "status": "published",
        "event_id": result.event_id,
        "delivered": result.delivered,
        "errors": result.errors,
    }))
}

/// Query of `GET /events/dead-letters`.
#[derive(Deserialize)]
pub(crate) struct DeadLetterQuery {
    function: Option<String>,
    #[serde(rename = "type")]
    event_type: Option<String>,
    kind: Option<String>,
    #[serde(default, deserialize_with = "crate::query::whole_number")]
    limit: Option<u64>,
}

pub(crate) async fn dead_letters(
    query: web::Query<DeadLetterQuery>,
    state: web::Data<AppState>,
) -> HttpResponse {
    let query = query.into_inner();
    if let Some(kind) = &query.kind
        && kind != KIND_EVENT
        && kind != KIND_INVOCATION
    {
        return error_response(
            StatusCode::BAD_REQUEST,
            format!(
                "invalid kind {:?}: use event or invocation",
                kind.chars().take(40).collect::<String>()
            ),
            Map::new(),
        );
    }
    let filter = DeadLetterFilter {
        function: query.function,
        event_type: query.event_type,
        kind: query.kind,
        limit: query.limit.unwrap_or(100).clamp(1, 10_000) as usize,
    };
    match state.supervisor.bus().dead_letters(filter).await {
        Ok(letters) => HttpResponse::Ok().json(json!({ "dead_letters": letters })),
        Err(e) => bus_error(&e),
    }
}

fn no_dead_letter(id: &str) -> HttpResponse {
    error_response(
        StatusCode::NOT_FOUND,
        format!("no dead letter {id:?}"),
        Map::new(),
    )
}

pub(crate) async fn retry_dead_letter(
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> HttpResponse {
    let id = path.into_inner();
    match state.supervisor.bus().retry_dead_letter(&id).await {
        Ok(true) => HttpResponse::Ok().json(json!({"retried": true, "id": id})),
        Ok(false) => no_dead_letter(&id),
        Err(e) => bus_error(&e),
    }
}

pub(crate) async fn delete_dead_letter(
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> HttpResponse {
    let id = path.into_inner();
    match state.supervisor.bus().delete_dead_letter(&id).await {
        Ok(true) => HttpResponse::Ok().json(json!({"deleted": true, "id": id})),
        Ok(false) => no_dead_letter(&id),
        Err(e) => bus_error(&e),
    }
}

pub(crate) async fn event(path: web::Path<String>, state: web::Data<AppState>) -> HttpResponse {
    let id = path.into_inner();
    match state.supervisor.bus().event(&id).await {
        Ok(Some(info)) => HttpResponse::Ok().json(info),
        Ok(None) => error_response(
            StatusCode::NOT_FOUND,
            format!(
                "no event {id:?} (an event is kept for --event-retention after it was accepted, \
                 longer while a delivery is pending or dead)"
            ),
            Map::new(),
        ),
        Err(e) => bus_error(&e),
    }
}

/// Query of `GET /events`.
#[derive(Deserialize)]
pub(crate) struct EventsQuery {
    #[serde(rename = "type")]
    pattern: Option<String>,
    function: Option<String>,
    since: Option<String>,
    #[serde(default, deserialize_with = "crate::query::whole_number")]
    before: Option<u64>,
    #[serde(default, deserialize_with = "crate::query::whole_number")]
    limit: Option<u64>,
}

/// How many events a page of `GET /events` holds unless `limit` says.
const DEFAULT_PAGE: u64 = 100;

/// `since`: an RFC 3339 time (`2026-12-06T02:00:00Z`, any offset), or how long ago (`15m`,
/// `2h`, `1day`), as milliseconds since the epoch.
fn since_ms(text: &str) -> Result<i64, String> {
    if let Ok(time) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(time.timestamp_millis());
    }
    // humantime reads a bare `0` as a duration; a duration here always has its unit.
    let with_unit = text.ends_with(|c: char| c.is_ascii_alphabetic());
    match humantime::parse_duration(text).ok().filter(|_| with_unit) {
        Some(ago) => Ok(std::time::SystemTime::now()
            .checked_sub(ago)
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))),
        None => Err(format!(
            "since={:?} is neither an RFC 3339 time (2026-12-06T02:00:00Z) nor a duration \
             (15m, 2h)",
            text.chars().take(40).collect::<String>()
        )),
    }
}

fn bad_query(message: String) -> HttpResponse {
    error_response(StatusCode::BAD_REQUEST, message, Map::new())
}

/// `GET /events`: the events kept, newest first, filtered, a page at a time; `next` is the
/// link to the next page (the same query, `before` the last one looked at).
pub(crate) async fn list(
    query: web::Query<EventsQuery>,
    state: web::Data<AppState>,
) -> HttpResponse {
    let query = query.into_inner();
    if let Some(pattern) = &query.pattern
        && let Err(e) = shs_bus::table::validate_pattern(pattern)
    {
        return bad_query(format!("type: {e}"));
    }
    if let Some(function) = &query.function
        && let Err(e) = shs_supervisor::validate_name(function)
    {
        return bad_query(format!("function: {e}"));
    }
    let since = match query.since.as_deref().map(since_ms).transpose() {
        Ok(since) => since,
        Err(message) => return bad_query(message),
    };
    let limit = query
        .limit
        .unwrap_or(DEFAULT_PAGE)
        .clamp(1, shs_bus::store::MAX_PAGE as u64);
    let filter = EventFilter {
        pattern: query.pattern.clone(),
        function: query.function.clone(),
        since_ms: since,
        before: query.before.map(|b| i64::try_from(b).unwrap_or(i64::MAX)),
        limit: limit as usize,
    };
    match state.supervisor.bus().events(filter).await {
        Ok(page) => {
            // A `since` given as a duration goes on as the time it meant.
            let since = since.map(shs_bus::store::rfc3339_ms);
            let next = page.next.map(|before| {
                let mut link = String::from("/events?");
                for (name, value) in [
                    ("type", query.pattern.as_deref()),
                    ("function", query.function.as_deref()),
                    ("since", since.as_deref()),
                ] {
                    if let Some(value) = value {
                        link.push_str(name);
                        link.push('=');
                        link.extend(percent_encoding::utf8_percent_encode(
                            value,
                            percent_encoding::NON_ALPHANUMERIC,
                        ));
                        link.push('&');
                    }
                }
                link.push_str(&format!("limit={limit}&before={before}"));
                link
            });
            HttpResponse::Ok().json(json!({ "events": page.events, "next": next }))
        }
        Err(e) => bus_error(&e),
    }
}

/// Query of `GET /topology`.
#[derive(Deserialize)]
pub(crate) struct TopologyQuery {
    since: Option<String>,
}

/// `GET /topology`: the subscriptions, and what was published and delivered since `since`
/// (default the last 15 minutes), by publisher, type and subscriber.
pub(crate) async fn topology(
    query: web::Query<TopologyQuery>,
    state: web::Data<AppState>,
) -> HttpResponse {
    let since = match since_ms(query.since.as_deref().unwrap_or("15m")) {
        Ok(since) => since,
        Err(message) => return bad_query(message),
    };
    let bus = state.supervisor.bus();
    match bus.traffic(since).await {
        Ok(traffic) => {
            let subscriptions: Vec<Value> = bus
                .subscriptions()
                .into_iter()
                .map(|s| json!({"type": s.pattern, "function": s.function}))
                .collect();
            HttpResponse::Ok().json(json!({
                "since": shs_bus::store::rfc3339_ms(since),
                "subscriptions": subscriptions,
                "traffic": traffic,
            }))
        }
        Err(e) => bus_error(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::since_ms;

    #[test]
    fn since_is_an_rfc_3339_time_or_how_long_ago() {
        assert_eq!(since_ms("1970-01-01T00:00:01Z"), Ok(1_000));
        assert_eq!(since_ms("2026-12-06T02:00:00.250Z"), Ok(1_796_522_400_250));
        assert_eq!(
            since_ms("2026-12-06T03:00:00.250+01:00"),
            Ok(1_796_522_400_250)
        );
        assert_eq!(since_ms("1969-12-31T23:59:59Z"), Ok(-1_000));
        let now = shs_bus::store::now_ms();
        let ago = since_ms("15m").expect("a duration");
        assert!((now - 15 * 60_000 - 1_000..=now - 15 * 60_000 + 1_000).contains(&ago));
        assert_eq!(
            since_ms("100000years"),
            Ok(0),
            "before the epoch is the epoch"
        );
        // What the OpenAPI pattern of a duration allows, at its largest.
        for longest in [
            "1h30m",
            "1h 30m",
            "999999999years 999999999M 999999999w 999999999d",
        ] {
            assert!(since_ms(longest).is_ok(), "{longest}");
        }
        for bad in [
            "",
            "0",
            "15",
            "yesterday",
            "2026-13-01T00:00:00Z",
            "-5m",
            "15 parsecs",
            "\u{0}",
        ] {
            let error = since_ms(bad).expect_err(bad);
            assert!(error.starts_with("since="), "{error}");
        }
    }
}
