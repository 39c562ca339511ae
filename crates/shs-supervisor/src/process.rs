//! One rpc-mode function process: its life from spawn to death, and the tasks that own its
//! pipes.
//!
//! A [`Process`] is shared (`Arc`) by the pool and by every call in flight. Four tasks own its
//! resources: the stdin flusher (lines are written by the caller itself when the pipe takes
//! them, and only wait in a backlog when it is full; see [`crate::stdin`]),
//! the reader (stdout: answers matched to calls by id, requests from the function served), the
//! stderr logger, and the waiter (the `Child`, reaped when it exits). Whoever kills the process
//! signals its whole process group; the reader, when stdout ends, fails every call still in
//! flight with the reason, so that no caller waits for an answer that cannot come.
//!
//! This module owns the spawn, the four tasks, and stopping (`terminate`, `stop`); the rest is
//! in its children: [`calls`] (the supervisor's requests to the process and their guards),
//! [`initialize`] (the handshake that makes a process ready), [`reader`] (the stdout loop) and
//! [`requests`] (serving the function's own `publish`, `subscribe` and `unsubscribe`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use shs_bus::Deployment;
use tokio::net::unix::pipe;
use tokio::process::{Child, ChildStderr};
use tokio::sync::watch;
use tracing::Instrument;

use crate::Host;
use crate::io::IoHome;
use crate::logs::LogRing;
use crate::pipes::{StderrTail, drain_stderr};
use crate::spec::FunctionSpec;
use crate::stdin::StdinWriter;
use crate::unix::{self, Spawned};

mod calls;
mod initialize;
mod reader;
mod requests;

use calls::Calls;
pub(crate) use calls::{CallError, CallMeta, Death};
pub(crate) use initialize::{Declared, StartFailure};
use reader::ReaderGuard;

/// Numbers for processes, for logs and the pool.
static NEXT_PROCESS_ID: AtomicU64 = AtomicU64::new(1);
/// How long after an answer a stderr line is still taken to belong to that request.
const STDERR_AFTER_ANSWER: Duration = Duration::from_millis(250);
/// How long the reader waits, after stdout closes, for the process to exit on its own.
const EXIT_AFTER_EOF: Duration = Duration::from_millis(500);

/// A running function process.
pub(crate) struct Process {
    id: u64,
    pid: u32,
    function: Arc<str>,
    host: Arc<Host>,
    /// The deployment of its function it belongs to: it changes subscriptions under it.
    deployment: Deployment,
    /// The attached thread whose runtime handles its stdin and stdout, if one does.
    io_thread: Option<usize>,
    stdin: Arc<StdinWriter>,
    calls: Mutex<Calls>,
    stderr_tail: StderrTail,
    /// The function's log ring.
    logs: Arc<LogRing>,
    /// Why the supervisor killed or stopped it, when it did.
    kill_reason: Mutex<Option<String>>,
    /// Set as soon as the process is known to be going (killed, stopping, stdout closed): the
    /// pool gives it no new request from then on.
    doomed: AtomicBool,
    /// It asked for the raw body of JSON HTTP requests (`"raw_body": true` in its answer to
    /// `initialize`).
    raw_body: AtomicBool,
    /// Set when its stderr has been read to the end.
    stderr_done: watch::Sender<bool>,
    /// The request answered last, and when: stderr and stdout are two pipes, so a line a
    /// function logs just before answering may be read just after the answer.
    last_answered: Mutex<Option<(Arc<str>, std::time::Instant)>>,
    exit: watch::Receiver<Option<String>>,
    dead: watch::Receiver<bool>,
    dead_tx: watch::Sender<bool>,
}

impl std::fmt::Debug for Process {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Process")
            .field("function", &self.function)
            .field("pid", &self.pid)
            .finish_non_exhaustive()
    }
}

impl Process {
    /// Whether it asked for the raw body of JSON HTTP requests in its answer to `initialize`.
    pub(crate) fn wants_raw_body(&self) -> bool {
        self.raw_body.load(Ordering::Relaxed)
    }

