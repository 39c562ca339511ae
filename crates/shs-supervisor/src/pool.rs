//! The processes of one rpc-mode function, and the slots requests take on them.
//!
//! This module owns the slots: taking one ([`Pool::acquire`]), handing it on, the line of
//! requests waiting, growth on demand, the cycle check, and closing. Its child [`keeper`]
//! owns starting processes (spawn and `initialize`), counting failed starts and backing off,
//! taking dead processes out, and the keeper task that scales the pool between requests.
//!
//! A process has `concurrency` slots: `function.toml`'s, else what the process declared in its
//! answer to `initialize`, else 1; `instances` likewise ([`Sizing`]). A request takes a free slot on a ready process; when
//! there is none it waits in line, and if the pool is below `instances` a new process is
//! started for it. A slot is handed from the request that frees it straight to the first in
//! line, or to a request a little further down that waits on the thread that handles the
//! process's pipes (no request is passed more than a few times): its line goes down and its
//! answer comes back without waking another thread. A process that dies leaves the pool; the
//! next request that finds no process starts one.
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
use shs_bus::{Causation, Deployment};
use tokio::sync::oneshot;

use crate::Host;
use crate::error::{InvokeError, fmt_duration};
use crate::logs::LogRing;
use crate::process::{Declared, Process, StartFailure};
use crate::spec::{FunctionSpec, Source};

mod keeper;

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
    /// Its slots: the concurrency in force when it joined.
    concurrency: usize,
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

struct Waiter {
    tx: oneshot::Sender<Result<Slot, InvokeError>>,
    /// The attached thread the request waits on, if it is one.
    thread: Option<usize>,
    /// How many requests that came after it were handed a slot before it.
    passed: usize,
}

/// How far down the line [`Pool::dispatch`] looks for a request waiting on the thread that
/// handles the freed process's pipes.
const LOCAL_WINDOW: usize = 8;
/// How many times a waiting request may be passed by one that came later: the line is first
/// come, first served, give or take this many.
const MAX_PASSED: usize = 4;

struct State {
    procs: Vec<Entry>,
    /// The concurrency and instances in force.
    sizing: Sizing,
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

/// The `concurrency` and `instances` of a pool in force, where each comes from, and what
/// became of the last process's declaration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sizing {
    /// Requests in flight per process.
    pub concurrency: usize,
    /// `function.toml`, `declared` or `default`.
    pub concurrency_source: Source,
    /// Processes at most.
    pub instances: usize,
    /// `function.toml`, `declared` or `default`.
    pub instances_source: Source,
    /// A declaration `function.toml` overrode, one sentence each.
    pub notes: Vec<String>,
    /// A declaration refused (out of bounds, not a whole number), one sentence each.
    pub errors: Vec<String>,
}

impl Sizing {
    fn of(spec: &FunctionSpec) -> Sizing {
        Sizing {
            concurrency: spec.concurrency,
            concurrency_source: spec.concurrency_source,
            instances: spec.instances,
            instances_source: spec.instances_source,
            notes: Vec::new(),
            errors: Vec::new(),
        }
    }

    /// Applies what a process that just started declared; returns the concurrency that
    /// process gets. `function.toml` wins; a process that declares nothing (or garbage)
    /// gets the default.
    fn apply(&mut self, spec: &FunctionSpec, declared: &Declared) -> usize {
        let mut notes = Vec::new();
        let mut pick = |key: &str, set: usize, source: Source, declared: Option<usize>| match (
            source, declared,
        ) {
            (Source::Manifest, Some(n)) => {
                if n != set {
                    notes.push(format!(
                        "the function declared `{key}` {n}; function.toml's {set} is in force"
                    ));
                }
                (set, Source::Manifest)
            }
            (_, Some(n)) => (n, Source::Declared),
            (source, None) => (set, source),
        };
        let (concurrency, concurrency_source) = pick(
            "concurrency",
            spec.concurrency,
            spec.concurrency_source,
            declared.concurrency,
        );
        let (instances, instances_source) = pick(
            "instances",
            spec.instances,
            spec.instances_source,
            declared.instances,
        );
        *self = Sizing {
            concurrency,
            concurrency_source,
            instances,
            instances_source,
            notes,
            errors: declared.errors.clone(),
        };
        concurrency
    }
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
    /// Its concurrency and instances in force.
    pub sizing: Sizing,
}

