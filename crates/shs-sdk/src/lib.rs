//! Write shs functions in Rust.
//!
//! This crate owns the function's side of the shs wire protocol: the loop that reads the
//! supervisor's requests from stdin, calls your handlers, and writes their answers to stdout,
//! and the [`Context`] through which a handler publishes events and subscribes. You write
//! handlers; you never see a JSON-RPC message. The message types come from
//! [`shs_protocol`]; the protocol itself is described in `docs/protocol.md`.
//!
//! # Example
//!
//! A complete function. Build it (`cargo build --release`), copy the binary into the
//! functions folder as `NAME/main`, and `POST /run/NAME`.
//!
//! ```no_run
//! use serde_json::{Value, json};
//! use shs_sdk::{Context, Error, Event, Function};
//!
//! fn greet(input: Value, ctx: &Context) -> Result<Value, Error> {
//!     let name = input["name"].as_str().unwrap_or("world");
//!     if name.is_empty() {
//!         // A structured error: POST /run answers 500 with this code, message and data.
//!         return Err(Error::new("name is empty").with_code(400).with_data(json!({"field": "name"})));
//!     }
//!     // Publish and wait until every subscriber has taken the event.
//!     let published = ctx.publish("greeting.sent", &json!({ "name": name }))?;
//!     ctx.log(format_args!("greeted {name}, delivered to {}", published.delivered));
//!     Ok(json!({ "message": format!("Hello, {name}!"), "event_id": published.event_id }))
//! }
//!
//! fn main() -> std::io::Result<()> {
//!     Function::new()
//!         .on_invoke(greet)
//!         // Subscribed at start-up, because there is a handler for it.
//!         .on_event("user.created", |event: Event, ctx: &Context| {
//!             ctx.log(format_args!("welcome, {}", event.payload["name"]));
//!             // Fire-and-forget: nobody waits for the subscribers.
//!             ctx.publish_nowait("user.welcomed", &event.payload)?;
//!             Ok(())
//!         })
//!         // Patterns go through the catch-all handler.
//!         .subscribe("orders.>")
//!         .on_any_event(|event: Event, ctx: &Context| {
//!             ctx.log(format_args!("{} {}", event.event_type, event.payload));
//!             Ok(())
//!         })
//!         .run()
//! }
//! ```
//!
//! # The fast path
//!
//! [`Function::on_invoke_raw`] hands the handler the input's JSON text as it arrived
//! (`&RawValue`, borrowed from the line) and lets it answer with a borrowed or owned
//! [`RawOutput`]: an echo parses nothing and allocates nothing per request. Lines are read
//! through a 64 KiB buffer; answers are buffered and written when no further request is
//! waiting in that buffer, so requests that arrive together are answered in one write.
//!
//! # Concurrency
//!
//! By default everything runs on one thread: requests are handled one after the other, in
//! order, and a handler waiting on [`Context::publish`] holds up the requests that arrive
//! meanwhile (they are handled after it). That is right for `concurrency = 1` (the default)
//! and for handlers that do not wait. With `concurrency = N` in `function.toml` and handlers
//! that wait, use [`Function::threads`]`(N)`: requests are handled on N threads, and answers
//! to the function's own requests reach the caller waiting for them by id, in whatever order
//! they come.
//!
//! # Errors
//!
//! A handler returns [`Error`] to answer with a JSON-RPC error `{code, message, data}`; any
//! `std::error::Error` converts into one (code `-32000`) with `?`. A panic in a handler is
//! caught and answered as code `-32000` with the panic's message. A request for a method the
//! SDK does not know, an invoke with no invoke handler, and an event with no handler for its
//! type are answered with `-32601`.
//!
//! # Start-up
//!
//! Before it answers `initialize`, the function subscribes to the types of its
//! [`Function::on_event`] handlers and to the patterns given to [`Function::subscribe`] (with
//! `subscribe` requests, so that they are in force before the first event), then runs
//! [`Function::setup`]. If the supervisor refuses a subscription or setup fails, the process
//! logs why and exits with status 1 without answering: the supervisor reports a failed start
//! (503), with those log lines.
//!
//! # End of input
//!
//! When the supervisor closes stdin, [`Function::run`] lets the requests in flight finish
//! (a call they make to the supervisor then fails: no answer can come), writes their answers
//! and returns `Ok(())`.

mod context;
mod data;
mod error;
mod function;
mod http;
mod run;
mod secret;
mod wire;

use serde_json::value::RawValue;

pub use context::{Context, log};
pub use data::event_data;
pub use error::Error;
pub use function::{Event, Function};
pub use http::{Body, Request, Response, sse_event};
pub use secret::secret;
pub use shs_protocol;
pub use shs_protocol::methods::{
    DeliveryFailure, PublishResult, SubscribeResult, UnsubscribeResult,
};

/// What a raw invoke handler ([`Function::on_invoke_raw`]) answers with: JSON text, borrowed
/// (from the input, or a `'static`) or owned.
///
/// Build an owned one with [`serde_json::value::to_raw_value`] or
/// [`RawValue::from_string`]. JSON with line breaks between its tokens is made compact before
/// it is written.
#[derive(Debug)]
pub enum RawOutput<'a> {
    /// Borrowed JSON text, for example the input itself or a part of it.
    Borrowed(&'a RawValue),
    /// Owned JSON text.
    Owned(Box<RawValue>),
}

impl RawOutput<'_> {
    /// The JSON text.
    pub fn as_raw(&self) -> &RawValue {
        match self {
            RawOutput::Borrowed(raw) => raw,
            RawOutput::Owned(raw) => raw,
        }
    }
}

impl<'a> From<&'a RawValue> for RawOutput<'a> {
    fn from(raw: &'a RawValue) -> Self {
        RawOutput::Borrowed(raw)
    }
}

impl From<Box<RawValue>> for RawOutput<'_> {
    fn from(raw: Box<RawValue>) -> Self {
        RawOutput::Owned(raw)
    }
}
