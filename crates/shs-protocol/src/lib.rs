//! The shs wire protocol, version 1.
//!
//! This crate owns everything that crosses a function's stdin and stdout: the JSON-RPC 2.0
//! message types ([`Message`] and its parts), the parameters and results of each method
//! ([`methods`]), and the newline-delimited framing ([`codec`]). It depends on serde and
//! nothing else of shs, so that the supervisor and the function-side SDKs share one definition
//! of the protocol.
//!
//! # Framing
//!
//! Every message is one JSON object on one line, UTF-8, ended by `\n`. [`codec::LineDecoder`]
//! splits a byte stream into lines without ever buffering more than a configured maximum.
//! The `write_*` functions write each message as one line for every common reader, whatever it
//! embeds ([`codec::LineFormatter`]): JSON allows raw `\r` and `\n` between tokens and raw
//! U+0085, U+2028 and U+2029 inside strings, and some readers end a line at each of them, so
//! the first two are left out and the others escaped.
//!
//! # Messages
//!
//! A message with `method` is a request, or a notification when it has no `id`; a message with
//! `result` or `error` answers the peer's request of that `id`. Each side numbers its own
//! requests. [`Message::parse`] classifies one line; the `write_*` functions encode one message
//! into a reusable buffer, newline included.
//!
//! The full specification, with an annotated transcript, is `docs/protocol.md`.
//!
//! # Depth
//!
//! [`depth::check`] refuses JSON nested deeper than [`depth::MAX_DEPTH`] (serde_json's own
//! limit) without parsing it: shs checks every request body and event payload with it before
//! a function sees them.

pub mod codec;
pub mod depth;
mod message;
pub mod methods;

pub use message::{
    Id, Message, Notification, ParseError, Request, Response, RpcError, write_notification,
    write_request, write_response, write_response_raw,
};

/// The protocol version a supervisor announces in `initialize`.
pub const PROTOCOL_VERSION: u32 = 1;

/// The value of the `jsonrpc` member of every message shs writes.
pub const JSONRPC_VERSION: &str = "2.0";
