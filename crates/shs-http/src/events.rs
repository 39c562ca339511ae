//! `/events`: publishing from outside, dead letters, and event history.
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
use shs_bus::{BusError, Causation, DeadLetterFilter};

use crate::cloudevents::*;
use crate::{AppState, error_response, read_body};

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

pub(crate) async fn publish(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let body = match read_body(&req, payload, state.max_body).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let attributes = match mode_of(req.headers()) {
        Err(response) => return response,
        Ok(Mode::Binary) => from_binary(req.headers(), &body),
        Ok(_) if is_blank(&body) => {
            return bad_request(
                "the request body is empty; send {\"type\": str, \"payload\": any}",
            );
        }
        Ok(Mode::Structured) => from_json(&body, true),
        Ok(Mode::Json) => from_json(&body, false),
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
