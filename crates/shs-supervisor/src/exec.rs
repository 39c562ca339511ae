//! Mode exec (and the process handling mode cgi shares): one process per request.
//!
//! The input is written to the process's stdin, which is then closed; what it writes to stdout
//! is the output. It runs in its own process group, which is killed when the process exits (so
//! helpers it left behind go too) or when it runs past its timeout (gracefully, with
//! [`unix::kill_group`]). [`ExecRunner::start`] (a permit of `instances`, or a place in the
//! `queue`, then the spawn) and [`timed_out`] are the same for mode cgi
//! ([`crate::cgi`]), which reads stdout as a CGI response instead.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use nix::sys::signal::Signal;
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Child;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::Host;
use crate::error::{InvokeError, fmt_duration};
use crate::logs::LogRing;
use crate::pipes::{StderrTail, drain_stderr};
use crate::spec::FunctionSpec;
use crate::unix::{self, Spawned, describe_exit, signal_group};

/// Runs one exec-mode or cgi-mode function.
pub(crate) struct ExecRunner {
    pub(crate) spec: Arc<FunctionSpec>,
    pub(crate) host: Arc<Host>,
    pub(crate) logs: Arc<LogRing>,
    permits: Arc<Semaphore>,
    /// Requests waiting for a permit.
    waiting: AtomicUsize,
    /// Process groups running now, for shutdown.
    running: Arc<Mutex<HashSet<u32>>>,
}

/// A process of the function, just started: it holds one of the `instances` permits and its
/// place in the running set until it is dropped.
pub(crate) struct Started {
    /// The process and its pipes.
    pub(crate) spawned: Spawned,
    /// Its group in the running set; kills the group if dropped before it was reaped.
    pub(crate) running: RunningGuard,
    /// Its permit.
    pub(crate) permit: OwnedSemaphorePermit,
}

impl ExecRunner {
    pub(crate) fn new(spec: Arc<FunctionSpec>, host: Arc<Host>, logs: Arc<LogRing>) -> ExecRunner {
        let permits = Arc::new(Semaphore::new(spec.instances));
        ExecRunner {
            spec,
            host,
            logs,
            permits,
            waiting: AtomicUsize::new(0),
            running: Arc::new(Mutex::new(HashSet::new())),
        }
    }

    /// How many processes run now.
    pub(crate) fn running(&self) -> usize {
        self.running.lock().len()
    }

