//! The routes about functions: `GET /functions`, a function's logs and counts,
//! `GET /subscriptions` and `GET /metrics`; and how an [`InvokeError`] is answered (its status
//! is [`shs_supervisor::ErrorKind::status`]).
//!
//! A route with a `{name}` takes it through [`FunctionName`], which answers a malformed name
//! with a 400 before anything else is read.

use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{FromRequest, HttpRequest, HttpResponse, web};
use serde::Serialize;
use serde_json::{Map, Value, json};
use shs_supervisor::InvokeError;

use crate::{AppState, error_response};

/// The `{name}` of a route about one function, checked: a malformed name is answered 400
/// (with the usual error body) before the handler runs.
pub(crate) struct FunctionName(pub(crate) String);

impl FromRequest for FunctionName {
    type Error = actix_web::Error;
    type Future = std::future::Ready<Result<FunctionName, actix_web::Error>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let name = req.match_info().get("name").unwrap_or_default();
        std::future::ready(match shs_supervisor::validate_name(name) {
            Ok(()) => Ok(FunctionName(name.to_owned())),
            Err(e) => {
                let response = error_response(StatusCode::BAD_REQUEST, e.to_string(), Map::new());
                Err(actix_web::error::InternalError::from_response(e, response).into())
            }
        })
    }
}

/// The status an invoke error is answered with.
pub(crate) fn status_of(error: &InvokeError) -> StatusCode {
    StatusCode::from_u16(error.kind().status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

pub(crate) fn invoke_error_response(error: &InvokeError) -> HttpResponse {
    let mut extra = Map::new();
    extra.insert(
        "function".into(),
        Value::String(error.function().to_owned()),
    );
    if let InvokeError::Function { error: rpc, .. } = error {
        extra.insert("code".into(), Value::from(rpc.code));
        if let Some(data) = &rpc.data {
            extra.insert("data".into(), data.clone());
        }
    }
    if !error.stderr().is_empty() {
        extra.insert("stderr".into(), Value::from(error.stderr().to_vec()));
    }
    let message = match error {
        // The function's own message, as it wrote it.
        InvokeError::Function { error: rpc, .. } => rpc.message.clone(),
        other => other.to_string(),
    };
    if let InvokeError::BackingOff {
        retry_in, failures, ..
    } = error
    {
        extra.insert("failures".into(), Value::from(*failures));
        extra.insert(
            "next_try".into(),
            Value::String(rfc3339(std::time::SystemTime::now() + *retry_in)),
        );
    }
    let mut response = error_response(status_of(error), message, extra);
    if let Some(after) = error.retry_after() {
        // Whole seconds, rounded up: never invite a retry before the time.
        let seconds = after.as_secs() + u64::from(after.subsec_nanos() > 0);
        if let Ok(value) = HeaderValue::from_str(&seconds.max(1).to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
    }
    response
}

#[derive(Serialize)]
struct FunctionRow<'a> {
    name: &'a str,
    mode: &'a str,
    subscriptions: &'a [String],
    state: &'a str,
    processes: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none", flatten)]
    pool: Option<PoolRow<'a>>,
    publishes: Vec<PublishRow<'a>>,
}

/// One type a function publishes.
#[derive(Serialize)]
pub(crate) struct PublishRow<'a> {
    #[serde(rename = "type")]
    event_type: &'a str,
    declared: bool,
    published: bool,
}

/// The rows of what a function publishes.
pub(crate) fn publish_rows(edges: &[shs_supervisor::PublishEdge]) -> Vec<PublishRow<'_>> {
    edges
        .iter()
        .map(|e| PublishRow {
            event_type: &e.event_type,
            declared: e.declared,
            published: e.published,
        })
        .collect()
}

#[derive(Serialize)]
struct PoolRow<'a> {
    queued: usize,
    failures: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_try: Option<String>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    stderr: &'a [String],
    cold_starts: u64,
    cold_start_ms_total: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_cold_start_ms: Option<f64>,
    concurrency: usize,
    concurrency_source: &'a str,
    instances: usize,
    instances_source: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    declaration_error: Option<String>,
}

