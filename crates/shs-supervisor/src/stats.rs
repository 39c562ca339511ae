//! What each function has done: counts and durations, for `GET /metrics` (through the
//! `metrics` facade, so that whichever exporter the binary installs sees them) and for
//! `GET /metrics/{name}` (kept here, per function, across redeployments).

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
    last: Mutex<Option<SystemTime>>,
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
            last: Mutex::new(None),
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
        *self.last.lock() = Some(SystemTime::now());
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
                .last
                .lock()
                .map(|t| humantime::format_rfc3339_millis(t).to_string()),
            invocations,
            deliveries,
        }
    }
}
