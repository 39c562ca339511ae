//! Reading a child's stdout and stderr in bounded memory.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::BytesMut;
use futures::StreamExt;
use parking_lot::Mutex;
use shs_protocol::codec::{Line, LineDecoder, LineError, OverLong};
use tokio::io::AsyncRead;
use tokio_util::codec::{Decoder, FramedRead};

use crate::logs::{LOG_RATE, LogRing, MARKER_EVERY};

/// How many stderr lines are kept for error messages.
const TAIL_LINES: usize = 20;
/// How much of one stderr line is kept for error messages.
const TAIL_LINE_LEN: usize = 1000;

/// A [`LineDecoder`] for a `FramedRead`.
pub(crate) struct LineCodec(pub(crate) LineDecoder);

/// Why a line could not be read.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// A line passed the limit (with [`OverLong::Error`]).
    TooLong(usize),
    /// The pipe failed.
    Io(std::io::Error),
}

impl From<std::io::Error> for ReadError {
    fn from(e: std::io::Error) -> Self {
        ReadError::Io(e)
    }
}

fn too_long(LineError::TooLong { limit }: LineError) -> ReadError {
    ReadError::TooLong(limit)
}

impl Decoder for LineCodec {
    type Item = Line;
    type Error = ReadError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Line>, ReadError> {
        self.0.decode(src).map_err(too_long)
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Line>, ReadError> {
        self.0.decode_eof(src).map_err(too_long)
    }
}

/// The last lines a process wrote to stderr.
#[derive(Clone, Default)]
pub(crate) struct StderrTail(Arc<Mutex<VecDeque<String>>>);

impl StderrTail {
    fn push(&self, line: &str) {
        let mut tail = self.0.lock();
        if tail.len() == TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(line.chars().take(TAIL_LINE_LEN).collect());
    }

    /// The lines, oldest first.
    pub(crate) fn lines(&self) -> Vec<String> {
        self.0.lock().iter().cloned().collect()
    }
}

/// Drains `stderr` until it closes: each line (cut at `max_line` bytes) is kept in `tail` and in
/// the function's log ring, and logged with the function's name and pid, and the request id
/// that `request_id` names at that moment, as far as the function's log rate allows (see
/// [`crate::logs`]).
pub(crate) async fn drain_stderr<R: AsyncRead + Unpin>(
    stderr: R,
    max_line: usize,
    function: &str,
    pid: u32,
    tail: StderrTail,
    ring: &LogRing,
    request_id: impl Fn() -> Option<Arc<str>>,
) {
    let mut lines = FramedRead::new(
        stderr,
        LineCodec(LineDecoder::new(max_line, OverLong::Truncate)),
    );
    loop {
        // A quiet second after a flood: say what was left out of shs's log.
        let item = match tokio::time::timeout(MARKER_EVERY, lines.next()).await {
            Ok(Some(item)) => item,
            Ok(None) => break,
            Err(_) => {
                report_left_out(function, pid, ring, true);
                continue;
            }
        };
        let line = match item {
            Ok(line) => line,
            Err(ReadError::TooLong(_)) => continue,
            Err(ReadError::Io(_)) => break,
        };
        let text = String::from_utf8_lossy(&line.bytes);
        let cut = if line.truncated { " [line cut]" } else { "" };
        let rid = request_id();
        ring.push(pid, rid.as_deref(), "stderr", &format!("{text}{cut}"));
        tail.push(&text);
        // Every line is in the ring; shs's own log takes them at a bounded rate.
        report_left_out(function, pid, ring, false);
        if !ring.admit_to_log(text.len() + cut.len()) {
            continue;
        }
        match rid {
            Some(rid) => tracing::info!(
                target: "shs::function",
                function,
                pid,
                request_id = %rid,
                "{text}{cut}"
            ),
            None => tracing::info!(target: "shs::function", function, pid, "{text}{cut}"),
        }
    }
    report_left_out(function, pid, ring, true);
}

/// Says (in shs's log and the ring) and counts how many stderr lines of the function were
/// left out of shs's log, when some were and a marker is due (or `now`).
fn report_left_out(function: &str, pid: u32, ring: &LogRing, now: bool) {
    let Some(n) = ring.take_left_out(now) else {
        return;
    };
    metrics::counter!("shs_function_log_lines_dropped_total", "function" => function.to_owned())
        .increment(n);
    let kib = LOG_RATE / 1024;
    tracing::warn!(
        target: "shs::function",
        function,
        pid,
        left_out = n,
        "{n} lines of the function's stderr not written to shs's log: over {kib} KiB a second (GET /functions/{function}/logs has the latest)"
    );
    ring.push(
        pid,
        None,
        "shs",
        &format!("{n} lines of stderr not written to shs's log: over {kib} KiB a second"),
    );
}
