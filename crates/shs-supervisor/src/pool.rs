//! The processes of one rpc-mode function, and the slots requests take on them.
//!
//! A process has `concurrency` slots. A request takes a free slot on a ready process; when
//! there is none it waits in line, and if the pool is below `instances` a new process is
//! started for it. A slot is handed from the request that frees it straight to the first in
//! line. A process that dies leaves the pool; the next request that finds no process starts
//! one.
//!
//! Between requests, a keeper task tends the pool: processes unused for `idle_timeout` are
//! stopped down to `min_instances` (scale to zero when that is 0; subscriptions stay in force,
//! and the next request or event starts a process again: a cold start), and the pool is topped
//! up to `min_instances`. A function that keeps dying at start is retried with exponential
//! backoff (capped); while it backs off, its requests are refused at once with the reason.
//!
//! A delivery made on behalf of calls that are themselves waiting for it (an event published
//! during an invoke, delivered back to the same function) must not wait for their slots: if
//! every busy slot belongs to a call in the delivery's [`Causation`] and the pool cannot grow,
//! the delivery fails at once as a cycle instead of waiting for a timeout.

use std::collections::VecDeque;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;
use shs_bus::Causation;
use shs_protocol::PROTOCOL_VERSION;
use shs_protocol::methods::{self, InitializeParams, InitializeResult};
use tokio::sync::oneshot;

use crate::Host;
use crate::error::{InvokeError, fmt_duration};
use crate::logs::LogRing;
use crate::process::{CallError, CallMeta, Process};
use crate::spec::FunctionSpec;

/// Why a process could not be started.
#[derive(Clone, Debug)]
pub(crate) struct StartFailure {
    pub(crate) reason: String,
    pub(crate) stderr: Vec<String>,
}

/// A taken slot on one process. Dropping it frees the slot.
pub(crate) struct Slot {
    pool: Arc<Pool>,
    process: Arc<Process>,
    armed: bool,
}

impl Slot {
    pub(crate) fn process(&self) -> &Arc<Process> {
        &self.process
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if self.armed {
            self.pool.release(self.process.id());
        }
    }
}

struct Entry {
    process: Arc<Process>,
    busy: usize,
    /// When it last became free of requests (or ready).
    idle_since: Instant,
    /// When it answered initialize.
    ready_at: Instant,
    /// Whether it has answered a request: then it started fine, whatever happens later.
    served: bool,
    /// Whether it has been given a request: a death from then on is the request's doing, not
    /// a failure to start.
    took: bool,
    /// Requests and deliveries it has been given.
    requests: u64,
}

/// First wait after a failed start; it doubles with each failure in a row.
const BACKOFF_FIRST: Duration = Duration::from_millis(500);
/// Longest wait between two tries.
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A process that dies sooner than this after it started, without having served a request,
/// counts as a failed start.
const STABLE_AFTER: Duration = Duration::from_secs(10);

fn backoff(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    BACKOFF_FIRST
        .saturating_mul(1 << doublings)
        .min(BACKOFF_MAX)
}

struct Waiter {
    tx: oneshot::Sender<Result<Slot, InvokeError>>,
}

#[derive(Default)]
struct State {
    procs: Vec<Entry>,
    starting: usize,
    /// The processes among `starting` that have been spawned and are in `initialize`.
    initializing: Vec<Arc<Process>>,
    waiters: VecDeque<Waiter>,
    closed: Option<&'static str>,
    /// Failed starts in a row.
    failures: u32,
    /// The last failed start.
    last_failure: Option<StartFailure>,
    /// No start before this, after a failure.
    next_try: Option<Instant>,
    cold_starts: u64,
    cold_start_total: Duration,
    last_cold_start: Option<Duration>,
}

/// What `GET /functions` shows of a pool.
#[derive(Clone, Debug)]
pub struct PoolStatus {
    /// `ready` (a process runs), `starting`, `backing_off` (the last start failed; the next
    /// try is at `next_try`), `failed` (the last start failed; the next request tries again)
    /// or `idle` (no process, none needed).
    pub state: &'static str,
    /// Live processes.
    pub processes: usize,
    /// Processes starting (spawned or about to be, not yet ready).
    pub starting: usize,
    /// Requests waiting for a free process.
    pub queued: usize,
    /// Why the last start failed, while no process runs.
    pub error: Option<String>,
    /// The last lines of stderr of the last failed start.
    pub stderr: Vec<String>,
    /// Failed starts in a row.
    pub failures: u32,
    /// When the next start will be tried, while backing off.
    pub next_try: Option<SystemTime>,
    /// Starts made because a request or event found no process.
    pub cold_starts: u64,
    /// Total time those starts took, spawn to ready.
    pub cold_start_total: Duration,
    /// How long the last one took.
    pub last_cold_start: Option<Duration>,
}

