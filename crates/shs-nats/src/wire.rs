//! The wire format on NATS: the headers an event travels with (its id, type, hop count, cause,
//! publisher, and the calls waiting on a synchronous publish), the answer to a synchronous
//! delivery request ([`SyncReply`]), and a dead letter as stored ([`DeadRecord`]).

use async_nats::{HeaderMap, HeaderValue};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use shs_bus::event::now;
use shs_bus::{Attempt, DeadLetter, DeliveryError, Origin, SharedEvent};
use shs_protocol::methods::DeliveryFailure;

/// Header: the hop count of the event.
const HOPS: &str = "Shs-Hops";
/// Header: the id of the event that caused this one.
const CAUSE: &str = "Shs-Cause";
/// Header: who published it (JSON).
const ORIGIN: &str = "Shs-Origin";
/// Header: the event's id.
const EVENT_ID: &str = "Shs-Event-Id";
/// Header: the event's type.
const EVENT_TYPE: &str = "Shs-Event-Type";
/// Header: the calls waiting for a synchronous publish (comma-separated).
const WAITING: &str = "Shs-Waiting";
/// Header: JetStream's de-duplication key.
const MSG_ID: &str = "Nats-Msg-Id";

/// A value that cannot travel in a NATS header (it holds CR or LF). Events are checked when
/// they are made ([`shs_bus::Event`]), so this is a last guard, never a panic.
#[derive(Debug)]
pub(crate) struct BadHeader {
    /// The header.
    pub(crate) name: &'static str,
}

impl std::fmt::Display for BadHeader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the event cannot travel on NATS: its header {} would hold a line break",
            self.name
        )
    }
}

/// A header value, or an error for a value holding CR or LF (which `async_nats` would panic on).
fn value(name: &'static str, text: &str) -> Result<HeaderValue, BadHeader> {
    text.parse::<HeaderValue>().map_err(|_| BadHeader { name })
}

/// The headers of a message carrying `event`.
pub(crate) fn headers_of(event: &SharedEvent) -> Result<HeaderMap, BadHeader> {
    let mut headers = HeaderMap::new();
    headers.insert(EVENT_ID, value(EVENT_ID, &event.id)?);
    headers.insert(EVENT_TYPE, value(EVENT_TYPE, &event.event_type)?);
    headers.insert(HOPS, value(HOPS, &event.hops.to_string())?);
    if let Some(cause) = &event.cause {
        headers.insert(CAUSE, value(CAUSE, cause)?);
    }
    if let Ok(origin) = serde_json::to_string(&event.origin) {
        headers.insert(ORIGIN, value(ORIGIN, &origin)?);
    }
    Ok(headers)
}

/// Sets the key JetStream de-duplicates a stored message by.
pub(crate) fn set_msg_id(headers: &mut HeaderMap, id: &str) -> Result<(), BadHeader> {
    headers.insert(MSG_ID, value(MSG_ID, id)?);
    Ok(())
}

/// Sets the calls waiting upstream for a synchronous publish.
pub(crate) fn set_waiting(headers: &mut HeaderMap, waiting: &[u64]) {
    let waiting: Vec<String> = waiting.iter().map(u64::to_string).collect();
    // Digits and commas: always a valid header value.
    headers.insert(WAITING, HeaderValue::from(waiting.join(",").as_str()));
}

