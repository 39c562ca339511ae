//! Mode exec: one process per request.
//!
//! The input is written to the process's stdin, which is then closed; what it writes to stdout
//! is the output. It runs in its own process group, which is killed when the process exits (so
//! helpers it left behind go too) or when it runs past its timeout (gracefully, with
//! [`unix::kill_group`]).

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use nix::sys::signal::Signal;
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;

use crate::Host;
use crate::error::{InvokeError, fmt_duration};
use crate::logs::LogRing;
use crate::pipes::{StderrTail, drain_stderr};
use crate::spec::FunctionSpec;
use crate::unix::{self, Spawned, describe_exit, signal_group};

/// Runs one exec-mode function.
pub(crate) struct ExecRunner {
    spec: Arc<FunctionSpec>,
    host: Arc<Host>,
    logs: Arc<LogRing>,
    permits: Arc<Semaphore>,
    /// Requests waiting for a permit.
    waiting: AtomicUsize,
    /// Process groups running now, for shutdown.
    running: Mutex<HashSet<u32>>,
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
            running: Mutex::new(HashSet::new()),
        }
    }

    /// How many processes run now.
    pub(crate) fn running(&self) -> usize {
        self.running.lock().len()
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
        let _permit = match permit {
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
        let env = [("SHS_REQUEST_ID", Some(request_id)), ("TRACEPARENT", trace)];
        let Spawned {
            mut child,
            pid,
            mut stdin,
            stdout,
            stderr,
        } = unix::spawn(
            spec,
            &self.host,
            env.into_iter().filter_map(|(k, v)| Some((k, v?))),
        )
        .map_err(|reason| InvokeError::StartFailed {
            function: name(),
            reason,
            stderr: Vec::new(),
        })?;
        let mut running = RunningGuard::new(&self.running, pid);
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
                // SIGTERM, then SIGKILL if it has not exited after the grace period.
                unix::kill_group(pid, self.host.config.kill_grace, child.wait()).await;
                let _ = unix::reap(pid, &mut child).await;
                running.finished = true;
                tracing::warn!(function = %spec.name, pid, "exec process killed after {}", fmt_duration(spec.timeout));
                return Err(InvokeError::Timeout {
                    function: name(),
                    after: spec.timeout,
                    action: "its process was killed",
                });
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
struct RunningGuard<'a> {
    set: &'a Mutex<HashSet<u32>>,
    pid: u32,
    finished: bool,
}

impl<'a> RunningGuard<'a> {
    fn new(set: &'a Mutex<HashSet<u32>>, pid: u32) -> Self {
        set.lock().insert(pid);
        RunningGuard {
            set,
            pid,
            finished: false,
        }
    }
}

impl Drop for RunningGuard<'_> {
    fn drop(&mut self) {
        if !self.finished {
            // tokio reaps the dropped child in the background once it has exited.
            signal_group(self.pid, Signal::SIGKILL);
        }
        self.set.lock().remove(&self.pid);
    }
}
