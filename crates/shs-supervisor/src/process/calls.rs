//! The supervisor's calls to a process (`initialize`, `invoke`, `event`) and their guards.
//!
//! A call registers a [`Pending`] entry under a supervisor-wide id, with the pool slot it
//! occupies, writes its line, and waits for the reader to hand it the answer ([`Process::answer`]).
//! A caller that stops waiting does not free the slot: [`CallGuard`] withdraws a call not yet
//! written, and keeps the timeout of one already written running, so that a process that never
//! answers is still terminated and its slot freed only then.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use serde_json::value::RawValue;
use shs_bus::Causation;
use shs_protocol::methods::{self, error_code};
use shs_protocol::{Id, Response, RpcError, write_request};
use tokio::sync::oneshot;

use super::Process;
use crate::pool::Slot;
use crate::stream::StreamTx;

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

/// Why a call got no result.
#[derive(Debug)]
pub(crate) enum CallError {
    /// The function answered with an error.
    Rpc(RpcError),
    /// The process is gone; the call may or may not have been seen.
    Died(Death),
    /// The process was going or gone before the call was written: the function never saw it,
    /// so it may be made again elsewhere.
    NotSent(Death),
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
#[derive(Debug)]
pub(crate) struct CallMeta {
    /// `context.request_id`.
    pub(crate) request_id: Arc<str>,
    /// The W3C trace context, passed on to what the call publishes.
    pub(crate) trace: Option<Arc<str>>,
    /// Where the function's `stream` notifications for this call go, if it may stream.
    pub(crate) stream: Option<StreamTx>,
}

impl CallMeta {
    pub(crate) fn new(request_id: &str, trace: Option<&str>) -> CallMeta {
        CallMeta {
            request_id: Arc::from(request_id),
            trace: trace.map(Arc::from),
            stream: None,
        }
    }
}

/// A call waiting for its answer.
pub(super) struct Pending {
    pub(super) tx: oneshot::Sender<Result<Box<RawValue>, CallError>>,
    pub(super) cause: Causation,
    pub(super) request_id: Arc<str>,
    pub(super) trace: Option<Arc<str>>,
    /// Where its `stream` notifications go, for an invoke that may stream.
    pub(super) stream: Option<StreamTx>,
    /// The pool slot the call occupies; released when the answer arrives or the process dies,
    /// whatever became of the caller.
    _slot: Option<Slot>,
}

/// The calls in flight on one process, by id.
#[derive(Default)]
pub(super) struct Calls {
    pub(super) pending: HashMap<u64, Pending>,
    /// Set once the process is dead: no call is accepted after that.
    pub(super) death: Option<Death>,
}

impl Process {
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
        if let Some(stream) = &meta.stream {
            stream.bind(self, id);
        }
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
                return Err(CallError::NotSent(death.clone()));
            }
            if self.is_doomed() && method != methods::INITIALIZE {
                drop(calls);
                return Err(CallError::NotSent(self.death_or_unknown()));
            }
            calls.pending.insert(
                id,
                Pending {
                    tx,
                    cause,
                    request_id: meta.request_id,
                    trace: meta.trace,
                    stream: meta.stream,
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

    /// Tells the function to stop working on call `id` (its client went away): a `cancel`
    /// notification, if the call is still in flight. The call still ends with its answer.
    pub(crate) fn cancel(&self, id: u64) {
        if !self.calls.lock().pending.contains_key(&id) {
            return;
        }
        let mut line = Vec::with_capacity(64);
        let params = serde_json::json!({ "id": id });
        if shs_protocol::write_notification(&mut line, methods::CANCEL, &params).is_ok() {
            let _ = self.stdin.write(&line, false);
            tracing::debug!(function = %self.function, pid = self.pid, id, "cancel sent: the client went away");
        }
    }

    /// Hands a `stream` notification's chunk to the call it names, waiting while the stream's
    /// channel is full (back-pressure; until the process exits, if it does first).
    pub(super) async fn stream_chunk(&self, params: Option<&RawValue>) {
        let (id, chunk) = match crate::stream::decode(params) {
            Ok(decoded) => decoded,
            Err(e) => {
                tracing::warn!(function = %self.function, pid = self.pid, "ignoring a stream notification: {e}");
                return;
            }
        };
        let sender = self
            .calls
            .lock()
            .pending
            .get(&id)
            .and_then(|p| p.stream.as_ref().map(StreamTx::sender));
        let Some(sender) = sender else {
            tracing::warn!(
                function = %self.function,
                pid = self.pid,
                id,
                "ignoring a stream notification for an id that is no invoke of this process in flight over HTTP"
            );
            return;
        };
        let mut exit = self.exit.clone();
        tokio::select! {
            // An error: the client went away; the function gets `cancel`.
            _ = sender.send(Box::new(chunk)) => {}
            _ = exit.wait_for(Option::is_some) => {}
        }
    }

    /// Hands an answer from the function to the call it answers.
    pub(super) fn answer(&self, response: Response) {
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