/// Sentences joined into one, or none.
pub(crate) fn joined(sentences: &[String]) -> Option<String> {
    (!sentences.is_empty()).then(|| sentences.join("; "))
}

pub(crate) fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

pub(crate) fn rfc3339(t: std::time::SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// `GET /functions`: every deployed function, its state and its processes.
pub(crate) async fn functions(state: web::Data<AppState>) -> HttpResponse {
    let functions = state.supervisor.functions();
    let rows: Vec<FunctionRow<'_>> = functions
        .iter()
        .map(|f| FunctionRow {
            name: &f.name,
            mode: f.mode,
            subscriptions: &f.subscriptions,
            state: f.state,
            processes: f.processes,
            error: f.error.as_deref(),
            pool: f.pool.as_ref().map(|p| PoolRow {
                queued: p.queued,
                failures: p.failures,
                next_try: p.next_try.map(rfc3339),
                stderr: &p.stderr,
                cold_starts: p.cold_starts,
                cold_start_ms_total: millis(p.cold_start_total),
                last_cold_start_ms: p.last_cold_start.map(millis),
                concurrency: p.sizing.concurrency,
                concurrency_source: p.sizing.concurrency_source.as_str(),
                instances: p.sizing.instances,
                instances_source: p.sizing.instances_source.as_str(),
                note: joined(&p.sizing.notes),
                declaration_error: joined(&p.sizing.errors),
            }),
            publishes: publish_rows(&f.publishes),
        })
        .collect();
    HttpResponse::Ok().json(json!({ "functions": rows }))
}

/// `GET /metrics`: every metric, in the Prometheus text format.
pub(crate) async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let Some(handle) = &state.metrics else {
        return error_response(StatusCode::NOT_IMPLEMENTED, "metrics are off", Map::new());
    };
    // Gauges are read off the supervisor when scraped.
    for f in state.supervisor.functions() {
        let (starting, queued) = f.pool.as_ref().map_or((0, 0), |p| (p.starting, p.queued));
        metrics::gauge!("shs_processes", "function" => f.name.clone(), "state" => "running")
            .set(f.processes as f64);
        metrics::gauge!("shs_processes", "function" => f.name.clone(), "state" => "starting")
            .set(starting as f64);
        metrics::gauge!("shs_queue_depth", "function" => f.name.clone()).set(queued as f64);
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(handle.render())
}

/// `GET /metrics/{name}`: one function's counts, as JSON.
pub(crate) async fn function_metrics(
    FunctionName(name): FunctionName,
    state: web::Data<AppState>,
) -> HttpResponse {
    match state.supervisor.stats(&name) {
        // The counts at the top level, as the original project's `/metrics/{name}` has them.
        Ok(stats) => HttpResponse::Ok().json(stats),
        Err(error) => invoke_error_response(&error),
    }
}

/// Query of `GET /functions/{name}/logs`.
#[derive(serde::Deserialize)]
pub(crate) struct LogsQuery {
    /// How many lines (the last ones, or the first ones after `after`).
    #[serde(default, deserialize_with = "crate::query::whole_number")]
    tail: Option<u64>,
    /// Only lines numbered after this one (to follow a log).
    #[serde(default, deserialize_with = "crate::query::whole_number")]
    after: Option<u64>,
}

/// `GET /functions/{name}/logs`: the function's recent log lines.
pub(crate) async fn function_logs(
    FunctionName(name): FunctionName,
    query: web::Query<LogsQuery>,
    state: web::Data<AppState>,
) -> HttpResponse {
    let tail = query.tail.unwrap_or(100).min(10_000) as usize;
    match state.supervisor.logs(&name, tail, query.after) {
        Ok(lines) => HttpResponse::Ok().json(json!({"function": name, "lines": lines})),
        Err(error) => invoke_error_response(&error),
    }
}

/// `GET /subscriptions`: every subscription, by pattern and function.
pub(crate) async fn subscriptions(state: web::Data<AppState>) -> HttpResponse {
    let rows: Vec<Value> = state
        .supervisor
        .bus()
        .subscriptions()
        .into_iter()
        .map(|s| json!({"type": s.pattern, "function": s.function}))
        .collect();
    HttpResponse::Ok().json(json!({ "subscriptions": rows }))
}
