//! What a handler gets besides its input: the request's identity, and a way to talk back to
//! the supervisor (publish, subscribe, unsubscribe) and to the log.

use std::fmt;
use std::io::Write;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use shs_protocol::RpcError;
use shs_protocol::methods::{self, PublishResult, SubscribeResult, UnsubscribeResult};

use crate::Error;
use crate::wire::{PublishOut, TypeOut};

/// Why a request of the function's own got no result.
#[derive(Debug)]
pub(crate) enum CallFailure {
    /// The supervisor answered with an error.
    Rpc(RpcError),
    /// stdin is closed: no answer can come any more.
    Closed,
    /// Writing the request failed.
    Io(std::io::Error),
}

/// The way back to the supervisor: one implementation per run loop.
pub(crate) trait Link {
    /// Sends a request and waits for its answer.
    fn call(&self, method: &'static str, params: &RawValue) -> Result<Box<RawValue>, CallFailure>;
    /// Sends a notification.
    fn notify(&self, method: &'static str, params: &RawValue) -> Result<(), CallFailure>;
}

/// The request being handled, and the function's way to talk to the supervisor while it
/// handles it.
///
/// Every method may be called from the handler's thread while the request is in flight.
/// [`Context::publish`], [`Context::subscribe`] and [`Context::unsubscribe`] wait for the
/// supervisor's answer; supervisor requests that arrive meanwhile are handled after the
/// handler returns (or at once by another thread, with [`crate::Function::threads`]).
pub struct Context<'a> {
    request_id: &'a str,
    function: &'a str,
    method: &'a str,
    link: &'a dyn Link,
    /// The invoke's JSON-RPC id and its `http` member, for an invoke over HTTP.
    call: Option<(&'a shs_protocol::Id, Option<&'a RawValue>)>,
    /// Whether a `stream` notification has gone out (the first carries status and headers).
    streaming: std::sync::atomic::AtomicBool,
    /// `context.schedule`, for an occurrence of a schedule.
    schedule: Option<methods::ScheduleContext>,
}

impl<'a> Context<'a> {
    pub(crate) fn new(
        request_id: &'a str,
        function: &'a str,
        method: &'a str,
        link: &'a dyn Link,
    ) -> Self {
        Context {
            request_id,
            function,
            method,
            link,
            call: None,
            streaming: std::sync::atomic::AtomicBool::new(false),
            schedule: None,
        }
    }

    /// The same context, for an occurrence of a schedule.
    pub(crate) fn with_schedule(mut self, schedule: Option<methods::ScheduleContext>) -> Self {
        self.schedule = schedule;
        self
    }

    /// For an invoke that is an occurrence of a schedule (`[[schedule]]` in `function.toml`):
    /// the schedule's cron expression and the occurrence's time (RFC 3339); `None` otherwise.
    pub fn schedule(&self) -> Option<&methods::ScheduleContext> {
        self.schedule.as_ref()
    }

    /// The same context, for invoke `id` with its `http` member.
    pub(crate) fn for_invoke(
        mut self,
        id: &'a shs_protocol::Id,
        http: Option<&'a RawValue>,
    ) -> Self {
        self.call = Some((id, http));
        self
    }

    /// The HTTP request of an invoke made over HTTP (`/run/NAME...`); `None` otherwise.
    pub fn http(&self) -> Option<crate::Request> {
        let (_, http) = self.call?;
        crate::http::Request::from_json(http?.get())
    }

