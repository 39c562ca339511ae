//! The registry of functions and what can be done with them.
//!
//! This module owns the [`Supervisor`]: its start and shutdown, the registry of functions by
//! name, what it shows of them, and the one call path of invokes and event deliveries
//! (`Supervisor::run`, which records each in the function's stats). Its children own keeping
//! the registry in step with the functions folder ([`reconcile`]) and the bus's side of event
//! delivery ([`deliver`]: the [`shs_bus::Deliver`] implementation and its retry policy).

mod detail;
pub use detail::{FunctionDetail, FunctionSummary};

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use parking_lot::{Mutex, RwLock};
use serde::Serialize;
use serde_json::value::RawValue;
use shs_bus::{Bus, Causation, Deliver, SharedEvent};
use shs_protocol::codec::line_safe;
use shs_protocol::methods::{self, Context, EventParams, InvokeParams};
use tokio::sync::watch;

use crate::error::{InvokeError, SpecError, StartError};
use crate::exec::ExecRunner;
use crate::http::HttpInvoke;
use crate::logs::{LogLine, LogRing};
use crate::pool::{Pool, PoolStatus};
use crate::process::{CallError, CallMeta};
use crate::spec::{self, Defaults, Found, FunctionSpec, Mode, WebhookKind};
use crate::stats::{FunctionStats, Stats};
use crate::stream::StreamTx;
use crate::watch::{FolderWatch, follow};
use crate::{Config, Host};

mod deliver;
mod invocation;
mod reconcile;

use deliver::Deliverer;
pub use invocation::StoredRequest;

/// What a pool closed for a redeploy says it was.
const REDEPLOYED: &str = "redeployed";
/// How many deployments in a row a request may find closing before it is refused: each try
/// means a redeploy happened while the request waited.
const MAX_REDEPLOY_TRIES: u32 = 4;

/// The input as a line-safe JSON text, copied only when it has a line break to escape.
fn safe_input(input: &RawValue) -> Cow<'_, RawValue> {
    if shs_protocol::codec::is_line_safe(input.get()) {
        Cow::Borrowed(input)
    } else {
        Cow::Owned(line_safe(input.to_owned()))
    }
}

/// What a function returned.
#[derive(Debug)]
pub enum Output {
    /// An rpc function's `result`, as it wrote it.
    Json(Box<RawValue>),
    /// What an exec function wrote to stdout.
    Raw(Vec<u8>),
    /// A cgi function's response: its status and headers, the body still coming.
    Cgi(crate::cgi::CgiResponse),
}

/// What [`Supervisor::http_front`] says of a function.
#[derive(Clone, Debug, Default)]
pub struct HttpFront {
    /// What its requests must be signed with, when it has a `[webhook]`.
    pub webhook: Option<Arc<crate::secrets::WebhookKey>>,
    /// Whether it runs in mode cgi (its body is passed as it is, never parsed).
    pub cgi: bool,
}

/// What `GET /functions` shows of one function.
#[derive(Clone, Debug)]
pub struct FunctionInfo {
    /// Its name.
    pub name: String,
    /// `rpc` or `exec`.
    pub mode: &'static str,
    /// The patterns it is subscribed to.
    pub subscriptions: Vec<String>,
    /// `ready`, `starting`, `backing_off`, `failed` or `idle` (see [`PoolStatus`]).
    pub state: &'static str,
    /// Its live processes (for exec: running now).
    pub processes: usize,
    /// What is wrong, when it failed.
    pub error: Option<String>,
    /// More about an rpc function's processes: queue, failures, backoff, cold starts.
    pub pool: Option<PoolStatus>,
    /// The event types it publishes, declared in `function.toml` or seen: its chains.
    pub publishes: Vec<crate::PublishEdge>,
}

enum Kind {
    Rpc(Arc<Pool>),
    Exec(ExecRunner),
    Broken(String),
}

struct Function {
    found: Found,
    kind: Kind,
    /// The subscriptions from `function.toml` in force: its own, or while it is broken, those
    /// of the last valid one.
    manifest_subscriptions: Vec<String>,
    /// Its recent log lines (kept across redeployments).
    logs: Arc<LogRing>,
    /// What it has done (kept across redeployments).
    stats: Arc<Stats>,
    /// What its `[webhook]` is checked with.
    webhook: Option<Arc<crate::secrets::WebhookKey>>,
    /// Its private copy of its secrets, removed with this deployment.
    _secrets: Option<crate::secrets::PrivateCopy>,
    /// The tasks that fire its schedules, stopped with this deployment.
    schedules: ScheduleTasks,
}

