//! The methods of protocol version 1: their names, parameters and results.
//!
//! Supervisor to function: [`INITIALIZE`], [`INVOKE`], [`EVENT`].
//! Function to supervisor: [`PUBLISH`], [`SUBSCRIBE`], [`UNSUBSCRIBE`].
//!
//! Parameter types are generic over the payload where the supervisor passes JSON through
//! without looking at it, so that it can embed already-encoded text (`&RawValue`) while an SDK
//! reads a `serde_json::Value`.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// Supervisor to function, first message: `{"function": NAME, "protocol": 1}`.
pub const INITIALIZE: &str = "initialize";
/// Supervisor to function: run the function on an input.
pub const INVOKE: &str = "invoke";
/// Supervisor to function: deliver one event.
pub const EVENT: &str = "event";
/// Function to supervisor: publish an event (a notification is fire-and-forget).
pub const PUBLISH: &str = "publish";
/// Function to supervisor: subscribe the function to an event type.
pub const SUBSCRIBE: &str = "subscribe";
/// Function to supervisor: drop a subscription of the function.
pub const UNSUBSCRIBE: &str = "unsubscribe";
/// Function → supervisor notification: a chunk of a streamed answer to an invoke.
pub const STREAM: &str = "stream";
/// Supervisor → function notification: the client of an invoke went away; stop working on it.
pub const CANCEL: &str = "cancel";

/// Error codes used in `error.code`.
pub mod error_code {
    /// The line was not JSON.
    pub const PARSE_ERROR: i64 = -32700;
    /// The message was not a valid request.
    pub const INVALID_REQUEST: i64 = -32600;
    /// No such method.
    pub const METHOD_NOT_FOUND: i64 = -32601;
    /// The parameters do not fit the method.
    pub const INVALID_PARAMS: i64 = -32602;
    /// The supervisor failed while handling the request.
    pub const INTERNAL_ERROR: i64 = -32603;
    /// The conventional code for a function's own failure (any code is allowed).
    pub const FUNCTION_ERROR: i64 = -32000;
    /// The request would take the function past one of its limits (subscriptions, publishes
    /// in flight); it may be made again once under the limit.
    pub const LIMIT_EXCEEDED: i64 = -32001;
}

/// Parameters of `initialize`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InitializeParams {
    /// The function's name.
    pub function: String,
    /// The protocol version, [`crate::PROTOCOL_VERSION`].
    pub protocol: u32,
}

/// What shs reads from the answer to `initialize`. Any answer marks the process ready; an
/// object with a `subscribe` array also subscribes the function to those types.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InitializeResult {
    /// Event types to subscribe the function to.
    #[serde(default)]
    pub subscribe: Vec<String>,
    /// The function wants the raw `body` of an HTTP request in `http` even when the body is
    /// JSON (and so already parsed into `input`); as `raw_body = true` in `function.toml`.
    #[serde(default)]
    pub raw_body: bool,
}

/// The `context` of an invoke or an event delivery.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Context<S = String> {
    /// A unique id of this request (for an HTTP invoke, the `X-Request-Id` when given).
    pub request_id: S,
    /// The name of the function being run.
    pub function: S,
    /// The W3C trace context of the request (or of the event), when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<S>,
    /// For a function with a `[webhook]`: whose signature the request carried, checked by the
    /// supervisor before the function ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookContext<S>>,
    /// For an occurrence of a schedule (`[[schedule]]` in `function.toml`): the schedule's
    /// cron expression and the occurrence's time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule: Option<ScheduleContext<S>>,
}

/// `context.schedule`: `{"cron": "0 */5 * * * *", "time": "2026-12-06T03:00:00Z"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleContext<S = String> {
    /// The schedule's cron expression, as written in `function.toml`.
    pub cron: S,
    /// The occurrence, RFC 3339 (in UTC).
    pub time: S,
}

/// `context.webhook`: `{"kind": "github", "verified": true}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookContext<S = String> {
    /// `github`, `stripe`, `slack` or `hmac-sha256`.
    pub kind: S,
    /// Always true: a request whose signature does not verify never reaches the function.
    pub verified: bool,
}

/// Parameters of `invoke`: `{"input": any, "context": {...}, "http": {...}}`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InvokeParams<I = serde_json::Value, S = String> {
    /// The request body, parsed: JSON as it is, `{}` for an empty body, `null` for a body
    /// that is not JSON (a form, text, bytes).
    pub input: I,
    /// About this request.
    pub context: Context<S>,
    /// The HTTP request, for an invoke made over HTTP (`/run/NAME...`): `method`, `path`,
    /// `query`, `headers`, `body` or `body_base64`, `remote_addr` (docs/protocol.md, "HTTP
    /// requests"). Absent for an invoke made otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<Box<RawValue>>,
}

/// Parameters of `event`: `{"event": {...}, "context": {...}}`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EventParams<E = EventObject, S = String> {
    /// The event being delivered.
    pub event: E,
    /// About this delivery.
    pub context: Context<S>,
}

/// An event as a function receives it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EventObject<P = serde_json::Value, S = String> {
    /// A unique id (a UUID).
    pub id: S,
    /// The event type, e.g. `user.created`.
    #[serde(rename = "type")]
    pub event_type: S,
    /// Who published it: `/functions/NAME`, or the HTTP client's `source`, or `/http`.
    pub source: S,
    /// When it was published, RFC 3339.
    pub time: S,
    /// The event's data: JSON as it is, text as a string; `null` when there is none, or when
    /// it is bytes (then in `data_base64`).
    pub payload: P,
    /// The data's content type (CloudEvents `datacontenttype`); absent in protocol version 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datacontenttype: Option<S>,
    /// The data when it is bytes (neither JSON nor UTF-8 text), in standard base64 with
    /// padding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_base64: Option<S>,
}

