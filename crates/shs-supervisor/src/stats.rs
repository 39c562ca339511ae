//! What each function has done: counts and durations, for `GET /metrics` (through the
//! `metrics` facade, so that whichever exporter the binary installs sees them) and for
//! `GET /metrics/{name}` (kept here, per function, across redeployments); and its recent
//! activity, for the dashboard: requests, errors and a latency histogram per 10 s slot over the
//! last 15 minutes, in a ring of at most [`SLOTS`] slots (about 20 KiB per function that has
//! been called).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use metrics::{Counter, Histogram};
use parking_lot::Mutex;
use serde::Serialize;

use crate::error::{ErrorKind, InvokeError};

/// The outcome labels of `shs_invocations_total`.
const OUTCOMES: [&str; 6] = [
    "ok",
    "function_error",
    "bad_gateway",
    "unavailable",
    "timeout",
    "not_found",
];

fn outcome_of(result: Result<(), &InvokeError>) -> usize {
    match result.map_err(InvokeError::kind) {
        Ok(()) => 0,
        Err(ErrorKind::FunctionFailed) => 1,
        Err(ErrorKind::BadGateway) => 2,
        Err(ErrorKind::Unavailable) => 3,
        Err(ErrorKind::Timeout) => 4,
        Err(ErrorKind::NotFound) => 5,
    }
}

/// The summary of one function, for `GET /metrics/{name}`.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct FunctionStats {
    /// Invokes and event deliveries run.
    pub execution_count: u64,
    /// Their mean duration.
    pub average_duration_ms: f64,
    /// How many of them failed.
    pub error_count: u64,
    /// Starts made because a request or event found no process.
    pub cold_start_count: u64,
    /// When the last one ended, RFC 3339.
    pub last_execution_time: Option<String>,
    /// Invokes run (`POST /run`).
    pub invocations: u64,
    /// Event deliveries run.
    pub deliveries: u64,
}

/// The counters of one function.
pub(crate) struct Stats {
    invocations: AtomicU64,
    deliveries: AtomicU64,
    errors: AtomicU64,
    total_ns: AtomicU64,
    recent: Mutex<Recent>,
    by_outcome: [Counter; 6],
    duration: Histogram,
    deliveries_counter: Counter,
}

impl Stats {
    pub(crate) fn new(function: &str) -> Stats {
        let name = function.to_owned();
        Stats {
            invocations: AtomicU64::new(0),
            deliveries: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            total_ns: AtomicU64::new(0),
            recent: Mutex::new(Recent::default()),
            by_outcome: OUTCOMES.map(|outcome| {
                metrics::counter!("shs_invocations_total", "function" => name.clone(), "outcome" => outcome)
            }),
            duration: metrics::histogram!("shs_invocation_duration_seconds", "function" => name.clone()),
            deliveries_counter: metrics::counter!("shs_function_event_deliveries_total", "function" => name),
        }
    }

