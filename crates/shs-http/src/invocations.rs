//! Asynchronous invocations: `POST /run/NAME...` with `Prefer: respond-async` ([`accept`],
//! called by `run`), `GET /invocations` and `GET /invocations/{id}`.

use actix_web::http::StatusCode;
use actix_web::http::header::HeaderMap;
use actix_web::{HttpResponse, web};
use serde::Deserialize;
use serde_json::{Map, json};
use shs_bus::invocation::valid_state;
use shs_bus::store::InvocationFilter;
use shs_supervisor::{HttpRequest as FunctionRequest, InvokeError, StoredRequest, WebhookKind};

use crate::events::bus_error;
use crate::functions::invoke_error_response;
use crate::{AppState, error_response};

/// Stores an invocation of `name` on `request` and answers 202 with its id and `Location`.
pub(crate) async fn accept(
    state: &AppState,
    name: &str,
    request: &FunctionRequest,
    headers: &HeaderMap,
    trace: Option<String>,
    webhook: Option<WebhookKind>,
) -> HttpResponse {
    let callback = match headers.get("x-callback-url") {
        None => None,
        Some(value) => {
            let Ok(url) = value.to_str() else {
                return error_response(
                    StatusCode::BAD_REQUEST,
                    "X-Callback-Url is not a URL: it holds bytes that are not visible ASCII",
                    Map::new(),
                );
            };
            if let Err(message) = state.callbacks.check(url) {
                return error_response(StatusCode::BAD_REQUEST, message, Map::new());
            }
            Some(url.to_owned())
        }
    };
    if !state.supervisor.contains(name) {
        return invoke_error_response(&InvokeError::NotFound {
            function: name.to_owned(),
        });
    }
    let stored = StoredRequest::http(request, trace, webhook).to_raw();
    let invocations = match state.supervisor.bus().invocations() {
        Ok(invocations) => invocations,
        Err(e) => return bus_error(&e),
    };
    match invocations.accept(name, stored, None, callback).await {
        Ok(id) => HttpResponse::Accepted()
            .insert_header(("preference-applied", "respond-async"))
            .insert_header(("location", format!("/invocations/{id}")))
            .json(json!({"status": "accepted", "invocation_id": id})),
        Err(e) => bus_error(&e),
    }
}

/// Query of `GET /invocations`.
#[derive(Deserialize)]
pub(crate) struct ListQuery {
    function: Option<String>,
    state: Option<String>,
    #[serde(default, deserialize_with = "crate::query::whole_number")]
    limit: Option<u64>,
}

/// `GET /invocations?function=&state=&limit=`: newest first.
pub(crate) async fn list(query: web::Query<ListQuery>, state: web::Data<AppState>) -> HttpResponse {
    let query = query.into_inner();
    if let Some(wanted) = &query.state
        && !valid_state(wanted)
    {
        return error_response(
            StatusCode::BAD_REQUEST,
            format!(
                "invalid state {:?}: use queued, running, succeeded or failed",
                wanted.chars().take(40).collect::<String>()
            ),
            Map::new(),
        );
    }
    let invocations = match state.supervisor.bus().invocations() {
        Ok(invocations) => invocations,
        Err(e) => return bus_error(&e),
    };
    let filter = InvocationFilter {
        function: query.function,
        state: query.state,
        limit: query.limit.unwrap_or(100).clamp(1, 10_000) as usize,
    };
    match invocations.list(filter).await {
        Ok(list) => HttpResponse::Ok().json(json!({ "invocations": list })),
        Err(e) => bus_error(&e),
    }
}

/// `GET /schedules`: every schedule of the functions deployed, with its next occurrence and
/// its last one (time, invocation, state).
pub(crate) async fn schedules(state: web::Data<AppState>) -> HttpResponse {
    let runs = match state.supervisor.bus().invocations() {
        Ok(invocations) => match invocations.schedule_runs().await {
            Ok(runs) => Some((invocations, runs)),
            Err(e) => return bus_error(&e),
        },
        Err(_) => None,
    };
    let mut list = Vec::new();
    for (function, schedule) in state.supervisor.schedules() {
        let mut entry = serde_json::Map::new();
        entry.insert("function".into(), json!(function));
        entry.insert("cron".into(), json!(schedule.cron_text));
        entry.insert("timezone".into(), json!(schedule.timezone));
        entry.insert("catch_up".into(), json!(schedule.catch_up));
        entry.insert(
            "input".into(),
            serde_json::from_str(&schedule.input).unwrap_or(serde_json::Value::Null),
        );
        entry.insert(
            "next".into(),
            json!(shs_supervisor::schedule::next_of(&schedule)),
        );
        let key = schedule.key();
        if let Some((invocations, runs)) = &runs
            && let Some((_, _, last_ms, id)) =
                runs.iter().find(|(f, k, _, _)| *f == function && *k == key)
        {
            let outcome = match invocations.get(id).await {
                Ok(Some(info)) => json!(info.state),
                _ => serde_json::Value::Null,
            };
            entry.insert(
                "last".into(),
                json!({
                    "time": shs_bus::store::rfc3339_ms(*last_ms),
                    "invocation_id": id,
                    "state": outcome,
                }),
            );
        }
        list.push(serde_json::Value::Object(entry));
    }
    HttpResponse::Ok().json(json!({ "schedules": list }))
}

/// `GET /invocations/{id}`.
pub(crate) async fn get(path: web::Path<String>, state: web::Data<AppState>) -> HttpResponse {
    let id = path.into_inner();
    let invocations = match state.supervisor.bus().invocations() {
        Ok(invocations) => invocations,
        Err(e) => return bus_error(&e),
    };
    match invocations.get(&id).await {
        Ok(Some(info)) => HttpResponse::Ok().json(info),
        Ok(None) => error_response(
            StatusCode::NOT_FOUND,
            format!(
                "no invocation {:?} (a finished invocation is kept for --event-retention)",
                id.chars().take(80).collect::<String>()
            ),
            Map::new(),
        ),
        Err(e) => bus_error(&e),
    }
}
