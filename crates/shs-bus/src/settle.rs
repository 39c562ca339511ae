//! Asynchronous delivery attempts, written once for every backend: making one ([`attempt`])
//! and deciding what comes of it ([`Settled`]: delivered, retried after a backoff with jitter,
//! a dead letter, or postponed when it was never sent). The embedded lanes and the NATS
//! consumers only record the decision.

use std::sync::Arc;
use std::time::Duration;

use crate::causation::Causation;
use crate::deliver::{Deliver, DeliveryError, RetryPolicy};
use crate::event::{SharedEvent, now};
use crate::store::{Attempt, InvocationWork};
use serde_json::value::RawValue;

/// How an attempt of an asynchronous delivery ended, and what comes next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Settled {
    /// Delivered: nothing more to do.
    Delivered(Attempt),
    /// Failed; try again after this wait.
    Retry(Attempt, Duration),
    /// Failed for good: a dead letter.
    Dead(Attempt),
    /// Never sent to the function (the supervisor was stopping, or the function was
    /// redeployed or removed meanwhile): not an attempt. Make it again after this wait, with
    /// the same number; nothing is recorded.
    Postponed(Duration),
}

impl Settled {
    /// The attempt's record (number, time, status, error); none when it was postponed.
    pub fn attempt(&self) -> Option<&Attempt> {
        match self {
            Settled::Delivered(a) | Settled::Retry(a, _) | Settled::Dead(a) => Some(a),
            Settled::Postponed(_) => None,
        }
    }
}

/// The longest wait before a delivery that was never sent is made again.
const POSTPONE_AT_MOST: Duration = Duration::from_secs(1);

/// Makes attempt number `attempt` (1-based) of the asynchronous delivery of `event` to
/// `function`, and settles it under `policy`.
///
/// The delivery runs at the event's hop count plus one, with nobody waiting for it. It is made
/// whatever that count is: the hop limit cuts publishes, not deliveries (see `docs/events.md`,
/// "Retrying a dead letter").
pub async fn attempt(
    deliverer: &Arc<dyn Deliver>,
    function: &Arc<str>,
    event: Arc<SharedEvent>,
    attempt: u32,
    policy: &RetryPolicy,
) -> Settled {
    let cause = Causation::async_delivery(event.hops, &event.id);
    let result = deliverer.deliver(function.clone(), event, cause).await;
    settle(function, result, attempt, policy)
}

/// Makes attempt number `attempt` (1-based) of the asynchronous invocation `work` of
/// `function`, and settles it under `policy` exactly as an event's delivery; with the
/// function's answer when it succeeded.
pub async fn attempt_invocation(
    deliverer: &Arc<dyn Deliver>,
    function: &Arc<str>,
    work: Arc<InvocationWork>,
    attempt: u32,
    policy: &RetryPolicy,
) -> (Settled, Option<Box<RawValue>>) {
    match deliverer
        .invoke(function.clone(), work, Causation::root())
        .await
    {
        Ok(answer) => (settle(function, Ok(()), attempt, policy), Some(answer)),
        Err(e) => (settle(function, Err(e), attempt, policy), None),
    }
}

