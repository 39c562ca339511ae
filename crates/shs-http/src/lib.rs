//! The shs HTTP API.
//!
//! This crate owns the routes ([`ROUTES`]: `/run/{name}`, `/events`, dead letters and event
//! history, `/functions`, logs, `/subscriptions`, `/metrics`, `/health`, `/ready`, the live
//! `/stream` and the dashboard at `/ui/` ([`ui`]), and `/openapi.json`, which serves
//! [`OPENAPI`], the OpenAPI 3.1 description of all of them),
//! reading request bodies within the size limit, and the map from supervisor errors to HTTP
//! statuses ([`status_of`]). Every error answer has the body `{"error": {"message": str, ...}}`.
//! It holds no process or bus logic of its own: it calls the [`Supervisor`] and the
//! [`shs_bus::Bus`].

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};
use futures::StreamExt;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;
use serde_json::{Map, Value, json};
use shs_supervisor::{ErrorKind, InvokeError, Output, Supervisor};

mod access;
pub mod events;
mod lifecycle;
mod live;
pub mod ui;

pub use access::{AccessConfig, RateLimit, RequestId, TraceParent, valid_traceparent};

pub use lifecycle::Lifecycle;

/// The header a request id is read from and returned in.
pub const REQUEST_ID: &str = "x-request-id";

/// How the HTTP server runs.
#[derive(Clone, Debug)]
pub struct HttpConfig {
    /// API keys, rate limit, trusted proxies.
    pub access: AccessConfig,
    /// Origins allowed by CORS (`*` for any); none: no CORS.
    pub cors_origins: Vec<String>,
    /// The Prometheus recorder's handle, for `GET /metrics`; none: no metrics.
    pub metrics: Option<PrometheusHandle>,
    /// Largest request body accepted, in bytes.
    pub max_body: usize,
    /// actix worker threads.
    pub workers: usize,
    /// How long in-flight requests get to finish once shutdown starts.
    pub shutdown_grace: Duration,
    /// Whether the dashboard is served at `/ui/`.
    pub ui: bool,
}

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    supervisor: Supervisor,
    max_body: usize,
    metrics: Option<PrometheusHandle>,
}

impl AppState {
    /// State for handlers that serve `supervisor`, reading bodies up to `max_body` bytes.
    pub fn new(
        supervisor: Supervisor,
        max_body: usize,
        metrics: Option<PrometheusHandle>,
    ) -> AppState {
        AppState {
            supervisor,
            max_body,
            metrics,
        }
    }
}

/// The HTTP server, built on an already bound listener: await `server` to run it, and call
/// [`Lifecycle::shutdown`] with its handle to stop it. Signals are left to the caller.
pub struct HttpServer {
    /// The server future.
    pub server: actix_web::dev::Server,
    /// Requests in flight, for a graceful stop.
    pub lifecycle: Arc<Lifecycle>,
}

/// Builds the HTTP server on an already bound listener.
pub fn server(
    listener: TcpListener,
    supervisor: Supervisor,
    config: &HttpConfig,
) -> std::io::Result<HttpServer> {
    let state = AppState::new(supervisor, config.max_body, config.metrics.clone());
    let lifecycle = Arc::new(Lifecycle::default());
    let guard = web::Data::new(access::Guard::new(&config.access, lifecycle.clone()));
    let forget = guard.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(60));
        loop {
            every.tick().await;
            forget.forget_idle_clients();
        }
    });
    let cors_origins = config.cors_origins.clone();
    let hub = web::Data::new(live::Hub::new(lifecycle.clone()));
    let dashboard = web::Data::new(ui::Dashboard { enabled: config.ui });
    let server = actix_web::HttpServer::new(move || {
        attach_worker(&state.supervisor);
        actix_web::App::new()
            .app_data(web::Data::new(state.clone()))
            .app_data(guard.clone())
            .app_data(hub.clone())
            .app_data(dashboard.clone())
            .wrap(actix_web::middleware::from_fn(access::guard))
            .wrap(actix_web::middleware::Condition::new(
                !cors_origins.is_empty(),
                cors(&cors_origins),
            ))
            .configure(routes)
    })
    .workers(config.workers.max(1))
    .disable_signals()
    .shutdown_timeout(config.shutdown_grace.as_secs().max(1))
    .listen(listener)?
    .run();
    Ok(HttpServer { server, lifecycle })
}

/// An actix `System` on `runtime` (run the server's future with its `block_on`): how
/// [`server`] should be started for its workers to handle function processes' pipes.
pub fn system(runtime: tokio::runtime::Runtime) -> actix_web::rt::SystemRunner {
    actix_web::rt::System::with_tokio_rt(|| runtime)
}

