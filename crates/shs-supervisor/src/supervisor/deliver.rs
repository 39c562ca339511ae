//! The bus's side of event delivery: [`Deliverer`], the [`Deliver`] implementation the bus
//! delivers through, the retry policy of each function, and how a failed delivery is
//! reported to the bus.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use futures::future::BoxFuture;
use serde_json::value::RawValue;
use shs_bus::store::InvocationWork;
use shs_bus::{Causation, Deliver, DeliveryError, RetryPolicy, SharedEvent};

use super::{Inner, Job, Kind, Request, Supervisor};
use crate::error::InvokeError;

/// Delivers the bus's events through the supervisor it belongs to (a weak reference: the
/// supervisor holds the deliverer, the bus only a weak reference to it).
pub(super) struct Deliverer(pub(super) Weak<Inner>);

impl Deliver for Deliverer {
    fn deliver(
        &self,
        function: Arc<str>,
        event: Arc<SharedEvent>,
        cause: Causation,
    ) -> BoxFuture<'static, Result<(), DeliveryError>> {
        let inner = self.0.upgrade();
        Box::pin(async move {
            let Some(inner) = inner.filter(|i| !i.stopping.load(Ordering::Acquire)) else {
                // Never sent: not an attempt; it waits for the next start.
                return Err(DeliveryError::not_attempted(
                    503,
                    "the supervisor is shutting down",
                ));
            };
            Supervisor { inner }
                .deliver(&function, &event, cause)
                .await
                .map_err(|e| delivery_error(&e))
        })
    }

    fn invoke(
        &self,
        function: Arc<str>,
        work: Arc<InvocationWork>,
        cause: Causation,
    ) -> BoxFuture<'static, Result<Box<RawValue>, DeliveryError>> {
        let inner = self.0.upgrade();
        Box::pin(async move {
            let Some(inner) = inner.filter(|i| !i.stopping.load(Ordering::Acquire)) else {
                return Err(DeliveryError::not_attempted(
                    503,
                    "the supervisor is shutting down",
                ));
            };
            Supervisor { inner }
                .run_invocation(&function, &work, cause)
                .await
        })
    }

    fn retry_policy(&self, function: &str) -> RetryPolicy {
        let Some(inner) = self.0.upgrade() else {
            return RetryPolicy::default();
        };
        let registry = inner.registry.read();
        let defaults = &inner.defaults;
        let function = registry.get(function);
        match function.and_then(|f| f.spec()) {
            Some(spec) => RetryPolicy {
                max_attempts: spec.max_attempts,
                backoff: spec.retry_backoff,
                ordered: spec.ordered,
                timeout: spec.timeout,
                max_in_flight: match function.map(|f| &f.kind) {
                    // What the pool has in force, declared concurrency included.
                    Some(Kind::Rpc(pool)) => {
                        let sizing = pool.sizing();
                        sizing.instances * sizing.concurrency
                    }
                    _ => spec.instances,
                },
                ..RetryPolicy::default()
            },
            None => RetryPolicy {
                max_attempts: defaults.max_attempts,
                backoff: defaults.retry_backoff,
                ..RetryPolicy::default()
            },
        }
    }
}

/// How a failed delivery is reported to the bus: the status `/run` would answer, whether
/// a retry may help, and whether the event was sent at all. A function that answers an error with `"data": {"retry": false}` says it
/// will not.
pub(super) fn delivery_error(error: &InvokeError) -> DeliveryError {
    let status = error.kind().status();
    let retryable = match error {
        InvokeError::NotFound { .. } => false,
        InvokeError::Function { error, .. } => !error
            .data
            .as_ref()
            .and_then(|d| d.get("retry"))
            .is_some_and(|r| r == &serde_json::Value::Bool(false)),
        _ => true,
    };
    DeliveryError {
        status,
        message: error.to_string(),
        retryable,
        // Gone: the pool closed (redeploy, removal, shutdown) before the event was sent.
        attempted: !matches!(error, InvokeError::Gone { .. }),
    }
}

impl Supervisor {
    /// Delivers one event to function `name`, in the causation the bus gives.
    async fn deliver(
        &self,
        name: &str,
        event: &SharedEvent,
        cause: Causation,
    ) -> Result<(), InvokeError> {
        let request_id = delivery_request_id();
        let request = Request {
            job: Job::Event(event),
            request_id: &request_id,
            trace: event.traceparent.as_deref(),
            cause,
            webhook: None,
            schedule: None,
        };
        self.run(name, request).await.map(drop)
    }
}

/// A request id for an event delivery: unique per supervisor run, without asking the OS for
/// randomness each time.
fn delivery_request_id() -> String {
    static PREFIX: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let prefix = *PREFIX.get_or_init(|| uuid::Uuid::new_v4().as_u128() as u64);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix:016x}{n:016x}")
}