    /// Takes one of the `instances` permits, waiting in line (at most `queue` requests) for up
    /// to `timeout`; then starts a process with `extra_env` added to its environment.
    pub(crate) async fn start<K, V>(
        &self,
        extra_env: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Started, InvokeError>
    where
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        let spec = &self.spec;
        let name = || spec.name.clone();
        let at_capacity = |detail: String| InvokeError::AtCapacity {
            function: name(),
            detail,
            retry_after: Duration::from_secs(1),
        };
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(permit) => Some(permit),
            Err(tokio::sync::TryAcquireError::Closed) => {
                return Err(InvokeError::Gone {
                    function: name(),
                    what: "removed",
                });
            }
            Err(tokio::sync::TryAcquireError::NoPermits) => None,
        };
        let permit = match permit {
            Some(permit) => permit,
            None => {
                let Some(in_line) = Waiting::join(&self.waiting, spec.queue) else {
                    return Err(at_capacity(format!(
                        "all {} processes are running and {} requests are waiting (instances = {}, queue = {})",
                        spec.instances, spec.queue, spec.instances, spec.queue
                    )));
                };
                let waited =
                    tokio::time::timeout(spec.timeout, self.permits.clone().acquire_owned()).await;
                drop(in_line);
                match waited {
                    Ok(Ok(permit)) => permit,
                    Ok(Err(_)) => {
                        return Err(InvokeError::Gone {
                            function: name(),
                            what: "removed",
                        });
                    }
                    Err(_) => {
                        return Err(at_capacity(format!(
                            "{} processes ran for {} without one finishing (instances = {})",
                            spec.instances,
                            fmt_duration(spec.timeout),
                            spec.instances
                        )));
                    }
                }
            }
        };
        let spawned = unix::spawn(spec, &self.host, extra_env).map_err(|reason| {
            InvokeError::StartFailed {
                function: name(),
                reason,
                stderr: Vec::new(),
            }
        })?;
        Ok(Started {
            running: RunningGuard::new(self.running.clone(), spawned.pid),
            spawned,
            permit,
        })
    }

    /// Runs the function once on `input`; returns its stdout.
    pub(crate) async fn run(
        &self,
        input: &[u8],
        request_id: &str,
        trace: Option<&str>,
    ) -> Result<Vec<u8>, InvokeError> {
        let spec = &self.spec;
        let name = || spec.name.clone();
        let env = [("SHS_REQUEST_ID", Some(request_id)), ("TRACEPARENT", trace)];
        let Started {
            spawned:
                Spawned {
                    mut child,
                    pid,
                    mut stdin,
                    stdout,
                    stderr,
                },
            mut running,
            permit: _permit,
        } = self
            .start(env.into_iter().filter_map(|(k, v)| Some((k, v?))))
            .await?;
        let limit = self.host.config.max_line;
        let write_input = async move {
            // A function that does not read its input may close stdin early: not an error.
            let _ = stdin.write_all(input).await;
            drop(stdin);
        };
        let read_output = async move {
            let mut out = Vec::new();
            let mut limited = stdout.take(limit as u64 + 1);
            let _ = limited.read_to_end(&mut out).await;
            if out.len() > limit {
                signal_group(pid, Signal::SIGKILL);
                return Err(out.len());
            }
            Ok(out)
        };
        let tail = StderrTail::default();
        let read_stderr = drain_stderr(
            stderr,
            self.host.config.stderr_line,
            &spec.name,
            pid,
            tail.clone(),
            &self.logs,
            || Some(Arc::from(request_id)),
        );
        let all = async {
            tokio::join!(
                write_input,
                read_output,
                read_stderr,
                unix::reap(pid, &mut child)
            )
        };
        let (_, output, (), status) = match tokio::time::timeout(spec.timeout, all).await {
            Ok(done) => done,
            Err(_) => {
                return Err(timed_out(
                    spec,
                    self.host.config.kill_grace,
                    pid,
                    &mut child,
                    &mut running,
                )
                .await);
            }
        };
        running.finished = true;
        let output = output.map_err(|_| InvokeError::Protocol {
            function: name(),
            detail: format!("it wrote more than {limit} bytes to stdout (the limit is --max-line)"),
        })?;
        match status {
            Ok(s) if s.success() => Ok(output),
            other => Err(InvokeError::ExecFailed {
                function: name(),
                status: describe_exit(&other),
                stderr: tail.lines(),
            }),
        }
    }

    /// Waits up to `drain` for running processes to finish, then kills the rest.
    pub(crate) async fn close(&self, drain: Duration) {
        self.permits.close();
        let deadline = tokio::time::Instant::now() + drain;
        while self.running() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // What is still running gets SIGTERM, then SIGKILL after the grace period.
        let left: Vec<u32> = self.running.lock().iter().copied().collect();
        let grace = self.host.config.kill_grace;
        futures::future::join_all(left.into_iter().map(|pgid| {
            unix::kill_group(pgid, grace, async move {
                while self.running.lock().contains(&pgid) {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        }))
        .await;
    }
}

/// A process that ran past its timeout: SIGTERM to its group, SIGKILL after the `grace`
/// period, reaped; the error to report (504).
pub(crate) async fn timed_out(
    spec: &FunctionSpec,
    grace: Duration,
    pid: u32,
    child: &mut Child,
    running: &mut RunningGuard,
) -> InvokeError {
    unix::kill_group(pid, grace, child.wait()).await;
    let _ = unix::reap(pid, child).await;
    running.finished = true;
    tracing::warn!(function = %spec.name, pid, "{} process killed after {}", spec.mode.as_str(), fmt_duration(spec.timeout));
    InvokeError::Timeout {
        function: spec.name.clone(),
        after: spec.timeout,
        action: "its process was killed",
    }
}

/// Counts one request waiting for a process, until dropped (also when the request is).
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    /// Joins the line unless it already holds `max`.
    fn join(count: &'a AtomicUsize, max: usize) -> Option<Self> {
        count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Waiting(count))
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Keeps a process group in the running set while it runs, and kills it if the request is
/// dropped before the process was reaped (the client went away).
pub(crate) struct RunningGuard {
    set: Arc<Mutex<HashSet<u32>>>,
    pid: u32,
    /// Set once the process was reaped: nothing left to kill.
    pub(crate) finished: bool,
}

impl RunningGuard {
    fn new(set: Arc<Mutex<HashSet<u32>>>, pid: u32) -> Self {
        set.lock().insert(pid);
        RunningGuard {
            set,
            pid,
            finished: false,
        }
    }
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        if !self.finished {
            // tokio reaps the dropped child in the background once it has exited.
            signal_group(self.pid, Signal::SIGKILL);
        }
        self.set.lock().remove(&self.pid);
    }
}
