//! The registry of functions and what can be done with them.

mod detail;
pub use detail::{FunctionDetail, FunctionSummary};

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use parking_lot::{Mutex, RwLock};
use serde_json::value::RawValue;
use shs_bus::{Bus, Causation, Deliver, DeliveryError, RetryPolicy, SharedEvent};
use shs_protocol::codec::line_safe;
use shs_protocol::methods::{self, Context, EventParams, InvokeParams};
use tokio::sync::watch;

use crate::error::{ErrorKind, InvokeError, SpecError, StartError};
use crate::exec::ExecRunner;
use crate::logs::{LogLine, LogRing};
use crate::pool::{Pool, PoolStatus};
use crate::process::{CallError, CallMeta};
use crate::spec::{self, Defaults, Found, FunctionSpec, Mode};
use crate::stats::{FunctionStats, Stats};
use crate::watch::{FolderWatch, follow};
use crate::{Config, Host};

/// What a function returned.
#[derive(Debug)]
pub enum Output {
    /// An rpc function's `result`, as it wrote it.
    Json(Box<RawValue>),
    /// What an exec function wrote to stdout.
    Raw(Vec<u8>),
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
}

enum Kind {
    Rpc(Arc<Pool>),
    Exec(ExecRunner),
    Broken(String),
}

struct Function {
    found: Found,
    kind: Kind,
    /// Its recent log lines (kept across redeployments).
    logs: Arc<LogRing>,
    /// What it has done (kept across redeployments).
    stats: Arc<Stats>,
}

impl Function {
    fn spec(&self) -> Option<&FunctionSpec> {
        match &self.found {
            Found::Function(spec) => Some(spec),
            Found::Broken { .. } => None,
        }
    }

    async fn retire(&self, what: &'static str, drain: Duration) {
        match &self.kind {
            Kind::Rpc(pool) => pool.close(what, drain).await,
            Kind::Exec(runner) => runner.close(drain).await,
            Kind::Broken(_) => {}
        }
    }
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

struct Deliverer(Weak<Inner>);

impl Deliver for Deliverer {
    fn deliver(
        &self,
        function: Arc<str>,
        event: Arc<SharedEvent>,
        cause: Causation,
    ) -> BoxFuture<'static, Result<(), DeliveryError>> {
        let inner = self.0.upgrade();
        Box::pin(async move {
            let Some(inner) = inner.filter(|i| !i.stopping.load(Ordering::Acquire)) else {
                return Err(DeliveryError::retryable(
                    503,
                    "the supervisor is shutting down",
                ));
            };
            Supervisor { inner }
                .deliver(&function, &event, cause)
                .await
                .map_err(|e| delivery_error(&e))
        })
    }

    fn retry_policy(&self, function: &str) -> RetryPolicy {
        let Some(inner) = self.0.upgrade() else {
            return RetryPolicy::default();
        };
        let registry = inner.registry.read();
        let defaults = &inner.defaults;
        match registry.get(function).and_then(|f| f.spec()) {
            Some(spec) => RetryPolicy {
                max_attempts: spec.max_attempts,
                backoff: spec.retry_backoff,
                ordered: spec.ordered,
                timeout: spec.timeout,
                max_in_flight: match spec.mode {
                    Mode::Rpc => spec.instances * spec.concurrency,
                    Mode::Exec => spec.instances,
                },
                ..RetryPolicy::default()
            },
            None => RetryPolicy {
                max_attempts: defaults.max_attempts,
                backoff: defaults.retry_backoff,
                ..RetryPolicy::default()
            },
        }
    }
}

/// How a failed delivery is reported to the bus: the status `/run` would answer, and whether
/// a retry may help. A function that answers an error with `"data": {"retry": false}` says it
/// will not.
fn delivery_error(error: &InvokeError) -> DeliveryError {
    let status = match error.kind() {
        ErrorKind::NotFound => 404,
        ErrorKind::FunctionFailed => 500,
        ErrorKind::BadGateway => 502,
        ErrorKind::Unavailable => 503,
        ErrorKind::Timeout => 504,
    };
    let retryable = match error {
        InvokeError::NotFound { .. } => false,
        InvokeError::Function { error, .. } => !error
            .data
            .as_ref()
            .and_then(|d| d.get("retry"))
            .is_some_and(|r| r == &serde_json::Value::Bool(false)),
        _ => true,
    };
    DeliveryError {
        status,
        message: error.to_string(),
        retryable,
    }
}