    /// Sends a chunk of a streamed answer to the HTTP client now (text as `chunk`, anything
    /// else as `chunk_base64`). The first chunk starts the answer with `status` and `headers`
    /// when given (later ones ignore them); returning from the handler ends it.
    pub fn stream(
        &self,
        chunk: &[u8],
        status: Option<u16>,
        headers: &[(&str, &str)],
    ) -> Result<(), Error> {
        use base64::Engine as _;
        let Some((id, _)) = self.call else {
            return Err(Error::new("only an invoke can stream"));
        };
        let mut params = serde_json::Map::new();
        params.insert("id".into(), serde_json::to_value(id).unwrap_or_default());
        match std::str::from_utf8(chunk) {
            Ok(text) => params.insert("chunk".into(), text.into()),
            Err(_) => params.insert(
                "chunk_base64".into(),
                base64::engine::general_purpose::STANDARD
                    .encode(chunk)
                    .into(),
            ),
        };
        let first = !self
            .streaming
            .swap(true, std::sync::atomic::Ordering::Relaxed);
        if first {
            if let Some(status) = status {
                params.insert("status".into(), status.into());
            }
            if !headers.is_empty() {
                let map: serde_json::Map<String, serde_json::Value> = headers
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).into()))
                    .collect();
                params.insert("headers".into(), map.into());
            }
        }
        let params = serde_json::value::to_raw_value(&params)
            .map_err(|e| Error::new(format!("stream failed: {e}")))?;
        self.link
            .notify(shs_protocol::methods::STREAM, &params)
            .map_err(|e| failure("stream", e))
    }

    /// Sends one server-sent event ([`crate::sse_event`]); the first starts a
    /// `text/event-stream` answer.
    pub fn sse(&self, data: &str, event: Option<&str>) -> Result<(), Error> {
        let text = crate::sse_event(data, event);
        self.stream(
            text.as_bytes(),
            None,
            &[
                ("content-type", "text/event-stream"),
                ("cache-control", "no-cache"),
            ],
        )
    }

    /// The id of the request being handled (`context.request_id`: for an HTTP invoke, its
    /// `X-Request-Id`). Empty in [`crate::Function::setup`], which handles no request.
    pub fn request_id(&self) -> &str {
        self.request_id
    }

    /// The function's name.
    pub fn function(&self) -> &str {
        self.function
    }

    /// What is being handled: `"invoke"`, `"event"`, or `"initialize"` (in setup).
    pub fn method(&self) -> &str {
        self.method
    }

    fn request_id_hint(&self) -> Option<&str> {
        (!self.request_id.is_empty()).then_some(self.request_id)
    }

    fn call<T: DeserializeOwned>(
        &self,
        method: &'static str,
        what: &str,
        params: &impl Serialize,
    ) -> Result<T, Error> {
        let params = serde_json::value::to_raw_value(params)
            .map_err(|e| Error::new(format!("{what} failed: its params are not JSON: {e}")))?;
        let answer = self
            .link
            .call(method, &params)
            .map_err(|e| failure(what, e))?;
        serde_json::from_str(answer.get()).map_err(|e| {
            Error::new(format!(
                "{what} failed: unexpected answer {}: {e}",
                answer.get()
            ))
        })
    }

    /// Publishes an event and waits until every subscriber has taken it (or failed): the
    /// supervisor's answer says how many took it (`delivered`) and who did not (`errors`).
    ///
    /// The publish is attributed to the request being handled (its `request_id` is sent
    /// along), which is what lets the supervisor count hops and see cycles correctly when
    /// several requests are in flight.
    ///
    /// An error answer from the supervisor (an invalid type, for example) becomes an
    /// [`Error`] with code `-32000`, the message `publish failed: ...` and the supervisor's
    /// error in `data.error`.
    pub fn publish<P: Serialize + ?Sized>(
        &self,
        event_type: &str,
        payload: &P,
    ) -> Result<PublishResult, Error> {
        self.call(
            methods::PUBLISH,
            "publish",
            &PublishOut {
                event_type,
                payload,
                request_id: self.request_id_hint(),
            },
        )
    }

    /// Publishes an event without waiting (fire-and-forget: a notification, never answered;
    /// a failure to deliver is only logged by the supervisor).
    pub fn publish_nowait<P: Serialize + ?Sized>(
        &self,
        event_type: &str,
        payload: &P,
    ) -> Result<(), Error> {
        let params = serde_json::value::to_raw_value(&PublishOut {
            event_type,
            payload,
            request_id: self.request_id_hint(),
        })
        .map_err(|e| Error::new(format!("publish failed: its params are not JSON: {e}")))?;
        self.link
            .notify(methods::PUBLISH, &params)
            .map_err(|e| failure("publish", e))
    }

    /// Subscribes the function to an event type or pattern (`user.created`, `user.*`,
    /// `orders.>`), from now on and for all its processes.
    pub fn subscribe(&self, pattern: &str) -> Result<SubscribeResult, Error> {
        self.call(
            methods::SUBSCRIBE,
            "subscribe",
            &TypeOut {
                event_type: pattern,
            },
        )
    }

    /// Drops the function's subscription to exactly this pattern.
    pub fn unsubscribe(&self, pattern: &str) -> Result<UnsubscribeResult, Error> {
        self.call(
            methods::UNSUBSCRIBE,
            "unsubscribe",
            &TypeOut {
                event_type: pattern,
            },
        )
    }

    /// Writes one line to the function's log (stderr), which the supervisor records with the
    /// function's name and, when it can tell, this request's id. Use it (or `eprintln!`)
    /// rather than `println!`: stdout carries the protocol.
    pub fn log(&self, message: impl fmt::Display) {
        log(message);
    }
}

impl fmt::Debug for Context<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("request_id", &self.request_id)
            .field("function", &self.function)
            .field("method", &self.method)
            .finish_non_exhaustive()
    }
}

/// Writes one line to the function's log (stderr).
pub fn log(message: impl fmt::Display) {
    let mut stderr = std::io::stderr().lock();
    let _ = writeln!(stderr, "{message}");
}

fn failure(what: &str, failure: CallFailure) -> Error {
    match failure {
        CallFailure::Rpc(error) => Error::new(format!("{what} failed: {}", error.message))
            .with_data(serde_json::json!({ "error": error })),
        CallFailure::Closed => Error::new(format!(
            "{what} failed: stdin is closed, no answer can come (the supervisor is stopping this process)"
        )),
        CallFailure::Io(e) => Error::new(format!("{what} failed: {e}")),
    }
}