    /// Records one invoke (`event` false) or event delivery (`event` true).
    pub(crate) fn record(&self, event: bool, took: Duration, result: Result<(), &InvokeError>) {
        if event {
            self.deliveries.fetch_add(1, Ordering::Relaxed);
            self.deliveries_counter.increment(1);
        } else {
            self.invocations.fetch_add(1, Ordering::Relaxed);
            self.by_outcome[outcome_of(result)].increment(1);
            self.duration.record(took.as_secs_f64());
        }
        if result.is_err() {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        self.total_ns.fetch_add(
            u64::try_from(took.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        let now = SystemTime::now();
        let mut recent = self.recent.lock();
        recent.last = Some(now);
        recent.record(now, took, result.is_err());
    }

    /// The activity of the last 15 minutes.
    pub(crate) fn activity(&self) -> Activity {
        self.recent.lock().activity(SystemTime::now())
    }

    pub(crate) fn summary(&self, cold_starts: u64) -> FunctionStats {
        let invocations = self.invocations.load(Ordering::Relaxed);
        let deliveries = self.deliveries.load(Ordering::Relaxed);
        let count = invocations + deliveries;
        let total_ms = self.total_ns.load(Ordering::Relaxed) as f64 / 1e6;
        FunctionStats {
            execution_count: count,
            average_duration_ms: if count == 0 {
                0.0
            } else {
                (total_ms / count as f64 * 1000.0).round() / 1000.0
            },
            error_count: self.errors.load(Ordering::Relaxed),
            cold_start_count: cold_starts,
            last_execution_time: self
                .recent
                .lock()
                .last
                .map(|t| humantime::format_rfc3339_millis(t).to_string()),
            invocations,
            deliveries,
        }
    }
}

/// The width of one slot of the activity ring.
pub const SLOT: Duration = Duration::from_secs(10);

/// The slots kept: 15 minutes.
pub const SLOTS: usize = 90;

/// Latency buckets: the first is up to 8 µs, each next one √2 wider, the last open-ended
/// (from about 25 minutes).
const BUCKETS: usize = 56;

/// The lower bound of the first bounded bucket, in µs.
const FIRST_US: f64 = 8.0;

/// The histogram bucket of a duration.
fn bucket_of(took: Duration) -> usize {
    let us = took.as_secs_f64() * 1e6;
    if us < FIRST_US {
        return 0;
    }
    // Bucket b >= 1 holds [8 µs * 2^((b-1)/2), 8 µs * 2^(b/2)).
    let b = ((us / FIRST_US).log2() * 2.0).floor() as usize + 1;
    b.min(BUCKETS - 1)
}

/// The duration a bucket stands for, in ms: the geometric middle of its bounds.
fn bucket_ms(b: usize) -> f64 {
    let us = if b == 0 {
        FIRST_US / 2.0
    } else {
        FIRST_US * 2f64.powf((b as f64 - 0.5) / 2.0)
    };
    (us / 1e3 * 1e3).round() / 1e3
}

/// The `q` quantile (0 to 1) of a histogram, as the duration its bucket stands for.
fn quantile(histogram: &[u32; BUCKETS], q: f64) -> Option<f64> {
    let total: u64 = histogram.iter().map(|&n| u64::from(n)).sum();
    if total == 0 {
        return None;
    }
    let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
    let mut seen = 0;
    for (b, &n) in histogram.iter().enumerate() {
        seen += u64::from(n);
        if seen >= rank {
            return Some(bucket_ms(b));
        }
    }
    None
}

/// One slot of the ring.
#[derive(Clone)]
struct Slot {
    /// Seconds since the epoch divided by the slot's width.
    index: u64,
    requests: u32,
    errors: u32,
    latency: [u32; BUCKETS],
}

/// The last execution, and the activity ring.
#[derive(Default)]
struct Recent {
    last: Option<SystemTime>,
    slots: VecDeque<Slot>,
}

fn slot_index(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / SLOT.as_secs())
}

impl Recent {
    fn record(&mut self, now: SystemTime, took: Duration, failed: bool) {
        let index = slot_index(now);
        if self.slots.back().is_none_or(|s| s.index < index) {
            self.slots.push_back(Slot {
                index,
                requests: 0,
                errors: 0,
                latency: [0; BUCKETS],
            });
        }
        while self.slots.len() > SLOTS
            || self
                .slots
                .front()
                .is_some_and(|s| s.index + SLOTS as u64 <= index)
        {
            self.slots.pop_front();
        }
        // The clock may step back: count it in the latest slot.
        if let Some(slot) = self.slots.back_mut() {
            slot.requests = slot.requests.saturating_add(1);
            slot.errors = slot.errors.saturating_add(u32::from(failed));
            let b = bucket_of(took);
            slot.latency[b] = slot.latency[b].saturating_add(1);
        }
    }

    fn activity(&self, now: SystemTime) -> Activity {
        let newest = slot_index(now);
        let oldest = newest.saturating_sub(SLOTS as u64 - 1);
        let mut merged = [0u32; BUCKETS];
        let mut points = Vec::with_capacity(SLOTS);
        let (mut requests, mut errors) = (0u64, 0u64);
        let mut slots = self.slots.iter().filter(|s| s.index >= oldest).peekable();
        for index in oldest..=newest {
            let slot = slots.next_if(|s| s.index <= index);
            let point = match slot {
                Some(slot) => {
                    for (m, n) in merged.iter_mut().zip(slot.latency) {
                        *m = m.saturating_add(n);
                    }
                    requests += u64::from(slot.requests);
                    errors += u64::from(slot.errors);
                    Point {
                        time: index * SLOT.as_secs(),
                        requests: slot.requests,
                        errors: slot.errors,
                        p50_ms: quantile(&slot.latency, 0.5),
                        p99_ms: quantile(&slot.latency, 0.99),
                    }
                }
                None => Point {
                    time: index * SLOT.as_secs(),
                    requests: 0,
                    errors: 0,
                    p50_ms: None,
                    p99_ms: None,
                },
            };
            points.push(point);
        }
        Activity {
            step_seconds: SLOT.as_secs(),
            requests,
            errors,
            p50_ms: quantile(&merged, 0.5),
            p99_ms: quantile(&merged, 0.99),
            points,
        }
    }
}

/// One slot of a function's recent activity.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Point {
    /// When the slot starts, in seconds since the epoch.
    pub time: u64,
    /// Invokes and deliveries that ended in it.
    pub requests: u32,
    /// How many of them failed.
    pub errors: u32,
    /// Their median duration (to within the √2 histogram bucket), if there were any.
    pub p50_ms: Option<f64>,
    /// Their 99th percentile duration, likewise.
    pub p99_ms: Option<f64>,
}

/// A function's activity over the last 15 minutes ([`SLOTS`] slots of [`SLOT`]).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Activity {
    /// The width of a slot, in seconds.
    pub step_seconds: u64,
    /// Invokes and deliveries in the window.
    pub requests: u64,
    /// How many of them failed.
    pub errors: u64,
    /// Their median duration, if there were any.
    pub p50_ms: Option<f64>,
    /// Their 99th percentile duration.
    pub p99_ms: Option<f64>,
    /// Every slot, oldest first, the current one last.
    pub points: Vec<Point>,
}

