//! One rpc-mode function process and the tasks that own its pipes.
//!
//! A [`Process`] is shared (`Arc`) by the pool and by every call in flight. Four tasks own its
//! resources: the stdin flusher (lines are written by the caller itself when the pipe takes
//! them, and only wait in a backlog when it is full; see [`crate::stdin`]),
//! the reader (stdout: answers matched to calls by id, requests from the function served), the
//! stderr logger, and the waiter (the `Child`, reaped when it exits). Whoever kills the process
//! signals its whole process group; the reader, when stdout ends, fails every call still in
//! flight with the reason, so that no caller waits for an answer that cannot come.

use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use parking_lot::Mutex;
use serde::Serialize;
use serde_json::value::RawValue;
use shs_bus::event::TRACEPARENT;
use shs_bus::{Causation, Event, Origin};
use shs_protocol::codec::{LineDecoder, OverLong};
use shs_protocol::methods::{
    self, PublishParams, PublishResult, SubscribeParams, SubscribeResult, UnsubscribeResult,
    error_code,
};
use shs_protocol::{Id, Message, ParseError, Response, RpcError, write_request, write_response};
use tokio::net::unix::pipe;
use tokio::process::{Child, ChildStderr, Command};
use tokio::sync::{Semaphore, oneshot, watch};
use tokio_util::codec::FramedRead;
use tracing::Instrument;

use crate::Host;
use crate::io::IoHome;
use crate::logs::LogRing;
use crate::pipes::{LineCodec, ReadError, StderrTail, drain_stderr};
use crate::pool::Slot;
use crate::spec::{FunctionSpec, Limits, environment};
use crate::stdin::StdinWriter;

/// Counts the supervisor's requests.
static CALLS: AtomicU64 = AtomicU64::new(1);

/// A fresh id for a supervisor request: unique across all processes, so that a call can be
/// named in a [`Causation`] without saying which process it went to, and (with a random prefix
/// per supervisor in the high bits) most likely across the supervisors sharing a distributed
/// bus. Ids stay below 2^53, so that JavaScript functions read them exactly.
fn next_call_id() -> u64 {
    static PREFIX: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let prefix = *PREFIX.get_or_init(|| (uuid::Uuid::new_v4().as_u128() as u64 & 0x1fff) << 40);
    prefix | (CALLS.fetch_add(1, Ordering::Relaxed) & ((1 << 40) - 1))
}
/// Numbers for processes, for logs and the pool.
static NEXT_PROCESS_ID: AtomicU64 = AtomicU64::new(1);

/// How many of a process's own requests (publish) may be served at once.
const MAX_FUNCTION_REQUESTS: usize = 256;
/// How long after an answer a stderr line is still taken to belong to that request.
const STDERR_AFTER_ANSWER: Duration = Duration::from_millis(250);
/// How long the reader waits, after stdout closes, for the process to exit on its own.
const EXIT_AFTER_EOF: Duration = Duration::from_millis(500);

/// Why a call got no result.
#[derive(Debug)]
pub(crate) enum CallError {
    /// The function answered with an error.
    Rpc(RpcError),
    /// The process is gone; the call may or may not have been seen.
    Died(Death),
    /// No answer in time; the process has been killed.
    Timeout,
    /// The answer was not a valid JSON-RPC answer.
    Malformed(String),
}

/// How a process ended, for the calls it leaves unanswered.
#[derive(Clone, Debug)]
pub(crate) struct Death {
    /// What happened, e.g. "exited with status 1" or "was killed: a request timed out".
    pub(crate) detail: String,
    /// Whether it broke the protocol (reported as such rather than as a crash).
    pub(crate) protocol: bool,
    /// The last lines of its stderr.
    pub(crate) stderr: Vec<String>,
}

