//! Serving a function's own requests: `publish`, `subscribe` and `unsubscribe`.
//!
//! A publish is attributed to the call it names by `request_id` (else to the only call in
//! flight, else to all of them) for its causation, origin and trace, and runs in its own task,
//! at most [`super::reader::MAX_FUNCTION_REQUESTS`] at once: the reader goes on reading, so
//! the answer of a call the publish waits for is not stuck behind it.

use std::sync::Arc;

use serde::Serialize;
use serde_json::value::RawValue;
use shs_bus::event::TRACEPARENT;
use shs_bus::{BusError, Causation, Event, Origin};
use shs_protocol::methods::{
    self, PublishParams, PublishResult, SubscribeParams, SubscribeResult, UnsubscribeResult,
    error_code,
};
use shs_protocol::{Id, RpcError, write_response};
use tokio::sync::Semaphore;
use tracing::Instrument;

use super::{CallMeta, Process};

/// How many bytes of publishes one process may have in flight (waiting for their answers)
/// when `--max-line` is lower; else `--max-line`, so that one publish of the longest line fits.
pub(super) const MAX_PUBLISH_BYTES: usize = 16 << 20;

/// What bounds the publishes one process has in flight: their number (a function past it
/// waits) and their bytes (a publish past them gets an error).
pub(super) struct Permits {
    pub(super) count: Arc<Semaphore>,
    pub(super) bytes: Arc<Semaphore>,
    pub(super) max_bytes: usize,
}

impl Permits {
    /// The permits of a process whose lines are at most `max_line` bytes.
    pub(super) fn new(max_line: usize) -> Permits {
        let max_bytes = MAX_PUBLISH_BYTES.max(max_line).min(Semaphore::MAX_PERMITS);
        Permits {
            count: Arc::new(Semaphore::new(super::reader::MAX_FUNCTION_REQUESTS)),
            bytes: Arc::new(Semaphore::new(max_bytes)),
            max_bytes,
        }
    }
}

impl Process {
    /// Serves one request (or notification, when `id` is `None`) from the function.
    pub(super) async fn serve(
        self: &Arc<Self>,
        id: Option<Id>,
        method: &str,
        params: Option<Box<RawValue>>,
        permits: &Permits,
    ) {
        let outcome: Result<Box<RawValue>, RpcError> = match method {
            methods::SUBSCRIBE => self.subscribe(params.as_deref(), true),
            methods::UNSUBSCRIBE => self.subscribe(params.as_deref(), false),
            methods::STREAM if id.is_none() => {
                self.stream_chunk(params.as_deref()).await;
                return;
            }
            methods::PUBLISH => match self.publish(&id, params.as_deref(), permits).await {
                // The task it started answers.
                Ok(()) => return,
                Err(e) => Err(e),
            },
            other => {
                if id.is_none() {
                    tracing::warn!(function = %self.function, method = other, "ignoring a notification of an unknown method");
                    return;
                }
                Err(RpcError::new(
                    error_code::METHOD_NOT_FOUND,
                    format!(
                        "method not found: {other:?} (a function may call publish, subscribe and unsubscribe)"
                    ),
                ))
            }
        };
        self.reply(id, outcome).await;
    }

    /// Answers request `id` (a notification, with no id, is not answered; its error is
    /// logged).
    pub(super) async fn reply(&self, id: Option<Id>, outcome: Result<Box<RawValue>, RpcError>) {
        let Some(id) = id else {
            if let Err(e) = outcome {
                tracing::warn!(function = %self.function, "a notification failed: {}", e.message);
            }
            return;
        };
        self.respond(&id, outcome.as_deref()).await;
    }

    /// Writes the answer to request `id`.
    async fn respond<T: Serialize + ?Sized>(&self, id: &Id, outcome: Result<&T, &RpcError>) {
        let mut line = Vec::with_capacity(128);
        if write_response(&mut line, id, outcome).is_ok() {
            self.send(line).await;
        }
    }

    /// Starts a `publish`: checks it, attributes it to a call, and hands it to a task that
    /// publishes and answers. What is wrong with it is for the caller to answer.
    async fn publish(
        self: &Arc<Self>,
        id: &Option<Id>,
        params: Option<&RawValue>,
        permits: &Permits,
    ) -> Result<(), RpcError> {
        // What the publish holds in memory until it is answered: its payload, about.
        let size = params.map_or(0, |p| p.get().len());
        let params: PublishParams = parse_params(params)?;
        let source = format!("/functions/{}", self.function);
        let event = Event::new(params.event_type, source, params.payload)
            .map_err(|e| RpcError::new(error_code::INVALID_PARAMS, e.to_string()))?;
        // The publish graph learns it (kept in the store the first time): the chains to prewarm.
        if self.host.prewarm.learn(&self.function, event.event_type()) {
            self.host
                .bus
                .save_publishes(&self.function, event.event_type());
        }
        // An asynchronous publish waits for nobody downstream: it is detached.
        let asynchronous = params.asynchronous;
        let detached = id.is_none() || asynchronous;
        let (cause, request) = self.cause_for_publish(params.request_id.as_deref(), detached);
        let mut event = event.with_origin(Origin::Function {
            function: self.function.to_string(),
            request_id: request.as_ref().map(|r| r.request_id.to_string()),
        });
        // The trace of the request goes on with what it publishes.
        if let Some(trace) = request.and_then(|r| r.trace) {
            event = event
                .with_extension(TRACEPARENT, serde_json::Value::from(&*trace))
                .unwrap_or_else(|e| unreachable!("traceparent is a valid extension: {e}"));
        }
        // Bound the bytes of the publishes served at once: past them, the function is told.
        let bytes = u32::try_from(size)
            .ok()
            .and_then(|n| permits.bytes.clone().try_acquire_many_owned(n.max(1)).ok());
        let Some(bytes) = bytes else {
            return Err(RpcError::new(
                error_code::LIMIT_EXCEEDED,
                format!(
                    "too many bytes of publishes in flight: this {size}-byte publish would take the process past {} bytes waiting for their answers; wait for answers, then publish again",
                    permits.max_bytes
                ),
            ));
        };
        // Bound the publishes served at once: a function that floods them waits.
        let Ok(permit) = permits.count.clone().acquire_owned().await else {
            return Ok(());
        };
        let (process, id) = (self.clone(), id.clone());
        // On the reader's runtime: a delivery to a process handled on the same thread goes and
        // comes back without leaving it.
        tokio::spawn(
            async move {
                if asynchronous {
                    process.publish_async(id, event, cause).await;
                } else {
                    process.publish_sync(id, event, cause).await;
                }
                drop((permit, bytes));
            }
            .in_current_span(),
        );
        Ok(())
    }

