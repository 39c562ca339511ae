//! The recent log lines of each function, in a bounded ring.
//!
//! Every stderr line of a function's processes (and a line when one of them starts or ends)
//! goes into the function's ring, numbered, so that `GET /functions/{name}/logs` can show the
//! last lines and follow new ones. The ring is bounded by bytes, each line counted with a fixed
//! overhead ([`LINE_OVERHEAD`], so that empty lines are not free), and by [`MAX_LINES`]: a
//! function that floods its stderr costs at most [`RING_BYTES`].
//!
//! The ring takes every line. shs's own log (its stderr) takes a function's lines only up to
//! [`LOG_RATE`] bytes a second (bursts of [`LOG_BURST`]), counted per function across its
//! processes: past it, lines are left out of shs's log, and at most every [`MARKER_EVERY`] (and
//! when the flood stops) a marker line in both says how many, and
//! `shs_function_log_lines_dropped_total` counts them.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Serialize;

/// The most bytes of log lines kept per function, each counted as its text plus
/// [`LINE_OVERHEAD`].
pub const RING_BYTES: usize = 256 * 1024;
/// What a line costs beyond its text and request id: the [`LogLine`] itself, its time, and
/// their allocations.
pub const LINE_OVERHEAD: usize = std::mem::size_of::<LogLine>() + 64;
/// The most lines kept per function (the byte bound keeps fewer: this is a second guard).
pub const MAX_LINES: usize = 10_000;
/// How many bytes a second of a function's stderr go to shs's own log, sustained (a line
/// costing its length plus [`LINE_OVERHEAD`]).
pub const LOG_RATE: usize = 64 * 1024;
/// How many bytes of a function's stderr go to shs's own log at once, after a quiet spell.
pub const LOG_BURST: usize = 256 * 1024;
/// How often, at most, a marker says how many lines were left out of shs's log.
pub const MARKER_EVERY: Duration = Duration::from_secs(1);

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

fn cost(line: &LogLine) -> usize {
    line.message.len() + line.request_id.as_ref().map_or(0, String::len) + LINE_OVERHEAD
}

/// The token bucket of what goes to shs's own log, and what it left out.
struct Budget {
    tokens: f64,
    refilled: Instant,
    left_out: u64,
    marked: Instant,
}

impl Default for Budget {
    fn default() -> Self {
        let now = Instant::now();
        Budget {
            tokens: LOG_BURST as f64,
            refilled: now,
            left_out: 0,
            marked: now,
        }
    }
}

/// The recent log lines of one function.
#[derive(Default)]
pub(crate) struct LogRing(Mutex<Ring>, Mutex<Budget>);

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
        ring.bytes += cost(&line);
        ring.lines.push_back(line);
        while ring.bytes > RING_BYTES || ring.lines.len() > MAX_LINES {
            let Some(old) = ring.lines.pop_front() else {
                break;
            };
            ring.bytes -= cost(&old);
        }
    }

    /// Whether a stderr line of `len` bytes may also go to shs's own log; one that may not is
    /// counted as left out.
    pub(crate) fn admit_to_log(&self, len: usize) -> bool {
        let mut budget = self.1.lock();
        let now = Instant::now();
        let elapsed = now.duration_since(budget.refilled).as_secs_f64();
        budget.tokens = (budget.tokens + elapsed * LOG_RATE as f64).min(LOG_BURST as f64);
        budget.refilled = now;
        let cost = (len + LINE_OVERHEAD) as f64;
        if budget.tokens >= cost {
            budget.tokens -= cost;
            true
        } else {
            budget.left_out += 1;
            false
        }
    }

    /// How many lines were left out of shs's log since the last marker, when there are some and
    /// a marker is due ([`MARKER_EVERY`] after the last, or at once with `now`); the count starts
    /// again.
    pub(crate) fn take_left_out(&self, now: bool) -> Option<u64> {
        let mut budget = self.1.lock();
        let due = now || budget.marked.elapsed() >= MARKER_EVERY;
        if budget.left_out == 0 || !due {
            return None;
        }
        budget.marked = Instant::now();
        Some(std::mem::take(&mut budget.left_out))
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

    #[test]
    fn empty_lines_are_not_free() {
        let ring = LogRing::default();
        for _ in 0..200_000 {
            ring.push(7, Some("a-request-id"), "stderr", "");
        }
        let all = ring.tail(usize::MAX);
        assert!(
            all.len() <= RING_BYTES / LINE_OVERHEAD,
            "{} lines",
            all.len()
        );
        assert!(all.iter().map(cost).sum::<usize>() <= RING_BYTES);
        assert_eq!(all.last().map(|l| l.seq), Some(200_000));
        let inner = ring.0.lock();
        assert_eq!(inner.bytes, all.iter().map(cost).sum::<usize>());
    }

    #[test]
    fn the_log_takes_a_burst_then_counts_what_it_leaves_out() {
        let ring = LogRing::default();
        let admitted = (0..100_000).filter(|_| ring.admit_to_log(0)).count();
        // The burst, and what trickled in meanwhile (far less than the burst again).
        assert!(admitted >= LOG_BURST / LINE_OVERHEAD, "{admitted}");
        assert!(admitted < 2 * LOG_BURST / LINE_OVERHEAD, "{admitted}");
        let left_out = ring.take_left_out(true).expect("some were left out");
        assert_eq!(left_out as usize, 100_000 - admitted);
        assert_eq!(ring.take_left_out(true), None, "counted once");
        // Not due again until MARKER_EVERY has passed.
        assert!(!ring.admit_to_log(LOG_BURST));
        assert_eq!(ring.take_left_out(false), None);
    }
}
