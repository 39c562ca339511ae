//! Borrowed views of the lines the supervisor writes, parsed straight from the line's bytes,
//! and the encoding of the lines the function writes.
//!
//! A line is parsed in one pass, params included, into views that borrow from it
//! (`&RawValue`, `Cow<str>`): the common case (an invoke whose input is passed through)
//! parses without allocating. (serde_json allocates a small stack when it captures nested JSON
//! as a `&RawValue`; one pass means at most one such allocation per line.)

use std::borrow::Cow;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;
use shs_protocol::{Id, RpcError};

/// The members of any message, before it is classified.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(default)]
    id: Option<Id>,
    #[serde(default, borrow)]
    method: Option<Text<'a>>,
    #[serde(default, borrow)]
    params: Option<Params<'a>>,
    #[serde(default, borrow, deserialize_with = "present")]
    result: Option<&'a RawValue>,
    #[serde(default)]
    error: Option<RpcError>,
}

/// The members of any message, with params of any shape: read when [`Envelope`] fails, to
/// answer the request with an error rather than drop it.
#[derive(Deserialize)]
struct LooseEnvelope<'a> {
    #[serde(default)]
    id: Option<Id>,
    #[serde(default, borrow)]
    method: Option<Text<'a>>,
    #[serde(default)]
    result: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    error: Option<serde::de::IgnoredAny>,
}

/// The params of any supervisor request, in one struct: `invoke` has `input` and `context`,
/// `event` has `event` and `context`, `initialize` has `function` (and `protocol`).
#[derive(Deserialize, Default)]
pub(crate) struct Params<'a> {
    #[serde(default, borrow, deserialize_with = "present")]
    pub(crate) input: Option<&'a RawValue>,
    #[serde(default, borrow)]
    pub(crate) event: Option<EventObjectIn<'a>>,
    #[serde(default, borrow)]
    pub(crate) context: ContextIn<'a>,
    #[serde(default, borrow)]
    pub(crate) function: Cow<'a, str>,
    #[serde(default, borrow)]
    pub(crate) http: Option<&'a RawValue>,
}

/// A string borrowed from the line unless it has escapes. (`Option<Cow<str>>` would always
/// allocate: serde borrows only a bare `Cow<str>`.)
struct Text<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Visitor<'a> {
            type Value = Text<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        d.deserialize_str(Visitor(std::marker::PhantomData))
    }
}

/// Makes `"result": null` a present result rather than an absent one.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

/// One line from the supervisor.
pub(crate) enum Incoming<'a> {
    /// A request, to be answered.
    Request {
        id: Id,
        method: Cow<'a, str>,
        /// The params, or why they are not what a supervisor sends.
        params: Result<Params<'a>, String>,
    },
    /// A notification, not answered.
    Notification { method: Cow<'a, str> },
    /// An answer to one of the function's own requests.
    Answer {
        id: Option<Id>,
        outcome: Result<&'a RawValue, RpcError>,
    },
}

/// Parses and classifies one line (without its line end).
pub(crate) fn classify(line: &[u8]) -> Result<Incoming<'_>, String> {
    let envelope: Envelope<'_> = match serde_json::from_slice(line) {
        Ok(envelope) => envelope,
        Err(error) => return classify_loose(line, error),
    };
    match (envelope.method, envelope.result, envelope.error) {
        (Some(Text(method)), None, None) => Ok(match envelope.id {
            Some(id) => Incoming::Request {
                id,
                method,
                params: Ok(envelope.params.unwrap_or_default()),
            },
            None => Incoming::Notification { method },
        }),
        (Some(_), _, _) => Err("a message with both \"method\" and \"result\"/\"error\"".into()),
        (None, Some(result), None) => Ok(Incoming::Answer {
            id: envelope.id,
            outcome: Ok(result),
        }),
        (None, None, Some(error)) => Ok(Incoming::Answer {
            id: envelope.id,
            outcome: Err(error),
        }),
        (None, Some(_), Some(_)) => Err("an answer with both \"result\" and \"error\"".into()),
        (None, None, None) => Err("a message with no \"method\", \"result\" or \"error\"".into()),
    }
}

/// A line [`Envelope`] cannot read: a request whose params are not what they should be (to
/// be answered with an error), or not a message at all.
fn classify_loose(line: &[u8], error: serde_json::Error) -> Result<Incoming<'_>, String> {
    let not_a_message = || format!("not a JSON-RPC message: {error}");
    let loose: LooseEnvelope<'_> = serde_json::from_slice(line).map_err(|_| not_a_message())?;
    match (loose.id, loose.method, loose.result, loose.error) {
        (Some(id), Some(Text(method)), None, None) => Ok(Incoming::Request {
            id,
            method,
            params: Err(format!("invalid params: {error}")),
        }),
        (None, Some(Text(method)), None, None) => Ok(Incoming::Notification { method }),
        _ => Err(not_a_message()),
    }
}

