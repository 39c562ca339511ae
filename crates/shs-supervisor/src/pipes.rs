//! Reading a child's stdout and stderr in bounded memory.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::BytesMut;
use futures::StreamExt;
use parking_lot::Mutex;
use shs_protocol::codec::{Line, LineDecoder, LineError, OverLong};
use tokio::io::AsyncRead;
use tokio_util::codec::{Decoder, FramedRead};

use crate::logs::LogRing;

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

/// Drains `stderr` until it closes: each line (cut at `max_line` bytes) is logged with the
/// function's name and pid, and the request id that `request_id` names at that moment, and kept
/// in `tail` and in the function's log ring.
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
    while let Some(item) = lines.next().await {
        let line = match item {
            Ok(line) => line,
            Err(ReadError::TooLong(_)) => continue,
            Err(ReadError::Io(_)) => break,
        };
        let text = String::from_utf8_lossy(&line.bytes);
        let cut = if line.truncated { " [line cut]" } else { "" };
        let rid = request_id();
        ring.push(pid, rid.as_deref(), "stderr", &format!("{text}{cut}"));
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
        tail.push(&text);
    }
}