/// The tasks that fire a deployment's schedules; aborted when it is retired or dropped.
#[derive(Default)]
struct ScheduleTasks(Vec<tokio::task::AbortHandle>);

impl ScheduleTasks {
    fn stop(&self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

impl Drop for ScheduleTasks {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Function {
    fn spec(&self) -> Option<&FunctionSpec> {
        match &self.found {
            Found::Function(spec) => Some(spec),
            Found::Broken { .. } => None,
        }
    }

    async fn retire(&self, what: &'static str, drain: Duration) {
        // The next deployment (if any) fires them now.
        self.schedules.stop();
        match &self.kind {
            Kind::Rpc(pool) => pool.close(what, drain).await,
            Kind::Exec(runner) => runner.close(drain).await,
            Kind::Broken(_) => {}
        }
    }

    /// The one call path of invokes and event deliveries: a slot on a process and a call
    /// (rpc), a process of its own (exec), or the reason it cannot run. The error says too
    /// whether the function never saw the request because its pool was closed for a
    /// redeploy: then the new deployment may take it.
    async fn run(&self, name: &str, request: &Request<'_>) -> Result<Output, (InvokeError, bool)> {
        let Request {
            job,
            request_id,
            trace,
            cause,
            webhook,
            schedule,
        } = request;
        let (request_id, trace) = (*request_id, *trace);
        match &self.kind {
            Kind::Rpc(pool) => {
                let slot = match pool.acquire(cause).await {
                    Ok(slot) => slot,
                    Err(e) => {
                        let redeployed = matches!(
                            e,
                            InvokeError::Gone {
                                what: REDEPLOYED,
                                ..
                            }
                        );
                        return Err((e, redeployed));
                    }
                };
                let process = slot.process().clone();
                let context = Context {
                    request_id,
                    function: name,
                    traceparent: trace,
                    webhook: webhook.map(|kind| methods::WebhookContext {
                        kind: kind.as_str(),
                        verified: true,
                    }),
                    schedule: schedule.as_ref().map(|s| methods::ScheduleContext {
                        cron: s.cron.as_str(),
                        time: s.time.as_str(),
                    }),
                };
                let mut stream = None;
                let (method, params) = match job {
                    Job::Invoke(input) => (
                        methods::INVOKE,
                        Params::Invoke(InvokeParams {
                            input: safe_input(input),
                            context,
                            http: None,
                        }),
                    ),
                    Job::Http(invoke, stream_tx) => {
                        stream = stream_tx.clone();
                        let raw_body = pool.spec().raw_body || process.wants_raw_body();
                        (
                            methods::INVOKE,
                            Params::Invoke(InvokeParams {
                                input: safe_input(invoke.input()),
                                context,
                                http: Some(invoke.wire(raw_body)),
                            }),
                        )
                    }
                    Job::Event(event) => (
                        methods::EVENT,
                        Params::Event(EventParams {
                            event: event.json(),
                            context,
                        }),
                    ),
                };
                let timeout = pool.spec().timeout;
                let mut meta = CallMeta::new(request_id, trace);
                meta.stream = stream;
                match process
                    .call(method, &params, cause.clone(), meta, Some(slot), timeout)
                    .await
                {
                    Ok(result) => Ok(Output::Json(result)),
                    Err(e) => {
                        let unseen = matches!(e, CallError::NotSent(_))
                            && pool.closed_for() == Some(REDEPLOYED);
                        Err((call_error(name, e, timeout), unseen))
                    }
                }
            }
            Kind::Exec(runner) if runner.spec.mode == Mode::Cgi => {
                let synthetic;
                let request = match job {
                    Job::Http(invoke, _) => invoke.request(),
                    Job::Invoke(input) => {
                        synthetic = cgi_post("application/json", input.get().as_bytes());
                        &synthetic
                    }
                    Job::Event(event) => {
                        synthetic = cgi_post(
                            "application/cloudevents+json",
                            event.json().get().as_bytes(),
                        );
                        &synthetic
                    }
                };
                let response = runner
                    .run_cgi(request, request_id, trace)
                    .await
                    .map_err(|e| (e, false))?;
                if !matches!(job, Job::Event(_)) {
                    return Ok(Output::Cgi(response));
                }
                // An event is handled once the script has exited with status 0 and an answer
                // below 400; its body is read to the end, not kept.
                response
                    .read_to_end(name, usize::MAX)
                    .await
                    .map_err(|e| (e, false))?;
                Ok(Output::Raw(Vec::new()))
            }
            Kind::Exec(runner) => {
                let input = match &job {
                    Job::Invoke(input) => Cow::Borrowed(input.get().as_bytes()),
                    // JSON as v1 had it (`{}` for an empty body), any other body as it came.
                    Job::Http(invoke, _)
                        if invoke.body_is_json() || invoke.request().body.is_empty() =>
                    {
                        Cow::Borrowed(invoke.input().get().as_bytes())
                    }
                    Job::Http(invoke, _) => Cow::Borrowed(&invoke.request().body[..]),
                    // An event is one line of JSON.
                    Job::Event(event) => {
                        let mut line = event.json().get().as_bytes().to_vec();
                        line.push(b'\n');
                        Cow::Owned(line)
                    }
                };
                runner
                    .run(&input, request_id, trace)
                    .await
                    .map(Output::Raw)
                    .map_err(|e| (e, false))
            }
            Kind::Broken(reason) => Err((
                InvokeError::Broken {
                    function: name.to_owned(),
                    reason: reason.clone(),
                },
                false,
            )),
        }
    }
}

/// The request a cgi function gets for an invoke without an HTTP request or an event: a
/// `POST /` of `body`.
fn cgi_post(content_type: &str, body: &[u8]) -> crate::http::HttpRequest {
    let mut request = crate::http::HttpRequest {
        method: "POST".to_owned(),
        path: "/".to_owned(),
        body: bytes::Bytes::copy_from_slice(body),
        ..crate::http::HttpRequest::default()
    };
    request.add_header("content-type", content_type);
    request
}

/// One request the supervisor makes of a function.
struct Request<'a> {
    job: Job<'a>,
    /// Its id, `context.request_id`.
    request_id: &'a str,
    /// Its W3C trace context, `context.traceparent`.
    trace: Option<&'a str>,
    /// What waits for it.
    cause: Causation,
    /// The kind of webhook signature checked before it was made, `context.webhook`.
    webhook: Option<WebhookKind>,
    /// The occurrence of a schedule it runs for, `context.schedule`.
    schedule: Option<methods::ScheduleContext>,
}

/// What a function is asked to do: the two kinds of request.
enum Job<'a> {
    /// An invoke without an HTTP request: the input, any JSON; the result is the answer.
    Invoke(Box<RawValue>),
    /// `/run/NAME...`: the input and the HTTP request, and where `stream` notifications go
    /// (if the caller takes them); the result is the answer.
    Http(Box<HttpInvoke>, Option<StreamTx>),
    /// An event delivery; a result is not used.
    Event(&'a SharedEvent),
}

/// The params of an rpc call for a [`Job`].
#[derive(Serialize)]
#[serde(untagged)]
enum Params<'a> {
    Invoke(InvokeParams<Cow<'a, RawValue>, &'a str>),
    Event(EventParams<&'a RawValue, &'a str>),
}

struct Inner {
    host: Arc<Host>,
    defaults: Defaults,
    registry: RwLock<BTreeMap<String, Arc<Function>>>,
    /// One reconciliation at a time.
    reconciling: tokio::sync::Mutex<()>,
    /// Functions found at start-up that have not finished starting.
    starting: AtomicUsize,
    ready: watch::Sender<bool>,
    stopping: AtomicBool,
    watch: Mutex<Option<FolderWatch>>,
    /// Kept alive here; the bus holds a weak reference.
    _deliverer: Arc<dyn Deliver>,
}

/// The supervisor: every function, its processes and subscriptions.
///
/// Cheap to clone; all clones are the same supervisor.
#[derive(Clone)]
pub struct Supervisor {
    inner: Arc<Inner>,
}

impl Supervisor {
    /// Reads the functions folder, deploys what it finds (rpc functions start at once, in the
    /// background), and follows the folder for changes if `config.watch` is set. Must be called
    /// inside a Tokio runtime, which then runs every process task.
    pub async fn start(mut config: Config, bus: Arc<Bus>) -> Result<Supervisor, StartError> {
        // Absolute, so that paths in a function's folder mean the same from its own folder.
        let dir = config
            .functions_dir
            .canonicalize()
            .map_err(|source| SpecError::Io {
                path: config.functions_dir.clone(),
                source,
            })?;
        if !dir.is_dir() {
            return Err(SpecError::Io {
                path: dir,
                source: std::io::Error::other("not a folder"),
            }
            .into());
        }
        config.functions_dir = dir.clone();
        let defaults = config.defaults();
        let watch_folder = config.watch;
        if crate::unix::reap_orphans_if_init() {
            tracing::info!("running as PID 1: orphaned processes are reaped");
        }
        let io = crate::io::IoThreads::new(config.io_threads);
        let secrets = crate::secrets::Secrets::open(&config.secrets_dir)?;
        let prewarm = crate::prewarm::Prewarm::new(config.prewarm_budget);
        let host = Arc::new(Host {
            secrets,
            prewarm,
            config,
            bus: bus.clone(),
            handle: tokio::runtime::Handle::current(),
            io,
        });
        let inner = Arc::new_cyclic(|me: &Weak<Inner>| Inner {
            host,
            defaults,
            registry: RwLock::new(BTreeMap::new()),
            reconciling: tokio::sync::Mutex::new(()),
            starting: AtomicUsize::new(0),
            ready: watch::channel(false).0,
            stopping: AtomicBool::new(false),
            watch: Mutex::new(None),
            _deliverer: Arc::new(Deliverer(me.clone())),
        });
        bus.attach(Arc::downgrade(&inner._deliverer));
        let supervisor = Supervisor { inner };
        let found = spec::scan(&dir, &supervisor.inner.defaults)?;
        let names: Vec<String> = found.keys().cloned().collect();
        // What earlier runs learned says which functions need not start now.
        let learned = match bus.learned().await {
            Ok(learned) => learned,
            Err(e) => {
                tracing::warn!(
                    "cannot read what earlier runs learned (every function starts): {e}"
                );
                None
            }
        };
        // And what each function publishes: the chains to prewarm.
        for (function, event_type) in learned.iter().flat_map(|l| &l.publishes) {
            supervisor.inner.host.prewarm.learn(function, event_type);
        }
        supervisor
            .reconcile(found, reconcile::Deploy::Initial(learned))
            .await;
        // Saved subscriptions and pending deliveries come back once the functions are known.
        bus.start(names).await?;
        if watch_folder {
            let weak = Arc::downgrade(&supervisor.inner);
            let follower = follow(&dir, &supervisor.inner.host.handle, move || {
                let inner = weak.upgrade()?;
                Some(Box::pin(async move { Supervisor { inner }.rescan().await })
                    as BoxFuture<'static, ()>)
            });
            *supervisor.inner.watch.lock() = Some(follower);
        }
        Ok(supervisor)
    }

    /// Attaches the calling thread to handle function processes' pipes. Call it on each thread
    /// that serves requests from a current-thread runtime (an actix-web worker), in that
    /// runtime. A process's stdin and stdout are then handled on one attached thread, and a
    /// request prefers a process handled on its own thread: its answer comes back without a
    /// hand-off between threads. Returns false (and changes nothing) outside a runtime.
    pub fn attach_io_thread(&self) -> bool {
        self.inner.host.io.attach_current()
    }

    /// The bus the supervisor serves functions with.
    pub fn bus(&self) -> &Arc<Bus> {
        &self.inner.host.bus
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &Config {
        &self.inner.host.config
    }

    /// Whether every function found at start-up has finished its start.
    pub fn is_ready(&self) -> bool {
        *self.inner.ready.borrow()
    }

    /// Resolves once [`Supervisor::is_ready`] is true.
    pub async fn wait_ready(&self) {
        let mut ready = self.inner.ready.subscribe();
        let _ = ready.wait_for(|r| *r).await;
    }

    /// What function `name` has done.
    pub fn stats(&self, name: &str) -> Result<FunctionStats, InvokeError> {
        let function = self.lookup(name)?;
        let cold_starts = match &function.kind {
            Kind::Rpc(pool) => pool.status().cold_starts,
            _ => 0,
        };
        Ok(function.stats.summary(cold_starts))
    }

    /// The recent log lines of function `name`: the last `tail`, or those after number
    /// `after` (at most `tail`).
    pub fn logs(
        &self,
        name: &str,
        tail: usize,
        after: Option<u64>,
    ) -> Result<Vec<LogLine>, InvokeError> {
        let function = self.lookup(name)?;
        Ok(match after {
            Some(seq) => function.logs.after(seq, tail),
            None => function.logs.tail(tail),
        })
    }

    fn lookup(&self, name: &str) -> Result<Arc<Function>, InvokeError> {
        self.inner
            .registry
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| InvokeError::NotFound {
                function: name.to_owned(),
            })
    }

    /// What requests to function `name` must be signed with, when it has a `[webhook]`
    /// (and it is deployed).
    pub fn webhook(&self, name: &str) -> Option<Arc<crate::secrets::WebhookKey>> {
        self.inner.registry.read().get(name)?.webhook.clone()
    }

    /// What the HTTP server needs to know of function `name` before it reads a request for
    /// it: its `[webhook]` and whether it runs in mode cgi (one look at the registry). A
    /// function that is not deployed has neither.
    pub fn http_front(&self, name: &str) -> HttpFront {
        let registry = self.inner.registry.read();
        let Some(function) = registry.get(name) else {
            return HttpFront::default();
        };
        HttpFront {
            webhook: function.webhook.clone(),
            cgi: function.spec().is_some_and(|s| s.mode == Mode::Cgi),
        }
    }

    /// Every schedule of the functions deployed, as (function, schedule), by function.
    pub fn schedules(&self) -> Vec<(String, Arc<crate::schedule::Schedule>)> {
        let registry = self.inner.registry.read();
        registry
            .iter()
            .filter_map(|(name, f)| Some((name, f.spec()?)))
            .flat_map(|(name, spec)| spec.schedules.iter().map(|s| (name.clone(), s.clone())))
            .collect()
    }

    /// Whether a function of that name is deployed.
    pub fn contains(&self, name: &str) -> bool {
        self.inner.registry.read().contains_key(name)
    }

    /// Every deployed function, by name.
    pub fn functions(&self) -> Vec<FunctionInfo> {
        let registry = self.inner.registry.read();
        registry
            .iter()
            .map(|(name, f)| {
                let (state, processes, error, pool) = match &f.kind {
                    Kind::Rpc(pool) => {
                        let status = pool.status();
                        (
                            status.state,
                            status.processes,
                            status.error.clone(),
                            Some(status),
                        )
                    }
                    Kind::Exec(runner) => ("ready", runner.running(), None, None),
                    Kind::Broken(reason) => ("failed", 0, Some(reason.clone()), None),
                };
                FunctionInfo {
                    name: name.clone(),
                    mode: f.spec().map_or(Mode::Rpc, |s| s.mode).as_str(),
                    subscriptions: self.inner.host.bus.subscriptions_of(name),
                    state,
                    processes,
                    error,
                    pool,
                    publishes: self.inner.host.prewarm.edges(name),
                }
            })
            .collect()
    }

    /// Runs function `name` on `input` (any JSON). `request_id` and `trace` (a W3C
    /// `traceparent`) go to the function in `context`.
    pub async fn invoke(
        &self,
        name: &str,
        input: Box<RawValue>,
        request_id: &str,
        trace: Option<&str>,
    ) -> Result<Output, InvokeError> {
        self.invoke_signed(name, input, request_id, trace, None)
            .await
    }

    /// [`Supervisor::invoke`] of a request whose `webhook` signature the caller has checked
    /// (with [`Supervisor::webhook`]): the function's `context.webhook` says so.
    pub async fn invoke_signed(
        &self,
        name: &str,
        input: Box<RawValue>,
        request_id: &str,
        trace: Option<&str>,
        webhook: Option<WebhookKind>,
    ) -> Result<Output, InvokeError> {
        let request = Request {
            job: Job::Invoke(input),
            request_id,
            trace,
            cause: Causation::root(),
            webhook,
            schedule: None,
        };
        self.run(name, request).await
    }

    /// Runs function `name` on an HTTP request (`/run/NAME...`): an rpc function gets its
    /// `input` and the `http` member; an exec function the body on stdin (`{}` when empty).
    /// `request_id` and `trace` (a W3C `traceparent`) go to the function in `context`.
    pub async fn invoke_http(
        &self,
        name: &str,
        invoke: HttpInvoke,
        request_id: &str,
        trace: Option<&str>,
    ) -> Result<Output, InvokeError> {
        let request = Request {
            job: Job::Http(Box::new(invoke), None),
            request_id,
            trace,
            cause: Causation::root(),
            webhook: None,
            schedule: None,
        };
        self.run(name, request).await
    }

    /// [`Supervisor::invoke_http`], and the `stream` notifications the function sends while
    /// it handles the request go to `stream` (made by [`crate::http_stream`]); the stream ends
    /// when this call does. An exec function does not stream. `webhook` is the signature the
    /// caller checked (with [`Supervisor::webhook`]): the function's `context.webhook`.
    pub async fn invoke_http_streaming(
        &self,
        name: &str,
        invoke: HttpInvoke,
        request_id: &str,
        trace: Option<&str>,
        webhook: Option<WebhookKind>,
        stream: StreamTx,
    ) -> Result<Output, InvokeError> {
        let request = Request {
            job: Job::Http(Box::new(invoke), Some(stream)),
            request_id,
            trace,
            cause: Causation::root(),
            webhook,
            schedule: None,
        };
        self.run(name, request).await
    }

    /// Makes `request` of function `name`, and records what it did. A request that the
    /// function never saw because a redeploy closed its pool (it waited in line, or was
    /// handed a slot of a process that was stopping) goes to the new deployment.
    async fn run(&self, name: &str, request: Request<'_>) -> Result<Output, InvokeError> {
        self.prewarm_chain(name);
        let event = matches!(request.job, Job::Event(_));
        let began = Instant::now();
        let mut tries = 0;
        loop {
            let function = self.lookup(name)?;
            let result = function.run(name, &request).await;
            tries += 1;
            let result = match result {
                Err((_, true)) if tries < MAX_REDEPLOY_TRIES => continue,
                other => other.map_err(|(e, _)| e),
            };
            function
                .stats
                .record(event, began.elapsed(), result.as_ref().map(drop));
            return result;
        }
    }

    /// Starts the processes of the functions down `name`'s known chains that have none, within
    /// the budget ([`crate::prewarm`]).
    fn prewarm_chain(&self, name: &str) {
        let host = &self.inner.host;
        if !host.prewarm.enabled() {
            return;
        }
        let Some(mut frontier) = host.prewarm.types_of(name) else {
            return;
        };
        let mut seen = std::collections::HashSet::from([name.to_owned()]);
        let mut depth = 0;
        while !frontier.is_empty() && depth < host.bus.max_hops() {
            let mut next = Vec::new();
            for event_type in frontier {
                for function in host.bus.matching(&event_type) {
                    if !seen.insert(function.to_string()) {
                        continue;
                    }
                    let pool = match self.inner.registry.read().get(&*function).map(|f| &f.kind) {
                        Some(Kind::Rpc(pool)) => Some(pool.clone()),
                        _ => None,
                    };
                    if let Some(pool) = pool
                        && pool.start_if_cold(|| host.prewarm.take())
                    {
                        tracing::debug!(function = %function, after = name, "prewarming");
                        metrics::counter!("shs_prewarms_total", "function" => function.to_string())
                            .increment(1);
                    }
                    if let Some(types) = host.prewarm.types_of(&function) {
                        next.extend(types);
                    }
                }
            }
            frontier = next;
            depth += 1;
        }
    }

    /// Stops following the folder, takes no more requests, lets those in flight finish for up
    /// to `drain`, then stops every process. Idempotent.
    pub async fn shutdown(&self, drain: Duration) {
        if self.inner.stopping.swap(true, Ordering::AcqRel) {
            return;
        }
        // No new asynchronous deliveries to functions that are stopping: they wait on disk.
        self.inner.host.bus.quiesce();
        drop(self.inner.watch.lock().take());
        let _wait_for_reconcile = self.inner.reconciling.lock().await;
        let all: Vec<Arc<Function>> = std::mem::take(&mut *self.inner.registry.write())
            .into_values()
            .collect();
        futures::future::join_all(all.iter().map(|f| f.retire("removed", drain))).await;
        drop(all);
        self.inner.host.secrets.close();
        tracing::info!("every function process has stopped");
    }
}

fn call_error(function: &str, error: CallError, timeout: Duration) -> InvokeError {
    let function = function.to_owned();
    match error {
        CallError::Rpc(error) => InvokeError::Function {
            function,
            error: Box::new(error),
        },
        CallError::Died(death) | CallError::NotSent(death) if death.protocol => {
            InvokeError::Protocol {
                function,
                detail: death.detail,
            }
        }
        CallError::Died(death) | CallError::NotSent(death) => InvokeError::Crashed {
            function,
            detail: format!("{} while handling the request", death.detail),
            stderr: death.stderr,
        },
        CallError::Timeout => InvokeError::Timeout {
            function,
            after: timeout,
            action: "its process was killed",
        },
        CallError::Malformed(detail) => InvokeError::Protocol {
            function,
            detail: format!("its answer is malformed: {detail}"),
        },
    }
}