/// Attaches an actix worker to handle function processes' pipes (see
/// [`Supervisor::attach_io_thread`]). Under an actix `System`, each worker builds its app on its
/// own thread, in the current-thread runtime it then serves from; started from a plain tokio
/// runtime instead, actix builds the apps in that runtime, so workers are not attached (and
/// processes' pipes stay with the supervisor's runtime).
fn attach_worker(supervisor: &Supervisor) {
    let own_runtime = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread);
    if own_runtime && actix_web::rt::System::try_current().is_some() {
        supervisor.attach_io_thread();
    }
}

/// CORS for the origins given (`*` for any). Only installed when some are given, so by default
/// no CORS headers (not even `Vary: Origin`) are sent.
fn cors(origins: &[String]) -> actix_cors::Cors {
    let mut cors = actix_cors::Cors::default()
        .allowed_methods(["GET", "POST", "DELETE", "OPTIONS"])
        .allow_any_header()
        .expose_headers([REQUEST_ID, "retry-after", "preference-applied"])
        .max_age(3600);
    for origin in origins {
        cors = if origin == "*" {
            cors.allow_any_origin()
        } else {
            cors.allowed_origin(origin)
        };
    }
    cors
}

fn shutting_down() -> HttpResponse {
    let mut response = error_response(
        StatusCode::SERVICE_UNAVAILABLE,
        "the server is shutting down",
        Map::new(),
    );
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// Declares the route table once: [`ROUTES`] (what the OpenAPI document must describe) and
/// the handlers [`routes`] registers, in the same order.
macro_rules! route_table {
    ($($method:ident $path:literal => $handler:expr,)*) => {
        /// Every route the server answers, as (method, path template), in the order they are
        /// matched. `GET /openapi.json` describes exactly these (a test walks them on the real
        /// server). Any other method on one of these paths is 405 with `Allow`; any other path
        /// is 404.
        pub const ROUTES: &[(&str, &str)] = &[$((stringify!($method), $path)),*];

        /// The handler of each of [`ROUTES`], in the same order.
        fn handlers() -> Vec<actix_web::Route> {
            vec![$(web::route().method(Method::$method).to($handler)),*]
        }
    };
}

route_table! {
    GET "/health" => health,
    GET "/ready" => ready,
    POST "/run/{name}" => run,
    POST "/run/" => run_without_name,
    POST "/events" => events::publish,
    // Before `/events/{id}`, which would take `dead-letters` for an id.
    GET "/events/dead-letters" => events::dead_letters,
    POST "/events/dead-letters/{id}/retry" => events::retry_dead_letter,
    DELETE "/events/dead-letters/{id}" => events::delete_dead_letter,
    GET "/events/{id}" => events::event,
    GET "/functions" => functions,
    GET "/functions/{name}" => live::function,
    GET "/functions/{name}/logs" => function_logs,
    GET "/subscriptions" => subscriptions,
    GET "/metrics" => metrics,
    GET "/metrics/{name}" => function_metrics,
    GET "/openapi.json" => openapi,
    GET "/stream" => live::stream,
    GET "/ui" => ui::redirect,
    GET "/ui/" => ui::index,
    GET "/ui/{file}" => ui::file,
}

/// The OpenAPI 3.1 description of this API, served at `GET /openapi.json`.
pub const OPENAPI: &str = include_str!("../openapi.json");

/// Registers every route of [`ROUTES`] (one resource per path, 405 with `Allow` for the
/// other methods, 404 for any other path); the app must hold a `web::Data<AppState>`.
pub fn routes(cfg: &mut web::ServiceConfig) {
    // A query that does not parse (e.g. `?tail=many`) is a 400 with the usual error body.
    cfg.app_data(web::QueryConfig::default().error_handler(|error, _req| {
        let response = error_response(
            StatusCode::BAD_REQUEST,
            format!("invalid query: {error}"),
            Map::new(),
        );
        actix_web::error::InternalError::from_response(error, response).into()
    }));
    let mut by_path: Vec<(&str, Vec<Method>, Vec<actix_web::Route>)> = Vec::new();
    for (&(method, path), route) in ROUTES.iter().zip(handlers()) {
        let Ok(method) = Method::from_bytes(method.as_bytes()) else {
            continue;
        };
        match by_path.iter_mut().find(|(p, _, _)| *p == path) {
            Some((_, methods, routes)) => {
                methods.push(method);
                routes.push(route);
            }
            None => by_path.push((path, vec![method], vec![route])),
        }
    }
    for (path, methods, routes) in by_path {
        let allowed: Arc<str> = methods
            .iter()
            .map(Method::as_str)
            .collect::<Vec<_>>()
            .join(", ")
            .into();
        let resource = routes
            .into_iter()
            .fold(web::resource(path), actix_web::Resource::route)
            .default_service(web::to(move |req: HttpRequest| {
                let allowed = allowed.clone();
                async move { method_not_allowed(&req, &allowed) }
            }));
        cfg.service(resource);
    }
    cfg.default_service(web::to(no_route));
}

/// An error answer: `{"error": {"message": ..., <extra>}}`.
pub fn error_response(
    status: StatusCode,
    message: impl Into<String>,
    extra: Map<String, Value>,
) -> HttpResponse {
    let mut error = Map::with_capacity(extra.len() + 1);
    error.insert("message".into(), Value::String(message.into()));
    error.extend(extra);
    HttpResponse::build(status).json(json!({ "error": error }))
}

fn method_not_allowed(req: &HttpRequest, allowed: &str) -> HttpResponse {
    let mut response = error_response(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "{} is not allowed on {}; use {allowed}",
            req.method(),
            req.path()
        ),
        Map::new(),
    );
    if let Ok(value) = HeaderValue::from_str(allowed) {
        response.headers_mut().insert(header::ALLOW, value);
    }
    response
}

