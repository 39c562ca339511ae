//! The recent log lines of each function, in a bounded ring.
//!
//! Every stderr line of a function's processes (and a line when one of them starts or ends)
//! goes into the function's ring, numbered, so that `GET /functions/{name}/logs` can show the
//! last lines and follow new ones. The ring is bounded by bytes, not lines: a function that
//! floods its stderr costs at most [`RING_BYTES`].

use std::collections::VecDeque;

use parking_lot::Mutex;
use serde::Serialize;

/// The most bytes of log text kept per function.
pub const RING_BYTES: usize = 256 * 1024;

/// One line of a function's log.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct LogLine {
    /// Its number: lines are numbered from 1, in order, per function.
    pub seq: u64,
    /// When it was read, RFC 3339.
    pub time: String,
    /// The process that wrote it.
    pub pid: u32,
    /// The request in flight when it was written, if one was.
    pub request_id: Option<String>,
    /// `stderr` for what the function wrote, `shs` for what the supervisor says about it.
    pub stream: &'static str,
    /// The line.
    pub message: String,
}

#[derive(Default)]
struct Ring {
    lines: VecDeque<LogLine>,
    bytes: usize,
    next: u64,
}

/// The recent log lines of one function.
#[derive(Default)]
pub(crate) struct LogRing(Mutex<Ring>);

impl LogRing {
    /// Adds a line, dropping the oldest ones past [`RING_BYTES`].
    pub(crate) fn push(
        &self,
        pid: u32,
        request_id: Option<&str>,
        stream: &'static str,
        message: &str,
    ) {
        let time = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
        let mut ring = self.0.lock();
        ring.next += 1;
        let line = LogLine {
            seq: ring.next,
            time,
            pid,
            request_id: request_id.map(str::to_owned),
            stream,
            message: message.to_owned(),
        };
        ring.bytes += line.message.len();
        ring.lines.push_back(line);
        while ring.bytes > RING_BYTES {
            let Some(old) = ring.lines.pop_front() else {
                break;
            };
            ring.bytes -= old.message.len();
        }
    }

    /// The last `n` lines.
    pub(crate) fn tail(&self, n: usize) -> Vec<LogLine> {
        let ring = self.0.lock();
        let skip = ring.lines.len().saturating_sub(n);
        ring.lines.iter().skip(skip).cloned().collect()
    }

    /// The lines after number `seq` (at most `limit`).
    pub(crate) fn after(&self, seq: u64, limit: usize) -> Vec<LogLine> {
        let ring = self.0.lock();
        ring.lines
            .iter()
            .filter(|l| l.seq > seq)
            .take(limit)
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_order_numbers_and_a_byte_bound() {
        let ring = LogRing::default();
        for i in 0..10 {
            ring.push(7, Some("r"), "stderr", &format!("line {i}"));
        }
        let tail = ring.tail(3);
        assert_eq!(tail.iter().map(|l| l.seq).collect::<Vec<_>>(), [8, 9, 10]);
        assert_eq!(tail[2].message, "line 9");
        assert_eq!(ring.after(8, 100).len(), 2);
        assert_eq!(ring.after(10, 100), []);
        let big = "x".repeat(100 * 1024);
        for _ in 0..5 {
            ring.push(7, None, "stderr", &big);
        }
        let all = ring.tail(usize::MAX);
        assert!(all.iter().map(|l| l.message.len()).sum::<usize>() <= RING_BYTES);
        assert_eq!(all.last().map(|l| l.seq), Some(15), "numbers go on");
    }
}