/// The processes of one function.
pub(crate) struct Pool {
    spec: Arc<FunctionSpec>,
    host: Arc<Host>,
    logs: Arc<LogRing>,
    me: Weak<Pool>,
    state: Mutex<State>,
}

impl Pool {
    pub(crate) fn new(spec: Arc<FunctionSpec>, host: Arc<Host>, logs: Arc<LogRing>) -> Arc<Pool> {
        let pool = Arc::new_cyclic(|me| Pool {
            spec,
            host,
            logs,
            me: me.clone(),
            state: Mutex::new(State::default()),
        });
        pool.host.handle.spawn(keep(Arc::downgrade(&pool)));
        pool
    }

    fn arc(&self) -> Arc<Pool> {
        // `self` is always reached through an Arc made by `new`.
        self.me
            .upgrade()
            .unwrap_or_else(|| unreachable!("a pool is only used while it is alive"))
    }

    pub(crate) fn spec(&self) -> &Arc<FunctionSpec> {
        &self.spec
    }

    /// Starts one process now (a function's first, at deployment); resolves once it has
    /// answered initialize or failed.
    pub(crate) async fn start_now(&self) -> Result<(), StartFailure> {
        {
            let mut st = self.state.lock();
            // Closed, or already as many processes as allowed (the keeper got there first).
            if st.closed.is_some() || st.procs.len() + st.starting >= self.spec.instances {
                return Ok(());
            }
            st.starting += 1;
        }
        self.arc().start_one(Causation::root(), false, None).await
    }

    /// Takes a slot, starting a process or waiting in line as needed.
    pub(crate) async fn acquire(&self, cause: &Causation) -> Result<Slot, InvokeError> {
        let rx = {
            let mut st = self.state.lock();
            if let Some(what) = st.closed {
                return Err(self.gone(what));
            }
            if let Some(slot) = self.take_free(&mut st) {
                return Ok(slot);
            }
            st.waiters.retain(|w| !w.tx.is_closed());
            let live = st.procs.iter().filter(|e| !e.process.is_doomed()).count();
            if live == 0
                && st.starting == 0
                && let Some(error) = self.backing_off(&st)
            {
                return Err(error);
            }
            if st.waiters.len() >= self.spec.queue
                && st.procs.len() + st.starting >= self.spec.instances
            {
                return Err(InvokeError::AtCapacity {
                    function: self.spec.name.clone(),
                    detail: format!(
                        "all {} processes are busy and {} requests are waiting (instances = {}, concurrency = {}, queue = {})",
                        st.procs.len() + st.starting,
                        st.waiters.len(),
                        self.spec.instances,
                        self.spec.concurrency,
                        self.spec.queue
                    ),
                    retry_after: Duration::from_secs(1),
                });
            }
            let coming = coming(&st, cause);
            if self.should_grow(&st, st.waiters.len() + 1, coming) {
                st.starting += 1;
                let pool = self.arc();
                // The new process starts on behalf of this request: what waits for the request
                // waits for its start too. With no process at all, it is a cold start.
                let cause = cause.clone();
                let cold = live == 0;
                // Handled on this request's thread, if it is an attached one.
                let thread = self.host.io.current();
                self.host.handle.spawn(async move {
                    let _ = pool.start_one(cause, cold, thread).await;
                });
            } else if coming == 0 && waits_on_itself(&st, cause) {
                return Err(InvokeError::Cycle {
                    function: self.spec.name.clone(),
                    detail: format!(
                        "each of its {} processes is busy with a request that waits for this event \
                         (raise `instances` to let such chains run)",
                        st.procs.len()
                    ),
                });
            }
            let (tx, rx) = oneshot::channel();
            st.waiters.push_back(Waiter { tx });
            rx
        };
        let mut rx = rx;
        loop {
            match tokio::time::timeout(self.spec.timeout, &mut rx).await {
                Ok(Ok(result)) => return result,
                Ok(Err(_)) => return Err(self.gone("removed")),
                Err(_) => {
                    // With no process yet and one starting, the start's own outcome (ready, or
                    // a failure handed to every waiter) is the answer: wait for it.
                    let st = self.state.lock();
                    if st.starting > 0 && st.procs.iter().all(|e| e.process.is_doomed()) {
                        continue;
                    }
                    break;
                }
            }
        }
        Err(InvokeError::AtCapacity {
            function: self.spec.name.clone(),
            detail: format!(
                "no process was free within {} (instances = {}, concurrency = {})",
                fmt_duration(self.spec.timeout),
                self.spec.instances,
                self.spec.concurrency
            ),
            retry_after: Duration::from_secs(1),
        })
    }