async fn no_route(req: HttpRequest) -> HttpResponse {
    error_response(
        StatusCode::NOT_FOUND,
        format!("no route for {} {}", req.method(), req.path()),
        Map::new(),
    )
}

/// `GET /openapi.json`: the OpenAPI document, as it is in the crate.
async fn openapi() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(OPENAPI)
}

async fn health() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

async fn ready(state: web::Data<AppState>) -> HttpResponse {
    if state.supervisor.is_ready() {
        HttpResponse::Ok().json(json!({"status": "ready"}))
    } else {
        let mut response = error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "functions found at start-up are still starting",
            Map::new(),
        );
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        response
    }
}

/// The status an invoke error is answered with.
pub fn status_of(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::FunctionFailed => StatusCode::INTERNAL_SERVER_ERROR,
        ErrorKind::BadGateway => StatusCode::BAD_GATEWAY,
        ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
    }
}

fn invoke_error_response(error: &InvokeError) -> HttpResponse {
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
    let mut response = error_response(status_of(error.kind()), message, extra);
    if let Some(after) = error.retry_after() {
        // Whole seconds, rounded up: never invite a retry before the time.
        let seconds = after.as_secs() + u64::from(after.subsec_nanos() > 0);
        if let Ok(value) = HeaderValue::from_str(&seconds.max(1).to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
    }
    response
}

/// Reads the whole body, refusing more than `limit` bytes with a 413.
pub(crate) async fn read_body(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<web::BytesMut, HttpResponse> {
    let too_large = |size: Option<usize>| {
        let what = size.map_or_else(|| "more".to_owned(), |s| s.to_string());
        error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is {what} bytes; the limit is {limit} bytes (--max-body)"),
            Map::new(),
        )
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if let Some(len) = declared
        && len > limit
    {
        return Err(too_large(Some(len)));
    }
    let mut body = web::BytesMut::with_capacity(declared.unwrap_or(0).min(limit));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| {
            error_response(
                StatusCode::BAD_REQUEST,
                format!("cannot read the request body: {e}"),
                Map::new(),
            )
        })?;
        if body.len() + chunk.len() > limit {
            return Err(too_large(None));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Parses a body as JSON; an empty (or blank) body is `{}`.
pub(crate) fn parse_json_body(
    body: &[u8],
) -> Result<Box<serde_json::value::RawValue>, HttpResponse> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return serde_json::value::RawValue::from_string("{}".to_owned()).map_err(|e| {
            error_response(StatusCode::INTERNAL_SERVER_ERROR, e.to_string(), Map::new())
        });
    }
    serde_json::from_slice(body).map_err(|e| {
        error_response(
            StatusCode::BAD_REQUEST,
            format!("the request body is not valid JSON: {e}"),
            Map::new(),
        )
    })
}

/// The request's id (set by the access guard) and trace context.
pub(crate) fn request_meta(req: &HttpRequest) -> (String, Option<String>) {
    let extensions = req.extensions();
    let request_id = extensions
        .get::<RequestId>()
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), |r| r.0.clone());
    let trace = extensions.get::<TraceParent>().map(|t| t.0.clone());
    (request_id, trace)
}