/// One live process of an rpc function.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ProcessInfo {
    /// Its pid.
    pub pid: u32,
    /// When it answered `initialize`, RFC 3339.
    pub started: String,
    /// Seconds since then.
    pub uptime_seconds: f64,
    /// Requests and deliveries it has been given.
    pub requests: u64,
    /// Those it is handling now.
    pub in_flight: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_grow_by_root_two_and_quantiles_land_in_them() {
        assert_eq!(bucket_of(Duration::from_micros(1)), 0);
        assert_eq!(bucket_of(Duration::from_micros(8)), 1);
        assert_eq!(bucket_of(Duration::from_micros(12)), 2);
        assert_eq!(bucket_of(Duration::from_micros(16)), 3);
        assert_eq!(bucket_of(Duration::from_secs(86_400)), BUCKETS - 1);
        for ms in [0.05, 1.0, 3.7, 250.0, 9_000.0] {
            let b = bucket_of(Duration::from_secs_f64(ms / 1e3));
            let shown = bucket_ms(b);
            assert!(
                shown / ms < 1.42 && ms / shown < 1.42,
                "{ms} ms shown as {shown}"
            );
        }
        let mut h = [0u32; BUCKETS];
        assert_eq!(quantile(&h, 0.5), None);
        h[bucket_of(Duration::from_millis(1))] = 98;
        h[bucket_of(Duration::from_millis(100))] = 2;
        let p50 = quantile(&h, 0.5).expect("p50");
        let p99 = quantile(&h, 0.99).expect("p99");
        assert!((0.7..1.42).contains(&p50), "{p50}");
        assert!((70.0..142.0).contains(&p99), "{p99}");
    }

    #[test]
    fn the_ring_keeps_fifteen_minutes_in_slots() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut recent = Recent::default();
        recent.record(t0, Duration::from_millis(2), false);
        recent.record(t0 + Duration::from_secs(1), Duration::from_millis(2), true);
        recent.record(
            t0 + Duration::from_secs(25),
            Duration::from_millis(5),
            false,
        );
        let a = recent.activity(t0 + Duration::from_secs(30));
        assert_eq!(a.points.len(), SLOTS);
        assert_eq!((a.requests, a.errors), (3, 1));
        let last = &a.points[SLOTS - 1];
        assert_eq!(last.time, 1_000_030);
        assert_eq!(last.requests, 0);
        assert_eq!(a.points[SLOTS - 2].requests, 1);
        assert_eq!(a.points[SLOTS - 4].requests, 2);
        assert_eq!(a.points[SLOTS - 4].errors, 1);
        // 20 minutes on, all of it has left the window, and the ring stays bounded.
        for i in 0..1_000 {
            recent.record(
                t0 + Duration::from_secs(1_200 + i * 7),
                Duration::ZERO,
                false,
            );
        }
        assert!(recent.slots.len() <= SLOTS);
        let a = recent.activity(t0 + Duration::from_secs(1_200 + 7_000));
        assert_eq!(a.points.len(), SLOTS);
        assert!(a.requests < 1_000);
        assert!(a.points.windows(2).all(|w| w[1].time == w[0].time + 10));
    }
}
