//! `POST /events`: publishing from outside.
//!
//! The body is `{"type": str, "payload": any}`; `data` is accepted for `payload`, and a
//! CloudEvents 1.0 structured event (`specversion`, `id`, `source`, `time`, `data`) keeps its
//! `id`, `source` and `time`.

use std::collections::HashMap;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::value::RawValue;
use serde_json::{Map, json};
use shs_bus::{Causation, Event};
use shs_protocol::codec::line_safe;

use crate::{AppState, error_response, read_body};

/// Where events published over HTTP come from, unless the publisher names a `source`.
pub const HTTP_SOURCE: &str = "/http";

fn bad_request(message: impl Into<String>) -> HttpResponse {
    error_response(StatusCode::BAD_REQUEST, message, Map::new())
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

pub(crate) async fn publish(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let body = match read_body(&req, payload, state.max_body).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    if body.iter().all(u8::is_ascii_whitespace) {
        return bad_request("the request body is empty; send {\"type\": str, \"payload\": any}");
    }
    let mut members: HashMap<String, Box<RawValue>> = match serde_json::from_slice(&body) {
        Ok(m) => m,
        Err(e) if e.is_syntax() || e.is_eof() => {
            return bad_request(format!("the request body is not valid JSON: {e}"));
        }
        Err(_) => {
            return bad_request(
                "the request body must be a JSON object: {\"type\": str, \"payload\": any}",
            );
        }
    };
    let event_type = match string_member(&members, "type") {
        Ok(Some(t)) => t,
        Ok(None) => {
            return bad_request("the event has no `type`: send {\"type\": str, \"payload\": any}");
        }
        Err(response) => return response,
    };
    let cloud_event = members.contains_key("specversion");
    let (id, source, time) = if cloud_event {
        match (
            string_member(&members, "id"),
            string_member(&members, "source"),
            string_member(&members, "time"),
        ) {
            (Ok(id), Ok(source), Ok(time)) => (id, source, time),
            (Err(r), _, _) | (_, Err(r), _) | (_, _, Err(r)) => return r,
        }
    } else {
        (None, string_member(&members, "source").ok().flatten(), None)
    };
    let payload = members
        .remove("payload")
        .or_else(|| members.remove("data"))
        .map(line_safe);
    let event = match Event::new(
        event_type,
        source.unwrap_or_else(|| HTTP_SOURCE.to_owned()),
        payload,
    ) {
        Ok(event) => event,
        Err(e) => return bad_request(e.to_string()),
    };
    let event = match (id, time) {
        (Some(id), Some(time)) => event.with_id(id).with_time(time),
        (Some(id), None) => event.with_id(id),
        (None, Some(time)) => event.with_time(time),
        (None, None) => event,
    };
    let result = state
        .supervisor
        .bus()
        .publish(event, Causation::root())
        .await;
    HttpResponse::Ok().json(json!({
        "status": "published",
        "event_id": result.event_id,
        "delivered": result.delivered,
        "errors": result.errors,
    }))
}