/// What a call is about: the request it serves, for logs and for what it publishes.
#[derive(Clone, Debug)]
pub(crate) struct CallMeta {
    /// `context.request_id`.
    pub(crate) request_id: Arc<str>,
    /// The W3C trace context, passed on to what the call publishes.
    pub(crate) trace: Option<Arc<str>>,
}

impl CallMeta {
    pub(crate) fn new(request_id: &str, trace: Option<&str>) -> CallMeta {
        CallMeta {
            request_id: Arc::from(request_id),
            trace: trace.map(Arc::from),
        }
    }
}

/// A call waiting for its answer.
struct Pending {
    tx: oneshot::Sender<Result<Box<RawValue>, CallError>>,
    cause: Causation,
    request_id: Arc<str>,
    trace: Option<Arc<str>>,
    /// The pool slot the call occupies; released when the answer arrives or the process dies,
    /// whatever became of the caller.
    _slot: Option<Slot>,
}

struct Calls {
    pending: HashMap<u64, Pending>,
    /// Set once the process is dead: no call is accepted after that.
    death: Option<Death>,
}

/// A running function process.
pub(crate) struct Process {
    id: u64,
    pid: u32,
    function: Arc<str>,
    host: Arc<Host>,
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

/// Builds the command for a function process: its folder, a clean environment, its own
/// process group, and all three pipes.
pub(crate) fn command(spec: &FunctionSpec, host: &Host) -> Command {
    let mut cmd = Command::new(&spec.command[0]);
    cmd.args(&spec.command[1..])
        .current_dir(&spec.dir)
        .env_clear()
        .envs(environment(
            spec,
            host.config.inherit_env,
            &host.config.server_url,
        ))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(false);
    if let Some(run_as) = &spec.run_as {
        cmd.uid(run_as.uid).gid(run_as.gid);
    }
    if !spec.limits.is_empty() {
        set_limits(&mut cmd, spec.limits);
    }
    cmd
}

/// Makes the child set `limits` on itself before it runs the function. A limit above the
/// supervisor's own hard limit is lowered to it (only root may raise a hard limit).
#[allow(unsafe_code)]
fn set_limits(cmd: &mut Command, limits: Limits) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let apply = move || -> std::io::Result<()> {
        for (resource, value, slack) in [
            (Resource::RLIMIT_DATA, limits.memory, 0),
            // One second between SIGXCPU (soft) and SIGKILL (hard).
            (Resource::RLIMIT_CPU, limits.cpu_seconds, 1),
            (Resource::RLIMIT_NOFILE, limits.open_files, 0),
            (Resource::RLIMIT_NPROC, limits.processes, 0),
        ] {
            let Some(value) = value else { continue };
            let (_, hard) = getrlimit(resource)?;
            let soft = value.min(hard);
            setrlimit(resource, soft, soft.saturating_add(slack).min(hard))?;
        }
        Ok(())
    };
    // SAFETY: the closure runs in the child between fork and exec, where only async-signal-safe
    // functions may be called. It calls getrlimit(2) and setrlimit(2), both async-signal-safe,
    // allocates nothing and takes no lock.
    unsafe {
        cmd.pre_exec(apply);
    }
}

/// Describes a spawn failure: the command and the OS error.
pub(crate) fn spawn_error(spec: &FunctionSpec, e: &std::io::Error) -> String {
    format!(
        "cannot run `{}` in {}: {e}",
        spec.command.join(" "),
        spec.dir.display()
    )
}

/// Signals a whole process group, ignoring a group that is already gone.
pub(crate) fn signal_group(pgid: u32, signal: Signal) {
    let Ok(raw) = i32::try_from(pgid) else { return };
    if raw <= 1 {
        return;
    }
    match killpg(Pid::from_raw(raw), signal) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
        Err(e) => tracing::warn!(pgid, %signal, "cannot signal process group: {e}"),
    }
}