/// The line without its `\n` (and a `\r` before it).
pub(crate) fn trim_line_end(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// The `context` of an invoke or an event.
#[derive(Deserialize, Default)]
pub(crate) struct ContextIn<'a> {
    #[serde(default, borrow)]
    pub(crate) request_id: Cow<'a, str>,
    #[serde(default, borrow)]
    pub(crate) function: Cow<'a, str>,
    /// `context.schedule` of an occurrence of a schedule.
    #[serde(default)]
    pub(crate) schedule: Option<Box<shs_protocol::methods::ScheduleContext>>,
}

/// The event of an `event` request.
#[derive(Deserialize)]
pub(crate) struct EventObjectIn<'a> {
    #[serde(default, borrow)]
    pub(crate) id: Cow<'a, str>,
    #[serde(rename = "type", borrow)]
    pub(crate) event_type: Cow<'a, str>,
    #[serde(default, borrow)]
    pub(crate) source: Cow<'a, str>,
    #[serde(default, borrow)]
    pub(crate) time: Cow<'a, str>,
    #[serde(default, borrow)]
    pub(crate) payload: Option<&'a RawValue>,
    #[serde(default, borrow)]
    pub(crate) datacontenttype: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub(crate) data_base64: Option<Cow<'a, str>>,
}

/// The params of `publish`, as the function sends them.
#[derive(Serialize)]
pub(crate) struct PublishOut<'a, P: ?Sized> {
    #[serde(rename = "type")]
    pub(crate) event_type: &'a str,
    pub(crate) payload: &'a P,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) request_id: Option<&'a str>,
}

/// The params of `subscribe` and `unsubscribe`, as the function sends them.
#[derive(Serialize)]
pub(crate) struct TypeOut<'a> {
    #[serde(rename = "type")]
    pub(crate) event_type: &'a str,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_and_borrows() {
        let line = br#"{"jsonrpc":"2.0","id":3,"method":"invoke","params":{"input":{"a":1},"context":{"request_id":"r","function":"f"}}}"#;
        let Ok(Incoming::Request { id, method, params }) = classify(line) else {
            panic!("a request")
        };
        assert_eq!(id, Id::Int(3));
        assert!(matches!(method, Cow::Borrowed("invoke")));
        let params = params.expect("invoke params");
        assert_eq!(params.input.map(RawValue::get), Some(r#"{"a":1}"#));
        assert!(matches!(params.context.request_id, Cow::Borrowed("r")));

        assert!(matches!(
            classify(br#"{"jsonrpc":"2.0","id":1,"result":null}"#),
            Ok(Incoming::Answer { id: Some(Id::Int(1)), outcome: Ok(r) }) if r.get() == "null"
        ));
        assert!(matches!(
            classify(br#"{"id":"x","error":{"code":1,"message":"m"}}"#),
            Ok(Incoming::Answer { outcome: Err(e), .. }) if e.code == 1
        ));
        assert!(matches!(
            classify(br#"{"method":"ping"}"#),
            Ok(Incoming::Notification { .. })
        ));
        for bad in [
            &b"nope"[..],
            b"[]",
            b"{}",
            br#"{"id":1,"method":"m","result":1}"#,
            br#"{"id":1,"result":1,"error":{"code":1,"message":"m"}}"#,
        ] {
            assert!(classify(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn a_null_input_is_an_input() {
        let line = br#"{"id":3,"method":"invoke","params":{"input":null,"context":{"request_id":"r","function":"f"}}}"#;
        let Ok(Incoming::Request {
            params: Ok(params), ..
        }) = classify(line)
        else {
            panic!("a request")
        };
        assert_eq!(params.input.map(RawValue::get), Some("null"));
    }

    #[test]
    fn requests_with_odd_params_are_still_requests() {
        for line in [
            &br#"{"id":3,"method":"frob","params":[1,2]}"#[..],
            br#"{"id":3,"method":"invoke","params":{"input":1,"context":5}}"#,
        ] {
            let Ok(Incoming::Request {
                id, params: Err(e), ..
            }) = classify(line)
            else {
                panic!(
                    "a request with bad params: {}",
                    String::from_utf8_lossy(line)
                )
            };
            assert_eq!(id, Id::Int(3));
            assert!(e.starts_with("invalid params"), "{e}");
        }
    }

    #[test]
    fn escaped_strings_are_read_too() {
        let line = br#"{"id":3,"method":"inv\u006fke","params":{"input":1,"context":{"request_id":"a\"b","function":"f"}}}"#;
        let Ok(Incoming::Request {
            method,
            params: Ok(params),
            ..
        }) = classify(line)
        else {
            panic!("a request")
        };
        assert_eq!(method, "invoke");
        assert_eq!(params.context.request_id, "a\"b");
    }

    #[test]
    fn line_ends_are_trimmed() {
        assert_eq!(trim_line_end(b"{}\r\n"), b"{}");
        assert_eq!(trim_line_end(b"{}\n"), b"{}");
        assert_eq!(trim_line_end(b"{}"), b"{}");
    }
}
