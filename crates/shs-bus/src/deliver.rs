//! The interface between the bus and whoever runs functions.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use crate::causation::Causation;
use serde_json::value::RawValue;

use crate::event::SharedEvent;
use crate::store::InvocationWork;

/// Why a delivery failed, and whether trying again may help.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveryError {
    /// The HTTP status the same failure gets on `/run`: 404 (no such function), 500 (the
    /// function answered an error), 502 (it crashed or broke the protocol), 503 (it could not
    /// start or is at capacity), 504 (it timed out).
    pub status: u16,
    /// What happened.
    pub message: String,
    /// Whether a later attempt may succeed.
    pub retryable: bool,
    /// Whether the event reached the function (or may have). False when it was never sent:
    /// the supervisor was shutting down, or the function was redeployed or removed while the
    /// delivery waited for a process. Such a delivery does not use up an attempt.
    pub attempted: bool,
}

impl DeliveryError {
    /// A failure that a retry may fix.
    pub fn retryable(status: u16, message: impl Into<String>) -> DeliveryError {
        DeliveryError {
            status,
            message: message.into(),
            retryable: true,
            attempted: true,
        }
    }

    /// A delivery that was never sent to the function (see [`DeliveryError::attempted`]): it is
    /// made again later without counting as an attempt.
    pub fn not_attempted(status: u16, message: impl Into<String>) -> DeliveryError {
        DeliveryError {
            status,
            message: message.into(),
            retryable: true,
            attempted: false,
        }
    }

    /// A failure that no retry can fix.
    pub fn permanent(status: u16, message: impl Into<String>) -> DeliveryError {
        DeliveryError {
            status,
            message: message.into(),
            retryable: false,
            attempted: true,
        }
    }
}

/// How asynchronous deliveries to one function are retried and ordered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts before the delivery becomes a dead letter (at least 1).
    pub max_attempts: u32,
    /// The wait after the first failed attempt; it doubles with each failure (with jitter).
    pub backoff: Duration,
    /// The longest wait between two attempts.
    pub max_backoff: Duration,
    /// Deliver events of one type one at a time, in the order they were stored.
    pub ordered: bool,
    /// Deliveries in flight at once to the function.
    pub max_in_flight: usize,
    /// The function's timeout (a delivery may take twice that: waiting for a process, then
    /// the call).
    pub timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(300),
            ordered: true,
            max_in_flight: 4,
            timeout: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// The wait after failed attempt `attempt` (1-based): exponential, with full jitter in
    /// its upper half so that retries of many events spread out.
    pub fn delay(&self, attempt: u32, jitter: f64) -> Duration {
        let doublings = attempt.saturating_sub(1).min(30);
        let full = self
            .backoff
            .saturating_mul(1u32 << doublings.min(31))
            .min(self.max_backoff);
        full.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
    }
}

/// Delivers an event to one function. Implemented by the supervisor.
pub trait Deliver: Send + Sync + 'static {
    /// Runs `function` on `event`, and resolves once it has answered.
    fn deliver(
        &self,
        function: Arc<str>,
        event: Arc<SharedEvent>,
        cause: Causation,
    ) -> BoxFuture<'static, Result<(), DeliveryError>>;

    /// Runs `function` on an asynchronous invocation, and resolves with its answer (any JSON:
    /// the function's whole HTTP answer when it gave one).
    fn invoke(
        &self,
        function: Arc<str>,
        work: Arc<InvocationWork>,
        cause: Causation,
    ) -> BoxFuture<'static, Result<Box<RawValue>, DeliveryError>> {
        let _ = (function, work, cause);
        Box::pin(async {
            Err(DeliveryError::permanent(
                501,
                "this deliverer does not run invocations",
            ))
        })
    }

    /// How asynchronous deliveries to `function` are retried and ordered.
    fn retry_policy(&self, function: &str) -> RetryPolicy {
        let _ = function;
        RetryPolicy::default()
    }
}