/// `status 1`, `signal 9 (SIGKILL)`.
pub(crate) fn describe_exit(status: &std::io::Result<ExitStatus>) -> String {
    match status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(code), _) => format!("status {code}"),
            (None, Some(sig)) => match Signal::try_from(sig) {
                Ok(name) => format!("signal {sig} ({name})"),
                Err(_) => format!("signal {sig}"),
            },
            (None, None) => "an unknown status".to_owned(),
        },
        Err(e) => format!("an unknown status ({e})"),
    }
}

impl Process {
    /// Starts a process for `spec`, its stdin and stdout handled on `home`; it still has to be
    /// initialized.
    pub(crate) fn spawn(
        spec: &FunctionSpec,
        host: &Arc<Host>,
        logs: &Arc<LogRing>,
        home: IoHome,
    ) -> Result<Arc<Process>, String> {
        let _enter = host.handle.enter();
        let mut child = command(spec, host)
            .spawn()
            .map_err(|e| spawn_error(spec, &e))?;
        let pid = child.id().unwrap_or(0);
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            signal_group(pid, Signal::SIGKILL);
            return Err("the process's pipes could not be set up".to_owned());
        };
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
                signal_group(pid, Signal::SIGKILL);
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
            io_thread: home.thread,
            stdin: stdin.clone(),
            calls: Mutex::new(Calls {
                pending: HashMap::new(),
                death: None,
            }),
            stderr_tail: StderrTail::default(),
            logs: logs.clone(),
            kill_reason: Mutex::new(None),
            doomed: AtomicBool::new(false),
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

    /// The OS process id (also its process group id).
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

    /// Sends one request and waits for its answer, up to `timeout`; on timeout the process is
    /// killed. `slot` (if any) stays taken until the function answers or dies, even when the
    /// caller stops waiting.
    pub(crate) async fn call<P: Serialize + ?Sized>(
        self: &Arc<Self>,
        method: &str,
        params: &P,
        cause: Causation,
        meta: CallMeta,
        slot: Option<Slot>,
        timeout: Duration,
    ) -> Result<Box<RawValue>, CallError> {
        let id = next_call_id();
        let mut line = Vec::with_capacity(256);
        if let Err(e) = write_request(&mut line, &Id::from(id), method, params) {
            return Err(CallError::Rpc(RpcError::new(
                error_code::INTERNAL_ERROR,
                format!("cannot encode the request: {e}"),
            )));
        }
        let (tx, rx) = oneshot::channel();
        {
            let mut calls = self.calls.lock();
            if let Some(death) = &calls.death {
                return Err(CallError::Died(death.clone()));
            }
            if self.is_doomed() && method != methods::INITIALIZE {
                drop(calls);
                return Err(CallError::Died(self.death_or_unknown()));
            }
            calls.pending.insert(
                id,
                Pending {
                    tx,
                    cause,
                    request_id: meta.request_id,
                    trace: meta.trace,
                    _slot: slot,
                },
            );
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let mut guard = CallGuard {
            process: self.clone(),
            id,
            rx: Some(rx),
            sent: false,
            deadline,
            timeout,
        };
        // Written by this thread, now, unless the pipe is full (then it waits in order). A pipe
        // that takes nothing means the process is dying: the reader fails this call with why.
        let batch = self.io_thread.is_some() && self.host.io.current() == self.io_thread;
        let _ = self.stdin.write(&line, batch);
        guard.sent = true;
        let Some(rx) = guard.rx.as_mut() else {
            return Err(CallError::Timeout);
        };
        let outcome = tokio::time::timeout_at(deadline, rx).await;
        guard.rx = None;
        match outcome {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(CallError::Died(self.death_or_unknown())),
            Err(_) => Err(guard.timed_out()),
        }
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
        signal_group(self.pid, Signal::SIGTERM);
        let mut exit = self.exit.clone();
        let (pid, grace) = (self.pid, self.host.config.kill_grace);
        self.host.handle.spawn(async move {
            if tokio::time::timeout(grace, exit.wait_for(Option::is_some))
                .await
                .is_err()
            {
                signal_group(pid, Signal::SIGKILL);
            }
        });
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
            signal_group(self.pid, Signal::SIGTERM);
            if tokio::time::timeout(grace, exit.wait_for(Option::is_some))
                .await
                .is_err()
            {
                signal_group(self.pid, Signal::SIGKILL);
            }
        }
        self.wait_dead().await;
    }

