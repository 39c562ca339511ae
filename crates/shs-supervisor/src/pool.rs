//! The processes of one rpc-mode function, and the slots requests take on them.
//!
//! A process has `concurrency` slots. A request takes a free slot on a ready process; when
//! there is none it waits in line, and if the pool is below `instances` a new process is
//! started for it. A slot is handed from the request that frees it straight to the first in
//! line. A process that dies leaves the pool; the next request that finds no process starts
//! one.
//!
//! A delivery made on behalf of calls that are themselves waiting for it (an event published
//! during an invoke, delivered back to the same function) must not wait for their slots: if
//! every busy slot belongs to a call in the delivery's [`Causation`] and the pool cannot grow,
//! the delivery fails at once as a cycle instead of waiting for a timeout.

use std::collections::VecDeque;
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use shs_bus::Causation;
use shs_protocol::PROTOCOL_VERSION;
use shs_protocol::methods::{self, InitializeParams, InitializeResult};
use tokio::sync::oneshot;

use crate::Host;
use crate::error::{InvokeError, fmt_duration};
use crate::process::{CallError, Process};
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
    last_failure: Option<StartFailure>,
    closed: Option<&'static str>,
}

/// What `GET /functions` shows of a pool.
#[derive(Clone, Debug)]
pub struct PoolStatus {
    /// `starting`, `ready`, `idle` (no process, none needed yet) or `failed`.
    pub state: &'static str,
    /// Live processes.
    pub processes: usize,
    /// Why the last start failed, while no process runs.
    pub error: Option<String>,
}

/// The processes of one function.
pub(crate) struct Pool {
    spec: Arc<FunctionSpec>,
    host: Arc<Host>,
    me: Weak<Pool>,
    state: Mutex<State>,
}

impl Pool {
    pub(crate) fn new(spec: Arc<FunctionSpec>, host: Arc<Host>) -> Arc<Pool> {
        Arc::new_cyclic(|me| Pool {
            spec,
            host,
            me: me.clone(),
            state: Mutex::new(State::default()),
        })
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
            if st.closed.is_some() {
                return Ok(());
            }
            st.starting += 1;
        }
        self.arc().start_one(Causation::root()).await
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
                // waits for its start too.
                let cause = cause.clone();
                self.host.handle.spawn(async move {
                    let _ = pool.start_one(cause).await;
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

    /// Whether `waiting` requests call for one more process: the pool is below `instances`,
    /// and the `coming` processes (starting, and not blocked on these requests) will not have a
    /// slot for each of them.
    fn should_grow(&self, st: &State, waiting: usize, coming: usize) -> bool {
        st.procs.len() + st.starting < self.spec.instances
            && waiting > coming * self.spec.concurrency
    }

    fn gone(&self, what: &'static str) -> InvokeError {
        InvokeError::Gone {
            function: self.spec.name.clone(),
            what,
        }
    }

    /// A free slot on a ready process, least busy first.
    fn take_free(&self, st: &mut State) -> Option<Slot> {
        let concurrency = self.spec.concurrency;
        let entry = st
            .procs
            .iter_mut()
            .filter(|e| e.busy < concurrency && !e.process.is_doomed())
            .min_by_key(|e| e.busy)?;
        entry.busy += 1;
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
                }
            }
        }
    }

    fn release(&self, process_id: u64) {
        let mut st = self.state.lock();
        if let Some(entry) = st.procs.iter_mut().find(|e| e.process.id() == process_id) {
            entry.busy = entry.busy.saturating_sub(1);
        }
        self.dispatch(&mut st);
    }

    /// Spawns and initializes one process (the caller has counted it in `starting`).
    async fn start_one(self: Arc<Self>, cause: Causation) -> Result<(), StartFailure> {
        let result = self.spawn_and_initialize(cause).await;
        let process = match result {
            Ok(process) => process,
            Err(failure) => {
                tracing::warn!(
                    function = %self.spec.name,
                    stderr = ?failure.stderr,
                    "process could not start: {}",
                    failure.reason
                );
                let mut st = self.state.lock();
                st.starting -= 1;
                st.last_failure = Some(failure.clone());
                if st.procs.is_empty() && st.starting == 0 {
                    for waiter in st.waiters.drain(..) {
                        let _ = waiter.tx.send(Err(InvokeError::StartFailed {
                            function: self.spec.name.clone(),
                            reason: failure.reason.clone(),
                            stderr: failure.stderr.clone(),
                        }));
                    }
                }
                return Err(failure);
            }
        };
        let closed = {
            let mut st = self.state.lock();
            st.starting -= 1;
            if st.closed.is_none() {
                st.procs.push(Entry {
                    process: process.clone(),
                    busy: 0,
                });
                st.last_failure = None;
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

    async fn spawn_and_initialize(&self, cause: Causation) -> Result<Arc<Process>, StartFailure> {
        let spec = &self.spec;
        let process = Process::spawn(spec, &self.host).map_err(|reason| StartFailure {
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
                Arc::from("initialize"),
                None,
                spec.timeout,
            )
            .await;
        match outcome {
            Ok(result) => {
                // Any answer marks the process ready; an object may carry subscriptions.
                if let Ok(init) = serde_json::from_str::<InitializeResult>(result.get()) {
                    for pattern in init.subscribe {
                        if let Err(e) = self.host.bus.subscribe(&spec.name, &pattern) {
                            tracing::warn!(function = %spec.name, "ignoring a subscription from initialize: {e}");
                        }
                    }
                }
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
                        fmt_duration(spec.timeout)
                    ),
                    stderr: process.stderr_tail(),
                });
            }
        }
        tracing::info!(function = %spec.name, pid = process.pid(), "process ready");
        Ok(process)
    }

    fn remove(&self, process_id: u64) {
        let mut st = self.state.lock();
        st.procs.retain(|e| e.process.id() != process_id);
        if st.closed.is_some() {
            return;
        }
        // Whoever waits now needs a process that is not the dead one.
        st.waiters.retain(|w| !w.tx.is_closed());
        if self.should_grow(&st, st.waiters.len(), st.starting) {
            st.starting += 1;
            let pool = self.arc();
            self.host.handle.spawn(async move {
                let _ = pool.start_one(Causation::root()).await;
            });
        }
    }

    /// Shows the pool's state.
    pub(crate) fn status(&self) -> PoolStatus {
        let st = self.state.lock();
        let live = st.procs.iter().filter(|e| !e.process.is_doomed()).count();
        let (state, error) = if live > 0 {
            ("ready", None)
        } else if st.starting > 0 {
            ("starting", None)
        } else if let Some(failure) = &st.last_failure {
            ("failed", Some(failure.reason.clone()))
        } else {
            ("idle", None)
        };
        PoolStatus {
            state,
            processes: live,
            error,
        }
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