impl Supervisor {
    /// Reads the functions folder, deploys what it finds (rpc functions start at once, in the
    /// background), and follows the folder for changes if `config.watch` is set. Must be called
    /// inside a Tokio runtime, which then runs every process task.
    pub async fn start(mut config: Config, bus: Arc<dyn Bus>) -> Result<Supervisor, StartError> {
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
        let defaults = Defaults {
            timeout: config.timeout,
            instances: config.instances.max(1),
            queue: config.queue,
            idle_timeout: config.idle_timeout,
            limits: config.limits,
            max_attempts: config.max_attempts,
            retry_backoff: config.retry_backoff,
        };
        let watch_folder = config.watch;
        let io = crate::io::IoThreads::new(config.io_threads);
        let host = Arc::new(Host {
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
        supervisor.reconcile(found, true).await;
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
    pub fn bus(&self) -> &Arc<dyn Bus> {
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

    /// Reads the functions folder again and applies what changed.
    pub async fn rescan(&self) {
        let dir = &self.inner.host.config.functions_dir;
        match spec::scan(dir, &self.inner.defaults) {
            Ok(found) => self.reconcile(found, false).await,
            Err(e) => tracing::warn!("cannot rescan the functions folder: {e}"),
        }
    }

    async fn reconcile(&self, mut found: BTreeMap<String, Found>, initial: bool) {
        let _one_at_a_time = self.inner.reconciling.lock().await;
        if self.inner.stopping.load(Ordering::Acquire) {
            return;
        }
        let bus = &self.inner.host.bus;
        let mut retired = Vec::new();
        let mut deployed = Vec::new();
        {
            let mut registry = self.inner.registry.write();
            let removed: Vec<String> = registry
                .keys()
                .filter(|name| !found.contains_key(*name))
                .cloned()
                .collect();
            for name in removed {
                if let Some(old) = registry.remove(&name) {
                    bus.remove_function(&name);
                    tracing::info!(function = %name, "function removed");
                    retired.push((old, "removed"));
                }
            }
            for (name, now) in std::mem::take(&mut found) {
                let old = registry.get(&name).cloned();
                if old.as_ref().is_some_and(|old| old.found.same_as(&now)) {
                    continue;
                }
                let old_subscriptions = old
                    .as_ref()
                    .and_then(|o| o.spec())
                    .map(|s| s.subscribe.clone());
                let logs = old.as_ref().map_or_else(Arc::default, |o| o.logs.clone());
                let stats = old
                    .as_ref()
                    .map_or_else(|| Arc::new(Stats::new(&name)), |o| o.stats.clone());
                let function = Arc::new(self.build(now, logs, stats));
                // Subscriptions from function.toml are in force before the process starts;
                // those a redeploy no longer lists are dropped.
                let new_subscriptions = function
                    .spec()
                    .map(|s| s.subscribe.clone())
                    .unwrap_or_default();
                for pattern in old_subscriptions.unwrap_or_default() {
                    if !new_subscriptions.contains(&pattern) {
                        bus.unsubscribe(&name, &pattern);
                    }
                }
                for pattern in &new_subscriptions {
                    if let Err(e) = bus.subscribe(&name, pattern) {
                        tracing::warn!(function = %name, "ignoring a subscription: {e}");
                    }
                }
                match (&old, &function.kind) {
                    (_, Kind::Broken(reason)) => {
                        tracing::error!(function = %name, "function cannot be run: {reason}");
                    }
                    (Some(_), _) => tracing::info!(function = %name, "function redeployed"),
                    (None, _) => tracing::info!(function = %name, "function deployed"),
                }
                bus.deployed(&name);
                registry.insert(name, function.clone());
                if let Some(old) = old {
                    retired.push((old, "redeployed"));
                }
                deployed.push(function);
            }
        }
        for (old, what) in retired {
            let drain = old
                .spec()
                .map_or(self.inner.defaults.timeout, |s| s.timeout);
            self.inner
                .host
                .handle
                .spawn(async move { old.retire(what, drain).await });
        }
        let to_start: Vec<Arc<Pool>> = deployed
            .iter()
            .filter_map(|f| match &f.kind {
                Kind::Rpc(pool) => Some(pool.clone()),
                _ => None,
            })
            .collect();
        if initial {
            self.inner.starting.store(to_start.len(), Ordering::Release);
            if to_start.is_empty() {
                self.inner.ready.send_replace(true);
            }
        }
        for pool in to_start {
            let inner = self.inner.clone();
            self.inner.host.handle.spawn(async move {
                let _ = pool.start_now().await;
                if initial && inner.starting.fetch_sub(1, Ordering::AcqRel) == 1 {
                    inner.ready.send_replace(true);
                    tracing::info!("ready: every function found at start-up has started");
                }
            });
        }
    }

    fn build(&self, found: Found, logs: Arc<LogRing>, stats: Arc<Stats>) -> Function {
        let host = &self.inner.host;
        let kind = match &found {
            Found::Function(spec) => {
                let spec = Arc::new((**spec).clone());
                match spec.mode {
                    Mode::Rpc => Kind::Rpc(Pool::new(spec, host.clone(), logs.clone())),
                    Mode::Exec => Kind::Exec(ExecRunner::new(spec, host.clone(), logs.clone())),
                }
            }
            Found::Broken { error, .. } => {
                logs.push(0, None, "shs", &format!("cannot be run: {error}"));
                Kind::Broken(error.to_string())
            }
        };
        Function {
            found,
            kind,
            logs,
            stats,
        }
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
        let function = self.lookup(name)?;
        let began = Instant::now();
        let result = self
            .run_invoke(&function, name, input, request_id, trace)
            .await;
        function
            .stats
            .record(false, began.elapsed(), result.as_ref().map(drop));
        result
    }

    async fn run_invoke(
        &self,
        function: &Function,
        name: &str,
        input: Box<RawValue>,
        request_id: &str,
        trace: Option<&str>,
    ) -> Result<Output, InvokeError> {
        match &function.kind {
            Kind::Rpc(pool) => {
                let cause = Causation::root();
                let slot = pool.acquire(&cause).await?;
                let process = slot.process().clone();
                let input = line_safe(input);
                let params = InvokeParams {
                    input: &*input,
                    context: Context {
                        request_id,
                        function: name,
                        traceparent: trace,
                    },
                };
                let timeout = pool.spec().timeout;
                process
                    .call(
                        methods::INVOKE,
                        &params,
                        cause,
                        CallMeta::new(request_id, trace),
                        Some(slot),
                        timeout,
                    )
                    .await
                    .map(Output::Json)
                    .map_err(|e| call_error(name, e, timeout))
            }
            Kind::Exec(runner) => runner
                .run(input.get().as_bytes(), request_id, trace)
                .await
                .map(Output::Raw),
            Kind::Broken(reason) => Err(InvokeError::Broken {
                function: name.to_owned(),
                reason: reason.clone(),
            }),
        }
    }

    /// Delivers one event to function `name`, in the causation the bus gives.
    async fn deliver(
        &self,
        name: &str,
        event: &SharedEvent,
        cause: Causation,
    ) -> Result<(), InvokeError> {
        let function = self.lookup(name)?;
        let began = Instant::now();
        let result = self.run_delivery(&function, name, event, cause).await;
        function
            .stats
            .record(true, began.elapsed(), result.as_ref().copied());
        result
    }

    async fn run_delivery(
        &self,
        function: &Function,
        name: &str,
        event: &SharedEvent,
        cause: Causation,
    ) -> Result<(), InvokeError> {
        let request_id = delivery_request_id();
        let trace = event.traceparent.as_deref();
        match &function.kind {
            Kind::Rpc(pool) => {
                let slot = pool.acquire(&cause).await?;
                let process = slot.process().clone();
                let params = EventParams {
                    event: event.json(),
                    context: Context {
                        request_id: request_id.as_str(),
                        function: name,
                        traceparent: trace,
                    },
                };
                let timeout = pool.spec().timeout;
                process
                    .call(
                        methods::EVENT,
                        &params,
                        cause,
                        CallMeta::new(&request_id, trace),
                        Some(slot),
                        timeout,
                    )
                    .await
                    .map(drop)
                    .map_err(|e| call_error(name, e, timeout))
            }
            Kind::Exec(runner) => {
                let mut input = event.json().get().as_bytes().to_vec();
                input.push(b'\n');
                runner.run(&input, &request_id, trace).await.map(drop)
            }
            Kind::Broken(reason) => Err(InvokeError::Broken {
                function: name.to_owned(),
                reason: reason.clone(),
            }),
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
        tracing::info!("every function process has stopped");
    }
}

/// A request id for an event delivery: unique per supervisor run, without asking the OS for
/// randomness each time.
fn delivery_request_id() -> String {
    static PREFIX: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let prefix = *PREFIX.get_or_init(|| uuid::Uuid::new_v4().as_u128() as u64);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix:016x}{n:016x}")
}

fn call_error(function: &str, error: CallError, timeout: Duration) -> InvokeError {
    let function = function.to_owned();
    match error {
        CallError::Rpc(error) => InvokeError::Function {
            function,
            error: Box::new(error),
        },
        CallError::Died(death) if death.protocol => InvokeError::Protocol {
            function,
            detail: death.detail,
        },
        CallError::Died(death) => InvokeError::Crashed {
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