    /// Marks the process dead and fails every call in flight with `death`.
    fn fail_all(&self, death: Death) {
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

    async fn read_loop(self: Arc<Self>, stdout: pipe::Receiver, mut guard: ReaderGuard) {
        let decoder = LineDecoder::new(self.host.config.max_line, OverLong::Error);
        let mut lines = FramedRead::with_capacity(stdout, LineCodec(decoder), 64 * 1024);
        let permits = Arc::new(Semaphore::new(MAX_FUNCTION_REQUESTS));
        let mut protocol_error = None;
        while let Some(item) = lines.next().await {
            match item {
                Ok(line) => self.handle_line(&line.bytes, &permits).await,
                Err(ReadError::TooLong(limit)) => {
                    let detail = format!("it wrote a stdout line longer than {limit} bytes");
                    self.terminate(format!("{detail} (the limit is --max-line)"));
                    protocol_error = Some(detail);
                    break;
                }
                Err(ReadError::Io(e)) => {
                    tracing::warn!(function = %self.function, pid = self.pid, "cannot read stdout: {e}");
                    break;
                }
            }
        }
        drop(lines);
        // stdout is closed: the process has exited, or is about to, or closed it on purpose.
        self.doomed.store(true, Ordering::Release);
        let mut exit = self.exit.clone();
        if tokio::time::timeout(EXIT_AFTER_EOF, exit.wait_for(Option::is_some))
            .await
            .is_err()
        {
            self.terminate("it closed its stdout".to_owned());
            let _ = exit.wait_for(Option::is_some).await;
        }
        let status = exit
            .borrow()
            .clone()
            .unwrap_or_else(|| "an unknown status".to_owned());
        // Let the stderr reader take the last lines the process wrote (its group is dead, so
        // stderr ends at once, unless something outside the group holds it).
        let mut stderr_done = self.stderr_done.subscribe();
        let _ =
            tokio::time::timeout(Duration::from_millis(200), stderr_done.wait_for(|d| *d)).await;
        let killed = self.kill_reason.lock().clone();
        let death = match (protocol_error, killed) {
            (Some(detail), _) => Death {
                detail,
                protocol: true,
                stderr: self.stderr_tail(),
            },
            (None, Some(reason)) => Death {
                detail: format!("was stopped ({reason})"),
                protocol: false,
                stderr: self.stderr_tail(),
            },
            (None, None) => Death {
                detail: format!("exited with {status}"),
                protocol: false,
                stderr: self.stderr_tail(),
            },
        };
        guard.0 = None;
        tracing::debug!(function = %self.function, pid = self.pid, detail = %death.detail, "process ended");
        self.logs.push(
            self.pid,
            None,
            "shs",
            &format!("process {} {}", self.pid, death.detail),
        );
        self.fail_all(death);
    }

    async fn handle_line(self: &Arc<Self>, line: &[u8], permits: &Arc<Semaphore>) {
        match Message::parse(line) {
            Ok(Message::Response(response)) => self.answer(response),
            Ok(Message::Request(request)) => {
                self.serve(Some(request.id), &request.method, request.params, permits)
                    .await;
            }
            Ok(Message::Notification(note)) => {
                self.serve(None, &note.method, note.params, permits).await;
            }
            Err(e) => {
                tracing::warn!(
                    function = %self.function,
                    pid = self.pid,
                    line = %preview(line),
                    "ignoring a stdout line: {e}"
                );
                self.salvage(line, &e).await;
            }
        }
    }

    /// Makes the most of a JSON object that is not a valid message but names an id: a
    /// malformed answer to one of our calls fails that call now (rather than at its timeout),
    /// and a malformed request is answered "invalid request".
    async fn salvage(&self, line: &[u8], error: &ParseError) {
        let Ok(serde_json::Value::Object(object)) =
            serde_json::from_slice::<serde_json::Value>(line)
        else {
            return;
        };
        let id = object
            .get("id")
            .and_then(|id| serde_json::from_value::<Id>(id.clone()).ok());
        let Some(id) = id else { return };
        if object.contains_key("method") {
            let error = RpcError::new(
                error_code::INVALID_REQUEST,
                format!("invalid request: {error}"),
            );
            self.reply(Some(id), Err(error)).await;
            return;
        }
        let pending = id
            .as_u64()
            .and_then(|n| self.calls.lock().pending.remove(&n));
        if let Some(call) = pending {
            let _ = call.tx.send(Err(CallError::Malformed(error.to_string())));
        }
    }

    fn answer(&self, response: Response) {
        let id = response.id.as_ref().and_then(Id::as_u64);
        let pending = id.and_then(|id| self.calls.lock().pending.remove(&id));
        match (pending, response.id) {
            (Some(call), _) => {
                *self.last_answered.lock() =
                    Some((call.request_id.clone(), std::time::Instant::now()));
                let _ = call.tx.send(response.outcome.map_err(CallError::Rpc));
            }
            (None, None) => {
                let message = response
                    .outcome
                    .err()
                    .map(|e| e.message)
                    .unwrap_or_default();
                tracing::warn!(
                    function = %self.function,
                    pid = self.pid,
                    "the function reported an error about a message it could not read: {message}"
                );
            }
            (None, Some(id)) => tracing::warn!(
                function = %self.function,
                pid = self.pid,
                %id,
                "ignoring an answer with an id nobody asked for"
            ),
        }
    }

    /// Serves one request (or notification, when `id` is `None`) from the function.
    async fn serve(
        self: &Arc<Self>,
        id: Option<Id>,
        method: &str,
        params: Option<Box<RawValue>>,
        permits: &Arc<Semaphore>,
    ) {
        let outcome: Result<Box<RawValue>, RpcError> = match method {
            methods::SUBSCRIBE => self.subscribe(params.as_deref(), true),
            methods::UNSUBSCRIBE => self.subscribe(params.as_deref(), false),
            methods::PUBLISH => {
                let params = match parse_params::<PublishParams>(params.as_deref()) {
                    Ok(p) => p,
                    Err(e) => return self.reply(id, Err(e)).await,
                };
                let source = format!("/functions/{}", self.function);
                let event = match Event::new(params.event_type, source, params.payload) {
                    Ok(e) => e,
                    Err(e) => {
                        return self
                            .reply(
                                id,
                                Err(RpcError::new(error_code::INVALID_PARAMS, e.to_string())),
                            )
                            .await;
                    }
                };
                // An asynchronous publish waits for nobody downstream: it is detached.
                let detached = id.is_none() || params.asynchronous;
                let (cause, request) =
                    self.cause_for_publish(params.request_id.as_deref(), detached);
                let mut event = event.with_origin(Origin::Function {
                    function: self.function.to_string(),
                    request_id: request.as_ref().map(|r| r.request_id.to_string()),
                });
                // The trace of the request goes on with what it publishes.
                if let Some(trace) = request.and_then(|r| r.trace) {
                    event = event
                        .with_extension(TRACEPARENT, serde_json::Value::from(&*trace))
                        .unwrap_or_else(|e| unreachable!("traceparent is a valid extension: {e}"));
                }
                // Bound the publishes served at once: a function that floods them waits.
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    return;
                };
                let process = self.clone();
                // On the reader's runtime: a delivery to a process handled on the same thread
                // goes and comes back without leaving it.
                if params.asynchronous {
                    tokio::spawn(
                        async move {
                            let stored = process.host.bus.publish_async(event, cause).await;
                            let outcome = stored.map_err(|e| {
                                tracing::warn!(function = %process.function, "asynchronous publish failed: {e}");
                                let code = if e.is_invalid_input() {
                                    error_code::INVALID_PARAMS
                                } else {
                                    error_code::INTERNAL_ERROR
                                };
                                RpcError::new(code, e.to_string())
                            });
                            if let Some(id) = id {
                                let mut line = Vec::with_capacity(128);
                                let written = match outcome {
                                    Ok(event_id) => write_response(
                                        &mut line,
                                        &id,
                                        Ok(&PublishResult {
                                            published: true,
                                            event_id,
                                            delivered: 0,
                                            errors: Vec::new(),
                                            accepted: Some(true),
                                        }),
                                    ),
                                    Err(error) => write_response::<()>(&mut line, &id, Err(&error)),
                                };
                                if written.is_ok() {
                                    process.send(line).await;
                                }
                            }
                            drop(permit);
                        }
                        .in_current_span(),
                    );
                    return;
                }
                tokio::spawn(
                    async move {
                        let result = process.host.bus.publish(event, cause).await;
                        match id {
                            Some(id) => {
                                let mut line = Vec::with_capacity(128);
                                if write_response(&mut line, &id, Ok(&result)).is_ok() {
                                    process.send(line).await;
                                }
                            }
                            None => {
                                for failure in &result.errors {
                                    tracing::warn!(
                                        function = %process.function,
                                        event_id = %result.event_id,
                                        subscriber = %failure.function,
                                        "fire-and-forget event not delivered: {}",
                                        failure.message
                                    );
                                }
                            }
                        }
                        drop(permit);
                    }
                    .in_current_span(),
                );
                return;
            }
            other => {
                if id.is_none() {
                    tracing::warn!(function = %self.function, method = other, "ignoring a notification of an unknown method");
                    return;
                }
                Err(RpcError::new(
                    error_code::METHOD_NOT_FOUND,
                    format!(
                        "method not found: {other:?} (a function may call publish, subscribe and unsubscribe)"
                    ),
                ))
            }
        };
        self.reply(id, outcome).await;
    }

