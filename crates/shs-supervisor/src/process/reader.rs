//! The reader: the task that owns a process's stdout.
//!
//! Each line is an answer (handed to its call), a request or notification from the function
//! (served by [`super::requests`]), or garbage (logged, and salvaged where it names an id).
//! When stdout ends, the reader waits for the exit, says how the process ended, and fails every
//! call still in flight with that.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::StreamExt;
use shs_protocol::codec::{LineDecoder, OverLong};
use shs_protocol::methods::error_code;
use shs_protocol::{Id, Message, ParseError, RpcError};
use tokio::net::unix::pipe;
use tokio_util::codec::FramedRead;

use super::requests::Permits;
use super::{CallError, Death, EXIT_AFTER_EOF, Process};
use crate::pipes::{LineCodec, ReadError};

/// How many of a process's own requests (publish) may be served at once.
pub(super) const MAX_FUNCTION_REQUESTS: usize = 256;

impl Process {
    /// Reads stdout to its end, then fails every call in flight with how the process ended.
    pub(super) async fn read_loop(self: Arc<Self>, stdout: pipe::Receiver, mut guard: ReaderGuard) {
        let decoder = LineDecoder::new(self.host.config.max_line, OverLong::Error);
        let mut lines = FramedRead::with_capacity(stdout, LineCodec(decoder), 64 * 1024);
        let permits = Permits::new(self.host.config.max_line);
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

    async fn handle_line(self: &Arc<Self>, line: &[u8], permits: &Permits) {
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

/// Stands for a process's reader: if the reader is dropped before it has seen the process
/// end (the runtime it ran on shut down), nobody would read the answers, so the process is
/// terminated and its calls failed at once.
pub(super) struct ReaderGuard(pub(super) Option<Arc<Process>>);

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