    /// Whether `waiting` requests call for one more process: the pool is not backing off after
    /// a failed start, it is below `instances`, and the `coming` processes (starting, and not blocked on these requests) will not have a
    /// slot for each of them.
    fn should_grow(&self, st: &State, waiting: usize, coming: usize) -> bool {
        let backing_off = st.next_try.is_some_and(|t| t > Instant::now());
        !backing_off
            && st.procs.len() + st.starting < self.spec.instances
            && waiting > coming * self.spec.concurrency
    }

    /// The error for a request that comes while the pool waits to try a start again.
    fn backing_off(&self, st: &State) -> Option<InvokeError> {
        let next_try = st.next_try?;
        let now = Instant::now();
        if next_try <= now {
            return None;
        }
        let failure = st.last_failure.clone().unwrap_or(StartFailure {
            reason: "its last process died soon after it started".to_owned(),
            stderr: Vec::new(),
        });
        Some(InvokeError::BackingOff {
            function: self.spec.name.clone(),
            failures: st.failures,
            reason: failure.reason,
            stderr: failure.stderr,
            retry_in: next_try - now,
        })
    }

    fn gone(&self, what: &'static str) -> InvokeError {
        InvokeError::Gone {
            function: self.spec.name.clone(),
            what,
        }
    }

    /// A free slot on a ready process: least busy first, but one handled on the caller's
    /// thread unless it is half its concurrency busier than another.
    fn take_free(&self, st: &mut State) -> Option<Slot> {
        let concurrency = self.spec.concurrency;
        let here = self.host.io.current();
        let elsewhere = concurrency / 2;
        let entry = st
            .procs
            .iter_mut()
            .filter(|e| e.busy < concurrency && !e.process.is_doomed())
            .min_by_key(|e| {
                let away = here.is_none() || e.process.io_thread() != here;
                e.busy + if away { elsewhere } else { 0 }
            })?;
        entry.busy += 1;
        entry.took = true;
        entry.requests += 1;
        Some(Slot {
            pool: self.arc(),
            process: entry.process.clone(),
            armed: true,
        })
    }

    /// Hands free slots to those waiting in line.
    fn dispatch(&self, st: &mut State) {
        while let Some(front) = st.waiters.front() {
            if front.tx.is_closed() {
                st.waiters.pop_front();
                continue;
            }
            let Some(slot) = self.take_free(st) else {
                break;
            };
            let Some(waiter) = st.waiters.pop_front() else {
                break;
            };
            if let Err(Ok(mut slot)) = waiter.tx.send(Ok(slot)) {
                // The waiter left just now: take the slot back here, under the lock, rather
                // than through its Drop.
                slot.armed = false;
                if let Some(e) = st
                    .procs
                    .iter_mut()
                    .find(|e| e.process.id() == slot.process.id())
                {
                    e.busy -= 1;
                    e.requests -= 1;
                }
            }
        }
    }

    fn release(&self, process_id: u64) {
        let mut st = self.state.lock();
        let mut proved = false;
        if let Some(entry) = st.procs.iter_mut().find(|e| e.process.id() == process_id) {
            entry.busy = entry.busy.saturating_sub(1);
            // A slot freed on a live process means an answer: the function starts fine.
            if !entry.served && !entry.process.is_doomed() {
                entry.served = true;
                proved = true;
            }
            if entry.busy == 0 {
                entry.idle_since = Instant::now();
            }
        }
        if proved {
            st.failures = 0;
        }
        self.dispatch(&mut st);
    }

