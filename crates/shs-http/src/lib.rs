//! The shs HTTP API.
//!
//! This crate owns the routes ([`ROUTES`]: `/run/{name}`, `/events`, dead letters and event
//! history, `/functions`, logs, `/subscriptions`, `/metrics`, `/health`, `/ready`, the live
//! `/stream` and the dashboard at `/ui/` ([`ui`]), and `/openapi.json`, which serves
//! [`OPENAPI`], the OpenAPI 3.1 description of all of them), reading request bodies within the
//! size limit, and how supervisor errors are answered (with the status of their
//! [`shs_supervisor::ErrorKind`]). Every error answer has the body
//! `{"error": {"message": str, ...}}`. It holds no process or bus logic of its own: it calls
//! the [`Supervisor`] and the [`shs_bus::Bus`].
//!
//! This module owns the server, the route table and the answers that are about no function
//! (`/health`, `/ready`, `/openapi.json`, 404 and 405); [`events`] owns `/events`, `functions`
//! the routes about functions, `live` `/stream` and `GET /functions/{name}`, `ui` the
//! dashboard's files, `body` reading requests, `access` the guard every request passes (keys,
//! rate limit, request ids) and `lifecycle` the graceful stop.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::{HttpRequest, HttpResponse, web};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::{Map, Value, json};
use shs_supervisor::Supervisor;

mod access;
mod body;
mod callbacks;
mod cloudevents;
pub mod events;
mod functions;
pub mod idempotency;
mod invocations;
mod lifecycle;
mod live;
mod query;
mod response;
mod run;
pub mod ui;
mod webhook;

use body::{read_body, request_meta};
use functions::{function_logs, function_metrics, functions, metrics, subscriptions};
use run::{run, run_without_name};

pub use access::{AccessConfig, RateLimit, RequestId, TraceParent, valid_traceparent};
pub use callbacks::CallbackPolicy;

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
    /// How long an `Idempotency-Key` is kept after its first use.
    pub idempotency_ttl: Duration,
    /// Where the callbacks of asynchronous invocations may go (`--callback-allow`).
    pub callbacks: CallbackPolicy,
}

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    supervisor: Supervisor,
    max_body: usize,
    metrics: Option<PrometheusHandle>,
    /// How long an `Idempotency-Key` is kept ([`idempotency::DEFAULT_TTL`] unless set).
    idempotency_ttl: Duration,
    callbacks: Arc<CallbackPolicy>,
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
            idempotency_ttl: idempotency::DEFAULT_TTL,
            callbacks: Arc::default(),
        }
    }

    /// Keeps `Idempotency-Key`s for `ttl` after their first use.
    pub fn with_idempotency_ttl(mut self, ttl: Duration) -> AppState {
        self.idempotency_ttl = ttl;
        self
    }

    /// The same state, with callbacks allowed where `policy` says.
    pub fn with_callbacks(mut self, policy: CallbackPolicy) -> AppState {
        self.callbacks = Arc::new(policy);
        self
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
    let state = AppState::new(supervisor, config.max_body, config.metrics.clone())
        .with_idempotency_ttl(config.idempotency_ttl)
        .with_callbacks(config.callbacks.clone());
    callbacks::start(state.supervisor.clone());
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
        .expose_headers([
            REQUEST_ID,
            "retry-after",
            "preference-applied",
            "location",
            idempotency::IDEMPOTENT_REPLAYED,
        ])
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
    GET "/run/{name}" => run,
    HEAD "/run/{name}" => run,
    POST "/run/{name}" => run,
    PUT "/run/{name}" => run,
    PATCH "/run/{name}" => run,
    DELETE "/run/{name}" => run,
    OPTIONS "/run/{name}" => run,
    // `{tail}` is any rest of the path, slashes included (`{tail:.*}` in actix's syntax).
    GET "/run/{name}/{tail}" => run,
    HEAD "/run/{name}/{tail}" => run,
    POST "/run/{name}/{tail}" => run,
    PUT "/run/{name}/{tail}" => run,
    PATCH "/run/{name}/{tail}" => run,
    DELETE "/run/{name}/{tail}" => run,
    OPTIONS "/run/{name}/{tail}" => run,
    POST "/run/" => run_without_name,
    POST "/events" => events::publish,
    GET "/events" => events::list,
    // Before `/events/{id}`, which would take `dead-letters` for an id.
    GET "/events/dead-letters" => events::dead_letters,
    POST "/events/dead-letters/{id}/retry" => events::retry_dead_letter,
    DELETE "/events/dead-letters/{id}" => events::delete_dead_letter,
    GET "/events/{id}" => events::event,
    GET "/invocations" => invocations::list,
    GET "/invocations/{id}" => invocations::get,
    GET "/schedules" => invocations::schedules,
    GET "/functions" => functions,
    GET "/functions/{name}" => live::function,
    GET "/functions/{name}/logs" => function_logs,
    GET "/subscriptions" => subscriptions,
    GET "/topology" => events::topology,
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
        let pattern = path.replace("{tail}", "{tail:.*}");
        let allowed: Arc<str> = methods
            .iter()
            .map(Method::as_str)
            .collect::<Vec<_>>()
            .join(", ")
            .into();
        let resource = routes
            .into_iter()
            .fold(web::resource(pattern), actix_web::Resource::route)
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
