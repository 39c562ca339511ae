//! `/events`: publishing from outside, dead letters, and event history.
//!
//! `POST /events` takes the simple body `{"type": str, "payload": any}` (`data` is accepted for
//! `payload`), a CloudEvents 1.0 event in structured mode (a JSON body with `specversion`,
//! e.g. with `Content-Type: application/cloudevents+json`), or in binary mode (the attributes
//! in `ce-*` headers, the data as the body). It publishes synchronously (200, after every
//! subscriber answered), or asynchronously with `Prefer: respond-async` (202, once the event
//! is stored durably).

use std::collections::HashMap;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderMap};
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};
use shs_bus::event::{CAUSE_ATTRIBUTE, HOPS_ATTRIBUTE, TRACEPARENT, validate_extension_name};
use shs_bus::{BusError, Causation, DeadLetterFilter, Event, Origin};
use shs_protocol::codec::line_safe;

use crate::{AppState, error_response, read_body};

/// Where events published over HTTP come from, unless the publisher names a `source`.
pub const HTTP_SOURCE: &str = "/http";

fn bad_request(message: impl Into<String>) -> HttpResponse {
    error_response(StatusCode::BAD_REQUEST, message, Map::new())
}

/// The status and answer for a failure of the bus.
fn bus_error(error: &BusError) -> HttpResponse {
    let status = match error {
        e if e.is_invalid_input() => StatusCode::BAD_REQUEST,
        BusError::Unsupported(_) => StatusCode::NOT_IMPLEMENTED,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    if status == StatusCode::INTERNAL_SERVER_ERROR {
        tracing::error!("event bus failure: {error}");
    }
    error_response(status, error.to_string(), Map::new())
}

/// The attributes of an event, from whichever form it came in.
#[derive(Default)]
struct Attributes {
    event_type: Option<String>,
    id: Option<String>,
    source: Option<String>,
    time: Option<String>,
    subject: Option<String>,
    content_type: Option<String>,
    dataschema: Option<String>,
    extensions: Vec<(String, Value)>,
    payload: Option<Box<RawValue>>,
}

/// A string member, or a 400 saying what it should have been.
fn string_member(
    members: &HashMap<String, Box<RawValue>>,
    key: &str,
) -> Result<Option<String>, HttpResponse> {
    match members.get(key) {
        None => Ok(None),
        Some(raw) => serde_json::from_str::<String>(raw.get())
            .map(Some)
            .map_err(|_| {
                bad_request(format!(
                    "`{key}` must be a string, not {}",
                    raw.get().chars().take(40).collect::<String>()
                ))
            }),
    }
}

/// A JSON body: the simple form, or CloudEvents structured mode (with `specversion`).
fn from_json(body: &[u8]) -> Result<Attributes, HttpResponse> {
    let mut members: HashMap<String, Box<RawValue>> = match serde_json::from_slice(body) {
        Ok(m) => m,
        Err(e) if e.is_syntax() || e.is_eof() => {
            return Err(bad_request(format!(
                "the request body is not valid JSON: {e}"
            )));
        }
        Err(_) => {
            return Err(bad_request(
                "the request body must be a JSON object: {\"type\": str, \"payload\": any}",
            ));
        }
    };
    let structured = members.contains_key("specversion");
    if let Some(version) = string_member(&members, "specversion")?
        && version != "1.0"
    {
        return Err(bad_request(format!(
            "CloudEvents specversion {version:?} is not supported; use \"1.0\""
        )));
    }
    let mut attributes = Attributes {
        event_type: string_member(&members, "type")?,
        source: string_member(&members, "source")?,
        subject: string_member(&members, "subject")?,
        ..Attributes::default()
    };
    if attributes.event_type.is_none() && members.contains_key("type") {
        return Err(bad_request("`type` must be a string"));
    }
    if structured {
        attributes.id = string_member(&members, "id")?;
        attributes.time = string_member(&members, "time")?;
        attributes.content_type = string_member(&members, "datacontenttype")?;
        attributes.dataschema = string_member(&members, "dataschema")?;
    }
    attributes.payload = members
        .remove("payload")
        .or_else(|| members.remove("data"))
        .or_else(|| members.remove("data_base64"))
        .map(line_safe);
    for (name, raw) in members {
        let known = matches!(
            name.as_str(),
            "type"
                | "id"
                | "source"
                | "time"
                | "subject"
                | "specversion"
                | "datacontenttype"
                | "dataschema"
        );
        let extension = structured || name == HOPS_ATTRIBUTE || name == CAUSE_ATTRIBUTE;
        if known || !extension {
            continue;
        }
        let value: Value = serde_json::from_str(raw.get()).unwrap_or(Value::Null);
        attributes.extensions.push((name, value));
    }
    Ok(attributes)
}

/// CloudEvents binary mode: `ce-*` headers, the body as the data.
fn from_binary(headers: &HeaderMap, body: &[u8]) -> Result<Attributes, HttpResponse> {
    let mut attributes = Attributes::default();
    for (name, value) in headers {
        let Some(attribute) = name.as_str().strip_prefix("ce-") else {
            continue;
        };
        let value = value
            .to_str()
            .map_err(|_| bad_request(format!("the header {name} is not text")))?
            .to_owned();
        match attribute {
            "specversion" if value != "1.0" => {
                return Err(bad_request(format!(
                    "CloudEvents specversion {value:?} is not supported; use \"1.0\""
                )));
            }
            "specversion" => {}
            "type" => attributes.event_type = Some(value),
            "id" => attributes.id = Some(value),
            "source" => attributes.source = Some(value),
            "time" => attributes.time = Some(value),
            "subject" => attributes.subject = Some(value),
            "dataschema" => attributes.dataschema = Some(value),
            // Binary mode carries it in Content-Type; take the header only without one.
            "datacontenttype" => {
                if attributes.content_type.is_none() {
                    attributes.content_type = Some(value);
                }
            }
            other => attributes
                .extensions
                .push((other.to_owned(), Value::String(value))),
        }
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or(attributes.content_type.take());
    let is_json = content_type
        .as_deref()
        .is_none_or(|t| t.starts_with("application/json") || t.contains("+json"));
    attributes.payload = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else if is_json {
        let raw: Box<RawValue> = serde_json::from_slice(body)
            .map_err(|e| bad_request(format!("the event data is not valid JSON: {e}")))?;
        Some(line_safe(raw))
    } else {
        let text = std::str::from_utf8(body)
            .map_err(|_| bad_request("binary event data must be UTF-8 text or JSON"))?;
        serde_json::value::to_raw_value(text).ok()
    };
    attributes.content_type = content_type;
    Ok(attributes)
}

/// Builds the event from its attributes.
fn event_of(attributes: Attributes, request_id: Option<String>) -> Result<Event, HttpResponse> {
    let Some(event_type) = attributes.event_type else {
        return Err(bad_request(
            "the event has no `type`: send {\"type\": str, \"payload\": any}",
        ));
    };
    let source = attributes.source.unwrap_or_else(|| HTTP_SOURCE.to_owned());
    let invalid = |e: BusError| bad_request(e.to_string());
    let mut event = Event::new(event_type, source, attributes.payload)
        .map_err(invalid)?
        .with_origin(Origin::Http { request_id });
    if let Some(id) = attributes.id {
        event = event.with_id(id).map_err(invalid)?;
    }
    if let Some(time) = attributes.time {
        event = event.with_time(time).map_err(invalid)?;
    }
    if let Some(subject) = attributes.subject {
        event = event.with_subject(subject);
    }
    if let Some(content_type) = attributes.content_type {
        event = event.with_content_type(content_type);
    }
    if let Some(dataschema) = attributes.dataschema {
        event = event.with_dataschema(dataschema);
    }
    for (name, value) in attributes.extensions {
        if name != HOPS_ATTRIBUTE && name != CAUSE_ATTRIBUTE {
            validate_extension_name(&name).map_err(invalid)?;
        }
        event = event.with_extension(&name, value).map_err(invalid)?;
    }
    Ok(event)
}

/// Whether the client asked for an answer as soon as the event is stored.
fn wants_async(req: &HttpRequest) -> bool {
    req.headers().get_all("prefer").any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|p| p.trim().eq_ignore_ascii_case("respond-async"))
        })
    })
}

pub(crate) async fn publish(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let body = match read_body(&req, payload, state.max_body).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let binary = req.headers().contains_key("ce-specversion");
    if !binary && body.iter().all(u8::is_ascii_whitespace) {
        return bad_request("the request body is empty; send {\"type\": str, \"payload\": any}");
    }
    let attributes = if binary {
        from_binary(req.headers(), &body)
    } else {
        from_json(&body)
    };
    let (request_id, trace) = crate::request_meta(&req);
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
    if wants_async(&req) {
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
    limit: Option<usize>,
}

pub(crate) async fn dead_letters(
    query: web::Query<DeadLetterQuery>,
    state: web::Data<AppState>,
) -> HttpResponse {
    let query = query.into_inner();
    let filter = DeadLetterFilter {
        function: query.function,
        event_type: query.event_type,
        limit: query.limit.unwrap_or(100).clamp(1, 10_000),
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