    /// Spawns and initializes one process (the caller has counted it in `starting`).
    async fn start_one(
        self: Arc<Self>,
        cause: Causation,
        cold: bool,
        thread: Option<usize>,
    ) -> Result<(), StartFailure> {
        let began = Instant::now();
        let result = self.spawn_and_initialize(cause, thread).await;
        let process = match result {
            Ok(process) => process,
            Err(failure) => {
                let mut st = self.state.lock();
                st.starting -= 1;
                self.failed_start(&mut st, failure.clone());
                return Err(failure);
            }
        };
        let closed = {
            let mut st = self.state.lock();
            st.starting -= 1;
            if st.closed.is_none() {
                let now = Instant::now();
                st.procs.push(Entry {
                    process: process.clone(),
                    busy: 0,
                    idle_since: now,
                    ready_at: now,
                    served: false,
                    took: false,
                    requests: 0,
                });
                st.last_failure = None;
                st.next_try = None;
                if cold {
                    let took = now - began;
                    st.cold_starts += 1;
                    st.cold_start_total += took;
                    st.last_cold_start = Some(took);
                    tracing::info!(function = %self.spec.name, took_ms = took.as_secs_f64() * 1e3, "cold start");
                    metrics::counter!("shs_cold_starts_total", "function" => self.spec.name.clone()).increment(1);
                    metrics::histogram!("shs_cold_start_duration_seconds", "function" => self.spec.name.clone())
                        .record(took.as_secs_f64());
                }
                self.dispatch(&mut st);
            }
            st.closed.is_some()
        };
        if closed {
            process
                .stop(self.host.config.kill_grace, "the function was removed")
                .await;
            return Ok(());
        }
        let pool = self.clone();
        self.host.handle.spawn(async move {
            process.wait_dead().await;
            pool.remove(process.id());
        });
        Ok(())
    }

    async fn spawn_and_initialize(
        &self,
        cause: Causation,
        thread: Option<usize>,
    ) -> Result<Arc<Process>, StartFailure> {
        let spec = &self.spec;
        self.host.io.settled().await;
        let home = {
            let st = self.state.lock();
            let on = |t: usize| {
                let procs = st.procs.iter().map(|e| &e.process);
                procs
                    .chain(&st.initializing)
                    .filter(|p| !p.is_doomed() && p.io_thread() == Some(t))
                    .count()
            };
            self.host.io.home(thread, on, &self.host.handle)
        };
        let process =
            Process::spawn(spec, &self.host, &self.logs, home).map_err(|reason| StartFailure {
                reason,
                stderr: Vec::new(),
            })?;
        self.state.lock().initializing.push(process.clone());
        let result = self.initialize(process.clone(), cause).await;
        self.state
            .lock()
            .initializing
            .retain(|p| p.id() != process.id());
        result
    }

    async fn initialize(
        &self,
        process: Arc<Process>,
        cause: Causation,
    ) -> Result<Arc<Process>, StartFailure> {
        let spec = &self.spec;
        let params = InitializeParams {
            function: spec.name.clone(),
            protocol: PROTOCOL_VERSION,
        };
        let outcome = process
            .call(
                methods::INITIALIZE,
                &params,
                cause,
                CallMeta::new("initialize", None),
                None,
                spec.start_timeout,
            )
            .await;
        match outcome {
            Ok(result) => {
                // Any answer marks the process ready; an object may carry subscriptions.
                match serde_json::from_str::<InitializeResult>(result.get()) {
                    Ok(init) => {
                        for pattern in init.subscribe {
                            if let Err(e) = self.host.bus.subscribe(&spec.name, &pattern) {
                                tracing::warn!(function = %spec.name, "ignoring a subscription from initialize: {e}");
                            }
                        }
                    }
                    Err(e) if result.get().contains("\"subscribe\"") => {
                        tracing::warn!(function = %spec.name, "ignoring `subscribe` in the answer to initialize: {e} (it must be an array of strings)");
                    }
                    Err(_) => {}
                }
            }
            Err(CallError::Malformed(e)) => {
                tracing::warn!(function = %spec.name, pid = process.pid(), "the answer to initialize is malformed (the process is used anyway): {e}");
            }
            Err(CallError::Rpc(e)) => {
                tracing::warn!(function = %spec.name, pid = process.pid(), "initialize answered with an error (the process is used anyway): {e}");
            }
            Err(CallError::Died(death)) => {
                return Err(StartFailure {
                    reason: format!("its process {} before answering initialize", death.detail),
                    stderr: death.stderr,
                });
            }
            Err(CallError::Timeout) => {
                process.wait_dead().await;
                return Err(StartFailure {
                    reason: format!(
                        "its process did not answer initialize within {} and was killed",
                        fmt_duration(spec.start_timeout)
                    ),
                    stderr: process.stderr_tail(),
                });
            }
        }
        tracing::info!(function = %spec.name, pid = process.pid(), "process ready");
        Ok(process)
    }