    /// Starts a process for `spec`, its stdin and stdout handled on `home`; it still has to be
    /// initialized.
    pub(crate) fn spawn(
        spec: &FunctionSpec,
        host: &Arc<Host>,
        logs: &Arc<LogRing>,
        home: IoHome,
        deployment: Deployment,
    ) -> Result<Arc<Process>, String> {
        let _enter = host.handle.enter();
        let Spawned {
            child,
            pid,
            stdin,
            stdout,
            stderr,
        } = unix::spawn(spec, host, std::iter::empty::<(&str, &str)>())?;
        // The child's reaper and stderr stay with the supervisor's runtime; stdin and stdout
        // move to the runtime of the process's home.
        let pipes = (|| {
            let (stdin, stdout) = (stdin.into_owned_fd()?, stdout.into_owned_fd()?);
            let _home = home.handle.enter();
            Ok::<_, std::io::Error>((
                StdinWriter::new(stdin)?,
                pipe::Receiver::from_owned_fd(stdout)?,
            ))
        })();
        let (stdin, stdout) = match pipes {
            Ok(pipes) => pipes,
            Err(e) => {
                unix::signal_group(pid, nix::sys::signal::Signal::SIGKILL);
                return Err(format!("the process's pipes could not be set up: {e}"));
            }
        };
        let (exit_tx, exit) = watch::channel(None);
        let (dead_tx, dead) = watch::channel(false);
        let process = Arc::new(Process {
            id: NEXT_PROCESS_ID.fetch_add(1, Ordering::Relaxed),
            pid,
            function: Arc::from(spec.name.as_str()),
            host: host.clone(),
            deployment,
            io_thread: home.thread,
            stdin: stdin.clone(),
            calls: Mutex::new(Calls::default()),
            stderr_tail: StderrTail::default(),
            logs: logs.clone(),
            kill_reason: Mutex::new(None),
            doomed: AtomicBool::new(false),
            raw_body: AtomicBool::new(false),
            stderr_done: watch::channel(false).0,
            last_answered: Mutex::new(None),
            exit,
            dead,
            dead_tx,
        });
        let span = tracing::info_span!("process", function = %spec.name, pid);
        home.handle
            .spawn(flush_stdin(process.clone(), stdin).instrument(span.clone()));
        let reader = ReaderGuard(Some(process.clone()));
        home.handle.spawn(
            process
                .clone()
                .read_loop(stdout, reader)
                .instrument(span.clone()),
        );
        host.handle
            .spawn(process.clone().stderr_loop(stderr).instrument(span.clone()));
        host.handle
            .spawn(wait_loop(pid, child, exit_tx).instrument(span));
        tracing::debug!(function = %spec.name, pid, "process started");
        logs.push(
            pid,
            None,
            "shs",
            &format!("process {pid} started: {}", spec.command.join(" ")),
        );
        Ok(process)
    }

    /// The supervisor's number for this process.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// Its operating-system process id.
    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    /// The attached thread that handles its pipes, if one does.
    pub(crate) fn io_thread(&self) -> Option<usize> {
        self.io_thread
    }

    /// Whether the process is gone or going: it must get no new request.
    pub(crate) fn is_doomed(&self) -> bool {
        self.doomed.load(Ordering::Acquire)
    }

    /// Resolves once the process is dead and every call it had has been failed.
    pub(crate) async fn wait_dead(&self) {
        let mut dead = self.dead.clone();
        let _ = dead.wait_for(|d| *d).await;
    }

    /// The calls in flight on this process.
    pub(crate) fn calls_in_flight(&self) -> Vec<u64> {
        self.calls.lock().pending.keys().copied().collect()
    }

    /// The last lines of its stderr.
    pub(crate) fn stderr_tail(&self) -> Vec<String> {
        self.stderr_tail.lines()
    }

    /// How the process ended, once it has.
    pub(crate) fn death(&self) -> Option<Death> {
        self.calls.lock().death.clone()
    }

    fn death_or_unknown(&self) -> Death {
        let reason = self.kill_reason.lock().clone();
        self.calls.lock().death.clone().unwrap_or_else(|| Death {
            detail: match reason {
                Some(reason) => format!("was stopped ({reason})"),
                None => "went away".to_owned(),
            },
            protocol: false,
            stderr: self.stderr_tail(),
        })
    }