/// What becomes of attempt number `attempt` that ended with `result`: a failure that no retry
/// can fix, or the last attempt `policy` allows, makes a dead letter; any other failure is
/// retried after [`RetryPolicy::delay`].
pub(crate) fn settle(
    function: &str,
    result: Result<(), DeliveryError>,
    attempt: u32,
    policy: &RetryPolicy,
) -> Settled {
    let e = match result {
        Ok(()) => {
            crate::count_delivery(function, "delivered");
            return Settled::Delivered(Attempt {
                attempt,
                time: now(),
                status: 200,
                error: String::new(),
            });
        }
        Err(e) => e,
    };
    if !e.attempted {
        // Soon: what stopped it (a redeploy) is over at once; at shutdown it waits on disk.
        let delay = policy.delay(1, jitter()).min(POSTPONE_AT_MOST);
        tracing::info!(
            function,
            attempt,
            retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            "delivery not made, not counted as an attempt: {}",
            e.message
        );
        return Settled::Postponed(delay);
    }
    crate::count_delivery(function, "failed");
    let record = Attempt {
        attempt,
        time: now(),
        status: e.status,
        error: e.message,
    };
    if !e.retryable || attempt >= policy.max_attempts.max(1) {
        tracing::warn!(
            function,
            attempt,
            status = record.status,
            "delivery failed for good, kept as a dead letter: {}",
            record.error
        );
        crate::count_delivery(function, "dead_lettered");
        return Settled::Dead(record);
    }
    let delay = policy.delay(attempt, jitter());
    tracing::info!(
        function,
        attempt,
        status = record.status,
        retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
        "delivery failed; retrying: {}",
        record.error
    );
    Settled::Retry(record, delay)
}

/// A number in [0, 1) that differs from call to call (no need for a strong generator).
pub(crate) fn jitter() -> f64 {
    let bits = uuid::Uuid::new_v4().as_u128() as u64;
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(max_attempts: u32) -> RetryPolicy {
        RetryPolicy {
            max_attempts,
            backoff: Duration::from_millis(100),
            ..RetryPolicy::default()
        }
    }

    #[test]
    fn a_success_is_delivered_with_status_200() {
        let settled = settle("f", Ok(()), 2, &policy(3));
        let Settled::Delivered(a) = settled else {
            panic!("delivered, not {settled:?}")
        };
        assert_eq!((a.attempt, a.status, a.error.as_str()), (2, 200, ""));
    }

    #[test]
    fn a_retryable_failure_is_retried_until_the_last_attempt() {
        let failed = || Err(DeliveryError::retryable(503, "busy"));
        match settle("f", failed(), 1, &policy(3)) {
            Settled::Retry(a, delay) => {
                assert_eq!((a.attempt, a.status, a.error.as_str()), (1, 503, "busy"));
                assert!(
                    (Duration::from_millis(50)..=Duration::from_millis(100)).contains(&delay),
                    "half to all of the backoff: {delay:?}"
                );
            }
            other => panic!("a retry, not {other:?}"),
        }
        match settle("f", failed(), 2, &policy(3)) {
            Settled::Retry(_, delay) => assert!(delay >= Duration::from_millis(100), "doubled"),
            other => panic!("a retry, not {other:?}"),
        }
        assert!(matches!(
            settle("f", failed(), 3, &policy(3)),
            Settled::Dead(Attempt { attempt: 3, .. })
        ));
        assert!(
            matches!(settle("f", failed(), 1, &policy(0)), Settled::Dead(_)),
            "at least one attempt, and no more when the policy says 0"
        );
    }

    #[test]
    fn a_permanent_failure_is_dead_at_once() {
        let settled = settle(
            "f",
            Err(DeliveryError::permanent(404, "gone")),
            1,
            &policy(5),
        );
        assert_eq!(settled.attempt().map(|a| a.status), Some(404));
        assert!(matches!(settled, Settled::Dead(_)));
    }

    #[test]
    fn a_delivery_never_sent_is_postponed_even_on_its_last_attempt() {
        let unsent = || Err(DeliveryError::not_attempted(503, "shutting down"));
        for attempt in [1, 3, 9] {
            match settle("f", unsent(), attempt, &policy(3)) {
                Settled::Postponed(delay) => assert!(
                    (Duration::from_millis(50)..=Duration::from_millis(100)).contains(&delay),
                    "half to all of the first backoff: {delay:?}"
                ),
                other => panic!("postponed, not {other:?}"),
            }
        }
    }

    #[test]
    fn jitter_stays_in_range_and_varies() {
        let draws: Vec<f64> = (0..64).map(|_| jitter()).collect();
        assert!(draws.iter().all(|j| (0.0..1.0).contains(j)));
        assert!(draws.windows(2).any(|w| w[0] != w[1]));
    }
}