    /// Counts a failed start, schedules the next try, and fails those waiting if no process
    /// is left to serve them.
    fn failed_start(&self, st: &mut State, failure: StartFailure) {
        st.failures += 1;
        let wait = backoff(st.failures);
        st.next_try = Some(Instant::now() + wait);
        tracing::warn!(
            function = %self.spec.name,
            failures = st.failures,
            retry_in_ms = wait.as_millis() as u64,
            stderr = ?failure.stderr,
            "process could not start: {}",
            failure.reason
        );
        self.logs.push(
            0,
            None,
            "shs",
            &format!(
                "could not start: {} (next try in {})",
                failure.reason,
                fmt_duration(wait)
            ),
        );
        st.last_failure = Some(failure.clone());
        let live = st.procs.iter().filter(|e| !e.process.is_doomed()).count();
        if live == 0 && st.starting == 0 {
            for waiter in st.waiters.drain(..) {
                let _ = waiter.tx.send(Err(InvokeError::StartFailed {
                    function: self.spec.name.clone(),
                    reason: failure.reason.clone(),
                    stderr: failure.stderr.clone(),
                }));
            }
        }
    }

    /// Takes a dead process out of the pool.
    fn remove(&self, process_id: u64) {
        let mut st = self.state.lock();
        let Some(at) = st.procs.iter().position(|e| e.process.id() == process_id) else {
            return;
        };
        let entry = st.procs.remove(at);
        if st.closed.is_some() {
            return;
        }
        if !entry.took && entry.ready_at.elapsed() < STABLE_AFTER {
            // It answered initialize, then died before it was given anything to do: it keeps
            // dying at start.
            let death = entry.process.death();
            self.failed_start(
                &mut st,
                StartFailure {
                    reason: format!(
                        "its process {} soon after answering initialize",
                        death.as_ref().map_or("died", |d| d.detail.as_str())
                    ),
                    stderr: death.map(|d| d.stderr).unwrap_or_default(),
                },
            );
            return;
        }
        // Whoever waits now needs a process that is not the dead one.
        st.waiters.retain(|w| !w.tx.is_closed());
        if self.should_grow(&st, st.waiters.len(), st.starting) {
            st.starting += 1;
            let pool = self.arc();
            self.host.handle.spawn(async move {
                let _ = pool.start_one(Causation::root(), false, None).await;
            });
        }
    }

    /// The processes kept even when idle: `min_instances`, or 1 for a function with
    /// subscriptions and 0 for one without.
    fn min_instances(&self) -> usize {
        self.spec.min_instances.unwrap_or_else(|| {
            usize::from(!self.host.bus.subscriptions_of(&self.spec.name).is_empty())
        })
    }

    /// One round of the keeper: stops processes idle for too long (down to `min_instances`)
    /// and starts processes up to `min_instances` (unless backing off). Returns false once the
    /// pool is closed.
    fn tend(&self) -> bool {
        let min = self.min_instances();
        let mut idle = Vec::new();
        {
            let mut st = self.state.lock();
            if st.closed.is_some() {
                return false;
            }
            let live = st.procs.iter().filter(|e| !e.process.is_doomed()).count();
            if let Some(idle_timeout) = self.spec.idle_timeout {
                let mut surplus = live.saturating_sub(min);
                st.procs.retain(|e| {
                    let stop = surplus > 0
                        && e.busy == 0
                        && !e.process.is_doomed()
                        && e.idle_since.elapsed() >= idle_timeout;
                    if stop {
                        surplus -= 1;
                        idle.push(e.process.clone());
                    }
                    !stop
                });
            }
            let live = live - idle.len();
            let may_try = st.next_try.is_none_or(|t| t <= Instant::now());
            if live + st.starting < min && may_try {
                st.starting += 1;
                let pool = self.arc();
                self.host.handle.spawn(async move {
                    let _ = pool.start_one(Causation::root(), false, None).await;
                });
            }
        }
        if !idle.is_empty() {
            let grace = self.host.config.kill_grace;
            tracing::info!(function = %self.spec.name, stopping = idle.len(), min_instances = min, "scaling down idle processes");
            for process in idle {
                self.host.handle.spawn(async move {
                    process.stop(grace, "it was idle").await;
                });
            }
        }
        true
    }