    /// Terminates the process group: SIGTERM now, SIGKILL if it has not exited after the
    /// grace period. The process takes no new request from now on; `reason` is what its
    /// requests in flight are told.
    pub(crate) fn terminate(&self, reason: String) {
        self.doomed.store(true, Ordering::Release);
        {
            let mut kill_reason = self.kill_reason.lock();
            if kill_reason.is_some() {
                return;
            }
            tracing::warn!(function = %self.function, pid = self.pid, "terminating process: {reason}");
            *kill_reason = Some(reason);
        }
        let mut exit = self.exit.clone();
        let escalate = unix::kill_group(self.pid, self.host.config.kill_grace, async move {
            let _ = exit.wait_for(Option::is_some).await;
        });
        self.host.handle.spawn(escalate);
    }

    /// Stops the process gracefully: closes its stdin, waits up to `grace` for it to exit,
    /// then SIGTERM to its group, `grace` again, then SIGKILL. Resolves once it is dead.
    pub(crate) async fn stop(&self, grace: Duration, reason: &str) {
        self.doomed.store(true, Ordering::Release);
        {
            let mut kill_reason = self.kill_reason.lock();
            kill_reason.get_or_insert_with(|| reason.to_owned());
        }
        self.stdin.close();
        let mut exit = self.exit.clone();
        if tokio::time::timeout(grace, exit.wait_for(Option::is_some))
            .await
            .is_err()
        {
            unix::kill_group(self.pid, grace, exit.wait_for(Option::is_some)).await;
        }
        self.wait_dead().await;
    }

    /// Marks the process dead, fails every call in flight with `death`, and closes its stdin.
    ///
    /// Closing stdin ends the flusher: a process that died idle leaves nothing in the backlog
    /// to fail on, and without this the flusher would wait for work forever, holding the
    /// pipe's descriptor and the `Process` (one descriptor lost per process killed).
    fn fail_all(&self, death: Death) {
        self.stdin.close();
        let pending = {
            let mut calls = self.calls.lock();
            calls.death.get_or_insert(death.clone());
            std::mem::take(&mut calls.pending)
        };
        for (_, call) in pending {
            let _ = call.tx.send(Err(CallError::Died(death.clone())));
        }
        let _ = self.dead_tx.send(true);
    }

    async fn send(&self, line: Vec<u8>) {
        // A pipe that takes nothing means the process is dying; the answer has nobody to go to.
        let _ = self.stdin.write_waiting(&line).await;
    }

    async fn stderr_loop(self: Arc<Self>, stderr: ChildStderr) {
        let this = self.clone();
        drain_stderr(
            stderr,
            self.host.config.stderr_line,
            &self.function,
            self.pid,
            self.stderr_tail.clone(),
            &self.logs,
            move || {
                // With one request in flight, its lines are that request's; with none, a line
                // read right after an answer is most likely that request's last word.
                let calls = this.calls.lock();
                match calls.pending.len() {
                    1 => calls.pending.values().next().map(|c| c.request_id.clone()),
                    0 => this
                        .last_answered
                        .lock()
                        .as_ref()
                        .filter(|(_, at)| at.elapsed() < STDERR_AFTER_ANSWER)
                        .map(|(id, _)| id.clone()),
                    _ => None,
                }
            },
        )
        .await;
        self.stderr_done.send_replace(true);
    }
}

/// Empties the stdin backlog; a pipe that breaks is looked into.
async fn flush_stdin(process: Arc<Process>, stdin: Arc<StdinWriter>) {
    if let Some(e) = stdin.flush_loop().await {
        broken_stdin(&process, &e).await;
    }
}

/// stdin cannot be written: the process has exited (its exit says why) or closed its stdin
/// (then it can take no request, and is stopped).
async fn broken_stdin(process: &Process, e: &std::io::Error) {
    let mut exit = process.exit.clone();
    let exited = tokio::time::timeout(EXIT_AFTER_EOF, exit.wait_for(Option::is_some))
        .await
        .is_ok();
    if !exited {
        process.terminate(format!("it closed its stdin ({e})"));
    }
}

/// Reaps the process (and kills what it left in its group), and says how it exited.
async fn wait_loop(pid: u32, mut child: Child, exit: watch::Sender<Option<String>>) {
    let status = unix::reap(pid, &mut child).await;
    let _ = exit.send(Some(unix::describe_exit(&status)));
}