/// Parameters of `publish`: `{"type": str, "payload": any}`.
#[derive(Debug, Deserialize)]
pub struct PublishParams {
    /// The event type.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The event's data; `data` is accepted for it, and a missing one is `null`.
    #[serde(default, alias = "data")]
    pub payload: Option<Box<RawValue>>,
    /// The `context.request_id` of the invoke or event this publish is made for. Optional: a
    /// process with one request in flight needs no such hint; one with several should give it,
    /// so that loops are counted and waits on itself are seen along the right chain.
    #[serde(default)]
    pub request_id: Option<String>,
    /// Publish asynchronously: the answer comes as soon as the event is stored durably, and
    /// the deliveries are made (and retried) after.
    #[serde(default, rename = "async")]
    pub asynchronous: bool,
}

/// One subscriber that did not take an event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryFailure {
    /// The subscribing function.
    pub function: String,
    /// What happened.
    pub message: String,
}

/// The answer to `publish` (and, with `"status": "published"` instead of `published`, to
/// `POST /events`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishResult {
    /// Always `true`.
    pub published: bool,
    /// The new event's id.
    pub event_id: String,
    /// How many subscribing functions took the event and answered with a result.
    pub delivered: usize,
    /// Each subscriber that did not, and each failure further down the chain of events this one
    /// caused.
    pub errors: Vec<DeliveryFailure>,
    /// For an asynchronous publish: `true`, the event is stored and will be delivered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted: Option<bool>,
}

/// Parameters of `subscribe` and `unsubscribe`: `{"type": str}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscribeParams {
    /// The event type.
    #[serde(rename = "type")]
    pub event_type: String,
}

/// The answer to `subscribe`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscribeResult {
    /// Always `true`.
    pub subscribed: bool,
    /// The event type.
    #[serde(rename = "type")]
    pub event_type: String,
}

/// The answer to `unsubscribe`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnsubscribeResult {
    /// Always `true`.
    pub unsubscribed: bool,
    /// The event type.
    #[serde(rename = "type")]
    pub event_type: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn wire_shapes_match_the_contract() {
        let init = InitializeParams {
            function: "hello".into(),
            protocol: crate::PROTOCOL_VERSION,
        };
        assert_eq!(
            serde_json::to_value(&init).ok(),
            Some(json!({"function": "hello", "protocol": 1}))
        );

        let invoke: InvokeParams<&RawValue, &str> = InvokeParams {
            input: &RawValue::from_string("{\"a\":1}".into()).expect("valid"),
            context: Context {
                request_id: "r1",
                function: "hello",
                traceparent: None,
                webhook: None,
                schedule: None,
            },
            http: None,
        };
        assert_eq!(
            serde_json::to_string(&invoke).ok().as_deref(),
            Some(r#"{"input":{"a":1},"context":{"request_id":"r1","function":"hello"}}"#)
        );

        let event: EventObject = EventObject {
            id: "e1".into(),
            event_type: "user.created".into(),
            source: "/http".into(),
            time: "2026-01-01T00:00:00Z".into(),
            payload: json!({"name": "Ada"}),
            datacontenttype: None,
            data_base64: None,
        };
        assert_eq!(
            serde_json::to_value(&event).ok(),
            Some(
                json!({"id": "e1", "type": "user.created", "source": "/http",
                        "time": "2026-01-01T00:00:00Z", "payload": {"name": "Ada"}})
            )
        );

        let result = PublishResult {
            published: true,
            event_id: "e1".into(),
            delivered: 1,
            errors: vec![DeliveryFailure {
                function: "f".into(),
                message: "m".into(),
            }],
            accepted: None,
        };
        assert_eq!(
            serde_json::to_value(&result).ok(),
            Some(json!({"published": true, "event_id": "e1", "delivered": 1,
                        "errors": [{"function": "f", "message": "m"}]}))
        );
    }

    #[test]
    fn publish_params_accept_payload_or_data_or_nothing() {
        let p: PublishParams =
            serde_json::from_str(r#"{"type":"a","payload":{"x":1}}"#).expect("parses");
        assert_eq!(
            p.payload.map(|v| v.get().to_owned()).as_deref(),
            Some(r#"{"x":1}"#)
        );
        let p: PublishParams = serde_json::from_str(r#"{"type":"a","data":[1]}"#).expect("parses");
        assert_eq!(
            p.payload.map(|v| v.get().to_owned()).as_deref(),
            Some("[1]")
        );
        let p: PublishParams = serde_json::from_str(r#"{"type":"a"}"#).expect("parses");
        assert!(p.payload.is_none());
        assert!(serde_json::from_str::<PublishParams>(r#"{"payload":1}"#).is_err());
        assert!(serde_json::from_str::<PublishParams>(r#"{"type":5}"#).is_err());
    }

    #[test]
    fn initialize_result_reads_subscriptions_from_objects_only() {
        let r: InitializeResult =
            serde_json::from_str(r#"{"subscribe":["a","b"],"other":1}"#).expect("parses");
        assert_eq!(r.subscribe, ["a", "b"]);
        let r: InitializeResult = serde_json::from_str("{}").expect("parses");
        assert!(r.subscribe.is_empty());
    }
}