    async fn reply(&self, id: Option<Id>, outcome: Result<Box<RawValue>, RpcError>) {
        let Some(id) = id else {
            if let Err(e) = outcome {
                tracing::warn!(function = %self.function, "a notification failed: {}", e.message);
            }
            return;
        };
        let mut line = Vec::with_capacity(128);
        let written = match &outcome {
            Ok(result) => write_response(&mut line, &id, Ok(&**result)),
            Err(error) => write_response::<()>(&mut line, &id, Err(error)),
        };
        if written.is_ok() {
            self.send(line).await;
        }
    }

    fn subscribe(
        &self,
        params: Option<&RawValue>,
        subscribe: bool,
    ) -> Result<Box<RawValue>, RpcError> {
        let params: SubscribeParams = parse_params(params)?;
        let bus = &self.host.bus;
        let result = if subscribe {
            bus.subscribe(&self.function, &params.event_type)
                .map_err(|e| RpcError::new(error_code::INVALID_PARAMS, e.to_string()))?;
            serde_json::value::to_raw_value(&SubscribeResult {
                subscribed: true,
                event_type: params.event_type,
            })
        } else {
            bus.unsubscribe(&self.function, &params.event_type);
            serde_json::value::to_raw_value(&UnsubscribeResult {
                unsubscribed: true,
                event_type: params.event_type,
            })
        };
        result.map_err(|e| RpcError::new(error_code::INTERNAL_ERROR, e.to_string()))
    }