/// The calls waiting upstream, from a synchronous delivery request's headers.
pub(crate) fn waiting_of(headers: Option<&HeaderMap>) -> Vec<u64> {
    headers
        .and_then(|h| h.get(WAITING))
        .map(|w| {
            w.as_str()
                .split(',')
                .filter_map(|c| c.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The body of a message carrying `event`: the event object.
pub(crate) fn body_of(event: &SharedEvent) -> Bytes {
    Bytes::from(event.json().get().to_owned())
}

/// Rebuilds an event from a message's headers and body.
pub(crate) fn event_of(headers: Option<&HeaderMap>, payload: &Bytes) -> Option<SharedEvent> {
    let headers = headers?;
    let get = |name: &str| headers.get(name).map(|v| v.as_str().to_owned());
    let json = RawValue::from_string(String::from_utf8(payload.to_vec()).ok()?).ok()?;
    Some(SharedEvent::from_stored(
        get(EVENT_ID)?,
        get(EVENT_TYPE)?,
        get(HOPS).and_then(|h| h.parse().ok()).unwrap_or(0),
        get(CAUSE),
        get(ORIGIN)
            .and_then(|o| serde_json::from_str(&o).ok())
            .unwrap_or(Origin::Http { request_id: None }),
        json,
    ))
}

/// What a supervisor answers to a synchronous delivery request.
#[derive(Serialize, Deserialize)]
pub(crate) struct SyncReply {
    ok: bool,
    #[serde(default)]
    status: u16,
    #[serde(default)]
    message: String,
    #[serde(default)]
    retryable: bool,
    #[serde(default)]
    nested: Vec<DeliveryFailure>,
}

impl SyncReply {
    /// The answer for a delivery that ended with `result`, and the failures it caused further
    /// down the chain.
    pub(crate) fn new(result: Result<(), DeliveryError>, nested: Vec<DeliveryFailure>) -> Self {
        match result {
            Ok(()) => SyncReply {
                ok: true,
                status: 200,
                message: String::new(),
                retryable: false,
                nested,
            },
            Err(e) => SyncReply {
                ok: false,
                status: e.status,
                message: e.message,
                retryable: e.retryable,
                nested,
            },
        }
    }

    /// How the delivery ended, and the failures further down the chain.
    pub(crate) fn into_outcome(self) -> (Result<(), DeliveryError>, Vec<DeliveryFailure>) {
        let outcome = if self.ok {
            Ok(())
        } else {
            Err(DeliveryError {
                status: self.status,
                message: self.message,
                retryable: self.retryable,
                attempted: true,
            })
        };
        (outcome, self.nested)
    }
}

/// A dead letter as stored in the dead-letter stream.
#[derive(Serialize, Deserialize)]
pub(crate) struct DeadRecord {
    pub(crate) function: String,
    pub(crate) event_id: String,
    pub(crate) event_type: String,
    pub(crate) hops: u32,
    #[serde(default)]
    pub(crate) cause: Option<String>,
    /// Who published it (records from before it was kept read as HTTP).
    #[serde(default = "http")]
    pub(crate) origin: Origin,
    pub(crate) event: Box<RawValue>,
    pub(crate) attempts: Vec<Attempt>,
    pub(crate) dead_at: String,
}

fn http() -> Origin {
    Origin::Http { request_id: None }
}

impl DeadRecord {
    /// The dead letter of `event` for `function`, after `attempts`.
    pub(crate) fn new(function: &str, event: &SharedEvent, attempts: Vec<Attempt>) -> DeadRecord {
        DeadRecord {
            function: function.to_owned(),
            event_id: event.id.clone(),
            event_type: event.event_type.clone(),
            hops: event.hops,
            cause: event.cause.clone(),
            origin: event.origin.clone(),
            event: event.json().to_owned(),
            attempts,
            dead_at: now(),
        }
    }

    /// The event, to deliver it again.
    pub(crate) fn event(&self) -> SharedEvent {
        SharedEvent::from_stored(
            self.event_id.clone(),
            self.event_type.clone(),
            self.hops,
            self.cause.clone(),
            self.origin.clone(),
            self.event.clone(),
        )
    }

    /// The dead letter as the bus lists it, under the id `id`.
    pub(crate) fn into_letter(self, id: String) -> DeadLetter {
        DeadLetter {
            id,
            kind: shs_bus::store::KIND_EVENT,
            function: self.function,
            event_id: Some(self.event_id),
            event_type: Some(self.event_type),
            event: Some(self.event),
            invocation_id: None,
            request: None,
            attempts: self.attempts,
            dead_at: self.dead_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_travels_in_headers_and_body() {
        let json = RawValue::from_string(r#"{"id":"e-1","type":"a.b","payload":1}"#.to_owned())
            .expect("json");
        let origin = Origin::Function {
            function: "f".to_owned(),
            request_id: Some("r".to_owned()),
        };
        let event = SharedEvent::from_stored(
            "e-1".to_owned(),
            "a.b".to_owned(),
            3,
            Some("e-0".to_owned()),
            origin.clone(),
            json,
        );
        let mut headers = headers_of(&event).expect("valid headers");
        set_waiting(&mut headers, &[4, 9]);
        let back = event_of(Some(&headers), &body_of(&event)).expect("an event");
        assert_eq!(
            (back.id.as_str(), back.event_type.as_str(), back.hops),
            ("e-1", "a.b", 3)
        );
        assert_eq!(back.cause.as_deref(), Some("e-0"));
        assert_eq!(back.origin, origin);
        assert_eq!(back.json().get(), event.json().get());
        assert_eq!(waiting_of(Some(&headers)), [4, 9]);
        assert!(event_of(None, &body_of(&event)).is_none());
        assert!(event_of(Some(&headers), &Bytes::from_static(b"not json")).is_none());
    }

    #[test]
    fn a_line_break_in_a_header_value_is_an_error_not_a_panic() {
        let json = RawValue::from_string(r#"{"id":"e"}"#.to_owned()).expect("json");
        let event = SharedEvent::from_stored(
            "e".to_owned(),
            "a.b".to_owned(),
            0,
            Some("x\r\nShs-Hops: 0".to_owned()),
            http(),
            json,
        );
        let e = headers_of(&event).expect_err("refused");
        assert!(e.to_string().contains("Shs-Cause"), "{e}");
        let mut headers = HeaderMap::new();
        assert!(set_msg_id(&mut headers, "/a\nb id").is_err());
        assert!(set_msg_id(&mut headers, "/a id").is_ok());
    }

    #[test]
    fn a_sync_reply_keeps_the_outcome() {
        let failure = DeliveryError::permanent(404, "gone");
        let (outcome, nested) = SyncReply::new(Err(failure.clone()), Vec::new()).into_outcome();
        assert_eq!(outcome, Err(failure));
        assert!(nested.is_empty());
        let old: SyncReply =
            serde_json::from_str(r#"{"ok":false,"status":500,"message":"m"}"#).expect("reply");
        assert_eq!(
            old.into_outcome().0,
            Err(DeliveryError::permanent(500, "m")),
            "an answer without the newer fields still reads"
        );
    }
}