async fn run(req: HttpRequest, payload: web::Payload, state: web::Data<AppState>) -> HttpResponse {
    let name = req.match_info().get("name").unwrap_or_default();
    if let Err(e) = shs_supervisor::validate_name(name) {
        return error_response(StatusCode::BAD_REQUEST, e.to_string(), Map::new());
    }
    let body = match read_body(&req, payload, state.max_body).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let input = match parse_json_body(&body) {
        Ok(input) => input,
        Err(response) => return response,
    };
    let (request_id, trace) = request_meta(&req);
    match state
        .supervisor
        .invoke(name, input, &request_id, trace.as_deref())
        .await
    {
        Ok(Output::Json(result)) => {
            let text: Box<str> = result.into();
            HttpResponse::Ok()
                .content_type("application/json")
                .body(String::from(text))
        }
        Ok(Output::Raw(bytes)) => {
            let content_type = if serde_json::from_slice::<serde::de::IgnoredAny>(&bytes).is_ok() {
                "application/json"
            } else if std::str::from_utf8(&bytes).is_ok() {
                "text/plain; charset=utf-8"
            } else {
                "application/octet-stream"
            };
            HttpResponse::Ok().content_type(content_type).body(bytes)
        }
        Err(error) => {
            tracing::debug!(function = name, status = %status_of(error.kind()), "invoke failed: {error}");
            invoke_error_response(&error)
        }
    }
}

async fn run_without_name() -> HttpResponse {
    error_response(
        StatusCode::BAD_REQUEST,
        "no function name: use POST /run/{name}",
        Map::new(),
    )
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
}

fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

fn rfc3339(t: std::time::SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

async fn functions(state: web::Data<AppState>) -> HttpResponse {
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
            }),
        })
        .collect();
    HttpResponse::Ok().json(json!({ "functions": rows }))
}

/// `GET /metrics`: every metric, in the Prometheus text format.
async fn metrics(state: web::Data<AppState>) -> HttpResponse {
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
async fn function_metrics(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let name = req.match_info().get("name").unwrap_or_default();
    if let Err(e) = shs_supervisor::validate_name(name) {
        return error_response(StatusCode::BAD_REQUEST, e.to_string(), Map::new());
    }
    match state.supervisor.stats(name) {
        Ok(stats) => HttpResponse::Ok().json(json!({"function": name, "metrics": stats})),
        Err(error) => invoke_error_response(&error),
    }
}

/// Query of `GET /functions/{name}/logs`.
#[derive(serde::Deserialize)]
struct LogsQuery {
    /// How many lines (the last ones, or the first ones after `after`).
    tail: Option<usize>,
    /// Only lines numbered after this one (to follow a log).
    after: Option<u64>,
}

async fn function_logs(
    req: HttpRequest,
    query: web::Query<LogsQuery>,
    state: web::Data<AppState>,
) -> HttpResponse {
    let name = req.match_info().get("name").unwrap_or_default();
    if let Err(e) = shs_supervisor::validate_name(name) {
        return error_response(StatusCode::BAD_REQUEST, e.to_string(), Map::new());
    }
    let tail = query.tail.unwrap_or(100).min(10_000);
    match state.supervisor.logs(name, tail, query.after) {
        Ok(lines) => HttpResponse::Ok().json(json!({"function": name, "lines": lines})),
        Err(error) => invoke_error_response(&error),
    }
}

async fn subscriptions(state: web::Data<AppState>) -> HttpResponse {
    let rows: Vec<Value> = state
        .supervisor
        .bus()
        .subscriptions()
        .into_iter()
        .map(|s| json!({"type": s.pattern, "function": s.function}))
        .collect();
    HttpResponse::Ok().json(json!({ "subscriptions": rows }))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn document() -> Value {
        serde_json::from_str(OPENAPI).expect("openapi.json is JSON")
    }

    #[test]
    fn the_openapi_document_is_3_1_of_this_version() {
        let doc = document();
        assert_eq!(doc["openapi"], "3.1.0");
        assert_eq!(doc["info"]["title"], "shs");
        assert_eq!(
            doc["info"]["version"],
            env!("CARGO_PKG_VERSION"),
            "update info.version in crates/shs-http/openapi.json"
        );
    }

    #[test]
    fn the_openapi_document_describes_every_route_and_no_other() {
        let doc = document();
        let described: BTreeSet<(String, String)> = doc["paths"]
            .as_object()
            .expect("paths")
            .iter()
            .flat_map(|(path, item)| {
                item.as_object()
                    .expect("path item")
                    .keys()
                    .filter(|k| {
                        [
                            "get", "post", "put", "delete", "patch", "head", "options", "trace",
                        ]
                        .contains(&k.as_str())
                    })
                    .map(move |m| (m.to_ascii_uppercase(), path.clone()))
            })
            .collect();
        let routed: BTreeSet<(String, String)> = ROUTES
            .iter()
            .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
            .collect();
        assert_eq!(described, routed);
        assert_eq!(routed.len(), ROUTES.len(), "no route twice");
    }
}