    /// The causation of a publish this process makes: that of the call it names by
    /// `request_id`, else that of its only call in flight, else all of them merged.
    /// Also returns what the call it is attributed to is about, when there is one.
    fn cause_for_publish(
        &self,
        request_id: Option<&str>,
        detached: bool,
    ) -> (Causation, Option<CallMeta>) {
        let calls = self.calls.lock();
        let named =
            request_id.and_then(|rid| calls.pending.iter().find(|(_, p)| &*p.request_id == rid));
        let only = (calls.pending.len() == 1)
            .then(|| calls.pending.iter().next())
            .flatten();
        let (cause, request_id) = match named.or(only) {
            Some((id, call)) => (
                call.cause.caused_by(*id),
                Some(CallMeta {
                    request_id: call.request_id.clone(),
                    trace: call.trace.clone(),
                }),
            ),
            None if calls.pending.is_empty() => (Causation::root(), None),
            None => (
                Causation::merged(calls.pending.iter().map(|(id, call)| (&call.cause, *id))),
                None,
            ),
        };
        if detached {
            (cause.detached(), request_id)
        } else {
            (cause, request_id)
        }
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

/// Stands for a process's reader: if the reader is dropped before it has seen the process
/// end (the runtime it ran on shut down), nobody would read the answers, so the process is
/// terminated and its calls failed at once.
struct ReaderGuard(Option<Arc<Process>>);

impl Drop for ReaderGuard {
    fn drop(&mut self) {
        let Some(process) = self.0.take() else { return };
        let reason = "the thread that read its output stopped".to_owned();
        process.terminate(reason.clone());
        process.fail_all(Death {
            detail: format!("was stopped ({reason})"),
            protocol: false,
            stderr: process.stderr_tail(),
        });
    }
}

/// Takes care of a call whose caller may stop waiting: before the line is queued, dropping
/// the call withdraws it; after, a watchdog keeps the timeout running so that a process that
/// never answers is still killed and its slot freed.
struct CallGuard {
    process: Arc<Process>,
    id: u64,
    rx: Option<oneshot::Receiver<Result<Box<RawValue>, CallError>>>,
    sent: bool,
    deadline: tokio::time::Instant,
    timeout: Duration,
}

impl CallGuard {
    fn timed_out(&mut self) -> CallError {
        self.rx = None;
        give_up(&self.process, self.id, self.timeout);
        CallError::Timeout
    }
}

/// Gives up on call `id`, which got no answer within `timeout`: the process is terminated, and
/// only then is the call's slot freed, so that it is not handed to another request.
fn give_up(process: &Process, id: u64, timeout: Duration) {
    let pending = process.calls.lock().pending.remove(&id);
    if let Some(pending) = pending {
        process.terminate(format!(
            "a request got no answer within {}",
            crate::error::fmt_duration(timeout)
        ));
        drop(pending);
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        let Some(rx) = self.rx.take() else { return };
        if !self.sent {
            self.process.calls.lock().pending.remove(&self.id);
            return;
        }
        let process = self.process.clone();
        let (id, deadline, timeout) = (self.id, self.deadline, self.timeout);
        self.process.host.handle.spawn(async move {
            if tokio::time::timeout_at(deadline, rx).await.is_err() {
                give_up(&process, id, timeout);
            }
        });
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

async fn wait_loop(pid: u32, mut child: Child, exit: watch::Sender<Option<String>>) {
    let status = child.wait().await;
    // Whatever the function started in its group goes with it.
    signal_group(pid, Signal::SIGKILL);
    let _ = exit.send(Some(describe_exit(&status)));
}

fn parse_params<T: serde::de::DeserializeOwned>(params: Option<&RawValue>) -> Result<T, RpcError> {
    let text = params.map_or("null", RawValue::get);
    serde_json::from_str(text)
        .map_err(|e| RpcError::new(error_code::INVALID_PARAMS, format!("invalid params: {e}")))
}

/// The start of a line, for a log message.
fn preview(line: &[u8]) -> String {
    const MAX: usize = 200;
    let text = String::from_utf8_lossy(&line[..line.len().min(MAX)]);
    if line.len() > MAX {
        format!("{text}… ({} bytes)", line.len())
    } else {
        text.into_owned()
    }
}