    /// Publishes and answers once the event is stored.
    async fn publish_async(&self, id: Option<Id>, event: Event, cause: Causation) {
        let stored = self.host.bus.publish_async(event, cause).await;
        let outcome = match stored {
            Ok(event_id) => Ok(PublishResult {
                published: true,
                event_id,
                delivered: 0,
                errors: Vec::new(),
                accepted: Some(true),
            }),
            Err(e) => {
                tracing::warn!(function = %self.function, "asynchronous publish failed: {e}");
                let code = match e {
                    BusError::TooManySubscriptions { .. } => error_code::LIMIT_EXCEEDED,
                    _ if e.is_invalid_input() => error_code::INVALID_PARAMS,
                    _ => error_code::INTERNAL_ERROR,
                };
                Err(RpcError::new(code, e.to_string()))
            }
        };
        if let Some(id) = id {
            self.respond(&id, outcome.as_ref()).await;
        }
    }

    /// Publishes and answers once every subscriber has; a notification's failed deliveries
    /// are logged.
    async fn publish_sync(&self, id: Option<Id>, event: Event, cause: Causation) {
        let result = self.host.bus.publish(event, cause).await;
        match id {
            Some(id) => self.respond(&id, Ok(&result)).await,
            None => {
                for failure in &result.errors {
                    tracing::warn!(
                        function = %self.function,
                        event_id = %result.event_id,
                        subscriber = %failure.function,
                        "fire-and-forget event not delivered: {}",
                        failure.message
                    );
                }
            }
        }
    }

    fn subscribe(
        &self,
        params: Option<&RawValue>,
        subscribe: bool,
    ) -> Result<Box<RawValue>, RpcError> {
        let params: SubscribeParams = parse_params(params)?;
        self.change_subscription(&params.event_type, subscribe)
            .map_err(|e| {
                let code = match e {
                    BusError::TooManySubscriptions { .. } => error_code::LIMIT_EXCEEDED,
                    _ if e.is_invalid_input() => error_code::INVALID_PARAMS,
                    _ => error_code::INTERNAL_ERROR,
                };
                RpcError::new(code, e.to_string())
            })?;
        let result = if subscribe {
            serde_json::value::to_raw_value(&SubscribeResult {
                subscribed: true,
                event_type: params.event_type,
            })
        } else {
            serde_json::value::to_raw_value(&UnsubscribeResult {
                unsubscribed: true,
                event_type: params.event_type,
            })
        };
        result.map_err(|e| RpcError::new(error_code::INTERNAL_ERROR, e.to_string()))
    }

    /// Subscribes (or unsubscribes) its function to `pattern`, unless the deployment this
    /// process belongs to was removed or replaced meanwhile (then refused, and logged).
    pub(super) fn change_subscription(
        &self,
        pattern: &str,
        subscribe: bool,
    ) -> Result<bool, BusError> {
        let changed = self
            .host
            .bus
            .change_as(&self.function, self.deployment, pattern, subscribe);
        if let Err(e @ BusError::Retired { .. }) = &changed {
            tracing::warn!(function = %self.function, pid = self.pid, pattern, "refused: {e}");
        }
        changed
    }

    /// The causation of a publish this process makes: that of the call it names by
    /// `request_id`, else that of its only call in flight, else all of them merged.
    /// Also returns what the call it is attributed to is about, when there is one.
    fn cause_for_publish(
        &self,
        request_id: Option<&str>,
        detached: bool,
    ) -> (Causation, Option<CallMeta>) {
        let calls = self.calls.lock();
        let named =
            request_id.and_then(|rid| calls.pending.iter().find(|(_, p)| &*p.request_id == rid));
        let only = (calls.pending.len() == 1)
            .then(|| calls.pending.iter().next())
            .flatten();
        let (cause, request_id) = match named.or(only) {
            Some((id, call)) => (
                call.cause.caused_by(*id),
                Some(CallMeta {
                    request_id: call.request_id.clone(),
                    trace: call.trace.clone(),
                    stream: None,
                }),
            ),
            None if calls.pending.is_empty() => (Causation::root(), None),
            None => (
                Causation::merged(calls.pending.iter().map(|(id, call)| (&call.cause, *id))),
                None,
            ),
        };
        if detached {
            (cause.detached(), request_id)
        } else {
            (cause, request_id)
        }
    }
}

fn parse_params<T: serde::de::DeserializeOwned>(params: Option<&RawValue>) -> Result<T, RpcError> {
    let text = params.map_or("null", RawValue::get);
    serde_json::from_str(text)
        .map_err(|e| RpcError::new(error_code::INVALID_PARAMS, format!("invalid params: {e}")))
}