    /// Shows the pool's state.
    pub(crate) fn status(&self) -> PoolStatus {
        let st = self.state.lock();
        let live = st.procs.iter().filter(|e| !e.process.is_doomed()).count();
        let now = Instant::now();
        let backing_off = st.next_try.filter(|t| *t > now);
        let state = if live > 0 {
            "ready"
        } else if st.starting > 0 {
            "starting"
        } else if backing_off.is_some() {
            "backing_off"
        } else if st.last_failure.is_some() {
            "failed"
        } else {
            "idle"
        };
        let failure = if live == 0 {
            st.last_failure.clone()
        } else {
            None
        };
        PoolStatus {
            state,
            processes: live,
            starting: st.starting,
            queued: st.waiters.iter().filter(|w| !w.tx.is_closed()).count(),
            error: failure.as_ref().map(|f| f.reason.clone()),
            stderr: failure.map(|f| f.stderr).unwrap_or_default(),
            failures: st.failures,
            next_try: backing_off.map(|t| SystemTime::now() + (t - now)),
            cold_starts: st.cold_starts,
            cold_start_total: st.cold_start_total,
            last_cold_start: st.last_cold_start,
        }
    }

    /// Its live processes: pid, since when, requests given and in flight.
    pub(crate) fn processes(&self) -> Vec<crate::stats::ProcessInfo> {
        let st = self.state.lock();
        let now = Instant::now();
        st.procs
            .iter()
            .filter(|e| !e.process.is_doomed())
            .map(|e| {
                let uptime = now.saturating_duration_since(e.ready_at);
                crate::stats::ProcessInfo {
                    pid: e.process.pid(),
                    started: humantime::format_rfc3339_millis(
                        SystemTime::now()
                            .checked_sub(uptime)
                            .unwrap_or(SystemTime::UNIX_EPOCH),
                    )
                    .to_string(),
                    uptime_seconds: (uptime.as_secs_f64() * 10.0).round() / 10.0,
                    requests: e.requests,
                    in_flight: e.busy,
                }
            })
            .collect()
    }

    /// Takes no more requests, lets those in flight finish for up to `drain`, then stops every
    /// process (stdin closed, then SIGTERM and SIGKILL to its group).
    pub(crate) async fn close(&self, what: &'static str, drain: Duration) {
        let procs: Vec<Arc<Process>> = {
            let mut st = self.state.lock();
            st.closed = Some(what);
            for waiter in st.waiters.drain(..) {
                let _ = waiter.tx.send(Err(self.gone(what)));
            }
            st.procs.iter().map(|e| e.process.clone()).collect()
        };
        let grace = self.host.config.kill_grace;
        let reason = format!("the function was {what}");
        futures::future::join_all(procs.iter().map(|p| async {
            let deadline = tokio::time::Instant::now() + drain;
            while !p.calls_in_flight().is_empty() && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            p.stop(grace, &reason).await;
        }))
        .await;
    }
}

/// Tends the pool until it is closed or gone: idle processes are stopped, `min_instances` kept.
async fn keep(pool: Weak<Pool>) {
    let tick = match pool.upgrade().and_then(|p| p.spec.idle_timeout) {
        Some(idle) => (idle / 4).clamp(Duration::from_millis(100), Duration::from_secs(1)),
        None => Duration::from_secs(1),
    };
    // The first round comes after one tick: the deployment starts the first process itself.
    let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + tick, tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        match pool.upgrade() {
            Some(pool) if pool.tend() => {}
            _ => return,
        }
    }
}

/// Whether every busy slot of the pool belongs to a call in `cause.waiting()`: waiting for a
/// slot would then wait for ourselves.
fn waits_on_itself(st: &State, cause: &Causation) -> bool {
    let waiting = cause.waiting();
    !waiting.is_empty()
        && st.procs.iter().all(|e| {
            let calls = e.process.calls_in_flight();
            calls.len() == e.busy && calls.iter().all(|c| waiting.contains(c))
        })
}

/// How many of the starting processes may serve a request made in `cause`: not those whose
/// `initialize` is itself waiting for it (a function publishing, during its start-up, an event
/// it subscribes to).
fn coming(st: &State, cause: &Causation) -> usize {
    let waiting = cause.waiting();
    let blocked = st
        .initializing
        .iter()
        .filter(|p| {
            let calls = p.calls_in_flight();
            !calls.is_empty() && calls.iter().all(|c| waiting.contains(c))
        })
        .count();
    st.starting.saturating_sub(blocked)
}
