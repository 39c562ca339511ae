//! Starting a pool's processes and keeping the pool between requests.
//!
//! A start spawns a process and makes the `initialize` handshake with it
//! ([`Process::initialize`]). A failed start (or a process that dies soon after it started,
//! without having been given a request) counts towards the backoff: the next start waits
//! [`BACKOFF_FIRST`], doubling with each failure in a row up to [`BACKOFF_MAX`], and while the
//! pool has no process, those waiting are failed with the reason. The keeper task ([`keep`])
//! stops processes idle for `idle_timeout` down to `min_instances`, and starts processes up to
//! it.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use shs_bus::Causation;

use super::{Entry, Pool, State};
use crate::error::{InvokeError, fmt_duration};
use crate::process::{Declared, Process, StartFailure};

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

impl Pool {
    /// Starts one process now (a function's first, at deployment); resolves once it has
    /// answered initialize or failed.
    pub(crate) async fn start_now(&self) -> Result<(), StartFailure> {
        {
            let mut st = self.state.lock();
            // Closed, or already as many processes as allowed (the keeper got there first).
            if st.closed.is_some() || st.procs.len() + st.starting >= st.sizing.instances {
                return Ok(());
            }
            st.starting += 1;
        }
        self.arc().start_one(Causation::root(), false, None).await
    }

    /// Starts a process when the pool has none, live or starting, and `allowed()` agrees
    /// (prewarming: the budget); returns whether one was started.
    pub(crate) fn start_if_cold(&self, allowed: impl FnOnce() -> bool) -> bool {
        {
            let mut st = self.state.lock();
            let live = st.procs.iter().any(|e| !e.process.is_doomed());
            let backing_off = st.next_try.is_some_and(|t| t > Instant::now());
            if st.closed.is_some() || live || st.starting > 0 || backing_off || !allowed() {
                return false;
            }
            st.starting += 1;
        }
        let pool = self.arc();
        self.host.handle.spawn(async move {
            let _ = pool.start_one(Causation::root(), false, None).await;
        });
        true
    }

    /// Spawns and initializes one process (the caller has counted it in `starting`).
    pub(super) async fn start_one(
        self: Arc<Self>,
        cause: Causation,
        cold: bool,
        thread: Option<usize>,
    ) -> Result<(), StartFailure> {
        let began = Instant::now();
        let result = self.spawn_and_initialize(cause, thread).await;
        let (process, declared) = match result {
            Ok(started) => started,
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
                let concurrency = st.sizing.apply(&self.spec, &declared);
                st.procs.push(Entry {
                    process: process.clone(),
                    busy: 0,
                    concurrency,
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
    ) -> Result<(Arc<Process>, Declared), StartFailure> {
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
        let process = Process::spawn(spec, &self.host, &self.logs, home, self.deployment).map_err(
            |reason| StartFailure {
                reason,
                stderr: Vec::new(),
            },
        )?;
        self.state.lock().initializing.push(process.clone());
        let result = process.initialize(spec.start_timeout, cause).await;
        self.state
            .lock()
            .initializing
            .retain(|p| p.id() != process.id());
        result.map(|declared| (process, declared))
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

    /// Stops the processes started at deploy only to learn the function's start-up
    /// subscriptions, when it needs none (`min_instances` 0 and no subscriptions) and nothing
    /// has been asked of them.
    pub(crate) fn stop_unneeded(&self) {
        if self.min_instances() > 0 {
            return;
        }
        let mut unneeded = Vec::new();
        {
            let mut st = self.state.lock();
            if st.closed.is_some() || !st.waiters.is_empty() {
                return;
            }
            st.procs.retain(|e| {
                let stop = e.busy == 0 && !e.took && !e.process.is_doomed();
                if stop {
                    unneeded.push(e.process.clone());
                }
                !stop
            });
        }
        let grace = self.host.config.kill_grace;
        for process in unneeded {
            self.host.handle.spawn(async move {
                process
                    .stop(
                        grace,
                        "its subscriptions are learned and it has nothing to do",
                    )
                    .await;
            });
        }
    }

    /// The processes kept even when idle: `min_instances`, or 1 for a function with
    /// subscriptions and 0 for one without.
    fn min_instances(&self) -> usize {
        let min = self.spec.min_instances.unwrap_or_else(|| {
            usize::from(!self.host.bus.subscriptions_of(&self.spec.name).is_empty())
        });
        // A declared `instances` may be below function.toml's `min_instances`.
        min.min(self.state.lock().sizing.instances)
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
}

/// Tends the pool until it is closed or gone: idle processes are stopped, `min_instances` kept.
pub(super) async fn keep(pool: Weak<Pool>) {
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