/// The processes of one function.
pub(crate) struct Pool {
    spec: Arc<FunctionSpec>,
    host: Arc<Host>,
    logs: Arc<LogRing>,
    /// The deployment its processes change subscriptions under.
    deployment: Deployment,
    me: Weak<Pool>,
    state: Mutex<State>,
}

impl Pool {
    pub(crate) fn new(
        spec: Arc<FunctionSpec>,
        host: Arc<Host>,
        logs: Arc<LogRing>,
        deployment: Deployment,
    ) -> Arc<Pool> {
        let pool = Arc::new_cyclic(|me| Pool {
            state: Mutex::new(State {
                procs: Vec::new(),
                sizing: Sizing::of(&spec),
                starting: 0,
                initializing: Vec::new(),
                waiters: VecDeque::new(),
                closed: None,
                failures: 0,
                last_failure: None,
                next_try: None,
                cold_starts: 0,
                cold_start_total: Duration::ZERO,
                last_cold_start: None,
            }),
            spec,
            host,
            logs,
            deployment,
            me: me.clone(),
        });
        pool.host.handle.spawn(keeper::keep(Arc::downgrade(&pool)));
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
                && st.procs.len() + st.starting >= st.sizing.instances
            {
                return Err(InvokeError::AtCapacity {
                    function: self.spec.name.clone(),
                    detail: format!(
                        "all {} processes are busy and {} requests are waiting (instances = {}, concurrency = {}, queue = {})",
                        st.procs.len() + st.starting,
                        st.waiters.len(),
                        st.sizing.instances,
                        st.sizing.concurrency,
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
            st.waiters.push_back(Waiter {
                tx,
                thread: self.host.io.current(),
                passed: 0,
            });
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
        let sizing = self.state.lock().sizing.clone();
        Err(InvokeError::AtCapacity {
            function: self.spec.name.clone(),
            detail: format!(
                "no process was free within {} (instances = {}, concurrency = {})",
                fmt_duration(self.spec.timeout),
                sizing.instances,
                sizing.concurrency
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
            && st.procs.len() + st.starting < st.sizing.instances
            && waiting > coming.saturating_mul(st.sizing.concurrency)
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
    /// thread unless it is half its concurrency busier than another (with `concurrency = 1`,
    /// a free process on the caller's thread before a free one elsewhere).
    fn take_free(&self, st: &mut State) -> Option<Slot> {
        self.take_free_for(st, self.host.io.current())
    }

    /// [`Pool::take_free`] for a request waiting on attached thread `here`.
    fn take_free_for(&self, st: &mut State, here: Option<usize>) -> Option<Slot> {
        let elsewhere = (st.sizing.concurrency / 2).max(1);
        let entry = st
            .procs
            .iter_mut()
            .filter(|e| e.busy < e.concurrency && !e.process.is_doomed())
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

    /// Hands free slots to those waiting in line: first come, first served, except that a
    /// request waiting on the thread that handles the slot's process goes first (its line goes
    /// down and its answer comes back without waking another thread), within the first
    /// [`LOCAL_WINDOW`] of the line and passing nobody more than [`MAX_PASSED`] times.
    fn dispatch(&self, st: &mut State) {
        while let Some(front) = st.waiters.front() {
            if front.tx.is_closed() {
                st.waiters.pop_front();
                continue;
            }
            let front_thread = front.thread;
            let Some(slot) = self.take_free_for(st, front_thread) else {
                break;
            };
            let chosen = choose_waiter(&mut st.waiters, slot.process.io_thread());
            let Some(waiter) = st.waiters.remove(chosen) else {
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
            sizing: st.sizing.clone(),
        }
    }

    /// Its concurrency and instances in force.
    pub(crate) fn sizing(&self) -> Sizing {
        self.state.lock().sizing.clone()
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

    /// Why the pool was closed ("removed", "redeployed"), once it is.
    pub(crate) fn closed_for(&self) -> Option<&'static str> {
        self.state.lock().closed
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

/// Which of the `waiters` (whose front is still waiting) gets a slot on a process handled on
/// attached thread `home`: the front, unless it waits on another thread, has been passed fewer
/// than [`MAX_PASSED`] times, and one of the first [`LOCAL_WINDOW`] waits on `home`; those it
/// passes count it.
fn choose_waiter(waiters: &mut VecDeque<Waiter>, home: Option<usize>) -> usize {
    let Some(front) = waiters.front() else {
        return 0;
    };
    if home.is_none() || front.thread == home || front.passed >= MAX_PASSED {
        return 0;
    }
    let chosen = waiters
        .iter()
        .take(LOCAL_WINDOW)
        .position(|w| w.thread == home && !w.tx.is_closed())
        .unwrap_or(0);
    for earlier in waiters.iter_mut().take(chosen) {
        earlier.passed += 1;
    }
    chosen
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

#[cfg(test)]
mod tests {
    use super::*;

    type Answer = oneshot::Receiver<Result<Slot, InvokeError>>;

    /// A waiter on `thread`, and what keeps it waiting.
    fn waiter(thread: Option<usize>) -> (Waiter, Answer) {
        let (tx, rx) = oneshot::channel();
        let waiter = Waiter {
            tx,
            thread,
            passed: 0,
        };
        (waiter, rx)
    }

    fn line(threads: &[Option<usize>]) -> (VecDeque<Waiter>, Vec<Answer>) {
        threads.iter().map(|&thread| waiter(thread)).unzip()
    }

    #[test]
    fn a_slot_goes_to_the_front_unless_someone_waits_on_its_thread() {
        let (mut waiters, _answers) = line(&[Some(0), Some(0), Some(1)]);
        assert_eq!(choose_waiter(&mut waiters, Some(0)), 0);
        assert_eq!(choose_waiter(&mut waiters, None), 0);
        assert_eq!(choose_waiter(&mut waiters, Some(1)), 2);
        assert_eq!(
            (waiters[0].passed, waiters[1].passed, waiters[2].passed),
            (1, 1, 0)
        );
        // Nobody on thread 2: the front.
        assert_eq!(choose_waiter(&mut waiters, Some(2)), 0);
    }

    #[test]
    fn nobody_is_passed_more_than_max_passed_times() {
        let (mut waiters, mut answers) = line(&[Some(0), Some(1)]);
        for _ in 0..MAX_PASSED {
            assert_eq!(choose_waiter(&mut waiters, Some(1)), 1);
            // The one served leaves the line; another comes on thread 1.
            waiters.remove(1);
            let (next, answer) = waiter(Some(1));
            waiters.push_back(next);
            answers.push(answer);
        }
        assert_eq!(waiters[0].passed, MAX_PASSED);
        assert_eq!(choose_waiter(&mut waiters, Some(1)), 0);
    }

    #[test]
    fn only_the_first_of_the_line_are_looked_at_and_none_that_left() {
        let mut threads = vec![Some(0); LOCAL_WINDOW];
        threads.push(Some(1));
        let (mut waiters, _answers) = line(&threads);
        assert_eq!(choose_waiter(&mut waiters, Some(1)), 0);
        assert!(waiters.iter().all(|w| w.passed == 0));
        // A request on thread 1 that stopped waiting is not chosen.
        let (mut waiters, mut answers) = line(&[Some(0), Some(1)]);
        drop(answers.pop());
        assert_eq!(choose_waiter(&mut waiters, Some(1)), 0);
    }
}
